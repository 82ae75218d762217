//! Bulk re-scoring after a model update, per tenant: plan a run, publish one
//! `RescoreRequested` per enrolled user, follow the shadow voiceprints being
//! rebuilt, cut the tenant over atomically when every user has an outcome,
//! and later finalize (drop the old voiceprints) or roll back.
//!
//! Resumable by construction: job ids are derived from the run, so a
//! republished job is deduplicated by the processor, and outcomes are one
//! row per user, so nothing is counted twice.

use std::collections::HashSet;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use thiserror::Error;
use timbre_schemas::{Registry, Request, RescoreRequested};

use crate::domain::{RescoreRun, RunState, TenantModel, now_ms};
use crate::ports::{Bus, BusError, Store, StoreError};
use crate::topics::TopicNames;

/// Users read per store page.
const PAGE: usize = 500;

/// Re-scoring failures; [`RescoreError::code`] is stable.
#[derive(Debug, Error)]
pub enum RescoreError {
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bus failure.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The tenant already uses the target model.
    #[error("tenant {0} already uses model {1}")]
    AlreadyActive(String, String),
    /// No run for this tenant and target.
    #[error("no re-scoring run of tenant {0} to {1}")]
    NoRun(String, String),
    /// The run is not in a state that allows the operation.
    #[error("run is {0}, cannot {1}")]
    WrongState(&'static str, &'static str),
    /// Cutover asked before every user has an outcome.
    #[error("{0} enrolled users have no outcome yet")]
    Incomplete(usize),
}

impl RescoreError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            RescoreError::Store(e) => e.code().as_str(),
            RescoreError::Bus(e) => e.code().as_str(),
            RescoreError::AlreadyActive(..) => "rescore_already_active",
            RescoreError::NoRun(..) => "rescore_no_run",
            RescoreError::WrongState(..) => "rescore_wrong_state",
            RescoreError::Incomplete(_) => "rescore_incomplete",
        }
    }
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// Tenant id.
    pub tenant: String,
    /// Model rebuilt from.
    pub source_model: String,
    /// Model rebuilt under.
    pub target_model: String,
    /// Run state.
    pub state: &'static str,
    /// Users enrolled now.
    pub enrolled: usize,
    /// Enrolled users with a rebuilt shadow voiceprint.
    pub done: usize,
    /// Enrolled users whose rebuild failed (they will have to re-enroll).
    pub failed: usize,
    /// Enrolled users without an outcome yet.
    pub pending: usize,
    /// The failed users and why (`user: code`), at most 100.
    pub failures: Vec<String>,
}

/// Plans, follows and completes re-scoring runs.
pub struct Rescorer {
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    topics: TopicNames,
    registry: Registry,
    default_model: String,
}

impl Rescorer {
    /// A rescorer on these ports; `default_model` is what tenants without a
    /// recorded model use.
    pub fn new(
        bus: Arc<dyn Bus>,
        store: Arc<dyn Store>,
        topics: TopicNames,
        default_model: String,
    ) -> Self {
        Self {
            bus,
            store,
            topics,
            registry: Registry::new(),
            default_model,
        }
    }

    /// The tenant's model now.
    pub async fn active_model(&self, tenant: &str) -> Result<String, RescoreError> {
        Ok(self
            .store
            .tenant_model(tenant)
            .await?
            .map_or_else(|| self.default_model.clone(), |m| m.active_model))
    }

    /// Starts a run, or returns the one in progress (resume).
    pub async fn plan(&self, tenant: &str, target: &str) -> Result<RescoreRun, RescoreError> {
        if let Some(run) = self.store.rescore_run(tenant, target).await?
            && run.state == RunState::Running
        {
            return Ok(run);
        }
        let source = self.active_model(tenant).await?;
        if source == target {
            return Err(RescoreError::AlreadyActive(tenant.into(), target.into()));
        }
        let now = now_ms();
        let run = RescoreRun {
            tenant: tenant.into(),
            target_model: target.into(),
            source_model: source,
            state: RunState::Running,
            started_at: now,
            updated_at: now,
        };
        self.store.put_rescore_run(&run).await?;
        tracing::info!(tenant, target, source = %run.source_model, "re-scoring run planned");
        Ok(run)
    }

    /// Every enrolled user of the tenant, paged from the store.
    async fn enrolled(&self, tenant: &str) -> Result<Vec<String>, RescoreError> {
        let mut users = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.store.users(tenant, after.as_deref(), PAGE).await?;
            let last = page.last().map(|(u, _)| u.clone());
            users.extend(
                page.into_iter()
                    .filter(|(_, s)| s.has_voiceprint())
                    .map(|(u, _)| u),
            );
            match last {
                Some(l) => after = Some(l),
                None => break,
            }
        }
        Ok(users)
    }

    /// Publishes a job for every enrolled user without an outcome; returns
    /// how many. Safe to repeat: a job already done is not redone.
    pub async fn publish_pending(&self, run: &RescoreRun) -> Result<usize, RescoreError> {
        let outcomes: HashSet<String> = self
            .outcomes(run)
            .await?
            .into_iter()
            .map(|r| r.user_id)
            .collect();
        let plan_id = format!("{}@{}", run.target_model, run.started_at);
        let mut published = 0;
        for user in self.enrolled(&run.tenant).await? {
            if outcomes.contains(&user) {
                continue;
            }
            // Bounded whatever the lengths of model and user ids.
            let digest = Sha256::digest(format!("{plan_id}\n{user}").as_bytes());
            let job = RescoreRequested {
                request_id: format!("rescore-{}", hex::encode(&digest[..16])),
                tenant: run.tenant.clone(),
                user_id: user,
                occurred_at: now_ms(),
                schema_version: 1,
                trace: None,
                plan_id: plan_id.clone(),
                from_model: run.source_model.clone(),
                to_model: run.target_model.clone(),
            };
            let request = Request::Rescore(job);
            let bytes = self
                .registry
                .encode_request(&request)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            self.bus
                .publish(
                    &self.topics.rescore,
                    request.message_key().as_bytes(),
                    &bytes,
                )
                .await?;
            published += 1;
        }
        Ok(published)
    }

    /// Where the run of `tenant` to `target` stands.
    pub async fn progress(&self, tenant: &str, target: &str) -> Result<Progress, RescoreError> {
        let run = self
            .store
            .rescore_run(tenant, target)
            .await?
            .ok_or_else(|| RescoreError::NoRun(tenant.into(), target.into()))?;
        let outcomes = self.outcomes(&run).await?;
        let enrolled: HashSet<String> = self.enrolled(tenant).await?.into_iter().collect();
        let mut done = 0;
        let mut failures = Vec::new();
        let mut seen = 0;
        for o in outcomes.iter().filter(|o| enrolled.contains(&o.user_id)) {
            seen += 1;
            if o.ok {
                done += 1;
            } else {
                failures.push(format!("{}: {}", o.user_id, o.detail));
            }
        }
        let failed = failures.len();
        failures.truncate(100);
        Ok(Progress {
            tenant: tenant.into(),
            source_model: run.source_model,
            target_model: run.target_model,
            state: run.state.as_str(),
            enrolled: enrolled.len(),
            done,
            failed,
            pending: enrolled.len() - seen,
            failures,
        })
    }

    /// Switches the tenant to the target model in one write, once every
    /// enrolled user has an outcome. Users whose rebuild failed have no
    /// voiceprint under it and move to RE_ENROLL on their next verification.
    pub async fn cut_over(&self, tenant: &str, target: &str) -> Result<Progress, RescoreError> {
        let mut run = self.run(tenant, target).await?;
        if run.state != RunState::Running {
            return Err(RescoreError::WrongState(run.state.as_str(), "cut over"));
        }
        let progress = self.progress(tenant, target).await?;
        if progress.pending > 0 {
            return Err(RescoreError::Incomplete(progress.pending));
        }
        let now = now_ms();
        self.store
            .put_tenant_model(&TenantModel {
                tenant: tenant.into(),
                active_model: target.into(),
                previous_model: Some(run.source_model.clone()),
                updated_at: now,
            })
            .await?;
        run.state = RunState::CutOver;
        run.updated_at = now;
        self.store.put_rescore_run(&run).await?;
        tracing::info!(tenant, target, "tenant cut over");
        self.progress(tenant, target).await
    }

    /// Back to the source model (its voiceprints were kept).
    pub async fn roll_back(&self, tenant: &str, target: &str) -> Result<(), RescoreError> {
        let mut run = self.run(tenant, target).await?;
        if run.state != RunState::CutOver {
            return Err(RescoreError::WrongState(run.state.as_str(), "roll back"));
        }
        let now = now_ms();
        self.store
            .put_tenant_model(&TenantModel {
                tenant: tenant.into(),
                active_model: run.source_model.clone(),
                previous_model: Some(target.into()),
                updated_at: now,
            })
            .await?;
        run.state = RunState::RolledBack;
        run.updated_at = now;
        self.store.put_rescore_run(&run).await?;
        Ok(())
    }

    /// Deletes the source model's voiceprints of every user; returns how
    /// many users were visited. No rollback after this.
    pub async fn finalize(&self, tenant: &str, target: &str) -> Result<usize, RescoreError> {
        let mut run = self.run(tenant, target).await?;
        if run.state != RunState::CutOver {
            return Err(RescoreError::WrongState(run.state.as_str(), "finalize"));
        }
        let mut visited = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self.store.users(tenant, after.as_deref(), PAGE).await?;
            let Some((last, _)) = page.last().cloned() else {
                break;
            };
            for (user, _) in &page {
                self.store
                    .delete_voiceprint(tenant, user, &run.source_model)
                    .await?;
                visited += 1;
            }
            after = Some(last);
        }
        run.state = RunState::Finalized;
        run.updated_at = now_ms();
        self.store.put_rescore_run(&run).await?;
        Ok(visited)
    }

    /// Outcomes recorded by this run (not by an earlier run to the same target).
    async fn outcomes(
        &self,
        run: &RescoreRun,
    ) -> Result<Vec<crate::domain::RescoreResult>, RescoreError> {
        Ok(self
            .store
            .rescore_results(&run.tenant, &run.target_model)
            .await?
            .into_iter()
            .filter(|o| o.updated_at >= run.started_at)
            .collect())
    }

    async fn run(&self, tenant: &str, target: &str) -> Result<RescoreRun, RescoreError> {
        self.store
            .rescore_run(tenant, target)
            .await?
            .ok_or_else(|| RescoreError::NoRun(tenant.into(), target.into()))
    }
}
