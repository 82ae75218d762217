//! Domain records and decision rules: what the engine knows about a user and
//! how it decides. No IO here, and no imports of adapters, the pipeline, the
//! API or the model: only the wire contracts (`timbre_schemas`).
//!
//! - [`rules`]: one pure function per job kind, loaded state + scores in,
//!   [`Outcome`] out.
//! - [`signals`]: phrase and liveness signals and their fusion with the voice.
//! - [`policy`]: tenant settings and the scoring arithmetic.
//! - [`commit`]: the mutations a job writes, in the order stores apply them.

mod access;
pub mod calibration;
pub mod commit;
pub mod impostor_tail;
mod models;
pub mod outcome;
pub mod policy;
mod records;
pub mod rules;
pub mod signals;

pub use access::{
    ApiKey, CallState, ChallengeSession, DialogueKind, DialogueState, Scope, UsageCount, utc_day,
    utc_rfc3339,
};
pub use commit::{JobCommit, Mutation};
pub use models::{RescoreResult, RescoreRun, RunState, TenantModel};
pub use outcome::{Outcome, Progress, Refusal};
pub use policy::{BIOMETRIC_PURPOSE, Policies, Policy};
pub use records::{Consent, DiagnosticRecord, Profile, ProfileStatus, Voiceprint, WatchlistEntry};
pub use rules::{Analysis, Context};
pub use signals::{Signal, SignalKind, Tier};

/// Milliseconds since the Unix epoch (the one clock of the engine).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// FNV-1a of `bytes`: a small hash that is the same on every processor,
/// build and run.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Stable slot of a message key among `slots` (FNV-1a): the same key always
/// lands in the same partition or lane, which is all per-user ordering needs.
pub fn key_slot(key: &[u8], slots: usize) -> usize {
    (fnv1a(key) % slots.max(1) as u64) as usize
}
