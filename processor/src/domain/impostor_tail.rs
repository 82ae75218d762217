//! The impostor tail a tenant's own traffic shows, which raises the
//! bundled accept and reject lines where the tenant's voices are harder to tell apart
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
//! A line is never drawn below the bundled one: impostor LLRs are what
//! callers' audio makes, and audio that matches no one must not be able to
//! take a tenant below the calibration's bar.

use super::calibration::{Band, FarPoint, llr_at_far};

/// Impostor trials needed above a rate's line before the tail is trusted
/// to place it (the relative error of an exceedance count of 8 is ~35%).
pub const MIN_EXCEEDANCES: f64 = 8.0;

/// Lowest LLR bucket edge; lower LLRs count in the first bucket (only the
/// upper tail places lines).
const LOW: f32 = -40.0;
/// Bucket width in LLR (impostor LLRs spread over a standard deviation of
/// 5–8: the rounding is far below the estimate's own noise).
const STEP: f32 = 0.1;
/// Buckets: LLRs from -40 to +40 (3.2 KB per band).
const BUCKETS: usize = 800;
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
            // Rounded up, so the few trials at the very top stay counted:
            // halving them away would drop the line.
            for c in &mut self.counts {
                *c = c.div_ceil(2);
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
        let exceedances = (rate * self.total as f64).floor();
        if exceedances.is_nan() || exceedances < MIN_EXCEEDANCES {
            return None;
        }
        let mut above = 0f64;
        for (bucket, &count) in self.counts.iter().enumerate().rev() {
            above += f64::from(count);
            if above >= exceedances {
                return Some(LOW + bucket as f32 * STEP);
            }
        }
        Some(LOW)
    }

    /// How far (in LLR, ≥ 0, at most [`MAX_SHIFT`]) the tenant's impostors
    /// sit above the bundled `curve` at the strictest rate from `far` to
    /// 100 × `far` that the tail can place: `far` itself once enough trials
    /// are in, a looser rate before (the curve's shape carries the offset
    /// the rest of the way; a young tenant is held near its line after a
    /// few verifications instead of a few hundred). Rates further off say
    /// too little about the tail; a raise past the cap would be a
    /// population no curve of this model describes, and would lock out its
    /// true speakers.
    pub fn shift(&self, curve: &[FarPoint], far: f64) -> f32 {
        let mut rates: Vec<f64> = std::iter::once(far)
            .chain(
                curve
                    .iter()
                    .map(|p| p.far)
                    .filter(|&r| r > far && r <= 100.0 * far),
            )
            .collect();
        rates.sort_by(f64::total_cmp);
        rates
            .iter()
            .find_map(|&rate| Some(self.line(rate)? - llr_at_far(curve, rate)?))
            .unwrap_or(0.0)
            .clamp(0.0, MAX_SHIFT)
    }
}

/// The largest raise a tenant's tail can give a line (LLR). FSDD's digit
/// codes, six men on one microphone, needed 4–5.
pub const MAX_SHIFT: f32 = 8.0;

/// A tenant's impostor tails under one model, one per band.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantTails {
    /// 16 kHz probes.
    pub wide: ImpostorTail,
    /// 8 kHz (telephone) probes.
    pub narrow: ImpostorTail,
    /// The calibration whose LLRs were counted
    /// ([`ScoreNorm::scale_id`](super::calibration::ScoreNorm::scale_id)):
    /// counts on another calibration's scale say nothing about this one.
    pub scale: u64,
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

    /// Compact bytes for the store: a format byte, the calibration's
    /// `scale` (`u64`), then per band (wide, narrow) the count of non-empty
    /// buckets and each as (bucket `u16`, count `u32`), little-endian.
    /// Counts only: no score, voice or user.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        out.extend_from_slice(&self.scale.to_le_bytes());
        for tail in [&self.wide, &self.narrow] {
            let filled: Vec<(usize, u32)> = tail
                .counts
                .iter()
                .copied()
                .enumerate()
                .filter(|&(_, c)| c > 0)
                .collect();
            out.extend_from_slice(&(filled.len() as u32).to_le_bytes());
            for (bucket, count) in filled {
                out.extend_from_slice(&(bucket as u16).to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
        }
        out
    }

    /// Reads [`TenantTails::encode`]'s bytes; `None` for any other bytes.
    pub fn decode(bytes: &[u8]) -> Option<TenantTails> {
        let (&format, mut rest) = bytes.split_first()?;
        if format != FORMAT {
            return None;
        }
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            rest = tail;
            Some(head)
        };
        let scale = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let mut bands = [ImpostorTail::default(), ImpostorTail::default()];
        for tail in &mut bands {
            let filled = u32::from_le_bytes(take(4)?.try_into().ok()?);
            let mut next = 0;
            for _ in 0..filled {
                let bucket = usize::from(u16::from_le_bytes(take(2)?.try_into().ok()?));
                let count = u32::from_le_bytes(take(4)?.try_into().ok()?);
                // Buckets come in increasing order, each once.
                if bucket < next {
                    return None;
                }
                next = bucket + 1;
                *tail.counts.get_mut(bucket)? = count;
                tail.total += u64::from(count);
            }
        }
        if !rest.is_empty() {
            return None;
        }
        let [wide, narrow] = bands;
        Some(TenantTails {
            wide,
            narrow,
            scale,
        })
    }
}

/// Format byte of [`TenantTails::encode`] (1: before the calibration's
/// scale was kept; such bytes are refused and the tail starts afresh).
const FORMAT: u8 = 2;

/// Up to `count` indices below `len`, evenly spaced from an offset given by
/// `seed`: the tenant voiceprints an accepted verification is scored
/// against for the tail, so the tail sees the whole sample over many
/// verifications.
pub fn spread(len: usize, count: usize, seed: u64) -> Vec<usize> {
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

    /// LLRs in the middle of their buckets (-39.95, -39.85, …).
    fn bucket_middles(n: usize) -> impl Iterator<Item = f32> {
        (0..n).map(|i| -39.95 + 0.1 * i as f32)
    }

    #[test]
    fn a_line_lets_the_rate_of_impostors_reach_it() {
        let t = tail(bucket_middles(800));
        // 1% of 800 is 8: the 8th highest is 39.25, in [39.2, 39.3).
        let line = t.line(0.01).unwrap();
        assert!((line - 39.2).abs() < 1e-3, "{line}");
        assert_eq!(bucket_middles(800).filter(|&l| l >= line).count(), 8);
        // 10% is 80: the 80th highest is 32.05, in [32.0, 32.1).
        let line = t.line(0.1).unwrap();
        assert!((line - 32.0).abs() < 1e-3, "{line}");
    }

    #[test]
    fn too_few_trials_place_no_line() {
        let t = tail((0..799).map(|i| i as f32 / 100.0));
        assert_eq!(t.line(0.01), None, "7 trials above a 1% line");
        let t = tail((0..800).map(|i| i as f32 / 100.0));
        assert!(t.line(0.01).is_some());
        assert_eq!(ImpostorTail::default().line(0.5), None);
    }

    fn tightened(t: &ImpostorTail, far: f64) -> f32 {
        llr_at_far(&curve(), far).unwrap() + t.shift(&curve(), far)
    }

    #[test]
    fn a_harder_tenant_raises_the_line_by_its_offset() {
        // 10 of 10,000 impostors at 5.05: 0.1% of them reach 5.0, where
        // the bundled curve puts 0.1% at 2.0. 10 ≥ 8 trials: the tail
        // places 0.1% itself.
        let t = tail((0..10_000).map(|i| match i {
            0..10 => 5.05,
            10..110 => 1.05,
            _ => -20.0,
        }));
        assert!((tightened(&t, 0.001) - 5.0).abs() < 1e-3);
        // 1,000 trials place 1% only (10 of them at 1.0, where the curve
        // has -2.0): that offset of 3 carries over to 0.1%.
        let t = tail((0..1_000).map(|i| if i < 10 { 1.05 } else { -20.0 }));
        assert_eq!(t.line(0.001), None);
        assert!((tightened(&t, 0.001) - 5.0).abs() < 1e-3);
    }

    #[test]
    fn an_easier_tenant_never_lowers_the_line() {
        let t = tail(std::iter::repeat_n(-40.0, 100_000));
        assert_eq!(t.shift(&curve(), 0.001), 0.0);
        assert_eq!(ImpostorTail::default().shift(&curve(), 0.01), 0.0);
    }

    #[test]
    fn a_raise_is_capped_and_read_near_the_target_rate_only() {
        // 100 of 1,000 at 30.0: the 10% line is 30, the curve's -10.
        let t = tail((0..1_000).map(|i| if i < 100 { 30.05 } else { -30.0 }));
        // 1% is placed (10 trials) and sits 32 above the curve: capped.
        assert_eq!(t.shift(&curve(), 0.01), MAX_SHIFT);
        // 0.01% cannot be placed, and 10% is more than 100× off: no raise.
        let t = tail((0..100).map(|i| if i < 10 { 30.05 } else { -30.0 }));
        assert_eq!(t.line(0.1), Some(30.0));
        assert_eq!(t.shift(&curve(), 0.0001), 0.0);
        assert_eq!(t.shift(&curve(), 0.001), MAX_SHIFT);
    }

    #[test]
    fn tails_survive_their_stored_form_and_refuse_other_bytes() {
        let mut tails = TenantTails {
            scale: 0x0123_4567_89ab_cdef,
            ..TenantTails::default()
        };
        for llr in [-70.0, -3.25, 0.0, 0.01, 5.55, 5.55, 99.0] {
            tails.wide.record(llr);
        }
        tails.narrow.record(1.0);
        let bytes = tails.encode();
        // Format byte, scale, 5 wide buckets (0.0 and 0.01 share one, as do
        // the two 5.55s; -70 and 99 land in the end buckets), 1 narrow.
        assert_eq!(bytes.len(), 1 + 8 + 4 + 5 * 6 + 4 + 6);
        assert_eq!(TenantTails::decode(&bytes), Some(tails.clone()));
        assert_eq!(
            TenantTails::decode(&TenantTails::default().encode()),
            Some(TenantTails::default())
        );
        let mut longer = bytes.clone();
        longer.push(0);
        for bad in [
            &[][..],
            &bytes[..bytes.len() - 1],
            &longer,
            // Empty tails in format 1, from before the scale was kept.
            &[1, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert_eq!(TenantTails::decode(bad), None, "{bad:?}");
        }
        // A bucket listed twice is refused.
        let mut twice = vec![FORMAT, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0];
        for _ in 0..2 {
            twice.extend_from_slice(&5u16.to_le_bytes());
            twice.extend_from_slice(&1u32.to_le_bytes());
        }
        twice.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(TenantTails::decode(&twice), None);
        // A bucket past the histogram is refused, not clamped.
        let mut past = vec![FORMAT, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        past.extend_from_slice(&(BUCKETS as u16).to_le_bytes());
        past.extend_from_slice(&1u32.to_le_bytes());
        past.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(TenantTails::decode(&past), None);
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
        // The single trial in the top bucket survives the halving.
        assert_eq!(t.counts[BUCKETS - 1], 1);
    }

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
