//! Engine commands: run, up (all-in-one), migrate, topics.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use timbre::config::Config;
use timbre::engine::Engine;
use tokio_util::sync::CancellationToken;

use super::demo;

/// Options shared by engine commands.
#[derive(clap::Args, Clone)]
pub struct ConfigArgs {
    /// TOML config file (defaults, then this file, then TIMBRE__* variables).
    #[arg(long, short, env = "TIMBRE_CONFIG")]
    config: Option<PathBuf>,
}

impl ConfigArgs {
    pub(super) fn load(&self) -> Result<Config> {
        Ok(Config::load(self.config.as_deref(), std::env::vars())?)
    }
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub(super) fn shutdown_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                s.recv().await;
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate => {}
        }
        tracing::info!("shutdown requested");
        token.cancel();
    });
}

/// `timbre run`: the processor on the configured bus and store.
#[derive(clap::Args)]
pub struct RunCmd {
    #[command(flatten)]
    config: ConfigArgs,
}

impl RunCmd {
    pub fn run(self) -> Result<()> {
        let config = self.config.load()?;
        runtime()?.block_on(async move {
            let embedded = config.bus.starts_with("embedded");
            let engine = Engine::connect(config).await?;
            if embedded {
                // The embedded bus lives in this process: nothing else creates its topics.
                engine.apply_topics(Some(1)).await?;
                engine.store.migrate().await?;
            }
            let token = CancellationToken::new();
            shutdown_on_signal(token.clone());
            engine.run(token).await?;
            Ok(())
        })
    }
}

/// `timbre up`: everything in one process on the embedded bus and a local
/// file store, with the real model.
#[derive(clap::Args)]
pub struct UpCmd {
    #[command(flatten)]
    config: ConfigArgs,
    /// Enroll and verify bundled speakers through the pipeline, print the
    /// decisions, and exit.
    #[arg(long)]
    demo: bool,
    /// Folder of the demo recordings.
    #[arg(long, default_value = "tests/fixtures/librispeech-r")]
    demo_audio: PathBuf,
}

impl UpCmd {
    pub fn run(self) -> Result<()> {
        let mut config = self.config.load()?;
        if !config.bus.starts_with("embedded") {
            bail!("`timbre up` runs on the embedded bus; use `timbre run` for another bus");
        }
        if self.demo {
            // The demo must not collide with a running engine's metrics port.
            config.listen.set_port(0);
            let demo_policy = timbre::domain::Policy {
                enrollment_target_millis: demo::ENROLLMENT_TARGET_MILLIS,
                ..config.policy.clone()
            };
            config
                .tenants
                .entry(demo::TENANT.into())
                .or_insert(demo_policy);
        }
        runtime()?.block_on(async move {
            let engine = Engine::connect(config).await?;
            engine.apply_topics(Some(1)).await?;
            engine.store.migrate().await?;
            let token = CancellationToken::new();
            shutdown_on_signal(token.clone());
            if !self.demo {
                engine.run_with_api(token).await?;
                return Ok(());
            }
            let client = timbre::client::JobClient::new(
                engine.bus.clone(),
                engine.topics.clone(),
                Some(engine.store.clone()),
            );
            let tail = client.start(token.clone()).await?;
            let runner_token = token.clone();
            let runner = tokio::spawn(async move { engine.run(runner_token).await });
            let outcome = tokio::time::timeout(
                Duration::from_secs(600),
                demo::run(&client, &self.demo_audio),
            )
            .await
            .context("demo timed out")?;
            token.cancel();
            runner.await??;
            tail.await?;
            outcome
        })
    }
}

/// `timbre serve`: the HTTP adapter on the configured bus and store.
#[derive(clap::Args)]
pub struct ServeCmd {
    #[command(flatten)]
    config: ConfigArgs,
}

impl ServeCmd {
    pub fn run(self) -> Result<()> {
        let config = self.config.load()?;
        if config.bus.starts_with("embedded") {
            bail!(
                "the embedded bus lives in one process: use `timbre up`, which serves the api too"
            );
        }
        runtime()?.block_on(async move {
            let engine = Engine::connect(config).await?;
            let token = CancellationToken::new();
            shutdown_on_signal(token.clone());
            engine.serve_adapter(token).await?;
            Ok(())
        })
    }
}

/// `timbre keys …`: API keys.
#[derive(clap::Subcommand)]
pub enum KeysCmd {
    /// Mints an API key for a tenant and prints it once (only its hash is stored).
    Create(KeysCreate),
    /// Lists a tenant's keys (never a secret).
    List(KeysOfTenant),
    /// Refuses a key until it is enabled again.
    Disable(KeyRef),
    /// Lets a disabled key in again.
    Enable(KeyRef),
    /// Deletes a key for good.
    Revoke(KeyRef),
}

/// `timbre keys list`.
#[derive(clap::Args)]
pub struct KeysOfTenant {
    #[command(flatten)]
    config: ConfigArgs,
    /// Tenant whose keys to list.
    #[arg(long)]
    tenant: String,
}

/// One key of a tenant.
#[derive(clap::Args)]
pub struct KeyRef {
    #[command(flatten)]
    config: ConfigArgs,
    /// Tenant of the key.
    #[arg(long)]
    tenant: String,
    /// Public id of the key (the hex after `tmb_`).
    key_id: String,
}

/// `timbre keys create`.
#[derive(clap::Args)]
pub struct KeysCreate {
    #[command(flatten)]
    config: ConfigArgs,
    /// Tenant the key acts for.
    #[arg(long)]
    tenant: String,
    /// Label for the operator.
    #[arg(long, default_value = "default")]
    name: String,
    /// Days until the key expires (0 = never).
    #[arg(long, default_value_t = 0)]
    expires_in_days: u32,
    /// Comma-separated scopes (consent:read, consent:write, enroll, verify,
    /// profiles:read, profiles:admin, keys:admin, usage:read); all when unset.
    #[arg(long, value_delimiter = ',')]
    scopes: Vec<String>,
}

impl KeysCmd {
    pub fn run(self) -> Result<()> {
        match self {
            KeysCmd::Create(cmd) => cmd.run(),
            KeysCmd::List(cmd) => {
                let config = cmd.config.load()?;
                runtime()?.block_on(async move {
                    let stores = timbre::backends::connect_store(&config.store).await?;
                    for k in stores.access.api_keys(&cmd.tenant).await? {
                        println!("{}", timbre::api::key_view(&k, None));
                    }
                    Ok(())
                })
            }
            KeysCmd::Disable(key) => key.set_enabled(false),
            KeysCmd::Enable(key) => key.set_enabled(true),
            KeysCmd::Revoke(key) => {
                let config = key.config.load()?;
                runtime()?.block_on(async move {
                    let stores = timbre::backends::connect_store(&config.store).await?;
                    if !stores
                        .access
                        .delete_api_key(&key.tenant, &key.key_id)
                        .await?
                    {
                        bail!("no key {} in tenant {}", key.key_id, key.tenant);
                    }
                    eprintln!("revoked {}", key.key_id);
                    Ok(())
                })
            }
        }
    }
}

impl KeyRef {
    fn set_enabled(self, enabled: bool) -> Result<()> {
        let config = self.config.load()?;
        runtime()?.block_on(async move {
            let stores = timbre::backends::connect_store(&config.store).await?;
            let access = &stores.access;
            if !access
                .set_api_key_enabled(&self.tenant, &self.key_id, enabled)
                .await?
            {
                bail!("no key {} in tenant {}", self.key_id, self.tenant);
            }
            eprintln!("{} enabled={enabled}", self.key_id);
            Ok(())
        })
    }
}

impl KeysCreate {
    fn run(self) -> Result<()> {
        let cmd = self;
        let scopes = match cmd.scopes.is_empty() {
            true => None,
            false => Some(
                cmd.scopes
                    .iter()
                    .map(|n| {
                        timbre::domain::Scope::parse(n.trim())
                            .with_context(|| format!("unknown scope {n:?}"))
                    })
                    .collect::<Result<std::collections::BTreeSet<_>>>()?,
            ),
        };
        let config = cmd.config.load()?;
        if cmd.tenant.is_empty()
            || cmd.tenant.contains('/')
            || cmd.tenant.chars().any(char::is_control)
        {
            bail!("tenant must be non-empty, without '/' or control characters");
        }
        runtime()?.block_on(async move {
            let stores = timbre::backends::connect_store(&config.store).await?;
            if config.store.starts_with("file://") {
                // The embedded store has no separate migrate step in the quick start.
                stores.state.migrate().await?;
            }
            let now = timbre::domain::now_ms();
            let expires = match cmd.expires_in_days {
                0 => 0,
                d => now + i64::from(d) * 86_400_000,
            };
            let hasher =
                timbre::api::keys::KeyHasher::new(config.api.key_pepper.expose().as_bytes());
            let minted = hasher.mint(&cmd.tenant, &cmd.name, now, expires, scopes);
            stores.access.put_api_key(&minted.record).await?;
            eprintln!(
                "api key for tenant {} (shown once; only its hash is stored):",
                cmd.tenant
            );
            println!("{}", minted.plaintext);
            Ok(())
        })
    }
}

/// `timbre migrate`: creates or upgrades the store schema.
#[derive(clap::Args)]
pub struct MigrateCmd {
    #[command(flatten)]
    config: ConfigArgs,
    /// Store URL (overrides the config).
    #[arg(long)]
    store: Option<String>,
}

impl MigrateCmd {
    pub fn run(self) -> Result<()> {
        let config = self.config.load()?;
        let url = self.store.unwrap_or(config.store);
        runtime()?.block_on(async move {
            let store = timbre::backends::connect_store(&url).await?.state;
            let version = store.migrate().await?;
            println!("store schema at version {version}");
            Ok(())
        })
    }
}

/// `timbre topics …`.
#[derive(clap::Subcommand)]
pub enum TopicsCmd {
    /// Creates missing topics of the catalogue and reports drift.
    Apply(TopicsApply),
}

impl TopicsCmd {
    pub fn run(self) -> Result<()> {
        match self {
            TopicsCmd::Apply(cmd) => cmd.run(),
        }
    }
}

/// `timbre topics apply`.
#[derive(clap::Args)]
pub struct TopicsApply {
    #[command(flatten)]
    config: ConfigArgs,
    /// Bus URL (overrides the config).
    #[arg(long)]
    bus: Option<String>,
    /// Cap on the replication factor (e.g. 1 for a single broker).
    #[arg(long)]
    replication: Option<i16>,
    /// Topic name prefix (overrides the config).
    #[arg(long)]
    prefix: Option<String>,
}

impl TopicsApply {
    pub fn run(self) -> Result<()> {
        let mut config = self.config.load()?;
        if let Some(bus) = self.bus {
            config.bus = bus;
        }
        if let Some(prefix) = self.prefix {
            config.topic_prefix = prefix;
        }
        let bus = timbre::backends::connect_bus(&config.bus)?;
        runtime()?.block_on(async move {
            let specs = timbre::topics::catalogue(&config.topic_prefix, self.replication);
            let drift = bus.ensure_topics(&specs).await?;
            for spec in &specs {
                println!(
                    "{}\t{} partitions\treplication {}",
                    spec.name, spec.partitions, spec.replication
                );
            }
            for line in &drift {
                println!("drift: {line}");
            }
            if drift.is_empty() {
                Ok(())
            } else {
                bail!("{} topic(s) differ from the catalogue", drift.len())
            }
        })
    }
}
