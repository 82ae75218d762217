//! Limits and field rules checked after decoding.
//!
//! Avro guarantees types, not sense: an empty `request_id` or a 2 GiB audio
//! blob decode fine. These checks run on every untrusted message so a bad
//! job becomes an `invalid_field` decision instead of a surprise deeper in.

use crate::error::SchemaError;
use crate::header::{SchemaVersion, TraceContext};

/// Bounds applied by [`Contract::validate`](crate::Contract::validate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest identifier in bytes: request/user/session ids, tenant, model
    /// ids, channel, purpose, topic.
    pub max_id_bytes: usize,
    /// Longest free text in bytes: phrases, reasons, error messages, trace
    /// headers.
    pub max_text_bytes: usize,
    /// Longest claim-check URI in bytes.
    pub max_uri_bytes: usize,
    /// Largest inline audio in bytes; larger audio must use `audio_uri`.
    pub max_audio_bytes: usize,
    /// Most entries in `Decision.reasons`.
    pub max_reasons: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_id_bytes: 256,
            max_text_bytes: 4096,
            max_uri_bytes: 2048,
            // ~5 minutes of 16 kHz 16-bit mono, far more than any prompt
            max_audio_bytes: 10 * 1024 * 1024,
            max_reasons: 64,
        }
    }
}

impl Limits {
    /// Whether `value` passes as an identifier (request id, tenant, user)
    /// under these limits: what validation asks of every id.
    pub fn allows_id(&self, value: &str) -> bool {
        id("id", value, self).is_ok()
    }
}

/// A required identifier: non-empty, bounded, no control characters.
pub(crate) fn id(field: &str, value: &str, limits: &Limits) -> Result<(), SchemaError> {
    if value.is_empty() {
        return Err(SchemaError::invalid(field, "must not be empty"));
    }
    bounded(field, value, limits.max_id_bytes)?;
    if value.chars().any(char::is_control) {
        return Err(SchemaError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// An optional identifier: when present, same rules as [`id`].
pub(crate) fn opt_id(field: &str, value: Option<&str>, limits: &Limits) -> Result<(), SchemaError> {
    value.map_or(Ok(()), |v| id(field, v, limits))
}

/// The tenant is the first half of the message key, so it may not hold `/`.
pub(crate) fn tenant(value: &str, limits: &Limits) -> Result<(), SchemaError> {
    id("tenant", value, limits)?;
    if value.contains('/') {
        return Err(SchemaError::invalid("tenant", "must not contain '/'"));
    }
    Ok(())
}

/// Free text, possibly empty, bounded.
pub(crate) fn text(field: &str, value: &str, limits: &Limits) -> Result<(), SchemaError> {
    bounded(field, value, limits.max_text_bytes)
}

/// Optional free text.
pub(crate) fn opt_text(
    field: &str,
    value: Option<&str>,
    limits: &Limits,
) -> Result<(), SchemaError> {
    value.map_or(Ok(()), |v| text(field, v, limits))
}

fn bounded(field: &str, value: &str, max: usize) -> Result<(), SchemaError> {
    if value.len() > max {
        return Err(SchemaError::invalid(
            field,
            format!("{} bytes exceeds the limit of {max}", value.len()),
        ));
    }
    Ok(())
}

/// The shared fields of every request and decision, borrowed for checking.
pub(crate) struct Shared<'a> {
    pub request_id: &'a str,
    pub tenant: &'a str,
    pub user_id: &'a str,
    pub occurred_at: i64,
    pub schema_version: SchemaVersion,
    pub trace: Option<&'a TraceContext>,
}

impl Shared<'_> {
    /// Checks the shared fields of a record whose current version is `current`.
    pub(crate) fn check(&self, current: SchemaVersion, limits: &Limits) -> Result<(), SchemaError> {
        id("request_id", self.request_id, limits)?;
        tenant(self.tenant, limits)?;
        id("user_id", self.user_id, limits)?;
        timestamp("occurred_at", self.occurred_at)?;
        version(self.schema_version, current)?;
        if let Some(t) = self.trace {
            if t.traceparent.is_empty() {
                return Err(SchemaError::invalid(
                    "trace.traceparent",
                    "must not be empty",
                ));
            }
            text("trace.traceparent", &t.traceparent, limits)?;
            opt_text("trace.tracestate", t.tracestate.as_deref(), limits)?;
        }
        Ok(())
    }
}

/// Epoch millis before 1970 are a bug, not history.
pub(crate) fn timestamp(field: &str, millis: i64) -> Result<(), SchemaError> {
    if millis < 0 {
        return Err(SchemaError::invalid(
            field,
            format!("negative timestamp {millis}"),
        ));
    }
    Ok(())
}

/// A producer can only have written a version this build knows.
pub(crate) fn version(v: SchemaVersion, current: SchemaVersion) -> Result<(), SchemaError> {
    if !(1..=current).contains(&v) {
        return Err(SchemaError::invalid(
            "schema_version",
            format!("{v} is outside 1..={current}"),
        ));
    }
    Ok(())
}

/// Inline audio or a claim check, exactly one, within limits.
pub(crate) fn audio(audio: &[u8], uri: Option<&str>, limits: &Limits) -> Result<(), SchemaError> {
    match (audio.is_empty(), uri) {
        (true, None) => Err(SchemaError::invalid(
            "audio",
            "empty, and no audio_uri given",
        )),
        (false, Some(_)) => Err(SchemaError::invalid(
            "audio_uri",
            "set together with inline audio; send one or the other",
        )),
        (false, None) if audio.len() > limits.max_audio_bytes => Err(SchemaError::invalid(
            "audio",
            format!(
                "{} bytes exceeds the inline limit of {}; use audio_uri",
                audio.len(),
                limits.max_audio_bytes
            ),
        )),
        (false, None) => Ok(()),
        (true, Some(u)) => {
            if u.is_empty() {
                return Err(SchemaError::invalid("audio_uri", "must not be empty"));
            }
            bounded("audio_uri", u, limits.max_uri_bytes)
        }
    }
}

/// A ratio that must lie in [0, 1].
pub(crate) fn unit(field: &str, v: f32) -> Result<(), SchemaError> {
    if !(0.0..=1.0).contains(&v) {
        return Err(SchemaError::invalid(
            field,
            format!("{v} is outside [0, 1]"),
        ));
    }
    Ok(())
}

/// A score that must be a real number.
pub(crate) fn finite(field: &str, v: Option<f32>) -> Result<(), SchemaError> {
    match v {
        Some(x) if !x.is_finite() => Err(SchemaError::invalid(field, format!("{x} is not finite"))),
        _ => Ok(()),
    }
}

/// Most identifiers one user may carry.
pub const MAX_BIOKEYS: usize = 16;

/// Whether `s` is a non-empty biokey name or value: letters, digits, `_`,
/// `+`, `-`, at most 128 bytes.
pub fn biokey_text(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-'))
}

/// A user's identifier set: empty, or at most [`MAX_BIOKEYS`] with distinct
/// names, exactly one of them the (non-sensitive) user id, a value exactly
/// when not sensitive, and a SHA-256-sized hex digest each.
pub(crate) fn biokeys(keys: &[crate::Biokey], user_id: &str) -> Result<(), SchemaError> {
    if keys.is_empty() {
        return Ok(());
    }
    let bad = |why: &str| Err(SchemaError::invalid("biokeys", why));
    if keys.len() > MAX_BIOKEYS {
        return bad("too many identifiers");
    }
    let mut names: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    if names.len() != keys.len() {
        return bad("identifier names must be distinct");
    }
    for k in keys {
        if !biokey_text(&k.key) || k.value.as_deref().is_some_and(|v| !biokey_text(v)) {
            return bad("names and values hold letters, digits, '_', '+' and '-' only");
        }
        if k.value.is_some() == k.sensitive {
            return bad("a value is present exactly when the identifier is not sensitive");
        }
        if k.digest.len() != 64
            || !k
                .digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return bad("digest must be 64 lowercase hex digits");
        }
        if k.display_name
            .as_deref()
            .is_some_and(|d| d.len() > 256 || d.chars().any(char::is_control))
        {
            return bad("display_name must be short text");
        }
    }
    match keys.iter().filter(|k| k.is_user_id).collect::<Vec<_>>()[..] {
        [one] if one.value.as_deref() == Some(user_id) => Ok(()),
        [_] => bad("the user-id identifier's value must be the user id"),
        _ => bad("exactly one identifier must be the user id"),
    }
}

#[cfg(test)]
mod tests {
    use super::Limits;

    #[test]
    fn ids_are_non_empty_bounded_and_without_control_characters() {
        let limits = Limits::default();
        assert!(limits.allows_id("acme/u1"));
        assert!(limits.allows_id(&"x".repeat(256)));
        for bad in [String::new(), "x".repeat(257), "a\nb".into()] {
            assert!(!limits.allows_id(&bad), "{bad:?}");
        }
    }
}
