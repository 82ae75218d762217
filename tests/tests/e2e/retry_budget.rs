//! A job whose failure is transient but lasting — here a tenant cut over to
//! a model no processor loaded, as while a rollout lags behind a cutover —
//! is retried for the retry budget, then ends as an `ERROR model_unavailable`
//! decision that is stored nowhere, and its lane moves on. Embedded and
//! Kafka + Cassandra.

use std::sync::Arc;
use std::time::{Duration, Instant};

use timbre::adapters::file_store::FileStore;
use timbre::adapters::memory_bus::MemoryBus;
use timbre::backends::{connect_bus, connect_store};
use timbre::domain::{TenantModel, now_ms};
use timbre::ports::{Bus, Store};
use timbre_schemas::DecisionKind;
use timbre_tests::pipeline::{Harness, consent, enrollment, wav};
use timbre_tests::{cql_nodes, kafka_url, scratch_dir, unique};

const SAMPLE: &str = "librispeech-r/test-other/1688/1688-142285-0000.wav";
const BUDGET: Duration = Duration::from_secs(3);

async fn bounded(bus: Arc<dyn Bus>, store: Arc<dyn Store>) {
    let prefix = format!("{}.", unique("retry"));
    let mut h = Harness::start(bus, store.clone(), &prefix).await;
    h.stop_processor().await;
    h.retry_budget = BUDGET;
    h.start_processor(&prefix);
    let tenant = "acme";
    store
        .put_tenant_model(&TenantModel {
            tenant: tenant.into(),
            active_model: "campplus-next@sha256:000000000000".into(),
            previous_model: None,
            updated_at: now_ms(),
        })
        .await
        .unwrap();
    h.publish(&consent(tenant, "alice", "c-1", true)).await;
    assert_eq!(h.decision("c-1").await.decision, DecisionKind::Applied);

    let started = Instant::now();
    h.publish(&enrollment(tenant, "alice", "e-1", wav(SAMPLE)))
        .await;
    let d = h.decision("e-1").await;
    let waited = started.elapsed();
    assert_eq!(
        (d.decision, d.error_code.as_deref()),
        (DecisionKind::Error, Some("model_unavailable")),
        "{d:?}"
    );
    assert!(
        waited >= BUDGET,
        "retried for the budget before giving up, not {waited:?}"
    );
    assert!(
        store.decision(tenant, "e-1").await.unwrap().is_none(),
        "a given-up job stores no decision: a resubmission is decided afresh"
    );
    assert!(
        store.profile(tenant, "alice").await.unwrap().is_none(),
        "nothing applied"
    );

    // The lane moved on: alice's next job is decided.
    h.publish(&consent(tenant, "alice", "c-2", false)).await;
    assert_eq!(h.decision("c-2").await.decision, DecisionKind::Applied);
    h.stop_processor().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_end_after_the_retry_budget_on_embedded() {
    let store = Arc::new(FileStore::open(&scratch_dir("retry").join("timbre.redb")).unwrap());
    bounded(Arc::new(MemoryBus::new(1_000)), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_end_after_the_retry_budget_on_kafka_and_cassandra() {
    let (Some(kafka), Some(cql)) = (kafka_url(), cql_nodes()) else {
        return;
    };
    let store = connect_store(&format!("cql://{cql}/{}", unique("retry")))
        .await
        .unwrap()
        .state;
    bounded(connect_bus(&kafka).unwrap(), store).await;
}
