//! How a request meets its decision. Each client (an API replica, the demo,
//! a benchmark) tails the whole decisions topic (no consumer group, so every
//! replica sees every decision) and completes the waiter registered under `(tenant, request_id)`. When
//! the client can read the store, where the processor writes each decision
//! before publishing it, the store is polled as a backstop: it covers a tail
//! that is not positioned yet and a replica that restarted between publish
//! and decision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timbre_schemas::{Decision, JobIdentity, Registry};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::ports::{Bus, Store, StoreError};

/// How often a waiting request checks the store.
const STORE_POLL: Duration = Duration::from_millis(500);

type Key = (String, String);

/// One request waiting: only a decision of its own job (user, kind and
/// digest) completes it, so a request id reused by another job never hands
/// one caller another's decision.
struct Waiting {
    id: u64,
    identity: JobIdentity,
    tx: oneshot::Sender<Decision>,
}

/// Routes decisions to the requests waiting for them.
#[derive(Clone)]
pub struct DecisionWaiter {
    pending: Arc<Mutex<HashMap<Key, Vec<Waiting>>>>,
    next_id: Arc<AtomicU64>,
    store: Option<Arc<dyn Store>>,
    registry: Arc<Registry>,
}

/// A registered wait; dropping it unregisters.
pub struct Pending {
    key: Key,
    id: u64,
    rx: oneshot::Receiver<Decision>,
    waiter: DecisionWaiter,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = self.waiter.lock();
        if let Some(list) = pending.get_mut(&self.key) {
            list.retain(|w| w.id != self.id);
            if list.is_empty() {
                pending.remove(&self.key);
            }
        }
    }
}

impl DecisionWaiter {
    /// A waiter; with a `store`, decisions are also read back from it.
    pub fn new(store: Option<Arc<dyn Store>>, registry: Arc<Registry>) -> Self {
        Self {
            pending: Arc::default(),
            next_id: Arc::default(),
            store,
            registry,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Waiting>>> {
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
        let mut pending = self.lock();
        let Some(list) = pending.get_mut(&key) else {
            return;
        };
        let (matching, others): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(list)
            .into_iter()
            .partition(|w| w.identity.is_answered_by(&decision));
        *list = others;
        if list.is_empty() {
            pending.remove(&key);
        }
        drop(pending);
        for w in matching {
            let _ = w.tx.send(decision.clone());
        }
    }

    /// Registers interest in the decision of the job `identity`; call
    /// before publishing the job.
    pub fn register(&self, identity: JobIdentity) -> Pending {
        let (tx, rx) = oneshot::channel();
        let key = (identity.tenant.clone(), identity.request_id.clone());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(key.clone())
            .or_default()
            .push(Waiting { id, identity, tx });
        Pending {
            key,
            id,
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

    /// Waits up to `timeout` for the decision of `pending`; `None` on
    /// timeout. The store backstop returns whatever is stored under the id:
    /// callers check it with [`JobIdentity::is_answered_by`].
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

#[cfg(test)]
mod tests {
    use timbre_schemas::{DecisionKind, JobKind, Registry};

    use super::*;

    fn identity(user: &str, job: JobKind) -> JobIdentity {
        JobIdentity {
            tenant: "t".into(),
            request_id: "k".into(),
            user_id: user.into(),
            job,
            digest: format!("{user}-{job:?}"),
        }
    }

    fn decision(user: &str, job: JobKind, kind: DecisionKind) -> Vec<u8> {
        let mut d = Decision::new("k", "t", user, job, kind, 1, 2);
        d.request_digest = Some(identity(user, job).digest);
        Registry::new().encode(&d).unwrap()
    }

    #[tokio::test]
    async fn a_reused_request_id_completes_only_its_own_job() {
        let waiter = DecisionWaiter::new(None, Arc::new(Registry::new()));
        let alice = waiter.register(identity("alice", JobKind::Verification));
        let bob = waiter.register(identity("bob", JobKind::Verification));
        // Bob's accept arrives first: it must not answer Alice.
        waiter.deliver(&decision(
            "bob",
            JobKind::Verification,
            DecisionKind::Accept,
        ));
        let got = waiter.wait(bob, Duration::from_millis(50)).await.unwrap();
        assert_eq!(got.map(|d| d.user_id), Some("bob".into()));
        // Another kind of job of Alice's does not answer her either.
        waiter.deliver(&decision(
            "alice",
            JobKind::Enrollment,
            DecisionKind::Applied,
        ));
        waiter.deliver(&decision(
            "alice",
            JobKind::Verification,
            DecisionKind::Reject,
        ));
        let got = waiter.wait(alice, Duration::from_millis(50)).await.unwrap();
        let got = got.expect("alice's own decision");
        assert_eq!(
            (got.user_id.as_str(), got.job, got.decision),
            ("alice", JobKind::Verification, DecisionKind::Reject)
        );
        assert!(waiter.lock().is_empty(), "completed waits unregister");
    }

    #[tokio::test]
    async fn another_body_under_the_same_id_does_not_answer() {
        let waiter = DecisionWaiter::new(None, Arc::new(Registry::new()));
        let first = identity("alice", JobKind::Verification);
        let mut second = first.clone();
        second.digest = "other audio".into();
        let waiting = waiter.register(first);
        let mut refused = Decision::new(
            "k",
            "t",
            "alice",
            JobKind::Verification,
            DecisionKind::Error,
            1,
            2,
        );
        refused.request_digest = Some(second.digest);
        waiter.deliver(&Registry::new().encode(&refused).unwrap());
        let got = waiter
            .wait(waiting, Duration::from_millis(50))
            .await
            .unwrap();
        assert!(
            got.is_none(),
            "the other job's refusal is not this job's answer"
        );
    }

    #[tokio::test]
    async fn a_dropped_wait_leaves_the_others_registered() {
        let waiter = DecisionWaiter::new(None, Arc::new(Registry::new()));
        let first = waiter.register(identity("alice", JobKind::Consent));
        let second = waiter.register(identity("alice", JobKind::Consent));
        drop(first);
        waiter.deliver(&decision("alice", JobKind::Consent, DecisionKind::Applied));
        let got = waiter
            .wait(second, Duration::from_millis(50))
            .await
            .unwrap();
        assert!(got.is_some(), "the second wait still hears its decision");
    }
}
