//! The CQL store (ScyllaDB in production, Apache Cassandra in tests) on the
//! `scylla` driver. Data statements are prepared once at connect; a job's
//! state changes and its decision go out as one logged batch, so they land
//! together (retained audio, too large for a batch, is written just before).

use async_trait::async_trait;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlValue};

use crate::domain::{
    ApiKey, ChallengeSession, Consent, JobCommit, Profile, ProfileStatus, RescoreResult,
    RescoreRun, RunState, TenantModel, UsageCount, Voiceprint, WatchlistEntry, now_ms,
};
use crate::ports::{AccessStore, Store, StoreError};

/// Decisions are an audit trail, kept for 90 days.
const DECISION_TTL_SECONDS: u32 = 90 * 24 * 3600;

/// Versioned migrations; each statement is idempotent (`IF NOT EXISTS`).
const MIGRATIONS: &[(u32, &str, &[&str])] = &[
    (
        1,
        "profiles, voiceprints, consent, enrollment audio, decisions",
        &[
            "CREATE TABLE IF NOT EXISTS {ks}.profiles (tenant text, user_id text, status text, samples int, \
         net_speech_ms bigint, learning_progress float, sessions int, failures int, cooldown_until timestamp, \
         created_at timestamp, updated_at timestamp, PRIMARY KEY ((tenant, user_id)))",
            "CREATE TABLE IF NOT EXISTS {ks}.voiceprints (tenant text, user_id text, model_id text, \
         embedding blob, weight float, updated_at timestamp, PRIMARY KEY ((tenant, user_id), model_id))",
            "CREATE TABLE IF NOT EXISTS {ks}.consent (tenant text, user_id text, purpose text, granted boolean, \
         retain_audio boolean, updated_at timestamp, PRIMARY KEY ((tenant, user_id), purpose))",
            "CREATE TABLE IF NOT EXISTS {ks}.enrollment_audio (tenant text, user_id text, request_id text, \
         audio blob, PRIMARY KEY ((tenant, user_id), request_id))",
            "CREATE TABLE IF NOT EXISTS {ks}.decisions (tenant text, request_id text, payload blob, \
         PRIMARY KEY ((tenant, request_id))) WITH default_time_to_live = {decision_ttl}",
        ],
    ),
    (
        2,
        "api keys, challenge sessions, spent tokens, usage counters",
        &[
            "CREATE TABLE IF NOT EXISTS {ks}.api_keys (key_id text PRIMARY KEY, tenant text, name text, \
             secret_hash text, created_at timestamp, expires_at timestamp)",
            "CREATE TABLE IF NOT EXISTS {ks}.challenge_sessions (tenant text, session_id text, user_id text, \
             challenge text, created_at timestamp, expires_at timestamp, PRIMARY KEY ((tenant, session_id)))",
            "CREATE TABLE IF NOT EXISTS {ks}.spent_tokens (jti text PRIMARY KEY, spent_at timestamp)",
            "CREATE TABLE IF NOT EXISTS {ks}.usage (tenant text, key_id text, day text, metric text, \
             n counter, PRIMARY KEY ((tenant, key_id), day, metric))",
        ],
    ),
    (
        3,
        "watchlist",
        &[
            "CREATE TABLE IF NOT EXISTS {ks}.watchlist (tenant text, user_id text, model_id text, \
             embedding blob, reason text, added_at timestamp, PRIMARY KEY ((tenant), user_id, model_id))",
        ],
    ),
    (
        4,
        "tenant models, users by tenant, re-scoring runs and results",
        &[
            "CREATE TABLE IF NOT EXISTS {ks}.tenant_models (tenant text PRIMARY KEY, active_model text, \
             previous_model text, updated_at timestamp)",
            "CREATE TABLE IF NOT EXISTS {ks}.users_by_tenant (tenant text, user_id text, status text, \
             PRIMARY KEY ((tenant), user_id))",
            "CREATE TABLE IF NOT EXISTS {ks}.rescore_runs (tenant text, target_model text, source_model text, \
             state text, started_at timestamp, updated_at timestamp, PRIMARY KEY ((tenant), target_model))",
            "CREATE TABLE IF NOT EXISTS {ks}.rescore_results (tenant text, target_model text, user_id text, \
             ok boolean, detail text, updated_at timestamp, PRIMARY KEY ((tenant, target_model), user_id))",
        ],
    ),
];

/// Where and how to connect, parsed from
/// `cql://[user[:pass]@]host:port[,host:port]/keyspace[?replication_factor=N]`.
#[derive(Clone, PartialEq)]
pub struct CqlConfig {
    /// Contact points.
    pub nodes: Vec<String>,
    /// Keyspace (created by `migrate` when missing).
    pub keyspace: String,
    /// Replication factor of a keyspace that `migrate` creates.
    pub replication_factor: u32,
    /// Optional credentials.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for CqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqlConfig")
            .field("nodes", &self.nodes)
            .field("keyspace", &self.keyspace)
            .field("replication_factor", &self.replication_factor)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl CqlConfig {
    /// Parses a `cql://` URL.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let bad = |m: &str| {
            StoreError::Config(format!("{m} in store url (want cql://host:port/keyspace)"))
        };
        let rest = url
            .strip_prefix("cql://")
            .ok_or_else(|| bad("missing cql:// scheme"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, keyspace) = rest
            .split_once('/')
            .ok_or_else(|| bad("missing keyspace"))?;
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((cred, hosts)) => {
                // Without `:password` the password comes from TIMBRE_CQL_PASSWORD
                // at connect, which keeps it out of configs.
                let (u, p) = cred.split_once(':').unwrap_or((cred, ""));
                (Some((u.to_string(), p.to_string())), hosts)
            }
            None => (None, authority),
        };
        let valid_ks = !keyspace.is_empty()
            && keyspace.len() <= 48
            && keyspace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_ks {
            return Err(bad("invalid keyspace name"));
        }
        let mut replication_factor = 1;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("replication_factor", v)) => {
                    replication_factor = v.parse().map_err(|_| bad("bad replication_factor"))?
                }
                _ => return Err(bad(&format!("unknown option `{pair}`"))),
            }
        }
        let nodes: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        if nodes.is_empty() {
            return Err(bad("no hosts"));
        }
        Ok(Self {
            nodes,
            keyspace: keyspace.to_string(),
            replication_factor,
            credentials,
        })
    }
}

type ProfileRow = (
    String,
    i32,
    i64,
    f32,
    i32,
    i32,
    CqlTimestamp,
    CqlTimestamp,
    CqlTimestamp,
);

struct Statements {
    profile: PreparedStatement,
    voiceprint: PreparedStatement,
    consent: PreparedStatement,
    audio: PreparedStatement,
    decision: PreparedStatement,
    put_profile: PreparedStatement,
    put_voiceprint: PreparedStatement,
    put_consent: PreparedStatement,
    put_audio: PreparedStatement,
    put_decision: PreparedStatement,
    erase_voiceprints: PreparedStatement,
    erase_audio: PreparedStatement,
    access: AccessStatements,
    watchlist: PreparedStatement,
    put_watchlist: PreparedStatement,
    remove_watchlist: PreparedStatement,
    delete_profile: PreparedStatement,
    delete_consent: PreparedStatement,
    models: ModelStatements,
}

struct ModelStatements {
    tenant_model: PreparedStatement,
    put_tenant_model: PreparedStatement,
    users: PreparedStatement,
    users_after: PreparedStatement,
    put_user: PreparedStatement,
    delete_user: PreparedStatement,
    run: PreparedStatement,
    put_run: PreparedStatement,
    results: PreparedStatement,
    put_result: PreparedStatement,
    delete_voiceprint: PreparedStatement,
}

struct AccessStatements {
    put_key: PreparedStatement,
    key: PreparedStatement,
    put_session: PreparedStatement,
    session: PreparedStatement,
    delete_session: PreparedStatement,
    spend_token: PreparedStatement,
    add_usage: PreparedStatement,
    usage: PreparedStatement,
}

/// A [`Store`] on a CQL cluster.
pub struct CqlStore {
    session: Session,
    config: CqlConfig,
    statements: tokio::sync::OnceCell<Statements>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn ts(ms: i64) -> CqlValue {
    CqlValue::Timestamp(CqlTimestamp(ms))
}

fn text(s: &str) -> CqlValue {
    CqlValue::Text(s.to_string())
}

fn embedding_to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn blob_to_embedding(b: &[u8]) -> Result<Vec<f32>, StoreError> {
    if !b.len().is_multiple_of(4) {
        return Err(corrupt("embedding blob length is not a multiple of 4"));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

impl CqlStore {
    /// The first row of a prepared query, if any.
    async fn one<R>(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(unavailable)?
            .into_rows_result()
            .map_err(corrupt)?
            .maybe_first_row::<R>()
            .map_err(corrupt)
    }

    /// Every row of a prepared query (one page: callers bound the size).
    async fn all<R>(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(unavailable)?
            .into_rows_result()
            .map_err(corrupt)?
            .rows::<R>()
            .map_err(corrupt)?
            .collect::<Result<_, _>>()
            .map_err(corrupt)
    }

    /// Runs a prepared write.
    async fn exec(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    /// Fills `users_by_tenant` from the profiles written before it existed
    /// (one full scan, paged; rows are idempotent).
    async fn index_existing_users(&self) -> Result<(), StoreError> {
        let ks = &self.config.keyspace;
        let insert = self
            .session
            .prepare(format!(
                "INSERT INTO {ks}.users_by_tenant (tenant, user_id, status) VALUES (?, ?, ?)"
            ))
            .await
            .map_err(unavailable)?;
        let mut rows = self
            .session
            .query_iter(
                format!("SELECT tenant, user_id, status FROM {ks}.profiles"),
                &[],
            )
            .await
            .map_err(unavailable)?
            .rows_stream::<(String, String, String)>()
            .map_err(corrupt)?;
        let mut indexed = 0u64;
        while let Some(row) = futures::TryStreamExt::try_next(&mut rows)
            .await
            .map_err(unavailable)?
        {
            self.session
                .execute_unpaged(&insert, row)
                .await
                .map_err(unavailable)?;
            indexed += 1;
        }
        tracing::info!(keyspace = %ks, users = indexed, "indexed existing users by tenant");
        Ok(())
    }

    /// Connects to the cluster (the keyspace may not exist yet: `migrate` creates it).
    pub async fn connect(config: CqlConfig) -> Result<Self, StoreError> {
        // Client-side, monotonic write timestamps: a quick re-enroll after an
        // erase is ordered by when this process wrote it, not by which
        // coordinator's clock stamped it.
        let mut builder = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .timestamp_generator(std::sync::Arc::new(
                scylla::policies::timestamp_generator::MonotonicTimestampGenerator::new(),
            ));
        if let Some((user, pass)) = &config.credentials {
            let pass = match pass.as_str() {
                "" => std::env::var("TIMBRE_CQL_PASSWORD").unwrap_or_default(),
                p => p.to_string(),
            };
            builder = builder.user(user, pass);
        }
        let session = builder.build().await.map_err(unavailable)?;
        Ok(Self {
            session,
            config,
            statements: tokio::sync::OnceCell::new(),
        })
    }

    async fn statements(&self) -> Result<&Statements, StoreError> {
        self.statements
            .get_or_try_init(|| async {
                let ks = &self.config.keyspace;
                let p = |q: String| async move { self.session.prepare(q).await.map_err(unavailable) };
                Ok(Statements {
                    profile: p(format!(
                        "SELECT status, samples, net_speech_ms, learning_progress, sessions, failures, cooldown_until, \
                         created_at, updated_at \
                         FROM {ks}.profiles WHERE tenant = ? AND user_id = ?"
                    ))
                    .await?,
                    voiceprint: p(format!(
                        "SELECT embedding, weight, updated_at FROM {ks}.voiceprints \
                         WHERE tenant = ? AND user_id = ? AND model_id = ?"
                    ))
                    .await?,
                    consent: p(format!(
                        "SELECT granted, retain_audio, updated_at FROM {ks}.consent \
                         WHERE tenant = ? AND user_id = ? AND purpose = ?"
                    ))
                    .await?,
                    audio: p(format!(
                        "SELECT request_id, audio FROM {ks}.enrollment_audio WHERE tenant = ? AND user_id = ?"
                    ))
                    .await?,
                    decision: p(format!("SELECT payload FROM {ks}.decisions WHERE tenant = ? AND request_id = ?"))
                        .await?,
                    put_profile: p(format!(
                        "INSERT INTO {ks}.profiles (tenant, user_id, status, samples, net_speech_ms, \
                         learning_progress, sessions, failures, cooldown_until, created_at, updated_at) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    ))
                    .await?,
                    put_voiceprint: p(format!(
                        "INSERT INTO {ks}.voiceprints (tenant, user_id, model_id, embedding, weight, updated_at) \
                         VALUES (?, ?, ?, ?, ?, ?)"
                    ))
                    .await?,
                    put_consent: p(format!(
                        "INSERT INTO {ks}.consent (tenant, user_id, purpose, granted, retain_audio, updated_at) \
                         VALUES (?, ?, ?, ?, ?, ?)"
                    ))
                    .await?,
                    put_audio: p(format!(
                        "INSERT INTO {ks}.enrollment_audio (tenant, user_id, request_id, audio) VALUES (?, ?, ?, ?)"
                    ))
                    .await?,
                    put_decision: p(format!(
                        "INSERT INTO {ks}.decisions (tenant, request_id, payload) VALUES (?, ?, ?)"
                    ))
                    .await?,
                    erase_voiceprints: p(format!("DELETE FROM {ks}.voiceprints WHERE tenant = ? AND user_id = ?"))
                        .await?,
                    erase_audio: p(format!("DELETE FROM {ks}.enrollment_audio WHERE tenant = ? AND user_id = ?"))
                        .await?,
                    watchlist: p(format!(
                        "SELECT user_id, model_id, embedding, reason, added_at FROM {ks}.watchlist WHERE tenant = ?"
                    ))
                    .await?,
                    put_watchlist: p(format!(
                        "INSERT INTO {ks}.watchlist (tenant, user_id, model_id, embedding, reason, added_at) \
                         VALUES (?, ?, ?, ?, ?, ?)"
                    ))
                    .await?,
                    remove_watchlist: p(format!("DELETE FROM {ks}.watchlist WHERE tenant = ? AND user_id = ?"))
                        .await?,
                    delete_profile: p(format!("DELETE FROM {ks}.profiles WHERE tenant = ? AND user_id = ?"))
                        .await?,
                    delete_consent: p(format!("DELETE FROM {ks}.consent WHERE tenant = ? AND user_id = ?"))
                        .await?,
                    models: ModelStatements {
                        tenant_model: p(format!(
                            "SELECT active_model, previous_model, updated_at FROM {ks}.tenant_models WHERE tenant = ?"
                        ))
                        .await?,
                        put_tenant_model: p(format!(
                            "INSERT INTO {ks}.tenant_models (tenant, active_model, previous_model, updated_at) \
                             VALUES (?, ?, ?, ?)"
                        ))
                        .await?,
                        users: p(format!(
                            "SELECT user_id, status FROM {ks}.users_by_tenant WHERE tenant = ? LIMIT ?"
                        ))
                        .await?,
                        users_after: p(format!(
                            "SELECT user_id, status FROM {ks}.users_by_tenant WHERE tenant = ? AND user_id > ? LIMIT ?"
                        ))
                        .await?,
                        put_user: p(format!(
                            "INSERT INTO {ks}.users_by_tenant (tenant, user_id, status) VALUES (?, ?, ?)"
                        ))
                        .await?,
                        delete_user: p(format!("DELETE FROM {ks}.users_by_tenant WHERE tenant = ? AND user_id = ?"))
                            .await?,
                        run: p(format!(
                            "SELECT source_model, state, started_at, updated_at FROM {ks}.rescore_runs \
                             WHERE tenant = ? AND target_model = ?"
                        ))
                        .await?,
                        put_run: p(format!(
                            "INSERT INTO {ks}.rescore_runs (tenant, target_model, source_model, state, started_at, \
                             updated_at) VALUES (?, ?, ?, ?, ?, ?)"
                        ))
                        .await?,
                        results: p(format!(
                            "SELECT user_id, ok, detail, updated_at FROM {ks}.rescore_results \
                             WHERE tenant = ? AND target_model = ?"
                        ))
                        .await?,
                        put_result: p(format!(
                            "INSERT INTO {ks}.rescore_results (tenant, target_model, user_id, ok, detail, updated_at) \
                             VALUES (?, ?, ?, ?, ?, ?)"
                        ))
                        .await?,
                        delete_voiceprint: p(format!(
                            "DELETE FROM {ks}.voiceprints WHERE tenant = ? AND user_id = ? AND model_id = ?"
                        ))
                        .await?,
                    },
                    access: AccessStatements {
                        put_key: p(format!(
                            "INSERT INTO {ks}.api_keys (key_id, tenant, name, secret_hash, created_at, expires_at) \
                             VALUES (?, ?, ?, ?, ?, ?)"
                        ))
                        .await?,
                        key: p(format!(
                            "SELECT tenant, name, secret_hash, created_at, expires_at FROM {ks}.api_keys WHERE key_id = ?"
                        ))
                        .await?,
                        // Conditional like the delete that takes it: both get
                        // Paxos timestamps, so a client clock ahead of the
                        // cluster cannot make the insert outlive the delete.
                        put_session: p(format!(
                            "INSERT INTO {ks}.challenge_sessions (tenant, session_id, user_id, challenge, created_at, \
                             expires_at) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?"
                        ))
                        .await?,
                        session: p(format!(
                            "SELECT user_id, challenge, created_at, expires_at FROM {ks}.challenge_sessions \
                             WHERE tenant = ? AND session_id = ?"
                        ))
                        .await?,
                        delete_session: p(format!(
                            "DELETE FROM {ks}.challenge_sessions WHERE tenant = ? AND session_id = ? IF EXISTS"
                        ))
                        .await?,
                        spend_token: p(format!(
                            "INSERT INTO {ks}.spent_tokens (jti, spent_at) VALUES (?, ?) IF NOT EXISTS USING TTL ?"
                        ))
                        .await?,
                        add_usage: p(format!(
                            "UPDATE {ks}.usage SET n = n + ? WHERE tenant = ? AND key_id = ? AND day = ? AND metric = ?"
                        ))
                        .await?,
                        usage: p(format!("SELECT day, metric, n FROM {ks}.usage WHERE tenant = ? AND key_id = ?"))
                            .await?,
                    },
                })
            })
            .await
    }
}

#[async_trait]
impl Store for CqlStore {
    async fn migrate(&self) -> Result<u32, StoreError> {
        let ks = &self.config.keyspace;
        let rf = self.config.replication_factor;
        let ddl = |q: String| async move {
            self.session
                .query_unpaged(q, &[])
                .await
                .map_err(unavailable)
        };
        ddl(format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = \
             {{'class': 'SimpleStrategy', 'replication_factor': {rf}}}"
        ))
        .await?;
        ddl(format!(
            "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (version int PRIMARY KEY, \
             description text, applied_at timestamp)"
        ))
        .await?;
        let applied: Vec<i32> = self
            .session
            .query_unpaged(format!("SELECT version FROM {ks}.schema_migrations"), &[])
            .await
            .map_err(unavailable)?
            .into_rows_result()
            .map_err(corrupt)?
            .rows::<(i32,)>()
            .map_err(corrupt)?
            .map(|r| r.map(|(v,)| v))
            .collect::<Result<_, _>>()
            .map_err(corrupt)?;
        let record = self
            .session
            .prepare(format!(
                "INSERT INTO {ks}.schema_migrations (version, description, applied_at) VALUES (?, ?, ?)"
            ))
            .await
            .map_err(unavailable)?;
        let mut version = 0;
        for (v, description, statements) in MIGRATIONS {
            version = *v;
            if applied.contains(&(*v as i32)) {
                continue;
            }
            for s in *statements {
                ddl(s
                    .replace("{ks}", ks)
                    .replace("{decision_ttl}", &DECISION_TTL_SECONDS.to_string()))
                .await?;
            }
            if *v == 4 {
                self.index_existing_users().await?;
            }
            self.session
                .execute_unpaged(&record, (*v as i32, *description, CqlTimestamp(now_ms())))
                .await
                .map_err(unavailable)?;
            tracing::info!(keyspace = %ks, version = v, "applied migration");
        }
        Ok(version)
    }

    async fn profile(&self, tenant: &str, user_id: &str) -> Result<Option<Profile>, StoreError> {
        let s = self.statements().await?;
        let row = self
            .one::<ProfileRow>(&s.profile, (tenant, user_id))
            .await?;
        row.map(
            |(
                status,
                samples,
                speech,
                progress,
                sessions,
                failures,
                cooldown,
                created,
                updated,
            )| {
                Ok(Profile {
                    tenant: tenant.into(),
                    user_id: user_id.into(),
                    status: ProfileStatus::parse(&status)
                        .ok_or_else(|| corrupt(format!("status {status}")))?,
                    samples: samples.max(0) as u32,
                    net_speech_millis: speech.max(0) as u64,
                    learning_progress: progress,
                    sessions: sessions.max(0) as u32,
                    failures: failures.max(0) as u32,
                    cooldown_until: cooldown.0,
                    created_at: created.0,
                    updated_at: updated.0,
                })
            },
        )
        .transpose()
    }

    async fn voiceprint(
        &self,
        tenant: &str,
        user_id: &str,
        model_id: &str,
    ) -> Result<Option<Voiceprint>, StoreError> {
        let s = self.statements().await?;
        let row = self
            .one::<(Vec<u8>, f32, CqlTimestamp)>(&s.voiceprint, (tenant, user_id, model_id))
            .await?;
        row.map(|(blob, weight, updated)| {
            Ok(Voiceprint {
                tenant: tenant.into(),
                user_id: user_id.into(),
                model_id: model_id.into(),
                embedding: blob_to_embedding(&blob)?,
                weight,
                updated_at: updated.0,
            })
        })
        .transpose()
    }

    async fn consent(
        &self,
        tenant: &str,
        user_id: &str,
        purpose: &str,
    ) -> Result<Option<Consent>, StoreError> {
        let s = self.statements().await?;
        let row = self
            .one::<(bool, bool, CqlTimestamp)>(&s.consent, (tenant, user_id, purpose))
            .await?;
        Ok(row.map(|(granted, retain_audio, updated)| Consent {
            tenant: tenant.into(),
            user_id: user_id.into(),
            purpose: purpose.into(),
            granted,
            retain_audio,
            updated_at: updated.0,
        }))
    }

    async fn enrollment_audio(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let s = self.statements().await?;
        self.all(&s.audio, (tenant, user_id)).await
    }

    async fn watchlist(&self, tenant: &str) -> Result<Vec<WatchlistEntry>, StoreError> {
        let s = self.statements().await?;
        let rows: Vec<(String, String, Vec<u8>, String, CqlTimestamp)> =
            self.all(&s.watchlist, (tenant,)).await?;
        rows.into_iter()
            .map(|(user_id, model_id, blob, reason, added)| {
                Ok(WatchlistEntry {
                    tenant: tenant.to_string(),
                    user_id,
                    model_id,
                    embedding: blob_to_embedding(&blob)?,
                    reason,
                    added_at: added.0,
                })
            })
            .collect()
    }

    async fn decision(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let s = self.statements().await?;
        Ok(self
            .one::<(Vec<u8>,)>(&s.decision, (tenant, request_id))
            .await?
            .map(|(p,)| p))
    }

    async fn commit(&self, c: &JobCommit) -> Result<(), StoreError> {
        let s = self.statements().await?;
        // Audio is far over Cassandra's batch size limit (50 KiB by default),
        // so it is written first, on its own. The write is idempotent (keyed
        // by request id); if the batch then fails, the job is retried and
        // rewrites the same row.
        if let Some((user, wav)) = &c.enrollment_audio {
            self.session
                .execute_unpaged(&s.put_audio, (&c.tenant, user, &c.request_id, wav))
                .await
                .map_err(unavailable)?;
        }
        let mut batch = Batch::new(BatchType::Logged);
        let mut values: Vec<Vec<CqlValue>> = Vec::new();
        if let Some(user) = &c.erase_biometrics_of {
            for stmt in [&s.erase_voiceprints, &s.erase_audio] {
                batch.append_statement(stmt.clone());
                values.push(vec![text(&c.tenant), text(user)]);
            }
        }
        if let Some(r) = &c.rescore_result {
            batch.append_statement(s.models.put_result.clone());
            values.push(vec![
                text(&r.tenant),
                text(&r.target_model),
                text(&r.user_id),
                CqlValue::Boolean(r.ok),
                text(&r.detail),
                ts(r.updated_at),
            ]);
        }
        if let Some(user) = &c.delete_profile_of {
            for stmt in [
                &s.erase_voiceprints,
                &s.erase_audio,
                &s.delete_consent,
                &s.remove_watchlist,
                &s.delete_profile,
                &s.models.delete_user,
            ] {
                batch.append_statement(stmt.clone());
                values.push(vec![text(&c.tenant), text(user)]);
            }
        }
        if let Some(user) = &c.watchlist_remove_of {
            batch.append_statement(s.remove_watchlist.clone());
            values.push(vec![text(&c.tenant), text(user)]);
        }
        if let Some(w) = &c.watchlist_add {
            batch.append_statement(s.put_watchlist.clone());
            values.push(vec![
                text(&w.tenant),
                text(&w.user_id),
                text(&w.model_id),
                CqlValue::Blob(embedding_to_blob(&w.embedding)),
                text(&w.reason),
                ts(w.added_at),
            ]);
        }
        if let Some(p) = &c.profile {
            // The per-tenant index that re-scoring pages through.
            batch.append_statement(s.models.put_user.clone());
            values.push(vec![
                text(&p.tenant),
                text(&p.user_id),
                text(p.status.as_str()),
            ]);
            batch.append_statement(s.put_profile.clone());
            values.push(vec![
                text(&p.tenant),
                text(&p.user_id),
                text(p.status.as_str()),
                CqlValue::Int(p.samples as i32),
                CqlValue::BigInt(p.net_speech_millis as i64),
                CqlValue::Float(p.learning_progress),
                CqlValue::Int(p.sessions as i32),
                CqlValue::Int(p.failures as i32),
                ts(p.cooldown_until),
                ts(p.created_at),
                ts(p.updated_at),
            ]);
        }
        if let Some(v) = &c.voiceprint {
            batch.append_statement(s.put_voiceprint.clone());
            values.push(vec![
                text(&v.tenant),
                text(&v.user_id),
                text(&v.model_id),
                CqlValue::Blob(embedding_to_blob(&v.embedding)),
                CqlValue::Float(v.weight),
                ts(v.updated_at),
            ]);
        }
        if let Some(cs) = &c.consent {
            batch.append_statement(s.put_consent.clone());
            values.push(vec![
                text(&cs.tenant),
                text(&cs.user_id),
                text(&cs.purpose),
                CqlValue::Boolean(cs.granted),
                CqlValue::Boolean(cs.retain_audio),
                ts(cs.updated_at),
            ]);
        }
        batch.append_statement(s.put_decision.clone());
        values.push(vec![
            text(&c.tenant),
            text(&c.request_id),
            CqlValue::Blob(c.decision.clone()),
        ]);
        self.session
            .batch(&batch, values)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn tenant_model(&self, tenant: &str) -> Result<Option<TenantModel>, StoreError> {
        let s = &self.statements().await?.models;
        let row = self
            .one::<(String, Option<String>, CqlTimestamp)>(&s.tenant_model, (tenant,))
            .await?;
        Ok(
            row.map(|(active_model, previous_model, updated)| TenantModel {
                tenant: tenant.to_string(),
                active_model,
                previous_model,
                updated_at: updated.0,
            }),
        )
    }

    async fn put_tenant_model(&self, m: &TenantModel) -> Result<(), StoreError> {
        let s = &self.statements().await?.models;
        self.exec(
            &s.put_tenant_model,
            (
                &m.tenant,
                &m.active_model,
                &m.previous_model,
                CqlTimestamp(m.updated_at),
            ),
        )
        .await
    }

    async fn users(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, ProfileStatus)>, StoreError> {
        let s = &self.statements().await?.models;
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows: Vec<(String, String)> = match after {
            Some(a) => self.all(&s.users_after, (tenant, a, limit)).await?,
            None => self.all(&s.users, (tenant, limit)).await?,
        };
        rows.into_iter()
            .map(|(user, status)| {
                let status = ProfileStatus::parse(&status)
                    .ok_or_else(|| corrupt(format!("status {status}")))?;
                Ok((user, status))
            })
            .collect()
    }

    async fn rescore_run(
        &self,
        tenant: &str,
        target_model: &str,
    ) -> Result<Option<RescoreRun>, StoreError> {
        let s = &self.statements().await?.models;
        let row = self
            .one::<(String, String, CqlTimestamp, CqlTimestamp)>(&s.run, (tenant, target_model))
            .await?;
        row.map(|(source_model, state, started, updated)| {
            Ok(RescoreRun {
                tenant: tenant.to_string(),
                target_model: target_model.to_string(),
                source_model,
                state: RunState::parse(&state)
                    .ok_or_else(|| corrupt(format!("run state {state}")))?,
                started_at: started.0,
                updated_at: updated.0,
            })
        })
        .transpose()
    }

    async fn put_rescore_run(&self, r: &RescoreRun) -> Result<(), StoreError> {
        let s = &self.statements().await?.models;
        self.exec(
            &s.put_run,
            (
                &r.tenant,
                &r.target_model,
                &r.source_model,
                r.state.as_str(),
                CqlTimestamp(r.started_at),
                CqlTimestamp(r.updated_at),
            ),
        )
        .await
    }

    async fn rescore_results(
        &self,
        tenant: &str,
        target_model: &str,
    ) -> Result<Vec<RescoreResult>, StoreError> {
        let s = &self.statements().await?.models;
        let mut pages = self
            .session
            .execute_iter(s.results.clone(), (tenant, target_model))
            .await
            .map_err(unavailable)?
            .rows_stream::<(String, bool, String, CqlTimestamp)>()
            .map_err(corrupt)?;
        let mut out = Vec::new();
        while let Some(row) = futures::TryStreamExt::try_next(&mut pages)
            .await
            .map_err(unavailable)?
        {
            let (user_id, ok, detail, updated) = row;
            out.push(RescoreResult {
                tenant: tenant.to_string(),
                target_model: target_model.to_string(),
                user_id,
                ok,
                detail,
                updated_at: updated.0,
            });
        }
        Ok(out)
    }

    async fn delete_voiceprint(
        &self,
        tenant: &str,
        user_id: &str,
        model_id: &str,
    ) -> Result<(), StoreError> {
        let s = &self.statements().await?.models;
        self.exec(&s.delete_voiceprint, (tenant, user_id, model_id))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.session
            .query_unpaged("SELECT release_version FROM system.local", &[])
            .await
            .map(drop)
            .map_err(unavailable)
    }
}

/// Whether a lightweight transaction applied (its first column, `[applied]`).
fn applied(result: scylla::response::query_result::QueryResult) -> Result<bool, StoreError> {
    let row = result
        .into_rows_result()
        .map_err(corrupt)?
        .first_row::<scylla::value::Row>()
        .map_err(corrupt)?;
    match row.columns.first() {
        Some(Some(CqlValue::Boolean(b))) => Ok(*b),
        other => Err(corrupt(format!("lwt result without [applied]: {other:?}"))),
    }
}

/// Seconds from `now` to `until`, at least one (a CQL TTL of 0 means forever).
fn ttl_seconds(until: i64, now: i64) -> i32 {
    ((until - now).max(0) / 1000 + 1).min(i64::from(i32::MAX)) as i32
}

#[async_trait]
impl AccessStore for CqlStore {
    async fn put_api_key(&self, k: &ApiKey) -> Result<(), StoreError> {
        let s = &self.statements().await?.access;
        self.exec(
            &s.put_key,
            (
                &k.key_id,
                &k.tenant,
                &k.name,
                &k.secret_hash,
                CqlTimestamp(k.created_at),
                CqlTimestamp(k.expires_at),
            ),
        )
        .await
    }

    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKey>, StoreError> {
        let s = &self.statements().await?.access;
        let row = self
            .one::<(String, String, String, CqlTimestamp, CqlTimestamp)>(&s.key, (key_id,))
            .await?;
        Ok(
            row.map(|(tenant, name, secret_hash, created, expires)| ApiKey {
                key_id: key_id.to_string(),
                tenant,
                name,
                secret_hash,
                created_at: created.0,
                expires_at: expires.0,
            }),
        )
    }

    async fn put_session(&self, c: &ChallengeSession) -> Result<(), StoreError> {
        let s = &self.statements().await?.access;
        self.exec(
            &s.put_session,
            (
                &c.tenant,
                &c.session_id,
                &c.user_id,
                &c.challenge,
                CqlTimestamp(c.created_at),
                CqlTimestamp(c.expires_at),
                ttl_seconds(c.expires_at, c.created_at),
            ),
        )
        .await
    }

    async fn take_session(
        &self,
        tenant: &str,
        session_id: &str,
        now: i64,
    ) -> Result<Option<ChallengeSession>, StoreError> {
        let s = &self.statements().await?.access;
        let row = self
            .one::<(String, String, CqlTimestamp, CqlTimestamp)>(&s.session, (tenant, session_id))
            .await?;
        let Some((user_id, challenge, created, expires)) = row else {
            return Ok(None);
        };
        // Of concurrent takers, only the one whose conditional delete
        // applies gets the session.
        let result = self
            .session
            .execute_unpaged(&s.delete_session, (tenant, session_id))
            .await
            .map_err(unavailable)?;
        if !applied(result)? || expires.0 <= now {
            return Ok(None);
        }
        Ok(Some(ChallengeSession {
            tenant: tenant.to_string(),
            session_id: session_id.to_string(),
            user_id,
            challenge,
            created_at: created.0,
            expires_at: expires.0,
        }))
    }

    async fn spend_token(&self, jti: &str, expires_at: i64) -> Result<bool, StoreError> {
        let s = &self.statements().await?.access;
        let now = now_ms();
        let result = self
            .session
            .execute_unpaged(
                &s.spend_token,
                (jti, CqlTimestamp(now), ttl_seconds(expires_at, now)),
            )
            .await
            .map_err(unavailable)?;
        applied(result)
    }

    async fn add_usage(
        &self,
        tenant: &str,
        key_id: &str,
        day: &str,
        counts: &[(String, i64)],
    ) -> Result<(), StoreError> {
        let s = &self.statements().await?.access;
        let updates = counts.iter().map(|(metric, n)| {
            self.session.execute_unpaged(
                &s.add_usage,
                (scylla::value::Counter(*n), tenant, key_id, day, metric),
            )
        });
        for result in futures::future::join_all(updates).await {
            result.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn usage(&self, tenant: &str, key_id: &str) -> Result<Vec<UsageCount>, StoreError> {
        let s = &self.statements().await?.access;
        let rows: Vec<(String, String, scylla::value::Counter)> =
            self.all(&s.usage, (tenant, key_id)).await?;
        Ok(rows
            .into_iter()
            .map(|(day, metric, n)| UsageCount {
                day,
                metric,
                count: n.0,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_urls() {
        let c = CqlConfig::from_url(
            "cql://app:s3cret@10.0.0.1:9042,10.0.0.2:9042/timbre?replication_factor=3",
        )
        .unwrap();
        assert_eq!(c.nodes, vec!["10.0.0.1:9042", "10.0.0.2:9042"]);
        assert_eq!(c.keyspace, "timbre");
        assert_eq!(c.replication_factor, 3);
        assert_eq!(c.credentials, Some(("app".into(), "s3cret".into())));
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "debug output hides the password"
        );
        let c = CqlConfig::from_url("cql://app@db:9042/timbre").unwrap();
        assert_eq!(c.credentials, Some(("app".into(), String::new())));
        for bad in [
            "file:///x",
            "cql://host:9042",
            "cql://host:9042/bad-name",
            "cql://h/ks?x=1",
        ] {
            assert_eq!(
                CqlConfig::from_url(bad).unwrap_err().code(),
                "store_config",
                "{bad}"
            );
        }
    }
}
