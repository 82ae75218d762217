//! Domain records and decision rules: what the engine knows about a user and
//! how it decides. No IO here.

mod access;
mod models;
pub mod policy;
mod records;

pub use access::{ApiKey, ChallengeSession, UsageCount, utc_day, utc_rfc3339};
pub use models::{RescoreResult, RescoreRun, RunState, TenantModel};
pub use policy::Policy;
pub use records::{Consent, JobCommit, Profile, ProfileStatus, Voiceprint, WatchlistEntry};

/// Milliseconds since the Unix epoch (the one clock of the engine).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Stable slot of a message key among `slots` (FNV-1a): the same key always
/// lands in the same partition or lane, which is all per-user ordering needs.
pub fn key_slot(key: &[u8], slots: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % slots.max(1) as u64) as usize
}
