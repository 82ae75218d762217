//! The embedded store: one redb file, so the quick-start engine keeps its
//! state across restarts. Every call runs on the blocking pool because redb
//! commits fsync.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use crate::domain::now_ms;
use crate::domain::{
    ApiKey, ChallengeSession, Consent, DiagnosticRecord, JobCommit, Mutation, Profile,
    ProfileStatus, RescoreResult, RescoreRun, TenantModel, UsageCount, Voiceprint, WatchlistEntry,
};
use timbre_schemas::Biokey;

use crate::domain::impostor_tail::TenantTails;
use crate::liveness::Fingerprint;
use crate::ports::{AccessStore, Store, StoreError, stored_tails};

const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("profiles");
const VOICEPRINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("voiceprints");
const CONSENT: TableDefinition<&str, &[u8]> = TableDefinition::new("consent");
const AUDIO: TableDefinition<&str, &[u8]> = TableDefinition::new("enrollment_audio");
/// tenant · user · request id → when the audio was retained (ms); a
/// recording without an entry (written before version 7) counts as oldest.
const AUDIO_TIMES: TableDefinition<&str, i64> = TableDefinition::new("enrollment_audio_at");
/// tenant · user · request id → taken at (i64 LE) · expires at (i64 LE) ·
/// landmarks.
const FINGERPRINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("fingerprints");
const DECISIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("decisions");
/// tenant · user · decided at (20 digits, so keys sort by time) · request
/// id → nothing.
const USER_DECISIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("user_decisions");
/// tenant · user · request id → [`diagnostic_row`].
const DIAGNOSTICS: TableDefinition<&str, &[u8]> = TableDefinition::new("diagnostics");
/// tenant · request id → digest of the job that owns the id.
const REQUEST_CLAIMS: TableDefinition<&str, &str> = TableDefinition::new("request_claims");
const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
const API_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("challenge_sessions");
/// Spent token id → the token's expiry (ms), after which the mark is pruned.
const SPENT_TOKENS: TableDefinition<&str, i64> = TableDefinition::new("spent_tokens");
const USAGE: TableDefinition<&str, i64> = TableDefinition::new("usage");
/// tenant · user · model → entry.
const WATCHLIST: TableDefinition<&str, &[u8]> = TableDefinition::new("watchlist");
const TENANT_MODELS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenant_models");
/// tenant · target model → run.
const RESCORE_RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("rescore_runs");
/// tenant · target model · user → result.
const RESCORE_RESULTS: TableDefinition<&str, &[u8]> = TableDefinition::new("rescore_results");
/// `key|replica` → `(minute, admitted)`: one row per replica, overwritten
/// each minute, so the table stays as small as keys × replicas.
const RATE_COUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("rate_counts");
/// tenant · user → the user's identifier set (JSON).
const BIOKEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("biokeys");
/// tenant · identifier name · digest · user id → user id.
const BIOKEY_INDEX: TableDefinition<&str, &str> = TableDefinition::new("biokey_index");
/// tenant · model → the tenant's impostor tails (`TenantTails::encode`).
const IMPOSTOR_TAILS: TableDefinition<&str, &[u8]> = TableDefinition::new("impostor_tails");

/// Version of the file layout; bumped with each migration.
const SCHEMA_VERSION: u32 = 10;
/// Separates key parts; ids never contain control characters (validated at decode).
const SEP: char = '\u{1f}';

fn key(parts: &[&str]) -> String {
    parts.join(&SEP.to_string())
}

/// The keys under the whole `parts`, as a range: they sort in
/// `[parts + SEP, parts + (SEP + 1))`.
fn key_range(parts: &[&str]) -> (String, String) {
    let base = key(parts);
    let after_sep = char::from_u32(SEP as u32 + 1).expect("valid char");
    (format!("{base}{SEP}"), format!("{base}{after_sep}"))
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialise")
}

/// `(taken at, expires at, rest)` of a row that expires (a fingerprint's
/// rest is its landmarks).
fn split_timed_row(row: &[u8]) -> Result<(i64, i64, &[u8]), StoreError> {
    if row.len() < 16 {
        return Err(StoreError::Corrupt("short fingerprint row".into()));
    }
    let at = i64::from_le_bytes(row[..8].try_into().expect("8 bytes"));
    let expires = i64::from_le_bytes(row[8..16].try_into().expect("8 bytes"));
    Ok((at, expires, &row[16..]))
}

/// A diagnostic record as stored: taken at (i64 LE) · expires at (i64 LE) ·
/// job name length (u8) · job name · decision length (u32 LE) · decision ·
/// the WAV bytes.
fn diagnostic_row(at: i64, expires: i64, job: &str, decision: &[u8], wav: &[u8]) -> Vec<u8> {
    let job = &job.as_bytes()[..job.len().min(255)];
    let mut row = Vec::with_capacity(21 + job.len() + decision.len() + wav.len());
    row.extend_from_slice(&at.to_le_bytes());
    row.extend_from_slice(&expires.to_le_bytes());
    row.push(job.len() as u8);
    row.extend_from_slice(job);
    row.extend_from_slice(&(decision.len() as u32).to_le_bytes());
    row.extend_from_slice(decision);
    row.extend_from_slice(wav);
    row
}

/// The record of a [`diagnostic_row`].
fn parse_diagnostic_row(request_id: &str, row: &[u8]) -> Result<DiagnosticRecord, StoreError> {
    let short = || StoreError::Corrupt("short diagnostic row".into());
    let (at, expires, rest) = split_timed_row(row)?;
    let (&job_len, rest) = rest.split_first().ok_or_else(short)?;
    let (job, rest) = rest
        .split_at_checked(usize::from(job_len))
        .ok_or_else(short)?;
    let (len, rest) = rest.split_at_checked(4).ok_or_else(short)?;
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    let (decision, wav) = rest.split_at_checked(len).ok_or_else(short)?;
    Ok(DiagnosticRecord {
        request_id: request_id.to_string(),
        job: String::from_utf8_lossy(job).into_owned(),
        at,
        expires_at: expires,
        wav: wav.to_vec(),
        decision: decision.to_vec(),
    })
}

/// Replaces a user's identifier set (empty: removes it) and the user's
/// lookup entries.
fn replace_biokeys(
    tx: &redb::WriteTransaction,
    tenant: &str,
    user_id: &str,
    biokeys: &[Biokey],
) -> Result<(), StoreError> {
    let user_key = key(&[tenant, user_id]);
    let mut sets = tx.open_table(BIOKEYS).map_err(unavailable)?;
    let old: Vec<Biokey> = match sets.get(user_key.as_str()).map_err(unavailable)? {
        Some(row) => decode(row.value())?,
        None => Vec::new(),
    };
    let mut index = tx.open_table(BIOKEY_INDEX).map_err(unavailable)?;
    for k in &old {
        index
            .remove(key(&[tenant, &k.key, &k.digest, user_id]).as_str())
            .map_err(unavailable)?;
    }
    for k in biokeys {
        index
            .insert(key(&[tenant, &k.key, &k.digest, user_id]).as_str(), user_id)
            .map_err(unavailable)?;
    }
    if biokeys.is_empty() {
        sets.remove(user_key.as_str()).map_err(unavailable)?;
    } else {
        sets.insert(user_key.as_str(), encode(&biokeys).as_slice())
            .map_err(unavailable)?;
    }
    Ok(())
}

/// Drops every expired diagnostic record. The embedded store has no TTL,
/// and a user who never returns would otherwise keep audio past its time;
/// records exist only for keys that retain data, so the scan stays short.
fn prune_diagnostics(tx: &redb::WriteTransaction, now: i64) -> Result<(), StoreError> {
    tx.open_table(DIAGNOSTICS)
        .map_err(unavailable)?
        .retain(|_, row| split_timed_row(row).is_ok_and(|(_, expires, _)| expires > now))
        .map_err(unavailable)
}

/// Drops a user's expired fingerprints and all but the `keep` newest.
fn prune_fingerprints(
    tx: &redb::WriteTransaction,
    tenant: &str,
    user_id: &str,
    now: i64,
    keep: u32,
) -> Result<(), StoreError> {
    let mut table = tx.open_table(FINGERPRINTS).map_err(unavailable)?;
    let (prefix, end) = key_range(&[tenant, user_id]);
    let mut rows: Vec<(i64, i64, String)> = Vec::new();
    for entry in table
        .range(prefix.as_str()..end.as_str())
        .map_err(unavailable)?
    {
        let (k, v) = entry.map_err(unavailable)?;
        let (at, expires, _) = split_timed_row(v.value())?;
        rows.push((at, expires, k.value().to_string()));
    }
    rows.sort_by_key(|(at, _, _)| std::cmp::Reverse(*at));
    for (i, (_, expires, k)) in rows.iter().enumerate() {
        if i >= keep as usize || *expires <= now {
            table.remove(k.as_str()).map_err(unavailable)?;
        }
    }
    Ok(())
}

/// Deletes all but the `keep` newest retained recordings of a user.
fn prune_audio(
    tx: &redb::WriteTransaction,
    tenant: &str,
    user_id: &str,
    keep: u32,
) -> Result<(), StoreError> {
    let (prefix, end) = key_range(&[tenant, user_id]);
    let mut audio = tx.open_table(AUDIO).map_err(unavailable)?;
    let mut times = tx.open_table(AUDIO_TIMES).map_err(unavailable)?;
    let mut rows: Vec<(i64, String)> = Vec::new();
    for entry in audio
        .range(prefix.as_str()..end.as_str())
        .map_err(unavailable)?
    {
        let (k, _) = entry.map_err(unavailable)?;
        let k = k.value().to_string();
        let at = times
            .get(k.as_str())
            .map_err(unavailable)?
            .map_or(0, |v| v.value());
        rows.push((at, k));
    }
    rows.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    for (_, k) in rows.iter().skip(keep as usize) {
        audio.remove(k.as_str()).map_err(unavailable)?;
        times.remove(k.as_str()).map_err(unavailable)?;
    }
    Ok(())
}

/// A [`Store`] in a local redb file.
#[derive(Clone)]
pub struct FileStore {
    db: Arc<Database>,
}

impl FileStore {
    /// Opens (or creates) the database file. It holds voiceprints and
    /// retained audio: a new file is readable by its owner only.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(unavailable)?;
        }
        let db = Database::create(path).map_err(unavailable)?;
        Ok(Self { db: Arc::new(db) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(unavailable)?
    }

    /// Every `(key, value)` whose key starts with the `parts` (whole parts).
    async fn scan(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        parts: &[&str],
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.scan_map(table, parts, |k, v| (k.to_string(), v.to_vec()))
            .await
    }

    /// The rows under a key prefix, each mapped by `row(key, value)` inside
    /// the read (so a caller that needs only keys copies no values).
    async fn scan_map<T: Send + 'static>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        parts: &[&str],
        row: impl Fn(&str, &[u8]) -> T + Send + 'static,
    ) -> Result<Vec<T>, StoreError> {
        self.page_map(table, parts, None, usize::MAX, row).await
    }

    /// At most `limit` rows under a key prefix whose next key part sorts
    /// after `after`, in key order, each mapped by `row(key, value)`.
    async fn page_map<T: Send + 'static>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        parts: &[&str],
        after: Option<&str>,
        limit: usize,
        row: impl Fn(&str, &[u8]) -> T + Send + 'static,
    ) -> Result<Vec<T>, StoreError> {
        let (prefix, end) = key_range(parts);
        let start = match after {
            // Just past `after` (keys sort bytewise; SEP-joined, so appending
            // the smallest char moves past exactly that key).
            Some(a) => format!("{prefix}{a}\u{0}"),
            None => prefix,
        };
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let t = match tx.open_table(table) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(unavailable(e)),
            };
            let mut out = Vec::new();
            for entry in t
                .range(start.as_str()..end.as_str())
                .map_err(unavailable)?
                .take(limit)
            {
                let (k, v) = entry.map_err(unavailable)?;
                out.push(row(k.value(), v.value()));
            }
            Ok(out)
        })
        .await
    }

    async fn put(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        k: String,
        v: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            tx.open_table(table)
                .map_err(unavailable)?
                .insert(k.as_str(), v.as_slice())
                .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn get(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        k: String,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let t = match tx.open_table(table) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(unavailable(e)),
            };
            Ok(t.get(k.as_str())
                .map_err(unavailable)?
                .map(|v| v.value().to_vec()))
        })
        .await
    }
}

#[async_trait]
impl Store for FileStore {
    async fn migrate(&self) -> Result<u32, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_write().map_err(unavailable)?;
            for table in [
                PROFILES,
                VOICEPRINTS,
                CONSENT,
                AUDIO,
                FINGERPRINTS,
                DECISIONS,
                DIAGNOSTICS,
                API_KEYS,
                SESSIONS,
                WATCHLIST,
                TENANT_MODELS,
                RESCORE_RUNS,
                RESCORE_RESULTS,
                RATE_COUNTS,
                BIOKEYS,
                IMPOSTOR_TAILS,
            ] {
                tx.open_table(table).map_err(unavailable)?;
            }
            for table in [SPENT_TOKENS, USAGE] {
                tx.open_table(table).map_err(unavailable)?;
            }
            tx.open_table(REQUEST_CLAIMS).map_err(unavailable)?;
            tx.open_table(AUDIO_TIMES).map_err(unavailable)?;
            tx.open_table(BIOKEY_INDEX).map_err(unavailable)?;
            tx.open_table(META)
                .map_err(unavailable)?
                .insert("schema_version", SCHEMA_VERSION)
                .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(SCHEMA_VERSION)
        })
        .await
    }

    async fn profile(&self, tenant: &str, user_id: &str) -> Result<Option<Profile>, StoreError> {
        self.get(PROFILES, key(&[tenant, user_id]))
            .await?
            .map(|b| decode(&b))
            .transpose()
    }

    async fn voiceprint(
        &self,
        tenant: &str,
        user_id: &str,
        model_id: &str,
    ) -> Result<Option<Voiceprint>, StoreError> {
        self.get(VOICEPRINTS, key(&[tenant, user_id, model_id]))
            .await?
            .map(|b| decode(&b))
            .transpose()
    }

    async fn consent(
        &self,
        tenant: &str,
        user_id: &str,
        purpose: &str,
    ) -> Result<Option<Consent>, StoreError> {
        self.get(CONSENT, key(&[tenant, user_id, purpose]))
            .await?
            .map(|b| decode(&b))
            .transpose()
    }

    async fn retained_audio_ids(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        // The keys alone: the recordings stay on disk until read one by one.
        self.scan_map(AUDIO, &[tenant, user_id], |k, _| {
            k.rsplit(SEP).next().unwrap_or_default().to_string()
        })
        .await
    }

    async fn retained_audio(
        &self,
        tenant: &str,
        user_id: &str,
        request_id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(AUDIO, key(&[tenant, user_id, request_id])).await
    }

    async fn fingerprints(
        &self,
        tenant: &str,
        user_id: &str,
        limit: u32,
    ) -> Result<Vec<Fingerprint>, StoreError> {
        let now = now_ms();
        let mut rows: Vec<(i64, Fingerprint)> = Vec::new();
        for (_, row) in self.scan(FINGERPRINTS, &[tenant, user_id]).await? {
            let (at, expires, landmarks) = split_timed_row(&row)?;
            if expires > now {
                let fp = Fingerprint::from_bytes(landmarks)
                    .ok_or_else(|| StoreError::Corrupt("fingerprint length".into()))?;
                rows.push((at, fp));
            }
        }
        rows.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        Ok(rows
            .into_iter()
            .take(limit as usize)
            .map(|(_, fp)| fp)
            .collect())
    }

    async fn biokeys(&self, tenant: &str, user_id: &str) -> Result<Vec<Biokey>, StoreError> {
        self.get(BIOKEYS, key(&[tenant, user_id]))
            .await?
            .map_or(Ok(Vec::new()), |b| decode(&b))
    }

    async fn biokey_owners(
        &self,
        tenant: &str,
        name: &str,
        digest: &str,
    ) -> Result<Vec<String>, StoreError> {
        let (prefix, end) = key_range(&[tenant, name, digest]);
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let t = match tx.open_table(BIOKEY_INDEX) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(unavailable(e)),
            };
            t.range(prefix.as_str()..end.as_str())
                .map_err(unavailable)?
                .map(|entry| {
                    entry
                        .map(|(_, owner)| owner.value().to_string())
                        .map_err(unavailable)
                })
                .collect()
        })
        .await
    }

    async fn diagnostics(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Vec<DiagnosticRecord>, StoreError> {
        let now = now_ms();
        let (prefix, _) = key_range(&[tenant, user_id]);
        let mut records = Vec::new();
        for (k, row) in self.scan(DIAGNOSTICS, &[tenant, user_id]).await? {
            let record = parse_diagnostic_row(&k[prefix.len()..], &row)?;
            if record.expires_at > now {
                records.push(record);
            }
        }
        records.sort_by_key(|r| std::cmp::Reverse(r.at));
        Ok(records)
    }

    async fn watchlist(&self, tenant: &str) -> Result<Vec<WatchlistEntry>, StoreError> {
        self.scan(WATCHLIST, &[tenant])
            .await?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    async fn decision(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(DECISIONS, key(&[tenant, request_id])).await
    }

    async fn recent_decision_ids(
        &self,
        tenant: &str,
        user_id: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let (prefix, end) = key_range(&[tenant, user_id]);
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let t = match tx.open_table(USER_DECISIONS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(unavailable(e)),
            };
            let mut ids = Vec::new();
            for entry in t
                .range(prefix.as_str()..end.as_str())
                .map_err(unavailable)?
                .rev()
                .take(limit as usize)
            {
                let (k, _) = entry.map_err(unavailable)?;
                // The request id is the last part (ids hold no separator).
                let id = k.value().rsplit(SEP).next().unwrap_or_default();
                ids.push(id.to_string());
            }
            Ok(ids)
        })
        .await
    }

    async fn claim_request(
        &self,
        tenant: &str,
        request_id: &str,
        digest: &str,
    ) -> Result<bool, StoreError> {
        let (k, digest) = (key(&[tenant, request_id]), digest.to_string());
        // Write transactions are serialised: the check and the insert are one step.
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            let owned = {
                let mut t = tx.open_table(REQUEST_CLAIMS).map_err(unavailable)?;
                let existing = t
                    .get(k.as_str())
                    .map_err(unavailable)?
                    .map(|v| v.value().to_string());
                match existing {
                    Some(owner) => owner == digest,
                    None => {
                        t.insert(k.as_str(), digest.as_str()).map_err(unavailable)?;
                        true
                    }
                }
            };
            tx.commit().map_err(unavailable)?;
            Ok(owned)
        })
        .await
    }

    async fn commit(&self, commit: &JobCommit) -> Result<(), StoreError> {
        let c = commit.clone();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            {
                let clear = |tables: &[TableDefinition<&str, &[u8]>], user: &str| {
                    let (prefix, end) = key_range(&[&c.tenant, user]);
                    for table in tables {
                        let mut t = tx.open_table(*table).map_err(unavailable)?;
                        t.retain_in(prefix.as_str()..end.as_str(), |_, _| false)
                            .map_err(unavailable)?;
                    }
                    // The retention times go with the audio.
                    if tables.iter().any(|t| t.name() == AUDIO.name()) {
                        tx.open_table(AUDIO_TIMES)
                            .map_err(unavailable)?
                            .retain_in(prefix.as_str()..end.as_str(), |_, _| false)
                            .map_err(unavailable)?;
                    }
                    Ok::<_, StoreError>(())
                };
                let put = |table: TableDefinition<&str, &[u8]>, k: String, v: &[u8]| {
                    tx.open_table(table)
                        .map_err(unavailable)?
                        .insert(k.as_str(), v)
                        .map_err(unavailable)
                        .map(drop)
                };
                for mutation in c.ordered() {
                    match mutation {
                        Mutation::EraseBiometrics { user_id } => {
                            clear(&[VOICEPRINTS, FINGERPRINTS, AUDIO, DIAGNOSTICS], user_id)?;
                        }
                        Mutation::EraseAudio { user_id } => clear(&[AUDIO, DIAGNOSTICS], user_id)?,
                        Mutation::DeleteUser { user_id } => {
                            clear(
                                &[
                                    VOICEPRINTS,
                                    FINGERPRINTS,
                                    AUDIO,
                                    DIAGNOSTICS,
                                    CONSENT,
                                    WATCHLIST,
                                    USER_DECISIONS,
                                ],
                                user_id,
                            )?;
                            tx.open_table(PROFILES)
                                .map_err(unavailable)?
                                .remove(key(&[&c.tenant, user_id]).as_str())
                                .map_err(unavailable)?;
                            replace_biokeys(&tx, &c.tenant, user_id, &[])?;
                        }
                        Mutation::Unwatchlist { user_id } => clear(&[WATCHLIST], user_id)?,
                        Mutation::IndexDecision { user_id, at } => put(
                            USER_DECISIONS,
                            key(&[&c.tenant, user_id, &format!("{at:020}"), &c.request_id]),
                            &[],
                        )?,
                        Mutation::PutRescoreResult(r) => put(
                            RESCORE_RESULTS,
                            key(&[&r.tenant, &r.target_model, &r.user_id]),
                            &encode(r),
                        )?,
                        Mutation::Watchlist(w) => put(
                            WATCHLIST,
                            key(&[&w.tenant, &w.user_id, &w.model_id]),
                            &encode(w),
                        )?,
                        Mutation::PutProfile(p) => {
                            put(PROFILES, key(&[&p.tenant, &p.user_id]), &encode(p))?;
                        }
                        Mutation::PutBiokeys { user_id, biokeys } => {
                            replace_biokeys(&tx, &c.tenant, user_id, biokeys)?;
                        }
                        Mutation::PutVoiceprint(v) => put(
                            VOICEPRINTS,
                            key(&[&v.tenant, &v.user_id, &v.model_id]),
                            &encode(v),
                        )?,
                        Mutation::PutConsent(cs) => put(
                            CONSENT,
                            key(&[&cs.tenant, &cs.user_id, &cs.purpose]),
                            &encode(cs),
                        )?,
                        Mutation::RetainAudio {
                            user_id,
                            wav,
                            at,
                            keep_newest,
                        } => {
                            let k = key(&[&c.tenant, user_id, &c.request_id]);
                            put(AUDIO, k.clone(), wav)?;
                            tx.open_table(AUDIO_TIMES)
                                .map_err(unavailable)?
                                .insert(k.as_str(), *at)
                                .map_err(unavailable)?;
                            prune_audio(&tx, &c.tenant, user_id, *keep_newest)?;
                        }
                        Mutation::KeepFingerprint {
                            user_id,
                            landmarks,
                            at,
                            ttl_secs,
                            keep_newest,
                        } => {
                            let expires = at.saturating_add(i64::from(*ttl_secs) * 1_000);
                            let mut row = Vec::with_capacity(16 + landmarks.len());
                            row.extend_from_slice(&at.to_le_bytes());
                            row.extend_from_slice(&expires.to_le_bytes());
                            row.extend_from_slice(landmarks);
                            put(
                                FINGERPRINTS,
                                key(&[&c.tenant, user_id, &c.request_id]),
                                &row,
                            )?;
                            prune_fingerprints(&tx, &c.tenant, user_id, *at, *keep_newest)?;
                        }
                        Mutation::KeepDiagnostics {
                            user_id,
                            job,
                            wav,
                            at,
                            ttl_secs,
                        } => {
                            let expires = at.saturating_add(i64::from(*ttl_secs) * 1_000);
                            put(
                                DIAGNOSTICS,
                                key(&[&c.tenant, user_id, &c.request_id]),
                                &diagnostic_row(*at, expires, job, &c.decision, wav),
                            )?;
                            prune_diagnostics(&tx, *at)?;
                        }
                    }
                }
                let mut t = tx.open_table(DECISIONS).map_err(unavailable)?;
                t.insert(
                    key(&[&c.tenant, &c.request_id]).as_str(),
                    c.decision.as_slice(),
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn impostor_tails(
        &self,
        tenant: &str,
        model_id: &str,
    ) -> Result<Option<TenantTails>, StoreError> {
        self.get(IMPOSTOR_TAILS, key(&[tenant, model_id]))
            .await?
            .map(|b| stored_tails(&b))
            .transpose()
    }

    async fn put_impostor_tails(
        &self,
        tenant: &str,
        model_id: &str,
        tails: &TenantTails,
    ) -> Result<(), StoreError> {
        self.put(IMPOSTOR_TAILS, key(&[tenant, model_id]), tails.encode())
            .await
    }

    async fn tenant_model(&self, tenant: &str) -> Result<Option<TenantModel>, StoreError> {
        self.get(TENANT_MODELS, tenant.to_string())
            .await?
            .map(|b| decode(&b))
            .transpose()
    }

    async fn put_tenant_model(&self, model: &TenantModel) -> Result<(), StoreError> {
        self.put(TENANT_MODELS, model.tenant.clone(), encode(model))
            .await
    }

    async fn users(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, ProfileStatus)>, StoreError> {
        self.page_map(PROFILES, &[tenant], after, limit, |_, v| {
            decode::<Profile>(v).map(|p| (p.user_id, p.status))
        })
        .await?
        .into_iter()
        .collect()
    }

    async fn rescore_run(
        &self,
        tenant: &str,
        target_model: &str,
    ) -> Result<Option<RescoreRun>, StoreError> {
        self.get(RESCORE_RUNS, key(&[tenant, target_model]))
            .await?
            .map(|b| decode(&b))
            .transpose()
    }

    async fn put_rescore_run(&self, run: &RescoreRun) -> Result<(), StoreError> {
        self.put(
            RESCORE_RUNS,
            key(&[&run.tenant, &run.target_model]),
            encode(run),
        )
        .await
    }

    async fn rescore_results(
        &self,
        tenant: &str,
        target_model: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RescoreResult>, StoreError> {
        self.page_map(
            RESCORE_RESULTS,
            &[tenant, target_model],
            after,
            limit,
            |_, v| decode(v),
        )
        .await?
        .into_iter()
        .collect()
    }

    async fn delete_voiceprint(
        &self,
        tenant: &str,
        user_id: &str,
        model_id: &str,
    ) -> Result<(), StoreError> {
        let k = key(&[tenant, user_id, model_id]);
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            tx.open_table(VOICEPRINTS)
                .map_err(unavailable)?
                .remove(k.as_str())
                .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|db| db.begin_read().map(drop).map_err(unavailable))
            .await
    }
}

impl FileStore {
    /// Replaces (`Some`) or deletes (`None`) a key of `tenant` in one write
    /// transaction; false when the tenant has no such key.
    async fn change_api_key(
        &self,
        tenant: &str,
        key_id: &str,
        change: impl FnOnce(ApiKey) -> Option<ApiKey> + Send + 'static,
    ) -> Result<bool, StoreError> {
        let (tenant, key_id) = (tenant.to_string(), key_id.to_string());
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            {
                let mut t = tx.open_table(API_KEYS).map_err(unavailable)?;
                let stored = t
                    .get(key_id.as_str())
                    .map_err(unavailable)?
                    .map(|v| decode::<ApiKey>(v.value()))
                    .transpose()?;
                let Some(stored) = stored.filter(|k| k.tenant == tenant) else {
                    return Ok(false);
                };
                match change(stored) {
                    Some(k) => t
                        .insert(key_id.as_str(), encode(&k).as_slice())
                        .map(drop)
                        .map_err(unavailable)?,
                    None => t.remove(key_id.as_str()).map(drop).map_err(unavailable)?,
                }
            }
            tx.commit().map_err(unavailable)?;
            Ok(true)
        })
        .await
    }
}

#[async_trait]
impl AccessStore for FileStore {
    async fn put_api_key(&self, api_key: &ApiKey) -> Result<(), StoreError> {
        self.put(API_KEYS, api_key.key_id.clone(), encode(api_key))
            .await
    }

    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKey>, StoreError> {
        self.get(API_KEYS, key_id.to_string())
            .await?
            .map(|b| decode(&b))
            .transpose()
    }

    async fn api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>, StoreError> {
        let tenant = tenant.to_string();
        // Keys are few; the embedded store reads them all and filters.
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let t = match tx.open_table(API_KEYS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(unavailable(e)),
            };
            let mut keys = Vec::new();
            for entry in t.iter().map_err(unavailable)? {
                let (_, v) = entry.map_err(unavailable)?;
                let k: ApiKey = decode(v.value())?;
                if k.tenant == tenant {
                    keys.push(k);
                }
            }
            keys.sort_by_key(|k| k.created_at);
            Ok(keys)
        })
        .await
    }

    async fn set_api_key_enabled(
        &self,
        tenant: &str,
        key_id: &str,
        enabled: bool,
    ) -> Result<bool, StoreError> {
        self.change_api_key(tenant, key_id, move |k| Some(ApiKey { enabled, ..k }))
            .await
    }

    async fn modify_api_key(
        &self,
        tenant: &str,
        key_id: &str,
        enabled: bool,
        retain_data: bool,
    ) -> Result<bool, StoreError> {
        self.change_api_key(tenant, key_id, move |k| {
            Some(ApiKey {
                enabled,
                retain_data,
                ..k
            })
        })
        .await
    }

    async fn delete_api_key(&self, tenant: &str, key_id: &str) -> Result<bool, StoreError> {
        self.change_api_key(tenant, key_id, |_| None).await
    }

    async fn count_requests(
        &self,
        counted: &str,
        minute: i64,
        replica: &str,
        admitted: i64,
    ) -> Result<i64, StoreError> {
        let row = key(&[counted, replica]);
        let (prefix, end) = key_range(&[counted]);
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            let total = {
                let mut t = tx.open_table(RATE_COUNTS).map_err(unavailable)?;
                t.insert(row.as_str(), encode(&(minute, admitted)).as_slice())
                    .map_err(unavailable)?;
                let (mut total, mut stale) = (0, Vec::new());
                for entry in t
                    .range(prefix.as_str()..end.as_str())
                    .map_err(unavailable)?
                {
                    let (k, v) = entry.map_err(unavailable)?;
                    let (m, n): (i64, i64) = decode(v.value())?;
                    if m < minute - 2 {
                        // Gone replicas' rows (a restart names a new one)
                        // and one-off client-token buckets under this one,
                        // as the CQL table's TTL lets them go.
                        stale.push(k.value().to_string());
                    } else if m == minute && !k.value()[prefix.len()..].contains(SEP) {
                        // `counted␟replica` only: a bucket named with this
                        // one in front (a key's client tokens) is another.
                        total += n;
                    }
                }
                for k in stale {
                    t.remove(k.as_str()).map_err(unavailable)?;
                }
                total
            };
            tx.commit().map_err(unavailable)?;
            Ok(total)
        })
        .await
    }

    async fn put_session(&self, session: &ChallengeSession) -> Result<(), StoreError> {
        let k = key(&[&session.tenant, &session.session_id]);
        let v = encode(session);
        let now = now_ms();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            {
                let mut t = tx.open_table(SESSIONS).map_err(unavailable)?;
                // Expired sessions are pruned here; challenges live minutes
                // and call sessions an hour, so the table stays small.
                t.retain(|_, v| {
                    serde_json::from_slice::<ChallengeSession>(v).is_ok_and(|s| s.expires_at > now)
                })
                .map_err(unavailable)?;
                t.insert(k.as_str(), v.as_slice()).map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn take_session(
        &self,
        tenant: &str,
        session_id: &str,
        now: i64,
    ) -> Result<Option<ChallengeSession>, StoreError> {
        let k = key(&[tenant, session_id]);
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            let taken = tx
                .open_table(SESSIONS)
                .map_err(unavailable)?
                .remove(k.as_str())
                .map_err(unavailable)?
                .map(|v| decode::<ChallengeSession>(v.value()))
                .transpose()?;
            tx.commit().map_err(unavailable)?;
            Ok(taken.filter(|s| s.expires_at > now))
        })
        .await
    }

    async fn spend_token(&self, jti: &str, expires_at: i64) -> Result<bool, StoreError> {
        let jti = jti.to_string();
        let now = crate::domain::now_ms();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            let first = {
                let mut t = tx.open_table(SPENT_TOKENS).map_err(unavailable)?;
                t.retain(|_, expiry| expiry > now).map_err(unavailable)?;
                t.insert(jti.as_str(), expires_at)
                    .map_err(unavailable)?
                    .is_none()
            };
            tx.commit().map_err(unavailable)?;
            Ok(first)
        })
        .await
    }

    async fn add_usage(
        &self,
        tenant: &str,
        key_id: &str,
        day: &str,
        counts: &[(String, i64)],
    ) -> Result<(), StoreError> {
        let keys: Vec<(String, i64)> = counts
            .iter()
            .map(|(metric, n)| (key(&[tenant, key_id, day, metric]), *n))
            .collect();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            {
                let mut t = tx.open_table(USAGE).map_err(unavailable)?;
                for (k, n) in keys {
                    let current = t
                        .get(k.as_str())
                        .map_err(unavailable)?
                        .map_or(0, |v| v.value());
                    t.insert(k.as_str(), current + n).map_err(unavailable)?;
                }
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn usage(&self, tenant: &str, key_id: &str) -> Result<Vec<UsageCount>, StoreError> {
        let (prefix, end) = key_range(&[tenant, key_id]);
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let t = match tx.open_table(USAGE) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(unavailable(e)),
            };
            let mut out = Vec::new();
            for entry in t
                .range(prefix.as_str()..end.as_str())
                .map_err(unavailable)?
            {
                let (k, v) = entry.map_err(unavailable)?;
                let mut parts = k.value().rsplitn(3, SEP);
                let metric = parts.next().unwrap_or_default().to_string();
                let day = parts.next().unwrap_or_default().to_string();
                out.push(UsageCount {
                    day,
                    metric,
                    count: v.value(),
                });
            }
            Ok(out)
        })
        .await
    }
}
