//! How a request meets its decision. Each client (an API replica, the demo,
//! a benchmark) tails the whole decisions topic (no consumer group, so every
//! replica sees every decision) and completes the waiter registered under `(tenant, request_id)`. When
//! the client can read the store, where the processor writes each decision
//! before publishing it, the store is polled as a backstop: it covers a tail
//! that is not positioned yet and a replica that restarted between publish
//! and decision.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timbre_schemas::{Decision, Registry};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::ports::{Bus, Store, StoreError};

/// How often a waiting request checks the store.
const STORE_POLL: Duration = Duration::from_millis(500);

type Key = (String, String);

/// Routes decisions to the requests waiting for them.
#[derive(Clone)]
pub struct DecisionWaiter {
    pending: Arc<Mutex<HashMap<Key, oneshot::Sender<Decision>>>>,
    store: Option<Arc<dyn Store>>,
    registry: Arc<Registry>,
}

/// A registered wait; dropping it unregisters.
pub struct Pending {
    key: Key,
    rx: oneshot::Receiver<Decision>,
    waiter: DecisionWaiter,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.waiter.lock().remove(&self.key);
    }
}

impl DecisionWaiter {
    /// A waiter; with a `store`, decisions are also read back from it.
    pub fn new(store: Option<Arc<dyn Store>>, registry: Arc<Registry>) -> Self {
        Self {
            pending: Arc::default(),
            store,
            registry,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, oneshot::Sender<Decision>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts tailing `topic`; runs until `shutdown`.
    pub async fn start(
        &self,
        bus: Arc<dyn Bus>,
        topic: &str,
        shutdown: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, crate::ports::BusError> {
        let mut tail = bus.tail(topic).await?;
        let this = self.clone();
        Ok(tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => break,
                    m = tail.next() => m,
                };
                match message {
                    Ok(m) => this.deliver(&m.payload),
                    Err(e) => {
                        // The store backstop keeps requests answered meanwhile.
                        tracing::warn!(error = %e, "decision tail failed, retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            let _ = tail.close().await;
        }))
    }

    fn deliver(&self, payload: &[u8]) {
        let Ok(decision) = self.registry.decode::<Decision>(payload) else {
            return;
        };
        let key = (decision.tenant.clone(), decision.request_id.clone());
        if let Some(tx) = self.lock().remove(&key) {
            let _ = tx.send(decision);
        }
    }

    /// Registers interest in a decision; call before publishing the job.
    pub fn register(&self, tenant: &str, request_id: &str) -> Pending {
        let (tx, rx) = oneshot::channel();
        let key = (tenant.to_string(), request_id.to_string());
        self.lock().insert(key.clone(), tx);
        Pending {
            key,
            rx,
            waiter: self.clone(),
        }
    }

    /// The stored decision of a request, if it was decided.
    pub async fn stored(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<Decision>, StoreError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let Some(bytes) = store.decision(tenant, request_id).await? else {
            return Ok(None);
        };
        self.registry
            .decode::<Decision>(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// Waits up to `timeout` for the decision of `pending`; `None` on timeout.
    pub async fn wait(
        &self,
        mut pending: Pending,
        timeout: Duration,
    ) -> Result<Option<Decision>, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tail_gone = false;
        loop {
            let poll_at = (tokio::time::Instant::now() + STORE_POLL).min(deadline);
            tokio::select! {
                got = &mut pending.rx, if !tail_gone => match got {
                    Ok(d) => return Ok(Some(d)),
                    Err(_) => tail_gone = true,
                },
                () = tokio::time::sleep_until(poll_at) => {}
            }
            let (tenant, request_id) = &pending.key;
            if let Some(d) = self.stored(tenant, request_id).await? {
                return Ok(Some(d));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}
