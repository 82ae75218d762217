//! [`Store`] on CQL: profiles, voiceprints, consent, audio, decisions,
//! watchlist, tenant models and re-scoring runs.

use async_trait::async_trait;
use scylla::statement::batch::{Batch, BatchType};
use scylla::value::{CqlTimestamp, CqlValue};

use super::migrations::{DECISION_TTL_SECONDS, MIGRATIONS};
use super::{
    CqlStore, blob_to_embedding, corrupt, embedding_to_blob, store_error, text, ts, unavailable,
};
use crate::domain::impostor_tail::TenantTails;
use crate::domain::{
    Consent, DiagnosticRecord, JobCommit, Mutation, Profile, ProfileStatus, RescoreResult,
    RescoreRun, RunState, TenantModel, Voiceprint, WatchlistEntry, now_ms,
};
use crate::liveness::Fingerprint;
use crate::ports::{Store, StoreError, stored_tails};
use timbre_schemas::Biokey;

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

#[async_trait]
impl Store for CqlStore {
    async fn migrate(&self) -> Result<u32, StoreError> {
        let ks = &self.config.keyspace;
        let replication = self.config.replication.cql();
        let ddl = |q: String| async move {
            match self.session.query_unpaged(q.as_str(), &[]).await {
                // A migration cut off after its ALTER ran, done again: the
                // column is there (Cassandra / ScyllaDB wording).
                Err(e)
                    if q.starts_with("ALTER TABLE")
                        && (e.to_string().contains("already exist")
                            || e.to_string().contains("conflicts with an existing column")) =>
                {
                    Ok(())
                }
                r => r.map(drop).map_err(unavailable),
            }
        };
        ddl(format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {replication}"
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

    async fn retained_audio_ids(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let s = self.statements().await?;
        let rows: Vec<(String,)> = self.all(&s.audio_ids, (tenant, user_id)).await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn retained_audio(
        &self,
        tenant: &str,
        user_id: &str,
        request_id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let s = self.statements().await?;
        let row: Option<(Vec<u8>,)> = self.one(&s.audio, (tenant, user_id, request_id)).await?;
        Ok(row.map(|(wav,)| wav))
    }

    async fn fingerprints(
        &self,
        tenant: &str,
        user_id: &str,
        limit: u32,
    ) -> Result<Vec<Fingerprint>, StoreError> {
        let s = self.statements().await?;
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows: Vec<(Vec<u8>,)> = self.all(&s.fingerprints, (tenant, user_id, limit)).await?;
        rows.into_iter()
            .map(|(landmarks,)| {
                Fingerprint::from_bytes(&landmarks).ok_or_else(|| corrupt("fingerprint length"))
            })
            .collect()
    }

    async fn biokeys(&self, tenant: &str, user_id: &str) -> Result<Vec<Biokey>, StoreError> {
        let s = self.statements().await?;
        let rows: Vec<(Option<String>,)> = self.all(&s.biokeys, (tenant, user_id)).await?;
        match rows.into_iter().next() {
            Some((Some(json),)) => serde_json::from_str(&json).map_err(corrupt),
            _ => Ok(Vec::new()),
        }
    }

    async fn biokey_owners(
        &self,
        tenant: &str,
        name: &str,
        digest: &str,
    ) -> Result<Vec<String>, StoreError> {
        let s = self.statements().await?;
        let rows: Vec<(String,)> = self.all(&s.biokey_owners, (tenant, name, digest)).await?;
        Ok(rows.into_iter().map(|(user,)| user).collect())
    }

    async fn diagnostics(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Vec<DiagnosticRecord>, StoreError> {
        let s = self.statements().await?;
        type Row = (String, String, CqlTimestamp, CqlTimestamp, Vec<u8>, Vec<u8>);
        let rows: Vec<Row> = self.all(&s.diagnostics, (tenant, user_id)).await?;
        let mut records: Vec<DiagnosticRecord> = rows
            .into_iter()
            .map(
                |(request_id, job, at, expires, wav, decision)| DiagnosticRecord {
                    request_id,
                    job,
                    at: at.0,
                    expires_at: expires.0,
                    wav,
                    decision,
                },
            )
            .collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.at));
        Ok(records)
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

    async fn recent_decision_ids(
        &self,
        tenant: &str,
        user_id: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let s = self.statements().await?;
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows: Vec<(String,)> = self
            .all(&s.user_decisions, (tenant, user_id, limit))
            .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn claim_request(
        &self,
        tenant: &str,
        request_id: &str,
        digest: &str,
    ) -> Result<bool, StoreError> {
        let s = self.statements().await?;
        let result = self
            .session
            .execute_unpaged(&s.claim_request, (tenant, request_id, digest))
            .await
            .map_err(store_error)?;
        // A lightweight transaction that did not apply returns the existing
        // row next to `[applied]`.
        let rows = result.into_rows_result().map_err(corrupt)?;
        let digest_at = rows
            .column_specs()
            .iter()
            .position(|c| c.name() == "digest");
        let row = rows.first_row::<scylla::value::Row>().map_err(corrupt)?;
        match (row.columns.first(), digest_at) {
            (Some(Some(CqlValue::Boolean(true))), _) => Ok(true),
            (Some(Some(CqlValue::Boolean(false))), Some(i)) => match row.columns.get(i) {
                Some(Some(CqlValue::Text(owner))) => Ok(owner == digest),
                other => Err(corrupt(format!("request claim without digest: {other:?}"))),
            },
            other => Err(corrupt(format!("lwt result without [applied]: {other:?}"))),
        }
    }

    async fn commit(&self, c: &JobCommit) -> Result<(), StoreError> {
        let s = self.statements().await?;
        // Lookup entries are keyed by identifier, so replacing or erasing a
        // set deletes the entries of the set it replaces: read it first.
        let mut previous_biokeys = std::collections::HashMap::new();
        for m in &c.mutations {
            if let Mutation::PutBiokeys { user_id, .. } | Mutation::DeleteUser { user_id } = m {
                previous_biokeys.insert(user_id.clone(), self.biokeys(&c.tenant, user_id).await?);
            }
        }
        let mut batch = Batch::new(BatchType::Logged);
        let mut values: Vec<Vec<CqlValue>> = Vec::new();
        // Older recordings go once the batch has applied: pruned before it,
        // a batch that then failed (or a job that gave up) would have lost
        // a recording for nothing.
        let mut prune_after: Vec<(&str, u32)> = Vec::new();
        let mut add = |statement: &scylla::statement::prepared::PreparedStatement,
                       row: Vec<CqlValue>| {
            batch.append_statement(statement.clone());
            values.push(row);
        };
        let user_row = |user: &str| vec![text(&c.tenant), text(user)];
        for mutation in c.ordered() {
            match mutation {
                Mutation::EraseBiometrics { user_id } => {
                    for stmt in [
                        &s.erase_voiceprints,
                        &s.erase_fingerprints,
                        &s.erase_audio,
                        &s.erase_diagnostics,
                    ] {
                        add(stmt, user_row(user_id));
                    }
                }
                Mutation::EraseAudio { user_id } => {
                    add(&s.erase_audio, user_row(user_id));
                    add(&s.erase_diagnostics, user_row(user_id));
                }
                Mutation::DeleteUser { user_id } => {
                    for stmt in [
                        &s.erase_voiceprints,
                        &s.erase_fingerprints,
                        &s.erase_audio,
                        &s.erase_diagnostics,
                        &s.delete_consent,
                        &s.remove_watchlist,
                        &s.delete_profile,
                        &s.models.delete_user,
                        &s.delete_biokeys,
                        &s.delete_user_decisions,
                    ] {
                        add(stmt, user_row(user_id));
                    }
                    for k in previous_biokeys.get(user_id).into_iter().flatten() {
                        add(&s.delete_biokey_owner, biokey_row(&c.tenant, k, user_id));
                    }
                }
                Mutation::PutBiokeys { user_id, biokeys } => {
                    let kept = |k: &Biokey| {
                        biokeys
                            .iter()
                            .any(|n| n.key == k.key && n.digest == k.digest)
                    };
                    for k in previous_biokeys.get(user_id).into_iter().flatten() {
                        if !kept(k) {
                            add(&s.delete_biokey_owner, biokey_row(&c.tenant, k, user_id));
                        }
                    }
                    for k in biokeys {
                        add(&s.put_biokey_owner, biokey_row(&c.tenant, k, user_id));
                    }
                    let set = serde_json::to_string(biokeys).map_err(corrupt)?;
                    add(
                        &s.put_biokeys,
                        vec![text(&c.tenant), text(user_id), text(&set)],
                    );
                }
                Mutation::Unwatchlist { user_id } => add(&s.remove_watchlist, user_row(user_id)),
                Mutation::IndexDecision { user_id, at } => add(
                    &s.put_user_decision,
                    vec![text(&c.tenant), text(user_id), ts(*at), text(&c.request_id)],
                ),
                Mutation::PutRescoreResult(r) => add(
                    &s.models.put_result,
                    vec![
                        text(&r.tenant),
                        text(&r.target_model),
                        text(&r.user_id),
                        CqlValue::Boolean(r.ok),
                        text(&r.detail),
                        ts(r.updated_at),
                    ],
                ),
                Mutation::Watchlist(w) => add(
                    &s.put_watchlist,
                    vec![
                        text(&w.tenant),
                        text(&w.user_id),
                        text(&w.model_id),
                        CqlValue::Blob(embedding_to_blob(&w.embedding)),
                        text(&w.reason),
                        ts(w.added_at),
                    ],
                ),
                Mutation::PutProfile(p) => {
                    // The per-tenant index that re-scoring pages through.
                    add(
                        &s.models.put_user,
                        vec![text(&p.tenant), text(&p.user_id), text(p.status.as_str())],
                    );
                    add(
                        &s.put_profile,
                        vec![
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
                        ],
                    );
                }
                Mutation::PutVoiceprint(v) => add(
                    &s.put_voiceprint,
                    vec![
                        text(&v.tenant),
                        text(&v.user_id),
                        text(&v.model_id),
                        CqlValue::Blob(embedding_to_blob(&v.embedding)),
                        CqlValue::Float(v.weight),
                        ts(v.updated_at),
                    ],
                ),
                Mutation::PutConsent(cs) => add(
                    &s.put_consent,
                    vec![
                        text(&cs.tenant),
                        text(&cs.user_id),
                        text(&cs.purpose),
                        CqlValue::Boolean(cs.granted),
                        CqlValue::Boolean(cs.retain_audio),
                        ts(cs.updated_at),
                    ],
                ),
                Mutation::RetainAudio {
                    user_id,
                    wav,
                    at: _,
                    keep_newest,
                } => {
                    // Audio is far over Cassandra's batch size limit (50 KiB
                    // by default), so it is written on its own, before the
                    // batch. The write is idempotent (keyed by request id);
                    // if the batch then fails, the job is retried and
                    // rewrites the same row.
                    self.session
                        .execute_unpaged(&s.put_audio, (&c.tenant, user_id, &c.request_id, wav))
                        .await
                        .map_err(store_error)?;
                    prune_after.push((user_id, *keep_newest));
                }
                Mutation::KeepDiagnostics {
                    user_id,
                    job,
                    wav,
                    at,
                    ttl_secs,
                } => {
                    // Audio: written on its own, before the batch, like
                    // retained audio; idempotent by request id. The decision
                    // is the one this commit records.
                    let ttl = i32::try_from(*ttl_secs).unwrap_or(i32::MAX);
                    let expires = at.saturating_add(i64::from(*ttl_secs) * 1_000);
                    self.session
                        .execute_unpaged(
                            &s.put_diagnostic,
                            (
                                &c.tenant,
                                user_id,
                                &c.request_id,
                                job,
                                CqlTimestamp(*at),
                                CqlTimestamp(expires),
                                wav,
                                &c.decision,
                                ttl,
                            ),
                        )
                        .await
                        .map_err(store_error)?;
                }
                Mutation::KeepFingerprint {
                    user_id,
                    landmarks,
                    at,
                    ttl_secs,
                    keep_newest: _,
                } => {
                    // Like audio, too large for a batch at a minute of
                    // speech; idempotent by request id. Older rows age out
                    // by TTL; reads take the newest `keep_newest`.
                    let ttl = i32::try_from(*ttl_secs).unwrap_or(i32::MAX);
                    self.session
                        .execute_unpaged(
                            &s.put_fingerprint,
                            (
                                &c.tenant,
                                user_id,
                                CqlTimestamp(*at),
                                &c.request_id,
                                landmarks,
                                ttl,
                            ),
                        )
                        .await
                        .map_err(store_error)?;
                }
            }
        }
        add(
            &s.put_decision,
            vec![
                text(&c.tenant),
                text(&c.request_id),
                CqlValue::Blob(c.decision.clone()),
            ],
        );
        self.session
            .batch(&batch, values)
            .await
            .map_err(store_error)?;
        for (user_id, keep) in prune_after {
            // Housekeeping after the commit: a failure leaves one recording
            // too many until the user's next retained sample prunes again.
            if let Err(e) = self.prune_audio(s, &c.tenant, user_id, keep).await {
                tracing::warn!(error = %e, "pruning retained audio failed");
            }
        }
        Ok(())
    }

    async fn impostor_tails(
        &self,
        tenant: &str,
        model_id: &str,
    ) -> Result<Option<TenantTails>, StoreError> {
        let s = &self.statements().await?.models;
        let row = self
            .one::<(Vec<u8>,)>(&s.impostor_tails, (tenant, model_id))
            .await?;
        row.map(|(bytes,)| stored_tails(&bytes)).transpose()
    }

    async fn put_impostor_tails(
        &self,
        tenant: &str,
        model_id: &str,
        tails: &TenantTails,
    ) -> Result<(), StoreError> {
        let s = &self.statements().await?.models;
        self.exec(
            &s.put_impostor_tails,
            (tenant, model_id, tails.encode(), CqlTimestamp(now_ms())),
        )
        .await
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
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RescoreResult>, StoreError> {
        let s = &self.statements().await?.models;
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        type Row = (String, bool, String, CqlTimestamp);
        let rows: Vec<Row> = match after {
            Some(a) => {
                self.all(&s.results_after, (tenant, target_model, a, limit))
                    .await?
            }
            None => self.all(&s.results, (tenant, target_model, limit)).await?,
        };
        Ok(rows
            .into_iter()
            .map(|(user_id, ok, detail, updated)| RescoreResult {
                tenant: tenant.to_string(),
                target_model: target_model.to_string(),
                user_id,
                ok,
                detail,
                updated_at: updated.0,
            })
            .collect())
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

/// The key columns of a user's lookup entry of an identifier.
fn biokey_row(tenant: &str, k: &Biokey, user_id: &str) -> Vec<CqlValue> {
    vec![text(tenant), text(&k.key), text(&k.digest), text(user_id)]
}
