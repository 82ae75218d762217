//! The score normalisation bundled with the engine: impostor cohorts and
//! LLR calibration of the default speaker model, built by `timbre
//! calibrate` (`processor/scripts/build-score-norm.sh`).

use crate::domain::calibration::ScoreNorm;

/// The bundled score normalisation, when it was made for `model_id`.
/// Models without one (a re-scoring target, a custom model) are scored on
/// raw cosine against the policy's cosine thresholds.
pub fn bundled_score_norm(model_id: &str) -> Option<ScoreNorm> {
    let norm: ScoreNorm = serde_json::from_str(include_str!("score_norm.json"))
        .expect("the bundled score normalisation parses (checked by its unit test)");
    norm.validate()
        .expect("the bundled score normalisation is valid (checked by its unit test)");
    (norm.model_id == model_id).then_some(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::calibration::Band;

    #[test]
    fn the_bundled_normalisation_is_complete() {
        let norm: ScoreNorm = serde_json::from_str(include_str!("score_norm.json")).unwrap();
        assert!(bundled_score_norm(&norm.model_id).is_some());
        assert!(bundled_score_norm("another-model").is_none());
        for band in [&norm.wide, &norm.narrow] {
            assert!(band.cohort.len() >= norm.top_k && norm.top_k > 0);
            assert!(band.cohort.iter().all(|e| e.len() == 192));
            // Higher normalised scores mean more likely the same speaker.
            assert!(band.calibration.weights[1] > 0.0);
        }
        assert_eq!(norm.validate(), Ok(()));
        // A stricter false-accept rate needs a higher LLR, in each band.
        for band in [Band::Wide, Band::Narrow] {
            assert!(norm.threshold(band, 0.001) > norm.threshold(band, 0.01));
            assert!(norm.threshold(band, 0.01) > norm.threshold(band, 0.1));
        }
        // The default policy's rates are on the curves.
        assert!(norm.lowest_far() <= crate::domain::Policy::default().accept_far);
    }
}
