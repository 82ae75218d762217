//! Rule tables: every rule, no model, no store. The last test checks that
//! the tables produce every reason and refusal code there is.

use std::collections::BTreeSet;

use timbre_schemas::{
    Code, CodeClass, ConsentChanged, DecisionKind, EnrollmentRequested, ProfileCommand,
    ProfileCommandKind, RescoreRequested, VerificationRequested,
};

use super::*;
use crate::domain::{
    BIOMETRIC_PURPOSE, Consent, Mutation, Outcome, Policy, ProfileStatus, Signal, SignalKind, Tier,
    Voiceprint, WatchlistEntry,
};

const NOW: i64 = 1_000_000;

/// A unit vector at cosine `score` from `[1, 0]`.
fn at(score: f32) -> Vec<f32> {
    vec![score, (1.0 - score * score).max(0.0).sqrt()]
}

fn voiceprint(weight: f32) -> Voiceprint {
    Voiceprint {
        tenant: "t".into(),
        user_id: "u".into(),
        model_id: "m1".into(),
        embedding: vec![1.0, 0.0],
        weight,
        updated_at: 0,
    }
}

fn profile(status: ProfileStatus, failures: u32, cooldown_until: i64) -> Profile {
    Profile {
        status,
        failures,
        cooldown_until,
        samples: 4,
        net_speech_millis: 20_000,
        ..new_profile("t", "u", 0)
    }
}

fn consent(granted: bool, retain_audio: bool) -> Consent {
    Consent {
        tenant: "t".into(),
        user_id: "u".into(),
        purpose: BIOMETRIC_PURPOSE.into(),
        granted,
        retain_audio,
        updated_at: 0,
    }
}

fn sample(score: f32, speech_millis: u64) -> Analysis {
    Analysis {
        embedding: at(score),
        speech_millis,
        source_rate: 16_000,
        signals: Vec::new(),
        fingerprint: None,
    }
}

fn ctx(policy: &Policy) -> Context<'_> {
    Context {
        policy,
        now: NOW,
        norm: None,
    }
}

fn codes(o: &Outcome) -> Vec<Code> {
    match &o.error {
        Some(e) => vec![e.code],
        None => o.reasons.clone(),
    }
}

fn written_profile(o: &Outcome) -> Option<&Profile> {
    o.mutations.iter().find_map(|m| match m {
        Mutation::PutProfile(p) => Some(p),
        _ => None,
    })
}

fn written_voiceprint(o: &Outcome) -> Option<&Voiceprint> {
    o.mutations.iter().find_map(|m| match m {
        Mutation::PutVoiceprint(v) => Some(v),
        _ => None,
    })
}

fn verification(phrase: bool) -> VerificationRequested {
    let mut job = VerificationRequested::new("r", "t", "u", 1, vec![1]);
    job.expected_phrase = phrase.then(|| "1 2 3".into());
    job
}

/// Runs a verification through both steps, with an empty watchlist.
fn verify(
    loaded: verification::Loaded,
    analysis: &Analysis,
    phrase: bool,
    policy: &Policy,
) -> Outcome {
    verify_listed(loaded, &[], analysis, phrase, policy)
}

/// Runs a verification through both steps against `watchlist`.
fn verify_listed(
    loaded: verification::Loaded,
    watchlist: &[WatchlistEntry],
    analysis: &Analysis,
    phrase: bool,
    policy: &Policy,
) -> Outcome {
    let job = verification(phrase);
    match verification::admit(&job, loaded, ctx(policy)) {
        Ok(admitted) => verification::decide(&job, admitted, watchlist, analysis, ctx(policy)),
        Err(refused) => *refused,
    }
}

fn enrolled(failures: u32, cooldown_until: i64) -> verification::Loaded {
    verification::Loaded {
        profile: Some(profile(ProfileStatus::Enrolled, failures, cooldown_until)),
        voiceprint: Some(voiceprint(1.0)),
        model_id: "m1".into(),
    }
}

fn enroll(loaded: enrollment::Loaded, analysis: &Analysis, policy: &Policy) -> Outcome {
    let job = EnrollmentRequested::new("r", "t", "u", 1, vec![7]);
    match enrollment::admit(&loaded, ctx(policy)) {
        Ok(()) => enrollment::decide(&job, loaded, analysis, ctx(policy)),
        Err(refused) => *refused,
    }
}

/// Every verification case: name, loaded state, score, speech, expected
/// decision, codes, failures after, whether the voiceprint is refined.
fn verification_table(policy: &Policy) -> Vec<(&'static str, Outcome, DecisionKind, Vec<Code>)> {
    let listed = |user: &str, embedding: Vec<f32>| WatchlistEntry {
        tenant: "t".into(),
        user_id: user.into(),
        model_id: "m1".into(),
        embedding,
        reason: String::new(),
        added_at: 0,
    };
    let listed_user = [listed("u", vec![0.0, 1.0])];
    let listed_voice = [listed("fraudster", at(0.9))];
    let other_model_voice = [WatchlistEntry {
        model_id: "m0".into(),
        ..listed("fraudster", at(0.9))
    }];
    let re_enroll_with_voiceprint = verification::Loaded {
        profile: Some(profile(ProfileStatus::ReEnroll, 0, 0)),
        ..enrolled(0, 0)
    };
    let re_enroll_without = verification::Loaded {
        profile: Some(profile(ProfileStatus::ReEnroll, 0, 0)),
        voiceprint: None,
        ..enrolled(0, 0)
    };
    let model_changed = verification::Loaded {
        voiceprint: None,
        ..enrolled(0, 0)
    };
    let status = |s| verification::Loaded {
        profile: Some(profile(s, 0, 0)),
        ..enrolled(0, 0)
    };
    let phrase_failed = Analysis {
        signals: vec![Signal {
            kind: SignalKind::Phrase,
            tier: Tier::Low,
            pass: false,
            reason: Some(Code::PhraseMismatch),
            score: None,
            threshold: None,
        }],
        ..sample(0.95, 3_000)
    };
    use Code::*;
    use DecisionKind as K;
    vec![
        (
            "clear match refines",
            verify(enrolled(0, 0), &sample(0.95, 3_000), false, policy),
            K::Accept,
            vec![VoiceMatch, VoiceprintRefined],
        ),
        (
            "match below the refine margin",
            verify(enrolled(0, 0), &sample(0.55, 3_000), false, policy),
            K::Accept,
            vec![VoiceMatch],
        ),
        (
            "a match with an unchecked phrase is never accepted",
            verify(enrolled(0, 0), &sample(0.55, 3_000), true, policy),
            K::Retry,
            vec![PhraseNotChecked, VoiceMatch],
        ),
        (
            "uncertain",
            verify(enrolled(0, 0), &sample(0.40, 3_000), false, policy),
            K::Retry,
            vec![VoiceUncertain],
        ),
        (
            "mismatch",
            verify(enrolled(0, 0), &sample(0.10, 3_000), false, policy),
            K::Reject,
            vec![VoiceMismatch],
        ),
        (
            "failed phrase turns a match into a retry",
            verify(enrolled(0, 0), &phrase_failed, true, policy),
            K::Retry,
            vec![PhraseMismatch],
        ),
        (
            "too little speech",
            verify(enrolled(0, 0), &sample(0.95, 500), false, policy),
            K::Retry,
            vec![NotEnoughSpeech],
        ),
        (
            "listed user",
            verify_listed(
                enrolled(0, 0),
                &listed_user,
                &sample(0.95, 3_000),
                false,
                policy,
            ),
            K::Reject,
            vec![WatchlistMatch],
        ),
        (
            "listed voice",
            verify_listed(
                enrolled(0, 0),
                &listed_voice,
                &sample(0.95, 3_000),
                false,
                policy,
            ),
            K::Reject,
            vec![WatchlistMatch],
        ),
        (
            "listed voice of another model",
            verify_listed(
                enrolled(0, 0),
                &other_model_voice,
                &sample(0.95, 3_000),
                false,
                policy,
            ),
            K::Accept,
            vec![VoiceMatch, VoiceprintRefined],
        ),
        (
            "cooling down",
            verify(
                enrolled(3, NOW + 5_000),
                &sample(0.95, 3_000),
                false,
                policy,
            ),
            K::Cooldown,
            vec![Cooldown],
        ),
        (
            "cooldown over",
            verify(enrolled(3, NOW - 1), &sample(0.95, 3_000), false, policy),
            K::Accept,
            vec![VoiceMatch, VoiceprintRefined],
        ),
        (
            "no profile",
            verify(
                verification::Loaded::default(),
                &sample(0.95, 3_000),
                false,
                policy,
            ),
            K::Error,
            vec![ProfileNotFound],
        ),
        (
            "not enrolled",
            verify(
                status(ProfileStatus::NotEnrolled),
                &sample(0.95, 3_000),
                false,
                policy,
            ),
            K::Error,
            vec![NotEnrolled],
        ),
        (
            "opted out",
            verify(
                status(ProfileStatus::OptedOut),
                &sample(0.95, 3_000),
                false,
                policy,
            ),
            K::Error,
            vec![OptedOut],
        ),
        (
            "re-enroll, voiceprint back",
            verify(
                re_enroll_with_voiceprint,
                &sample(0.95, 3_000),
                false,
                policy,
            ),
            K::Accept,
            vec![VoiceMatch, VoiceprintRefined],
        ),
        (
            "re-enroll, still none",
            verify(re_enroll_without, &sample(0.95, 3_000), false, policy),
            K::Error,
            vec![ReEnrollRequired],
        ),
        (
            "model changed",
            verify(model_changed, &sample(0.95, 3_000), false, policy),
            K::Error,
            vec![ReEnrollRequired],
        ),
    ]
}

#[test]
fn verification_rules() {
    let policy = Policy::default();
    for (name, outcome, kind, expected) in verification_table(&policy) {
        assert_eq!((outcome.kind, codes(&outcome)), (kind, expected), "{name}");
        let refined = written_voiceprint(&outcome).is_some();
        assert_eq!(
            refined,
            outcome.reasons.contains(&Code::VoiceprintRefined),
            "{name}: a voiceprint is written exactly when refined"
        );
        if let Some(e) = &outcome.error {
            assert!(!e.dead_letter, "{name}: refusals are not dead-lettered");
        }
    }
}

#[test]
fn model_change_marks_the_profile_re_enroll() {
    let policy = Policy::default();
    let loaded = verification::Loaded {
        voiceprint: None,
        ..enrolled(0, 0)
    };
    let o = verify(loaded, &sample(0.9, 3_000), false, &policy);
    assert_eq!(
        written_profile(&o).map(|p| p.status),
        Some(ProfileStatus::ReEnroll)
    );
}

#[test]
fn cooldown_ladder_through_failures() {
    let policy = Policy::default();
    // failures before → (failures after, cooldown started)
    let table = [
        (0, 1, None),
        (1, 2, None),
        (2, 3, Some(30_000)),
        (3, 4, Some(60_000)),
        (4, 5, Some(120_000)),
        (6, 7, Some(480_000)),
    ];
    for (before, after, cooldown) in table {
        let o = verify(enrolled(before, 0), &sample(0.1, 3_000), false, &policy);
        let p = written_profile(&o).expect("a failure is written");
        assert_eq!(p.failures, after, "failures after {before}");
        assert_eq!(o.retry_after_ms, cooldown, "cooldown after {before}");
        assert_eq!(p.cooldown_until, cooldown.map_or(0, |c| NOW + c));
    }
    // Without a lockout the ladder is capped.
    let no_lockout = Policy {
        lockout_after_cooldowns: 0,
        ..Policy::default()
    };
    let o = verify(enrolled(30, 0), &sample(0.1, 3_000), false, &no_lockout);
    assert_eq!(
        o.retry_after_ms,
        Some(no_lockout.max_cooldown_millis as i64)
    );
    // A success clears the ladder.
    let o = verify(enrolled(2, 0), &sample(0.9, 3_000), false, &policy);
    let p = written_profile(&o).unwrap();
    assert_eq!((p.failures, p.cooldown_until), (0, 0));
    // While cooling down nothing is written and the wait is reported.
    let o = verify(
        enrolled(3, NOW + 7_000),
        &sample(0.9, 3_000),
        false,
        &policy,
    );
    assert!(o.mutations.is_empty());
    assert_eq!(o.retry_after_ms, Some(7_000));
}

#[test]
fn repeated_cooldowns_end_in_a_lockout_only_an_unlock_lifts() {
    let policy = Policy::default();
    // 3 free failures and 5 cooldowns (failures 3..=7) are allowed.
    let o = verify(enrolled(6, 0), &sample(0.1, 3_000), false, &policy);
    assert_eq!(written_profile(&o).unwrap().status, ProfileStatus::Enrolled);
    let o = verify(enrolled(7, 0), &sample(0.1, 3_000), false, &policy);
    let p = written_profile(&o).unwrap().clone();
    assert_eq!((p.status, p.failures), (ProfileStatus::Locked, 8));
    assert_eq!(codes(&o), vec![Code::VoiceMismatch, Code::ProfileLocked]);
    assert_eq!(o.retry_after_ms, None, "no wait ends a lockout");
    // Locked: even the right voice is refused, unscored, and enrollment too.
    let locked = verification::Loaded {
        profile: Some(p.clone()),
        ..enrolled(0, 0)
    };
    let o = verify(locked, &sample(0.95, 3_000), false, &policy);
    assert_eq!(
        (o.kind, codes(&o)),
        (DecisionKind::Error, vec![Code::ProfileLocked])
    );
    assert!(o.mutations.is_empty());
    let o = enroll(
        enrollment::Loaded {
            profile: Some(p.clone()),
            consent: Some(consent(true, true)),
            voiceprint: Some(voiceprint(3.0)),
            model_id: "m1".into(),
        },
        &sample(0.95, 8_000),
        &policy,
    );
    assert_eq!(codes(&o), vec![Code::ProfileLocked]);
    // An admin unlock restores the enrolled profile with a clean ladder.
    let o = profile::decide(
        &command(ProfileCommandKind::Unlock),
        profile::Loaded {
            profile: Some(p),
            voiceprint: None,
        },
        ctx(&policy),
    );
    let p = written_profile(&o).unwrap();
    assert_eq!(
        (p.status, p.failures, p.cooldown_until),
        (ProfileStatus::Enrolled, 0, 0)
    );
    // A tenant may turn the lockout off.
    let never = Policy {
        lockout_after_cooldowns: 0,
        ..Policy::default()
    };
    let o = verify(enrolled(50, 0), &sample(0.1, 3_000), false, &never);
    assert_eq!(written_profile(&o).unwrap().status, ProfileStatus::Enrolled);
}

#[test]
fn refinement_is_bounded_by_margin_and_weight() {
    let policy = Policy::default();
    let at_weight = |weight: f32| verification::Loaded {
        voiceprint: Some(voiceprint(weight)),
        ..enrolled(0, 0)
    };
    // (score, voiceprint weight) → refined weight
    let table = [
        (0.95, 1.0, Some(1.0 + policy.refine_weight)),
        (
            policy.accept_threshold + policy.refine_margin + 0.01,
            1.0,
            Some(1.25),
        ),
        (
            policy.accept_threshold + policy.refine_margin - 0.01,
            1.0,
            None,
        ),
        (0.95, policy.max_voiceprint_weight, None),
        (
            0.95,
            policy.max_voiceprint_weight - 0.1,
            Some(policy.max_voiceprint_weight + 0.15),
        ),
    ];
    for (score, weight, refined) in table {
        let o = verify(at_weight(weight), &sample(score, 3_000), false, &policy);
        let got = written_voiceprint(&o).map(|v| v.weight);
        match (got, refined) {
            (Some(g), Some(r)) => {
                assert!((g - r).abs() < 1e-5, "score {score} weight {weight}: {g}")
            }
            (g, r) => assert_eq!(g, r, "score {score} weight {weight}"),
        }
        let sessions = written_profile(&o).unwrap().sessions;
        assert_eq!(
            sessions,
            u32::from(refined.is_some()),
            "sessions count refinements"
        );
    }
}

#[test]
fn enrollment_rules() {
    let policy = Policy::default();
    let open = Policy {
        consent_required: false,
        ..Policy::default()
    };
    let with = |c: Option<Consent>, p: Option<Profile>, v: Option<Voiceprint>| enrollment::Loaded {
        profile: p,
        consent: c,
        voiceprint: v,
        model_id: "m1".into(),
    };
    let almost = Profile {
        net_speech_millis: 18_000,
        samples: 3,
        ..profile(ProfileStatus::NotEnrolled, 0, 0)
    };
    use Code::*;
    use DecisionKind as K;
    #[rustfmt::skip]
    let table: Vec<(&str, Outcome, K, Vec<Code>)> = vec![
        ("first sample", enroll(with(Some(consent(true, true)), None, None), &sample(0.9, 8_000), &policy), K::Applied, vec![SampleAccepted]),
        ("target reached", enroll(with(Some(consent(true, true)), Some(almost.clone()), Some(voiceprint(3.0))), &sample(0.9, 3_000), &policy), K::Applied, vec![Enrolled]),
        ("too little speech", enroll(with(Some(consent(true, true)), None, None), &sample(0.9, 500), &policy), K::Retry, vec![NotEnoughSpeech]),
        ("no consent, required", enroll(with(None, None, None), &sample(0.9, 8_000), &policy), K::Error, vec![ConsentRequired]),
        ("no consent, not required", enroll(with(None, None, None), &sample(0.9, 8_000), &open), K::Applied, vec![SampleAccepted]),
        ("withdrawn beats the tenant policy", enroll(with(Some(consent(false, false)), None, None), &sample(0.9, 8_000), &open), K::Error, vec![ConsentWithdrawn]),
    ];
    for (name, outcome, kind, expected) in table {
        assert_eq!((outcome.kind, codes(&outcome)), (kind, expected), "{name}");
    }
}

/// Identifiers go with the profile: written by a sample that writes the
/// profile (even one with too little speech), never by a refusal, and a job
/// without identifiers keeps the stored set.
#[test]
fn biokeys_are_written_with_the_profile_only() {
    let policy = Policy::default();
    let mut job = EnrollmentRequested::new("r", "t", "u", 1, vec![7]);
    job.biokeys = vec![timbre_schemas::Biokey {
        key: "UserID".into(),
        value: Some("u".into()),
        digest: "ab".repeat(32),
        display_name: None,
        priority: 0,
        sensitive: false,
        is_user_id: true,
    }];
    let loaded = |c: Option<Consent>| enrollment::Loaded {
        consent: c,
        model_id: "m1".into(),
        ..enrollment::Loaded::default()
    };
    let writes_biokeys = |o: &Outcome| {
        o.mutations
            .iter()
            .any(|m| matches!(m, Mutation::PutBiokeys { biokeys, .. } if *biokeys == job.biokeys))
    };
    let decided = |c: Option<Consent>, speech: u64| {
        let outcome = match enrollment::admit(&loaded(c.clone()), ctx(&policy)) {
            Ok(()) => enrollment::decide(&job, loaded(c), &sample(0.9, speech), ctx(&policy)),
            Err(refused) => *refused,
        };
        enrollment::with_biokeys(outcome, &job)
    };
    assert!(writes_biokeys(&decided(Some(consent(true, false)), 8_000)));
    assert!(writes_biokeys(&decided(Some(consent(true, false)), 500)));
    assert!(!writes_biokeys(&decided(
        Some(consent(false, false)),
        8_000
    )));
    assert!(!writes_biokeys(&decided(None, 8_000)), "consent required");
    let without = EnrollmentRequested::new("r", "t", "u", 1, vec![7]);
    let accepted = enrollment::decide(
        &without,
        loaded(Some(consent(true, false))),
        &sample(0.9, 8_000),
        ctx(&policy),
    );
    let kept = enrollment::with_biokeys(accepted, &without);
    assert!(
        !kept
            .mutations
            .iter()
            .any(|m| matches!(m, Mutation::PutBiokeys { .. }))
    );
}

#[test]
fn enrollment_state_changes() {
    let policy = Policy::default();
    let load =
        |consent: Consent, profile: Option<Profile>, vp: Option<Voiceprint>| enrollment::Loaded {
            profile,
            consent: Some(consent),
            voiceprint: vp,
            model_id: "m1".into(),
        };
    let retained = |o: &Outcome| {
        o.mutations
            .iter()
            .any(|m| matches!(m, Mutation::RetainAudio { .. }))
    };
    // Audio is retained only with consent to retain it.
    let o = enroll(
        load(consent(true, true), None, None),
        &sample(0.9, 8_000),
        &policy,
    );
    assert!(retained(&o));
    let o = enroll(
        load(consent(true, false), None, None),
        &sample(0.9, 8_000),
        &policy,
    );
    assert!(!retained(&o));
    // Too little speech still allocates the profile, nothing else.
    let o = enroll(
        load(consent(true, true), None, None),
        &sample(0.9, 500),
        &policy,
    );
    assert_eq!(o.mutations.len(), 1);
    assert_eq!(written_profile(&o).unwrap().samples, 0);
    // Model mismatch: samples under another model do not count.
    let earlier = Profile {
        samples: 3,
        net_speech_millis: 15_000,
        ..profile(ProfileStatus::NotEnrolled, 0, 0)
    };
    let o = enroll(
        load(consent(true, true), Some(earlier.clone()), None),
        &sample(0.9, 6_000),
        &policy,
    );
    let p = written_profile(&o).unwrap();
    assert_eq!((p.samples, p.net_speech_millis), (1, 6_000));
    assert_eq!(written_voiceprint(&o).unwrap().weight, 1.0);
    // Same model: the sample adds to what was there.
    let o = enroll(
        load(consent(true, true), Some(earlier), Some(voiceprint(3.0))),
        &sample(0.9, 6_000),
        &policy,
    );
    let p = written_profile(&o).unwrap();
    assert_eq!(
        (p.samples, p.net_speech_millis, p.status),
        (4, 21_000, ProfileStatus::Enrolled)
    );
    assert_eq!(written_voiceprint(&o).unwrap().weight, 4.0);
    // RE_ENROLL and OPTED_OUT start over, keeping the creation time.
    for status in [ProfileStatus::ReEnroll, ProfileStatus::OptedOut] {
        let old = Profile {
            created_at: 42,
            ..profile(status, 2, 0)
        };
        let o = enroll(
            load(consent(true, true), Some(old), Some(voiceprint(5.0))),
            &sample(0.9, 6_000),
            &policy,
        );
        let p = written_profile(&o).unwrap();
        assert_eq!(
            (p.samples, p.created_at, p.failures),
            (1, 42, 0),
            "{status:?}"
        );
        assert_eq!(written_voiceprint(&o).unwrap().weight, 1.0, "{status:?}");
    }
}

#[test]
fn consent_rules() {
    let policy = Policy::default();
    let change = |granted: bool, purpose: &str| {
        ConsentChanged::new("r", "t", "u", 1, granted, purpose, true)
    };
    let erased = |o: &Outcome| {
        o.mutations
            .iter()
            .any(|m| matches!(m, Mutation::EraseBiometrics { .. }))
    };
    // Withdrawal erases and opts out.
    let o = consent::decide(
        &change(false, BIOMETRIC_PURPOSE),
        Some(profile(ProfileStatus::Enrolled, 0, 0)),
        ctx(&policy),
    );
    assert_eq!(codes(&o), vec![Code::ConsentWithdrawn]);
    assert!(erased(&o));
    let p = written_profile(&o).unwrap();
    assert_eq!(
        (p.status, p.samples, p.net_speech_millis),
        (ProfileStatus::OptedOut, 0, 0)
    );
    // Withdrawal without a profile allocates none.
    let o = consent::decide(&change(false, BIOMETRIC_PURPOSE), None, ctx(&policy));
    assert!(erased(&o) && written_profile(&o).is_none());
    // A grant reopens an opted-out profile.
    let o = consent::decide(
        &change(true, BIOMETRIC_PURPOSE),
        Some(profile(ProfileStatus::OptedOut, 0, 0)),
        ctx(&policy),
    );
    assert_eq!(codes(&o), vec![Code::ConsentGranted]);
    assert_eq!(
        written_profile(&o).unwrap().status,
        ProfileStatus::NotEnrolled
    );
    // Another purpose is recorded but touches no biometrics.
    let o = consent::decide(
        &change(false, "marketing"),
        Some(profile(ProfileStatus::Enrolled, 0, 0)),
        ctx(&policy),
    );
    assert!(!erased(&o));
    assert_eq!(written_profile(&o).unwrap().status, ProfileStatus::Enrolled);
}

fn command(kind: ProfileCommandKind) -> ProfileCommand {
    ProfileCommand {
        request_id: "r".into(),
        tenant: "t".into(),
        user_id: "u".into(),
        occurred_at: 1,
        schema_version: 1,
        trace: None,
        command: kind,
        reason: Some("fraud".into()),
    }
}

fn profile_outcomes(policy: &Policy) -> Vec<(&'static str, Outcome, DecisionKind, Vec<Code>)> {
    let existing = || Some(profile(ProfileStatus::Enrolled, 0, 0));
    let run = |kind, profile, voiceprint| {
        profile::decide(
            &command(kind),
            profile::Loaded {
                profile,
                voiceprint,
            },
            ctx(policy),
        )
    };
    use Code::*;
    use DecisionKind as K;
    use ProfileCommandKind as C;
    vec![
        (
            "create",
            run(C::Create, None, None),
            K::Applied,
            vec![ProfileCreated],
        ),
        (
            "create again",
            run(C::Create, existing(), None),
            K::Applied,
            vec![ProfileExists],
        ),
        (
            "opt out",
            run(C::OptOut, existing(), None),
            K::Applied,
            vec![OptedOut],
        ),
        (
            "delete",
            run(C::Delete, existing(), None),
            K::Applied,
            vec![ProfileDeleted],
        ),
        (
            "delete absent",
            run(C::Delete, None, None),
            K::Applied,
            vec![ProfileAbsent],
        ),
        (
            "greylist",
            run(C::GreylistAdd, existing(), Some(voiceprint(1.0))),
            K::Applied,
            vec![Watchlisted],
        ),
        (
            "greylist unenrolled",
            run(C::GreylistAdd, existing(), None),
            K::Error,
            vec![NotEnrolled],
        ),
        (
            "ungreylist",
            run(C::GreylistRemove, existing(), None),
            K::Applied,
            vec![Unwatchlisted],
        ),
        (
            "ungreylist absent",
            run(C::GreylistRemove, None, None),
            K::Applied,
            vec![Unwatchlisted],
        ),
        (
            "unlock",
            run(C::Unlock, Some(profile(ProfileStatus::Locked, 8, 0)), None),
            K::Applied,
            vec![ProfileUnlocked],
        ),
        (
            "unlock absent",
            run(C::Unlock, None, None),
            K::Error,
            vec![ProfileNotFound],
        ),
    ]
}

#[test]
fn profile_command_rules() {
    let policy = Policy::default();
    for (name, outcome, kind, expected) in profile_outcomes(&policy) {
        assert_eq!((outcome.kind, codes(&outcome)), (kind, expected), "{name}");
        let writes_profile = written_profile(&outcome).is_some();
        let allocates = !matches!(
            name,
            "delete"
                | "delete absent"
                | "ungreylist absent"
                | "greylist unenrolled"
                | "unlock absent"
        );
        assert_eq!(writes_profile, allocates, "{name}");
    }
    let o = profile::decide(
        &command(ProfileCommandKind::OptOut),
        profile::Loaded::default(),
        ctx(&policy),
    );
    assert_eq!(written_profile(&o).unwrap().status, ProfileStatus::OptedOut);
}

fn rescore_job() -> RescoreRequested {
    RescoreRequested {
        request_id: "r".into(),
        tenant: "t".into(),
        user_id: "u".into(),
        occurred_at: 1,
        schema_version: 1,
        trace: None,
        plan_id: "p".into(),
        from_model: "m1".into(),
        to_model: "m2".into(),
    }
}

fn rescore_outcomes(policy: &Policy) -> Vec<(&'static str, Outcome, DecisionKind, Vec<Code>)> {
    let job = rescore_job();
    let run = |loaded: rescore::Loaded, embeddings: Vec<Vec<f32>>| match rescore::admit(
        &job,
        &loaded,
        ctx(policy),
    ) {
        Ok(()) => rescore::decide(&job, None, &embeddings, ctx(policy)),
        Err(o) => *o,
    };
    let enrolled_user = || rescore::Loaded {
        profile: Some(profile(ProfileStatus::Enrolled, 0, 0)),
        consent: Some(consent(true, true)),
    };
    use Code::*;
    use DecisionKind as K;
    vec![
        (
            "rebuilt",
            run(enrolled_user(), vec![at(1.0), at(0.0)]),
            K::Applied,
            vec![VoiceprintRebuilt],
        ),
        (
            "not enrolled",
            run(
                rescore::Loaded {
                    profile: Some(profile(ProfileStatus::NotEnrolled, 0, 0)),
                    ..enrolled_user()
                },
                vec![],
            ),
            K::Error,
            vec![NotEnrolled],
        ),
        (
            "no audio",
            run(enrolled_user(), vec![]),
            K::Error,
            vec![NoRetainedAudio],
        ),
        (
            "consent withdrawn meanwhile",
            run(
                rescore::Loaded {
                    consent: Some(consent(false, false)),
                    ..enrolled_user()
                },
                vec![],
            ),
            K::Error,
            vec![ConsentWithdrawn],
        ),
        (
            "retention withdrawn meanwhile",
            run(
                rescore::Loaded {
                    consent: Some(consent(true, false)),
                    ..enrolled_user()
                },
                vec![],
            ),
            K::Error,
            vec![NoRetainedAudio],
        ),
    ]
}

#[test]
fn a_lockout_survives_withdrawing_and_granting_consent() {
    let policy = Policy::default();
    let change =
        |granted: bool| ConsentChanged::new("r", "t", "u", 1, granted, BIOMETRIC_PURPOSE, true);
    let locked = profile(ProfileStatus::Locked, 8, 0);
    // Withdrawal erases the biometrics but keeps the lock.
    let o = consent::decide(&change(false), Some(locked), ctx(&policy));
    let withdrawn = written_profile(&o).unwrap().clone();
    assert_eq!(
        (withdrawn.status, withdrawn.samples),
        (ProfileStatus::Locked, 0)
    );
    // Neither a grant nor an opt-out command opens it.
    let o = consent::decide(&change(true), Some(withdrawn.clone()), ctx(&policy));
    let granted = written_profile(&o).unwrap().clone();
    assert_eq!(granted.status, ProfileStatus::Locked);
    let o = profile::decide(
        &command(ProfileCommandKind::OptOut),
        profile::Loaded {
            profile: Some(granted.clone()),
            voiceprint: None,
        },
        ctx(&policy),
    );
    assert_eq!(written_profile(&o).unwrap().status, ProfileStatus::Locked);
    // So another voice cannot enroll in its place.
    let loaded = enrollment::Loaded {
        profile: Some(granted.clone()),
        consent: Some(consent(true, true)),
        voiceprint: None,
        model_id: "m1".into(),
    };
    assert_eq!(
        enrollment::admit(&loaded, ctx(&policy)).map_err(|o| codes(&o)),
        Err(vec![Code::ProfileLocked])
    );
    // An admin unlock lifts it; with no voiceprint left the user enrolls anew.
    let o = profile::decide(
        &command(ProfileCommandKind::Unlock),
        profile::Loaded {
            profile: Some(granted),
            voiceprint: None,
        },
        ctx(&policy),
    );
    assert_eq!(
        written_profile(&o).unwrap().status,
        ProfileStatus::NotEnrolled
    );
}

#[test]
fn opting_out_withdraws_consent_so_no_enrollment_follows() {
    let policy = Policy::default();
    let o = profile::decide(
        &command(ProfileCommandKind::OptOut),
        profile::Loaded {
            profile: Some(profile(ProfileStatus::Enrolled, 0, 0)),
            voiceprint: None,
        },
        ctx(&policy),
    );
    let withdrawn = o
        .mutations
        .iter()
        .find_map(|m| match m {
            Mutation::PutConsent(c) => Some(c.clone()),
            _ => None,
        })
        .expect("an opt-out records the withdrawal");
    assert_eq!(
        (
            withdrawn.purpose.as_str(),
            withdrawn.granted,
            withdrawn.retain_audio
        ),
        (BIOMETRIC_PURPOSE, false, false)
    );
    // An enrollment reordered after the opt-out meets the withdrawal, even
    // in a tenant that does not require consent.
    let open = Policy {
        consent_required: false,
        ..Policy::default()
    };
    let later = enroll(
        enrollment::Loaded {
            profile: written_profile(&o).cloned(),
            consent: Some(withdrawn),
            voiceprint: None,
            model_id: "m1".into(),
        },
        &sample(0.9, 8_000),
        &open,
    );
    assert_eq!(codes(&later), vec![Code::ConsentWithdrawn]);
}

#[test]
fn withdrawing_retention_erases_retained_audio() {
    let policy = Policy::default();
    let erases = |granted, retain_audio| {
        let job = ConsentChanged::new("r", "t", "u", 1, granted, BIOMETRIC_PURPOSE, retain_audio);
        consent::decide(
            &job,
            Some(profile(ProfileStatus::Enrolled, 0, 0)),
            ctx(&policy),
        )
        .mutations
        .iter()
        .any(|m| {
            matches!(
                m,
                Mutation::EraseAudio { .. } | Mutation::EraseBiometrics { .. }
            )
        })
    };
    // (granted, retain_audio) → audio erased
    assert!(erases(true, false), "retention withdrawn");
    assert!(!erases(true, true), "retention kept");
    assert!(erases(false, false), "consent withdrawn erases everything");
}

#[test]
fn further_samples_of_an_enrolled_profile_must_match_its_voice() {
    let policy = Policy::default();
    let enrolled_profile = || enrollment::Loaded {
        profile: Some(profile(ProfileStatus::Enrolled, 0, 0)),
        consent: Some(consent(true, true)),
        voiceprint: Some(voiceprint(3.0)),
        model_id: "m1".into(),
    };
    // Two samples of another speaker after three genuine ones: refused,
    // nothing written, the voiceprint keeps its weight.
    let o = enroll(enrolled_profile(), &sample(0.2, 8_000), &policy);
    assert_eq!(
        (o.kind, codes(&o)),
        (DecisionKind::Error, vec![Code::SampleMismatch])
    );
    assert!(o.mutations.is_empty());
    assert!(o.error.as_ref().is_some_and(|e| !e.dead_letter));
    // The enrolled voice itself still adds to the voiceprint.
    let o = enroll(enrolled_profile(), &sample(0.9, 8_000), &policy);
    assert_eq!(codes(&o), vec![Code::Enrolled]);
    assert_eq!(written_voiceprint(&o).unwrap().weight, 4.0);
    // While enrollment is still in progress, samples are not compared.
    let in_progress = enrollment::Loaded {
        profile: Some(Profile {
            net_speech_millis: 4_000,
            samples: 1,
            ..profile(ProfileStatus::NotEnrolled, 0, 0)
        }),
        ..enrolled_profile()
    };
    let o = enroll(in_progress, &sample(0.2, 3_000), &policy);
    assert_eq!(codes(&o), vec![Code::SampleAccepted]);
}

/// An outcome is stamped no earlier than its job was published, whatever
/// the processor's clock says, or the run that published it would not
/// count it.
#[test]
fn rescore_outcome_is_not_older_than_its_job() {
    let policy = Policy::default();
    let now = ctx(&policy).now;
    for occurred_at in [now - 5_000, now + 60_000] {
        let job = RescoreRequested {
            occurred_at,
            ..rescore_job()
        };
        let outcome = rescore::decide(&job, None, &[vec![1.0, 0.0]], ctx(&policy));
        let stamped = outcome.mutations.iter().find_map(|m| match m {
            Mutation::PutRescoreResult(r) => Some(r.updated_at),
            _ => None,
        });
        assert_eq!(stamped, Some(now.max(occurred_at)));
    }
}

#[test]
fn rescore_rules() {
    let policy = Policy::default();
    for (name, outcome, kind, expected) in rescore_outcomes(&policy) {
        assert_eq!((outcome.kind, codes(&outcome)), (kind, expected), "{name}");
        let result = outcome.mutations.iter().find_map(|m| match m {
            Mutation::PutRescoreResult(r) => Some(r),
            _ => None,
        });
        let result = result.expect("every re-scoring records its result");
        assert_eq!(result.ok, outcome.error.is_none(), "{name}");
        if let Some(e) = &outcome.error {
            assert!(!e.dead_letter, "{name}");
            assert_eq!(result.detail, e.code.as_str());
        }
    }
    let job = rescore_job();
    let listed = Some(WatchlistEntry {
        tenant: "t".into(),
        user_id: "u".into(),
        model_id: "m1".into(),
        embedding: vec![1.0, 0.0],
        reason: "fraud".into(),
        added_at: 0,
    });
    let o = rescore::decide(
        &job,
        listed,
        &[vec![1.0, 0.0], vec![0.0, 2.0]],
        ctx(&policy),
    );
    let v = written_voiceprint(&o).unwrap();
    assert_eq!((v.model_id.as_str(), v.weight), ("m2", 2.0));
    assert!((v.embedding[0] - 0.5).abs() < 1e-6 && (v.embedding[1] - 0.5).abs() < 1e-6);
    assert!(
        o.mutations.iter().any(
            |m| matches!(m, Mutation::Watchlist(w) if w.model_id == "m2" && w.reason == "fraud")
        )
    );
}

#[test]
fn the_tables_produce_every_reason_and_refusal_code() {
    let policy = Policy::default();
    let mut seen: BTreeSet<Code> = BTreeSet::new();
    for (_, o, _, _) in verification_table(&policy)
        .into_iter()
        .chain(profile_outcomes(&policy))
        .chain(rescore_outcomes(&policy))
    {
        seen.extend(codes(&o));
    }
    let consent_change = |granted| {
        consent::decide(
            &ConsentChanged::new("r", "t", "u", 1, granted, BIOMETRIC_PURPOSE, true),
            None,
            ctx(&policy),
        )
    };
    seen.extend(codes(&consent_change(true)));
    seen.extend(codes(&consent_change(false)));
    let fresh = || enrollment::Loaded {
        model_id: "m1".into(),
        consent: Some(consent(true, true)),
        ..Default::default()
    };
    seen.extend(codes(&enroll(
        enrollment::Loaded {
            profile: Some(profile(ProfileStatus::Enrolled, 0, 0)),
            voiceprint: Some(voiceprint(3.0)),
            ..fresh()
        },
        &sample(0.1, 8_000),
        &policy,
    )));
    seen.extend(codes(&enroll(fresh(), &sample(0.9, 8_000), &policy)));
    seen.extend(codes(&enroll(
        enrollment::Loaded {
            consent: None,
            ..fresh()
        },
        &sample(0.9, 8_000),
        &policy,
    )));
    seen.extend(codes(&enroll(
        enrollment::Loaded {
            consent: Some(consent(false, false)),
            ..fresh()
        },
        &sample(0.9, 8_000),
        &policy,
    )));
    let nearly = Profile {
        net_speech_millis: 19_000,
        samples: 3,
        ..profile(ProfileStatus::NotEnrolled, 0, 0)
    };
    seen.extend(codes(&enroll(
        enrollment::Loaded {
            profile: Some(nearly),
            voiceprint: Some(voiceprint(3.0)),
            ..fresh()
        },
        &sample(0.9, 2_000),
        &policy,
    )));
    // Signals fail through fusion (`signals::tests`); a liveness failure here.
    let live_failed = Analysis {
        signals: vec![Signal {
            kind: SignalKind::Replay,
            tier: Tier::Low,
            pass: false,
            reason: Some(Code::LivenessFailed),
            score: None,
            threshold: None,
        }],
        ..sample(0.95, 3_000)
    };
    seen.extend(codes(&verify(enrolled(0, 0), &live_failed, false, &policy)));
    seen.extend(codes(&verify(
        enrolled(0, 0),
        &replay(true),
        false,
        &policy,
    )));
    let synthetic = Analysis {
        signals: vec![Signal {
            kind: SignalKind::Synthetic,
            tier: Tier::Low,
            pass: false,
            reason: Some(Code::SyntheticSpeech),
            score: Some(-4.0),
            threshold: Some(0.0),
        }],
        ..sample(0.95, 3_000)
    };
    let d = verify(enrolled(0, 0), &synthetic, false, &policy);
    assert_eq!(d.kind, DecisionKind::Reject, "{d:?}");
    seen.extend(codes(&d));
    // The failure that locks the profile.
    seen.extend(codes(&verify(
        enrolled(7, 0),
        &sample(0.1, 3_000),
        false,
        &policy,
    )));
    let missing: Vec<Code> = Code::ALL
        .iter()
        .copied()
        .filter(|c| matches!(c.class(), CodeClass::Reason | CodeClass::Refusal))
        .filter(|c| !seen.contains(c))
        .collect();
    assert!(
        missing.is_empty(),
        "codes no rule table produces: {missing:?}"
    );
}

/// A verification by the enrolled voice, with a fingerprint, whose replay
/// check found (or did not find) an earlier recording.
fn replay(found: bool) -> Analysis {
    let mut landmarks = Vec::new();
    for n in 1u32..=3 {
        landmarks.extend_from_slice(&n.to_le_bytes());
        landmarks.extend_from_slice(&n.to_le_bytes());
    }
    Analysis {
        signals: vec![Signal {
            kind: SignalKind::Replay,
            tier: if found { Tier::Low } else { Tier::High },
            pass: !found,
            reason: found.then_some(Code::ReplayDetected),
            score: Some(if found { 0.4 } else { 0.0 }),
            threshold: Some(0.025),
        }],
        fingerprint: crate::liveness::Fingerprint::from_bytes(&landmarks),
        ..sample(0.95, 3_000)
    }
}

fn kept_fingerprints(o: &Outcome) -> usize {
    o.mutations
        .iter()
        .filter(|m| matches!(m, Mutation::KeepFingerprint { .. }))
        .count()
}

#[test]
fn a_replay_is_rejected_counted_and_not_remembered() {
    let policy = Policy::default();
    let replayed = verify(enrolled(0, 0), &replay(true), false, &policy);
    assert_eq!(replayed.kind, DecisionKind::Reject);
    assert_eq!(replayed.reasons, vec![Code::ReplayDetected]);
    assert_eq!(kept_fingerprints(&replayed), 0, "a replay is not kept");
    let signals = &replayed.scores.as_ref().unwrap().signals;
    assert_eq!(
        (signals.liveness_score, signals.liveness_threshold),
        (Some(0.4), Some(0.025)),
        "the detector's score and threshold are in the decision"
    );
    let failures = replayed.mutations.iter().find_map(|m| match m {
        Mutation::PutProfile(p) => Some(p.failures),
        _ => None,
    });
    assert_eq!(failures, Some(1), "a replay counts toward the cooldown");

    let live = verify(enrolled(0, 0), &replay(false), false, &policy);
    assert_eq!(live.kind, DecisionKind::Accept);
    assert_eq!(kept_fingerprints(&live), 1, "live speech is remembered");
    let impostor = Analysis {
        embedding: at(0.1),
        ..replay(false)
    };
    let rejected = verify(enrolled(0, 0), &impostor, false, &policy);
    assert_eq!(
        kept_fingerprints(&rejected),
        0,
        "not under the claimed user"
    );

    let reported = Policy {
        liveness_enforced: false,
        ..Policy::default()
    };
    let allowed = verify(enrolled(0, 0), &replay(true), false, &reported);
    assert_eq!(allowed.kind, DecisionKind::Accept, "reported, not enforced");
    assert_eq!(allowed.reasons[0], Code::VoiceMatch);
    assert!(!allowed.reasons.contains(&Code::ReplayDetected));
    let liveness = allowed.scores.as_ref().map(|s| s.signals.liveness.clone());
    assert_eq!(liveness.as_deref(), Some("low"), "still reported");
    assert_eq!(kept_fingerprints(&allowed), 0, "a replay is never kept");

    let off = Policy {
        replay_memory_days: 0,
        ..Policy::default()
    };
    let live = verify(enrolled(0, 0), &replay(false), false, &off);
    assert_eq!(kept_fingerprints(&live), 0, "the tenant keeps none");
}

#[test]
fn enrollment_keeps_its_fingerprint_only_with_consent() {
    let policy = Policy {
        consent_required: false,
        ..Policy::default()
    };
    let loaded = |consent: Option<Consent>| enrollment::Loaded {
        model_id: "m1".into(),
        consent,
        ..Default::default()
    };
    let with = enroll(loaded(Some(consent(true, false))), &replay(false), &policy);
    assert_eq!(kept_fingerprints(&with), 1);
    let without = enroll(loaded(None), &replay(false), &policy);
    assert_eq!(without.kind, DecisionKind::Applied, "{without:?}");
    assert_eq!(kept_fingerprints(&without), 0);
}

#[test]
fn a_calibrated_verification_is_judged_by_its_llr_in_its_band() {
    use crate::domain::calibration::{BandNorm, FarPoint, LinearCalibration, ScoreNorm};
    use crate::domain::impostor_tail::TenantTails;
    let band = |bias: f64| BandNorm {
        // Cosines of the voiceprint [1, 0] with these: 0 and -1.
        cohort: vec![vec![0.0, 1.0], vec![-1.0, 0.0]],
        calibration: LinearCalibration {
            weights: [bias, 1.0, 0.0, 0.0],
            enrollment: 0.0,
        },
        // Accept at LLR 1 (0.1% of impostors), reject below 0 (1%).
        far_curve: vec![
            FarPoint {
                far: 0.01,
                llr: 0.0,
            },
            FarPoint {
                far: 0.001,
                llr: 1.0,
            },
        ],
    };
    let score_norm = ScoreNorm {
        model_id: "m1".into(),
        top_k: 2,
        wide: band(0.0),
        narrow: band(-5.0),
        probe_speech_millis: [1_000, 4_000],
        enroll_speech_millis: [0, 0],
    };
    assert_eq!(score_norm.validate(), Ok(()));
    let policy = Policy::default();
    let run_with = |tenant: &[(String, Vec<f32>)], rate: u32, tails: Option<&TenantTails>| {
        let job = verification(false);
        let ctx = Context {
            norm: Some(NormContext {
                score_norm: &score_norm,
                tenant,
                tails,
            }),
            ..ctx(&policy)
        };
        let admitted = verification::admit(&job, enrolled(0, 0), ctx).unwrap();
        let sample = Analysis {
            source_rate: rate,
            ..sample(0.9, 3_000)
        };
        let outcome = verification::decide(&job, admitted, &[], &sample, ctx);
        outcome.decision(&timbre_schemas::Request::Verification(job), NOW)
    };
    let run = |tenant: &[(String, Vec<f32>)], rate: u32| run_with(tenant, rate, None);
    let alone = run(&[], 16_000);
    // Voiceprint side: top-2 cohort scores 0 and -1 (mean -0.5, sd 0.5);
    // probe at(0.9) = [0.9, 0.436]: 0.436 and -0.9. Raw 0.9.
    let probe_mean = (0.436 - 0.9) / 2.0;
    let probe_sd = (0.436 + 0.9) / 2.0;
    let expected = 0.5 * ((0.9 + 0.5) / 0.5 + (0.9 - probe_mean) / probe_sd);
    assert_eq!(alone.decision, DecisionKind::Accept);
    assert_eq!(alone.raw_score, Some(0.9));
    let llr = alone.llr.unwrap();
    assert!((llr - expected).abs() < 2e-3, "{llr} vs {expected}");
    assert_eq!((alone.norm_score, alone.score), (Some(llr), Some(llr)));
    let t = alone.thresholds.unwrap();
    assert_eq!((t.accept, t.reject), (1.0, 0.0));
    assert_eq!((t.scale.as_str(), t.band.as_deref()), ("llr", Some("wide")));

    // The claimed user's own voiceprint never joins the cohort, nor does
    // another account's voiceprint of the same voice.
    let own = [("u".to_string(), vec![1.0, 0.0])];
    assert_eq!(run(&own, 16_000).llr, Some(llr));
    let twin = [("u-business".to_string(), at(0.97))];
    assert_eq!(run(&twin, 16_000).llr, Some(llr));
    // Another voice of the tenant joins the cohort (70° from the voiceprint:
    // top-2 scores 0.342 and 0 for it, 0.940·0.436 + 0.342·0.9 and 0.436
    // for the probe).
    let other = [("x".to_string(), vec![0.342, 0.940])];
    let with_other = run(&other, 16_000).llr.unwrap();
    assert!((with_other - 3.28).abs() < 0.01, "{with_other}");

    // 8 kHz audio is judged by the narrowband calibration (5 lower here).
    let narrow = run(&[], 8_000);
    assert!((narrow.llr.unwrap() - (llr - 5.0)).abs() < 1e-4);
    assert_eq!(narrow.decision, DecisionKind::Reject);
    assert_eq!(narrow.thresholds.unwrap().band.as_deref(), Some("narrow"));

    // A tenant whose own impostors reach 3 LLR above the curve at 1% (10
    // of 1,000 at 3.0): both lines rise by 3, and the same voice that was
    // accepted is now rejected (its LLR, 2.25, is below 3).
    let mut tails = TenantTails::default();
    for i in 0..1_000 {
        tails.wide.record(if i < 10 { 3.05 } else { -20.0 });
    }
    let tightened = run_with(&[], 16_000, Some(&tails));
    assert_eq!(tightened.llr, Some(llr));
    let t = tightened.thresholds.unwrap();
    assert!(
        (t.accept - 4.0).abs() < 1e-3 && (t.reject - 3.0).abs() < 1e-3,
        "{t:?}"
    );
    assert_eq!(tightened.decision, DecisionKind::Reject);
    // The narrowband lines stay the bundled ones: the tail is per band.
    let t = run_with(&[], 8_000, Some(&tails)).thresholds.unwrap();
    assert_eq!((t.accept, t.reject), (1.0, 0.0));

    // With an enrollment weight, the profile's net speech is the voiceprint's
    // quality: 20 s is held at the calibration's longest (4 s), 2 s is not,
    // and a profile without it counts as the longest.
    let mut with_enrollment = score_norm.clone();
    with_enrollment.wide.calibration.enrollment = -1.0;
    with_enrollment.enroll_speech_millis = [1_000, 4_000];
    assert_eq!(with_enrollment.validate(), Ok(()));
    let llr_at = |net_speech_millis: u64| {
        let job = verification(false);
        let ctx = Context {
            norm: Some(NormContext {
                score_norm: &with_enrollment,
                tenant: &[],
                tails: None,
            }),
            ..ctx(&policy)
        };
        let mut loaded = enrolled(0, 0);
        loaded.profile.as_mut().unwrap().net_speech_millis = net_speech_millis;
        let admitted = verification::admit(&job, loaded, ctx).unwrap();
        let outcome = verification::decide(&job, admitted, &[], &sample(0.9, 3_000), ctx);
        let decision = outcome.decision(&timbre_schemas::Request::Verification(job), NOW);
        decision.llr.unwrap()
    };
    let long = llr_at(20_000);
    assert!((long - (llr - 4f32.ln())).abs() < 1e-4, "{long} vs {llr}");
    assert!((llr_at(2_000) - (llr - 2f32.ln())).abs() < 1e-4);
    assert_eq!(llr_at(0), long);
}

#[test]
fn diagnostics_are_kept_only_when_asked_and_never_past_thirty_days() {
    let kept_with = |retain: bool, consent: Option<Consent>, days: u32, wav: &[u8]| {
        let policy = Policy {
            diagnostics_days: days,
            ..Policy::default()
        };
        let outcome = with_diagnostics(
            Outcome::new(DecisionKind::Accept, vec![Code::VoiceMatch]),
            "u",
            "verification",
            wav,
            retain,
            consent.as_ref(),
            ctx(&policy),
        );
        outcome.mutations.iter().find_map(|m| match m {
            Mutation::KeepDiagnostics {
                user_id,
                job,
                wav,
                at,
                ttl_secs,
            } => Some((user_id.clone(), job.clone(), wav.clone(), *at, *ttl_secs)),
            _ => None,
        })
    };
    let kept = |retain: bool, days: u32, wav: &[u8]| {
        kept_with(retain, Some(consent(true, true)), days, wav)
    };
    for (consent, why) in [
        (None, "no consent recorded"),
        (
            Some(consent(true, false)),
            "consent without audio retention",
        ),
        (Some(consent(false, false)), "consent withdrawn"),
    ] {
        assert_eq!(kept_with(true, consent, 30, b"RIFF"), None, "{why}");
    }
    assert_eq!(
        kept(false, 30, b"RIFF"),
        None,
        "the key does not retain data"
    );
    assert_eq!(
        kept(true, 0, b"RIFF"),
        None,
        "the tenant keeps no diagnostics"
    );
    assert_eq!(kept(true, 30, b""), None, "no audio, nothing to keep");
    let (user, job, wav, at, ttl) = kept(true, 7, b"RIFF").expect("kept");
    assert_eq!(
        (user.as_str(), job.as_str(), wav.as_slice(), at, ttl),
        ("u", "verification", b"RIFF".as_slice(), NOW, 7 * 86_400)
    );
    assert_eq!(
        kept(true, 365, b"RIFF").expect("kept").4,
        30 * 86_400,
        "a longer policy is cut to 30 days"
    );
}

#[test]
fn a_prompted_enrollment_sample_must_say_its_code() {
    let policy = Policy::default();
    let loaded = || enrollment::Loaded {
        profile: None,
        consent: Some(consent(true, true)),
        voiceprint: None,
        model_id: "m1".into(),
    };
    let prompted = |analysis: &Analysis| {
        let mut job = EnrollmentRequested::new("r", "t", "u", 1, vec![7]);
        job.expected_phrase = Some("4 7 1 9 0 3".into());
        enrollment::decide(&job, loaded(), analysis, ctx(&policy))
    };
    let phrase = |pass: bool| Signal {
        kind: SignalKind::Phrase,
        tier: if pass { Tier::High } else { Tier::Low },
        pass,
        reason: (!pass).then_some(Code::PhraseMismatch),
        score: Some(if pass { 1.0 } else { 0.01 }),
        threshold: Some(0.1),
    };
    let with = |signals| Analysis {
        signals,
        ..sample(0.9, 8_000)
    };
    let merges = |o: &Outcome| {
        o.mutations
            .iter()
            .any(|m| matches!(m, Mutation::PutVoiceprint(_)))
    };

    let misspoken = prompted(&with(vec![phrase(false)]));
    assert_eq!(
        (misspoken.kind, codes(&misspoken)),
        (DecisionKind::Retry, vec![Code::PhraseMismatch])
    );
    assert!(!merges(&misspoken), "a misspoken sample is not merged");

    let said = prompted(&with(vec![phrase(true)]));
    assert_eq!(
        (said.kind, codes(&said)),
        (DecisionKind::Applied, vec![Code::SampleAccepted])
    );
    assert!(merges(&said));

    // No recogniser ran: the sample counts, and the decision says the code
    // was not checked.
    let unchecked = prompted(&with(Vec::new()));
    assert_eq!(
        (unchecked.kind, codes(&unchecked)),
        (
            DecisionKind::Applied,
            vec![Code::SampleAccepted, Code::PhraseNotChecked]
        )
    );
    // Free speech has no code to check.
    let free = enroll(loaded(), &with(Vec::new()), &policy);
    assert_eq!(codes(&free), vec![Code::SampleAccepted]);
}
