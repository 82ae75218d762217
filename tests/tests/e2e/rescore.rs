//! Bulk re-scoring of a tenant of real speakers from the default model to a
//! second model id (the same weights declared under another name): shadow
//! voiceprints, live traffic unaffected, atomic cutover, rollback, finalize,
//! and on Kafka + Cassandra a kill -9 of the planner and the processor in the
//! middle of the run.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use timbre::backends::{connect_bus, connect_store};
use timbre::config::Config;
use timbre::domain::BIOMETRIC_PURPOSE;
use timbre::engine::Engine;
use timbre::model::default_model_id;
use timbre::ports::{Bus, Store, Subscription};
use timbre::rescore::Rescorer;
use timbre::topics::{TopicNames, catalogue};
use timbre_schemas::{ConsentChanged, Decision, DecisionKind, Registry, Request};
use timbre_tests::pipeline::{enrollment, verification, wav};
use timbre_tests::{cql_nodes, kafka_url, scratch_dir, timbre_binary, unique};
use tokio_util::sync::CancellationToken;

const TENANT: &str = "acme";
const NEXT: &str = "campplus-next";

fn target_model() -> String {
    format!(
        "{NEXT}@sha256:{}",
        &default_model_id().0.rsplit(':').next().unwrap()
    )
}

/// `(user, enrollment clip, genuine clip)`: two accounts per bundled speaker.
fn users(accounts_per_speaker: usize, speakers: usize) -> Vec<(String, String, String)> {
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/librispeech-r/manifest.tsv"),
    )
    .unwrap();
    // (speaker, [(seconds, file)]): the longest clip enrolls, the next verifies.
    let mut by_speaker: Vec<(String, Vec<(f32, String)>)> = Vec::new();
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let clip = (
            cols[3].parse().unwrap(),
            format!("librispeech-r/{}", cols[1]),
        );
        match by_speaker.iter_mut().find(|(s, _)| s == cols[0]) {
            Some((_, files)) => files.push(clip),
            None => by_speaker.push((cols[0].into(), vec![clip])),
        }
    }
    for (_, files) in &mut by_speaker {
        files.sort_by(|a, b| b.0.total_cmp(&a.0));
    }
    by_speaker
        .into_iter()
        .filter(|(_, f)| f.len() >= 2 && f[0].0 >= 7.0)
        .map(|(s, f)| (s, f.into_iter().map(|(_, file)| file).collect::<Vec<_>>()))
        .take(speakers)
        .flat_map(|(speaker, files)| {
            (0..accounts_per_speaker).map(move |a| {
                (
                    format!("s{speaker}-{a}"),
                    files[0].clone(),
                    files[1].clone(),
                )
            })
        })
        .collect()
}

/// Publishes jobs and waits for their decisions through a tail of the
/// decisions topic; keeps every decision seen, raw, by request id.
struct Jobs {
    bus: Arc<dyn Bus>,
    topics: TopicNames,
    registry: Registry,
    tail: Box<dyn Subscription>,
    seen: HashMap<String, Vec<Vec<u8>>>,
}

impl Jobs {
    async fn new(bus: Arc<dyn Bus>, topics: TopicNames) -> Self {
        let tail = bus.tail(&topics.decisions).await.unwrap();
        Self {
            bus,
            topics,
            registry: Registry::new(),
            tail,
            seen: HashMap::new(),
        }
    }

    async fn publish(&self, request: &Request) {
        let topic = self.topics.for_job(request.job());
        let bytes = self.registry.encode_request(request).unwrap();
        self.bus
            .publish(topic, request.message_key().as_bytes(), &bytes)
            .await
            .unwrap();
    }

    /// Reads decisions until `request_id`'s arrives (within `limit`).
    async fn decision(&mut self, request_id: &str, limit: Duration) -> Decision {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(raw) = self.seen.get(request_id) {
                return self.registry.decode(&raw[0]).unwrap();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let m = tokio::time::timeout(left, self.tail.next())
                .await
                .unwrap_or_else(|_| panic!("no decision for {request_id} within {limit:?}"))
                .unwrap();
            let d: Decision = self.registry.decode(&m.payload).unwrap();
            self.seen.entry(d.request_id).or_default().push(m.payload);
        }
    }

    /// Decisions that arrive within `window`, for duplicate checks.
    async fn drain(&mut self, window: Duration) {
        while let Ok(Ok(m)) = tokio::time::timeout(window, self.tail.next()).await {
            let d: Decision = self.registry.decode(&m.payload).unwrap();
            self.seen.entry(d.request_id).or_default().push(m.payload);
        }
    }

    async fn run(&mut self, request: Request) -> Decision {
        let id = request.request_id().to_string();
        self.publish(&request).await;
        self.decision(&id, Duration::from_secs(120)).await
    }

    /// Consent (with or without audio retention) and one enrollment sample.
    async fn enroll(&mut self, user: &str, clip: &str, retain_audio: bool) {
        let consent = ConsentChanged::new(
            format!("c-{user}"),
            TENANT,
            user,
            timbre::domain::now_ms(),
            true,
            BIOMETRIC_PURPOSE,
            retain_audio,
        );
        self.run(Request::Consent(consent)).await;
        let d = self
            .run(enrollment(TENANT, user, &format!("e-{user}"), wav(clip)))
            .await;
        assert_eq!(
            d.profile_status,
            Some(timbre_schemas::ProfileStatus::Enrolled),
            "{d:?}"
        );
    }

    async fn verify(&mut self, user: &str, clip: &str, id: &str) -> Decision {
        self.run(verification(TENANT, user, id, wav(clip))).await
    }
}

fn engine_env(bus: &str, store: &str, prefix: &str) -> Vec<(String, String)> {
    [
        ("TIMBRE__BUS", bus.to_string()),
        ("TIMBRE__STORE", store.to_string()),
        ("TIMBRE__TOPIC_PREFIX", format!("\"{prefix}\"")),
        ("TIMBRE__GROUP", format!("\"{prefix}processor\"")),
        ("TIMBRE__LISTEN", "\"127.0.0.1:0\"".into()),
        ("TIMBRE__WORKERS", "2".into()),
        ("TIMBRE__EXTRA_MODELS", format!("[{{ name = \"{NEXT}\" }}]")),
        // One 8 s sample enrolls; impostor checks must not trip cooldowns.
        ("TIMBRE__POLICY__ENROLLMENT_TARGET_MILLIS", "4000".into()),
        ("TIMBRE__POLICY__FREE_FAILURES", "1000".into()),
        // The same fixtures verify again and again: replays, to the engine.
        ("TIMBRE__POLICY__REPLAY_MEMORY_DAYS", "0".into()),
        ("TIMBRE__SYNTHETIC__ENABLED", "false".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Genuine accepted and impostor rejected under `model`; the user without
/// retained audio needs to re-enroll once the tenant uses the new model.
async fn check_decisions(
    jobs: &mut Jobs,
    all: &[(String, String, String)],
    model: &str,
    tag: &str,
) {
    let (user, _, genuine) = &all[0];
    let (_, _, impostor) = all.iter().find(|(u, _, _)| u[..5] != user[..5]).unwrap();
    let accept = jobs.verify(user, genuine, &format!("{tag}-genuine")).await;
    assert_eq!(
        (accept.decision, accept.model_id.as_deref()),
        (DecisionKind::Accept, Some(model)),
        "{accept:?}"
    );
    let reject = jobs
        .verify(user, impostor, &format!("{tag}-impostor"))
        .await;
    assert_eq!(reject.decision, DecisionKind::Reject, "{reject:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescore_cut_over_roll_back_and_finalize_on_the_embedded_backend() {
    let store_url = format!("file://{}", scratch_dir("rescore").join("t.redb").display());
    let config = Config::load(None, engine_env("embedded://", &store_url, "")).unwrap();
    let engine = Arc::new(Engine::connect(config).await.unwrap());
    engine.apply_topics(Some(1)).await.unwrap();
    engine.store.migrate().await.unwrap();
    let stop = CancellationToken::new();
    let running = {
        let (engine, stop) = (engine.clone(), stop.clone());
        tokio::spawn(async move { engine.run(stop).await.unwrap() })
    };
    let mut jobs = Jobs::new(engine.bus.clone(), engine.topics.clone()).await;
    let all = users(1, 4);
    for (user, clip, _) in &all {
        jobs.enroll(user, clip, true).await;
    }
    jobs.enroll("no-audio", &all[0].1, false).await;
    let source = default_model_id().0;
    let target = target_model();
    check_decisions(&mut jobs, &all, &source, "before").await;

    let rescorer = Rescorer::new(
        engine.bus.clone(),
        engine.store.clone(),
        engine.topics.clone(),
        source.clone(),
    );
    let run = rescorer.plan(TENANT, &target).await.unwrap();
    assert_eq!(run.source_model, source);
    assert!(
        matches!(
            rescorer.cut_over(TENANT, &target).await,
            Err(timbre::rescore::RescoreError::Incomplete(_))
        ),
        "no cutover before every user has an outcome"
    );
    assert_eq!(rescorer.publish_pending(&run).await.unwrap(), all.len() + 1);
    let progress = loop {
        let p = rescorer.progress(TENANT, &target).await.unwrap();
        if p.pending == 0 {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (progress.done, progress.failed),
        (all.len(), 1),
        "{progress:?}"
    );
    assert_eq!(progress.failures, ["no-audio: no_retained_audio"]);
    check_decisions(&mut jobs, &all, &source, "shadow").await;

    rescorer.cut_over(TENANT, &target).await.unwrap();
    check_decisions(&mut jobs, &all, &target, "after").await;
    let lost = jobs.verify("no-audio", &all[0].2, "after-no-audio").await;
    assert_eq!(
        lost.error_code.as_deref(),
        Some("re_enroll_required"),
        "{lost:?}"
    );

    rescorer.roll_back(TENANT, &target).await.unwrap();
    check_decisions(&mut jobs, &all, &source, "rolled-back").await;
    // Marked RE_ENROLL under the target, the user still has its voiceprint
    // under the source model: after the rollback it verifies again.
    let back = jobs
        .verify("no-audio", &all[0].2, "rolled-back-no-audio")
        .await;
    assert_eq!(
        (back.decision, back.model_id.as_deref()),
        (DecisionKind::Accept, Some(source.as_str())),
        "{back:?}"
    );
    // A new run does not trust the outcomes of the rolled-back one.
    let again = rescorer.plan(TENANT, &target).await.unwrap();
    assert_eq!(
        rescorer.publish_pending(&again).await.unwrap(),
        all.len() + 1
    );
    while rescorer.progress(TENANT, &target).await.unwrap().pending > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rescorer.cut_over(TENANT, &target).await.unwrap();
    rescorer.finalize(TENANT, &target).await.unwrap();
    let (user, _, _) = &all[0];
    assert!(
        engine
            .store
            .voiceprint(TENANT, user, &source)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        engine
            .store
            .voiceprint(TENANT, user, &target)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        rescorer.roll_back(TENANT, &target).await.is_err(),
        "no rollback after finalize"
    );
    check_decisions(&mut jobs, &all, &target, "finalized").await;
    stop.cancel();
    running.await.unwrap();
}

/// A child process killed when dropped, so a failing test leaves no
/// processor behind (holding the test's stderr open).
struct Process(Option<Child>);

impl Process {
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn take(&mut self) -> Child {
        self.0.take().expect("running")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(args: &[&str], env: &[(String, String)], stdout: Stdio) -> Process {
    Process(Some(spawn_child(args, env, stdout)))
}

fn spawn_child(args: &[&str], env: &[(String, String)], stdout: Stdio) -> Child {
    Command::new(timbre_binary())
        .args(args)
        .envs(env.iter().cloned())
        .env("TIMBRE_LOG", "warn")
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start timbre")
}

/// A run to a model no processor loads would only collect given-up jobs:
/// `timbre rescore` refuses it before touching the bus or the store, and
/// names the models it knows.
#[test]
fn rescore_refuses_a_model_no_processor_loads() {
    let env = engine_env("embedded://", "file:///nonexistent/timbre.redb", "x.");
    let out = Command::new(timbre_binary())
        .args([
            "rescore",
            "--tenant",
            TENANT,
            "--to-model",
            "ghost@sha256:000000000000",
        ])
        .envs(env.iter().cloned())
        .env("TIMBRE_LOG", "warn")
        .output()
        .expect("run timbre");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown model ghost@sha256:000000000000"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&target_model()),
        "the known targets are named: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescore_survives_kill_nine_on_kafka_and_cassandra() {
    let (Some(kafka), Some(cql)) = (kafka_url(), cql_nodes()) else {
        return;
    };
    let prefix = format!("{}.", unique("rescore"));
    let store_url = format!("cql://{cql}/{}", unique("rescore"));
    let env = engine_env(&kafka, &store_url, &prefix);
    let bus = connect_bus(&kafka).unwrap();
    let store: Arc<dyn Store> = connect_store(&store_url).await.unwrap().state;
    store.migrate().await.unwrap();
    bus.ensure_topics(&catalogue(&prefix, Some(1)))
        .await
        .unwrap();
    let topics = TopicNames::with_prefix(&prefix);
    let mut jobs = Jobs::new(bus.clone(), topics.clone()).await;
    let mut processor = spawn(&["run"], &env, Stdio::null());

    let all = users(2, 15);
    for (user, clip, _) in &all {
        jobs.enroll(user, clip, true).await;
    }
    jobs.enroll("no-audio", &all[0].1, false).await;
    let enrolled = all.len() + 1;
    let (source, target) = (default_model_id().0, target_model());
    check_decisions(&mut jobs, &all, &source, "before").await;

    let rescore = [
        "rescore",
        "--to-model",
        &target,
        "--tenant",
        TENANT,
        "--json",
    ];
    let mut planner = spawn(&rescore, &env, Stdio::null());
    let started = Instant::now();
    loop {
        let done = store
            .rescore_results(TENANT, &target, None, 10_000)
            .await
            .unwrap()
            .len();
        assert!(
            done < enrolled,
            "the run finished before the crash could be staged"
        );
        if done >= 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "re-scoring did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Live verifications are decided while the run is in progress, with the
    // tenant's current model.
    let live = Instant::now();
    check_decisions(&mut jobs, &all, &source, "during").await;
    let live = live.elapsed();
    let before_crash = store
        .rescore_results(TENANT, &target, None, 10_000)
        .await
        .unwrap()
        .len();
    processor.kill();
    planner.kill();
    assert!(
        before_crash < enrolled,
        "killed mid-run ({before_crash}/{enrolled})"
    );

    let mut processor = spawn(&["run"], &env, Stdio::null());
    let mut resumed = spawn(&rescore, &env, Stdio::piped());
    let resumed = resumed.take();
    let output = tokio::task::spawn_blocking(move || resumed.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "the resumed run completes");
    let progress: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(progress["state"], "cut_over", "{progress}");
    assert_eq!(progress["done"], all.len(), "{progress}");
    assert_eq!(progress["failed"], 1, "{progress}");
    assert_eq!(progress["pending"], 0, "{progress}");

    // One outcome per user: nothing lost, nothing counted twice.
    let results = store
        .rescore_results(TENANT, &target, None, 10_000)
        .await
        .unwrap();
    assert_eq!(results.len(), enrolled);
    for (user, _, _) in &all {
        assert!(
            store
                .voiceprint(TENANT, user, &target)
                .await
                .unwrap()
                .is_some(),
            "{user}"
        );
        assert!(
            store
                .voiceprint(TENANT, user, &source)
                .await
                .unwrap()
                .is_some(),
            "kept until finalize"
        );
    }
    // Redelivered re-scoring jobs republished their first decision.
    jobs.drain(Duration::from_secs(2)).await;
    for (id, copies) in jobs
        .seen
        .iter()
        .filter(|(id, _)| id.starts_with("rescore-"))
    {
        assert!(
            copies.windows(2).all(|w| w[0] == w[1]),
            "duplicates of {id} differ"
        );
    }
    check_decisions(&mut jobs, &all, &target, "after").await;
    let lost = jobs.verify("no-audio", &all[0].2, "after-no-audio").await;
    assert_eq!(lost.error_code.as_deref(), Some("re_enroll_required"));
    eprintln!(
        "re-scored {enrolled} users; {before_crash} done before kill -9; live checks during the run took {live:?}"
    );
    processor.kill();
}
