//! The verification mix: which user is claimed and which utterance is spoken,
//! drawn from a seeded generator so a seed always yields the same sequence.

use std::sync::Arc;

use anyhow::{Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::corpus::Corpus;

/// An enrolled user that verification attempts claim to be.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimant {
    /// User id in the target tenant.
    pub user_id: String,
    /// Index of the speaker in [`Corpus::speakers`].
    pub speaker: usize,
    /// Utterances of the speaker not used for enrollment (genuine attempts).
    pub held_out: Vec<usize>,
}

/// One verification attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// Index into the claimants.
    pub claimant: usize,
    /// Index into [`Corpus::utterances`] of what is spoken.
    pub utterance: usize,
    /// Whether the utterance is the claimed speaker's own.
    pub genuine: bool,
}

/// An endless, seeded sequence of attempts: a uniformly chosen claimant, then
/// with probability `impostor_ratio` an utterance of any other speaker of the
/// corpus (enrolled or not), else one of the claimant's held-out utterances.
pub struct Mix {
    rng: StdRng,
    impostor_ratio: f64,
    claimants: Arc<Vec<Claimant>>,
    corpus: Arc<Corpus>,
}

impl Mix {
    /// A generator over `claimants`; fails when an attempt could not be drawn.
    pub fn new(
        seed: u64,
        impostor_ratio: f64,
        claimants: Arc<Vec<Claimant>>,
        corpus: Arc<Corpus>,
    ) -> Result<Self> {
        if !(0.0..=1.0).contains(&impostor_ratio) {
            bail!("--impostor-ratio must be within 0..=1, not {impostor_ratio}");
        }
        if claimants.is_empty() {
            bail!("no enrolled speaker to verify against");
        }
        if impostor_ratio < 1.0 && claimants.iter().any(|c| c.held_out.is_empty()) {
            bail!("every claimant needs a held-out utterance for genuine attempts");
        }
        if impostor_ratio > 0.0 && corpus.speakers.len() < 2 {
            bail!("impostor attempts need a second speaker in the manifest");
        }
        Ok(Self {
            rng: StdRng::seed_from_u64(seed),
            impostor_ratio,
            claimants,
            corpus,
        })
    }

    /// The claimants drawn from.
    pub fn claimants(&self) -> &Arc<Vec<Claimant>> {
        &self.claimants
    }
}

impl Iterator for Mix {
    type Item = Attempt;

    fn next(&mut self) -> Option<Attempt> {
        let claimant = self.rng.random_range(0..self.claimants.len());
        let c = &self.claimants[claimant];
        let impostor = self.rng.random_bool(self.impostor_ratio);
        let utterance = if impostor {
            // Rejection sampling: uniform over the other speakers' utterances
            // without building a per-claimant list.
            loop {
                let u = self.rng.random_range(0..self.corpus.utterances.len());
                if self.corpus.utterances[u].speaker != c.speaker {
                    break u;
                }
            }
        } else {
            c.held_out[self.rng.random_range(0..c.held_out.len())]
        };
        Some(Attempt {
            claimant,
            utterance,
            genuine: !impostor,
        })
    }
}
