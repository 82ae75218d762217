//! Engine configuration: defaults in code, then a TOML file, then
//! `TIMBRE__SECTION__KEY=value` environment variables (`__` separates levels;
//! values are parsed as TOML literals, else taken as strings).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::audio::AudioLimits;
use crate::domain::Policy;
use crate::liveness::SyntheticThresholds;
use crate::phrase::PhraseThresholds;

/// Everything `timbre run` / `timbre up` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `kafka://host:port[,…][?options]` or `embedded://`.
    pub bus: String,
    /// `cql://[user:pass@]host:port[,…]/keyspace[?replication_factor=N]` or `file://path`.
    pub store: String,
    /// Prepended to every topic name (namespacing a deployment).
    pub topic_prefix: String,
    /// Consumer group of the processors.
    pub group: String,
    /// Static member id of this processor in its group (`group.instance.id`;
    /// the chart sets the pod name): a processor restarted within the
    /// session timeout (10 s) gets its partitions back at once. Unset, a
    /// restart waits for the dead member's session to expire.
    pub instance_id: Option<String>,
    /// Scoring worker threads (default: one per core).
    pub workers: usize,
    /// Samples queued for the workers beyond those being scored.
    pub scoring_queue: usize,
    /// Concurrent jobs (jobs of one user always run in order).
    pub lanes: usize,
    /// How long a job retries transient failures (store or model
    /// unavailable) before it ends as an `ERROR` decision with that code,
    /// stored nowhere, so its lane moves on and the caller may resubmit.
    /// Bus failures are retried for ever: without the bus nothing can end.
    pub retry_budget_secs: u64,
    /// Message bytes the processor holds in flight (queued, parked, being
    /// scored) before it stops reading: memory is bounded by bytes, whatever
    /// the message sizes.
    pub max_in_flight_bytes: usize,
    /// Directory of the model weights (default `~/.cache/timbre/models`).
    pub model_dir: Option<PathBuf>,
    /// Kernels of the speaker network's matrix products: `auto` (bfloat16
    /// where the CPU has `avx512_bf16`, else f32), `f32` or `bf16`.
    pub matmul: crate::model::Matmul,
    /// More models the workers load next to the default one (re-scoring
    /// targets): `[{ name = "campplus-2027", dir = "/models/next" }]`.
    pub extra_models: Vec<ExtraModel>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub listen: SocketAddr,
    /// Audio acceptance limits.
    pub audio: AudioLimits,
    /// Decision policy of tenants without their own.
    pub policy: Policy,
    /// Per-tenant policies: each names only the keys it changes, on top of
    /// `policy`.
    pub tenants: HashMap<String, Policy>,
    /// The HTTP adapter (`timbre serve`, and `timbre up`).
    pub api: ApiConfig,
    /// The phrase check of prompted codes.
    pub phrase: PhraseConfig,
    /// The synthetic-speech check of verifications (liveness).
    pub synthetic: SyntheticConfig,
    /// The neural speech detector.
    pub vad: VadConfig,
    /// Score normalisation and calibration of verifications.
    pub calibration: CalibrationConfig,
}

/// Settings of score normalisation (AS-norm) and calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalibrationConfig {
    /// Judge verifications by calibrated LLRs against the policy's
    /// false-accept rates when the model has a bundled calibration. Off: raw
    /// cosine against the policy's cosine thresholds.
    pub enabled: bool,
    /// A tenant's enrolled voiceprints that join the normalisation cohort
    /// (0: the bundled cohort alone).
    pub tenant_cohort: usize,
    /// Seconds a tenant's cohort sample is used before it is read again.
    pub tenant_cohort_refresh_secs: u64,
    /// Tenant voiceprints each verification is also scored against, as
    /// impostor trials that raise the tenant's accept and reject lines where
    /// its voices are harder to tell apart than the calibration corpus's
    /// (0: the bundled lines alone).
    pub tenant_impostor_samples: usize,
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tenant_cohort: 200,
            tenant_cohort_refresh_secs: 300,
            tenant_impostor_samples: 20,
        }
    }
}

/// Settings of the speech detector (Silero VAD, in the scoring pool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VadConfig {
    /// Load it (`<model_dir>/silero-vad`) and measure every job's net
    /// speech with it; off, the energy estimate counts nearly any sound
    /// (noise, music) as speech.
    pub enabled: bool,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Settings of the synthetic-speech check (AASIST, in the scoring pool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Load the detector (`<model_dir>/aasist`). It costs several times the
    /// embedding of a verification (README, "Speed and memory"); off, the
    /// liveness signal is the replay check alone.
    pub enabled: bool,
    /// Score thresholds of the signal.
    #[serde(flatten)]
    pub thresholds: SyntheticThresholds,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            thresholds: SyntheticThresholds::default(),
        }
    }
}

/// Settings of the phrase check (Whisper base, in the scoring pool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhraseConfig {
    /// Load the recogniser. When off, a verification that carries an
    /// expected phrase can never be accepted (`phrase_not_checked`).
    pub enabled: bool,
    /// Confidence thresholds of the signal.
    #[serde(flatten)]
    pub thresholds: PhraseThresholds,
}

impl Default for PhraseConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            thresholds: PhraseThresholds::default(),
        }
    }
}

/// A model loaded besides the default one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraModel {
    /// Declared model name; the id is `name@sha256:<weights hash>`.
    pub name: String,
    /// Weights directory (default: `model_dir`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

/// A secret setting: never shown by `Debug`, so it cannot reach a log line.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret value, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret was configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<unset>"
        } else {
            "<redacted>"
        })
    }
}

/// Settings of the HTTP adapter.
/// How a prompted digit dialogue runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DialogueConfig {
    /// Digits per prompt (six: about 3 s of speech, enough for the voice).
    pub code_digits: usize,
    /// Answers that do not say their code (or say too little) before the
    /// dialogue fails with `MaxTotalSqmFailuresExceeded`.
    pub max_misspeaks: u32,
    /// Inconclusive voice answers before a verification dialogue fails.
    pub max_verify_attempts: u32,
    /// Accepted samples before an enrollment dialogue that has not reached
    /// the enrollment target fails.
    pub max_enroll_samples: u32,
}

impl Default for DialogueConfig {
    fn default() -> Self {
        Self {
            code_digits: 6,
            max_misspeaks: 3,
            max_verify_attempts: 3,
            max_enroll_samples: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Where the API (and its `/healthz` and `/openapi.json`) is served;
    /// `/readyz` and `/metrics` are on the operations listener (`listen`).
    pub listen: SocketAddr,
    /// Key of the HMAC that hashes API keys at rest (set it in production:
    /// without it a leaked key table can be checked offline).
    pub key_pepper: Secret,
    /// HS256 key of voice tokens; every replica needs the same one. When
    /// unset, a random per-process key is used (single-replica only).
    pub token_signing_key: Secret,
    /// Lifetime of a voice token.
    pub token_ttl_secs: u64,
    /// Lifetime of a `start-auth` challenge, and of each prompt of a
    /// dialogue.
    pub session_ttl_secs: u64,
    /// Prompted digit dialogues (the dialogue dialect).
    pub dialogue: DialogueConfig,
    /// Lifetime of a call session token (the standalone dialect): about
    /// the longest call.
    pub call_session_ttl_secs: u64,
    /// Whether `POST /v1/keys/demo` mints short-lived keys (off in production).
    pub demo_keys: bool,
    /// Tenant of demo keys.
    pub demo_tenant: String,
    /// Lifetime of a demo key.
    pub demo_key_ttl_secs: u64,
    /// Lifetime of an OAuth2 access token.
    pub access_token_ttl_secs: u64,
    /// Lifetime of an OAuth2 refresh token (each is single use).
    pub refresh_token_ttl_secs: u64,
    /// Requests per key per minute, all replicas together.
    pub rate_limit_per_minute: u32,
    /// Requests per client address per minute and replica, counted before
    /// any key lookup (so unknown keys are throttled too).
    pub address_rate_limit_per_minute: u32,
    /// Header trusted proxies append the client's address to (e.g.
    /// `x-forwarded-for`; the address is `client_address_hops` entries from
    /// its end); unset: the connection's peer address.
    pub client_address_header: Option<String>,
    /// Trusted proxies that append to that header (1: the entry the last
    /// proxy appended; 2 behind a load balancer and an ingress that both
    /// do): the client's address is this many entries from the end.
    pub client_address_hops: usize,
    /// How long a request waits for its decision before answering 202.
    pub wait_timeout_ms: u64,
    /// Hard limit on any request's handling time.
    pub request_timeout_ms: u64,
    /// Largest request body (uploads included).
    pub max_upload_bytes: usize,
    /// Request-body bytes this replica handles at once (as announced by
    /// `Content-Length`; a body without one counts as `max_upload_bytes`);
    /// past it a request is answered `503 server_busy` with `Retry-After`
    /// before its body is read, so memory follows bytes, not connections.
    pub max_in_flight_bytes: usize,
    /// Origins (`scheme://host[:port]`) whose pages may call the API from a
    /// browser (CORS); empty: none. Pages hold client tokens, never keys.
    pub cors_origins: Vec<String>,
    /// Whether `/console` (the evaluation console) is served; off unless
    /// asked for, so a public API does not present a key prompt.
    pub console: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            key_pepper: Secret::default(),
            token_signing_key: Secret::default(),
            token_ttl_secs: 300,
            session_ttl_secs: 120,
            dialogue: DialogueConfig::default(),
            call_session_ttl_secs: 3600,
            demo_keys: false,
            demo_tenant: "demo".into(),
            demo_key_ttl_secs: 3600,
            rate_limit_per_minute: 120,
            access_token_ttl_secs: 600,
            refresh_token_ttl_secs: 86_400,
            address_rate_limit_per_minute: 600,
            client_address_header: None,
            client_address_hops: 1,
            wait_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            // The largest inline audio a job may carry, plus multipart framing.
            max_upload_bytes: timbre_schemas::Limits::default().max_audio_bytes + 64 * 1024,
            // Six largest uploads, or hundreds of 3 s clips: each upload is
            // held in a few copies (body, audio, event) while it is handled.
            max_in_flight_bytes: 64 << 20,
            cors_origins: Vec::new(),
            console: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bus: "embedded://".into(),
            store: "file://timbre-data/timbre.redb".into(),
            topic_prefix: String::new(),
            group: "timbre-processor".into(),
            instance_id: None,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            scoring_queue: 16,
            lanes: 32,
            retry_budget_secs: 300,
            max_in_flight_bytes: 128 << 20,
            model_dir: None,
            matmul: crate::model::Matmul::Auto,
            extra_models: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            audio: AudioLimits::default(),
            policy: Policy::default(),
            tenants: HashMap::new(),
            api: ApiConfig::default(),
            phrase: PhraseConfig::default(),
            synthetic: SyntheticConfig::default(),
            vad: VadConfig::default(),
            calibration: CalibrationConfig::default(),
        }
    }
}

impl Config {
    /// Ids of every model the processors of this configuration load: the
    /// default one, then `extra_models` (same weights, declared names).
    pub fn model_ids(&self) -> Vec<String> {
        let default = crate::model::default_model_id().0;
        std::iter::once(default)
            .chain(
                self.extra_models
                    .iter()
                    .map(|m| crate::model::ModelId::new(&m.name, crate::model::WEIGHTS_SHA256).0),
            )
            .collect()
    }
}

/// Configuration errors.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The file or an override is not valid.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then `file` (if given), then `TIMBRE__…` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut value = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.into(), e))?;
            let overlay: toml::Value =
                toml::from_str(&text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
            merge(&mut value, overlay);
        }
        for (key, raw) in env {
            let Some(path) = key.strip_prefix("TIMBRE__") else {
                continue;
            };
            // Field names are case-insensitive; tenant ids are not.
            let mut parts: Vec<String> = path.split("__").map(str::to_string).collect();
            for i in 0..parts.len() {
                if i == 0 || parts[i - 1] != "tenants" {
                    parts[i] = parts[i].to_lowercase();
                }
            }
            let literal = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.clone()));
            set(&mut value, &parts, literal);
        }
        layer_tenant_policies(&mut value);
        value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))
    }
}

/// A tenant's entry overrides only the keys it names: each is laid over
/// the global `[policy]` (itself already over the code defaults).
fn layer_tenant_policies(value: &mut toml::Value) {
    let Some(root) = value.as_table_mut() else {
        return;
    };
    let global = root
        .get("policy")
        .cloned()
        .unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
    let Some(toml::Value::Table(tenants)) = root.get_mut("tenants") else {
        return;
    };
    for (_, own) in tenants.iter_mut() {
        let mut layered = global.clone();
        merge(
            &mut layered,
            std::mem::replace(own, toml::Value::Boolean(false)),
        );
        *own = layered;
    }
}

fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn set(value: &mut toml::Value, path: &[String], leaf: toml::Value) {
    let Some((first, rest)) = path.split_first() else {
        *value = leaf;
        return;
    };
    if !value.is_table() {
        *value = toml::Value::Table(toml::Table::new());
    }
    let table = value.as_table_mut().expect("made a table above");
    let child = table
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    set(child, rest, leaf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_overrides_only_the_keys_it_names() {
        let dir = std::env::temp_dir().join(format!("timbre-tenants-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("timbre.toml");
        std::fs::write(
            &file,
            "[policy]\nenrollment_target_millis = 9000\nfree_failures = 7\n\
             [tenants.acme]\nfree_failures = 2\n[tenants.initech]\naccept_threshold = 0.7\n",
        )
        .unwrap();
        let env = [(
            "TIMBRE__TENANTS__initech__ENROLLMENT_TARGET_MILLIS".to_string(),
            "12000".to_string(),
        )];
        let c = Config::load(Some(&file), env).unwrap();
        let (acme, initech) = (&c.tenants["acme"], &c.tenants["initech"]);
        assert_eq!(
            (acme.free_failures, acme.enrollment_target_millis),
            (2, 9_000)
        );
        assert_eq!(
            (initech.free_failures, initech.enrollment_target_millis),
            (7, 12_000)
        );
        assert_eq!(initech.accept_threshold, 0.7);
        assert_eq!(acme.accept_threshold, Policy::default().accept_threshold);
        assert_eq!(c.policy.enrollment_target_millis, 9_000);
    }

    #[test]
    fn layers_defaults_file_and_environment() {
        let dir = std::env::temp_dir().join(format!("timbre-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("timbre.toml");
        std::fs::write(
            &file,
            "bus = \"kafka://k:9092\"\nworkers = 3\n[policy]\naccept_threshold = 0.6\n[tenants.acme]\nconsent_required = false\n",
        )
        .unwrap();
        let env = [
            ("TIMBRE__WORKERS".to_string(), "5".to_string()),
            (
                "TIMBRE__STORE".to_string(),
                "cql://db:9042/timbre".to_string(),
            ),
            (
                "TIMBRE__POLICY__REJECT_THRESHOLD".to_string(),
                "0.3".to_string(),
            ),
            (
                "TIMBRE__TENANTS__GlobexCorp__FREE_FAILURES".to_string(),
                "5".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
            (
                "TIMBRE__API__TOKEN_SIGNING_KEY".to_string(),
                "k3y-from-env".to_string(),
            ),
        ];
        let c = Config::load(Some(&file), env).unwrap();
        assert_eq!(c.bus, "kafka://k:9092");
        assert_eq!(c.workers, 5, "env beats file");
        assert_eq!(c.store, "cql://db:9042/timbre");
        assert_eq!(
            (c.policy.accept_threshold, c.policy.reject_threshold),
            (0.6, 0.3)
        );
        assert!(!c.tenants["acme"].consent_required);
        assert_eq!(
            (
                c.tenants["acme"].accept_threshold,
                c.tenants["acme"].reject_threshold
            ),
            (0.6, 0.3),
            "a tenant entry keeps the global policy's other keys"
        );
        assert_eq!(c.lanes, Config::default().lanes, "defaults fill the rest");
        assert_eq!(c.api.token_signing_key.expose(), "k3y-from-env");
        assert!(
            !format!("{c:?}").contains("k3y-from-env"),
            "secrets never show in debug output"
        );
        assert_eq!(
            c.tenants["GlobexCorp"].free_failures, 5,
            "tenant ids keep their case"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let env = [("TIMBRE__WORKRES".to_string(), "2".to_string())];
        assert!(matches!(
            Config::load(None, env),
            Err(ConfigError::Invalid(_))
        ));
    }
}
