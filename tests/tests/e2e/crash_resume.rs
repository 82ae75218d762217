//! Kill -9 of a real `timbre run` process in the middle of a 1,000-job run on
//! Kafka + Cassandra, then a restart: every job gets a decision, duplicates
//! are byte-identical, and state is applied once.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use timbre::backends::{connect_bus, connect_store};
use timbre::topics::{TopicNames, catalogue};
use timbre_schemas::{Contract, Decision, ProfileCommand, ProfileCommandKind, Registry, Request};
use timbre_tests::pipeline::{consent, enrollment, wav};
use timbre_tests::{cql_nodes, kafka_url, timbre_binary, unique};

const USERS: usize = 50;
const JOBS_PER_USER: usize = 20;

fn spawn_processor(bus: &str, store: &str, prefix: &str) -> Child {
    Command::new(timbre_binary())
        .arg("run")
        .env("TIMBRE__BUS", bus)
        .env("TIMBRE__STORE", store)
        .env("TIMBRE__TOPIC_PREFIX", format!("\"{prefix}\""))
        .env("TIMBRE__GROUP", format!("\"{prefix}processor\""))
        .env("TIMBRE__LISTEN", "\"127.0.0.1:0\"")
        .env("TIMBRE__WORKERS", "2")
        // The same fixtures verify again and again: replays, to the engine.
        .env("TIMBRE__POLICY__REPLAY_MEMORY_DAYS", "0")
        .env("TIMBRE__SYNTHETIC__ENABLED", "false")
        .env("TIMBRE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start timbre run")
}

fn profile_create(tenant: &str, user: &str, request_id: &str) -> Request {
    Request::Profile(ProfileCommand {
        request_id: request_id.into(),
        tenant: tenant.into(),
        user_id: user.into(),
        occurred_at: timbre::domain::now_ms(),
        schema_version: ProfileCommand::CURRENT_VERSION,
        trace: None,
        command: ProfileCommandKind::Create,
        reason: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_mid_run_loses_nothing_and_applies_once() {
    let (Some(kafka), Some(cql)) = (kafka_url(), cql_nodes()) else {
        return;
    };
    let prefix = format!("{}.", unique("crash"));
    let store_url = format!("cql://{cql}/{}", unique("crash"));
    let bus = connect_bus(&kafka).unwrap();
    let store = connect_store(&store_url).await.unwrap().state;
    store.migrate().await.unwrap();
    assert!(
        bus.ensure_topics(&catalogue(&prefix, Some(1)))
            .await
            .unwrap()
            .is_empty()
    );
    let topics = TopicNames::with_prefix(&prefix);
    let registry = Registry::new();
    let tenant = "crash";
    let audio = wav("librispeech-r/test-other/2033/2033-164914-0000.wav");

    // Consent goes first and is waited for: request topics are per job kind,
    // so ordering holds within a kind, not between consent and enrollment.
    let mut decisions = bus
        .subscribe(
            &format!("{prefix}reader"),
            std::slice::from_ref(&topics.decisions),
        )
        .await
        .unwrap();
    let mut seen: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let mut jobs = Vec::new();
    for u in 0..USERS {
        let user = format!("user{u}");
        jobs.push(consent(tenant, &user, &format!("{user}-consent"), true));
    }
    for u in 0..USERS {
        let user = format!("user{u}");
        jobs.push(enrollment(
            tenant,
            &user,
            &format!("{user}-enroll"),
            audio.clone(),
        ));
        for j in 2..JOBS_PER_USER {
            jobs.push(profile_create(tenant, &user, &format!("{user}-create-{j}")));
        }
    }
    assert_eq!(jobs.len(), 1_000);
    let publish = |job: &Request| {
        (
            topics.for_job(job.job()).to_string(),
            job.message_key(),
            registry.encode_request(job).unwrap(),
        )
    };
    for job in &jobs[..USERS] {
        let (topic, key, bytes) = publish(job);
        bus.publish(&topic, key.as_bytes(), &bytes).await.unwrap();
    }
    let mut processor = spawn_processor(&kafka, &store_url, &prefix);
    let mut killed = false;
    let mut rest_published = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
    while seen.len() < jobs.len() {
        let m = tokio::time::timeout_at(deadline, decisions.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {} jobs decided", seen.len(), jobs.len()))
            .unwrap();
        let d: Decision = registry.decode(&m.payload).unwrap();
        seen.entry(d.request_id).or_default().push(m.payload);
        if !rest_published
            && jobs[..USERS]
                .iter()
                .all(|j| seen.contains_key(j.request_id()))
        {
            for job in &jobs[USERS..] {
                let (topic, key, bytes) = publish(job);
                bus.publish(&topic, key.as_bytes(), &bytes).await.unwrap();
            }
            rest_published = true;
        }
        if !killed && seen.len() >= 300 {
            // SIGKILL: no drain, no final commit.
            processor.kill().expect("kill -9");
            processor.wait().unwrap();
            killed = true;
            processor = spawn_processor(&kafka, &store_url, &prefix);
        }
    }
    processor.kill().ok();
    processor.wait().ok();
    assert!(killed, "the run was interrupted");

    for job in &jobs {
        let answers = &seen[job.request_id()];
        assert!(
            answers.iter().all(|a| *a == answers[0]),
            "duplicates of {} differ",
            job.request_id()
        );
    }
    for u in 0..USERS {
        let profile = store
            .profile(tenant, &format!("user{u}"))
            .await
            .unwrap()
            .expect("profile");
        assert_eq!(
            profile.samples, 1,
            "user{u}: the enrollment is applied exactly once"
        );
    }
    let duplicates: usize = seen.values().map(|v| v.len() - 1).sum();
    eprintln!("1000 jobs, {duplicates} identical duplicate decisions after kill -9");
}
