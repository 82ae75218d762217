//! One lock per user with a job in progress, shared by the live and the
//! background lanes. A user's live jobs already share a lane; a re-scoring
//! job runs in a background lane, so it takes its user's lock to read what
//! it decides on and to commit, and an erasure can never slip in between.
//! All request topics have as many partitions and are assigned by range,
//! so one processor holds every partition of a user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// The locks of the users with a job in progress.
#[derive(Default)]
pub(super) struct UserLocks {
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Holds a user's lock; the entry goes when nobody holds or awaits it.
pub(super) struct UserGuard<'a> {
    locks: &'a UserLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl UserLocks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AsyncMutex<()>>>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the lock of the user keyed `key` (`tenant/user_id`).
    pub(super) async fn lock(&self, key: &str) -> UserGuard<'_> {
        let entry = self.map().entry(key.to_string()).or_default().clone();
        let guard = entry.lock_owned().await;
        UserGuard {
            locks: self,
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl Drop for UserGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map();
        // Only the map still holds it: no job holds or awaits this user.
        if map
            .get(&self.key)
            .is_some_and(|e| Arc::strong_count(e) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_job_per_user_and_no_leftover_entries() {
        let locks = Arc::new(UserLocks::default());
        let first = locks.lock("t/alice").await;
        let other = locks.lock("t/bob").await;
        let waiting = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _second = locks.lock("t/alice").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "alice's second job waits");
        drop(other);
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("released")
            .unwrap();
        assert_eq!(locks.len(), 0, "entries go with their last holder");
    }
}
