//! Energy-based voice-activity detection.
//!
//! A frame is speech when its energy is within `DYNAMIC_RANGE_DB` of the loudest
//! frame and above an absolute floor; short gaps are bridged by a hangover so
//! that the pauses inside words count as speech, as a listener would count them.

const FRAME_MILLIS: u64 = 25;
const HOP_MILLIS: u64 = 10;
const DYNAMIC_RANGE_DB: f32 = 35.0;
const ABSOLUTE_FLOOR_DBFS: f32 = -55.0;
const HANGOVER_FRAMES: usize = 8;

/// Per-frame speech flags at a 10 ms hop.
pub fn speech_frames(samples: &[f32], rate: u32) -> Vec<bool> {
    let frame = (u64::from(rate) * FRAME_MILLIS / 1000) as usize;
    let hop = (u64::from(rate) * HOP_MILLIS / 1000) as usize;
    if samples.len() < frame || hop == 0 {
        return Vec::new();
    }
    let energies_db: Vec<f32> = samples
        .windows(frame)
        .step_by(hop)
        .map(|w| {
            let mean = w.iter().sum::<f32>() / w.len() as f32;
            let power = w.iter().map(|s| (s - mean) * (s - mean)).sum::<f32>() / w.len() as f32;
            10.0 * power.max(1e-12).log10()
        })
        .collect();
    let loudest = energies_db.iter().copied().fold(f32::MIN, f32::max);
    let threshold = (loudest - DYNAMIC_RANGE_DB).max(ABSOLUTE_FLOOR_DBFS);
    let mut flags = Vec::with_capacity(energies_db.len());
    let mut hangover = 0;
    for e in energies_db {
        if e >= threshold {
            hangover = HANGOVER_FRAMES;
            flags.push(true);
        } else if hangover > 0 {
            hangover -= 1;
            flags.push(true);
        } else {
            flags.push(false);
        }
    }
    flags
}

/// Net speech duration in milliseconds.
pub fn speech_millis(samples: &[f32], rate: u32) -> u64 {
    speech_frames(samples, rate).iter().filter(|f| **f).count() as u64 * HOP_MILLIS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_loud_part() {
        let rate = 16_000;
        let mut signal = vec![0.0001f32; rate as usize]; // 1 s near-silence
        signal.extend((0..rate).map(|i| (i as f32 * 0.07).sin() * 0.3)); // 1 s tone
        signal.extend(vec![0.0001f32; rate as usize]);
        let millis = speech_millis(&signal, rate);
        assert!((950..=1150).contains(&millis), "speech {millis} ms");
    }

    #[test]
    fn silence_has_no_speech() {
        assert_eq!(speech_millis(&vec![0.0; 16_000], 16_000), 0);
    }
}
