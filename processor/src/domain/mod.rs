//! Domain records and decision rules: what the engine knows about a user and
//! how it decides. No IO here.

pub mod policy;
mod records;

pub use policy::Policy;
pub use records::{Consent, JobCommit, Profile, ProfileStatus, Voiceprint};
