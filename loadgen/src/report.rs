//! What a run measured: the tally of decided attempts, the summary, live progress.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use timbre_schemas::{Decision, DecisionKind};

/// Error codes that mean the corpus audio was refused (see the engine's
/// `AudioError::code`): the recording's fault, not the system's.
pub const AUDIO_REFUSALS: &[&str] = &[
    "not_wav",
    "unsupported_encoding",
    "unsupported_rate",
    "corrupt_audio",
    "empty_audio",
    "too_short",
    "too_long",
    "non_finite_samples",
    "clipped_audio",
    "silent_audio",
];

/// The outcome of one verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted as the claimed user.
    Accept,
    /// Inconclusive.
    Retry,
    /// Rejected.
    Reject,
    /// Refused because the user is cooling down after failures.
    Cooldown,
    /// Not scored; the stable error code (or `applied` for a wrong decision kind).
    Error(String),
}

impl Verdict {
    /// The verdict of a decision event.
    pub fn of(d: &Decision) -> Self {
        match d.decision {
            DecisionKind::Accept => Verdict::Accept,
            DecisionKind::Retry => Verdict::Retry,
            DecisionKind::Reject => Verdict::Reject,
            DecisionKind::Cooldown => Verdict::Cooldown,
            DecisionKind::Applied => Verdict::Error("unexpected_applied".into()),
            DecisionKind::Error => Verdict::Error(d.error_code.clone().unwrap_or_default()),
        }
    }

    /// Lower-case name, or the error code.
    pub fn code(&self) -> String {
        match self {
            Verdict::Accept => "accept".into(),
            Verdict::Retry => "retry".into(),
            Verdict::Reject => "reject".into(),
            Verdict::Cooldown => "cooldown".into(),
            Verdict::Error(code) => code.clone(),
        }
    }

    /// The verdict of the API's `decision` word (and `error` code).
    pub fn from_api(decision: &str, error: Option<&str>) -> Self {
        match decision {
            "accept" => Verdict::Accept,
            "retry" => Verdict::Retry,
            "reject" => Verdict::Reject,
            "cooldown" => Verdict::Cooldown,
            "error" => Verdict::Error(error.unwrap_or("error").into()),
            other => Verdict::Error(format!("unexpected_{other}")),
        }
    }
}

/// Counts of each verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    /// Accepted.
    pub accept: u64,
    /// Inconclusive.
    pub retry: u64,
    /// Rejected.
    pub reject: u64,
    /// Refused for cooldown.
    pub cooldown: u64,
    /// Errors (by code in [`Report::errors`]).
    pub error: u64,
}

impl Outcomes {
    fn add(&mut self, v: &Verdict) {
        *match v {
            Verdict::Accept => &mut self.accept,
            Verdict::Retry => &mut self.retry,
            Verdict::Reject => &mut self.reject,
            Verdict::Cooldown => &mut self.cooldown,
            Verdict::Error(_) => &mut self.error,
        } += 1;
    }

    /// Every decided attempt.
    pub fn total(&self) -> u64 {
        self.accept + self.retry + self.reject + self.cooldown + self.error
    }
}

/// Decided verifications as they come in.
pub struct Tally {
    latency_us: Histogram<u64>,
    outcomes: Outcomes,
    genuine: Outcomes,
    impostor: Outcomes,
    errors: BTreeMap<String, u64>,
    last: Option<Instant>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            // 1 µs to 1 h, 3 significant digits.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            outcomes: Outcomes::default(),
            genuine: Outcomes::default(),
            impostor: Outcomes::default(),
            errors: BTreeMap::new(),
            last: None,
        }
    }
}

impl Tally {
    /// Counts one decided attempt that took `latency`, decided at `at`.
    pub fn record(&mut self, genuine: bool, verdict: &Verdict, latency: Duration, at: Instant) {
        self.latency_us.saturating_record(
            u64::try_from(latency.as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        self.outcomes.add(verdict);
        if genuine {
            self.genuine.add(verdict);
        } else {
            self.impostor.add(verdict);
        }
        if let Verdict::Error(code) = verdict {
            *self.errors.entry(code.clone()).or_default() += 1;
        }
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
    }

    /// Attempts decided so far.
    pub fn decided(&self) -> u64 {
        self.outcomes.total()
    }

    /// When the last decision arrived.
    pub fn last(&self) -> Option<Instant> {
        self.last
    }
}

/// Publish → decision (HTTP: request → response) percentiles, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// Job counts of the verification phase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Jobs {
    /// Published (HTTP: requests started).
    pub sent: u64,
    /// Decided within the drain timeout.
    pub decided: u64,
    /// Not decided within the drain timeout.
    pub missing: u64,
}

/// Outcomes of attempts of one kind, and their error rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClaimReport {
    /// Decided attempts of this kind.
    pub attempts: u64,
    /// Their verdicts.
    pub outcomes: Outcomes,
}

/// A speaker that did not enroll, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotEnrolled {
    /// Speaker label.
    pub speaker: String,
    /// Enrollment samples sent.
    pub samples: u64,
    /// Net speech the engine counted over those samples.
    pub speech_millis: i64,
    /// Reason or error code of the last enrollment decision (or why none came).
    pub last: String,
}

/// The enrollment phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Speakers {
    /// Speakers asked for (`--speakers`) that had two or more utterances.
    pub requested: u64,
    /// Speakers that reached `ENROLLED`.
    pub enrolled: Vec<String>,
    /// Speakers excluded from verification.
    pub not_enrolled: Vec<NotEnrolled>,
    /// Enrollment samples sent.
    pub samples: u64,
    /// Wall time of consent and enrollment.
    pub seconds: f64,
}

/// The summary of a run (`--json` prints it).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Target as given.
    pub target: String,
    /// Tenant of the jobs (HTTP: the API key's; not known to the client).
    pub tenant: Option<String>,
    /// Unique id of this run (prefix of user ids and request ids).
    pub run_id: String,
    /// Seed of the verification mix.
    pub seed: u64,
    /// Manifest of the corpus.
    pub manifest: String,
    /// Verification clip length.
    pub clip_seconds: f32,
    /// Share of impostor attempts asked for.
    pub impostor_ratio: f64,
    /// Offered jobs/s (`0`: as fast as the target takes them).
    pub rate: f64,
    /// The enrollment phase.
    pub speakers: Speakers,
    /// Verification jobs.
    pub jobs: Jobs,
    /// From the first verification sent to the last decision received.
    pub verification_seconds: f64,
    /// Decided verifications per second over [`Report::verification_seconds`].
    pub throughput_per_s: f64,
    /// Latency of decided verifications.
    pub latency_ms: Latency,
    /// Verdicts of decided verifications.
    pub outcomes: Outcomes,
    /// Error decisions by code.
    pub errors: BTreeMap<String, u64>,
    /// Attempts by the claimed speaker's own utterances.
    pub genuine: ClaimReport,
    /// Attempts by another speaker's utterances.
    pub impostor: ClaimReport,
    /// False accept rate: impostor attempts accepted / impostor attempts.
    pub far: Option<f64>,
    /// False reject rate: genuine attempts not accepted / genuine attempts.
    pub frr: Option<f64>,
    /// Conditions that distort the figures without failing the run.
    pub warnings: Vec<String>,
    /// Why the run failed (missing decisions, unexpected errors); empty when it passed.
    pub failures: Vec<String>,
}

impl Report {
    /// Fills the measured part from `tally`; `started` is when the first
    /// verification was sent.
    pub fn measure(&mut self, tally: &Tally, sent: u64, started: Instant) {
        let h = &tally.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        self.latency_ms = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                p50: ms(h.value_at_quantile(0.50)),
                p95: ms(h.value_at_quantile(0.95)),
                p99: ms(h.value_at_quantile(0.99)),
                max: ms(h.max()),
                mean: h.mean() / 1000.0,
            }
        };
        let decided = tally.decided();
        self.jobs = Jobs {
            sent,
            decided,
            missing: sent.saturating_sub(decided),
        };
        self.verification_seconds = tally
            .last
            .map_or(0.0, |l| l.saturating_duration_since(started).as_secs_f64());
        self.throughput_per_s = if self.verification_seconds > 0.0 {
            decided as f64 / self.verification_seconds
        } else {
            0.0
        };
        self.outcomes = tally.outcomes.clone();
        self.errors = tally.errors.clone();
        self.genuine = ClaimReport {
            attempts: tally.genuine.total(),
            outcomes: tally.genuine.clone(),
        };
        self.impostor = ClaimReport {
            attempts: tally.impostor.total(),
            outcomes: tally.impostor.clone(),
        };
        let rate = |n: u64, of: u64| (of > 0).then(|| n as f64 / of as f64);
        self.far = rate(tally.impostor.accept, tally.impostor.total());
        self.frr = rate(
            tally.genuine.total() - tally.genuine.accept,
            tally.genuine.total(),
        );
        self.judge();
    }

    /// Sets warnings and failures from the figures.
    fn judge(&mut self) {
        self.failures.clear();
        if self.jobs.missing > 0 {
            self.failures.push(format!(
                "{} of {} verifications got no decision within the drain timeout",
                self.jobs.missing, self.jobs.sent
            ));
        }
        let unexpected: Vec<String> = self
            .errors
            .iter()
            .filter(|(code, _)| !AUDIO_REFUSALS.contains(&code.as_str()))
            .map(|(code, n)| format!("{code} ×{n}"))
            .collect();
        if !unexpected.is_empty() {
            self.failures
                .push(format!("unexpected errors: {}", unexpected.join(", ")));
        }
        if self.outcomes.cooldown > 0 {
            self.warnings.push(format!(
                "{} cooldown decisions distort FAR/FRR: give the load-test tenant a large \
                 free_failures (TIMBRE__TENANTS__<tenant>__FREE_FAILURES=1000000)",
                self.outcomes.cooldown
            ));
        }
        let audio: u64 = self
            .errors
            .iter()
            .filter(|(code, _)| AUDIO_REFUSALS.contains(&code.as_str()))
            .map(|(_, n)| n)
            .sum();
        if audio > 0 {
            self.warnings.push(format!(
                "{audio} clips were refused as audio (see errors): the corpus, not the system"
            ));
        }
    }

    /// Process exit status: 0 passed, 2 failed (see [`Report::failures`]).
    pub fn exit_code(&self) -> u8 {
        if self.failures.is_empty() { 0 } else { 2 }
    }

    /// A readable table of the summary.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let rate = |r: Option<f64>| r.map_or("-".into(), |r| format!("{:.2}%", r * 100.0));
        let offered = if self.rate > 0.0 {
            format!("{}/s", self.rate)
        } else {
            "max".into()
        };
        let _ = writeln!(t, "target            {}", self.target);
        if let Some(tenant) = &self.tenant {
            let _ = writeln!(t, "tenant            {tenant}");
        }
        let _ = writeln!(
            t,
            "run               {} (seed {}, clips {} s, impostors {:.0}%, offered {offered})",
            self.run_id,
            self.seed,
            self.clip_seconds,
            self.impostor_ratio * 100.0
        );
        let _ = writeln!(
            t,
            "speakers          {} enrolled of {} ({} samples, {:.1} s)",
            self.speakers.enrolled.len(),
            self.speakers.requested,
            self.speakers.samples,
            self.speakers.seconds
        );
        for n in &self.speakers.not_enrolled {
            let _ = writeln!(
                t,
                "  not enrolled    {} ({} samples, {:.1} s speech, last decision: {})",
                n.speaker,
                n.samples,
                n.speech_millis as f64 / 1000.0,
                n.last
            );
        }
        let _ = writeln!(
            t,
            "jobs              {} sent, {} decided, {} missing",
            self.jobs.sent, self.jobs.decided, self.jobs.missing
        );
        let _ = writeln!(
            t,
            "throughput        {:.1} decided/s over {:.1} s",
            self.throughput_per_s, self.verification_seconds
        );
        let l = &self.latency_ms;
        let _ = writeln!(
            t,
            "latency ms        p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}  mean {:.1}",
            l.p50, l.p95, l.p99, l.max, l.mean
        );
        let row = |o: &Outcomes| {
            format!(
                "accept {}  retry {}  reject {}  cooldown {}  error {}",
                o.accept, o.retry, o.reject, o.cooldown, o.error
            )
        };
        let _ = writeln!(t, "outcomes          {}", row(&self.outcomes));
        let _ = writeln!(
            t,
            "  genuine {:>5}   {}",
            self.genuine.attempts,
            row(&self.genuine.outcomes)
        );
        let _ = writeln!(
            t,
            "  impostor {:>4}   {}",
            self.impostor.attempts,
            row(&self.impostor.outcomes)
        );
        let _ = writeln!(
            t,
            "FAR / FRR         {} / {}",
            rate(self.far),
            rate(self.frr)
        );
        for (code, n) in &self.errors {
            let _ = writeln!(t, "error             {code} ×{n}");
        }
        for w in &self.warnings {
            let _ = writeln!(t, "warning           {w}");
        }
        for f in &self.failures {
            let _ = writeln!(t, "FAILED            {f}");
        }
        t
    }
}

/// Counters of the current phase, printed once a second on stderr.
pub struct Progress {
    phase: Mutex<(String, Instant)>,
    sent: AtomicU64,
    decided: AtomicU64,
    quiet: bool,
}

impl Progress {
    /// Progress that prints unless `quiet`.
    pub fn new(quiet: bool) -> Self {
        Self {
            phase: Mutex::new((String::new(), Instant::now())),
            sent: AtomicU64::new(0),
            decided: AtomicU64::new(0),
            quiet,
        }
    }

    /// Starts a phase: counters back to zero.
    pub fn phase(&self, name: &str) {
        *self.phase.lock().expect("progress lock") = (name.to_string(), Instant::now());
        self.sent.store(0, Ordering::Relaxed);
        self.decided.store(0, Ordering::Relaxed);
    }

    /// One more job sent.
    pub fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// One more job decided.
    pub fn decided(&self) {
        self.decided.fetch_add(1, Ordering::Relaxed);
    }

    /// Jobs sent and not decided yet.
    pub fn in_flight(&self) -> u64 {
        self.sent
            .load(Ordering::Relaxed)
            .saturating_sub(self.decided.load(Ordering::Relaxed))
    }

    /// A free-form line (unless quiet).
    pub fn note(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    /// Prints a line per second until the task is aborted.
    pub async fn print_every_second(self: std::sync::Arc<Self>) {
        if self.quiet {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut before = (String::new(), 0u64);
        loop {
            tick.tick().await;
            let (name, since) = self.phase.lock().expect("progress lock").clone();
            let sent = self.sent.load(Ordering::Relaxed);
            let decided = self.decided.load(Ordering::Relaxed);
            let per_s = if before.0 == name {
                decided.saturating_sub(before.1)
            } else {
                decided
            };
            before = (name.clone(), decided);
            eprintln!(
                "{name:<8} {:>5.0}s  sent {sent:>6}  decided {decided:>6}  in flight {:>5}  {per_s:>4}/s",
                since.elapsed().as_secs_f64(),
                sent.saturating_sub(decided),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_percentiles_and_verdict_on_failures() {
        let mut tally = Tally::default();
        let start = Instant::now();
        for i in 0..100u64 {
            let genuine = i % 2 == 0;
            let v = match i {
                0..=39 if genuine => Verdict::Accept,
                _ if genuine => Verdict::Retry,
                1 => Verdict::Accept,
                _ => Verdict::Reject,
            };
            tally.record(genuine, &v, Duration::from_millis(i + 1), start);
        }
        tally.record(
            false,
            &Verdict::Error("too_short".into()),
            Duration::from_millis(1),
            start,
        );
        let mut r = Report::default();
        r.measure(&tally, 101, start);
        assert_eq!(r.jobs.missing, 0);
        assert_eq!(r.genuine.attempts, 50);
        assert_eq!(r.frr, Some(30.0 / 50.0));
        assert_eq!(r.far, Some(1.0 / 51.0));
        let l = &r.latency_ms;
        assert!((49.0..=51.0).contains(&l.p50), "{l:?}");
        assert!(l.p50 <= l.p95 && l.p95 <= l.p99 && l.p99 <= l.max, "{l:?}");
        assert!((99.9..=100.1).contains(&l.max), "{l:?}");
        assert!(r.failures.is_empty(), "audio refusals are not failures");
        assert_eq!(r.exit_code(), 0);

        tally.record(
            true,
            &Verdict::Error("not_enrolled".into()),
            Duration::ZERO,
            start,
        );
        let mut r = Report::default();
        r.measure(&tally, 104, start);
        assert_eq!(r.jobs.missing, 2);
        assert_eq!(r.failures.len(), 2, "{:?}", r.failures);
        assert_eq!(r.exit_code(), 2);
    }
}
