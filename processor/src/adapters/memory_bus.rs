//! The embedded bus: an in-process partitioned log with consumer-group
//! offsets, for the single-process quick start and tests. Partitions are
//! bounded: a publisher waits while a partition holds `capacity` messages that
//! some subscribed group has not committed yet (backpressure instead of
//! unbounded memory); with no subscribed group the oldest messages are dropped,
//! like retention on a real log. Each group has one member per process, which
//! reads every partition. The log lives in memory: it does not survive a restart.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::domain::key_slot;
use crate::ports::{Bus, BusError, Message, Subscription, TopicSpec};

type Record = (Option<Vec<u8>>, Vec<u8>);

#[derive(Default)]
struct PartitionLog {
    /// Offset of `records[0]`.
    base: i64,
    records: VecDeque<Record>,
}

impl PartitionLog {
    fn end(&self) -> i64 {
        self.base + self.records.len() as i64
    }
}

#[derive(Default)]
struct State {
    topics: HashMap<String, Vec<PartitionLog>>,
    /// (group, topic, partition) → next offset to read.
    committed: HashMap<(String, String, i32), i64>,
    /// group → topics it subscribed to.
    groups: HashMap<String, HashSet<String>>,
}

impl State {
    /// Lowest committed offset of the groups that read `topic`, if any do.
    fn low_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        self.groups
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(g, _)| {
                self.committed
                    .get(&(g.clone(), topic.to_string(), partition))
                    .copied()
                    .unwrap_or(0)
            })
            .min()
    }
}

struct Inner {
    state: Mutex<State>,
    changed: Notify,
    capacity: usize,
}

/// A [`Bus`] inside this process.
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

impl MemoryBus {
    /// A bus whose partitions hold at most `capacity` uncommitted messages.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                changed: Notify::new(),
                capacity: capacity.max(1),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), BusError> {
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                let partitions = state
                    .topics
                    .get(topic)
                    .map(Vec::len)
                    .ok_or_else(|| BusError::Topic(format!("unknown topic {topic}")))?;
                // Kafka's partitioner is murmur2; any stable hash keeps one key on one
                // partition, which is all ordering needs.
                let p = key_slot(key, partitions);
                let low = state.low_watermark(topic, p as i32);
                let log = &mut state.topics.get_mut(topic).expect("checked above")[p];
                // Drop what every subscribed group has committed (or, with no
                // group, what exceeds the capacity).
                let keep_from = low.unwrap_or_else(|| log.end() + 1 - self.inner.capacity as i64);
                while log.base < keep_from && !log.records.is_empty() {
                    log.records.pop_front();
                    log.base += 1;
                }
                if log.records.len() < self.inner.capacity {
                    log.records
                        .push_back((Some(key.to_vec()), payload.to_vec()));
                    drop(state);
                    self.inner.changed.notify_waiters();
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    async fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Subscription>, BusError> {
        let mut positions = Vec::new();
        {
            let mut state = self.lock();
            for topic in topics {
                let count = state
                    .topics
                    .get(topic)
                    .map(Vec::len)
                    .ok_or_else(|| BusError::Topic(format!("unknown topic {topic}")))?;
                for p in 0..count as i32 {
                    let committed = state
                        .committed
                        .get(&(group.to_string(), topic.clone(), p))
                        .copied();
                    let base = state.topics[topic][p as usize].base;
                    positions.push((topic.clone(), p, committed.unwrap_or(base).max(base)));
                }
            }
            state
                .groups
                .entry(group.to_string())
                .or_default()
                .extend(topics.iter().cloned());
        }
        Ok(Box::new(MemorySubscription {
            bus: self.clone(),
            group: group.to_string(),
            positions,
            cursor: 0,
            paused: Mutex::new(HashSet::new()),
        }))
    }

    async fn tail(&self, topic: &str) -> Result<Box<dyn Subscription>, BusError> {
        let state = self.lock();
        let logs = state
            .topics
            .get(topic)
            .ok_or_else(|| BusError::Topic(format!("unknown topic {topic}")))?;
        let positions = (0..logs.len())
            .map(|p| (topic.to_string(), p as i32, logs[p].end()))
            .collect();
        Ok(Box::new(MemorySubscription {
            bus: self.clone(),
            // Not registered in `groups`: a tail never holds back retention.
            group: String::new(),
            positions,
            cursor: 0,
            paused: Mutex::new(HashSet::new()),
        }))
    }

    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<Vec<String>, BusError> {
        let mut state = self.lock();
        let mut drift = Vec::new();
        for spec in topics {
            let count = usize::try_from(spec.partitions.max(1)).unwrap_or(1);
            match state.topics.get(&spec.name) {
                Some(existing) if existing.len() != count => drift.push(format!(
                    "{}: {} partitions, catalogue says {}",
                    spec.name,
                    existing.len(),
                    spec.partitions
                )),
                Some(_) => {}
                None => {
                    state.topics.insert(
                        spec.name.clone(),
                        (0..count).map(|_| PartitionLog::default()).collect(),
                    );
                }
            }
        }
        Ok(drift)
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
}

struct MemorySubscription {
    bus: MemoryBus,
    group: String,
    /// (topic, partition, next offset to deliver).
    positions: Vec<(String, i32, i64)>,
    /// Round-robin start, so one busy partition does not starve the others.
    cursor: usize,
    paused: Mutex<HashSet<(String, i32)>>,
}

impl MemorySubscription {
    fn try_next(&mut self) -> Option<Message> {
        let state = self.bus.lock();
        let paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.positions.len();
        for i in 0..n {
            let idx = (self.cursor + i) % n;
            let (topic, partition, next) = &mut self.positions[idx];
            if paused.contains(&(topic.clone(), *partition)) {
                continue;
            }
            let log = &state.topics[topic.as_str()][*partition as usize];
            *next = (*next).max(log.base);
            if *next < log.end() {
                let (key, payload) = log.records[(*next - log.base) as usize].clone();
                let message = Message {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *next,
                    key,
                    payload,
                };
                *next += 1;
                self.cursor = idx + 1;
                return Some(message);
            }
        }
        None
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Message, BusError> {
        let bus = self.bus.clone();
        loop {
            let changed = bus.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(m) = self.try_next() {
                return Ok(m);
            }
            changed.await;
        }
    }

    fn commit(&self, topic: &str, partition: i32, next_offset: i64) -> Result<(), BusError> {
        let mut state = self.bus.lock();
        let entry = state
            .committed
            .entry((self.group.clone(), topic.to_string(), partition))
            .or_insert(0);
        *entry = (*entry).max(next_offset);
        drop(state);
        self.bus.inner.changed.notify_waiters();
        Ok(())
    }

    fn pause(&self, topic: &str, partition: i32) -> Result<(), BusError> {
        self.paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((topic.to_string(), partition));
        Ok(())
    }

    fn resume(&self, topic: &str, partition: i32) -> Result<(), BusError> {
        self.paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(topic.to_string(), partition));
        self.bus.inner.changed.notify_waiters();
        Ok(())
    }

    fn lag(&self) -> Option<i64> {
        let state = self.bus.lock();
        Some(
            self.positions
                .iter()
                .map(|(topic, partition, _)| {
                    let end = state.topics[topic.as_str()][*partition as usize].end();
                    let committed = state
                        .committed
                        .get(&(self.group.clone(), topic.clone(), *partition))
                        .copied()
                        .unwrap_or(0);
                    (end - committed).max(0)
                })
                .sum(),
        )
    }

    async fn close(self: Box<Self>) -> Result<(), BusError> {
        Ok(())
    }
}
