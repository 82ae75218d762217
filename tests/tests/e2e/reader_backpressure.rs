//! A full lane parks its partition without stalling the others, and the
//! reader holds no more message bytes than its budget. The embedder here is
//! a gate (this tests the reader's scheduling, not the model): enrollment
//! jobs pile up behind it while other jobs are decided or wait unread.

use std::time::Duration;

use timbre::domain::{BIOMETRIC_PURPOSE, Policies, Policy, key_slot};
use timbre::metrics::Metrics;
use timbre::pipeline::ProcessorConfig;
use timbre_schemas::{ConsentChanged, Decision, EnrollmentRequested, Registry, message_key};
use timbre_tests::gate::{Setup, setup};

const LANES: usize = 4;

/// A user whose key lands on a lane other than `avoid`'s lane.
fn user_on_other_lane(tenant: &str, avoid: &str) -> String {
    let lane = |u: &str| key_slot(message_key(tenant, u).as_bytes(), LANES);
    (0..)
        .map(|i| format!("user{i}"))
        .find(|u| lane(u) != lane(avoid))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_lane_does_not_stall_other_partitions() {
    let setup = setup().await;
    let Setup {
        wav, bus, topics, ..
    } = &setup;
    let policy = Policy {
        consent_required: false,
        ..Policy::default()
    };
    let config = ProcessorConfig {
        lanes: LANES,
        lane_queue: 1,
        policies: Policies {
            default: policy,
            ..Policies::default()
        },
        ..ProcessorConfig::default()
    };
    let mut running = setup.start(config, Metrics::new()).await;
    let decisions = &mut running.decisions;
    let registry = Registry::new();

    // One job scoring (held by the gate), one queued, the rest parked.
    let busy = "busy";
    for i in 0..5 {
        let job = EnrollmentRequested::new(format!("e{i}"), "t", busy, 1, wav.clone());
        let bytes = registry.encode(&job).unwrap();
        bus.publish(
            &topics.enrollment,
            message_key("t", busy).as_bytes(),
            &bytes,
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = user_on_other_lane("t", busy);
    let consent = ConsentChanged::new("c1", "t", &other, 1, true, BIOMETRIC_PURPOSE, true);
    bus.publish(
        &topics.consent,
        message_key("t", &other).as_bytes(),
        &registry.encode(&consent).unwrap(),
    )
    .await
    .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), decisions.next())
        .await
        .expect("the other partition is decided while the busy lane waits")
        .unwrap();
    let first: Decision = registry.decode(&first.payload).unwrap();
    assert_eq!(first.request_id, "c1");

    setup.gate.open();
    let mut order = Vec::new();
    for _ in 0..5 {
        let m = tokio::time::timeout(Duration::from_secs(30), decisions.next())
            .await
            .expect("parked jobs are decided once the lane frees")
            .unwrap();
        order.push(registry.decode::<Decision>(&m.payload).unwrap().request_id);
    }
    assert_eq!(
        order,
        ["e0", "e1", "e2", "e3", "e4"],
        "one user's jobs stay in order"
    );
    running.stop().await;
}

/// The reader holds jobs by bytes, not by count: with every job stuck in
/// scoring behind the gate and lanes to spare, it stops reading once the
/// messages in flight reach `max_in_flight_bytes`, and reads on as they finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_stops_at_the_in_flight_byte_budget() {
    let setup = setup().await;
    let Setup {
        wav, bus, topics, ..
    } = &setup;
    let registry = Registry::new();
    let jobs: Vec<Vec<u8>> = (0..10)
        .map(|i| {
            let job =
                EnrollmentRequested::new(format!("e{i}"), "t", format!("u{i}"), 1, wav.clone());
            registry.encode(&job).unwrap()
        })
        .collect();
    let size = jobs[0].len();
    let metrics = Metrics::new();
    let config = ProcessorConfig {
        lanes: 16,
        lane_queue: 4,
        max_in_flight_bytes: 3 * size,
        policies: Policies {
            default: Policy {
                consent_required: false,
                ..Policy::default()
            },
            ..Policies::default()
        },
        ..ProcessorConfig::default()
    };
    let mut running = setup.start(config, metrics.clone()).await;
    let decisions = &mut running.decisions;
    for (i, job) in jobs.iter().enumerate() {
        let key = message_key("t", &format!("u{i}"));
        bus.publish(&topics.enrollment, key.as_bytes(), job)
            .await
            .unwrap();
    }
    // Lanes and queues could take all ten; the budget takes three.
    tokio::time::timeout(Duration::from_secs(10), async {
        while metrics.jobs_in_flight.get() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the reader starts");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metrics.jobs_in_flight.get(),
        3,
        "read up to the byte budget"
    );
    assert_eq!(metrics.in_flight_bytes.get(), (3 * size) as i64);

    setup.gate.open();
    for _ in 0..10 {
        tokio::time::timeout(Duration::from_secs(30), decisions.next())
            .await
            .expect("every job is decided once they finish")
            .unwrap();
    }
    running.stop().await;
}
