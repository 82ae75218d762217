//! What of a job may be kept where audio must not be (dead letters).

use crate::contracts::{EnrollmentRequested, VerificationRequested};
use crate::registry::Request;

impl Request {
    /// The job with its inline audio removed, or `None` when it has none.
    /// Everything else (ids, phrase, channel, trace) is kept for diagnosis.
    pub fn without_audio(&self) -> Option<Request> {
        match self {
            Self::Enrollment(r) if !r.audio.is_empty() => {
                Some(Self::Enrollment(EnrollmentRequested {
                    request_id: r.request_id.clone(),
                    tenant: r.tenant.clone(),
                    user_id: r.user_id.clone(),
                    occurred_at: r.occurred_at,
                    schema_version: r.schema_version,
                    trace: r.trace.clone(),
                    audio: Vec::new(),
                    audio_uri: r.audio_uri.clone(),
                    channel: r.channel.clone(),
                    expected_phrase: r.expected_phrase.clone(),
                    retain_diagnostics: r.retain_diagnostics,
                    biokeys: r.biokeys.clone(),
                }))
            }
            Self::Verification(r) if !r.audio.is_empty() => {
                Some(Self::Verification(VerificationRequested {
                    request_id: r.request_id.clone(),
                    tenant: r.tenant.clone(),
                    user_id: r.user_id.clone(),
                    occurred_at: r.occurred_at,
                    schema_version: r.schema_version,
                    trace: r.trace.clone(),
                    audio: Vec::new(),
                    audio_uri: r.audio_uri.clone(),
                    session_id: r.session_id.clone(),
                    expected_phrase: r.expected_phrase.clone(),
                    channel: r.channel.clone(),
                    retain_diagnostics: r.retain_diagnostics,
                }))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_audio_goes() {
        let mut job = VerificationRequested::new("k", "t", "u", 1, vec![1; 100]);
        job.expected_phrase = Some("4 7 1 9".into());
        let request = Request::Verification(job);
        let Some(Request::Verification(kept)) = request.without_audio() else {
            panic!("a verification with audio has a redacted form");
        };
        assert!(kept.audio.is_empty());
        assert_eq!(kept.expected_phrase.as_deref(), Some("4 7 1 9"));
        assert_eq!(kept.request_id, "k");
        let silent = Request::Enrollment(EnrollmentRequested::new("k", "t", "u", 1, Vec::new()));
        assert!(silent.without_audio().is_none());
    }
}
