//! [`AccessStore`] on CQL: API keys, challenge sessions, spent tokens, usage.

use std::collections::BTreeSet;

use async_trait::async_trait;
use scylla::value::{CqlTimestamp, CqlValue};

use super::{CqlStore, corrupt, store_error, unavailable};
use crate::domain::{
    ApiKey, ChallengeSession, DialogueKind, DialogueState, Scope, UsageCount, now_ms,
};
use crate::ports::{AccessStore, StoreError};

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

/// An `api_keys` row (`statements::KEY_COLUMNS`).
type KeyRow = (
    String,
    String,
    String,
    String,
    CqlTimestamp,
    CqlTimestamp,
    Option<BTreeSet<String>>,
    Option<bool>,
    Option<bool>,
);

fn key_from_row(row: KeyRow) -> ApiKey {
    let (key_id, tenant, name, secret_hash, created, expires, scopes, enabled, retain_data) = row;
    ApiKey {
        key_id,
        tenant,
        name,
        secret_hash,
        created_at: created.0,
        expires_at: expires.0,
        // A scope this version does not know grants nothing here.
        scopes: scopes.map(|names| names.iter().filter_map(|n| Scope::parse(n)).collect()),
        enabled: enabled.unwrap_or(true),
        retain_data: retain_data.unwrap_or(false),
    }
}

/// A `challenge_sessions` row: user, challenge, created, expires, the
/// dialogue's kind, language, answers and misspeaks (null for a plain
/// challenge), and a call session's state as JSON (null otherwise).
type SessionRow = (
    String,
    String,
    CqlTimestamp,
    CqlTimestamp,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<i32>,
    Option<String>,
);

/// A count as an `int` column.
fn count_column(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
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
                k.scopes.as_ref().map(|s| {
                    s.iter()
                        .map(|scope| scope.as_str().to_string())
                        .collect::<BTreeSet<String>>()
                }),
                k.enabled,
                k.retain_data,
            ),
        )
        .await
    }

    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKey>, StoreError> {
        let s = &self.statements().await?.access;
        let row = self.one::<KeyRow>(&s.key, (key_id,)).await?;
        Ok(row.map(key_from_row))
    }

    async fn api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>, StoreError> {
        let s = &self.statements().await?.access;
        let rows = self.all::<KeyRow>(&s.keys_of_tenant, (tenant,)).await?;
        let mut keys: Vec<ApiKey> = rows.into_iter().map(key_from_row).collect();
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    async fn set_api_key_enabled(
        &self,
        tenant: &str,
        key_id: &str,
        enabled: bool,
    ) -> Result<bool, StoreError> {
        let s = &self.statements().await?.access;
        let result = self
            .session
            .execute_unpaged(&s.set_key_enabled, (enabled, key_id, tenant))
            .await
            .map_err(store_error)?;
        applied(result)
    }

    async fn modify_api_key(
        &self,
        tenant: &str,
        key_id: &str,
        enabled: bool,
        retain_data: bool,
    ) -> Result<bool, StoreError> {
        let s = &self.statements().await?.access;
        let result = self
            .session
            .execute_unpaged(&s.modify_key, (enabled, retain_data, key_id, tenant))
            .await
            .map_err(store_error)?;
        applied(result)
    }

    async fn delete_api_key(&self, tenant: &str, key_id: &str) -> Result<bool, StoreError> {
        let s = &self.statements().await?.access;
        let result = self
            .session
            .execute_unpaged(&s.delete_key, (key_id, tenant))
            .await
            .map_err(store_error)?;
        applied(result)
    }

    async fn count_requests(
        &self,
        key: &str,
        minute: i64,
        replica: &str,
        admitted: i64,
    ) -> Result<i64, StoreError> {
        let s = &self.statements().await?.access;
        self.exec(&s.put_rate_count, (key, minute, replica, admitted))
            .await?;
        let rows: Vec<(i64,)> = self.all(&s.rate_counts, (key, minute)).await?;
        Ok(rows.into_iter().map(|(n,)| n).sum())
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
                c.dialogue.as_ref().map(|d| d.kind.as_str()),
                c.dialogue.as_ref().map(|d| d.language.as_str()),
                c.dialogue.as_ref().map(|d| count_column(d.answers)),
                c.dialogue.as_ref().map(|d| count_column(d.misspeaks)),
                c.call
                    .as_ref()
                    .map(|call| serde_json::to_string(call).expect("call state serialises")),
                // From now: a call session is put back long after it began.
                ttl_seconds(c.expires_at, now_ms()),
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
            .one::<SessionRow>(&s.session, (tenant, session_id))
            .await?;
        let Some((user_id, challenge, created, expires, kind, language, answers, misspeaks, call)) =
            row
        else {
            return Ok(None);
        };
        let dialogue = match kind.as_deref().map(DialogueKind::parse) {
            None => None,
            Some(Some(kind)) => Some(DialogueState {
                kind,
                language: language.unwrap_or_default(),
                answers: answers.unwrap_or(0).max(0) as u32,
                misspeaks: misspeaks.unwrap_or(0).max(0) as u32,
            }),
            Some(None) => return Err(corrupt(format!("dialogue kind {kind:?}"))),
        };
        let call = call
            .map(|json| serde_json::from_str(&json).map_err(corrupt))
            .transpose()?;
        // Of concurrent takers, only the one whose conditional delete
        // applies gets the session.
        let result = self
            .session
            .execute_unpaged(&s.delete_session, (tenant, session_id))
            .await
            .map_err(store_error)?;
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
            dialogue,
            call,
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
