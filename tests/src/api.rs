//! Running the API in-process for tests, and a small client for it.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use timbre::api::keys::KeyHasher;
use timbre::config::Config;
use timbre::domain::now_ms;
use timbre::engine::Engine;
use tokio_util::sync::CancellationToken;

use crate::unique;

/// One adapter replica's base URL and a client.
#[derive(Clone)]
pub struct Api {
    /// `http://host:port`.
    pub base: String,
    /// The client.
    pub http: reqwest::Client,
}

impl Api {
    /// A client of the server at `addr`.
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    /// Sends a request; JSON bodies are parsed, others returned as a string.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("http round trip");
        let status = resp.status();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = resp.bytes().await.unwrap();
        if ctype.starts_with("application/json") {
            (status, serde_json::from_slice(&body).unwrap())
        } else {
            (status, Value::String(String::from_utf8_lossy(&body).into()))
        }
    }

    /// POSTs JSON with an `x-api-key`.
    pub async fn post(&self, key: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("x-api-key", key)
                .json(&body),
        )
        .await
    }

    /// GETs with the key as a bearer token.
    pub async fn get(&self, key: &str, path: &str) -> (StatusCode, Value) {
        self.send(
            self.http
                .get(format!("{}{path}", self.base))
                .header("authorization", format!("Bearer {key}")),
        )
        .await
    }

    /// DELETEs with an `x-api-key`.
    pub async fn delete(&self, key: &str, path: &str) -> (StatusCode, Value) {
        self.send(
            self.http
                .delete(format!("{}{path}", self.base))
                .header("x-api-key", key),
        )
        .await
    }

    /// A POST of `form` to `/oauth/token`, with HTTP Basic client
    /// authentication when `basic` is given (send it with [`Api::send`]).
    pub fn oauth_token(
        &self,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> reqwest::RequestBuilder {
        let req = self
            .http
            .post(format!("{}/oauth/token", self.base))
            .form(form);
        match basic {
            Some((id, secret)) => req.basic_auth(id, Some(secret)),
            None => req,
        }
    }

    /// POSTs a multipart form with an `audio` part.
    pub async fn upload(
        &self,
        key: &str,
        path: &str,
        fields: &[(&str, &str)],
        audio: Vec<u8>,
        mime: &str,
    ) -> (StatusCode, Value) {
        let mut form = Form::new();
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        form = form.part(
            "audio",
            Part::bytes(audio)
                .file_name("a.wav")
                .mime_str(mime)
                .unwrap(),
        );
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("x-api-key", key)
                .multipart(form),
        )
        .await
    }
}

/// A processor and an API server running in this process.
pub struct Deployment {
    /// Client of the API.
    pub api: Api,
    /// Client of the processor's operations endpoints (`listen`).
    pub ops: Api,
    /// The deployment's store, to check what an HTTP call left behind.
    pub store: Arc<dyn timbre::ports::Store>,
    /// Key of tenant `acme`.
    pub acme: String,
    /// A second key of tenant `acme`.
    pub acme_burst: String,
    /// Key of tenant `hooli`, for key and user administration: its own
    /// tenant, so the voices it greylists never meet the other flows'
    /// verifications (a watchlist is tenant-wide).
    pub hooli_admin: String,
    /// Key of tenant `globex`.
    pub globex: String,
    /// Key of tenant `initech`.
    pub initech: String,
    /// Key of tenant `wayne`, for the standalone dialect: it greylists
    /// voices, so it has a tenant of its own.
    pub wayne: String,
    /// The config it runs with.
    pub config: Config,
    /// Stops it.
    pub shutdown: CancellationToken,
    /// Finishes when it stopped.
    pub task: tokio::task::JoinHandle<()>,
}

/// A test deployment's config: unique topics and group, ephemeral ports,
/// then `settings` (`TIMBRE__…` pairs) on top.
pub fn config(bus: &str, store: &str, settings: Vec<(&str, String)>) -> Config {
    let base = vec![
        ("TIMBRE__BUS", bus.to_string()),
        ("TIMBRE__STORE", store.to_string()),
        ("TIMBRE__TOPIC_PREFIX", format!("{}.", unique("api"))),
        ("TIMBRE__GROUP", unique("processor")),
        ("TIMBRE__WORKERS", "1".into()),
        ("TIMBRE__LISTEN", "127.0.0.1:0".into()),
        ("TIMBRE__API__KEY_PEPPER", "test-pepper".into()),
        ("TIMBRE__API__TOKEN_SIGNING_KEY", "test-signing-key".into()),
        // Every documented route answers (`operations` checks the router).
        ("TIMBRE__API__CONSOLE", "true".into()),
        // One debug-build scoring worker serves several concurrent flows
        // on a shared 2-core machine: answers wait longer than in
        // production (10 s) before a 202 sends the test polling.
        ("TIMBRE__API__WAIT_TIMEOUT_MS", "30000".into()),
        ("TIMBRE__API__REQUEST_TIMEOUT_MS", "45000".into()),
        // The tests submit the same fixture recordings again and again for
        // one user, which is exactly what replay detection rejects; its
        // tests (pipeline_e2e) turn it on.
        ("TIMBRE__POLICY__REPLAY_MEMORY_DAYS", "0".into()),
        // The synthetic-speech network is several times the embedding's
        // cost, in a test build more so; its tests (synthetic_speech,
        // pipeline_e2e) turn it on.
        ("TIMBRE__SYNTHETIC__ENABLED", "false".into()),
        // Every test client is 127.0.0.1; `address_limit` tests the limit.
        (
            "TIMBRE__API__ADDRESS_RATE_LIMIT_PER_MINUTE",
            "1000000".into(),
        ),
    ];
    let env = base
        .into_iter()
        .chain(settings)
        .map(|(k, v)| (k.to_string(), v));
    Config::load(None, env).unwrap()
}

/// The OAuth2 client id and secret of an API key (`tmb_<id>_<secret>`).
pub fn client_credentials(key: &str) -> (String, String) {
    let (id, secret) = key
        .strip_prefix("tmb_")
        .and_then(|rest| rest.split_once('_'))
        .expect("an API key");
    (id.to_string(), secret.to_string())
}

/// Mints an API key of `tenant` straight into the store.
pub async fn mint(engine: &Engine, config: &Config, tenant: &str) -> String {
    // No scope set: like keys made before scopes, it may do everything.
    let minted = KeyHasher::new(config.api.key_pepper.expose().as_bytes()).mint(
        tenant,
        "test",
        now_ms(),
        0,
        None,
    );
    engine.access.put_api_key(&minted.record).await.unwrap();
    minted.plaintext
}

impl Deployment {
    /// Stops processor and API and waits (at most 30 s) until they have.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("deployment stops within 30 s")
            .expect("deployment task");
    }
}

/// Starts processor + API in this process on `bus`/`store`.
pub async fn deploy(bus: &str, store: &str, settings: Vec<(&str, String)>) -> Deployment {
    let config = config(bus, store, settings);
    let engine = Arc::new(Engine::connect(config.clone()).await.unwrap());
    assert!(engine.apply_topics(Some(1)).await.unwrap().is_empty());
    engine.store.migrate().await.unwrap();
    let store = engine.store.clone();
    let acme = mint(&engine, &config, "acme").await;
    let hooli_admin = mint(&engine, &config, "hooli").await;
    let acme_burst = mint(&engine, &config, "acme").await;
    let globex = mint(&engine, &config, "globex").await;
    let initech = mint(&engine, &config, "initech").await;
    let wayne = mint(&engine, &config, "wayne").await;
    let (listener, api) = ephemeral().await;
    let (ops_listener, ops) = ephemeral().await;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        let (processor, api) = tokio::join!(
            engine.run_on(ops_listener, token.clone()),
            engine.serve_api_on(listener, token.clone())
        );
        processor.unwrap();
        api.unwrap();
    });
    Deployment {
        api,
        ops,
        store,
        acme,
        acme_burst,
        hooli_admin,
        globex,
        initech,
        wayne,
        config,
        shutdown,
        task,
    }
}

/// A second adapter replica (`timbre serve`: no processor) on the same bus
/// and store; returns clients of its API and of its operations endpoints.
pub async fn replica(config: &Config, shutdown: CancellationToken) -> (Api, Api) {
    let engine = Engine::connect(config.clone()).await.unwrap();
    let (listener, api) = ephemeral().await;
    let (ops_listener, ops) = ephemeral().await;
    tokio::spawn(async move {
        engine
            .serve_adapter_on(listener, ops_listener, shutdown)
            .await
            .unwrap()
    });
    (api, ops)
}

/// A listener on an ephemeral local port and a client of it.
async fn ephemeral() -> (tokio::net::TcpListener, Api) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = Api::new(listener.local_addr().unwrap());
    (listener, client)
}
