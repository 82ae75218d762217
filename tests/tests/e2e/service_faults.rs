//! The broker and the database die under load (`kill -9`) and come back on
//! their data 3 s later: every job is decided, its effect applied exactly
//! once, and the processor recovers by itself. Runs on a private Kafka and
//! Cassandra (`PrivateServices`), never on the ones the other tests share.

use std::sync::Arc;
use std::time::Duration;

use timbre::backends::{connect_bus, connect_store};
use timbre::domain::now_ms;
use timbre_schemas::DecisionKind;
use timbre_tests::pipeline::{Harness, consent, enrollment, wav};
use timbre_tests::services::{PrivateServices, with_private_services};
use timbre_tests::{kafka_url, scratch_dir, unique};

const ENROLL: &str = "librispeech-r/test-other/1688/1688-142285-0000.wav";
const MORE: &str = "librispeech-r/test-other/1688/1688-142285-0005.wav";

/// Jobs published before the crash (some in flight when it happens).
const BEFORE: usize = 8;
/// Jobs published once the service is back.
const AFTER: usize = 4;

/// A stall fails the test instead of holding up the suite.
const DEADLINE: Duration = Duration::from_secs(600);

#[test]
fn jobs_survive_kill_nine_of_kafka_and_of_cassandra() {
    // The shared broker's presence says this machine runs the services.
    if kafka_url().is_none() {
        return;
    }
    with_private_services(&scratch_dir("faults"), DEADLINE, crash_each_service);
}

async fn crash_each_service(services: Arc<PrivateServices>) {
    let bus = connect_bus(&format!("kafka://{}", services.kafka)).unwrap();
    let store = connect_store(&format!("cql://{}/{}", services.cql, unique("faults")))
        .await
        .unwrap()
        .state;
    let prefix = format!("{}.", unique("faults"));
    let mut h = Harness::start(bus, store.clone(), &prefix).await;
    let (tenant, user) = ("acme", "alice");

    h.publish(&consent(tenant, user, "c", true)).await;
    assert_eq!(h.decision("c").await.decision, DecisionKind::Applied);
    h.publish(&enrollment(tenant, user, "e", wav(ENROLL))).await;
    assert_eq!(h.decision("e").await.decision, DecisionKind::Applied);

    // Each further sample of the enrolled voice adds one to the profile's
    // sample count: a job applied twice, or lost, shows in the count.
    let mut ids = Vec::new();
    for service in ["kafka", "cassandra"] {
        for i in 0..BEFORE {
            let id = format!("{service}-{i}");
            h.publish(&enrollment(tenant, user, &id, wav(MORE))).await;
            ids.push(id);
        }
        // The first sample decided: the rest are queued or being scored.
        let first = h.decision(&ids[ids.len() - BEFORE]).await;
        assert_eq!(first.decision, DecisionKind::Applied, "{first:?}");
        let crashed_at = now_ms();
        let crashing = services.clone();
        tokio::task::spawn_blocking(move || {
            crashing.crash(service);
            std::thread::sleep(Duration::from_secs(3));
            crashing.resume(service);
        })
        .await
        .unwrap();
        for i in BEFORE..BEFORE + AFTER {
            let id = format!("{service}-{i}");
            h.publish(&enrollment(tenant, user, &id, wav(MORE))).await;
            ids.push(id);
        }
        let mut through_outage = 0;
        for id in &ids[ids.len() - BEFORE - AFTER..ids.len() - AFTER] {
            let d = h.decision(id).await;
            assert_eq!(d.decision, DecisionKind::Applied, "{service}: {d:?}");
            through_outage += usize::from(d.processed_at >= crashed_at);
        }
        assert!(
            through_outage > 0,
            "{service}: some published jobs were still undecided at the crash"
        );
        for id in &ids[ids.len() - AFTER..] {
            let d = h.decision(id).await;
            assert_eq!(d.decision, DecisionKind::Applied, "{service}: {d:?}");
        }
    }

    // Each decided job's effect counted exactly once: none lost with the
    // database's crash, none applied twice through a redelivery.
    let profile = store.profile(tenant, user).await.unwrap().unwrap();
    assert_eq!(profile.samples as usize, 1 + ids.len(), "samples counted");
    for id in &ids {
        assert!(store.decision(tenant, id).await.unwrap().is_some(), "{id}");
    }
    h.stop_processor().await;
}
