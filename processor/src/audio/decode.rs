use std::io::Cursor;

use super::{AudioError, MODEL_SAMPLE_RATE, resample_to, vad};

/// Bounds an input must respect; defaults match the documented config.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioLimits {
    /// Inputs shorter than this are refused (`too_short`).
    pub min_millis: u64,
    /// Inputs longer than this are refused (`too_long`), checked from the header
    /// before any sample is read.
    pub max_millis: u64,
    /// Share of samples at full scale above which the input is `clipped_audio`.
    pub max_clipped_fraction: f32,
    /// Peak level (dBFS) under which the input is `silent_audio`.
    pub silence_peak_dbfs: f32,
}

impl Default for AudioLimits {
    fn default() -> Self {
        Self {
            min_millis: 250,
            max_millis: 60_000,
            max_clipped_fraction: 0.05,
            silence_peak_dbfs: -60.0,
        }
    }
}

/// Audio ready for the model: mono, 16 kHz, float samples in [-1, 1].
#[derive(Debug, Clone)]
pub struct DecodedAudio {
    /// Mono samples at [`MODEL_SAMPLE_RATE`].
    pub samples: Vec<f32>,
    /// Sample rate of the input file.
    pub source_rate: u32,
    /// Channels of the input file (mixed down to mono).
    pub source_channels: u16,
    /// Duration of the input.
    pub duration_millis: u64,
    /// Net speech found by the voice-activity detector.
    pub speech_millis: u64,
}

const MIN_RATE: u32 = 8_000;
const MAX_RATE: u32 = 48_000;
/// A sample this close to full scale counts as clipped.
const CLIP_LEVEL: f32 = 0.999;

/// Decodes WAV bytes (PCM 8/16/24/32-bit or float32, any channel count) into
/// 16 kHz mono float audio, refusing inputs outside `limits` with a typed error.
pub fn decode_wav(bytes: &[u8], limits: &AudioLimits) -> Result<DecodedAudio, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    if !is_wav_container(bytes) {
        return Err(AudioError::NotWav("missing RIFF/WAVE header".into()));
    }
    let reader = hound::WavReader::new(Cursor::new(bytes)).map_err(header_error)?;
    let spec = reader.spec();
    if !(MIN_RATE..=MAX_RATE).contains(&spec.sample_rate) {
        return Err(AudioError::UnsupportedRate(spec.sample_rate));
    }
    if spec.channels == 0 {
        return Err(AudioError::UnsupportedEncoding("zero channels".into()));
    }
    let frames = u64::from(reader.duration());
    let header_millis = frames * 1000 / u64::from(spec.sample_rate);
    if header_millis > limits.max_millis {
        return Err(AudioError::TooLong {
            millis: header_millis,
            max_millis: limits.max_millis,
        });
    }
    let interleaved = read_samples(reader, spec)?;
    let channels = usize::from(spec.channels);
    let mono = mix_down(&interleaved, channels);
    if mono.is_empty() {
        return Err(AudioError::Empty);
    }
    let duration_millis = mono.len() as u64 * 1000 / u64::from(spec.sample_rate);
    if duration_millis < limits.min_millis {
        return Err(AudioError::TooShort {
            millis: duration_millis,
            min_millis: limits.min_millis,
        });
    }
    check_levels(&mono, limits)?;
    let samples = if spec.sample_rate == MODEL_SAMPLE_RATE {
        mono
    } else {
        resample_to(&mono, spec.sample_rate, MODEL_SAMPLE_RATE)
    };
    let speech_millis = vad::speech_millis(&samples, MODEL_SAMPLE_RATE);
    Ok(DecodedAudio {
        samples,
        source_rate: spec.sample_rate,
        source_channels: spec.channels,
        duration_millis,
        speech_millis,
    })
}

fn header_error(err: hound::Error) -> AudioError {
    match err {
        hound::Error::Unsupported => {
            AudioError::UnsupportedEncoding("unsupported wav format".into())
        }
        hound::Error::FormatError(msg) => AudioError::NotWav(msg.to_string()),
        other => AudioError::Corrupt(other.to_string()),
    }
}

fn data_error(err: hound::Error) -> AudioError {
    match err {
        hound::Error::Unsupported => {
            AudioError::UnsupportedEncoding("unsupported wav format".into())
        }
        other => AudioError::Corrupt(other.to_string()),
    }
}

fn read_samples(
    reader: hound::WavReader<Cursor<&[u8]>>,
    spec: hound::WavSpec,
) -> Result<Vec<f32>, AudioError> {
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => {
            let samples = reader
                .into_samples::<f32>()
                .collect::<Result<Vec<_>, _>>()
                .map_err(data_error)?;
            if samples.iter().any(|s| !s.is_finite()) {
                return Err(AudioError::NonFinite);
            }
            Ok(samples)
        }
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            // Same scaling as torchaudio.load: full scale maps to [-1, 1).
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| (f64::from(v) * scale) as f32))
                .collect::<Result<Vec<_>, _>>()
                .map_err(data_error)
        }
        (format, bits) => Err(AudioError::UnsupportedEncoding(format!(
            "{format:?} {bits}-bit"
        ))),
    }
}

fn mix_down(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels == 1 {
        return interleaved.to_vec();
    }
    let gain = 1.0 / channels as f32;
    interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() * gain)
        .collect()
}

fn check_levels(samples: &[f32], limits: &AudioLimits) -> Result<(), AudioError> {
    let peak = samples.iter().fold(0f32, |m, s| m.max(s.abs()));
    let peak_dbfs = 20.0 * peak.max(1e-12).log10();
    if peak_dbfs < limits.silence_peak_dbfs {
        return Err(AudioError::Silent);
    }
    let clipped = samples.iter().filter(|s| s.abs() >= CLIP_LEVEL).count();
    let fraction = clipped as f32 / samples.len() as f32;
    if fraction > limits.max_clipped_fraction {
        return Err(AudioError::Clipped {
            percent: fraction * 100.0,
        });
    }
    Ok(())
}

/// Whether `bytes` start like a RIFF/WAVE file (what the API checks before
/// accepting an upload; decoding decides the rest).
pub fn is_wav_container(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE"
}

/// 16-bit mono WAV bytes of `samples` (clipped to [-1, 1]) at `rate`.
pub fn encode_wav(samples: &[f32], rate: u32) -> Vec<u8> {
    encode_wav_pcm16(
        samples
            .iter()
            .map(|s| (s.clamp(-1.0, 1.0) * 32_767.0).round() as i16),
        rate,
    )
}

/// 16-bit mono WAV bytes of `samples` at `rate`.
pub fn encode_wav_pcm16(samples: impl IntoIterator<Item = i16>, rate: u32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut out, spec).expect("writing to memory");
    for s in samples {
        writer.write_sample(s).expect("writing to memory");
    }
    writer.finalize().expect("writing to memory");
    out.into_inner()
}
