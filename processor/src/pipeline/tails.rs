//! Each tenant's impostor tails (`domain::impostor_tail`), gathered from
//! its verifications: every accepted probe is also scored against a few of
//! the tenant's other voiceprints, and those zero-effort impostor LLRs show
//! where the tenant's own tail lies. Kept in memory per tenant and model,
//! read from the store on first use and saved with the first accepted
//! verification `save_every` (30 s) or more after the last save, so a
//! restart or a new processor starts where the tenant was, less at most the
//! last 30 s of trials. Processors serving one tenant each save their own
//! view (what they read plus what they counted): the last save wins, and
//! the stored tail is a sample of the tenant's trials rather than all of
//! them, which is all a quantile needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::calibration::{Band, ScoreNorm};
use crate::domain::impostor_tail::{TenantTails, spread};
use crate::ports::{Store, StoreError};

/// Tenants idle this long leave memory (their tails are in the store).
const IDLE: Duration = Duration::from_secs(3_600);

/// Settings of the tenant impostor tails.
#[derive(Debug, Clone, Copy)]
pub struct TailSettings {
    /// Tenant voiceprints each verification's probe is scored against for
    /// the tail (0: off, the bundled lines alone). Each costs about one
    /// normalised score (~50 µs).
    pub per_verification: usize,
    /// How often a tenant's tails that counted new trials are saved.
    pub save_every: Duration,
}

impl Default for TailSettings {
    fn default() -> Self {
        Self {
            per_verification: 20,
            save_every: Duration::from_secs(30),
        }
    }
}

struct Entry {
    tails: Arc<TenantTails>,
    used_at: Instant,
    saved_at: Instant,
}

/// The tails of every tenant and model this processor has verified for.
pub(super) struct ImpostorTails {
    settings: TailSettings,
    map: Mutex<HashMap<(String, String), Entry>>,
}

/// Tails due to be saved: the tenant, the model and the snapshot.
pub(super) type DueSave = (String, String, Arc<TenantTails>);

impl ImpostorTails {
    pub(super) fn new(settings: TailSettings) -> Self {
        Self {
            settings,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's tails as they stand, read from the store the first time
    /// (none when the feature is off). Unreadable stored tails are replaced
    /// by fresh ones: they only ever tighten lines, and the next save
    /// overwrites them.
    pub(super) async fn get(
        &self,
        store: &dyn Store,
        tenant: &str,
        model_id: &str,
        scale: u64,
    ) -> Result<Option<Arc<TenantTails>>, StoreError> {
        if self.settings.per_verification == 0 {
            return Ok(None);
        }
        let key = (tenant.to_string(), model_id.to_string());
        if let Some(entry) = self.map().get_mut(&key) {
            entry.used_at = Instant::now();
            return Ok(Some(entry.tails.clone()));
        }
        let fresh = TenantTails {
            scale,
            ..TenantTails::default()
        };
        let stored = match store.impostor_tails(tenant, model_id).await {
            Ok(Some(t)) if t.scale == scale => t,
            Ok(Some(_)) => {
                tracing::info!(
                    tenant,
                    "stored impostor tails are of another calibration, starting afresh"
                );
                fresh
            }
            Ok(None) => fresh,
            Err(StoreError::Corrupt(e)) => {
                tracing::warn!(tenant, error = %e, "stored impostor tails unreadable, starting afresh");
                fresh
            }
            Err(e) => return Err(e),
        };
        let mut map = self.map();
        // An idle tenant's unsaved counts (under `save_every` of them) go
        // with it: the tail is a sample, and memory stays bounded.
        map.retain(|_, e| e.used_at.elapsed() < IDLE);
        let now = Instant::now();
        // Another job of the tenant may have read it meanwhile: keep theirs.
        let entry = map.entry(key).or_insert_with(|| Entry {
            tails: Arc::new(stored),
            used_at: now,
            saved_at: now,
        });
        Ok(Some(entry.tails.clone()))
    }

    /// Scores an accepted `probe` of the `claimed` voiceprint against a
    /// spread of `voiceprints` (the tenant's, none of them the claimed
    /// user's) and counts the LLRs in the tenant's tail of `band`. `seed`
    /// picks where the spread starts, so the tail sees the whole sample
    /// over many verifications. Returns the trials counted, and the tails
    /// when they are due to be saved.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record(
        &self,
        score_norm: &ScoreNorm,
        key: (&str, &str),
        band: Band,
        claimed: &[f32],
        probe: &[f32],
        probe_speech_millis: u64,
        voiceprints: &[&[f32]],
        seed: u64,
    ) -> (usize, Option<DueSave>) {
        let picked = spread(voiceprints.len(), self.settings.per_verification, seed);
        if picked.is_empty() {
            return (0, None);
        }
        let llrs: Vec<f32> = score_norm
            .impostor_llrs(
                band,
                claimed,
                probe,
                probe_speech_millis,
                voiceprints,
                &picked,
            )
            .into_iter()
            .filter(|l| l.is_finite())
            .collect();
        if llrs.is_empty() {
            return (0, None);
        }
        let mut map = self.map();
        let now = Instant::now();
        // An entry evicted since `get` read it is not recreated empty: its
        // first save would overwrite the stored tail.
        let Some(entry) = map.get_mut(&(key.0.to_string(), key.1.to_string())) else {
            return (0, None);
        };
        let tail = Arc::make_mut(&mut entry.tails).band_mut(band);
        for &llr in &llrs {
            tail.record(llr);
        }
        let due = (entry.saved_at.elapsed() >= self.settings.save_every).then(|| {
            entry.saved_at = now;
            (key.0.to_string(), key.1.to_string(), entry.tails.clone())
        });
        (llrs.len(), due)
    }

    /// A save of the tenant's tails failed: the next accepted verification
    /// retries it.
    pub(super) fn save_failed(&self, tenant: &str, model_id: &str) {
        let save_every = self.settings.save_every;
        if let Some(entry) = self
            .map()
            .get_mut(&(tenant.to_string(), model_id.to_string()))
            && let Some(due) = Instant::now().checked_sub(save_every)
        {
            entry.saved_at = due;
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}
