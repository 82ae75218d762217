//! Signals beside the voice match (prompted phrase, liveness) and the one
//! rule that fuses them with the voice verdict.
//!
//! Analysers run on a job's decoded audio in the scoring pool (see
//! `ports::Analyser`) and report a [`Signal`]; this module decides what the
//! signals mean together. A signal that did not run is `not_checked` and
//! never blocks; a signal that ran and failed turns any verdict into a reject.

use timbre_schemas::Code;

use super::policy::Verdict;

/// Tier of a signal, as reported in decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Clearly passes.
    High,
    /// Between the thresholds.
    Medium,
    /// Clearly fails.
    Low,
    /// No analyser ran for this signal.
    NotChecked,
}

impl Tier {
    /// The wire string (`Decision.signals.*`).
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::High => "high",
            Tier::Medium => "medium",
            Tier::Low => "low",
            Tier::NotChecked => "not_checked",
        }
    }
}

/// Which signal an analyser reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalKind {
    /// The prompted phrase was said.
    Phrase,
    /// Liveness: the audio is not a replay of the user's earlier audio.
    Replay,
    /// Liveness: the audio is not text-to-speech or a converted voice.
    Synthetic,
}

impl SignalKind {
    /// Whether the signal is part of liveness (one tier in decisions).
    pub fn is_liveness(self) -> bool {
        matches!(self, SignalKind::Replay | SignalKind::Synthetic)
    }
}

impl Tier {
    /// Rank for "worst of": a failing tier outranks a passing one.
    fn severity(self) -> u8 {
        match self {
            Tier::NotChecked => 0,
            Tier::High => 1,
            Tier::Medium => 2,
            Tier::Low => 3,
        }
    }
}

/// What an analyser found in a job's audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// The signal.
    pub kind: SignalKind,
    /// Tier, for the decision's `signals`.
    pub tier: Tier,
    /// Whether the signal allows an accept.
    pub pass: bool,
    /// Reason code when it does not.
    pub reason: Option<Code>,
    /// The analyser's score, when it has one.
    pub score: Option<f32>,
    /// The threshold the score had to reach to pass.
    pub threshold: Option<f32>,
}

/// The fused verdict of a verification.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    /// Final verdict.
    pub verdict: Verdict,
    /// Reasons, the deciding one first.
    pub reasons: Vec<Code>,
    /// Tier of the phrase signal.
    pub phrase: Tier,
    /// Tier of the liveness signal.
    pub liveness: Tier,
}

/// Fuses the voice verdict (and its reason) with the other signals:
/// - a failed liveness check rejects whatever the voice said;
/// - a failed phrase check is a retry (a misspoken code is not an impostor),
///   or a reject when the voice failed too;
/// - an expected phrase that no analyser checked can never be accepted;
/// - an unchecked signal that was not asked for never blocks.
pub fn fuse(
    voice: Verdict,
    voice_reason: Code,
    signals: &[Signal],
    phrase_expected: bool,
) -> Fused {
    // Liveness is one tier: the worst of its detectors'.
    let tier_of = |liveness: bool| {
        signals
            .iter()
            .filter(|s| s.kind.is_liveness() == liveness)
            .map(|s| s.tier)
            .max_by_key(|t| t.severity())
            .unwrap_or(Tier::NotChecked)
    };
    let failed = |liveness: bool| -> Vec<Code> {
        signals
            .iter()
            .filter(|s| s.kind.is_liveness() == liveness && !s.pass)
            .map(|s| s.reason.unwrap_or(Code::VoiceMismatch))
            .collect()
    };
    let (liveness_failed, phrase_failed) = (failed(true), failed(false));
    let phrase = tier_of(false);
    let phrase_unchecked = phrase_expected && phrase == Tier::NotChecked;
    let (verdict, mut reasons) = if voice == Verdict::Reject {
        // The voice already failed; the signals add to the audit trail.
        let mut reasons = vec![voice_reason];
        reasons.extend(liveness_failed);
        reasons.extend(phrase_failed);
        (Verdict::Reject, reasons)
    } else if !liveness_failed.is_empty() {
        let mut reasons = liveness_failed;
        reasons.extend(phrase_failed);
        (Verdict::Reject, reasons)
    } else if !phrase_failed.is_empty() {
        (Verdict::Retry, phrase_failed)
    } else if phrase_unchecked && voice == Verdict::Accept {
        (Verdict::Retry, vec![Code::PhraseNotChecked, voice_reason])
    } else {
        (voice, vec![voice_reason])
    };
    if phrase_unchecked && !reasons.contains(&Code::PhraseNotChecked) {
        reasons.push(Code::PhraseNotChecked);
    }
    Fused {
        verdict,
        reasons,
        phrase,
        liveness: tier_of(true),
    }
}

/// The signals with every liveness failure turned into a report: tier and
/// score kept, no failure, no reason (a tenant that does not enforce it).
pub fn liveness_reported_only(signals: &[Signal]) -> Vec<Signal> {
    signals
        .iter()
        .map(|s| {
            if s.kind.is_liveness() {
                Signal {
                    pass: true,
                    reason: None,
                    ..s.clone()
                }
            } else {
                s.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(kind: SignalKind, pass: bool, reason: Code) -> Signal {
        Signal {
            kind,
            tier: if pass { Tier::High } else { Tier::Low },
            pass,
            reason: (!pass).then_some(reason),
            score: None,
            threshold: None,
        }
    }

    #[test]
    fn fusion_table() {
        use Verdict::*;
        let phrase_bad = signal(SignalKind::Phrase, false, Code::PhraseMismatch);
        let phrase_ok = signal(SignalKind::Phrase, true, Code::PhraseMismatch);
        let live_bad = signal(SignalKind::Replay, false, Code::ReplayDetected);
        let synthetic_bad = signal(SignalKind::Synthetic, false, Code::SyntheticSpeech);
        let synthetic_medium = Signal {
            tier: Tier::Medium,
            ..signal(SignalKind::Synthetic, true, Code::SyntheticSpeech)
        };
        let replay_ok = signal(SignalKind::Replay, true, Code::ReplayDetected);
        // (voice, its reason, signals, phrase expected) → fused
        type Case = (
            Verdict,
            Code,
            Vec<Signal>,
            bool,
            Verdict,
            Vec<Code>,
            Tier,
            Tier,
        );
        #[rustfmt::skip]
        let table: Vec<Case> = vec![
            (Accept, Code::VoiceMatch, vec![], false, Accept, vec![Code::VoiceMatch], Tier::NotChecked, Tier::NotChecked),
            (Accept, Code::VoiceMatch, vec![], true, Retry, vec![Code::PhraseNotChecked, Code::VoiceMatch], Tier::NotChecked, Tier::NotChecked),
            (Retry, Code::VoiceUncertain, vec![], true, Retry, vec![Code::VoiceUncertain, Code::PhraseNotChecked], Tier::NotChecked, Tier::NotChecked),
            (Accept, Code::VoiceMatch, vec![phrase_ok.clone()], true, Accept, vec![Code::VoiceMatch], Tier::High, Tier::NotChecked),
            (Accept, Code::VoiceMatch, vec![phrase_bad.clone()], true, Retry, vec![Code::PhraseMismatch], Tier::Low, Tier::NotChecked),
            (Retry, Code::VoiceUncertain, vec![phrase_bad.clone()], true, Retry, vec![Code::PhraseMismatch], Tier::Low, Tier::NotChecked),
            (Accept, Code::VoiceMatch, vec![phrase_bad.clone(), live_bad.clone()], true, Reject, vec![Code::ReplayDetected, Code::PhraseMismatch], Tier::Low, Tier::Low),
            (Accept, Code::VoiceMatch, vec![phrase_ok, live_bad.clone()], true, Reject, vec![Code::ReplayDetected], Tier::High, Tier::Low),
            (Retry, Code::VoiceUncertain, vec![live_bad.clone()], false, Reject, vec![Code::ReplayDetected], Tier::NotChecked, Tier::Low),
            (Accept, Code::VoiceMatch, vec![replay_ok.clone(), synthetic_bad.clone()], false, Reject, vec![Code::SyntheticSpeech], Tier::NotChecked, Tier::Low),
            (Accept, Code::VoiceMatch, vec![live_bad, synthetic_bad], false, Reject, vec![Code::ReplayDetected, Code::SyntheticSpeech], Tier::NotChecked, Tier::Low),
            (Accept, Code::VoiceMatch, vec![replay_ok, synthetic_medium], false, Accept, vec![Code::VoiceMatch], Tier::NotChecked, Tier::Medium),
            (Reject, Code::VoiceMismatch, vec![phrase_bad], true, Reject, vec![Code::VoiceMismatch, Code::PhraseMismatch], Tier::Low, Tier::NotChecked),
        ];
        for (voice, reason, signals, expected, verdict, reasons, phrase, liveness) in table {
            let fused = fuse(voice, reason, &signals, expected);
            assert_eq!(
                fused,
                Fused {
                    verdict,
                    reasons,
                    phrase,
                    liveness
                },
                "voice {voice:?} with {signals:?}"
            );
        }
    }
}
