//! The corpus: speakers and their utterances from a manifest, and the
//! verification clips cut from them.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use timbre::eval::read_manifest;

/// One utterance of the manifest.
#[derive(Debug, Clone)]
pub struct Utterance {
    /// Index of its speaker in [`Corpus::speakers`].
    pub speaker: usize,
    /// WAV file.
    pub path: PathBuf,
}

/// One speaker and their utterances, in manifest order.
#[derive(Debug, Clone)]
pub struct Speaker {
    /// Speaker label of the manifest.
    pub label: String,
    /// Indices into [`Corpus::utterances`].
    pub utterances: Vec<usize>,
}

/// Every utterance of a manifest, grouped by speaker in order of first appearance.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// All utterances, in manifest order.
    pub utterances: Vec<Utterance>,
    /// Speakers, in order of first appearance.
    pub speakers: Vec<Speaker>,
}

impl Corpus {
    /// Reads a TSV manifest (`speaker`, `file` relative to the manifest's folder).
    pub fn load(manifest: &Path) -> Result<Self> {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut corpus = Corpus {
            utterances: Vec::new(),
            speakers: Vec::new(),
        };
        for u in read_manifest(manifest)? {
            let speaker = *index.entry(u.speaker.clone()).or_insert_with(|| {
                corpus.speakers.push(Speaker {
                    label: u.speaker.clone(),
                    utterances: Vec::new(),
                });
                corpus.speakers.len() - 1
            });
            corpus.speakers[speaker]
                .utterances
                .push(corpus.utterances.len());
            corpus.utterances.push(Utterance {
                speaker,
                path: u.path,
            });
        }
        Ok(corpus)
    }

    /// The first `n` speakers (manifest order) with at least two utterances:
    /// one or more to enroll, at least one held out for genuine attempts.
    pub fn candidates(&self, n: usize) -> Vec<usize> {
        (0..self.speakers.len())
            .filter(|&s| self.speakers[s].utterances.len() >= 2)
            .take(n)
            .collect()
    }

    /// The bytes of utterance `u`.
    pub fn read(&self, u: usize) -> Result<Vec<u8>> {
        let path = &self.utterances[u].path;
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// The first `seconds` of a WAV file, as a WAV file of the same format.
pub fn clip(wav: &[u8], seconds: f32) -> Result<Vec<u8>> {
    let reader = hound::WavReader::new(Cursor::new(wav))?;
    let spec = reader.spec();
    let take = (spec.sample_rate as f32 * seconds) as usize * usize::from(spec.channels);
    let mut out = Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut out, spec)?;
    match spec.sample_format {
        hound::SampleFormat::Int => {
            for s in reader.into_samples::<i32>().take(take) {
                writer.write_sample(s?)?;
            }
        }
        hound::SampleFormat::Float => {
            for s in reader.into_samples::<f32>().take(take) {
                writer.write_sample(s?)?;
            }
        }
    }
    writer.finalize()?;
    Ok(out.into_inner())
}

/// Verification clips, cut on first use and kept.
pub struct Clips {
    corpus: Arc<Corpus>,
    seconds: f32,
    cache: HashMap<usize, Arc<Vec<u8>>>,
}

impl Clips {
    /// Clips of `seconds` (`0` keeps whole utterances).
    pub fn new(corpus: Arc<Corpus>, seconds: f32) -> Self {
        Self {
            corpus,
            seconds,
            cache: HashMap::new(),
        }
    }

    /// The clip of utterance `u`.
    pub fn get(&mut self, u: usize) -> Result<Arc<Vec<u8>>> {
        if let Some(c) = self.cache.get(&u) {
            return Ok(c.clone());
        }
        let raw = self.corpus.read(u)?;
        let bytes = if self.seconds > 0.0 {
            clip(&raw, self.seconds)
                .with_context(|| format!("clipping {}", self.corpus.utterances[u].path.display()))?
        } else {
            raw
        };
        let bytes = Arc::new(bytes);
        self.cache.insert(u, bytes.clone());
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(seconds: f32, rate: u32) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut out = Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
        for i in 0..(rate as f32 * seconds) as i32 {
            w.write_sample((i % 1000) as i16).unwrap();
        }
        w.finalize().unwrap();
        out.into_inner()
    }

    #[test]
    fn clips_keep_the_format_and_cut_the_length() {
        let long = wav(5.0, 16_000);
        let short = clip(&long, 3.0).unwrap();
        let r = hound::WavReader::new(Cursor::new(&short)).unwrap();
        assert_eq!(r.spec().bits_per_sample, 16);
        assert_eq!(r.duration(), 48_000);
        let samples: Vec<i16> = r.into_samples().map(Result::unwrap).collect();
        assert_eq!(samples[999], 999);
        // Shorter than the clip: kept whole.
        let r = hound::WavReader::new(Cursor::new(clip(&wav(1.0, 8_000), 3.0).unwrap())).unwrap();
        assert_eq!(r.duration(), 8_000);
    }
}
