//! Sounds that are not speech, for measuring the speech detector (`timbre
//! bench vad`) and testing that they never count as enrollment speech.

use super::MODEL_SAMPLE_RATE;

/// Eight seconds of seeded white noise at a speaking level, 16 kHz.
pub fn noise() -> Vec<f32> {
    let mut state = 0x2545_f491_u32;
    (0..8 * MODEL_SAMPLE_RATE)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32 - 0.5) * 0.3
        })
        .collect()
}

/// Eight seconds of music, 16 kHz: a melody of plucked notes with
/// harmonics over a sustained bass, a note every 250 ms.
pub fn music() -> Vec<f32> {
    let melody = [261.6f32, 329.6, 392.0, 523.3, 392.0, 329.6, 293.7, 349.2];
    (0..8 * MODEL_SAMPLE_RATE)
        .map(|i| {
            let t = i as f32 / MODEL_SAMPLE_RATE as f32;
            let note = melody[(t / 0.25) as usize % melody.len()];
            let pluck: f32 = (1..=4)
                .map(|h| (std::f32::consts::TAU * note * h as f32 * t).sin() / h as f32)
                .sum();
            let bass = (std::f32::consts::TAU * 65.4 * t).sin();
            0.2 * pluck * (-(t % 0.25) * 12.0).exp() + 0.1 * bass
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_are_loud_enough_for_the_energy_estimate_to_call_them_speech() {
        for signal in [noise(), music()] {
            assert_eq!(signal.len(), 8 * MODEL_SAMPLE_RATE as usize);
            assert!(signal.iter().all(|s| s.abs() <= 1.0));
            assert!(super::super::vad::speech_millis(&signal, MODEL_SAMPLE_RATE) > 7_000);
        }
    }
}
