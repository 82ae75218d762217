//! The CQL store (ScyllaDB in production, Apache Cassandra in tests) on the
//! `scylla` driver. Data statements are prepared once at connect; a job's
//! state changes and its decision go out as one logged batch, so they land
//! together (retained audio, too large for a batch, is written just before).
//!
//! - `config`: the `cql://` URL.
//! - `migrations`: versioned, idempotent DDL.
//! - `statements`: every prepared statement.
//! - `store`, `access`: the [`Store`](crate::ports::Store) and
//!   [`AccessStore`](crate::ports::AccessStore) implementations.

mod access;
mod config;
mod migrations;
mod statements;
mod store;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlValue};

pub use config::{CqlConfig, CqlTls};
use statements::Statements;

use crate::ports::StoreError;

/// A [`Store`] on a CQL cluster.
pub struct CqlStore {
    session: Session,
    config: CqlConfig,
    statements: tokio::sync::OnceCell<Statements>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A failed request as a store error. What the cluster refuses for the
/// request itself (syntax, invalid values such as an oversized key,
/// authorization, schema) fails the same way on every retry: permanent.
/// Timeouts, unavailable replicas, overload and broken connections are
/// transient and retried.
fn store_error(e: scylla::errors::ExecutionError) -> StoreError {
    use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
    let permanent = match &e {
        ExecutionError::BadQuery(_) => true,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
            db,
            DbError::SyntaxError
                | DbError::Invalid
                | DbError::AlreadyExists { .. }
                | DbError::FunctionFailure { .. }
                | DbError::AuthenticationError
                | DbError::Unauthorized
                | DbError::ConfigError
        ),
        ExecutionError::LastAttemptError(
            RequestAttemptError::SerializationError(_)
            | RequestAttemptError::CqlRequestSerialization(_),
        ) => true,
        _ => false,
    };
    if permanent {
        StoreError::Rejected(e.to_string())
    } else {
        unavailable(e)
    }
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
            .map_err(store_error)?
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
            .map_err(store_error)?
            .into_rows_result()
            .map_err(corrupt)?
            .rows::<R>()
            .map_err(corrupt)?
            .collect::<Result<_, _>>()
            .map_err(corrupt)
    }

    /// Deletes all but the `keep` newest retained recordings of a user,
    /// ordered by their write time (the client-side monotonic timestamps).
    async fn prune_audio(
        &self,
        s: &Statements,
        tenant: &str,
        user_id: &str,
        keep: u32,
    ) -> Result<(), StoreError> {
        let mut ages: Vec<(String, Option<i64>)> =
            self.all(&s.audio_ages, (tenant, user_id)).await?;
        if ages.len() <= keep as usize {
            return Ok(());
        }
        ages.sort_by_key(|(_, written)| std::cmp::Reverse(written.unwrap_or(0)));
        for (request_id, _) in &ages[keep as usize..] {
            self.exec(&s.delete_audio, (tenant, user_id, request_id))
                .await?;
        }
        Ok(())
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
            .map_err(store_error)
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
                .map_err(store_error)?;
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
        if let Some(tls) = &config.tls {
            builder = builder.tls_context(Some(tls.context()?));
        }
        let session = builder.build().await.map_err(unavailable)?;
        Ok(Self {
            session,
            config,
            statements: tokio::sync::OnceCell::new(),
        })
    }
}
