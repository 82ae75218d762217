//! API access state: keys, challenge sessions, spent tokens and usage. Kept
//! in the same store as the biometric state, so every adapter replica sees
//! the same revocations.

use async_trait::async_trait;

use crate::domain::{ApiKey, ChallengeSession, UsageCount};
use crate::ports::StoreError;

/// What the HTTP adapter persists.
#[async_trait]
pub trait AccessStore: Send + Sync {
    /// Stores a new key (the secret's hash, never the secret).
    async fn put_api_key(&self, key: &ApiKey) -> Result<(), StoreError>;

    /// Looks a key up by its public id.
    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKey>, StoreError>;

    /// Every key of a tenant (hashes included: callers show none).
    async fn api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>, StoreError>;

    /// Enables or disables a key of `tenant`; false when it has no such key.
    async fn set_api_key_enabled(
        &self,
        tenant: &str,
        key_id: &str,
        enabled: bool,
    ) -> Result<bool, StoreError>;

    /// Sets both flags of a key of `tenant` at once; false when it has no
    /// such key.
    async fn modify_api_key(
        &self,
        tenant: &str,
        key_id: &str,
        enabled: bool,
        retain_data: bool,
    ) -> Result<bool, StoreError>;

    /// Deletes a key of `tenant`; false when it has no such key.
    async fn delete_api_key(&self, tenant: &str, key_id: &str) -> Result<bool, StoreError>;

    /// Records that `replica` has admitted `admitted` requests of `key` in
    /// the minute `minute` and returns the sum over every replica: the
    /// shared count behind the per-key rate limit.
    async fn count_requests(
        &self,
        key: &str,
        minute: i64,
        replica: &str,
        admitted: i64,
    ) -> Result<i64, StoreError>;

    /// Stores a challenge session until it expires.
    async fn put_session(&self, session: &ChallengeSession) -> Result<(), StoreError>;

    /// Takes a session out: returns it to exactly one caller, ever; `None`
    /// when it does not exist, was taken, or has expired at `now`.
    async fn take_session(
        &self,
        tenant: &str,
        session_id: &str,
        now: i64,
    ) -> Result<Option<ChallengeSession>, StoreError>;

    /// Marks token id `jti` as used; true only for the first call. The mark
    /// may be forgotten after `expires_at`, when the token is invalid anyway.
    async fn spend_token(&self, jti: &str, expires_at: i64) -> Result<bool, StoreError>;

    /// Adds to usage counters of a key on a day.
    async fn add_usage(
        &self,
        tenant: &str,
        key_id: &str,
        day: &str,
        counts: &[(String, i64)],
    ) -> Result<(), StoreError>;

    /// Every usage counter of a key, by day then metric.
    async fn usage(&self, tenant: &str, key_id: &str) -> Result<Vec<UsageCount>, StoreError>;
}
