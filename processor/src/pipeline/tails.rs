//! Each tenant's impostor tails (`domain::impostor_tail`), gathered from
//! its verifications: every scored probe is also scored against a few of
//! the tenant's other voiceprints, and those zero-effort impostor LLRs show
//! where the tenant's own tail lies. Held in this processor's memory per
//! tenant and model (a restart starts from the bundled lines again); each
//! processor learns from the share of the tenant's traffic it serves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::calibration::{Band, ScoreNorm};
use crate::domain::impostor_tail::TenantTails;

/// Settings of the tenant impostor tails.
#[derive(Debug, Clone, Copy)]
pub struct TailSettings {
    /// Tenant voiceprints each verification's probe is scored against for
    /// the tail (0: off, the bundled lines alone). Each costs about one
    /// normalised score (~50 µs).
    pub per_verification: usize,
}

impl Default for TailSettings {
    fn default() -> Self {
        Self {
            per_verification: 20,
        }
    }
}

/// The tails of every tenant and model this processor has verified for.
pub(super) struct ImpostorTails {
    settings: TailSettings,
    map: Mutex<HashMap<(String, String), Arc<TenantTails>>>,
}

impl ImpostorTails {
    pub(super) fn new(settings: TailSettings) -> Self {
        Self {
            settings,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's tails as they stand (none when the feature is off).
    pub(super) fn get(&self, tenant: &str, model_id: &str) -> Option<Arc<TenantTails>> {
        if self.settings.per_verification == 0 {
            return None;
        }
        let key = (tenant.to_string(), model_id.to_string());
        Some(self.map().get(&key).cloned().unwrap_or_default())
    }

    /// Scores `probe` against a spread of `tenant` (which holds no
    /// voiceprint of the claimed user) and counts the LLRs in the tenant's
    /// tail of `band`. `seed` picks where the spread starts, so the tail
    /// sees the whole sample over many verifications. Returns the trials
    /// counted.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record(
        &self,
        score_norm: &ScoreNorm,
        key: (&str, &str),
        band: Band,
        probe: &[f32],
        probe_speech_millis: u64,
        tenant: &[&[f32]],
        seed: u64,
    ) -> usize {
        let picked = spread(tenant.len(), self.settings.per_verification, seed);
        if picked.is_empty() {
            return 0;
        }
        let llrs = score_norm.impostor_llrs(band, probe, probe_speech_millis, tenant, &picked);
        let mut map = self.map();
        let tails = map
            .entry((key.0.to_string(), key.1.to_string()))
            .or_default();
        let tail = Arc::make_mut(tails).band_mut(band);
        for &llr in &llrs {
            tail.record(llr);
        }
        llrs.len()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<TenantTails>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Up to `count` indices below `len`, evenly spaced from an offset given by
/// `seed`.
fn spread(len: usize, count: usize, seed: u64) -> Vec<usize> {
    if len == 0 || count == 0 {
        return Vec::new();
    }
    let count = count.min(len);
    let start = (seed % len as u64) as usize;
    (0..count)
        .map(|i| (start + i * len / count) % len)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn a_spread_covers_distinct_indices_from_its_offset() {
        assert_eq!(spread(10, 5, 3), vec![3, 5, 7, 9, 1]);
        assert_eq!(spread(3, 20, 7), vec![1, 2, 0]);
        assert!(spread(0, 20, 1).is_empty());
        let mut all = spread(200, 20, 12_345);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 20);
    }
}
