//! One contract for the store port, run against the file store and real Cassandra.

use std::sync::Arc;

use timbre::adapters::file_store::FileStore;
use timbre::backends::connect_store;
use timbre::domain::impostor_tail::TenantTails;
use timbre::domain::{
    ApiKey, CallState, ChallengeSession, Consent, DialogueKind, DialogueState, JobCommit, Mutation,
    Profile, ProfileStatus, RescoreResult, Scope, Voiceprint, WatchlistEntry, now_ms,
};
use timbre::liveness::Fingerprint;
use timbre::ports::{AccessStore, Store};
use timbre_schemas::{Biokey, Code};
use timbre_tests::{cql_nodes, cql_tls_dir, scratch_dir, unique};

fn profile(tenant: &str, user: &str, status: ProfileStatus) -> Profile {
    Profile {
        tenant: tenant.into(),
        user_id: user.into(),
        status,
        samples: 3,
        net_speech_millis: 21_500,
        learning_progress: 0.25,
        sessions: 1,
        failures: 2,
        cooldown_until: 1_700_000_200_000,
        created_at: 1_700_000_000_000,
        updated_at: 1_700_000_100_000,
    }
}

/// Migrations are idempotent; a job's commit is read back field for field;
/// erasure removes voiceprints, fingerprints and audio; tenants never see each other's rows.
async fn store_contract(store: Arc<dyn Store>) {
    let v1 = store.migrate().await.unwrap();
    assert_eq!(
        store.migrate().await.unwrap(),
        v1,
        "migrations are idempotent"
    );
    store.ping().await.unwrap();

    let (tenant, other) = ("acme", "globex");
    let user = "alice";

    // A request id is bound to the first job's digest, per tenant.
    assert!(
        store
            .claim_request(tenant, "r-claim", "digest-a")
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_request(tenant, "r-claim", "digest-a")
            .await
            .unwrap(),
        "a redelivery of the owning job keeps its claim"
    );
    assert!(
        !store
            .claim_request(tenant, "r-claim", "digest-b")
            .await
            .unwrap(),
        "another job under the id is refused"
    );
    assert!(
        store
            .claim_request(other, "r-claim", "digest-b")
            .await
            .unwrap()
    );
    // Every status is stored and read back, a lockout included.
    let locked = JobCommit {
        tenant: tenant.into(),
        request_id: "r-locked".into(),
        decision: b"d".to_vec(),
        mutations: vec![Mutation::PutProfile(profile(
            tenant,
            "locked-user",
            ProfileStatus::Locked,
        ))],
    };
    store.commit(&locked).await.unwrap();
    assert_eq!(
        store
            .profile(tenant, "locked-user")
            .await
            .unwrap()
            .map(|p| p.status),
        Some(ProfileStatus::Locked)
    );
    let embedding: Vec<f32> = (0..192).map(|i| (i as f32 * 0.01).sin()).collect();
    let voiceprint = Voiceprint {
        tenant: tenant.into(),
        user_id: user.into(),
        model_id: "campplus@sha256:92f29b94e694".into(),
        embedding: embedding.clone(),
        weight: 3.0,
        updated_at: 1_700_000_100_000,
    };
    let consent = Consent {
        tenant: tenant.into(),
        user_id: user.into(),
        purpose: "voice_biometrics".into(),
        granted: true,
        retain_audio: true,
        updated_at: 1_700_000_000_000,
    };
    // 300 KB: real enrollment audio is larger than Cassandra's batch limit.
    let audio: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let commit = JobCommit {
        tenant: tenant.into(),
        request_id: "req-1".into(),
        decision: b"decision-bytes".to_vec(),
        mutations: vec![
            Mutation::PutProfile(profile(tenant, user, ProfileStatus::Enrolled)),
            Mutation::PutVoiceprint(voiceprint.clone()),
            Mutation::PutConsent(consent.clone()),
            Mutation::RetainAudio {
                user_id: user.into(),
                wav: audio.clone(),
                at: 1,
                keep_newest: 10,
            },
        ],
    };
    store.commit(&commit).await.unwrap();

    assert_eq!(
        store.profile(tenant, user).await.unwrap(),
        Some(profile(tenant, user, ProfileStatus::Enrolled))
    );
    assert_eq!(
        store
            .voiceprint(tenant, user, &voiceprint.model_id)
            .await
            .unwrap(),
        Some(voiceprint.clone())
    );
    assert_eq!(
        store
            .consent(tenant, user, "voice_biometrics")
            .await
            .unwrap(),
        Some(consent)
    );
    assert_eq!(
        store.enrollment_audio(tenant, user).await.unwrap(),
        vec![("req-1".to_string(), audio)]
    );
    assert_eq!(
        store.decision(tenant, "req-1").await.unwrap(),
        Some(b"decision-bytes".to_vec())
    );

    // Tenant isolation: same user id and request id under another tenant.
    assert_eq!(store.profile(other, user).await.unwrap(), None);
    assert_eq!(
        store
            .voiceprint(other, user, &voiceprint.model_id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.decision(other, "req-1").await.unwrap(), None);
    assert!(
        store
            .enrollment_audio(other, user)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .voiceprint(tenant, user, "another-model")
            .await
            .unwrap(),
        None
    );

    // Retention withdrawn: the audio goes, the voiceprint stays.
    let keep_voice = JobCommit {
        tenant: tenant.into(),
        request_id: "req-retention".into(),
        decision: b"retention-off".to_vec(),
        mutations: vec![Mutation::EraseAudio {
            user_id: user.into(),
        }],
    };
    store.commit(&keep_voice).await.unwrap();
    assert!(
        store
            .enrollment_audio(tenant, user)
            .await
            .unwrap()
            .is_empty(),
        "retained audio erased"
    );
    assert!(
        store
            .voiceprint(tenant, user, &voiceprint.model_id)
            .await
            .unwrap()
            .is_some(),
        "the voiceprint is not touched"
    );

    // Opt-out: biometrics erased, profile kept as OPTED_OUT.
    let opt_out = JobCommit {
        tenant: tenant.into(),
        request_id: "req-2".into(),
        decision: b"opted-out".to_vec(),
        mutations: vec![
            Mutation::PutProfile(profile(tenant, user, ProfileStatus::OptedOut)),
            Mutation::EraseBiometrics {
                user_id: user.into(),
            },
        ],
    };
    store.commit(&opt_out).await.unwrap();
    assert_eq!(
        store
            .voiceprint(tenant, user, &voiceprint.model_id)
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .enrollment_audio(tenant, user)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.profile(tenant, user).await.unwrap().unwrap().status,
        ProfileStatus::OptedOut
    );
    assert_eq!(
        store.decision(tenant, "req-1").await.unwrap(),
        Some(b"decision-bytes".to_vec())
    );
    watchlist_and_delete(store.as_ref(), tenant).await;
    fingerprints(store.as_ref(), tenant, other).await;
    diagnostics(store.as_ref(), tenant, other).await;
    biokeys(store.as_ref(), tenant, other).await;
    retained_audio_is_capped(store.as_ref(), tenant).await;
    recent_decisions(store.as_ref(), tenant, other).await;
    user_and_outcome_pages(store.as_ref()).await;
    impostor_tails(store.as_ref(), tenant, other).await;
}

/// A tenant's impostor tails read back as saved, per tenant and model; a
/// save overwrites.
async fn impostor_tails(store: &dyn Store, tenant: &str, other: &str) {
    assert_eq!(store.impostor_tails(tenant, "m1").await.unwrap(), None);
    let mut tails = TenantTails::default();
    for llr in [-12.0, 0.5, 0.5, 3.0] {
        tails.wide.record(llr);
    }
    tails.narrow.record(-2.0);
    store
        .put_impostor_tails(tenant, "m1", &tails)
        .await
        .unwrap();
    assert_eq!(
        store.impostor_tails(tenant, "m1").await.unwrap(),
        Some(tails.clone())
    );
    assert_eq!(store.impostor_tails(other, "m1").await.unwrap(), None);
    assert_eq!(store.impostor_tails(tenant, "m2").await.unwrap(), None);
    tails.narrow.record(4.0);
    store
        .put_impostor_tails(tenant, "m1", &tails)
        .await
        .unwrap();
    let read = store.impostor_tails(tenant, "m1").await.unwrap().unwrap();
    assert_eq!((read.wide.total(), read.narrow.total()), (4, 2));
}

/// A tenant's users and a run's outcomes come in pages in the same user id
/// order (byte order: a re-scoring pass merges the two), never another
/// tenant's or another run's.
async fn user_and_outcome_pages(store: &dyn Store) {
    let (tenant, other, target) = ("paged", "paged-other", "next@sha256:01");
    let ids = [
        "u-b", "u-a", "u-c2", "u-c10", "u-\u{e9}", "u-ab", "u-Z", "u-d",
    ];
    let outcome = |tenant: &str, user: &str, target: &str| {
        Mutation::PutRescoreResult(RescoreResult {
            tenant: tenant.into(),
            target_model: target.into(),
            user_id: user.into(),
            ok: user != "u-d",
            detail: String::new(),
            updated_at: 1_700_000_000_000,
        })
    };
    let commit = |tenant: &str, id: &str, mutations: Vec<Mutation>| JobCommit {
        tenant: tenant.into(),
        request_id: id.into(),
        decision: b"d".to_vec(),
        mutations,
    };
    let mut mutations: Vec<Mutation> = ids
        .iter()
        .map(|u| Mutation::PutProfile(profile(tenant, u, ProfileStatus::Enrolled)))
        .collect();
    mutations.extend(
        ids.iter()
            .filter(|u| **u != "u-c2")
            .map(|u| outcome(tenant, u, target)),
    );
    mutations.push(outcome(tenant, "u-a0", "other@sha256:02"));
    store
        .commit(&commit(tenant, "r-pages", mutations))
        .await
        .unwrap();
    let foreign = vec![
        Mutation::PutProfile(profile(other, "u-a0", ProfileStatus::Enrolled)),
        outcome(other, "u-a0", target),
    ];
    store
        .commit(&commit(other, "r-pages", foreign))
        .await
        .unwrap();

    let mut sorted: Vec<String> = ids.iter().map(|u| u.to_string()).collect();
    sorted.sort();
    let mut users = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.users(tenant, after.as_deref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        users.extend(page.into_iter().map(|(u, _)| u));
    }
    assert_eq!(users, sorted, "users in byte order, this tenant's only");

    let mut outcomes = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .rescore_results(tenant, target, after.as_deref(), 2)
            .await
            .unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.user_id.clone());
        outcomes.extend(page.into_iter().map(|o| (o.user_id, o.ok)));
    }
    let expected: Vec<(String, bool)> = sorted
        .iter()
        .filter(|u| *u != "u-c2")
        .map(|u| (u.clone(), u != "u-d"))
        .collect();
    assert_eq!(
        outcomes, expected,
        "this run's outcomes in the users' order"
    );
}

/// A user's decisions are listed newest first, per tenant, and the list
/// goes with the user's deletion (a deletion's own decision included).
async fn recent_decisions(store: &dyn Store, tenant: &str, other: &str) {
    let user = "listed";
    let decided = |tenant: &str, id: &str, at: i64, extra: Vec<Mutation>| JobCommit {
        tenant: tenant.into(),
        request_id: id.into(),
        decision: id.as_bytes().to_vec(),
        mutations: [
            vec![Mutation::IndexDecision {
                user_id: user.into(),
                at,
            }],
            extra,
        ]
        .concat(),
    };
    // Committed out of time order: the list follows decision times.
    for (id, at) in [("d-2", 2_000), ("d-1", 1_000), ("d-3", 3_000)] {
        store
            .commit(&decided(tenant, id, at, vec![]))
            .await
            .unwrap();
    }
    store
        .commit(&decided(other, "d-other", 4_000, vec![]))
        .await
        .unwrap();
    assert_eq!(
        store.recent_decision_ids(tenant, user, 10).await.unwrap(),
        ["d-3", "d-2", "d-1"]
    );
    assert_eq!(
        store.recent_decision_ids(tenant, user, 2).await.unwrap(),
        ["d-3", "d-2"]
    );
    assert!(
        store
            .recent_decision_ids(tenant, "nobody", 10)
            .await
            .unwrap()
            .is_empty()
    );
    let delete = Mutation::DeleteUser {
        user_id: user.into(),
    };
    store
        .commit(&decided(tenant, "d-delete", 5_000, vec![delete]))
        .await
        .unwrap();
    assert!(
        store
            .recent_decision_ids(tenant, user, 10)
            .await
            .unwrap()
            .is_empty(),
        "deleted with the user"
    );
    assert_eq!(
        store.decision(tenant, "d-2").await.unwrap(),
        Some(b"d-2".to_vec()),
        "the decisions stay as the audit record"
    );
    assert_eq!(
        store.recent_decision_ids(other, user, 10).await.unwrap(),
        ["d-other"]
    );
}

/// Only the newest recordings of a user are retained.
async fn retained_audio_is_capped(store: &dyn Store, tenant: &str) {
    let user = "capped";
    for n in 1..=3 {
        let commit = JobCommit {
            tenant: tenant.into(),
            request_id: format!("cap-{n}"),
            decision: b"d".to_vec(),
            mutations: vec![Mutation::RetainAudio {
                user_id: user.into(),
                wav: vec![n; 16],
                at: 1_700_000_000_000 + i64::from(n),
                keep_newest: 2,
            }],
        };
        store.commit(&commit).await.unwrap();
    }
    let mut kept = store.enrollment_audio(tenant, user).await.unwrap();
    kept.sort();
    assert_eq!(
        kept,
        vec![
            ("cap-2".to_string(), vec![2; 16]),
            ("cap-3".to_string(), vec![3; 16])
        ],
        "the oldest recording made room"
    );
    // Paged reads: the ids, then one recording at a time.
    let mut ids = store.retained_audio_ids(tenant, user).await.unwrap();
    ids.sort();
    assert_eq!(ids, ["cap-2", "cap-3"]);
    assert_eq!(
        store.retained_audio(tenant, user, "cap-3").await.unwrap(),
        Some(vec![3; 16])
    );
    for (user, id) in [(user, "cap-1"), ("nobody", "cap-3")] {
        assert_eq!(
            store.retained_audio(tenant, user, id).await.unwrap(),
            None,
            "{user}/{id}: pruned or another user's"
        );
    }
}

/// Replay fingerprints: newest first, at most the limit, gone after their
/// time to live, with the user's biometrics and with the user.
async fn fingerprints(store: &dyn Store, tenant: &str, other: &str) {
    let user = "fp-user";
    let landmarks = |n: u32| [n.to_le_bytes(), (n * 10).to_le_bytes()].concat();
    let keep = |id: &str, n: u32, at: i64, ttl_secs: u32| JobCommit {
        tenant: tenant.into(),
        request_id: id.into(),
        decision: b"d".to_vec(),
        mutations: vec![Mutation::KeepFingerprint {
            user_id: user.into(),
            landmarks: landmarks(n),
            at,
            ttl_secs,
            keep_newest: 2,
        }],
    };
    let now = now_ms();
    for (i, n) in [1u32, 2, 3].into_iter().enumerate() {
        let at = now - 3_000 + i as i64 * 1_000;
        store
            .commit(&keep(&format!("fp-{n}"), n, at, 3_600))
            .await
            .unwrap();
    }
    let expect = |n: u32| Fingerprint::from_bytes(&landmarks(n)).unwrap();
    assert_eq!(
        store.fingerprints(tenant, user, 2).await.unwrap(),
        vec![expect(3), expect(2)],
        "newest first, at most the limit"
    );
    assert!(
        store
            .fingerprints(other, user, 10)
            .await
            .unwrap()
            .is_empty()
    );

    store
        .commit(&keep("fp-short", 9, now_ms(), 1))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let left = store.fingerprints(tenant, user, 10).await.unwrap();
    assert!(!left.contains(&expect(9)), "expired: {left:?}");
    assert!(left.contains(&expect(3)));

    // Erasure of the biometrics, then deletion of the user, take them all.
    for erase in erasures(user) {
        store
            .commit(&keep(
                &format!("fp-before-{}", erase.rank()),
                4,
                now_ms(),
                3_600,
            ))
            .await
            .unwrap();
        commit_erasure(store, tenant, "fp", erase).await;
        let left = store.fingerprints(tenant, user, 10).await.unwrap();
        assert!(left.is_empty(), "{left:?}");
    }
}

/// The two jobs that must take every kept record of a user: an erasure of
/// the biometrics (a withdrawal) and the deletion of the user.
fn erasures(user: &str) -> [Mutation; 2] {
    [
        Mutation::EraseBiometrics {
            user_id: user.into(),
        },
        Mutation::DeleteUser {
            user_id: user.into(),
        },
    ]
}

/// Commits one erasure as its own job.
async fn commit_erasure(store: &dyn Store, tenant: &str, prefix: &str, erase: Mutation) {
    let commit = JobCommit {
        tenant: tenant.into(),
        request_id: format!("{prefix}-erase-{}", erase.rank()),
        decision: b"d".to_vec(),
        mutations: vec![erase],
    };
    store.commit(&commit).await.unwrap();
}

/// Diagnostic records: kept with the commit's decision until their time to
/// live, per user and tenant, erased with the biometrics or the user.
async fn diagnostics(store: &dyn Store, tenant: &str, other: &str) {
    let user = "diag-user";
    let keep = |id: &str, wav: &[u8], at: i64, ttl_secs: u32| JobCommit {
        tenant: tenant.into(),
        request_id: id.into(),
        decision: format!("decision of {id}").into_bytes(),
        mutations: vec![Mutation::KeepDiagnostics {
            user_id: user.into(),
            job: "verification".into(),
            wav: wav.to_vec(),
            at,
            ttl_secs,
        }],
    };
    let now = now_ms();
    store
        .commit(&keep("diag-1", b"RIFF-one", now - 1_000, 3_600))
        .await
        .unwrap();
    store
        .commit(&keep("diag-2", b"RIFF-two", now, 3_600))
        .await
        .unwrap();
    let kept = store.diagnostics(tenant, user).await.unwrap();
    let ids: Vec<&str> = kept.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["diag-2", "diag-1"], "newest first");
    assert_eq!(kept[0].wav, b"RIFF-two");
    assert_eq!(kept[0].decision, b"decision of diag-2");
    assert_eq!(kept[0].job, "verification");
    assert_eq!((kept[0].at, kept[0].expires_at), (now, now + 3_600_000));
    assert!(store.diagnostics(other, user).await.unwrap().is_empty());

    store
        .commit(&keep("diag-short", b"RIFF-short", now_ms(), 1))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let left = store.diagnostics(tenant, user).await.unwrap();
    assert!(
        left.iter().all(|r| r.request_id != "diag-short"),
        "expired: {left:?}"
    );
    assert_eq!(left.len(), 2);

    for erase in erasures(user) {
        store
            .commit(&keep(
                &format!("diag-before-{}", erase.rank()),
                b"RIFF",
                now_ms(),
                3_600,
            ))
            .await
            .unwrap();
        commit_erasure(store, tenant, "diag", erase).await;
        let left = store.diagnostics(tenant, user).await.unwrap();
        assert!(left.is_empty(), "{left:?}");
    }
}

/// Identifier sets: replaced whole, found by name and digest within their
/// tenant only, an identifier given up finds no one (even before another
/// user takes it), and a deletion erases the set and its lookups.
async fn biokeys(store: &dyn Store, tenant: &str, other: &str) {
    let (a, b) = (unique("bk-a"), unique("bk-b"));
    let (dx, dy) = (unique("digest-x"), unique("digest-y"));
    let set = |user: &str, ani: &str| {
        vec![
            Biokey {
                key: "UserID".into(),
                value: Some(user.into()),
                digest: format!("uid-{user}"),
                display_name: Some("User".into()),
                priority: 1,
                sensitive: false,
                is_user_id: true,
            },
            Biokey {
                key: "ANI".into(),
                value: None,
                digest: ani.into(),
                display_name: None,
                priority: 5,
                sensitive: true,
                is_user_id: false,
            },
        ]
    };
    let put = |user: &str, biokeys: Vec<Biokey>| JobCommit {
        tenant: tenant.into(),
        request_id: unique("bk"),
        decision: b"d".to_vec(),
        mutations: vec![Mutation::PutBiokeys {
            user_id: user.into(),
            biokeys,
        }],
    };
    store.commit(&put(&a, set(&a, &dx))).await.unwrap();
    assert_eq!(store.biokeys(tenant, &a).await.unwrap(), set(&a, &dx));
    assert_eq!(
        store.find_by_biokey(tenant, "ANI", &dx).await.unwrap(),
        Some((a.clone(), set(&a, &dx)))
    );
    assert_eq!(store.find_by_biokey(other, "ANI", &dx).await.unwrap(), None);
    assert_eq!(
        store.find_by_biokey(tenant, "UserID", &dx).await.unwrap(),
        None
    );

    store.commit(&put(&a, set(&a, &dy))).await.unwrap();
    assert_eq!(
        store.find_by_biokey(tenant, "ANI", &dx).await.unwrap(),
        None,
        "a replaced identifier finds no one"
    );
    assert_eq!(
        store
            .find_by_biokey(tenant, "ANI", &dy)
            .await
            .unwrap()
            .map(|(user, _)| user),
        Some(a.clone())
    );
    store.commit(&put(&b, set(&b, &dx))).await.unwrap();
    // Two users holding one identifier (two enrollments that raced): each
    // has its own entry, and erasing one leaves the other's.
    let c = unique("bk-c");
    store.commit(&put(&c, set(&c, &dy))).await.unwrap();
    assert_eq!(
        store.biokey_owners(tenant, "ANI", &dy).await.unwrap(),
        vec![a.clone(), c.clone()]
    );
    let delete = JobCommit {
        tenant: tenant.into(),
        request_id: unique("bk-del"),
        decision: b"d".to_vec(),
        mutations: vec![Mutation::DeleteUser { user_id: a.clone() }],
    };
    store.commit(&delete).await.unwrap();
    assert!(store.biokeys(tenant, &a).await.unwrap().is_empty());
    assert_eq!(
        store
            .find_by_biokey(tenant, "ANI", &dy)
            .await
            .unwrap()
            .map(|(user, _)| user),
        Some(c.clone()),
        "the other holder's entry survives"
    );
    assert_eq!(
        store.biokey_owners(tenant, "ANI", &dy).await.unwrap(),
        vec![c.clone()],
        "the erased user's entry is gone"
    );
    assert_eq!(
        store
            .find_by_biokey(tenant, "ANI", &dx)
            .await
            .unwrap()
            .map(|(user, _)| user),
        Some(b),
        "another user's identifiers survive the deletion"
    );
}

/// Watchlist entries by model, and a profile deletion that takes every row
/// of that user and nothing else.
async fn watchlist_and_delete(store: &dyn Store, tenant: &str) {
    let entry = |user: &str, model: &str| WatchlistEntry {
        tenant: tenant.into(),
        user_id: user.into(),
        model_id: model.into(),
        embedding: vec![0.5, -0.25],
        reason: "fraud".into(),
        added_at: 7,
    };
    for (i, (user, model)) in [("w1", "m1"), ("w2", "m1"), ("w2", "m2")]
        .iter()
        .enumerate()
    {
        let commit = JobCommit {
            tenant: tenant.into(),
            request_id: format!("wl-{i}"),
            decision: b"d".to_vec(),
            mutations: vec![Mutation::Watchlist(entry(user, model))],
        };
        store.commit(&commit).await.unwrap();
    }
    let mut listed = store.watchlist(tenant).await.unwrap();
    listed.sort_by(|a, b| (&a.user_id, &a.model_id).cmp(&(&b.user_id, &b.model_id)));
    assert_eq!(
        listed,
        vec![entry("w1", "m1"), entry("w2", "m1"), entry("w2", "m2")]
    );
    assert!(store.watchlist("other-tenant").await.unwrap().is_empty());
    let unlist = JobCommit {
        tenant: tenant.into(),
        request_id: "wl-rm".into(),
        decision: b"d".to_vec(),
        mutations: vec![Mutation::Unwatchlist {
            user_id: "w2".into(),
        }],
    };
    store.commit(&unlist).await.unwrap();
    assert_eq!(
        store.watchlist(tenant).await.unwrap(),
        vec![entry("w1", "m1")],
        "every model's entry of the user is removed"
    );

    for user in ["u1", "u2"] {
        let setup = JobCommit {
            tenant: tenant.into(),
            request_id: format!("setup-{user}"),
            decision: b"d".to_vec(),
            mutations: vec![
                Mutation::PutProfile(profile(tenant, user, ProfileStatus::Enrolled)),
                Mutation::PutConsent(Consent {
                    tenant: tenant.into(),
                    user_id: user.into(),
                    purpose: "voice_biometrics".into(),
                    granted: true,
                    retain_audio: true,
                    updated_at: 1,
                }),
                Mutation::RetainAudio {
                    user_id: user.into(),
                    wav: b"RIFF".to_vec(),
                    at: 1,
                    keep_newest: 10,
                },
            ],
        };
        store.commit(&setup).await.unwrap();
    }
    let delete = JobCommit {
        tenant: tenant.into(),
        request_id: "del".into(),
        decision: b"d".to_vec(),
        mutations: vec![Mutation::DeleteUser {
            user_id: "u1".into(),
        }],
    };
    store.commit(&delete).await.unwrap();
    assert_eq!(store.profile(tenant, "u1").await.unwrap(), None);
    assert_eq!(
        store
            .consent(tenant, "u1", "voice_biometrics")
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .enrollment_audio(tenant, "u1")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.decision(tenant, "del").await.unwrap(),
        Some(b"d".to_vec())
    );
    assert!(
        store.profile(tenant, "u2").await.unwrap().is_some(),
        "others untouched"
    );
    assert!(
        store
            .consent(tenant, "u2", "voice_biometrics")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.enrollment_audio(tenant, "u2").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_honours_the_contract() {
    let path = scratch_dir("store").join("timbre.redb");
    let store = Arc::new(FileStore::open(&path).unwrap());
    // Voiceprints and retained audio: for the owner's eyes only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    store_contract(store.clone()).await;
    access_contract(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_store_honours_the_contract() {
    let Some(nodes) = cql_nodes() else { return };
    let stores = connect_store(&format!("cql://{nodes}/{}", unique("ks")))
        .await
        .unwrap();
    store_contract(stores.state.clone()).await;
    access_contract(stores.access).await;

    // A request the cluster refuses for itself (a key over 64 KiB) fails the
    // same way on every retry: permanent, so the job is dead-lettered
    // instead of stalling its lane.
    let huge = "u".repeat(70_000);
    let refused = JobCommit {
        tenant: "acme".into(),
        request_id: "huge-key".into(),
        decision: b"d".to_vec(),
        mutations: vec![Mutation::PutProfile(profile(
            "acme",
            &huge,
            ProfileStatus::Enrolled,
        ))],
    };
    let err = stores.state.commit(&refused).await.unwrap_err();
    assert_eq!(err.code(), Code::StoreRejected, "{err}");
    assert!(!err.code().is_transient());
}

/// Over TLS with a client certificate the store keeps the same contract;
/// a node certificate of another CA, or a missing client certificate, is
/// refused at connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_store_over_tls_honours_the_contract() {
    let (Some(nodes), Some(tls)) = (cql_nodes(), cql_tls_dir()) else {
        return;
    };
    let file = |f: &str| tls.join(f).display().to_string();
    let url = |ca: &str, client: bool| {
        let mut url = format!("cql://{nodes}/{}?tls_ca={}", unique("tls"), file(ca));
        if client {
            url += &format!(
                "&tls_cert={}&tls_key={}",
                file("client.pem"),
                file("client.key")
            );
        }
        url
    };
    for (ca, client, why) in [
        ("other-ca.pem", true, "a node certificate of another CA"),
        ("ca.pem", false, "no client certificate"),
    ] {
        let refused = match connect_store(&url(ca, client)).await {
            Err(e) => Some(e),
            // The handshake may only fail at the first query.
            Ok(stores) => stores.state.migrate().await.err(),
        };
        let refused = refused.unwrap_or_else(|| panic!("{why} is refused"));
        // Our side rejects the node's certificate during the handshake; a
        // missing client certificate is the node's alert, which the driver
        // may only see as a broken connection (the URL below, with the
        // certificate, connects).
        if ca == "other-ca.pem" {
            assert!(
                refused.to_string().contains("certificate verify failed"),
                "{why}: {refused}"
            );
        }
    }
    let stores = connect_store(&url("ca.pem", true)).await.unwrap();
    store_contract(stores.state.clone()).await;
    access_contract(stores.access).await;
}

/// `dc.<name>=N` creates the keyspace with a factor per data centre: the
/// test node's data centre takes writes; a data centre the cluster does not
/// have is refused (at creation or at the first write), never silently used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_keyspace_replicates_per_data_centre() {
    let Some(nodes) = cql_nodes() else { return };
    let store = connect_store(&format!("cql://{nodes}/{}?dc.datacenter1=1", unique("nts")))
        .await
        .unwrap()
        .state;
    store.migrate().await.unwrap();
    let commit = |user: &str| JobCommit {
        tenant: "acme".into(),
        request_id: format!("r-{user}"),
        decision: b"d".to_vec(),
        mutations: vec![Mutation::PutProfile(profile(
            "acme",
            user,
            ProfileStatus::Enrolled,
        ))],
    };
    store.commit(&commit("alice")).await.unwrap();
    assert!(store.profile("acme", "alice").await.unwrap().is_some());

    let nowhere = connect_store(&format!("cql://{nodes}/{}?dc.nowhere=1", unique("nts")))
        .await
        .unwrap()
        .state;
    let refused = match nowhere.migrate().await {
        Err(e) => Some(e),
        Ok(_) => nowhere.commit(&commit("bob")).await.err(),
    };
    assert!(refused.is_some(), "an unknown data centre is refused");
}

/// The API access port: keys, single-use sessions and tokens, usage counters.
async fn access_contract(store: Arc<dyn AccessStore>) {
    let now = now_ms();
    let key = ApiKey {
        key_id: unique("key"),
        tenant: "acme".into(),
        name: "ci".into(),
        secret_hash: "ab".repeat(32),
        created_at: now,
        expires_at: 0,
        scopes: None,
        enabled: true,
        retain_data: false,
    };
    assert_eq!(store.api_key(&key.key_id).await.unwrap(), None);
    store.put_api_key(&key).await.unwrap();
    assert_eq!(store.api_key(&key.key_id).await.unwrap(), Some(key.clone()));

    // Scopes round-trip; keys are listed per tenant; enable, disable and
    // revoke act only within the key's tenant.
    let scoped = ApiKey {
        key_id: unique("key"),
        scopes: Some([Scope::ConsentRead, Scope::Verify].into()),
        created_at: now + 1,
        ..key.clone()
    };
    let other = ApiKey {
        key_id: unique("key"),
        tenant: "globex".into(),
        ..key.clone()
    };
    store.put_api_key(&scoped).await.unwrap();
    store.put_api_key(&other).await.unwrap();
    assert_eq!(
        store.api_key(&scoped.key_id).await.unwrap(),
        Some(scoped.clone())
    );
    assert_eq!(
        store.api_keys("acme").await.unwrap(),
        vec![key.clone(), scoped.clone()]
    );
    assert!(
        !store
            .set_api_key_enabled("globex", &scoped.key_id, false)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_api_key("globex", &scoped.key_id)
            .await
            .unwrap()
    );
    assert!(
        store
            .set_api_key_enabled("acme", &scoped.key_id, false)
            .await
            .unwrap()
    );
    let disabled = store.api_key(&scoped.key_id).await.unwrap().unwrap();
    assert_eq!(
        (disabled.enabled, disabled.scopes),
        (false, scoped.scopes.clone())
    );
    // Both flags at once, within the tenant only.
    assert!(
        !store
            .modify_api_key("globex", &scoped.key_id, true, true)
            .await
            .unwrap()
    );
    assert!(
        store
            .modify_api_key("acme", &scoped.key_id, true, true)
            .await
            .unwrap()
    );
    let modified = store.api_key(&scoped.key_id).await.unwrap().unwrap();
    assert_eq!(
        (modified.enabled, modified.retain_data, modified.scopes),
        (true, true, scoped.scopes.clone())
    );
    assert!(store.delete_api_key("acme", &scoped.key_id).await.unwrap());
    assert_eq!(store.api_key(&scoped.key_id).await.unwrap(), None);
    assert!(
        !store
            .set_api_key_enabled("acme", &scoped.key_id, true)
            .await
            .unwrap(),
        "a revoked key stays gone"
    );
    assert_eq!(store.api_keys("globex").await.unwrap(), vec![other]);

    // Shared rate counts: each replica's latest count, summed per minute.
    let counted = unique("rate");
    let count = |minute: i64, replica: &'static str, n: i64| {
        let (store, counted) = (store.clone(), counted.clone());
        async move {
            store
                .count_requests(&counted, minute, replica, n)
                .await
                .unwrap()
        }
    };
    assert_eq!(count(7, "a", 1).await, 1);
    assert_eq!(count(7, "b", 1).await, 2);
    assert_eq!(count(7, "a", 2).await, 3, "a replica's count is replaced");
    assert_eq!(count(8, "b", 1).await, 1, "a new minute starts at zero");
    // A bucket named with this one in front (a key's client tokens are
    // `key␟client␟user`) is a bucket of its own, both ways.
    let nested = format!("{counted}\u{1f}client\u{1f}u1");
    assert_eq!(store.count_requests(&nested, 8, "a", 5).await.unwrap(), 5);
    assert_eq!(count(8, "b", 1).await, 1, "a nested bucket is not counted");
    // Rows of earlier minutes do not count.
    assert_eq!(count(20, "c", 2).await, 2);

    let session = ChallengeSession {
        tenant: "acme".into(),
        session_id: unique("s"),
        user_id: "u1".into(),
        challenge: "4 7 1 9".into(),
        created_at: now,
        expires_at: now + 60_000,
        dialogue: None,
        call: None,
    };
    store.put_session(&session).await.unwrap();
    assert_eq!(
        store
            .take_session("other", &session.session_id, now)
            .await
            .unwrap(),
        None,
        "another tenant cannot take the session"
    );
    let (a, b) = tokio::join!(
        store.take_session("acme", &session.session_id, now),
        store.take_session("acme", &session.session_id, now)
    );
    let winners: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(
        winners,
        vec![session.clone()],
        "exactly one concurrent taker wins"
    );
    let expired = ChallengeSession {
        session_id: unique("s"),
        expires_at: now + 1_000,
        ..session.clone()
    };
    store.put_session(&expired).await.unwrap();
    assert_eq!(
        store
            .take_session("acme", &expired.session_id, now + 2_000)
            .await
            .unwrap(),
        None,
        "an expired session is refused"
    );

    // A dialogue step keeps its state, and its id can be put again once
    // taken (the next step of the same dialogue).
    let step = ChallengeSession {
        session_id: unique("dialogue"),
        dialogue: Some(DialogueState {
            kind: DialogueKind::Enroll,
            language: "pt".into(),
            answers: 3,
            misspeaks: 1,
        }),
        ..session.clone()
    };
    store.put_session(&step).await.unwrap();
    let taken = store
        .take_session("acme", &step.session_id, now)
        .await
        .unwrap();
    assert_eq!(taken.as_ref(), Some(&step));
    let next = ChallengeSession {
        challenge: "0 3 8".into(),
        dialogue: Some(DialogueState {
            answers: 4,
            ..step.dialogue.clone().unwrap()
        }),
        ..step.clone()
    };
    store.put_session(&next).await.unwrap();
    assert_eq!(
        store
            .take_session("acme", &step.session_id, now)
            .await
            .unwrap(),
        Some(next)
    );

    // A call session keeps its state through a take and a put back.
    let call = ChallengeSession {
        session_id: unique("call"),
        user_id: String::new(),
        challenge: String::new(),
        call: Some(CallState {
            agent_id: "agent-7".into(),
            agent_skill: "billing".into(),
            ccaas_provider: "acme-cc".into(),
            master_id: "call-1".into(),
            platform_tenant: "t-1".into(),
            custom_properties: None,
            last_speaker: Some(("u1".into(), true)),
        }),
        ..session.clone()
    };
    store.put_session(&call).await.unwrap();
    let taken = store
        .take_session("acme", &call.session_id, now)
        .await
        .unwrap();
    assert_eq!(taken.as_ref(), Some(&call));
    store.put_session(&call).await.unwrap();
    assert_eq!(
        store
            .take_session("acme", &call.session_id, now)
            .await
            .unwrap(),
        Some(call)
    );

    let jti = unique("jti");
    let (first, second) = tokio::join!(
        store.spend_token(&jti, now + 60_000),
        store.spend_token(&jti, now + 60_000)
    );
    assert_eq!(
        [first.unwrap(), second.unwrap()]
            .iter()
            .filter(|x| **x)
            .count(),
        1,
        "a token is spent once"
    );
    assert!(!store.spend_token(&jti, now + 60_000).await.unwrap());
    assert!(
        store
            .spend_token(&unique("jti"), now + 60_000)
            .await
            .unwrap()
    );

    let counts = |pairs: &[(&str, i64)]| -> Vec<(String, i64)> {
        pairs.iter().map(|(m, n)| (m.to_string(), *n)).collect()
    };
    store
        .add_usage(
            "acme",
            &key.key_id,
            "2026-11-21",
            &counts(&[("requests", 2)]),
        )
        .await
        .unwrap();
    store
        .add_usage(
            "acme",
            &key.key_id,
            "2026-11-22",
            &counts(&[("requests", 1), ("decision:accept", 1)]),
        )
        .await
        .unwrap();
    store
        .add_usage(
            "acme",
            &key.key_id,
            "2026-11-22",
            &counts(&[("requests", 3)]),
        )
        .await
        .unwrap();
    store
        .add_usage(
            "other",
            &key.key_id,
            "2026-11-22",
            &counts(&[("requests", 100)]),
        )
        .await
        .unwrap();
    let mut usage: Vec<(String, String, i64)> = store
        .usage("acme", &key.key_id)
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.day, u.metric, u.count))
        .collect();
    usage.sort();
    assert_eq!(
        usage,
        vec![
            ("2026-11-21".into(), "requests".into(), 2),
            ("2026-11-22".into(), "decision:accept".into(), 1),
            ("2026-11-22".into(), "requests".into(), 4),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_survives_a_restart() {
    let path = scratch_dir("restart").join("timbre.redb");
    {
        let store = FileStore::open(&path).unwrap();
        store.migrate().await.unwrap();
        let commit = JobCommit {
            tenant: "t".into(),
            request_id: "r".into(),
            decision: b"d".to_vec(),
            mutations: vec![Mutation::PutProfile(profile(
                "t",
                "u",
                ProfileStatus::NotEnrolled,
            ))],
        };
        store.commit(&commit).await.unwrap();
    }
    let reopened = FileStore::open(&path).unwrap();
    assert_eq!(
        reopened.profile("t", "u").await.unwrap(),
        Some(profile("t", "u", ProfileStatus::NotEnrolled))
    );
    assert_eq!(
        reopened.decision("t", "r").await.unwrap(),
        Some(b"d".to_vec())
    );
}
