//! One code type for every reason and error a job can end with.
//!
//! A [`Code`] is what callers match on: its wire string goes into
//! `Decision.reasons`, `Decision.error_code` and `DeadLetter.error_code`, and
//! the same value says which HTTP status answers it, whether retrying the
//! job can help and whether the job goes to the dead-letter topic. Nothing
//! else in the engine spells these strings; wire strings are parsed back
//! once, at the edge ([`Code::parse`], [`crate::Decision::error`]).

/// How a code behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeClass {
    /// A reason of a decided job (`ENROLLED`, `voice_match`, …); not an error.
    Reason,
    /// A business rule refused the job (no consent, not enrolled, …); the
    /// input was well formed, so nothing is dead-lettered.
    Refusal,
    /// The job's content is invalid (bad audio, bad event): an error
    /// decision plus a dead-letter record with the original bytes.
    BadInput,
    /// A dependency is unavailable; the job is retried, never lost.
    Transient,
    /// A defect or broken installation; the job is dead-lettered.
    Internal,
}

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $wire:literal, $status:literal, $class:ident;)*) => {
        /// Every reason and error code of a job. Codes may only be appended;
        /// the wire strings never change.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in declaration order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The stable wire string.
            pub const fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $wire,)* }
            }

            /// HTTP status of a job refused with this code (200 for reasons).
            pub const fn http_status(self) -> u16 {
                match self { $(Code::$variant => $status,)* }
            }

            /// How the code behaves.
            pub const fn class(self) -> CodeClass {
                match self { $(Code::$variant => CodeClass::$class,)* }
            }

            /// The code of a wire string; `None` for strings no version of
            /// the engine wrote.
            pub fn parse(wire: &str) -> Option<Code> {
                match wire { $($wire => Some(Code::$variant),)* _ => None }
            }
        }
    };
}

codes! {
    // Reasons of decided jobs.
    /// Enrollment complete.
    Enrolled = "ENROLLED", 200, Reason;
    /// Enrollment sample taken; more speech is needed.
    SampleAccepted = "SAMPLE_ACCEPTED", 200, Reason;
    /// Too little net speech to use the sample.
    NotEnoughSpeech = "NOT_ENOUGH_SPEECH", 200, Reason;
    /// The voice matched the voiceprint.
    VoiceMatch = "voice_match", 200, Reason;
    /// The accept was confident enough to refine the voiceprint.
    VoiceprintRefined = "voiceprint_refined", 200, Reason;
    /// The score fell between the thresholds.
    VoiceUncertain = "voice_uncertain", 200, Reason;
    /// The voice did not match.
    VoiceMismatch = "voice_mismatch", 200, Reason;
    /// The user or the voice is on the tenant's watchlist.
    WatchlistMatch = "watchlist_match", 200, Reason;
    /// Too many failures; wait `retry_after_ms`.
    Cooldown = "cooldown", 200, Reason;
    /// A phrase was expected but no phrase analyser ran.
    PhraseNotChecked = "phrase_not_checked", 200, Reason;
    /// The phrase analyser heard something other than the prompted phrase.
    PhraseMismatch = "phrase_mismatch", 200, Reason;
    /// A liveness analyser found a replay or a synthetic voice.
    LivenessFailed = "liveness_failed", 200, Reason;
    /// The audio is a recording the user submitted before, played again.
    ReplayDetected = "replay_detected", 200, Reason;
    /// The audio sounds like text-to-speech or a converted voice.
    SyntheticSpeech = "synthetic_speech", 200, Reason;
    /// Consent granted.
    ConsentGranted = "consent_granted", 200, Reason;
    /// A profile was allocated.
    ProfileCreated = "profile_created", 200, Reason;
    /// The profile already existed.
    ProfileExists = "profile_exists", 200, Reason;
    /// The profile and everything about the user were deleted.
    ProfileDeleted = "profile_deleted", 200, Reason;
    /// Delete of a user who had no profile.
    ProfileAbsent = "profile_absent", 200, Reason;
    /// The voice was put on the watchlist.
    Watchlisted = "watchlisted", 200, Reason;
    /// The voice was taken off the watchlist.
    Unwatchlisted = "unwatchlisted", 200, Reason;
    /// An admin lifted the profile's lockout.
    ProfileUnlocked = "profile_unlocked", 200, Reason;
    /// A re-scoring job rebuilt the voiceprint under the target model.
    VoiceprintRebuilt = "voiceprint_rebuilt", 200, Reason;

    // Refusals by rule. `consent_withdrawn` and `opted_out` are also the
    // reasons of the consent change and the command that set them.
    /// The user withdrew consent.
    ConsentWithdrawn = "consent_withdrawn", 409, Refusal;
    /// The tenant requires granted consent first.
    ConsentRequired = "consent_required", 409, Refusal;
    /// The user opted out of voice biometrics.
    OptedOut = "opted_out", 409, Refusal;
    /// Locked after repeated failed verifications (also the reason of the
    /// failure that locked it); an admin `UNLOCK` lifts it.
    ProfileLocked = "profile_locked", 423, Refusal;
    /// No profile for the user.
    ProfileNotFound = "profile_not_found", 404, Refusal;
    /// Enrollment is not complete (or the user was never enrolled).
    NotEnrolled = "not_enrolled", 409, Refusal;
    /// No voiceprint under the tenant's active model.
    ReEnrollRequired = "re_enroll_required", 409, Refusal;
    /// Re-scoring found no retained enrollment audio.
    NoRetainedAudio = "no_retained_audio", 422, Refusal;
    /// A further enrollment sample of an enrolled profile does not match
    /// its voiceprint (re-enroll explicitly to change the voice).
    SampleMismatch = "sample_mismatch", 409, Refusal;

    // Bad input: error decision plus dead letter.
    /// The request id was already used by another job.
    RequestIdConflict = "request_id_conflict", 409, BadInput;
    /// The message key is not `tenant/user_id`.
    WrongKey = "wrong_key", 422, BadInput;
    /// The expected phrase is not a code of digits (the phrase check
    /// verifies prompted codes, not free sentences).
    PhraseUnsupported = "phrase_unsupported", 422, BadInput;
    /// Audio by reference is not supported; send it inline.
    AudioUriUnsupported = "audio_uri_unsupported", 422, BadInput;
    /// Not a RIFF/WAVE file.
    NotWav = "not_wav", 422, BadInput;
    /// A WAV encoding that is not PCM or IEEE float.
    UnsupportedEncoding = "unsupported_encoding", 422, BadInput;
    /// A sample rate outside the supported range.
    UnsupportedRate = "unsupported_rate", 422, BadInput;
    /// The WAV structure is broken.
    CorruptAudio = "corrupt_audio", 422, BadInput;
    /// No samples.
    EmptyAudio = "empty_audio", 422, BadInput;
    /// Too short to score.
    TooShort = "too_short", 422, BadInput;
    /// Longer than the configured limit.
    TooLong = "too_long", 422, BadInput;
    /// NaN or infinite samples.
    NonFiniteSamples = "non_finite_samples", 422, BadInput;
    /// Mostly clipped samples.
    ClippedAudio = "clipped_audio", 422, BadInput;
    /// Digital silence.
    SilentAudio = "silent_audio", 422, BadInput;
    /// Not single-object Avro framing.
    BadFraming = "bad_framing", 422, BadInput;
    /// A writer schema this engine does not know.
    UnknownSchema = "unknown_schema", 422, BadInput;
    /// The datum does not decode with its schema.
    BadAvro = "bad_avro", 422, BadInput;
    /// A different record than the topic carries.
    WrongRecord = "wrong_record", 422, BadInput;
    /// A field breaks a rule or a limit.
    InvalidField = "invalid_field", 422, BadInput;

    // Transient: retried.
    /// The store cannot be reached.
    StoreUnavailable = "store_unavailable", 503, Transient;
    /// The bus cannot be reached.
    BusUnavailable = "bus_unavailable", 503, Transient;
    /// This processor does not have the job's model loaded.
    ModelUnavailable = "model_unavailable", 503, Transient;
    /// The scoring pool is shutting down.
    ScoringStopped = "scoring_stopped", 503, Transient;

    // Internal: defects and broken installations.
    /// Scoring this input panicked.
    ScoringPanicked = "scoring_panicked", 500, Internal;
    /// A stored record does not read back.
    StoreCorrupt = "store_corrupt", 500, Internal;
    /// The store URL or options are invalid.
    StoreConfig = "store_config", 500, Internal;
    /// The store refused the request itself; retrying cannot help.
    StoreRejected = "store_rejected", 500, Internal;
    /// A topic is missing or misconfigured.
    BusTopic = "bus_topic", 500, Internal;
    /// The bus URL or options are invalid.
    BusConfig = "bus_config", 500, Internal;
    /// The bus was closed.
    BusClosed = "bus_closed", 500, Internal;
    /// A record could not be encoded.
    EncodeFailed = "encode_failed", 500, Internal;
    /// A schema handed to the registry is unusable.
    BadSchema = "bad_schema", 500, Internal;
    /// The model weights are not installed.
    ModelMissing = "model_missing", 500, Internal;
    /// The model weights do not match their checksum.
    ModelChecksumMismatch = "model_checksum_mismatch", 500, Internal;
    /// The weights are not the expected network.
    ModelBadWeights = "model_bad_weights", 500, Internal;
    /// Reading the weights failed.
    ModelIo = "model_io", 500, Internal;
    /// A tensor operation failed.
    ModelInternal = "model_internal", 500, Internal;
}

impl Code {
    /// Whether a retry of the same job may succeed.
    pub const fn is_transient(self) -> bool {
        matches!(self.class(), CodeClass::Transient)
    }

    /// Whether a job ending with this error also goes to the dead-letter topic.
    pub const fn dead_letters(self) -> bool {
        matches!(self.class(), CodeClass::BadInput | CodeClass::Internal)
    }

    /// Whether this is an error rather than a reason of a decided job.
    pub const fn is_error(self) -> bool {
        !matches!(self.class(), CodeClass::Reason)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for Code {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for &code in Code::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {code}");
            assert_eq!(Code::parse(code.as_str()), Some(code));
        }
        assert_eq!(Code::parse("no_such_code"), None);
    }

    #[test]
    fn classes_decide_status_retry_and_dead_letter() {
        for &code in Code::ALL {
            let status = code.http_status();
            match code.class() {
                CodeClass::Reason => assert_eq!(status, 200, "{code}"),
                CodeClass::Transient => {
                    assert_eq!(status, 503, "{code}");
                    assert!(code.is_transient() && !code.dead_letters());
                }
                CodeClass::Refusal => {
                    assert!((400..500).contains(&status), "{code}");
                    assert!(!code.dead_letters() && !code.is_transient());
                }
                CodeClass::BadInput => assert!((400..500).contains(&status) && code.dead_letters()),
                CodeClass::Internal => assert!(status == 500 && code.dead_letters()),
            }
        }
        assert_eq!(Code::ProfileNotFound.http_status(), 404);
        assert_eq!(Code::ConsentRequired.http_status(), 409);
        assert!(!Code::VoiceMatch.is_error() && Code::NotWav.is_error());
    }
}
