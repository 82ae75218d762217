//! Prometheus metrics of the pipeline, owned by the process (no global
//! registry): names follow `timbre_<what>_<unit>[_total]`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The pipeline's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Jobs read from request topics, by topic.
    pub jobs_consumed: IntCounterVec,
    /// Decisions emitted, by job kind and decision.
    pub decisions: IntCounterVec,
    /// Dead-letter records, by error code.
    pub dead_letters: IntCounterVec,
    /// Time a sample spends on a scoring worker (decode + features + network).
    pub scoring_seconds: Histogram,
    /// End-to-end handling time of a job inside the processor.
    pub job_seconds: Histogram,
    /// Samples admitted to the scoring pool and not finished.
    pub scoring_queue_depth: IntGauge,
    /// Jobs read but not yet committed.
    pub jobs_in_flight: IntGauge,
    /// Message bytes of the jobs in flight (bounded by `max_in_flight_bytes`).
    pub in_flight_bytes: IntGauge,
    /// Partitions paused for backpressure.
    pub paused_partitions: IntGauge,
    /// Messages of the assigned request partitions the group has not committed.
    pub consumer_lag: IntGauge,
    /// HTTP requests of the API by route and status.
    pub api_requests: IntCounterVec,
    /// HTTP request time of the API by route (publish to decision included).
    pub api_seconds: HistogramVec,
    /// Impostor trials counted in tenants' impostor tails, by band.
    pub impostor_tail_trials: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let buckets = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let api_seconds = HistogramVec::new(
            HistogramOpts::new(
                "timbre_api_request_seconds",
                "API request time by route, decision wait included.",
            )
            .buckets(buckets.clone()),
            &["route"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(api_seconds.clone()))
            .expect("unique metric");
        let histogram = |name: &str, help: &str| {
            let buckets = buckets.clone();
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        Self {
            jobs_consumed: counter(
                "timbre_jobs_consumed_total",
                "Jobs read from request topics.",
                &["topic"],
            ),
            decisions: counter(
                "timbre_decisions_total",
                "Decisions emitted.",
                &["job", "decision"],
            ),
            dead_letters: counter(
                "timbre_dead_letters_total",
                "Dead-letter records written.",
                &["code"],
            ),
            scoring_seconds: histogram("timbre_scoring_seconds", "Worker time per sample."),
            job_seconds: histogram(
                "timbre_job_seconds",
                "Processor time per job, read to commit.",
            ),
            scoring_queue_depth: gauge(
                "timbre_scoring_queue_depth",
                "Samples admitted to the scoring pool.",
            ),
            jobs_in_flight: gauge("timbre_jobs_in_flight", "Jobs read and not yet committed."),
            in_flight_bytes: gauge(
                "timbre_in_flight_bytes",
                "Message bytes of the jobs read and not yet finished.",
            ),
            paused_partitions: gauge(
                "timbre_paused_partitions",
                "Partitions paused for backpressure.",
            ),
            consumer_lag: gauge(
                "timbre_consumer_lag",
                "Request messages of the assigned partitions not yet committed.",
            ),
            api_requests: counter(
                "timbre_api_requests_total",
                "API requests by route and status.",
                &["route", "status"],
            ),
            api_seconds,
            impostor_tail_trials: counter(
                "timbre_impostor_tail_trials_total",
                "Probe scores against other tenant voiceprints counted in the tenants' impostor tails.",
                &["band"],
            ),
            registry,
        }
    }

    /// The text exposition format for `/metrics`.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding never fails");
        String::from_utf8(out).expect("text format is utf-8")
    }
}
