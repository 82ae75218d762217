//! Biokeys on the wire: parsing and checking the caller's identifier sets,
//! their digests, and their public view (sensitive values never leave).

use serde::Deserialize;
use serde_json::{Value, json};
use timbre_schemas::{Biokey, MAX_BIOKEYS, biokey_text};

use crate::api::ApiError;
use crate::api::keys::KeyHasher;

/// Digest domain of identifiers.
const DIGEST_PURPOSE: &str = "biokey";

/// A biokey as callers send it (no `Debug`: its value may be sensitive).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireBiokey {
    /// Echoed by listings as the position in the set; ignored on input.
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<i64>,
    key: String,
    value: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default)]
    sensitive: Option<bool>,
    #[serde(default)]
    is_user_id: Option<bool>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_biokey", message).with("field", "biokeys")
}

/// The JSON array of a `biokeys` field. A parse error reports its place
/// only: serde's message may quote the value, which may be sensitive.
fn parse_wire(json: &str) -> Result<Vec<WireBiokey>, ApiError> {
    serde_json::from_str(json).map_err(|e| {
        invalid(format!(
            "biokeys must be a JSON array of {{key, value, is_user_id, ...}} objects \
             (error at line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// The digest lookups match: the tenant, the identifier's name and value.
pub fn digest(keys: &KeyHasher, tenant: &str, key: &str, value: &str) -> String {
    keys.keyed_digest(DIGEST_PURPOSE, &[tenant, key, value])
}

/// A user's identifier set for an enrollment: one to [`MAX_BIOKEYS`] with
/// distinct names, names and values of letters, digits, `_`, `+` and `-`,
/// exactly one `is_user_id` (not sensitive: its value is the user id, which
/// responses return). Returns the user id and the set to store, where a
/// sensitive value is replaced by its digest alone.
pub fn enrollment_set(
    json: &str,
    keys: &KeyHasher,
    tenant: &str,
) -> Result<(String, Vec<Biokey>), ApiError> {
    let wire = parse_wire(json)?;
    // Without a pepper the digest is a public function: a sensitive value
    // could be found again by trying every phone number.
    if !keys.is_peppered() && wire.iter().any(|w| w.sensitive == Some(true)) {
        return Err(ApiError::bad_request(
            "sensitive_biokeys_unavailable",
            "this deployment has no api.key_pepper, so a sensitive biokey's digest \
             could be reversed by trying every value; sensitive biokeys are refused",
        )
        .with("field", "biokeys"));
    }
    if wire.is_empty() || wire.len() > MAX_BIOKEYS {
        return Err(invalid(format!(
            "an enrollment needs 1 to {MAX_BIOKEYS} biokeys"
        )));
    }
    let mut set = Vec::with_capacity(wire.len());
    for (i, w) in wire.into_iter().enumerate() {
        if !biokey_text(&w.key) {
            return Err(invalid(format!(
                "biokeys[{i}].key must be 1-128 letters, digits, '_', '+' or '-'"
            )));
        }
        if !biokey_text(&w.value) {
            return Err(invalid(format!(
                "biokeys[{i}].value must be 1-128 letters, digits, '_', '+' or '-'"
            )));
        }
        if w.display_name
            .as_deref()
            .is_some_and(|d| d.len() > 256 || d.chars().any(char::is_control))
        {
            return Err(invalid(format!(
                "biokeys[{i}].display_name must be at most 256 bytes of text"
            )));
        }
        if set.iter().any(|k: &Biokey| k.key == w.key) {
            return Err(invalid(format!("biokeys[{i}].key repeats an earlier key")));
        }
        let sensitive = w.sensitive.unwrap_or(false);
        let is_user_id = w.is_user_id.unwrap_or(false);
        if sensitive && is_user_id {
            return Err(invalid(format!(
                "biokeys[{i}] is the user id, which responses return: it cannot be sensitive"
            )));
        }
        set.push(Biokey {
            digest: digest(keys, tenant, &w.key, &w.value),
            key: w.key,
            value: (!sensitive).then_some(w.value),
            display_name: w.display_name,
            priority: w.priority.unwrap_or(0),
            sensitive,
            is_user_id,
        });
    }
    let mut ids = set.iter().filter(|k| k.is_user_id);
    match (ids.next(), ids.next()) {
        (Some(k), None) => {
            let user_id = k
                .value
                .clone()
                .expect("the user-id biokey is not sensitive");
            Ok((user_id, set))
        }
        _ => Err(invalid("exactly one biokey must have is_user_id true")),
    }
}

/// The identifiers a verification presents: `(key, digest)` each, same
/// character rules (priority and flags are the stored set's).
pub fn presented(
    json: &str,
    keys: &KeyHasher,
    tenant: &str,
) -> Result<Vec<(String, String)>, ApiError> {
    let wire = parse_wire(json)?;
    if wire.is_empty() || wire.len() > MAX_BIOKEYS {
        return Err(invalid(format!(
            "a verification presents 1 to {MAX_BIOKEYS} biokeys"
        )));
    }
    wire.into_iter()
        .enumerate()
        .map(|(i, w)| {
            if biokey_text(&w.key) && biokey_text(&w.value) {
                Ok((w.key.clone(), digest(keys, tenant, &w.key, &w.value)))
            } else {
                Err(invalid(format!(
                    "biokeys[{i}] key and value must be 1-128 letters, digits, '_', '+' or '-'"
                )))
            }
        })
        .collect()
}

/// The user a set of found identifiers points at: of the presented
/// identifiers that found a user, the one with the highest stored
/// priority wins (ties: the earlier presented).
pub fn best_match(found: Vec<(String, i32)>) -> Option<String> {
    found
        .into_iter()
        .rev()
        .max_by_key(|(_, priority)| *priority)
        .map(|(user, _)| user)
}

/// A stored set as responses show it: a sensitive value is never shown.
pub fn view(set: &[Biokey]) -> Value {
    Value::Array(
        set.iter()
            .enumerate()
            .map(|(i, k)| {
                json!({
                    "id": i + 1,
                    "key": k.key,
                    "value": k.value,
                    "display_name": k.display_name,
                    "priority": k.priority,
                    "sensitive": k.sensitive,
                    "is_user_id": k.is_user_id,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> KeyHasher {
        KeyHasher::new(b"pepper")
    }

    #[test]
    fn an_enrollment_set_names_its_user_and_hides_sensitive_values() {
        let json = r#"[{"key":"UserID","value":"petros1","is_user_id":true,"priority":1},
                       {"key":"ANI","value":"+15550100","sensitive":true,"priority":5,"display_name":"Phone"}]"#;
        let (user, set) = enrollment_set(json, &keys(), "acme").unwrap();
        assert_eq!(user, "petros1");
        assert_eq!(set[1].value, None);
        assert_eq!(set[1].digest, digest(&keys(), "acme", "ANI", "+15550100"));
        // Another tenant, another digest: lookups never cross tenants.
        assert_ne!(set[1].digest, digest(&keys(), "other", "ANI", "+15550100"));
        let shown = view(&set).to_string();
        assert!(!shown.contains("15550100"), "{shown}");
        assert!(shown.contains("petros1"));
    }

    #[test]
    fn broken_sets_are_refused_without_echoing_values() {
        for json in [
            r#"[]"#,
            r#"[{"key":"UserID","value":"a b","is_user_id":true}]"#,
            r#"[{"key":"User ID","value":"ab","is_user_id":true}]"#,
            r#"[{"key":"UserID","value":"ab"}]"#,
            r#"[{"key":"A","value":"ab","is_user_id":true},{"key":"B","value":"cd","is_user_id":true}]"#,
            r#"[{"key":"A","value":"ab","is_user_id":true},{"key":"A","value":"cd"}]"#,
            r#"[{"key":"A","value":"ab","is_user_id":true,"sensitive":true}]"#,
            r#"[{"key":"A","value":"ab","is_user_id":true,"colour":"red"}]"#,
            r#"[{"key":"A","value":5550100,"is_user_id":true}]"#,
            r#"{"key":"A"}"#,
        ] {
            let e = enrollment_set(json, &keys(), "t").unwrap_err();
            assert!(!e.message.contains("5550100"), "{}", e.message);
            assert_eq!(e.code, "invalid_biokey", "{json}");
        }
    }

    #[test]
    fn sensitive_biokeys_need_a_pepper() {
        let unpeppered = KeyHasher::new(b"");
        let sensitive = r#"[{"key":"U","value":"u","is_user_id":true},{"key":"ANI","value":"+1555","sensitive":true}]"#;
        let e = enrollment_set(sensitive, &unpeppered, "t").unwrap_err();
        assert_eq!(e.code, "sensitive_biokeys_unavailable");
        let plain = r#"[{"key":"U","value":"u","is_user_id":true},{"key":"ANI","value":"+1555"}]"#;
        assert!(enrollment_set(plain, &unpeppered, "t").is_ok());
        assert!(enrollment_set(sensitive, &keys(), "t").is_ok());
    }

    #[test]
    fn the_highest_priority_match_wins() {
        assert_eq!(best_match(vec![]), None);
        let found = vec![("a".into(), 1), ("b".into(), 7), ("c".into(), 7)];
        assert_eq!(best_match(found).as_deref(), Some("b"));
    }
}
