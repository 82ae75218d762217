//! Domain records and decision rules: what the engine knows about a user and
//! how it decides. No IO here.

pub mod policy;
mod records;

pub use policy::Policy;
pub use records::{Consent, JobCommit, Profile, ProfileStatus, Voiceprint};

/// Milliseconds since the Unix epoch (the one clock of the engine).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
