//! Bulk re-scoring after a model update, per tenant: plan a run, publish one
//! `RescoreRequested` per enrolled user, follow the shadow voiceprints being
//! rebuilt, cut the tenant over atomically when every user has an outcome,
//! and later finalize (drop the old voiceprints) or roll back.
//!
//! Resumable by construction: job ids are derived from the run, so a
//! republished job is deduplicated by the processor, and outcomes are one
//! row per user, so nothing is counted twice.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use thiserror::Error;
use timbre_schemas::{Registry, Request, RescoreRequested};

use crate::domain::{RescoreResult, RescoreRun, RunState, TenantModel, now_ms};
use crate::ports::{Bus, BusError, Store, StoreError};
use crate::topics::TopicNames;

/// Users (and outcomes) read per store page.
const PAGE: usize = 500;

/// Jobs published, or voiceprints deleted, at once.
const IN_FLIGHT: usize = 64;

/// Failed users listed in a [`Progress`].
const LISTED_FAILURES: usize = 100;

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
    /// The first failed users in id order and why (`user: detail`), at most 100.
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

    /// Publishes a job for every enrolled user without an outcome; returns
    /// how many. Safe to repeat: a job already done is not redone.
    pub async fn publish_pending(&self, run: &RescoreRun) -> Result<usize, RescoreError> {
        Ok(self.pass(run, true).await?.pending)
    }

    /// Where the run of `tenant` to `target` stands.
    pub async fn progress(&self, tenant: &str, target: &str) -> Result<Progress, RescoreError> {
        let run = self.run(tenant, target).await?;
        let tally = self.pass(&run, false).await?;
        Ok(Progress {
            tenant: tenant.into(),
            source_model: run.source_model,
            target_model: run.target_model,
            state: run.state.as_str(),
            enrolled: tally.enrolled,
            done: tally.done,
            failed: tally.failed,
            pending: tally.pending,
            failures: tally.failures,
        })
    }

    /// One pass over the tenant's users in id order, each enrolled one
    /// matched with its outcome in this run; with `publish`, the pending
    /// users' jobs are published page by page. Holds a page of users and
    /// one of outcomes, whatever the size of the tenant.
    async fn pass(&self, run: &RescoreRun, publish: bool) -> Result<Tally, RescoreError> {
        let plan_id = format!("{}@{}", run.target_model, run.started_at);
        let mut outcomes = Outcomes::new(self.store.as_ref(), run);
        let mut tally = Tally::default();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .users(&run.tenant, after.as_deref(), PAGE)
                .await?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            let mut pending = Vec::new();
            for (user, status) in page {
                if !status.has_voiceprint() {
                    continue;
                }
                tally.enrolled += 1;
                match outcomes.of(&user).await? {
                    Some(o) if o.ok => tally.done += 1,
                    Some(o) => {
                        tally.failed += 1;
                        if tally.failures.len() < LISTED_FAILURES {
                            tally.failures.push(format!("{}: {}", o.user_id, o.detail));
                        }
                    }
                    None => pending.push(user),
                }
            }
            tally.pending += pending.len();
            if publish {
                futures::stream::iter(pending)
                    .map(|user| self.publish_job(run, &plan_id, user))
                    .buffer_unordered(IN_FLIGHT)
                    .try_collect::<()>()
                    .await?;
            }
        }
        Ok(tally)
    }

    /// Publishes one user's job; its id is derived from the run and the
    /// user, so a republished job is deduplicated by the processor.
    async fn publish_job(
        &self,
        run: &RescoreRun,
        plan_id: &str,
        user: String,
    ) -> Result<(), RescoreError> {
        // Bounded whatever the lengths of model and user ids.
        let digest = Sha256::digest(format!("{plan_id}\n{user}").as_bytes());
        let request = Request::Rescore(RescoreRequested {
            request_id: format!("rescore-{}", hex::encode(&digest[..16])),
            tenant: run.tenant.clone(),
            user_id: user,
            occurred_at: now_ms(),
            schema_version: 1,
            trace: None,
            plan_id: plan_id.to_string(),
            from_model: run.source_model.clone(),
            to_model: run.target_model.clone(),
        });
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
        Ok(())
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
            visited += page.len();
            futures::stream::iter(&page)
                .map(|(user, _)| {
                    self.store
                        .delete_voiceprint(tenant, user, &run.source_model)
                })
                .buffer_unordered(IN_FLIGHT)
                .try_collect::<()>()
                .await?;
            after = Some(last);
        }
        run.state = RunState::Finalized;
        run.updated_at = now_ms();
        self.store.put_rescore_run(&run).await?;
        Ok(visited)
    }

    async fn run(&self, tenant: &str, target: &str) -> Result<RescoreRun, RescoreError> {
        self.store
            .rescore_run(tenant, target)
            .await?
            .ok_or_else(|| RescoreError::NoRun(tenant.into(), target.into()))
    }
}

/// What one pass over a run's users found.
#[derive(Default)]
struct Tally {
    enrolled: usize,
    done: usize,
    failed: usize,
    pending: usize,
    failures: Vec<String>,
}

/// A run's outcomes read a page at a time, asked for in ascending user id
/// order (the order of the users' pages).
struct Outcomes<'a> {
    store: &'a dyn Store,
    run: &'a RescoreRun,
    buffered: VecDeque<RescoreResult>,
    after: Option<String>,
    exhausted: bool,
}

impl<'a> Outcomes<'a> {
    fn new(store: &'a dyn Store, run: &'a RescoreRun) -> Self {
        Self {
            store,
            run,
            buffered: VecDeque::new(),
            after: None,
            exhausted: false,
        }
    }

    /// The outcome this run recorded for `user` (one recorded by an earlier
    /// run to the same target does not count); `user` must sort after every
    /// user asked for before.
    async fn of(&mut self, user: &str) -> Result<Option<RescoreResult>, StoreError> {
        loop {
            let Some(head) = self.buffered.front() else {
                if self.exhausted {
                    return Ok(None);
                }
                let page = self
                    .store
                    .rescore_results(
                        &self.run.tenant,
                        &self.run.target_model,
                        self.after.as_deref(),
                        PAGE,
                    )
                    .await?;
                self.exhausted = page.len() < PAGE;
                if let Some(last) = page.last() {
                    self.after = Some(last.user_id.clone());
                }
                self.buffered = page.into();
                continue;
            };
            match head.user_id.as_str().cmp(user) {
                // The outcome of a user who is no longer enrolled.
                std::cmp::Ordering::Less => {
                    self.buffered.pop_front();
                }
                std::cmp::Ordering::Equal => {
                    let outcome = self.buffered.pop_front();
                    return Ok(outcome.filter(|o| o.updated_at >= self.run.started_at));
                }
                std::cmp::Ordering::Greater => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use crate::adapters::file_store::FileStore;
    use crate::adapters::memory_bus::MemoryBus;
    use crate::domain::{JobCommit, Mutation, Profile, ProfileStatus};

    use super::*;

    const TENANT: &str = "acme";
    const TARGET: &str = "next@sha256:00";

    fn user(i: usize) -> String {
        format!("user-{i:05}")
    }

    fn profile(i: usize, status: ProfileStatus) -> Mutation {
        Mutation::PutProfile(Profile {
            status,
            ..crate::domain::rules::new_profile(TENANT, &user(i), 1)
        })
    }

    fn outcome(i: usize, ok: bool, at: i64) -> Mutation {
        Mutation::PutRescoreResult(RescoreResult {
            tenant: TENANT.into(),
            target_model: TARGET.into(),
            user_id: user(i),
            ok,
            detail: if ok {
                String::new()
            } else {
                "NO_RETAINED_AUDIO".into()
            },
            updated_at: at,
        })
    }

    async fn commit(store: &FileStore, id: &str, mutations: Vec<Mutation>) {
        let commit = JobCommit {
            tenant: TENANT.into(),
            request_id: id.into(),
            decision: Vec::new(),
            mutations,
        };
        store.commit(&commit).await.unwrap();
    }

    /// Users and outcomes over several store pages: every enrolled user is
    /// counted once, outcomes of users no longer enrolled and of an earlier
    /// run are ignored, and exactly the pending users get a job.
    #[tokio::test]
    async fn a_pass_matches_users_and_outcomes_page_by_page() {
        let path = std::env::temp_dir().join(format!(
            "timbre-rescore-pass-{}-{}.redb",
            std::process::id(),
            now_ms()
        ));
        let store = Arc::new(FileStore::open(&path).unwrap());
        let users = 2 * PAGE + 37;
        let not_enrolled = |i: usize| i % 10 == 4;
        commit(
            &store,
            "profiles",
            (0..users)
                .map(|i| {
                    let status = match i {
                        _ if not_enrolled(i) => ProfileStatus::NotEnrolled,
                        _ if i % 10 == 9 => ProfileStatus::Locked,
                        _ => ProfileStatus::Enrolled,
                    };
                    profile(i, status)
                })
                .collect(),
        )
        .await;
        let bus = Arc::new(MemoryBus::new(10_000));
        bus.ensure_topics(&crate::topics::catalogue("", None))
            .await
            .unwrap();
        let topics = TopicNames::with_prefix("");
        let rescorer = Rescorer::new(bus.clone(), store.clone(), topics.clone(), "old".into());
        let run = rescorer.plan(TENANT, TARGET).await.unwrap();
        let (mut done, mut failed) = (0, 0);
        let mut outcomes = Vec::new();
        for i in 0..users {
            let counted = !not_enrolled(i);
            if i % 3 == 0 {
                outcomes.push(outcome(i, true, run.started_at));
                done += usize::from(counted);
            } else if i % 7 == 0 {
                outcomes.push(outcome(i, false, run.started_at + 5));
                failed += usize::from(counted);
            } else if i % 11 == 0 {
                // Left by an earlier run to the same target: still pending.
                outcomes.push(outcome(i, true, run.started_at - 1));
            }
        }
        commit(&store, "outcomes", outcomes).await;
        let enrolled = (0..users).filter(|&i| !not_enrolled(i)).count();

        let progress = rescorer.progress(TENANT, TARGET).await.unwrap();
        assert_eq!(progress.enrolled, enrolled);
        assert_eq!(progress.done, done);
        assert_eq!(progress.failed, failed);
        assert_eq!(progress.pending, enrolled - done - failed);
        assert_eq!(progress.failures.len(), LISTED_FAILURES.min(failed));
        assert_eq!(
            progress.failures[0],
            format!("{}: NO_RETAINED_AUDIO", user(7))
        );

        let mut tail = bus.tail(&topics.rescore).await.unwrap();
        let published = rescorer.publish_pending(&run).await.unwrap();
        assert_eq!(published, progress.pending);
        let registry = Registry::new();
        let mut jobs = HashSet::new();
        for _ in 0..published {
            let message = tokio::time::timeout(Duration::from_secs(5), tail.next())
                .await
                .unwrap()
                .unwrap();
            let Request::Rescore(job) = registry.decode_request(&message.payload).unwrap() else {
                panic!("a re-scoring job");
            };
            let i: usize = job.user_id["user-".len()..].parse().unwrap();
            assert!(
                !not_enrolled(i) && !i.is_multiple_of(3) && !i.is_multiple_of(7),
                "{}",
                job.user_id
            );
            jobs.insert(job.request_id);
        }
        assert_eq!(jobs.len(), published, "one job per pending user");
        drop(store);
        let _ = std::fs::remove_file(path);
    }
}
