//! The WAV front end on real good and bad bytes: every refusal has its stable
//! code, every supported encoding decodes to the same 16 kHz mono signal, and
//! arbitrary bytes never panic.

use std::io::Cursor;

use proptest::prelude::*;
use timbre::audio::{AudioError, AudioLimits, decode_wav};

fn wav<S: hound::Sample + Copy>(
    rate: u32,
    channels: u16,
    bits: u16,
    format: hound::SampleFormat,
    samples: &[S],
) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: format,
    };
    let mut out = Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
    for s in samples {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
    out.into_inner()
}

/// A voiced-like test signal: a 150 Hz harmonic stack, 1.5 s.
fn signal(rate: u32) -> Vec<f32> {
    let n = rate as usize * 3 / 2;
    (0..n)
        .map(|i| {
            let t = i as f32 / rate as f32;
            (1..6)
                .map(|h| (2.0 * std::f32::consts::PI * 150.0 * h as f32 * t).sin() / h as f32)
                .sum::<f32>()
                * 0.2
        })
        .collect()
}

fn pcm16(rate: u32, x: &[f32]) -> Vec<u8> {
    let s: Vec<i16> = x.iter().map(|v| (v * 32767.0) as i16).collect();
    wav(rate, 1, 16, hound::SampleFormat::Int, &s)
}

fn code(bytes: &[u8]) -> &'static str {
    decode_wav(bytes, &AudioLimits::default())
        .unwrap_err()
        .code()
        .as_str()
}

#[test]
fn refusals_have_stable_codes() {
    assert_eq!(code(b""), "empty_audio");
    assert_eq!(code(b"hello, this is not audio at all"), "not_wav");
    assert_eq!(code(include_bytes!("audio_inputs.rs")), "not_wav");
    // 4 kHz and 96 kHz are outside the supported range.
    assert_eq!(code(&pcm16(4_000, &signal(4_000))), "unsupported_rate");
    assert_eq!(
        code(&pcm16(96_000, &signal(96_000)[..9_600])),
        "unsupported_rate"
    );
    assert_eq!(code(&pcm16(16_000, &signal(16_000)[..1_600])), "too_short");
    let long: Vec<f32> = signal(8_000)
        .iter()
        .cycle()
        .take(8_000 * 61)
        .copied()
        .collect();
    assert_eq!(code(&pcm16(8_000, &long)), "too_long");
    assert_eq!(code(&pcm16(16_000, &vec![0.0; 16_000])), "silent_audio");
    let square: Vec<f32> = (0..16_000)
        .map(|i| if (i / 40) % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    assert_eq!(code(&pcm16(16_000, &square)), "clipped_audio");
    let mut nan = signal(16_000);
    nan[100] = f32::NAN;
    assert_eq!(
        code(&wav(16_000, 1, 32, hound::SampleFormat::Float, &nan)),
        "non_finite_samples"
    );
}

#[test]
fn truncated_data_is_corrupt_not_a_panic() {
    let bytes = pcm16(16_000, &signal(16_000));
    let err = decode_wav(&bytes[..bytes.len() / 2 + 1], &AudioLimits::default()).unwrap_err();
    assert_eq!(err.code(), "corrupt_audio", "{err}");
}

#[test]
fn a_law_is_an_unsupported_encoding() {
    let mut bytes = pcm16(8_000, &signal(8_000));
    // fmt chunk: audio format tag at byte 20 (1 = PCM, 6 = A-law); 8-bit.
    bytes[20] = 6;
    bytes[34] = 8;
    let err = decode_wav(&bytes, &AudioLimits::default()).unwrap_err();
    assert_eq!(err.code(), "unsupported_encoding", "{err}");
}

#[test]
fn every_encoding_decodes_to_the_same_signal() {
    let x = signal(16_000);
    let reference = decode_wav(&pcm16(16_000, &x), &AudioLimits::default()).unwrap();
    let stereo: Vec<i16> = x.iter().flat_map(|v| [(v * 32767.0) as i16; 2]).collect();
    let variants = [
        (
            "pcm8",
            wav(
                16_000,
                1,
                8,
                hound::SampleFormat::Int,
                &x.iter().map(|v| (v * 127.0) as i8).collect::<Vec<_>>(),
            ),
        ),
        (
            "pcm24",
            wav(
                16_000,
                1,
                24,
                hound::SampleFormat::Int,
                &x.iter()
                    .map(|v| (v * 8_388_607.0) as i32)
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "pcm32",
            wav(
                16_000,
                1,
                32,
                hound::SampleFormat::Int,
                &x.iter()
                    .map(|v| (f64::from(*v) * 2_147_483_647.0) as i32)
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "float32",
            wav(16_000, 1, 32, hound::SampleFormat::Float, &x),
        ),
        (
            "stereo16",
            wav(16_000, 2, 16, hound::SampleFormat::Int, &stereo),
        ),
    ];
    for (name, bytes) in variants {
        let got =
            decode_wav(&bytes, &AudioLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.samples.len(), reference.samples.len(), "{name}");
        let tolerance = if name == "pcm8" { 1.0 / 64.0 } else { 1e-3 };
        let worst = got
            .samples
            .iter()
            .zip(&reference.samples)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < tolerance, "{name}: max diff {worst}");
        assert_eq!(got.source_channels, if name == "stereo16" { 2 } else { 1 });
    }
}

#[test]
fn common_rates_resample_to_16k_with_speech_detected() {
    for rate in [8_000, 11_025, 22_050, 44_100, 48_000] {
        let got = decode_wav(&pcm16(rate, &signal(rate)), &AudioLimits::default()).unwrap();
        assert_eq!(got.source_rate, rate);
        assert!(
            (got.samples.len() as i64 - 24_000).abs() <= 1,
            "{rate}: {}",
            got.samples.len()
        );
        assert!(
            got.speech_millis >= 1_300,
            "{rate}: speech {} ms",
            got.speech_millis
        );
    }
}

#[test]
fn error_codes_are_distinct() {
    let all = [
        AudioError::NotWav(String::new()),
        AudioError::UnsupportedEncoding(String::new()),
        AudioError::UnsupportedRate(0),
        AudioError::Corrupt(String::new()),
        AudioError::Empty,
        AudioError::TooShort {
            millis: 0,
            min_millis: 0,
        },
        AudioError::TooLong {
            millis: 0,
            max_millis: 0,
        },
        AudioError::NonFinite,
        AudioError::Clipped { percent: 0.0 },
        AudioError::Silent,
    ];
    let codes: std::collections::HashSet<_> = all.iter().map(AudioError::code).collect();
    assert_eq!(codes.len(), all.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode_wav(&bytes, &AudioLimits::default());
    }

    #[test]
    fn mutated_wav_headers_never_panic(
        flips in proptest::collection::vec((0usize..64, any::<u8>()), 1..8),
        cut in 0usize..4000,
    ) {
        let mut bytes = pcm16(16_000, &signal(16_000)[..4_000]);
        for (at, value) in flips {
            bytes[at] = value;
        }
        bytes.truncate(cut.max(12));
        let _ = decode_wav(&bytes, &AudioLimits::default());
    }
}
