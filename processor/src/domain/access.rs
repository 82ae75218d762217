//! Records of API access: keys, challenge sessions and usage counters.

use serde::{Deserialize, Serialize};

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
}

impl ApiKey {
    /// Whether the key has expired at `now`.
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at != 0 && now >= self.expires_at
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
}
