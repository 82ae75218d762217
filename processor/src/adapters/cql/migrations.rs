//! Versioned schema migrations; each statement is idempotent.

/// Decisions are an audit trail, kept for 90 days.
pub(super) const DECISION_TTL_SECONDS: u32 = 90 * 24 * 3600;

/// Versioned migrations; each statement is idempotent (`IF NOT EXISTS`).
pub(super) const MIGRATIONS: &[(u32, &str, &[&str])] = &[
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
    (
        5,
        "request claims: a request id bound to one job's digest",
        &[
            "CREATE TABLE IF NOT EXISTS {ks}.request_claims (tenant text, request_id text, digest text, \
             PRIMARY KEY ((tenant, request_id))) WITH default_time_to_live = {decision_ttl}",
        ],
    ),
    (
        6,
        "landmark fingerprints of recent recordings, for replay detection",
        &[
            "CREATE TABLE IF NOT EXISTS {ks}.fingerprints (tenant text, user_id text, taken_at timestamp, \
             request_id text, landmarks blob, PRIMARY KEY ((tenant, user_id), taken_at, request_id)) \
             WITH CLUSTERING ORDER BY (taken_at DESC, request_id ASC)",
        ],
    ),
    (
        7,
        "api key scopes and enabled flag; keys found by tenant",
        &[
            // Keys written before this migration read back with no scope
            // set (every scope) and no flag (enabled).
            "ALTER TABLE {ks}.api_keys ADD scopes set<text>",
            "ALTER TABLE {ks}.api_keys ADD enabled boolean",
            // A tenant has few keys and the table is small: a secondary
            // index serves the admin listing without a second table.
            "CREATE INDEX IF NOT EXISTS api_keys_by_tenant ON {ks}.api_keys (tenant)",
        ],
    ),
    (
        8,
        "requests admitted per key, minute and API replica (shared rate limits)",
        &[
            "CREATE TABLE IF NOT EXISTS {ks}.rate_counts (key text, minute bigint, replica text, \
             admitted bigint, PRIMARY KEY ((key, minute), replica)) WITH default_time_to_live = 180",
        ],
    ),
    (
        9,
        "diagnostic records of keys that retain data; the keys' retain_data flag",
        &[
            // Rows carry their own TTL (the tenant's diagnostics days).
            "CREATE TABLE IF NOT EXISTS {ks}.diagnostics (tenant text, user_id text, request_id text, \
             job text, taken_at timestamp, expires_at timestamp, audio blob, decision blob, \
             PRIMARY KEY ((tenant, user_id), request_id))",
            // Keys written before read back without the flag (false).
            "ALTER TABLE {ks}.api_keys ADD retain_data boolean",
        ],
    ),
    (
        10,
        "challenge sessions that are steps of a prompted dialogue",
        &[
            // Null for a plain challenge.
            "ALTER TABLE {ks}.challenge_sessions ADD dialogue_kind text",
            "ALTER TABLE {ks}.challenge_sessions ADD dialogue_language text",
            "ALTER TABLE {ks}.challenge_sessions ADD dialogue_answers int",
            "ALTER TABLE {ks}.challenge_sessions ADD dialogue_misspeaks int",
        ],
    ),
    (
        11,
        "users' identifiers (biokeys) and their lookup index; call sessions",
        &[
            // The whole set as one JSON row: a replacement is one overwrite.
            "CREATE TABLE IF NOT EXISTS {ks}.biokeys (tenant text, user_id text, biokeys text, \
             PRIMARY KEY ((tenant, user_id)))",
            // One row per holder: each user writes and erases only its own.
            "CREATE TABLE IF NOT EXISTS {ks}.biokey_index (tenant text, name text, digest text, \
             user_id text, PRIMARY KEY ((tenant, name, digest), user_id))",
            // Null unless the session is a call session (JSON state).
            "ALTER TABLE {ks}.challenge_sessions ADD call text",
        ],
    ),
    (
        12,
        "each user's recent decisions, newest first",
        &[
            "CREATE TABLE IF NOT EXISTS {ks}.user_decisions (tenant text, user_id text, \
             decided_at timestamp, request_id text, \
             PRIMARY KEY ((tenant, user_id), decided_at, request_id)) \
             WITH CLUSTERING ORDER BY (decided_at DESC, request_id ASC) \
             AND default_time_to_live = {decision_ttl}",
        ],
    ),
    (
        13,
        "tenants' impostor tails (counts of impostor scores per tenant and model)",
        &[
            "CREATE TABLE IF NOT EXISTS {ks}.impostor_tails (tenant text, model_id text, tail blob, \
             updated_at timestamp, PRIMARY KEY ((tenant, model_id)))",
        ],
    ),
];
