//! Each tenant's voiceprints that join the score-normalisation cohort: a
//! sample of up to `size` enrolled voiceprints per tenant and model, read
//! from the store and kept for `refresh`. They bring the tenant's own
//! population (its language, channel, microphones) into AS-norm, which is
//! what makes one LLR threshold mean the same false-accept rate across
//! tenants (README, "Calibrated scores"). An erased user's voiceprint can
//! stay in a cached sample until its refresh: it only ever stands for "some
//! other voice of this tenant", never for the user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::ProfileStatus;
use crate::ports::{Store, StoreError};

/// Voiceprints of one tenant under one model, by user id.
pub(super) type TenantCohort = Arc<Vec<(String, Vec<f32>)>>;

/// Settings of the tenant cohorts.
#[derive(Debug, Clone, Copy)]
pub struct CohortSettings {
    /// Voiceprints per tenant and model (0: none, the bundled cohort only).
    pub size: usize,
    /// How long a tenant's sample is used before it is read again.
    pub refresh: Duration,
}

impl Default for CohortSettings {
    fn default() -> Self {
        Self {
            size: 200,
            refresh: Duration::from_secs(300),
        }
    }
}

/// Cached tenant cohorts.
pub(super) struct TenantCohorts {
    settings: CohortSettings,
    cache: Mutex<HashMap<(String, String), (Instant, TenantCohort)>>,
}

/// Store reads run this many at once while a cohort loads.
const READS_AT_ONCE: usize = 16;

impl TenantCohorts {
    pub(super) fn new(settings: CohortSettings) -> Self {
        Self {
            settings,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's cohort under `model_id`, read from the store when absent
    /// or older than the refresh interval.
    pub(super) async fn get(
        &self,
        store: &dyn Store,
        tenant: &str,
        model_id: &str,
    ) -> Result<TenantCohort, StoreError> {
        let key = (tenant.to_string(), model_id.to_string());
        if let Some((at, cohort)) = self.map().get(&key)
            && at.elapsed() < self.settings.refresh
        {
            return Ok(cohort.clone());
        }
        // Jobs of one tenant that find its entry stale at the same moment
        // each read it; the reads are bounded (`size` voiceprints) and the
        // last one wins.
        let cohort = Arc::new(self.load(store, tenant, model_id).await?);
        tracing::debug!(tenant, voiceprints = cohort.len(), "tenant cohort loaded");
        let refresh = self.settings.refresh;
        let mut map = self.map();
        // Tenants that stopped verifying leave no entry behind.
        map.retain(|_, (at, _)| at.elapsed() < refresh);
        map.insert(key, (Instant::now(), cohort.clone()));
        Ok(cohort)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (Instant, TenantCohort)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first `size` enrolled users' voiceprints, in user id order: ids
    /// are opaque to the engine, so their order is as good as a sample.
    async fn load(
        &self,
        store: &dyn Store,
        tenant: &str,
        model_id: &str,
    ) -> Result<Vec<(String, Vec<f32>)>, StoreError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        while out.len() < self.settings.size {
            let page = store
                .users(tenant, after.as_deref(), self.settings.size.max(1))
                .await?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            let enrolled: Vec<String> = page
                .into_iter()
                .filter(|(_, status)| *status == ProfileStatus::Enrolled)
                .map(|(user, _)| user)
                .collect();
            for chunk in enrolled.chunks(READS_AT_ONCE) {
                let reads = chunk
                    .iter()
                    .map(|user| store.voiceprint(tenant, user, model_id));
                for (user, read) in chunk.iter().zip(futures::future::join_all(reads).await) {
                    if let Some(v) = read? {
                        out.push((user.clone(), v.embedding));
                    }
                }
            }
        }
        out.truncate(self.settings.size);
        Ok(out)
    }
}
