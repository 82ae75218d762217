//! The impostor tail a tenant's own traffic shows, which tightens the
//! bundled accept line where the tenant's voices are harder to tell apart
//! than the calibration corpus's.
//!
//! The bundled false-accept curve was read off one corpus's impostors
//! (LibriSpeech read speech); a tenant whose users share a language, an
//! accent, a microphone or a script (digit codes) produces higher impostor
//! LLRs, and the same LLR line lets through several times the stated rate
//! (README, "Calibrated scores"). Every verification is, against the
//! tenant's *other* voiceprints, a set of zero-effort impostor trials in the
//! tenant's own domain; their LLRs, gathered here, measure where the
//! tenant's tail really is.
//!
//! The line only ever moves up: impostor LLRs are what callers' audio
//! makes, and a flood of audio that matches no one must not be able to
//! lower a tenant's bar.

use super::calibration::{Band, FarPoint, llr_at_far};

/// Impostor trials needed above a rate's line before the tail is trusted
/// to place it (the relative error of an exceedance count of 8 is ~35%).
pub const MIN_EXCEEDANCES: f64 = 8.0;

/// Lowest LLR bucket edge; lower LLRs count in the first bucket.
const LOW: f32 = -60.0;
/// Bucket width in LLR (impostor LLRs spread over a standard deviation of
/// 5–8: the rounding is far below the estimate's own noise).
const STEP: f32 = 0.05;
/// Buckets: LLRs from -60 to +60.
const BUCKETS: usize = 2400;
/// Trials at which every count is halved, so the tail follows a tenant's
/// population as it changes instead of its whole history.
const HALVE_AT: u64 = 1 << 21;

/// A histogram of one tenant's impostor LLRs in one band.
#[derive(Debug, Clone, PartialEq)]
pub struct ImpostorTail {
    counts: Vec<u32>,
    total: u64,
}

impl Default for ImpostorTail {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }
}

impl ImpostorTail {
    /// Counts one impostor trial (a non-finite LLR is ignored).
    pub fn record(&mut self, llr: f32) {
        if !llr.is_finite() {
            return;
        }
        let bucket = ((llr - LOW) / STEP)
            .floor()
            .clamp(0.0, (BUCKETS - 1) as f32) as usize;
        self.counts[bucket] += 1;
        self.total += 1;
        if self.total >= HALVE_AT {
            for c in &mut self.counts {
                *c /= 2;
            }
            self.total = self.counts.iter().map(|&c| u64::from(c)).sum();
        }
    }

    /// Impostor trials counted (after any halving).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The empirical line of `rate`: the lower edge of the bucket holding
    /// the impostor that `rate` of the counted ones reach or pass (the
    /// k-th highest, to a bucket); `None` while fewer than
    /// [`MIN_EXCEEDANCES`] trials would lie above it.
    pub fn line(&self, rate: f64) -> Option<f32> {
        let allowed = (rate * self.total as f64).floor();
        if allowed.is_nan() || allowed < MIN_EXCEEDANCES {
            return None;
        }
        let mut above = 0f64;
        for (bucket, &count) in self.counts.iter().enumerate().rev() {
            above += f64::from(count);
            if above >= allowed {
                return Some(LOW + bucket as f32 * STEP);
            }
        }
        Some(LOW)
    }

    /// The accept (or reject) line for `far`: the bundled curve's, raised
    /// by how far the tenant's own impostors sit above the curve at the
    /// strictest rate at or above `far` that the tail can place — `far`
    /// itself once enough trials are in, a looser rate of the curve before
    /// (the curve's shape carries it the rest of the way).
    pub fn tightened(&self, curve: &[FarPoint], far: f64) -> f32 {
        let bundled = llr_at_far(curve, far).unwrap_or(f32::INFINITY);
        let mut rates: Vec<f64> = std::iter::once(far)
            .chain(curve.iter().map(|p| p.far).filter(|&r| r > far))
            .collect();
        rates.sort_by(f64::total_cmp);
        let shift = rates.iter().find_map(|&rate| {
            let tenant = self.line(rate)?;
            Some(tenant - llr_at_far(curve, rate)?)
        });
        bundled + shift.unwrap_or(0.0).max(0.0)
    }
}

/// A tenant's impostor tails under one model, one per band.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantTails {
    /// 16 kHz probes.
    pub wide: ImpostorTail,
    /// 8 kHz (telephone) probes.
    pub narrow: ImpostorTail,
}

impl TenantTails {
    /// The tail of `band`.
    pub fn band(&self, band: Band) -> &ImpostorTail {
        match band {
            Band::Wide => &self.wide,
            Band::Narrow => &self.narrow,
        }
    }

    /// The tail of `band`, to record into.
    pub fn band_mut(&mut self, band: Band) -> &mut ImpostorTail {
        match band {
            Band::Wide => &mut self.wide,
            Band::Narrow => &mut self.narrow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve() -> Vec<FarPoint> {
        [(0.1, -10.0), (0.01, -2.0), (0.001, 2.0)]
            .into_iter()
            .map(|(far, llr)| FarPoint { far, llr })
            .collect()
    }

    fn tail(llrs: impl IntoIterator<Item = f32>) -> ImpostorTail {
        let mut t = ImpostorTail::default();
        for l in llrs {
            t.record(l);
        }
        t
    }

    /// LLRs in the middle of their buckets (-49.975, -49.875, …).
    fn spread(n: usize) -> impl Iterator<Item = f32> {
        (0..n).map(|i| -49.975 + 0.1 * i as f32)
    }

    #[test]
    fn a_line_lets_the_rate_of_impostors_reach_it() {
        let t = tail(spread(1000));
        // 1% of 1,000 is 10: the 10th highest is 49.025, in [49.0, 49.05).
        let line = t.line(0.01).unwrap();
        assert!((line - 49.0).abs() < 1e-3, "{line}");
        assert_eq!(spread(1000).filter(|&l| l >= line).count(), 10);
        let line = t.line(0.1).unwrap();
        assert!((line - 40.0).abs() < 1e-3, "{line}");
    }

    #[test]
    fn too_few_trials_place_no_line() {
        let t = tail((0..799).map(|i| i as f32 / 100.0));
        assert_eq!(t.line(0.01), None, "7 trials above a 1% line");
        let t = tail((0..800).map(|i| i as f32 / 100.0));
        assert!(t.line(0.01).is_some());
        assert_eq!(ImpostorTail::default().line(0.5), None);
    }

    #[test]
    fn a_harder_tenant_raises_the_line_by_its_offset() {
        // 10 of 10,000 impostors at 5.025: 0.1% of them reach 5.0, where
        // the bundled curve puts 0.1% at 2.0. 10 ≥ 8 trials: the tail
        // places 0.1% itself.
        let t = tail((0..10_000).map(|i| match i {
            0..10 => 5.025,
            10..110 => 1.025,
            _ => -20.0,
        }));
        assert!((t.tightened(&curve(), 0.001) - 5.0).abs() < 1e-3);
        // 1,000 trials place 1% only (10 of them at 1.0, where the curve
        // has -2.0): that offset of 3 carries over to 0.1%.
        let t = tail((0..1_000).map(|i| if i < 10 { 1.025 } else { -20.0 }));
        assert_eq!(t.line(0.001), None);
        assert!((t.tightened(&curve(), 0.001) - 5.0).abs() < 1e-3);
    }

    #[test]
    fn an_easier_tenant_never_lowers_the_line() {
        let t = tail(std::iter::repeat_n(-40.0, 100_000));
        assert_eq!(t.tightened(&curve(), 0.001), 2.0);
        assert_eq!(ImpostorTail::default().tightened(&curve(), 0.01), -2.0);
    }

    #[test]
    fn counts_halve_and_ignore_non_finite_llrs() {
        let mut t = tail([f32::NAN, f32::INFINITY, 1e9, -1e9]);
        assert_eq!(t.total(), 2, "out-of-range values land in the end buckets");
        for _ in 0..HALVE_AT {
            t.record(0.0);
        }
        assert!(
            t.total() < HALVE_AT && t.total() > HALVE_AT / 4,
            "{}",
            t.total()
        );
    }
}
