//! The job client: how every caller talks to the engine. One routing table
//! (job kind ↔ topic, [`TopicNames::for_job`]) and one round trip: publish a
//! job, await its decision by request id. The HTTP adapter, the demo,
//! loadgen, the benchmarks and the tests all go through it.

mod waiter;

use std::sync::Arc;
use std::time::Duration;

use timbre_schemas::{Decision, JobIdentity, Registry, Request, SchemaError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use waiter::{DecisionWaiter, Pending};

use crate::ports::{Bus, BusError, Store, StoreError};
use crate::topics::TopicNames;

/// Why a job could not be submitted or its decision read.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The job does not encode (or does not validate).
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The bus refused the job.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The store backstop failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Publishes jobs and hands back their decisions.
#[derive(Clone)]
pub struct JobClient {
    bus: Arc<dyn Bus>,
    topics: TopicNames,
    registry: Arc<Registry>,
    waiter: DecisionWaiter,
}

impl JobClient {
    /// A client on `bus`; with a `store`, decisions are also read back from
    /// it (a backstop for a tail that is not positioned yet).
    pub fn new(bus: Arc<dyn Bus>, topics: TopicNames, store: Option<Arc<dyn Store>>) -> Self {
        let registry = Arc::new(Registry::new());
        Self {
            waiter: DecisionWaiter::new(store, registry.clone()),
            bus,
            topics,
            registry,
        }
    }

    /// Starts tailing the decisions topic; runs until `shutdown`. Call it
    /// before submitting jobs.
    pub async fn start(&self, shutdown: CancellationToken) -> Result<JoinHandle<()>, BusError> {
        self.waiter
            .start(self.bus.clone(), &self.topics.decisions, shutdown)
            .await
    }

    /// Publishes `request` to its topic, keyed by tenant/user.
    pub async fn publish(&self, request: &Request) -> Result<(), ClientError> {
        let payload = self.registry.encode_request(request)?;
        let topic = self.topics.for_job(request.job());
        self.bus
            .publish(topic, request.message_key().as_bytes(), &payload)
            .await?;
        tracing::debug!(request_id = request.request_id(), topic, "job published");
        Ok(())
    }

    /// Registers interest in the decision of the job `identity` (before
    /// publishing it).
    pub fn register(&self, identity: JobIdentity) -> Pending {
        self.waiter.register(identity)
    }

    /// Waits up to `timeout` for a registered decision; `None` on timeout.
    pub async fn wait(
        &self,
        pending: Pending,
        timeout: Duration,
    ) -> Result<Option<Decision>, ClientError> {
        Ok(self.waiter.wait(pending, timeout).await?)
    }

    /// Publishes `request` and waits up to `timeout` for its decision;
    /// `None` when it was not decided in time.
    pub async fn submit(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Option<Decision>, ClientError> {
        let pending = self.register(request.identity());
        self.publish(request).await?;
        self.wait(pending, timeout).await
    }

    /// Publishes every request, then waits up to `timeout` for all their
    /// decisions (in the order of `requests`; `None` for the undecided).
    pub async fn submit_all(
        &self,
        requests: &[Request],
        timeout: Duration,
    ) -> Result<Vec<Option<Decision>>, ClientError> {
        let mut pending = Vec::with_capacity(requests.len());
        for request in requests {
            pending.push(self.register(request.identity()));
            self.publish(request).await?;
        }
        futures::future::try_join_all(pending.into_iter().map(|p| self.wait(p, timeout))).await
    }

    /// The stored decision of a request (needs a store), if decided.
    pub async fn stored(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<Decision>, StoreError> {
        self.waiter.stored(tenant, request_id).await
    }
}
