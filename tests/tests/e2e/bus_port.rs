//! One contract for the bus port, run against the embedded bus and real Kafka.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use timbre::adapters::memory_bus::MemoryBus;
use timbre::backends::connect_bus;
use timbre::ports::{Bus, Subscription, TopicSpec};
use timbre_tests::{kafka_url, unique};

const MESSAGES: usize = 30;
const KEYS: usize = 5;
const COMMITTED: usize = 20;

fn spec(name: &str, partitions: i32) -> TopicSpec {
    TopicSpec {
        name: name.into(),
        partitions,
        replication: 1,
        retention_ms: 3_600_000,
        cleanup_policy: "delete".into(),
        key: "tenant/user_id".into(),
        max_message_bytes: Some(16 << 20),
    }
}

async fn next(sub: &mut Box<dyn Subscription>) -> timbre::ports::Message {
    tokio::time::timeout(Duration::from_secs(60), sub.next())
        .await
        .expect("a message within 60 s")
        .expect("bus error")
}

/// Keyed messages keep per-key order on one partition; committed work is not
/// redelivered to the group, uncommitted work is; topic drift is reported.
async fn bus_contract(bus: Arc<dyn Bus>) {
    let topic = unique("jobs");
    assert!(
        bus.ensure_topics(&[spec(&topic, 3)])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        bus.ensure_topics(&[spec(&topic, 3)])
            .await
            .unwrap()
            .is_empty(),
        "idempotent"
    );
    let drift = bus.ensure_topics(&[spec(&topic, 6)]).await.unwrap();
    assert_eq!(drift.len(), 1, "partition drift is reported: {drift:?}");

    for i in 0..MESSAGES {
        let key = format!("tenant/user{}", i % KEYS);
        bus.publish(&topic, key.as_bytes(), i.to_string().as_bytes())
            .await
            .unwrap();
    }

    let group = unique("group");
    let mut sub = bus
        .subscribe(&group, std::slice::from_ref(&topic))
        .await
        .unwrap();
    let mut seen: HashMap<String, Vec<usize>> = HashMap::new();
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    for _ in 0..MESSAGES {
        let m = next(&mut sub).await;
        let key = String::from_utf8(m.key.clone().unwrap()).unwrap();
        let index: usize = String::from_utf8(m.payload.clone())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            *partition_of.entry(key.clone()).or_insert(m.partition),
            m.partition,
            "one key, one partition"
        );
        seen.entry(key).or_default().push(index);
        if index < COMMITTED {
            sub.commit(&m.topic, m.partition, m.offset + 1).unwrap();
        }
    }
    for (key, indices) in &seen {
        assert!(
            indices.windows(2).all(|w| w[0] < w[1]),
            "order of {key}: {indices:?}"
        );
    }
    assert_eq!(seen.values().map(Vec::len).sum::<usize>(), MESSAGES);
    sub.close().await.unwrap();

    // A new member of the same group resumes after the committed prefix.
    let mut again = bus
        .subscribe(&group, std::slice::from_ref(&topic))
        .await
        .unwrap();
    let mut redelivered = Vec::new();
    for _ in 0..(MESSAGES - COMMITTED) {
        let m = next(&mut again).await;
        redelivered.push(
            String::from_utf8(m.payload)
                .unwrap()
                .parse::<usize>()
                .unwrap(),
        );
    }
    redelivered.sort_unstable();
    assert_eq!(redelivered, (COMMITTED..MESSAGES).collect::<Vec<_>>());
    again.close().await.unwrap();

    tail_contract(bus.as_ref(), &topic).await;
    assert!(bus.ping().await.is_ok());
}

/// Tails start at the end and each one sees every later message.
async fn tail_contract(bus: &dyn Bus, topic: &str) {
    let mut tails = [
        bus.tail(topic).await.unwrap(),
        bus.tail(topic).await.unwrap(),
    ];
    // Kafka resolves "the end" on the first fetch, so publish markers until
    // each tail has seen one; the numbered messages above must never appear.
    for tail in &mut tails {
        'positioned: loop {
            bus.publish(topic, b"tenant/marker", b"marker")
                .await
                .unwrap();
            if let Ok(m) = tokio::time::timeout(Duration::from_millis(500), tail.next()).await {
                assert_eq!(m.unwrap().payload, b"marker", "a tail starts at the end");
                break 'positioned;
            }
        }
    }
    bus.publish(topic, b"tenant/final", b"final").await.unwrap();
    for tail in &mut tails {
        loop {
            let m = next(tail).await;
            if m.payload == b"final" {
                break;
            }
            assert_eq!(m.payload, b"marker");
        }
    }
    // Jobs carry audio inline: a 3 MiB message goes through.
    let big = vec![7u8; 3 << 20];
    bus.publish(topic, b"tenant/big", &big).await.unwrap();
    for tail in &mut tails {
        loop {
            let m = next(tail).await;
            if m.payload.len() == big.len() {
                assert_eq!(m.payload, big);
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_bus_honours_the_contract() {
    bus_contract(Arc::new(MemoryBus::new(1_000))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bus_honours_the_contract() {
    let Some(url) = kafka_url() else { return };
    bus_contract(connect_bus(&url).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_bus_applies_backpressure_and_refuses_unknown_topics() {
    let bus = MemoryBus::new(4);
    let topic = unique("bounded");
    bus.ensure_topics(&[spec(&topic, 1)]).await.unwrap();
    assert_eq!(
        bus.publish("nope", b"k", b"v").await.unwrap_err().code(),
        "bus_topic"
    );
    let mut sub = bus
        .subscribe("g", std::slice::from_ref(&topic))
        .await
        .unwrap();
    for i in 0..4u8 {
        bus.publish(&topic, b"k", &[i]).await.unwrap();
    }
    // The fifth publish waits until the group commits.
    let blocked =
        tokio::time::timeout(Duration::from_millis(200), bus.publish(&topic, b"k", &[4])).await;
    assert!(
        blocked.is_err(),
        "publish must wait while the partition is full"
    );
    let first = sub.next().await.unwrap();
    sub.commit(&first.topic, first.partition, first.offset + 1)
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), bus.publish(&topic, b"k", &[4]))
        .await
        .expect("space after commit")
        .unwrap();
}
