//! From a raw cosine score to a calibrated log-likelihood ratio (LLR).
//!
//! 1. **AS-norm** (adaptive symmetric normalisation): each side of a trial
//!    is scored against an impostor cohort; the mean and spread of its top-K
//!    cohort scores say how "ordinary" that voice is, and the raw score is
//!    standardised against both sides. Voices that resemble many others stop
//!    producing high impostor scores.
//! 2. **Calibration**: a logistic map from the normalised score and the
//!    probe's net speech (the quality measure: short probes score less
//!    reliably) to an LLR, fitted per band (wideband 16 kHz, narrowband
//!    8 kHz telephone audio) with equal class weights, so its output reads as
//!    an LLR whatever the trial mix.
//! 3. **Thresholds from a false-accept rate**: the calibration corpus's
//!    impostor LLRs give the LLR above which a given share of impostors
//!    lands, so a tenant states "1 in 200 impostors" instead of a cosine.
//!
//! Pure arithmetic; the fitted values ship with the engine
//! (`scoring/score_norm.json`, built by `timbre calibrate`).

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::impostor_tail::ImpostorTail;
use super::policy::{Policy, VoiceThresholds, unit};

/// Cosine at or above which a tenant voiceprint is taken for the claimed
/// voice itself (the same person under two accounts) and kept out of its
/// cohort: a cohort holds impostors. It is the cosine accept line (EER
/// thresholds were 0.45–0.50); different speakers reach it rarely.
pub const SAME_VOICE_COSINE: f32 = 0.5;

/// Audio band of a trial, which picks its cohort and calibration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    /// 16 kHz capture (apps, browsers, wideband telephony).
    Wide,
    /// 8 kHz capture (classic telephony), upsampled for the model.
    Narrow,
}

impl Band {
    /// The band of a request: narrowband when the audio was sampled at
    /// 8 kHz or less, or the caller names a telephone channel.
    pub fn of(source_rate: u32, channel: Option<&str>) -> Band {
        let phone = channel.is_some_and(|c| {
            matches!(
                c.to_ascii_lowercase().as_str(),
                "phone" | "pstn" | "telephone" | "telephony" | "narrowband" | "8k"
            )
        });
        if source_rate <= 8_000 || phone {
            Band::Narrow
        } else {
            Band::Wide
        }
    }

    /// Lowercase name, as in decision events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Band::Wide => "wide",
            Band::Narrow => "narrow",
        }
    }
}

/// Mean and standard deviation of a voice's top-K cohort scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CohortStats {
    /// Mean of the top-K scores.
    pub mean: f32,
    /// Population standard deviation of the top-K scores.
    pub std: f32,
}

/// Cosine scores of `embedding` against each `cohort` embedding.
pub fn cohort_scores<'a>(
    cohort: impl IntoIterator<Item = &'a [f32]>,
    embedding: &[f32],
) -> Vec<f64> {
    let probe = unit(embedding);
    cohort
        .into_iter()
        .map(|c| {
            let (mut dot, mut norm) = (0f64, 0f64);
            for (a, b) in c.iter().zip(&probe) {
                dot += f64::from(*a) * f64::from(*b);
                norm += f64::from(*a) * f64::from(*a);
            }
            dot / norm.sqrt().max(1e-12)
        })
        .collect()
}

/// Mean and spread of the `top_k` highest `scores`.
pub fn top_k_stats(mut scores: Vec<f64>, top_k: usize) -> CohortStats {
    scores.sort_by(|a, b| b.total_cmp(a));
    scores.truncate(top_k.max(1));
    let n = scores.len().max(1) as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n;
    CohortStats {
        mean: mean as f32,
        std: var.sqrt() as f32,
    }
}

/// AS-norm of a raw score from both sides' cohort statistics.
pub fn as_norm(raw: f32, enrolled: CohortStats, probe: CohortStats) -> f32 {
    let z = |s: CohortStats| (raw - s.mean) / s.std.max(1e-4);
    0.5 * (z(enrolled) + z(probe))
}

/// One side of a trial (the voiceprint's or the probe's) against the
/// cohort: its [`cohort_scores`] against the band's bundled cohort and
/// against each of the tenant's voiceprints.
#[derive(Debug, Clone, Copy)]
pub struct CohortSide<'a> {
    /// Against the bundled cohort.
    pub vs_bundled: &'a [f64],
    /// Against the tenant's voiceprints, in one order for both sides.
    pub vs_tenant: &'a [f64],
}

/// AS-norm of a trial whose cohort is the bundled one plus the tenant's
/// voiceprints, less those `left_out` (by index) and those at
/// [`SAME_VOICE_COSINE`] or more from the enrolled side: the enrolled voice
/// under a second account is no impostor of it.
pub fn tenant_as_norm(
    raw: f32,
    enrolled: CohortSide<'_>,
    probe: CohortSide<'_>,
    left_out: impl Fn(usize) -> bool,
    top_k: usize,
) -> f32 {
    let impostors: Vec<usize> = (0..enrolled.vs_tenant.len())
        .filter(|&j| !left_out(j) && enrolled.vs_tenant[j] < f64::from(SAME_VOICE_COSINE))
        .collect();
    let stats = |side: CohortSide<'_>| {
        let mut scores = side.vs_bundled.to_vec();
        scores.extend(impostors.iter().map(|&j| side.vs_tenant[j]));
        top_k_stats(scores, top_k)
    };
    as_norm(raw, stats(enrolled), stats(probe))
}

/// The quality measure of a probe: log of its net speech in seconds, held
/// within `range` (the net speech of the calibration probes, in ms), so the
/// map is never extrapolated past what it was fitted on.
pub fn quality(speech_millis: u64, range: [u64; 2]) -> f64 {
    let ms = speech_millis.clamp(range[0].max(1), range[1].max(range[0]).max(1));
    (ms as f64 / 1000.0).ln()
}

/// Logistic calibration of one band: `llr = w0 + w1·s + w2·q + w3·s·q +
/// we·e` for normalised score `s`, probe quality `q` and enrollment quality
/// `e` (the voiceprint's net speech, by the same [`quality`] measure).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinearCalibration {
    /// Bias, score, quality and score×quality weights.
    pub weights: [f64; 4],
    /// Weight of the enrollment quality; 0 in bundles fitted without it.
    #[serde(default)]
    pub enrollment: f64,
}

/// One calibration trial: normalised score, probe and enrollment quality,
/// whether the voices are the same.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationTrial {
    /// AS-norm score.
    pub norm: f32,
    /// Probe quality ([`quality`]).
    pub quality: f64,
    /// Enrollment quality ([`quality`] of the voiceprint's net speech).
    pub enrollment: f64,
    /// Same speaker.
    pub target: bool,
}

impl LinearCalibration {
    fn features(norm: f64, quality: f64, enrollment: f64) -> [f64; 5] {
        [1.0, norm, quality, norm * quality, enrollment]
    }

    fn all_weights(&self) -> [f64; 5] {
        let [a, b, c, d] = self.weights;
        [a, b, c, d, self.enrollment]
    }

    /// The LLR of a normalised score at a probe and an enrollment quality.
    pub fn llr(&self, norm: f32, quality: f64, enrollment: f64) -> f32 {
        let x = Self::features(f64::from(norm), quality, enrollment);
        x.iter()
            .zip(&self.all_weights())
            .map(|(a, b)| a * b)
            .sum::<f64>() as f32
    }

    /// Fits the weights by Newton's method on the logistic loss, target and
    /// non-target trials weighted to equal totals (so the output is an LLR,
    /// free of the trial mix's prior), with a small ridge for stability.
    /// `None` when a class is missing or the fit does not converge.
    pub fn fit(trials: &[CalibrationTrial]) -> Option<LinearCalibration> {
        const N: usize = 5;
        let targets = trials.iter().filter(|t| t.target).count();
        let others = trials.len() - targets;
        if targets == 0 || others == 0 {
            return None;
        }
        let weight_of = |target: bool| {
            if target {
                0.5 / targets as f64
            } else {
                0.5 / others as f64
            }
        };
        const RIDGE: f64 = 1e-6;
        let mut w = [0f64; N];
        for _ in 0..100 {
            let mut grad = [0f64; N];
            let mut hess = [[0f64; N]; N];
            for t in trials {
                let x = Self::features(f64::from(t.norm), t.quality, t.enrollment);
                let z: f64 = x.iter().zip(&w).map(|(a, b)| a * b).sum();
                let p = 1.0 / (1.0 + (-z).exp());
                let c = weight_of(t.target);
                let y = if t.target { 1.0 } else { 0.0 };
                for i in 0..N {
                    grad[i] += c * (p - y) * x[i];
                    for j in 0..N {
                        hess[i][j] += c * p * (1.0 - p) * x[i] * x[j];
                    }
                }
            }
            for i in 0..N {
                grad[i] += RIDGE * w[i];
                hess[i][i] += RIDGE;
            }
            let step = solve(hess, grad)?;
            let mut largest = 0f64;
            for i in 0..N {
                w[i] -= step[i];
                largest = largest.max(step[i].abs());
            }
            if largest < 1e-10 {
                return Some(LinearCalibration {
                    weights: [w[0], w[1], w[2], w[3]],
                    enrollment: w[4],
                });
            }
        }
        None
    }
}

/// Solves `a·x = b` by Gaussian elimination with partial pivoting; `None`
/// when singular.
fn solve<const N: usize>(mut a: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..N {
            let f = a[row][col] / pivot_row[col];
            for (x, p) in a[row].iter_mut().zip(&pivot_row).skip(col) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0f64; N];
    for row in (0..N).rev() {
        let rest: f64 = (row + 1..N).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - rest) / a[row][row];
    }
    Some(x)
}

/// One point of the false-accept curve: impostor trials with an LLR at or
/// above `llr` made up `far` of all impostor trials.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FarPoint {
    /// False-accept rate.
    pub far: f64,
    /// LLR threshold giving it.
    pub llr: f32,
}

/// The false-accept curve of impostor LLRs at the given rates (each rate
/// needs at least one impostor above its threshold to be listed).
pub fn far_curve(impostor_llrs: &[f32], rates: &[f64]) -> Vec<FarPoint> {
    let mut sorted = impostor_llrs.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let n = sorted.len();
    rates
        .iter()
        .filter_map(|&far| {
            let above = (far * n as f64).floor() as usize;
            (above >= 1 && above <= n).then(|| FarPoint {
                far,
                // The smallest LLR among the top `above` impostors: at or
                // above it, `above` of `n` impostors pass.
                llr: sorted[above - 1],
            })
        })
        .collect()
}

/// The LLR threshold for a target false-accept rate: interpolated in
/// log-rate between the curve's points, held at its ends.
pub fn llr_at_far(curve: &[FarPoint], far: f64) -> Option<f32> {
    let first = curve.first()?;
    let last = curve.last()?;
    let (hi, lo) = if first.far >= last.far {
        (first, last)
    } else {
        (last, first)
    };
    if far >= hi.far {
        return Some(hi.llr);
    }
    if far <= lo.far {
        return Some(lo.llr);
    }
    curve.windows(2).find_map(|w| {
        let (a, b) = (w[0], w[1]);
        let (big, small) = if a.far >= b.far { (a, b) } else { (b, a) };
        (far <= big.far && far >= small.far).then(|| {
            let t = (far.ln() - big.far.ln()) / (small.far.ln() - big.far.ln());
            big.llr + (t as f32) * (small.llr - big.llr)
        })
    })
}

/// The cohort, calibration and impostor curve of one band.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandNorm {
    /// Unit-length cohort embeddings, little-endian f32 rows in base64.
    #[serde(with = "embeddings_base64")]
    pub cohort: Vec<Vec<f32>>,
    /// Normalised score and quality → LLR.
    pub calibration: LinearCalibration,
    /// False-accept curve of this band's calibration impostors, by
    /// decreasing rate.
    pub far_curve: Vec<FarPoint>,
}

/// Everything needed to turn one model's raw scores into LLRs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreNorm {
    /// The speaker model (name + weights hash) the cohort was embedded with.
    pub model_id: String,
    /// Cohort scores averaged per side.
    pub top_k: usize,
    /// Wideband cohort and calibration.
    pub wide: BandNorm,
    /// Narrowband cohort and calibration.
    pub narrow: BandNorm,
    /// Net speech of the shortest and longest calibration probe (ms): the
    /// quality measure is held within it.
    pub probe_speech_millis: [u64; 2],
    /// The same for the calibration enrollments; a voiceprint of unknown
    /// net speech counts as the longest. Absent (zeros) in bundles fitted
    /// without an enrollment quality.
    #[serde(default)]
    pub enroll_speech_millis: [u64; 2],
}

/// A probe's side of its trials: cosines against the band's bundled cohort
/// and against each tenant voiceprint, and its quality measure.
struct ProbeScores {
    vs_bundled: Vec<f64>,
    vs_tenant: Vec<f64>,
    quality: f64,
}

impl ProbeScores {
    fn new(
        norm: &ScoreNorm,
        band: Band,
        probe: &[f32],
        probe_speech_millis: u64,
        tenant: &[&[f32]],
    ) -> Self {
        Self {
            vs_bundled: cohort_scores(norm.band(band).cohort.iter().map(Vec::as_slice), probe),
            vs_tenant: cohort_scores(tenant.iter().copied(), probe),
            quality: quality(probe_speech_millis, norm.probe_speech_millis),
        }
    }
}

/// The voiceprint side of a trial.
#[derive(Clone, Copy)]
struct Enrolled<'a> {
    embedding: &'a [f32],
    /// Net speech it was enrolled from (0: unknown).
    speech_millis: u64,
    /// Its index in the tenant's voiceprints, when it is one of them (kept
    /// out of its own cohort).
    in_tenant: Option<usize>,
}

/// A trial's score at each stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoiceScore {
    /// Cosine of the two embeddings.
    pub raw: f32,
    /// AS-norm of the raw score.
    pub norm: f32,
    /// Calibrated log-likelihood ratio.
    pub llr: f32,
}

impl ScoreNorm {
    fn band(&self, band: Band) -> &BandNorm {
        match band {
            Band::Wide => &self.wide,
            Band::Narrow => &self.narrow,
        }
    }

    /// Checks what the arithmetic relies on; a bundle that fails is not
    /// used (an empty cohort would make every score look remarkable).
    pub fn validate(&self) -> Result<(), String> {
        if self.top_k == 0 {
            return Err("top_k is 0".into());
        }
        if self.probe_speech_millis[0] == 0
            || self.probe_speech_millis[0] > self.probe_speech_millis[1]
        {
            return Err(format!("bad probe range {:?}", self.probe_speech_millis));
        }
        let uses_enrollment =
            self.wide.calibration.enrollment != 0.0 || self.narrow.calibration.enrollment != 0.0;
        if uses_enrollment
            && (self.enroll_speech_millis[0] == 0
                || self.enroll_speech_millis[0] > self.enroll_speech_millis[1])
        {
            return Err(format!(
                "bad enrollment range {:?}",
                self.enroll_speech_millis
            ));
        }
        for band in [Band::Wide, Band::Narrow] {
            let b = self.band(band);
            let name = band.as_str();
            if b.cohort.len() < self.top_k {
                return Err(format!(
                    "{name} cohort has {} embeddings, top_k is {}",
                    b.cohort.len(),
                    self.top_k
                ));
            }
            if !b.calibration.all_weights().iter().all(|w| w.is_finite()) {
                return Err(format!("{name} calibration is not finite"));
            }
            let sorted = b
                .far_curve
                .windows(2)
                .all(|w| w[0].far > w[1].far && w[0].llr <= w[1].llr);
            let in_range = b
                .far_curve
                .iter()
                .all(|p| p.far > 0.0 && p.far < 1.0 && p.llr.is_finite());
            if b.far_curve.is_empty() || !sorted || !in_range {
                return Err(format!(
                    "{name} false-accept curve is empty, unsorted or out of range"
                ));
            }
        }
        Ok(())
    }

    /// Identifies the LLR scale of this normalisation: a hash of what maps
    /// a score to an LLR and an LLR to a rate (calibrations, curves and
    /// quality ranges; not the cohorts, which the LLRs' meaning does not
    /// hang on once fitted). Counts of LLRs kept under one scale (a
    /// tenant's impostor tail) are not read under another.
    pub fn scale_id(&self) -> u64 {
        let mut bytes = Vec::new();
        let mut eat = |b: &[u8]| bytes.extend_from_slice(b);
        eat(self.model_id.as_bytes());
        for band in [&self.wide, &self.narrow] {
            for w in band.calibration.all_weights() {
                eat(&w.to_le_bytes());
            }
            for p in &band.far_curve {
                eat(&p.far.to_le_bytes());
                eat(&p.llr.to_le_bytes());
            }
        }
        for ms in self
            .probe_speech_millis
            .iter()
            .chain(&self.enroll_speech_millis)
        {
            eat(&ms.to_le_bytes());
        }
        super::fnv1a(&bytes)
    }

    /// The lowest false-accept rate both bands' curves reach: stricter
    /// targets get this rate's thresholds.
    pub fn lowest_far(&self) -> f64 {
        let last = |b: &BandNorm| b.far_curve.last().map_or(1.0, |p| p.far);
        last(&self.wide).max(last(&self.narrow))
    }

    /// Scores a probe against a voiceprint: raw cosine, AS-norm, LLR. The
    /// cohort is the band's bundled one plus `tenant`: voiceprints of the
    /// claimed user's tenant (never the claimed user's own), which bring
    /// the tenant's population — its language, channel, microphones — into
    /// the cohort, so one LLR threshold means the same false-accept rate
    /// across tenants. Tenant voiceprints at [`SAME_VOICE_COSINE`] or more
    /// from the claimed one are left out. `enrolled_speech_millis`: the net
    /// speech the voiceprint was enrolled from, 0 when unknown (as profiles
    /// from before it was counted hold).
    pub fn score(
        &self,
        band: Band,
        voiceprint: &[f32],
        enrolled_speech_millis: u64,
        probe: &[f32],
        probe_speech_millis: u64,
        tenant: &[&[f32]],
    ) -> VoiceScore {
        let probe_scores = ProbeScores::new(self, band, probe, probe_speech_millis, tenant);
        let enrolled = Enrolled {
            embedding: voiceprint,
            speech_millis: enrolled_speech_millis,
            in_tenant: None,
        };
        self.score_probe(band, enrolled, probe, &probe_scores, tenant)
    }

    /// The enrollment quality of a voiceprint: its net speech held within
    /// the calibration's enrollments; unknown (0) counts as the longest (a
    /// voiceprint enrolled to the usual target holds more speech than
    /// calibration enrollments do).
    fn enrollment_quality(&self, speech_millis: u64) -> f64 {
        let range = self.enroll_speech_millis;
        let known = if speech_millis == 0 {
            range[1]
        } else {
            speech_millis
        };
        quality(known, range)
    }

    /// [`ScoreNorm::score`] with the probe's side computed beforehand
    /// (`probe_scores`, against this `tenant`), so a probe scored against
    /// many voiceprints computes it once.
    fn score_probe(
        &self,
        band: Band,
        enrolled: Enrolled<'_>,
        probe: &[f32],
        probe_scores: &ProbeScores,
        tenant: &[&[f32]],
    ) -> VoiceScore {
        let (voiceprint, skip) = (enrolled.embedding, enrolled.in_tenant);
        let enrollment = self.enrollment_quality(enrolled.speech_millis);
        let band = self.band(band);
        let vs_bundled = cohort_scores(band.cohort.iter().map(Vec::as_slice), voiceprint);
        let vs_tenant = cohort_scores(tenant.iter().copied(), voiceprint);
        let raw = super::policy::cosine(voiceprint, probe);
        let norm = tenant_as_norm(
            raw,
            CohortSide {
                vs_bundled: &vs_bundled,
                vs_tenant: &vs_tenant,
            },
            CohortSide {
                vs_bundled: &probe_scores.vs_bundled,
                vs_tenant: &probe_scores.vs_tenant,
            },
            |j| Some(j) == skip,
            self.top_k,
        );
        let llr = band.calibration.llr(norm, probe_scores.quality, enrollment);
        VoiceScore { raw, norm, llr }
    }

    /// The LLR threshold of `band` for a target false-accept rate (held at
    /// the curve's ends: see [`ScoreNorm::lowest_far`]).
    pub fn threshold(&self, band: Band, far: f64) -> f32 {
        llr_at_far(&self.band(band).far_curve, far).unwrap_or(f32::INFINITY)
    }

    /// How far a tenant's own impostors (`tail`) sit above `band`'s curve
    /// at `far` ([`ImpostorTail::shift`]): the raise of its lines.
    fn tail_shift(&self, band: Band, far: f64, tail: &ImpostorTail) -> f32 {
        tail.shift(&self.band(band).far_curve, far)
    }

    /// The accept and reject lines of `band` at `policy`'s false-accept
    /// rates, both raised by one shift of the tenant's impostor `tail`,
    /// read at the accept rate: raised by their own rates' offsets, the
    /// reject line could pass the accept line and close the retry band.
    pub fn voice_thresholds(
        &self,
        policy: &Policy,
        band: Band,
        tail: Option<&ImpostorTail>,
    ) -> VoiceThresholds {
        let shift = tail.map_or(0.0, |t| self.tail_shift(band, policy.accept_far, t));
        VoiceThresholds::calibrated(policy, |far| self.threshold(band, far) + shift)
    }

    /// LLRs of an accepted `probe` of the `claimed` voiceprint against the
    /// tenant's other voiceprints at `picked` (indices into `voiceprints`,
    /// which holds no voiceprint of the claimed user): zero-effort impostor
    /// trials in the tenant's own domain, for its [`ImpostorTail`].
    /// Voiceprints at [`SAME_VOICE_COSINE`] or more from the claimed one
    /// (the same person under a second account) are skipped: those trials
    /// are genuine. Each is scored as a claim of that voiceprint, the rest
    /// of `voiceprints` joining the cohort.
    pub fn impostor_llrs(
        &self,
        band: Band,
        claimed: &[f32],
        probe: &[f32],
        probe_speech_millis: u64,
        voiceprints: &[&[f32]],
        picked: &[usize],
    ) -> Vec<f32> {
        let probe_scores = ProbeScores::new(self, band, probe, probe_speech_millis, voiceprints);
        picked
            .iter()
            .filter(|&&i| {
                i < voiceprints.len()
                    && super::policy::cosine(claimed, voiceprints[i]) < SAME_VOICE_COSINE
            })
            .map(|&i| {
                // Another user's enrollment is not known here: counted as a
                // full one.
                let enrolled = Enrolled {
                    embedding: voiceprints[i],
                    speech_millis: 0,
                    in_tenant: Some(i),
                };
                self.score_probe(band, enrolled, probe, &probe_scores, voiceprints)
                    .llr
            })
            .collect()
    }
}

mod embeddings_base64 {
    use super::*;
    use serde::{Deserializer, Serializer, de::Error};

    #[derive(Serialize, Deserialize)]
    struct Packed {
        dim: usize,
        data: String,
    }

    pub fn serialize<S: Serializer>(rows: &[Vec<f32>], s: S) -> Result<S::Ok, S::Error> {
        let dim = rows.first().map_or(0, Vec::len);
        let bytes: Vec<u8> = rows
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        Packed {
            dim,
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<f32>>, D::Error> {
        let packed = Packed::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(packed.data)
            .map_err(D::Error::custom)?;
        if packed.dim == 0 || bytes.len() % (packed.dim * 4) != 0 {
            return Err(D::Error::custom("cohort size is not a multiple of its dim"));
        }
        Ok(bytes
            .chunks_exact(packed.dim * 4)
            .map(|row| {
                row.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cohort_stats_are_over_the_top_k_scores() {
        // Cosines of [1, 0] with these: 1, 0, -1, 0.6.
        let cohort = [
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![-1.0, 0.0],
            vec![0.6, 0.8],
        ];
        let scores = cohort_scores(cohort.iter().map(Vec::as_slice), &[2.0, 0.0]);
        let s = top_k_stats(scores, 2);
        assert!((s.mean - 0.8).abs() < 1e-6, "{s:?}");
        assert!((s.std - 0.2).abs() < 1e-6, "{s:?}");
    }

    #[test]
    fn tenant_impostors_leave_out_the_named_and_the_enrolled_voice() {
        // Tenant voiceprint 0 is the enrolled voice (cosine 0.9 ≥ 0.5),
        // 2 is left out by index: only 1 joins both sides' cohorts.
        let enrolled = CohortSide {
            vs_bundled: &[0.1, 0.3],
            vs_tenant: &[0.9, 0.2, 0.0],
        };
        let probe = CohortSide {
            vs_bundled: &[0.2, 0.4],
            vs_tenant: &[0.8, 0.6, 0.1],
        };
        // Top 2: enrolled {0.3, 0.2} (mean 0.25, std 0.05), probe {0.6,
        // 0.4} (mean 0.5, std 0.1): z = 9 and 2.
        let norm = tenant_as_norm(0.7, enrolled, probe, |j| j == 2, 2);
        assert!((norm - 5.5).abs() < 1e-4, "{norm}");
        // Nothing left out by index: voiceprint 2 (0.0 / 0.1) is below both
        // top 2s, so the score stands.
        assert!((tenant_as_norm(0.7, enrolled, probe, |_| false, 2) - 5.5).abs() < 1e-4);
        // Left out by index 1 as well: top 2 enrolled {0.3, 0.1}, probe
        // {0.4, 0.2}: z = 5 and 4.
        let norm = tenant_as_norm(0.7, enrolled, probe, |j| j >= 1, 2);
        assert!((norm - 4.5).abs() < 1e-4, "{norm}");
    }

    #[test]
    fn as_norm_averages_both_sides_z_scores() {
        let e = CohortStats {
            mean: 0.2,
            std: 0.1,
        };
        let t = CohortStats {
            mean: 0.4,
            std: 0.05,
        };
        // z_e = (0.6 - 0.2) / 0.1 = 4; z_t = (0.6 - 0.4) / 0.05 = 4.
        assert!((as_norm(0.6, e, t) - 4.0).abs() < 1e-5);
        // z_e = 1, z_t = -2.
        assert!((as_norm(0.3, e, t) - (-0.5)).abs() < 1e-5);
    }

    #[test]
    fn calibration_recovers_a_known_logistic_map() {
        // Targets ~ N(1 + 0.25·e, 0.5²), non-targets ~ N(0.25·e, 0.5²) at
        // every probe quality q and enrollment quality e (deterministic
        // quantiles, not random draws): with equal variances the true LLR
        // is (μt - μn)/σ² · s - (μt² - μn²)/(2σ²) = 4·s - 2 - e.
        let mut trials = Vec::new();
        for i in 1..400 {
            let u = i as f64 / 400.0;
            let z = normal_quantile(u);
            for quality in [0.7, 1.1, 2.0] {
                for enrollment in [0.4, 1.4] {
                    let shift = 0.25 * enrollment;
                    for (mean, target) in [(1.0, true), (0.0, false)] {
                        trials.push(CalibrationTrial {
                            norm: (mean + shift + 0.5 * z) as f32,
                            quality,
                            enrollment,
                            target,
                        });
                    }
                }
            }
        }
        let c = LinearCalibration::fit(&trials).unwrap();
        // Within 2.5%: 399 quantiles stand in for the whole distributions.
        assert!((c.weights[1] - 4.0).abs() < 0.1, "{c:?}");
        assert!((c.weights[0] + 2.0).abs() < 0.05, "{c:?}");
        assert!((c.enrollment + 1.0).abs() < 0.05, "{c:?}");
        assert!(c.weights[2].abs() < 0.01 && c.weights[3].abs() < 0.01);
        assert!((c.llr(0.5, 1.1, 0.0)).abs() < 0.01);
        assert!((c.llr(0.75, 1.1, 1.0)).abs() < 0.02);
    }

    fn normal_quantile(p: f64) -> f64 {
        // Bisection on the error function's complement; accurate enough here.
        let (mut lo, mut hi) = (-8.0f64, 8.0f64);
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if normal_cdf(mid) < p {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }

    fn normal_cdf(x: f64) -> f64 {
        // Abramowitz–Stegun 7.1.26.
        let t = 1.0 / (1.0 + 0.3275911 * x.abs() / 2f64.sqrt());
        let poly = t
            * (0.254829592
                + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
        let erf = 1.0 - poly * (-(x * x) / 2.0).exp();
        0.5 * (1.0 + erf.copysign(x))
    }

    #[test]
    fn far_curve_reads_impostor_quantiles_and_interpolates_in_log_rate() {
        let impostors: Vec<f32> = (0..1000).map(|i| i as f32 / 100.0).collect();
        let curve = far_curve(&impostors, &[0.1, 0.01, 0.0001]);
        // 0.0001 of 1000 is below one trial: not listed.
        assert_eq!(
            curve,
            vec![
                FarPoint { far: 0.1, llr: 9.0 },
                FarPoint {
                    far: 0.01,
                    llr: 9.9
                }
            ]
        );
        assert_eq!(llr_at_far(&curve, 0.5), Some(9.0));
        assert_eq!(llr_at_far(&curve, 0.001), Some(9.9));
        // Halfway in log-rate between 0.1 and 0.01.
        let mid = llr_at_far(&curve, 0.1f64.sqrt() * 0.1).unwrap();
        assert!((mid - 9.45).abs() < 1e-4, "{mid}");
    }

    #[test]
    fn bands_follow_the_rate_or_the_named_channel() {
        assert_eq!(Band::of(8_000, None), Band::Narrow);
        assert_eq!(Band::of(16_000, Some("app")), Band::Wide);
        assert_eq!(Band::of(16_000, Some("Phone")), Band::Narrow);
        assert_eq!(Band::of(44_100, None), Band::Wide);
    }

    #[test]
    fn cohorts_survive_their_packed_form() {
        let norm = ScoreNorm {
            model_id: "m".into(),
            top_k: 2,
            wide: BandNorm {
                cohort: vec![vec![0.6, 0.8], vec![1.0, -0.0]],
                calibration: LinearCalibration {
                    weights: [1.0, 2.0, 3.0, 4.0],
                    enrollment: -1.5,
                },
                far_curve: vec![FarPoint { far: 0.1, llr: 1.5 }],
            },
            narrow: BandNorm {
                cohort: vec![vec![0.0, 1.0]],
                calibration: LinearCalibration {
                    weights: [0.0; 4],
                    enrollment: 0.0,
                },
                far_curve: vec![FarPoint { far: 0.1, llr: 1.5 }],
            },
            probe_speech_millis: [1_000, 4_000],
            enroll_speech_millis: [1_500, 4_000],
        };
        let text = serde_json::to_string(&norm).unwrap();
        assert_eq!(serde_json::from_str::<ScoreNorm>(&text).unwrap(), norm);
        // Top-2 against a one-embedding narrowband cohort: refused.
        assert!(norm.validate().unwrap_err().contains("narrow cohort"));
        let mut empty_curve = ScoreNorm { top_k: 1, ..norm };
        assert_eq!(empty_curve.validate(), Ok(()));
        // An enrollment weight without the range it was fitted on: refused.
        let unranged = ScoreNorm {
            enroll_speech_millis: [0, 0],
            ..empty_curve.clone()
        };
        assert!(unranged.validate().unwrap_err().contains("enrollment"));
        empty_curve.wide.far_curve.clear();
        assert!(empty_curve.validate().is_err());
    }

    #[test]
    fn impostor_llrs_score_each_picked_voiceprint_against_the_rest() {
        let band = BandNorm {
            cohort: vec![vec![0.6, 0.8], vec![1.0, 0.0], vec![0.0, 1.0]],
            calibration: LinearCalibration {
                weights: [0.5, 2.0, 0.0, 0.0],
                enrollment: -1.0,
            },
            far_curve: vec![FarPoint { far: 0.1, llr: 1.5 }],
        };
        let norm = ScoreNorm {
            model_id: "m".into(),
            top_k: 2,
            wide: band.clone(),
            narrow: band,
            probe_speech_millis: [1_000, 4_000],
            enroll_speech_millis: [1_000, 4_000],
        };
        let tenant: [&[f32]; 4] = [&[0.0, 1.0], &[-0.6, 0.8], &[0.0, -1.0], &[0.95, 0.312]];
        // The claimed voice: tenant[3] is a second account of it (cosine
        // 0.95), the others are not (0 at most).
        let claimed = [1.0, 0.0];
        let probe = [0.28, 0.96];
        let llrs = norm.impostor_llrs(Band::Wide, &claimed, &probe, 2_000, &tenant, &[2, 0, 3, 7]);
        assert_eq!(
            llrs.len(),
            2,
            "the same voice and an index past the tenant are skipped"
        );
        let expected = |i: usize| {
            let others: Vec<&[f32]> = (0..4).filter(|&j| j != i).map(|j| tenant[j]).collect();
            // Another user's enrollment counts as the longest calibrated.
            norm.score(Band::Wide, tenant[i], 4_000, &probe, 2_000, &others)
                .llr
        };
        assert_eq!(llrs, vec![expected(2), expected(0)]);
        assert!(llrs.iter().all(|l| l.is_finite()));
        // A voiceprint enrolled from 1 s moves its LLR by the enrollment
        // weight times ln 1 - ln 4; unknown counts as 4 s.
        let short = norm.score(Band::Wide, &claimed, 1_000, &probe, 2_000, &[]);
        let unknown = norm.score(Band::Wide, &claimed, 0, &probe, 2_000, &[]);
        assert!((short.llr - unknown.llr - 4f32.ln()).abs() < 1e-5);
    }

    #[test]
    fn quality_is_held_within_the_calibrated_range() {
        let range = [1_000, 4_000];
        assert_eq!(quality(2_000, range), 2f64.ln());
        assert_eq!(quality(30_000, range), 4f64.ln());
        assert_eq!(quality(200, range), 0.0);
    }
}
