//! JSON shapes of decisions as the API returns them.

use serde_json::{Value, json};
use timbre_schemas::{Decision, DecisionKind, ProfileStatus};

/// Lower-case wire name of a decision.
pub fn decision_name(kind: DecisionKind) -> &'static str {
    match kind {
        DecisionKind::Accept => "accept",
        DecisionKind::Retry => "retry",
        DecisionKind::Reject => "reject",
        DecisionKind::Cooldown => "cooldown",
        DecisionKind::Applied => "applied",
        DecisionKind::Error => "error",
    }
}

/// Wire name of a profile status.
pub fn status_name(status: Option<ProfileStatus>) -> Option<&'static str> {
    status.map(|s| match s {
        ProfileStatus::NotEnrolled => "NOT_ENROLLED",
        ProfileStatus::Enrolled => "ENROLLED",
        ProfileStatus::ReEnroll => "RE_ENROLL",
        ProfileStatus::OptedOut => "OPTED_OUT",
        ProfileStatus::Locked => "LOCKED",
    })
}

/// The decision's signals (voice, phrase, liveness) with the phrase and
/// liveness scores against their thresholds. Those scores say nothing
/// about the voice: they are shown whatever the tenant's `expose_score`.
pub fn signals(d: &Decision) -> Option<Value> {
    let s = d.signals.as_ref()?;
    let mut signals = json!({"voice": s.voice, "phrase": s.phrase, "liveness": s.liveness});
    for (name, score, threshold) in [
        ("phrase", s.phrase_score, s.phrase_threshold),
        ("liveness", s.liveness_score, s.liveness_threshold),
        ("synthetic", s.synthetic_score, s.synthetic_threshold),
    ] {
        if let (Some(score), Some(threshold)) = (score, threshold) {
            signals[format!("{name}_score")] = json!(score);
            signals[format!("{name}_threshold")] = json!(threshold);
        }
    }
    Some(signals)
}

/// The signals as a browser sees them: tiers only. Scores and thresholds
/// would let whoever holds a client token tune a forged recording against
/// the detectors.
pub fn signal_tiers(d: &Decision) -> Option<Value> {
    let s = d.signals.as_ref()?;
    Some(json!({"voice": s.voice, "phrase": s.phrase, "liveness": s.liveness}))
}

/// What a client token's holder reads of a decision: the outcome and
/// progress, by allowlist (a field added to [`decision`] stays hidden until
/// named here), with signal tiers instead of scores.
pub fn client_decision(d: &Decision) -> Value {
    const SHOWN: [&str; 14] = [
        "request_id",
        "user_id",
        "job",
        "decision",
        "status",
        "reason",
        "reasons",
        "speech_millis",
        "enrollment_progress",
        "learning_progress",
        "processed_at",
        "retryAfterMs",
        "error",
        "message",
    ];
    let Value::Object(mut full) = decision(d, false) else {
        unreachable!("a decision view is an object")
    };
    full.retain(|k, _| SHOWN.contains(&k.as_str()));
    if let Some(s) = signal_tiers(d) {
        full.insert("signals".into(), s);
    }
    Value::Object(full)
}

/// Every field of a decision, as `GET /v1/decisions/{id}` returns it; the
/// raw score only when the tenant's policy exposes it.
pub fn decision(d: &Decision, expose_score: bool) -> Value {
    let mut v = json!({
        "request_id": d.request_id,
        "user_id": d.user_id,
        "job": format!("{:?}", d.job).to_lowercase(),
        "decision": decision_name(d.decision),
        "status": status_name(d.profile_status),
        "reason": d.main_code(),
        "reasons": d.reasons,
        "speech_millis": d.speech_millis,
        "learning_progress": d.learning_progress,
        "enrollment_progress": d.enrollment_progress,
        "model": d.model_id,
        "processed_at": d.processed_at,
    });
    let obj = v.as_object_mut().expect("object literal");
    if let Some(c) = d.confidence {
        obj.insert("confidence".into(), json!(c));
    }
    if let Some(s) = d.score.filter(|_| expose_score) {
        obj.insert("score".into(), json!(s));
    }
    if let Some(signals) = signals(d) {
        obj.insert("signals".into(), signals);
    }
    if let Some(t) = &d.thresholds {
        let mut thresholds = json!({"accept": t.accept, "reject": t.reject, "scale": t.scale});
        if let Some(band) = &t.band {
            thresholds["band"] = json!(band);
        }
        obj.insert("thresholds".into(), thresholds);
    }
    if let Some(ms) = d.retry_after_ms {
        obj.insert("retryAfterMs".into(), json!(ms));
    }
    if let Some(code) = &d.error_code {
        obj.insert("error".into(), json!(code));
        obj.insert("message".into(), json!(d.error_message));
    }
    v
}

#[cfg(test)]
mod tests {
    use timbre_schemas::JobKind;

    use super::*;

    fn accepted() -> Decision {
        Decision::new(
            "r",
            "t",
            "u",
            JobKind::Verification,
            DecisionKind::Accept,
            1,
            2,
        )
    }

    #[test]
    fn the_raw_score_shows_only_when_the_tenant_exposes_it() {
        let mut d = accepted();
        d.score = Some(0.73);
        d.confidence = Some(0.99);
        let hidden = decision(&d, false);
        assert!(hidden.get("score").is_none(), "{hidden}");
        assert_eq!(hidden["confidence"], json!(0.99_f32));
        assert_eq!(decision(&d, true)["score"], json!(0.73_f32));
    }

    #[test]
    fn a_client_token_sees_tiers_not_scores() {
        let mut d = accepted();
        d.score = Some(1.7);
        d.confidence = Some(0.99);
        d.model_id = Some("m".into());
        d.thresholds = Some(timbre_schemas::Thresholds {
            accept: 1.4,
            reject: -5.4,
            scale: "llr".into(),
            band: Some("wide".into()),
        });
        d.signals = Some(timbre_schemas::Signals {
            voice: "high".into(),
            phrase: "high".into(),
            liveness: "high".into(),
            phrase_score: Some(1.0),
            phrase_threshold: Some(0.1),
            liveness_score: Some(0.01),
            liveness_threshold: Some(0.5),
            synthetic_score: Some(3.0),
            synthetic_threshold: Some(0.0),
        });
        let full = decision(&d, true);
        for shown in ["score", "confidence", "thresholds", "model"] {
            assert!(full.get(shown).is_some(), "{shown}: {full}");
        }
        assert!(full["signals"].get("synthetic_score").is_some());
        let client = client_decision(&d);
        for hidden in ["score", "confidence", "thresholds", "model"] {
            assert!(client.get(hidden).is_none(), "{hidden}: {client}");
        }
        assert_eq!(
            client["signals"],
            json!({"voice": "high", "phrase": "high", "liveness": "high"})
        );
        assert_eq!(client["decision"], "accept");
    }
}
