//! Records of API access: keys, challenge sessions and usage counters.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// What a key may do; every route requires one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Read a user's consent.
    #[serde(rename = "consent:read")]
    ConsentRead,
    /// Grant or withdraw consent.
    #[serde(rename = "consent:write")]
    ConsentWrite,
    /// Create profiles and enroll samples.
    #[serde(rename = "enroll")]
    Enroll,
    /// Challenges, verifications and voice tokens.
    #[serde(rename = "verify")]
    Verify,
    /// Read profiles, learning progress and decisions.
    #[serde(rename = "profiles:read")]
    ProfilesRead,
    /// Delete, opt out, greylist and unlock users.
    #[serde(rename = "profiles:admin")]
    ProfilesAdmin,
    /// Create, list, disable and revoke keys of the tenant.
    #[serde(rename = "keys:admin")]
    KeysAdmin,
    /// Read usage counters.
    #[serde(rename = "usage:read")]
    UsageRead,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 8] = [
        Scope::ConsentRead,
        Scope::ConsentWrite,
        Scope::Enroll,
        Scope::Verify,
        Scope::ProfilesRead,
        Scope::ProfilesAdmin,
        Scope::KeysAdmin,
        Scope::UsageRead,
    ];

    /// The wire name (`consent:read`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ConsentRead => "consent:read",
            Scope::ConsentWrite => "consent:write",
            Scope::Enroll => "enroll",
            Scope::Verify => "verify",
            Scope::ProfilesRead => "profiles:read",
            Scope::ProfilesAdmin => "profiles:admin",
            Scope::KeysAdmin => "keys:admin",
            Scope::UsageRead => "usage:read",
        }
    }

    /// The scope of a wire name.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

fn enabled_by_default() -> bool {
    true
}

/// An API key as stored: the secret itself is never kept, only its keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public part of the key (`tmb_<key_id>_<secret>`), the lookup handle.
    pub key_id: String,
    /// Tenant the key acts for.
    pub tenant: String,
    /// Operator-chosen label.
    pub name: String,
    /// Hex HMAC-SHA256 of the secret under the deployment's pepper.
    pub secret_hash: String,
    /// Creation time (ms since the epoch).
    pub created_at: i64,
    /// Expiry (ms since the epoch; 0 = never).
    pub expires_at: i64,
    /// What the key may do; `None` for keys made before scopes existed,
    /// which keep every scope. Never an empty set (refused at creation).
    #[serde(default)]
    pub scopes: Option<BTreeSet<Scope>>,
    /// A disabled key is refused until enabled again.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Jobs submitted with the key keep their audio and decision as
    /// diagnostic data (at most 30 days); off, no verification audio is kept.
    #[serde(default)]
    pub retain_data: bool,
}

impl ApiKey {
    /// Whether the key has expired at `now`.
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at != 0 && now >= self.expires_at
    }

    /// Whether the key carries `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.as_ref().is_none_or(|s| s.contains(&scope))
    }

    /// The key's scopes, every scope for a key without a set.
    pub fn scope_names(&self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.allows(*s))
            .map(Scope::as_str)
            .collect()
    }
}

/// A challenge issued by `start-auth`: single use, short-lived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeSession {
    /// Tenant of the user.
    pub tenant: String,
    /// Random, unguessable session id.
    pub session_id: String,
    /// User the challenge was issued to.
    pub user_id: String,
    /// Phrase or digits the caller must say.
    pub challenge: String,
    /// Creation time (ms since the epoch).
    pub created_at: i64,
    /// The session cannot be used from this time on (ms since the epoch).
    pub expires_at: i64,
    /// Set when the challenge is a step of a prompted dialogue.
    #[serde(default)]
    pub dialogue: Option<DialogueState>,
    /// Set when the session is a call session (no challenge, no user yet).
    #[serde(default)]
    pub call: Option<CallState>,
}

/// A contact-centre call that on-demand verifications belong to: who
/// handles it, and what the call's last verification found (so a later
/// one can tell that the speaker changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallState {
    /// Agent handling the call.
    pub agent_id: String,
    /// The agent's skill (queue).
    pub agent_skill: String,
    /// Contact-centre platform.
    pub ccaas_provider: String,
    /// The platform's call id.
    pub master_id: String,
    /// The platform's tenant id.
    pub platform_tenant: String,
    /// Free-form properties of the caller's integration.
    pub custom_properties: Option<String>,
    /// The last verification's speaker: its user and whether the voice
    /// matched (`None` before the first scored verification).
    pub last_speaker: Option<(String, bool)>,
}

/// What a prompted dialogue enrolls or verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DialogueKind {
    /// Each answer is an enrollment sample.
    Enroll,
    /// Each answer is a verification attempt.
    Verify,
}

impl DialogueKind {
    /// The wire name (`enroll`, `verify`).
    pub fn as_str(self) -> &'static str {
        match self {
            DialogueKind::Enroll => "enroll",
            DialogueKind::Verify => "verify",
        }
    }

    /// The kind of a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        [DialogueKind::Enroll, DialogueKind::Verify]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// Where a prompted dialogue stands, carried from one challenge to the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogueState {
    /// Enrollment or verification.
    pub kind: DialogueKind,
    /// Language of the prompts (`en`, `pt`).
    pub language: String,
    /// Answers submitted so far.
    pub answers: u32,
    /// Answers that did not say their code (or said too little).
    pub misspeaks: u32,
}

/// One usage counter of an API key on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCount {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// e.g. `requests`, `decision:accept`, `reason:voice_match`, `throttled`.
    pub metric: String,
    /// Count.
    pub count: i64,
}

/// `YYYY-MM-DD` (UTC) of a millisecond timestamp.
pub fn utc_day(ms: i64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm): no calendar crate needed.
    let days = ms.div_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// RFC 3339 UTC time of a millisecond timestamp, e.g. `2026-11-22T06:41:21.000Z`.
pub fn utc_rfc3339(ms: i64) -> String {
    let of_day = ms.rem_euclid(86_400_000);
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        utc_day(ms),
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1000 % 60,
        of_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_days() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(951_782_400_000), "2000-02-29");
        assert_eq!(utc_day(1_795_305_599_999), "2026-11-21");
        assert_eq!(utc_day(1_795_305_600_000), "2026-11-22");
        assert_eq!(utc_rfc3339(1_795_329_681_007), "2026-11-22T06:41:21.007Z");
    }

    #[test]
    fn keys_without_scopes_keep_every_scope_and_scoped_keys_only_theirs() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
            let json = serde_json::to_string(&scope).unwrap();
            assert_eq!(json, format!("\"{}\"", scope.as_str()));
        }
        assert_eq!(Scope::parse("admin"), None);
        // A key stored before scopes and the enabled flag existed.
        let legacy: ApiKey = serde_json::from_str(
            r#"{"key_id":"k","tenant":"t","name":"n","secret_hash":"h","created_at":1,"expires_at":0}"#,
        )
        .unwrap();
        assert!(legacy.enabled);
        assert!(!legacy.retain_data);
        assert!(Scope::ALL.iter().all(|s| legacy.allows(*s)));
        assert_eq!(legacy.scope_names().len(), Scope::ALL.len());
        let scoped = ApiKey {
            scopes: Some([Scope::ConsentRead].into()),
            ..legacy
        };
        assert!(scoped.allows(Scope::ConsentRead));
        assert!(!scoped.allows(Scope::ConsentWrite));
        assert_eq!(scoped.scope_names(), ["consent:read"]);
    }
}
