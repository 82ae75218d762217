//! End to end through the stream processor with the real CAM++ model: real
//! speakers enroll and verify, malformed jobs become error decisions plus
//! dead letters, redelivery is harmless. Runs on the embedded default and on
//! real Kafka + Cassandra.

use std::sync::Arc;
use std::time::Duration;

use timbre::adapters::file_store::FileStore;
use timbre::adapters::memory_bus::MemoryBus;
use timbre::audio::not_speech::{music, noise};
use timbre::backends::{connect_bus, connect_store};
use timbre::domain::impostor_tail::TenantTails;
use timbre::domain::{JobCommit, Mutation, ProfileStatus, Voiceprint};
use timbre::ports::{Bus, Store};
use timbre_schemas::ProfileCommandKind;
use timbre_schemas::{DeadLetter, DecisionKind, ProfileStatus as WireStatus};
use timbre_tests::pipeline::{
    Harness, REPLAY_TENANT, SHORT_ENROLLMENT_TENANT, at_8k, consent, enrollment, key,
    profile_command, replayed, synthetic_check, verification, wav, wav_16k,
};
use timbre_tests::{cql_nodes, kafka_url, scratch_dir, unique};

const ALICE_ENROLL: &str = "librispeech-r/test-other/1688/1688-142285-0000.wav";
const ALICE_VERIFY: &str = "librispeech-r/test-other/1688/1688-142285-0005.wav";
const BOB_VERIFY: &str = "librispeech-r/test-other/1998/1998-15444-0000.wav";
const BOB_ENROLL: &str = "librispeech-r/test-other/1998/1998-15444-0005.wav";
/// Text-to-speech (flite's `slt` voice) never used to fit the check.
const SYNTHETIC_CLIP: &str = "synthetic/flite-slt-1.wav";

/// A recording of the user played back, through a room and a telephone
/// line or through a µ-law 8 kHz channel, is rejected as a replay and
/// counts as a failure; the user's own fresh speech is not flagged.
async fn replayed_recordings(h: &mut Harness, store: &dyn Store) {
    let (tenant, user) = (REPLAY_TENANT, "replayed");
    // Consent first: it travels on its own topic.
    h.publish(&consent(tenant, user, "r-consent", true)).await;
    assert_eq!(
        h.decision("r-consent").await.decision,
        DecisionKind::Applied
    );
    h.publish(&enrollment(tenant, user, "r-enroll", wav(ALICE_ENROLL)))
        .await;
    let enrolled = h.decision("r-enroll").await;
    assert_eq!(enrolled.decision, DecisionKind::Applied, "{enrolled:?}");
    h.publish(&verification(tenant, user, "r-live", wav(ALICE_VERIFY)))
        .await;
    let live = h.decision("r-live").await;
    assert_eq!(live.decision, DecisionKind::Accept, "{live:?}");
    let signals = live.signals.clone().expect("signals");
    assert_eq!(signals.liveness, "high");
    assert!(
        signals.liveness_score.unwrap() < signals.liveness_threshold.unwrap(),
        "{live:?}"
    );

    for (id, original, transform) in [
        ("r-replay-verify", ALICE_VERIFY, "room_and_telephone_band"),
        ("r-replay-enroll", ALICE_ENROLL, "mulaw_8k"),
    ] {
        let audio = replayed(&wav(original), transform);
        h.publish(&verification(tenant, user, id, audio)).await;
        let d = h.decision(id).await;
        assert_eq!(d.decision, DecisionKind::Reject, "{transform}: {d:?}");
        assert!(d.reasons.iter().any(|r| r == "replay_detected"), "{d:?}");
        let signals = d.signals.clone().expect("signals");
        assert_eq!(signals.liveness, "low");
        assert!(
            signals.liveness_score.unwrap() >= signals.liveness_threshold.unwrap(),
            "{d:?}"
        );
    }
    let profile = store.profile(tenant, user).await.unwrap().unwrap();
    assert_eq!(
        profile.failures, 2,
        "each replay counts toward the cooldown"
    );
    assert_eq!(
        store.fingerprints(tenant, user, 20).await.unwrap().len(),
        2,
        "the enrollment and the live verification are kept, the replays not"
    );
}

async fn e2e(bus: Arc<dyn Bus>, store: Arc<dyn Store>) {
    let prefix = format!("{}.", unique("e2e"));
    let mut h = Harness::start(bus, store.clone(), &prefix).await;
    let tenant = "acme";

    // Consent, then one 8 s sample (4.7 s of speech) enrolls alice (test
    // policy: 4 s target).
    h.publish(&consent(tenant, "alice", "c-1", true)).await;
    assert_eq!(h.decision("c-1").await.decision, DecisionKind::Applied);
    let enroll = enrollment(tenant, "alice", "e-1", wav(ALICE_ENROLL));
    h.publish(&enroll).await;
    let d = h.decision("e-1").await;
    assert_eq!(d.decision, DecisionKind::Applied, "{d:?}");
    assert_eq!(d.profile_status, Some(WireStatus::Enrolled));
    assert!(d.speech_millis > 4_000, "speech {}", d.speech_millis);
    assert!((d.enrollment_progress - 1.0).abs() < 1e-6);
    let model_id = d.model_id.clone().expect("model id stamped");
    assert!(model_id.starts_with("campplus"), "{model_id}");

    // The same speaker is accepted; another speaker is rejected.
    h.publish(&verification(tenant, "alice", "v-same", wav(ALICE_VERIFY)))
        .await;
    let same = h.decision("v-same").await;
    assert_eq!(same.decision, DecisionKind::Accept, "{same:?}");
    let signals = same.signals.clone().expect("signals");
    assert_eq!(
        (signals.voice.as_str(), signals.liveness.as_str()),
        ("high", "not_checked")
    );
    h.publish(&verification(tenant, "alice", "v-other", wav(BOB_VERIFY)))
        .await;
    let other = h.decision("v-other").await;
    assert_eq!(other.decision, DecisionKind::Reject, "{other:?}");
    // Calibrated: the LLR is the score, positive for the speaker, negative
    // for the impostor, judged in the wideband calibration.
    assert!(
        same.llr.unwrap() > 0.0 && other.llr.unwrap() < 0.0,
        "{:?} vs {:?}",
        same.llr,
        other.llr
    );
    assert_eq!((same.score, other.score), (same.llr, other.llr));
    assert!(same.raw_score.unwrap() > other.raw_score.unwrap() + 0.3);
    let thresholds = same.thresholds.clone().expect("thresholds");
    assert_eq!(
        (thresholds.scale.as_str(), thresholds.band.as_deref()),
        ("llr", Some("wide"))
    );
    assert!(thresholds.accept > thresholds.reject);

    // Stored state, read back from the store under test.
    let profile = store
        .profile(tenant, "alice")
        .await
        .unwrap()
        .expect("profile stored");
    assert_eq!(profile.status, ProfileStatus::Enrolled);
    assert_eq!((profile.samples, profile.failures), (1, 1));
    assert!(
        store
            .voiceprint(tenant, "alice", &model_id)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.enrollment_audio(tenant, "alice").await.unwrap().len(),
        1,
        "audio retained with consent"
    );
    assert!(store.decision(tenant, "v-same").await.unwrap().is_some());

    // Redelivery of a decided job: the same decision bytes, nothing applied twice.
    h.publish(&enroll).await;
    let answers = h.decisions("e-1", 2).await;
    assert_eq!(
        answers[0], answers[1],
        "a redelivered job gets the identical decision"
    );
    assert_eq!(
        store
            .profile(tenant, "alice")
            .await
            .unwrap()
            .unwrap()
            .samples,
        1
    );

    replayed_recordings(&mut h, store.as_ref()).await;

    // Refusals with stable codes.
    h.publish(&verification(
        tenant,
        "nobody",
        "v-unknown",
        wav(ALICE_VERIFY),
    ))
    .await;
    assert_eq!(
        h.decision("v-unknown").await.error_code.as_deref(),
        Some("profile_not_found")
    );
    h.publish(&enrollment(
        tenant,
        "carol",
        "e-no-consent",
        wav(ALICE_ENROLL),
    ))
    .await;
    assert_eq!(
        h.decision("e-no-consent").await.error_code.as_deref(),
        Some("consent_required")
    );

    // A voiceprint of another model only: the profile must re-enroll.
    let mut legacy = store.profile(tenant, "alice").await.unwrap().unwrap();
    legacy.user_id = "frank".into();
    let old_print = store
        .voiceprint(tenant, "alice", &model_id)
        .await
        .unwrap()
        .unwrap();
    let seed = JobCommit {
        tenant: tenant.into(),
        request_id: "seed-frank".into(),
        decision: b"seed".to_vec(),
        mutations: vec![
            Mutation::PutProfile(legacy),
            Mutation::PutVoiceprint(Voiceprint {
                user_id: "frank".into(),
                model_id: "older-model@sha256:000000000000".into(),
                ..old_print
            }),
        ],
    };
    store.commit(&seed).await.unwrap();
    h.publish(&verification(tenant, "frank", "v-frank", wav(ALICE_VERIFY)))
        .await;
    let d = h.decision("v-frank").await;
    assert_eq!(d.error_code.as_deref(), Some("re_enroll_required"));
    assert_eq!(d.profile_status, Some(WireStatus::ReEnroll));
    assert_eq!(
        store
            .profile(tenant, "frank")
            .await
            .unwrap()
            .unwrap()
            .status,
        ProfileStatus::ReEnroll
    );

    // A job keyed for another user, a reused request id, a withdrawn consent.
    let misrouted = verification(tenant, "alice", "v-wrong-key", wav(ALICE_VERIFY));
    let bytes = h.registry.encode_request(&misrouted).unwrap();
    h.publish_raw(
        &h.topics.verification.clone(),
        key(tenant, "mallory").as_bytes(),
        &bytes,
    )
    .await;
    assert_eq!(
        h.decision("v-wrong-key").await.error_code.as_deref(),
        Some("wrong_key")
    );
    // Misrouted under an id already decided: refused, and the stored
    // decision (which a redelivery of the real job is answered with) stays.
    let stored = store.decision(tenant, "e-1").await.unwrap();
    let reused = verification(tenant, "alice", "e-1", wav(ALICE_VERIFY));
    let bytes = h.registry.encode_request(&reused).unwrap();
    h.publish_raw(
        &h.topics.verification.clone(),
        key(tenant, "mallory").as_bytes(),
        &bytes,
    )
    .await;
    let answers = h.decisions("e-1", 3).await;
    let refused: timbre_schemas::Decision = h.registry.decode(&answers[2]).unwrap();
    assert_eq!(refused.error_code.as_deref(), Some("wrong_key"));
    assert_eq!(store.decision(tenant, "e-1").await.unwrap(), stored);
    h.publish(&verification(tenant, "nobody", "v-same", wav(ALICE_VERIFY)))
        .await;
    let conflict = h.decisions("v-same", 2).await;
    let conflict: timbre_schemas::Decision = h.registry.decode(&conflict[1]).unwrap();
    assert_eq!(conflict.error_code.as_deref(), Some("request_id_conflict"));
    assert_eq!(conflict.user_id, "nobody", "never another user's decision");
    h.publish(&consent(tenant, "gina", "c-gina", false)).await;
    h.decision("c-gina").await;
    h.publish(&enrollment(tenant, "gina", "e-gina", wav(ALICE_ENROLL)))
        .await;
    assert_eq!(
        h.decision("e-gina").await.error_code.as_deref(),
        Some("consent_withdrawn")
    );

    // Malformed jobs: bad audio inside a valid event, and bytes that are no event.
    h.publish(&consent(tenant, "dave", "c-dave", true)).await;
    h.decision("c-dave").await;
    h.publish(&enrollment(
        tenant,
        "dave",
        "e-bad-wav",
        b"definitely not a wav file".to_vec(),
    ))
    .await;
    let bad = h.decision("e-bad-wav").await;
    assert_eq!(
        (bad.decision, bad.error_code.as_deref()),
        (DecisionKind::Error, Some("not_wav"))
    );
    let garbage_key = key(tenant, "eve");
    h.publish_raw(
        &h.topics.verification.clone(),
        garbage_key.as_bytes(),
        b"\x00\x01random bytes",
    )
    .await;

    let mut dead = h
        .bus
        .subscribe(
            &format!("{prefix}dlq-reader"),
            std::slice::from_ref(&h.topics.dead_letter),
        )
        .await
        .unwrap();
    let mut codes = Vec::new();
    for _ in 0..5 {
        let m = tokio::time::timeout(Duration::from_secs(120), dead.next())
            .await
            .expect("dead letter")
            .unwrap();
        let record: DeadLetter = h.registry.decode(&m.payload).unwrap();
        codes.push(record.error_code.clone());
        if record.error_code == "bad_framing" {
            assert_eq!(
                record.payload, b"\x00\x01random bytes",
                "original bytes kept"
            );
            let position = record.request_id.clone();
            let d = h.decision(&position).await;
            assert_eq!(d.error_code.as_deref(), Some("bad_framing"));
        }
    }
    codes.sort();
    assert_eq!(
        codes,
        vec![
            "bad_framing",
            "not_wav",
            "request_id_conflict",
            "wrong_key",
            "wrong_key"
        ]
    );
    narrowband(&mut h, tenant).await;
    impostor_tail(&mut h).await;
    noise_and_music_do_not_enroll(&mut h).await;
    reused_request_ids(&mut h, store.as_ref(), tenant).await;
    watchlist_and_delete(&mut h, store.as_ref(), tenant).await;
    h.stop_processor().await;
}

/// Noise and music are not speech: neither enrolls anyone, even where one
/// short sample would (the energy estimate counted both as speech).
async fn noise_and_music_do_not_enroll(h: &mut Harness) {
    let tenant = SHORT_ENROLLMENT_TENANT;
    for (name, samples) in [("noise", noise()), ("music", music())] {
        let user = format!("{name}-maker");
        h.publish(&consent(tenant, &user, &format!("{name}-c"), true))
            .await;
        let id = format!("{name}-e");
        h.publish(&enrollment(tenant, &user, &id, wav_16k(&samples)))
            .await;
        let d = h.decision(&id).await;
        assert_eq!(d.decision, DecisionKind::Retry, "{name}: {d:?}");
        assert_eq!(d.reasons, vec!["NOT_ENOUGH_SPEECH"], "{name}: {d:?}");
        assert!(d.speech_millis < 1_000, "{name}: {d:?}");
        assert_eq!(d.profile_status, Some(WireStatus::NotEnrolled), "{name}");
    }
}

/// An accepted verification's probe is also scored against the tenant's
/// other voices for its impostor tail, which is saved for the next
/// processor; a rejected probe (whose speaker is unknown) and a second
/// account of the claimed voice count nothing.
async fn impostor_tail(h: &mut Harness) {
    let tenant = "tails";
    let users = [
        ("t-alice", ALICE_ENROLL),
        ("t-alice-2", ALICE_ENROLL),
        ("t-bob", BOB_ENROLL),
    ];
    for (user, audio) in users {
        h.publish(&consent(tenant, user, &format!("{user}-c"), true))
            .await;
        h.publish(&enrollment(tenant, user, &format!("{user}-e"), wav(audio)))
            .await;
        let d = h.decision(&format!("{user}-e")).await;
        assert_eq!(d.decision, DecisionKind::Applied, "{d:?}");
    }
    // Tails counted under another calibration are not read: 1,000 trials
    // far above every line, stored under another scale, would raise the
    // lines by the most a tail can (and reject the verification below).
    let model_id = timbre::model::default_model_id().to_string();
    let mut foreign = TenantTails {
        scale: 1,
        ..TenantTails::default()
    };
    for _ in 0..1_000 {
        foreign.wide.record(50.0);
    }
    h.store
        .put_impostor_tails(tenant, &model_id, &foreign)
        .await
        .unwrap();
    let counted = |h: &Harness| {
        h.metrics
            .impostor_tail_trials
            .with_label_values(&["wide"])
            .get()
    };
    let before = counted(h);
    h.publish(&verification(tenant, "t-alice", "t-other", wav(BOB_VERIFY)))
        .await;
    assert_eq!(h.decision("t-other").await.decision, DecisionKind::Reject);
    assert_eq!(counted(h), before, "a rejected probe counts nothing");
    h.publish(&verification(
        tenant,
        "t-alice",
        "t-same",
        wav(ALICE_VERIFY),
    ))
    .await;
    let same = h.decision("t-same").await;
    assert_eq!(same.decision, DecisionKind::Accept, "{same:?}");
    assert_eq!(
        counted(h),
        before + 1,
        "against t-bob only: t-alice-2 is the same voice"
    );
    assert_eq!(same.model_id.as_deref(), Some(model_id.as_str()));
    let stored = h
        .store
        .impostor_tails(tenant, &model_id)
        .await
        .unwrap()
        .expect("tails saved");
    assert_eq!((stored.wide.total(), stored.narrow.total()), (1, 0));
    let bundled = timbre::scoring::bundled_score_norm(&model_id).expect("bundled");
    assert_eq!(stored.scale, bundled.scale_id());
}

/// 8 kHz audio is judged by the narrowband calibration: the speaker's LLR
/// stays positive and an impostor's negative.
async fn narrowband(h: &mut Harness, tenant: &str) {
    h.publish(&consent(tenant, "nb-alice", "nb-c", true)).await;
    h.publish(&enrollment(tenant, "nb-alice", "nb-e", wav(ALICE_ENROLL)))
        .await;
    assert_eq!(h.decision("nb-e").await.decision, DecisionKind::Applied);
    for (id, audio, same) in [
        ("nb-same", ALICE_VERIFY, true),
        ("nb-other", BOB_VERIFY, false),
    ] {
        h.publish(&verification(tenant, "nb-alice", id, at_8k(&wav(audio))))
            .await;
        let d = h.decision(id).await;
        let thresholds = d.thresholds.clone().expect("thresholds");
        assert_eq!(thresholds.band.as_deref(), Some("narrow"), "{d:?}");
        let llr = d.llr.expect("calibrated");
        if same {
            // Positive, not always past the default accept line (0.1% of
            // impostors): 4 s of telephone audio may be asked to retry.
            assert!(llr > 0.0, "{d:?}");
            assert_ne!(d.decision, DecisionKind::Reject, "{d:?}");
        } else {
            assert!(llr < 0.0, "{d:?}");
            assert_eq!(d.decision, DecisionKind::Reject, "{d:?}");
        }
    }
}

/// A request id names one job: another body under the id is refused, even
/// for the same user, and of two jobs sent under one id at once (different
/// users, so different partitions and lanes) exactly one is applied.
async fn reused_request_ids(h: &mut Harness, store: &dyn Store, tenant: &str) {
    let genuine = verification(tenant, "alice", "v-body", wav(ALICE_VERIFY));
    h.publish(&genuine).await;
    let first = h.decision("v-body").await;
    assert_eq!(first.decision, DecisionKind::Accept, "{first:?}");
    assert_eq!(
        first.request_digest.as_deref(),
        Some(genuine.digest().as_str())
    );
    // Bob's voice under alice's id must not collect alice's accept.
    h.publish(&verification(tenant, "alice", "v-body", wav(BOB_VERIFY)))
        .await;
    let answers = h.decisions("v-body", 2).await;
    let second: timbre_schemas::Decision = h.registry.decode(&answers[1]).unwrap();
    assert_eq!(
        (second.decision, second.error_code.as_deref()),
        (DecisionKind::Error, Some("request_id_conflict")),
        "{second:?}"
    );
    let stored = store.decision(tenant, "v-body").await.unwrap().unwrap();
    assert_eq!(stored, answers[0], "the first decision stays stored");

    let race = [
        verification(tenant, "alice", "v-race", wav(ALICE_VERIFY)),
        verification(tenant, "nobody", "v-race", wav(BOB_VERIFY)),
    ];
    for job in &race {
        h.publish(job).await;
    }
    let answers = h.decisions("v-race", 2).await;
    let decoded: Vec<timbre_schemas::Decision> = answers
        .iter()
        .map(|a| h.registry.decode(a).unwrap())
        .collect();
    let refused: Vec<_> = decoded
        .iter()
        .filter(|d| d.error_code.as_deref() == Some("request_id_conflict"))
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "exactly one job loses the id: {decoded:?}"
    );
    let winner = answers
        .iter()
        .zip(&decoded)
        .find(|(_, d)| d.error_code.as_deref() != Some("request_id_conflict"))
        .expect("one job applied");
    let stored = store.decision(tenant, "v-race").await.unwrap().unwrap();
    assert_eq!(
        &stored, winner.0,
        "the stored decision is the applied job's"
    );
    assert_ne!(refused[0].user_id, winner.1.user_id);
}

/// One speaker holds two accounts; listing one refuses that voice on the
/// other too, unlisting restores it, and a deleted profile is gone.
async fn watchlist_and_delete(h: &mut Harness, store: &dyn Store, tenant: &str) {
    for user in ["wl-alice", "wl-mallory"] {
        h.publish(&consent(tenant, user, &format!("c-{user}"), true))
            .await;
        h.decision(&format!("c-{user}")).await;
        h.publish(&enrollment(
            tenant,
            user,
            &format!("e-{user}"),
            wav(ALICE_ENROLL),
        ))
        .await;
        assert_eq!(
            h.decision(&format!("e-{user}")).await.profile_status,
            Some(WireStatus::Enrolled)
        );
    }
    let list = profile_command(
        tenant,
        "wl-mallory",
        "g-add",
        ProfileCommandKind::GreylistAdd,
    );
    h.publish(&list).await;
    assert_eq!(h.decision("g-add").await.reasons, ["watchlisted"]);
    h.publish(&verification(
        tenant,
        "wl-alice",
        "v-listed",
        wav(ALICE_VERIFY),
    ))
    .await;
    let listed = h.decision("v-listed").await;
    assert_eq!(listed.decision, DecisionKind::Reject, "{listed:?}");
    assert_eq!(listed.reasons, ["watchlist_match"]);
    assert!(
        listed.raw_score.unwrap() > 0.5,
        "the voice itself matches: {listed:?}"
    );
    let unlist = profile_command(
        tenant,
        "wl-mallory",
        "g-rm",
        ProfileCommandKind::GreylistRemove,
    );
    h.publish(&unlist).await;
    h.decision("g-rm").await;
    h.publish(&verification(
        tenant,
        "wl-alice",
        "v-unlisted",
        wav(ALICE_VERIFY),
    ))
    .await;
    assert_eq!(
        h.decision("v-unlisted").await.decision,
        DecisionKind::Accept
    );

    let delete = profile_command(tenant, "wl-alice", "d-alice", ProfileCommandKind::Delete);
    h.publish(&delete).await;
    assert_eq!(h.decision("d-alice").await.reasons, ["profile_deleted"]);
    assert_eq!(store.profile(tenant, "wl-alice").await.unwrap(), None);
    assert!(
        store
            .enrollment_audio(tenant, "wl-alice")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .consent(tenant, "wl-alice", timbre::domain::BIOMETRIC_PURPOSE)
            .await
            .unwrap(),
        None
    );
    assert!(
        store.profile(tenant, "wl-mallory").await.unwrap().is_some(),
        "others untouched"
    );
    h.publish(&verification(
        tenant,
        "wl-alice",
        "v-deleted",
        wav(ALICE_VERIFY),
    ))
    .await;
    assert_eq!(
        h.decision("v-deleted").await.error_code.as_deref(),
        Some("profile_not_found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_on_embedded_bus_and_file_store() {
    let store = Arc::new(FileStore::open(&scratch_dir("e2e").join("timbre.redb")).unwrap());
    e2e(Arc::new(MemoryBus::new(10_000)), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_on_kafka_and_cassandra() {
    let (Some(kafka), Some(cql)) = (kafka_url(), cql_nodes()) else {
        return;
    };
    let store = connect_store(&format!("cql://{cql}/{}", unique("e2e")))
        .await
        .unwrap()
        .state;
    e2e(connect_bus(&kafka).unwrap(), store).await;
}

/// With the synthetic-speech check in the scoring pool: a real voice passes
/// it and is accepted; a synthetic voice is rejected even when it matches
/// its voiceprint (here it enrolled itself, and the tenant keeps no
/// fingerprints, so the replay check does not see the reuse) and the
/// failure counts toward the cooldown.
async fn synthetic_voices(bus: Arc<dyn Bus>, store: Arc<dyn Store>) {
    let prefix = format!("{}.", unique("synth"));
    let mut h = Harness::start_with(bus, store.clone(), &prefix, vec![synthetic_check()]).await;
    let tenant = SHORT_ENROLLMENT_TENANT;
    for (user, enroll, verify) in [
        ("real", ALICE_ENROLL, ALICE_VERIFY),
        ("robot", SYNTHETIC_CLIP, SYNTHETIC_CLIP),
    ] {
        h.publish(&consent(tenant, user, &format!("{user}-c"), true))
            .await;
        assert_eq!(
            h.decision(&format!("{user}-c")).await.decision,
            DecisionKind::Applied
        );
        h.publish(&enrollment(tenant, user, &format!("{user}-e"), wav(enroll)))
            .await;
        let enrolled = h.decision(&format!("{user}-e")).await;
        assert_eq!(
            enrolled.profile_status,
            Some(WireStatus::Enrolled),
            "{enrolled:?}"
        );
        h.publish(&verification(
            tenant,
            user,
            &format!("{user}-v"),
            wav(verify),
        ))
        .await;
    }

    let real = h.decision("real-v").await;
    assert_eq!(real.decision, DecisionKind::Accept, "{real:?}");
    let signals = real.signals.clone().expect("signals");
    assert_ne!(signals.liveness, "low", "{real:?}");
    assert!(
        signals.synthetic_score.unwrap() >= signals.synthetic_threshold.unwrap(),
        "{real:?}"
    );

    let robot = h.decision("robot-v").await;
    assert_eq!(robot.decision, DecisionKind::Reject, "{robot:?}");
    assert!(
        robot.reasons.iter().any(|r| r == "synthetic_speech")
            && !robot.reasons.iter().any(|r| r == "voice_mismatch"),
        "{robot:?}"
    );
    let signals = robot.signals.clone().expect("signals");
    assert_eq!(
        (signals.voice.as_str(), signals.liveness.as_str()),
        ("high", "low"),
        "the voice matched; liveness failed: {robot:?}"
    );
    assert!(signals.synthetic_score.unwrap() < signals.synthetic_threshold.unwrap());
    let profile = store.profile(tenant, "robot").await.unwrap().unwrap();
    assert_eq!(profile.failures, 1, "{profile:?}");
    h.stop_processor().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_voices_on_embedded_bus_and_file_store() {
    let store = Arc::new(FileStore::open(&scratch_dir("synth").join("timbre.redb")).unwrap());
    synthetic_voices(Arc::new(MemoryBus::new(10_000)), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_voices_on_kafka_and_cassandra() {
    let (Some(kafka), Some(cql)) = (kafka_url(), cql_nodes()) else {
        return;
    };
    let store = connect_store(&format!("cql://{cql}/{}", unique("synth")))
        .await
        .unwrap()
        .state;
    synthetic_voices(connect_bus(&kafka).unwrap(), store).await;
}
