//! Every statement the store runs, prepared once per session.

use scylla::statement::SerialConsistency;
use scylla::statement::prepared::PreparedStatement;

use super::{CqlStore, unavailable};
use crate::ports::StoreError;

/// The columns of an API key row, in the order `access::KeyRow` reads them.
pub(super) const KEY_COLUMNS: &str =
    "key_id, tenant, name, secret_hash, created_at, expires_at, scopes, enabled, retain_data";

pub(super) struct Statements {
    pub(super) profile: PreparedStatement,
    pub(super) voiceprint: PreparedStatement,
    pub(super) consent: PreparedStatement,
    pub(super) audio_ids: PreparedStatement,
    pub(super) audio: PreparedStatement,
    pub(super) decision: PreparedStatement,
    pub(super) put_profile: PreparedStatement,
    pub(super) put_voiceprint: PreparedStatement,
    pub(super) put_consent: PreparedStatement,
    pub(super) put_audio: PreparedStatement,
    pub(super) put_decision: PreparedStatement,
    pub(super) claim_request: PreparedStatement,
    pub(super) erase_voiceprints: PreparedStatement,
    pub(super) erase_audio: PreparedStatement,
    pub(super) audio_ages: PreparedStatement,
    pub(super) delete_audio: PreparedStatement,
    pub(super) fingerprints: PreparedStatement,
    pub(super) put_fingerprint: PreparedStatement,
    pub(super) erase_fingerprints: PreparedStatement,
    pub(super) diagnostics: PreparedStatement,
    pub(super) put_diagnostic: PreparedStatement,
    pub(super) erase_diagnostics: PreparedStatement,
    pub(super) access: AccessStatements,
    pub(super) watchlist: PreparedStatement,
    pub(super) put_watchlist: PreparedStatement,
    pub(super) remove_watchlist: PreparedStatement,
    pub(super) delete_profile: PreparedStatement,
    pub(super) delete_consent: PreparedStatement,
    pub(super) biokeys: PreparedStatement,
    pub(super) put_biokeys: PreparedStatement,
    pub(super) delete_biokeys: PreparedStatement,
    pub(super) biokey_owners: PreparedStatement,
    pub(super) put_biokey_owner: PreparedStatement,
    pub(super) delete_biokey_owner: PreparedStatement,
    pub(super) user_decisions: PreparedStatement,
    pub(super) put_user_decision: PreparedStatement,
    pub(super) delete_user_decisions: PreparedStatement,
    pub(super) models: ModelStatements,
}

pub(super) struct ModelStatements {
    pub(super) tenant_model: PreparedStatement,
    pub(super) put_tenant_model: PreparedStatement,
    pub(super) users: PreparedStatement,
    pub(super) users_after: PreparedStatement,
    pub(super) put_user: PreparedStatement,
    pub(super) delete_user: PreparedStatement,
    pub(super) run: PreparedStatement,
    pub(super) put_run: PreparedStatement,
    pub(super) results: PreparedStatement,
    pub(super) results_after: PreparedStatement,
    pub(super) put_result: PreparedStatement,
    pub(super) delete_voiceprint: PreparedStatement,
    pub(super) impostor_tails: PreparedStatement,
    pub(super) put_impostor_tails: PreparedStatement,
}

pub(super) struct AccessStatements {
    pub(super) put_key: PreparedStatement,
    pub(super) key: PreparedStatement,
    pub(super) keys_of_tenant: PreparedStatement,
    pub(super) set_key_enabled: PreparedStatement,
    pub(super) modify_key: PreparedStatement,
    pub(super) delete_key: PreparedStatement,
    pub(super) put_rate_count: PreparedStatement,
    pub(super) rate_counts: PreparedStatement,
    pub(super) put_session: PreparedStatement,
    pub(super) session: PreparedStatement,
    pub(super) delete_session: PreparedStatement,
    pub(super) spend_token: PreparedStatement,
    pub(super) add_usage: PreparedStatement,
    pub(super) usage: PreparedStatement,
}

impl CqlStore {
    pub(super) async fn statements(&self) -> Result<&Statements, StoreError> {
        self.statements
            .get_or_try_init(|| async {
                let ks = &self.config.keyspace;
                let p = |q: String| async move {
                    let mut statement = self.session.prepare(q.as_str()).await.map_err(unavailable)?;
                    // Lightweight transactions (request claims, challenge
                    // sessions, spent tokens) promise "once" across every
                    // data centre: Paxos at SERIAL, not LOCAL_SERIAL.
                    if q.contains(" IF ") {
                        statement.set_serial_consistency(Some(SerialConsistency::Serial));
                    }
                    Ok::<_, StoreError>(statement)
                };
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
                    audio_ids: p(format!(
                        "SELECT request_id FROM {ks}.enrollment_audio WHERE tenant = ? AND user_id = ?"
                    ))
                    .await?,
                    audio: p(format!(
                        "SELECT audio FROM {ks}.enrollment_audio \
                         WHERE tenant = ? AND user_id = ? AND request_id = ?"
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
                    claim_request: p(format!(
                        "INSERT INTO {ks}.request_claims (tenant, request_id, digest) VALUES (?, ?, ?) IF NOT EXISTS"
                    ))
                    .await?,
                    erase_voiceprints: p(format!("DELETE FROM {ks}.voiceprints WHERE tenant = ? AND user_id = ?"))
                        .await?,
                    erase_audio: p(format!("DELETE FROM {ks}.enrollment_audio WHERE tenant = ? AND user_id = ?"))
                        .await?,
                    // The write time of each recording, without reading it.
                    audio_ages: p(format!(
                        "SELECT request_id, WRITETIME(audio) FROM {ks}.enrollment_audio \
                         WHERE tenant = ? AND user_id = ?"
                    ))
                    .await?,
                    delete_audio: p(format!(
                        "DELETE FROM {ks}.enrollment_audio WHERE tenant = ? AND user_id = ? AND request_id = ?"
                    ))
                    .await?,
                    fingerprints: p(format!(
                        "SELECT landmarks FROM {ks}.fingerprints WHERE tenant = ? AND user_id = ? LIMIT ?"
                    ))
                    .await?,
                    put_fingerprint: p(format!(
                        "INSERT INTO {ks}.fingerprints (tenant, user_id, taken_at, request_id, landmarks) \
                         VALUES (?, ?, ?, ?, ?) USING TTL ?"
                    ))
                    .await?,
                    erase_fingerprints: p(format!(
                        "DELETE FROM {ks}.fingerprints WHERE tenant = ? AND user_id = ?"
                    ))
                    .await?,
                    diagnostics: p(format!(
                        "SELECT request_id, job, taken_at, expires_at, audio, decision FROM {ks}.diagnostics \
                         WHERE tenant = ? AND user_id = ?"
                    ))
                    .await?,
                    put_diagnostic: p(format!(
                        "INSERT INTO {ks}.diagnostics (tenant, user_id, request_id, job, taken_at, expires_at, \
                         audio, decision) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"
                    ))
                    .await?,
                    erase_diagnostics: p(format!(
                        "DELETE FROM {ks}.diagnostics WHERE tenant = ? AND user_id = ?"
                    ))
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
                    biokeys: p(format!("SELECT biokeys FROM {ks}.biokeys WHERE tenant = ? AND user_id = ?"))
                        .await?,
                    put_biokeys: p(format!(
                        "INSERT INTO {ks}.biokeys (tenant, user_id, biokeys) VALUES (?, ?, ?)"
                    ))
                    .await?,
                    delete_biokeys: p(format!("DELETE FROM {ks}.biokeys WHERE tenant = ? AND user_id = ?"))
                        .await?,
                    user_decisions: p(format!(
                        "SELECT request_id FROM {ks}.user_decisions WHERE tenant = ? AND user_id = ? LIMIT ?"
                    ))
                    .await?,
                    put_user_decision: p(format!(
                        "INSERT INTO {ks}.user_decisions (tenant, user_id, decided_at, request_id) \
                         VALUES (?, ?, ?, ?)"
                    ))
                    .await?,
                    delete_user_decisions: p(format!(
                        "DELETE FROM {ks}.user_decisions WHERE tenant = ? AND user_id = ?"
                    ))
                    .await?,
                    biokey_owners: p(format!(
                        "SELECT user_id FROM {ks}.biokey_index WHERE tenant = ? AND name = ? AND digest = ?"
                    ))
                    .await?,
                    put_biokey_owner: p(format!(
                        "INSERT INTO {ks}.biokey_index (tenant, name, digest, user_id) VALUES (?, ?, ?, ?)"
                    ))
                    .await?,
                    delete_biokey_owner: p(format!(
                        "DELETE FROM {ks}.biokey_index WHERE tenant = ? AND name = ? AND digest = ? AND user_id = ?"
                    ))
                    .await?,
                    models: ModelStatements {
                        tenant_model: p(format!(
                            "SELECT active_model, previous_model, updated_at FROM {ks}.tenant_models WHERE tenant = ?"
                        ))
                        .await?,
                        impostor_tails: p(format!(
                            "SELECT tail FROM {ks}.impostor_tails WHERE tenant = ? AND model_id = ?"
                        ))
                        .await?,
                        put_impostor_tails: p(format!(
                            "INSERT INTO {ks}.impostor_tails (tenant, model_id, tail, updated_at) VALUES (?, ?, ?, ?)"
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
                             WHERE tenant = ? AND target_model = ? LIMIT ?"
                        ))
                        .await?,
                        results_after: p(format!(
                            "SELECT user_id, ok, detail, updated_at FROM {ks}.rescore_results \
                             WHERE tenant = ? AND target_model = ? AND user_id > ? LIMIT ?"
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
                            "INSERT INTO {ks}.api_keys (key_id, tenant, name, secret_hash, created_at, expires_at, \
                             scopes, enabled, retain_data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                        ))
                        .await?,
                        key: p(format!(
                            "SELECT {KEY_COLUMNS} FROM {ks}.api_keys WHERE key_id = ?"
                        ))
                        .await?,
                        keys_of_tenant: p(format!(
                            "SELECT {KEY_COLUMNS} FROM {ks}.api_keys WHERE tenant = ?"
                        ))
                        .await?,
                        // Conditional on the tenant: a key id of another
                        // tenant is "not found", and a concurrent revoke wins.
                        set_key_enabled: p(format!(
                            "UPDATE {ks}.api_keys SET enabled = ? WHERE key_id = ? IF tenant = ?"
                        ))
                        .await?,
                        modify_key: p(format!(
                            "UPDATE {ks}.api_keys SET enabled = ?, retain_data = ? WHERE key_id = ? IF tenant = ?"
                        ))
                        .await?,
                        delete_key: p(format!(
                            "DELETE FROM {ks}.api_keys WHERE key_id = ? IF tenant = ?"
                        ))
                        .await?,
                        put_rate_count: p(format!(
                            "INSERT INTO {ks}.rate_counts (key, minute, replica, admitted) VALUES (?, ?, ?, ?)"
                        ))
                        .await?,
                        rate_counts: p(format!(
                            "SELECT admitted FROM {ks}.rate_counts WHERE key = ? AND minute = ?"
                        ))
                        .await?,
                        // Conditional like the delete that takes it: both get
                        // Paxos timestamps, so a client clock ahead of the
                        // cluster cannot make the insert outlive the delete.
                        put_session: p(format!(
                            "INSERT INTO {ks}.challenge_sessions (tenant, session_id, user_id, challenge, created_at, \
                             expires_at, dialogue_kind, dialogue_language, dialogue_answers, dialogue_misspeaks, \
                             call) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?"
                        ))
                        .await?,
                        session: p(format!(
                            "SELECT user_id, challenge, created_at, expires_at, dialogue_kind, dialogue_language, \
                             dialogue_answers, dialogue_misspeaks, call FROM {ks}.challenge_sessions \
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
