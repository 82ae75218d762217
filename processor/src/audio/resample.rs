use rubato::{FftFixedIn, Resampler};

const CHUNK: usize = 1024;

/// Band-limited resampling of mono audio (FFT-based, anti-aliased), with the
/// resampler's delay removed so the output lines up with the input.
pub fn resample_to(input: &[f32], from_rate: u32, to_rate: u32) -> Vec<f32> {
    if from_rate == to_rate || input.is_empty() {
        return input.to_vec();
    }
    let expected =
        (input.len() as u64 * u64::from(to_rate)).div_ceil(u64::from(from_rate)) as usize;
    let mut resampler = FftFixedIn::<f32>::new(from_rate as usize, to_rate as usize, CHUNK, 2, 1)
        .expect("rates are validated by the decoder and the chunk size is fixed");
    let delay = resampler.output_delay();
    let mut out = Vec::with_capacity(expected + delay + CHUNK);
    let mut chunks = input.chunks_exact(CHUNK);
    for chunk in chunks.by_ref() {
        let block = resampler
            .process(&[chunk], None)
            .expect("full chunks match the resampler's input size");
        out.extend_from_slice(&block[0]);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let block = resampler
            .process_partial(Some(&[rest]), None)
            .expect("a partial chunk is zero-padded by the resampler");
        out.extend_from_slice(&block[0]);
    }
    // Flush the filter tail until the delayed signal is fully out.
    while out.len() < expected + delay {
        let block = resampler
            .process_partial::<&[f32]>(None, None)
            .expect("flushing never fails");
        out.extend_from_slice(&block[0]);
    }
    out.drain(..delay);
    out.truncate(expected);
    out
}

/// Model-rate audio as an 8 kHz channel (classic telephony) would deliver
/// it: down to 8 kHz and back, everything above 4 kHz gone.
pub fn through_narrowband(samples: &[f32]) -> Vec<f32> {
    use super::MODEL_SAMPLE_RATE;
    resample_to(
        &resample_to(samples, MODEL_SAMPLE_RATE, 8_000),
        8_000,
        MODEL_SAMPLE_RATE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32, rate: u32, seconds: f32) -> Vec<f32> {
        let n = (rate as f32 * seconds) as usize;
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    fn power_at(signal: &[f32], freq: f32, rate: u32) -> f32 {
        let (mut re, mut im) = (0f64, 0f64);
        for (i, s) in signal.iter().enumerate() {
            let phase = 2.0 * std::f64::consts::PI * f64::from(freq) * i as f64 / f64::from(rate);
            re += f64::from(*s) * phase.cos();
            im += f64::from(*s) * phase.sin();
        }
        ((re * re + im * im).sqrt() / signal.len() as f64) as f32
    }

    #[test]
    fn keeps_length_and_in_band_tones_aligned() {
        for rate in [8_000, 11_025, 22_050, 44_100, 48_000] {
            let input = tone(440.0, rate, 1.0);
            let out = resample_to(&input, rate, 16_000);
            assert_eq!(out.len(), 16_000, "rate {rate}");
            let reference = tone(440.0, 16_000, 1.0);
            // Skip the edges where the filter sees zero padding.
            let err: f32 = out[800..15_200]
                .iter()
                .zip(&reference[800..15_200])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            // The filter delay is trimmed in whole output samples, so the
            // output may lead or lag by up to half a sample: bound the error
            // by the tone's largest change over half a sample.
            let half_sample_slope = 0.5 * 2.0 * std::f32::consts::PI * 440.0 * 0.5 / 16_000.0;
            assert!(
                err < half_sample_slope + 0.005,
                "rate {rate}: max error {err}"
            );
        }
    }

    #[test]
    fn removes_content_above_the_new_nyquist() {
        // 12 kHz folds to 4 kHz under naive decimation; a band-limited
        // resampler must remove it instead.
        let input = tone(12_000.0, 48_000, 1.0);
        let out = resample_to(&input, 48_000, 16_000);
        assert!(power_at(&out, 4_000.0, 16_000) < 1e-3);
        assert!(power_at(&input, 12_000.0, 48_000) > 0.2);
    }
}
