//! loadgen against the in-process engine (embedded bus, file store, real
//! model) with the bundled LibriSpeech fixtures, and its seeded mix.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use timbre_loadgen::corpus::Corpus;
use timbre_loadgen::mix::{Attempt, Claimant, Mix};
use timbre_loadgen::{Options, run};

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/librispeech-r/manifest.tsv")
}

fn options(args: &[&str]) -> Options {
    let manifest = manifest();
    let mut all = vec![
        "loadgen",
        "--quiet",
        // Test builds run the synthetic-speech network unoptimised.
        "--no-synthetic-check",
        "--manifest",
        manifest.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    Options::parse_from(all)
}

/// Claimants of every fixture speaker with two utterances: the first enrolls,
/// the rest are held out.
fn claimants(corpus: &Corpus) -> Vec<Claimant> {
    corpus
        .candidates(usize::MAX)
        .into_iter()
        .map(|s| Claimant {
            user_id: format!("u{s}"),
            speaker: s,
            held_out: corpus.speakers[s].utterances[1..].to_vec(),
        })
        .collect()
}

#[test]
fn a_seed_always_yields_the_same_attempts() {
    let corpus = Arc::new(Corpus::load(&manifest()).unwrap());
    let claimants = Arc::new(claimants(&corpus));
    assert_eq!(claimants.len(), 10);
    let draw = |seed: u64, n: usize| -> Vec<Attempt> {
        Mix::new(seed, 0.5, claimants.clone(), corpus.clone())
            .unwrap()
            .take(n)
            .collect()
    };
    let first = draw(42, 2000);
    assert_eq!(first, draw(42, 2000), "same seed, same sequence");
    assert_ne!(
        first[..50],
        draw(43, 50)[..],
        "another seed, another sequence"
    );

    let impostors = first.iter().filter(|a| !a.genuine).count();
    assert!((900..=1100).contains(&impostors), "{impostors} of 2000");
    let mut other_speakers = BTreeSet::new();
    for a in &first {
        let c = &claimants[a.claimant];
        let spoken = corpus.utterances[a.utterance].speaker;
        if a.genuine {
            assert!(
                c.held_out.contains(&a.utterance),
                "genuine uses held-out audio"
            );
        } else {
            assert_ne!(spoken, c.speaker, "an impostor is another speaker");
            other_speakers.insert(spoken);
        }
    }
    // Impostors come from the whole corpus, enrolled or not (21 speakers).
    assert_eq!(other_speakers.len(), corpus.speakers.len());

    let genuine_only: Vec<Attempt> = Mix::new(1, 0.0, claimants.clone(), corpus.clone())
        .unwrap()
        .take(100)
        .collect();
    assert!(genuine_only.iter().all(|a| a.genuine));
    assert!(Mix::new(1, 1.5, claimants.clone(), corpus.clone()).is_err());
    assert!(Mix::new(1, 0.5, Arc::new(Vec::new()), corpus.clone()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_run_decides_everything_with_low_error_rates() {
    let opts = options(&[
        "--target",
        "embedded",
        "--speakers",
        "8",
        "--enroll-target-ms",
        "4000",
        "--jobs",
        "60",
        "--rate",
        "0",
        // Completeness, not speed, is asserted: other tests share the CPU.
        "--drain-timeout",
        "300",
    ]);
    let r = run(&opts).await.unwrap();
    eprintln!("{}", r.table());
    let summary = serde_json::to_string_pretty(&r).unwrap();

    // 2414, 2609 and 3080 hold under 4 s of net speech (Silero VAD) in
    // their one enrollment utterance.
    assert_eq!(r.speakers.requested, 8, "{summary}");
    assert_eq!(
        r.speakers.enrolled,
        ["1688", "1998", "2033", "3005", "3331"],
        "{summary}"
    );
    let not: Vec<&str> = r
        .speakers
        .not_enrolled
        .iter()
        .map(|n| n.speaker.as_str())
        .collect();
    assert_eq!(not, ["2414", "2609", "3080"], "{summary}");
    assert!(
        r.speakers
            .not_enrolled
            .iter()
            .all(|n| n.samples == 1 && (1..4000).contains(&n.speech_millis)),
        "{summary}"
    );

    assert_eq!(
        (r.jobs.sent, r.jobs.decided, r.jobs.missing),
        (60, 60, 0),
        "{summary}"
    );
    assert_eq!(r.outcomes.error, 0, "{summary}");
    assert!(r.errors.is_empty() && r.failures.is_empty(), "{summary}");
    assert_eq!(
        r.outcomes.cooldown, 0,
        "the tenant policy prevents cooldowns"
    );
    assert_eq!(r.genuine.attempts + r.impostor.attempts, 60);
    assert!(
        (15..=45).contains(&r.impostor.attempts),
        "about half impostors: {summary}"
    );

    let far = r.far.expect("impostor attempts were made");
    let frr = r.frr.expect("genuine attempts were made");
    assert!(far <= 0.1, "FAR {far}: {summary}");
    assert!(frr <= 0.2, "FRR {frr}: {summary}");

    assert!(
        r.throughput_per_s > 0.0 && r.verification_seconds > 0.0,
        "{summary}"
    );
    let l = &r.latency_ms;
    assert!(l.p50 > 0.0, "{summary}");
    assert!(
        l.p50 <= l.p95 && l.p95 <= l.p99 && l.p99 <= l.max,
        "{summary}"
    );
    assert_eq!(r.exit_code(), 0);
    assert!(r.tenant.as_deref().unwrap().starts_with("loadgen-"));
}
