//! Which model a tenant scores with, and bulk re-scoring runs.

use serde::{Deserialize, Serialize};

/// The model a tenant's verifications and enrollments use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantModel {
    /// Tenant id.
    pub tenant: String,
    /// Model id in use.
    pub active_model: String,
    /// The model before the last cutover (kept until finalized, for rollback).
    pub previous_model: Option<String>,
    /// Last change (ms since the epoch).
    pub updated_at: i64,
}

/// State of a re-scoring run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Rebuilding shadow voiceprints; live traffic uses the source model.
    Running,
    /// The tenant uses the target model; source voiceprints are kept.
    CutOver,
    /// Source voiceprints deleted; no way back.
    Finalized,
    /// Cut back to the source model.
    RolledBack,
}

impl RunState {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::CutOver => "cut_over",
            RunState::Finalized => "finalized",
            RunState::RolledBack => "rolled_back",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunState::Running,
            "cut_over" => RunState::CutOver,
            "finalized" => RunState::Finalized,
            "rolled_back" => RunState::RolledBack,
            _ => return None,
        })
    }
}

/// A re-scoring run of one tenant from one model to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RescoreRun {
    /// Tenant id.
    pub tenant: String,
    /// Model the voiceprints are rebuilt under.
    pub target_model: String,
    /// Model in use when the run was planned.
    pub source_model: String,
    /// Where it stands.
    pub state: RunState,
    /// Planning time (ms since the epoch).
    pub started_at: i64,
    /// Last change (ms since the epoch).
    pub updated_at: i64,
}

/// The outcome of re-scoring one user; one row per user and run, so a
/// redone job overwrites rather than double counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RescoreResult {
    /// Tenant id.
    pub tenant: String,
    /// Target model of the run.
    pub target_model: String,
    /// User id.
    pub user_id: String,
    /// Whether the shadow voiceprint was built.
    pub ok: bool,
    /// Reason code when not.
    pub detail: String,
    /// When (ms since the epoch).
    pub updated_at: i64,
}
