//! `timbre rescore`: re-score a tenant's voiceprints under a new model.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use timbre::backends::{connect_bus, connect_store};
use timbre::model::default_model_id;
use timbre::rescore::{Progress, Rescorer};
use timbre::topics::TopicNames;
use tokio_util::sync::CancellationToken;

use super::engine::{ConfigArgs, runtime, shutdown_on_signal};

/// Pending users get their job published again once no outcome arrived
/// for this long (a lost or refused publish, a user who enrolled after
/// planning); while outcomes arrive, their jobs are still queued.
const REPUBLISH_AFTER_IDLE: Duration = Duration::from_secs(30);

/// With this few users pending, they are published again every
/// `REPUBLISH_AFTER_IDLE` whatever else moves (users who keep enrolling
/// must not hold a run open); a job already decided costs one store read.
const REPUBLISH_TAIL: usize = 500;

/// Shortest pause between progress passes; a pass reads every user, so the
/// pause is also at least `PASS_SHARE` times the last pass's duration.
const MIN_POLL: Duration = Duration::from_millis(500);
const PASS_SHARE: u32 = 4;

/// `timbre rescore --to-model ID --tenant T`: plans (or resumes) a run,
/// follows it and cuts the tenant over when every user has an outcome.
#[derive(clap::Args)]
pub struct RescoreCmd {
    #[command(flatten)]
    config: ConfigArgs,
    /// Target model id (`name@sha256:…`; processors must load it: `extra_models`).
    #[arg(long)]
    to_model: String,
    /// Tenant to re-score.
    #[arg(long)]
    tenant: String,
    /// Print where the run stands and exit.
    #[arg(long, conflicts_with_all = ["finalize", "rollback", "no_cutover"])]
    status: bool,
    /// Delete the old model's voiceprints of a cut-over run (no rollback after).
    #[arg(long, conflicts_with_all = ["rollback", "no_cutover"])]
    finalize: bool,
    /// Switch a cut-over tenant back to the old model.
    #[arg(long, conflicts_with = "no_cutover")]
    rollback: bool,
    /// Publish and follow, but leave the cutover to a later run.
    #[arg(long)]
    no_cutover: bool,
    /// Refuse to cut over when more than this fraction of the enrolled users
    /// failed to rebuild (they would all have to re-enroll).
    #[arg(long, default_value_t = 0.1)]
    max_failed_fraction: f64,
    /// Print the final progress as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl RescoreCmd {
    pub fn run(self) -> Result<()> {
        let config = self.config.load()?;
        let loaded = config.model_ids();
        if !loaded.contains(&self.to_model) {
            // A run to a model no processor loads would retry its jobs
            // until each gave up.
            bail!(
                "unknown model {}: the processors load {} (declare it in extra_models first)",
                self.to_model,
                loaded.join(", ")
            );
        }
        runtime()?.block_on(async move {
            let bus = connect_bus(&config.bus)?;
            let store = connect_store(&config.store).await?.state;
            let rescorer = Rescorer::new(
                bus,
                store,
                TopicNames::with_prefix(&config.topic_prefix),
                default_model_id().to_string(),
            );
            let (tenant, target) = (self.tenant.as_str(), self.to_model.as_str());
            if self.status {
                return self.report(&rescorer.progress(tenant, target).await?);
            }
            if self.finalize {
                let users = rescorer.finalize(tenant, target).await?;
                eprintln!("finalized: old voiceprints of {users} users deleted");
                return self.report(&rescorer.progress(tenant, target).await?);
            }
            if self.rollback {
                rescorer.roll_back(tenant, target).await?;
                eprintln!("rolled back: tenant {tenant} uses the previous model again");
                return self.report(&rescorer.progress(tenant, target).await?);
            }
            let run = rescorer.plan(tenant, target).await?;
            let stop = CancellationToken::new();
            shutdown_on_signal(stop.clone());
            let bar = ProgressBar::new(0).with_style(ProgressStyle::with_template(
                "{spinner} {pos}/{len} users {msg} [{elapsed_precise}, eta {eta}]",
            )?);
            let mut published_at = Instant::now();
            let published = rescorer.publish_pending(&run).await?;
            tracing::info!(published, "re-scoring jobs published");
            let started = Instant::now();
            let first = rescorer.progress(tenant, target).await?;
            let (mut outcomes, mut progressed_at) = (first.done + first.failed, Instant::now());
            let progress = loop {
                let pass = Instant::now();
                let p = rescorer.progress(tenant, target).await?;
                let pass = pass.elapsed();
                bar.set_length(p.enrolled as u64);
                bar.set_position((p.done + p.failed) as u64);
                let rate = (p.done + p.failed).saturating_sub(first.done + first.failed) as f64
                    / started.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!("({} failed, {rate:.1} users/s)", p.failed));
                if p.pending == 0 {
                    break p;
                }
                // Against the previous pass, not a high-water mark: erased
                // users take their outcomes with them.
                if p.done + p.failed > outcomes {
                    progressed_at = Instant::now();
                }
                outcomes = p.done + p.failed;
                let idle = progressed_at.elapsed() >= REPUBLISH_AFTER_IDLE;
                if (idle || p.pending <= REPUBLISH_TAIL)
                    && published_at.elapsed() >= REPUBLISH_AFTER_IDLE
                {
                    let published = rescorer.publish_pending(&run).await?;
                    tracing::info!(published, idle, "pending jobs published again");
                    published_at = Instant::now();
                }
                tokio::select! {
                    () = stop.cancelled() => {
                        bar.abandon();
                        eprintln!("stopped; run `timbre rescore` again to resume");
                        return self.report(&p);
                    }
                    () = tokio::time::sleep(MIN_POLL.max(pass * PASS_SHARE)) => {}
                }
            };
            bar.finish();
            if self.no_cutover {
                return self.report(&progress);
            }
            let failed = progress.failed as f64 / progress.enrolled.max(1) as f64;
            if failed > self.max_failed_fraction {
                self.report(&progress)?;
                anyhow::bail!(
                    "{} of {} users failed to rebuild ({:.0}%, limit {:.0}%): not cutting over; \
                     see --status, fix and re-run, or raise --max-failed-fraction",
                    progress.failed,
                    progress.enrolled,
                    failed * 100.0,
                    self.max_failed_fraction * 100.0
                );
            }
            let progress = rescorer.cut_over(tenant, target).await?;
            eprintln!(
                "cut over: tenant {tenant} now uses {target} ({} rebuilt, {} to re-enroll); \
                 `--finalize` drops the old voiceprints, `--rollback` switches back",
                progress.done, progress.failed
            );
            self.report(&progress)
        })
    }

    fn report(&self, progress: &Progress) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string(progress)?);
        } else {
            eprintln!(
                "{} → {} for tenant {}: {}; {} enrolled, {} rebuilt, {} failed, {} pending",
                progress.source_model,
                progress.target_model,
                progress.tenant,
                progress.state,
                progress.enrolled,
                progress.done,
                progress.failed,
                progress.pending
            );
            for f in &progress.failures {
                eprintln!("  failed: {f}");
            }
        }
        Ok(())
    }
}
