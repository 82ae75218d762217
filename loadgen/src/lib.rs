//! `loadgen`: drives a Timbre deployment with real speakers and measures it.
//!
//! A run enrolls `--speakers` speakers of a corpus manifest (consent, then
//! enrollment samples until the profile is `ENROLLED`), then sends a seeded
//! mix of genuine and impostor verifications at a fixed rate or as fast as the
//! target takes them, and reports throughput, publish → decision latency,
//! the outcome mix, errors, missing decisions and the measured FAR/FRR.
//!
//! Targets: `kafka://…` (Avro jobs on the request topics, decisions read by
//! tailing the decisions topic; `timbre run` processors must consume them),
//! `http://…` (the native HTTP API) and `embedded` (an in-process engine on
//! the embedded bus, a temporary file store and the real model).

mod bus;
pub mod corpus;
mod http;
pub mod mix;
pub mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;

use crate::corpus::{Clips, Corpus};
use crate::mix::{Claimant, Mix};
use crate::report::{NotEnrolled, Progress, Report, Speakers, Tally};

/// Command-line options of `loadgen` (tests build them with `Options::parse_from`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator of Timbre: real speakers, real decisions, FAR/FRR and latency"
)]
pub struct Options {
    /// `embedded` (in-process engine), `kafka://host:port[,…][?options]`
    /// (`timbre run` processors must consume the topics) or `http://host:port` (the API).
    #[arg(long, default_value = "embedded")]
    pub target: String,
    /// API key of the HTTP target (its tenant is the run's tenant).
    #[arg(long, env = "TIMBRE_LOADGEN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Topic prefix of the Kafka deployment (`topic_prefix` of its processors).
    #[arg(long, default_value = "")]
    pub topic_prefix: String,
    /// Kafka: create missing topics from the catalogue before the run.
    #[arg(long)]
    pub apply_topics: bool,
    /// Kafka, with `--apply-topics`: cap on the replication factor (1 for a single broker).
    #[arg(long)]
    pub replication: Option<i16>,
    /// Corpus manifest (TSV: speaker, file relative to the manifest's folder).
    #[arg(long, default_value = "tests/fixtures/librispeech-r/manifest.tsv")]
    pub manifest: PathBuf,
    /// Speakers to enroll: the first N of the manifest with two or more utterances.
    #[arg(long, default_value_t = 10)]
    pub speakers: usize,
    /// Share of verifications spoken by another speaker than the claimed one.
    #[arg(long, default_value_t = 0.5)]
    pub impostor_ratio: f64,
    /// Length of each verification clip (0: whole utterances).
    #[arg(long, default_value_t = 3.0)]
    pub clip_seconds: f32,
    /// Verifications per second; 0 sends as fast as the target takes them
    /// (bus targets: up to `--max-in-flight` undecided; HTTP: `--concurrency` requests).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Stop sending verifications after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many verifications (default 300 when `--duration` is not given).
    #[arg(long)]
    pub jobs: Option<u64>,
    /// HTTP: requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Bus targets with `--rate 0`: most verifications awaiting a decision at once.
    #[arg(long, default_value_t = 1000)]
    pub max_in_flight: usize,
    /// Seed of the verification mix: a seed always yields the same (user, utterance) sequence.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Tenant of the jobs on bus targets (default: `loadgen-<run id>`, unique per run).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Seconds to wait for outstanding decisions after the last verification was sent.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// Embedded: net speech that enrolls (the load-test tenant's enrollment target).
    #[arg(long, default_value_t = 6000)]
    pub enroll_target_ms: u64,
    /// Embedded: scoring worker threads (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Embedded: leave out the synthetic-speech check (on in production;
    /// it costs several times the embedding of a verification).
    #[arg(long)]
    pub no_synthetic_check: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Where the jobs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// In-process engine.
    Embedded,
    /// Kafka brokers (URL as given).
    Kafka(String),
    /// HTTP API base URL (no trailing slash).
    Http(String),
}

impl TargetKind {
    /// Parses `--target`.
    pub fn parse(target: &str) -> Result<Self> {
        Ok(match target {
            "embedded" | "embedded://" => TargetKind::Embedded,
            t if t.starts_with("kafka://") => TargetKind::Kafka(t.to_string()),
            t if t.starts_with("http://") || t.starts_with("https://") => {
                TargetKind::Http(t.trim_end_matches('/').to_string())
            }
            t => bail!("--target must be embedded, kafka://… or http://…, not {t:?}"),
        })
    }
}

/// When the verification phase stops sending, and how fast it sends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub rate: f64,
    pub jobs: Option<u64>,
    pub duration: Option<Duration>,
    pub max_in_flight: usize,
    pub concurrency: usize,
    pub drain: Duration,
}

impl Plan {
    /// Whether job `i` (0-based), due at `due` after the start, is past the end.
    pub fn done(&self, i: u64, due: Duration) -> bool {
        self.jobs.is_some_and(|n| i >= n) || self.duration.is_some_and(|d| due >= d)
    }

    /// When job `i` is due after the start, at a fixed rate.
    pub fn due(&self, i: u64) -> Option<Duration> {
        (self.rate > 0.0).then(|| Duration::from_secs_f64(i as f64 / self.rate))
    }
}

/// What the enrollment phase produced.
pub(crate) struct Enrolled {
    pub claimants: Vec<Claimant>,
    pub not_enrolled: Vec<NotEnrolled>,
    pub samples: u64,
}

/// What the verification phase produced.
pub(crate) struct Verified {
    pub tally: Tally,
    pub sent: u64,
    pub started: Instant,
}

/// The user id of speaker `label` in run `run_id`.
pub(crate) fn user_id(run_id: &str, label: &str) -> String {
    format!("lg{run_id}-{label}")
}

fn check(opts: &Options) -> Result<Plan> {
    if !(opts.rate.is_finite() && opts.rate >= 0.0) {
        bail!("--rate must be 0 or a positive number");
    }
    if !(opts.clip_seconds.is_finite() && opts.clip_seconds >= 0.0) {
        bail!("--clip-seconds must be 0 or positive");
    }
    if !(opts.drain_timeout.is_finite() && opts.drain_timeout > 0.0) {
        bail!("--drain-timeout must be positive");
    }
    if opts.concurrency == 0 || opts.max_in_flight == 0 || opts.speakers == 0 {
        bail!("--concurrency, --max-in-flight and --speakers must be at least 1");
    }
    let duration = match opts.duration {
        Some(d) if !(d.is_finite() && d > 0.0) => bail!("--duration must be positive"),
        d => d.map(Duration::from_secs_f64),
    };
    Ok(Plan {
        rate: opts.rate,
        jobs: opts
            .jobs
            .or(if duration.is_none() { Some(300) } else { None }),
        duration,
        max_in_flight: opts.max_in_flight,
        concurrency: opts.concurrency,
        drain: Duration::from_secs_f64(opts.drain_timeout),
    })
}

/// One run: enroll, verify, report. Errors are failures to run at all (bad
/// options, unreachable target, nobody enrolled); a run that completed
/// reports its own failures in [`Report::failures`].
pub async fn run(opts: &Options) -> Result<Report> {
    let plan = check(opts)?;
    let kind = TargetKind::parse(&opts.target)?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let tenant = match (&kind, &opts.tenant) {
        (TargetKind::Http(_), Some(_)) => {
            bail!("--tenant does not apply to http targets: the API key decides the tenant")
        }
        (TargetKind::Http(_), None) => None,
        (_, Some(t)) => Some(t.clone()),
        (_, None) => Some(format!("loadgen-{run_id}")),
    };
    let corpus = Arc::new(Corpus::load(&opts.manifest)?);
    let candidates = corpus.candidates(opts.speakers);
    if candidates.is_empty() {
        bail!(
            "{} has no speaker with two or more utterances",
            opts.manifest.display()
        );
    }
    let progress = Arc::new(Progress::new(opts.quiet));
    let printer = tokio::spawn(progress.clone().print_every_second());
    let result = async {
        let mut report = Report {
            target: opts.target.clone(),
            tenant: tenant.clone(),
            run_id: run_id.clone(),
            seed: opts.seed,
            manifest: opts.manifest.display().to_string(),
            clip_seconds: opts.clip_seconds,
            impostor_ratio: opts.impostor_ratio,
            rate: opts.rate,
            ..Report::default()
        };
        let mut target = match kind {
            TargetKind::Http(base) => {
                let Some(key) = opts.api_key.clone() else {
                    bail!("an http target needs --api-key (or TIMBRE_LOADGEN_API_KEY)");
                };
                Target::Http(http::HttpTarget::new(base, key, plan)?)
            }
            TargetKind::Embedded => Target::Bus(Box::new(
                bus::BusTarget::embedded(opts, tenant.as_deref().unwrap_or_default(), &run_id)
                    .await?,
            )),
            TargetKind::Kafka(url) => Target::Bus(Box::new(
                bus::BusTarget::kafka(&url, opts, tenant.as_deref().unwrap_or_default(), &progress)
                    .await?,
            )),
        };
        let outcome = async {
            let setup_start = Instant::now();
            let enrolled = match &mut target {
                Target::Bus(b) => {
                    b.enroll(&corpus, &candidates, &run_id, plan, &progress)
                        .await?
                }
                Target::Http(h) => h.enroll(&corpus, &candidates, &run_id, &progress).await?,
            };
            report.speakers = Speakers {
                requested: candidates.len() as u64,
                enrolled: enrolled
                    .claimants
                    .iter()
                    .map(|c| corpus.speakers[c.speaker].label.clone())
                    .collect(),
                not_enrolled: enrolled.not_enrolled,
                samples: enrolled.samples,
                seconds: setup_start.elapsed().as_secs_f64(),
            };
            if enrolled.claimants.is_empty() {
                bail!(
                    "no speaker enrolled ({:?}); the tenant's enrollment target must be reachable \
                     with all but one utterance per speaker (embedded: --enroll-target-ms; \
                     remote: TIMBRE__TENANTS__<tenant>__ENROLLMENT_TARGET_MILLIS)",
                    report.speakers.not_enrolled
                );
            }
            let mix = Mix::new(
                opts.seed,
                opts.impostor_ratio,
                Arc::new(enrolled.claimants),
                corpus.clone(),
            )?;
            let clips = Clips::new(corpus.clone(), opts.clip_seconds);
            let verified = match &mut target {
                Target::Bus(b) => b.verify(mix, clips, &run_id, plan, &progress).await?,
                Target::Http(h) => h.verify(mix, clips, &run_id, plan, &progress).await?,
            };
            report.measure(&verified.tally, verified.sent, verified.started);
            Ok(())
        }
        .await;
        let finished = match target {
            Target::Bus(b) => (*b).finish().await,
            Target::Http(_) => Ok(()),
        };
        outcome.and(finished)?;
        Ok(report)
    }
    .await;
    printer.abort();
    result
}

enum Target {
    Bus(Box<bus::BusTarget>),
    Http(http::HttpTarget),
}
