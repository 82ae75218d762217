//! The liveness signal: is this live speech by the caller, or a recording
//! played back? [`fingerprint`] recognises audio submitted before (replays);
//! [`replays`] makes the replayed copies the evaluation measures against.

pub mod fingerprint;
pub mod replays;

pub use fingerprint::{Fingerprint, Fingerprinter, Overlap};
