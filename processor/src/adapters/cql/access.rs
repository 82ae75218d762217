//! [`AccessStore`] on CQL: API keys, challenge sessions, spent tokens, usage.

use async_trait::async_trait;
use scylla::value::{CqlTimestamp, CqlValue};

use super::{CqlStore, corrupt, store_error, unavailable};
use crate::domain::{ApiKey, ChallengeSession, UsageCount, now_ms};
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
