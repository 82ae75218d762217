//! The reader: one task that owns the subscription, hands each message to
//! its lane (all jobs of one user share a lane, so they run in order),
//! parks a partition whose lane is full, stops reading while the jobs in
//! flight hold more bytes than the budget, and commits offsets as jobs
//! finish.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Processor;
use super::offsets::OffsetTracker;
use crate::domain::key_slot;
use crate::ports::{BusError, Message, Subscription};

struct Finished {
    topic: String,
    partition: i32,
    offset: i64,
    bytes: usize,
}

/// Re-scoring lanes per background scoring slot.
const BACKGROUND_LANES_PER_SLOT: usize = 4;

/// How often parked messages retry their lanes (lanes also wake the reader
/// whenever a job finishes).
const UNPARK_INTERVAL: Duration = Duration::from_millis(5);

impl Processor {
    /// Runs until `shutdown` fires, then drains in-flight jobs, commits what
    /// finished and leaves the group.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), BusError> {
        let mut subscription = self
            .bus
            .subscribe(&self.group, &self.topics.requests())
            .await?;
        let (finished_tx, mut finished_rx) = mpsc::unbounded_channel::<Finished>();
        // Live lanes, then lanes of re-scoring jobs, so bulk work never
        // fills a lane a live job needs. Several per background worker: a
        // job's store and bus round trips overlap another's scoring, while
        // the scoring pool still runs at most `background_slots` at once.
        let total = self.lanes + BACKGROUND_LANES_PER_SLOT * self.scoring.background_slots();
        let mut lanes = Vec::with_capacity(total);
        let mut lane_tasks = Vec::with_capacity(total);
        for _ in 0..total {
            let (tx, mut rx) = mpsc::channel::<Message>(self.lane_queue);
            let this = self.clone();
            let done = finished_tx.clone();
            let stop = shutdown.clone();
            lane_tasks.push(tokio::spawn(async move {
                while let Some(message) = rx.recv().await {
                    let (topic, partition, offset, bytes) = (
                        message.topic.clone(),
                        message.partition,
                        message.offset,
                        message.payload.len(),
                    );
                    if !this.process(message, &stop).await {
                        // Abandoned at shutdown: not finished, so its offset
                        // is not committed and the job is redelivered.
                        continue;
                    }
                    let _ = done.send(Finished {
                        topic,
                        partition,
                        offset,
                        bytes,
                    });
                }
            }));
            lanes.push(tx);
        }
        drop(finished_tx);
        let mut tracker = OffsetTracker::default();
        // Messages waiting for a full lane, by partition. A parked partition
        // is paused and its later messages queue behind, which keeps every
        // key in order, while other partitions keep flowing.
        let mut parked: HashMap<(String, i32), VecDeque<Message>> = HashMap::new();
        // Bytes of the messages read and not finished (queued, parked or
        // being scored): reading stops at the budget, so memory is bounded by
        // bytes, not by counts of messages of up to 16 MiB. One message is
        // always let in, however large.
        let mut in_flight_bytes = 0usize;
        let mut unpark = tokio::time::interval(UNPARK_INTERVAL);
        unpark.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(group = %self.group, lanes = self.lanes, "processor running");
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(done) = finished_rx.recv() => {
                    in_flight_bytes = in_flight_bytes.saturating_sub(done.bytes);
                    self.metrics.in_flight_bytes.set(in_flight_bytes as i64);
                    self.finish(&mut tracker, &*subscription, done);
                    self.unpark(&mut parked, &lanes, &*subscription);
                }
                _ = unpark.tick(), if !parked.is_empty() => {
                    self.unpark(&mut parked, &lanes, &*subscription);
                }
                message = subscription.next(), if in_flight_bytes < self.max_in_flight_bytes => {
                    for (topic, partition) in subscription.take_revoked() {
                        tracker.forget(&topic, partition);
                        if let Some(dropped) = parked.remove(&(topic.clone(), partition)) {
                            // Its new owner reads them again; their bytes are
                            // no longer held here (kept, they would close
                            // reading for good once they reach the budget).
                            let bytes: usize = dropped.iter().map(|m| m.payload.len()).sum();
                            in_flight_bytes = in_flight_bytes.saturating_sub(bytes);
                            self.metrics.in_flight_bytes.set(in_flight_bytes as i64);
                            // A pause outlives a revoke in librdkafka: undo it, or a
                            // partition assigned back to us would never be fetched.
                            let _ = subscription.resume(&topic, partition);
                            self.metrics.paused_partitions.dec();
                        }
                    }
                    if let Some(lag) = subscription.lag() {
                        self.metrics.consumer_lag.set(lag);
                    }
                    let message = match message {
                        Ok(m) => m,
                        Err(BusError::Closed) => break,
                        Err(err) => {
                            // Broker hiccups surface here; the client reconnects
                            // on its own, so wait a little and poll again.
                            tracing::warn!(error = %err, "consume failed, polling again");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    self.metrics.jobs_consumed.with_label_values(&[message.topic.as_str()]).inc();
                    in_flight_bytes += message.payload.len();
                    self.metrics.in_flight_bytes.set(in_flight_bytes as i64);
                    tracker.start(&message.topic, message.partition, message.offset);
                    self.metrics.jobs_in_flight.set(tracker.in_flight() as i64);
                    let slot = (message.topic.clone(), message.partition);
                    if let Some(queue) = parked.get_mut(&slot) {
                        // Fetched before the pause took effect.
                        queue.push_back(message);
                        continue;
                    }
                    match self.lane_for(&lanes, &message).try_send(message) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(message)) => {
                            if let Err(err) = subscription.pause(&slot.0, slot.1) {
                                // Parking alone keeps order; pausing only saves fetches.
                                tracing::warn!(error = %err, topic = %slot.0, partition = slot.1, "pause failed");
                            }
                            self.metrics.paused_partitions.inc();
                            parked.insert(slot, VecDeque::from([message]));
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    }
                }
            }
        }
        // Parked messages were never started: uncommitted, so redelivered.
        drop(parked);
        tracing::info!(in_flight = tracker.in_flight(), "draining");
        drop(lanes);
        for task in lane_tasks {
            let _ = task.await;
        }
        while let Ok(done) = finished_rx.try_recv() {
            self.finish(&mut tracker, &*subscription, done);
        }
        subscription.close().await?;
        tracing::info!("processor stopped");
        Ok(())
    }

    /// The lane of a message: by key among the live lanes, or among the
    /// background lanes for re-scoring jobs.
    fn lane_for<'a>(
        &self,
        lanes: &'a [mpsc::Sender<Message>],
        message: &Message,
    ) -> &'a mpsc::Sender<Message> {
        let key = message.key.as_deref().unwrap_or_default();
        if message.topic == self.topics.rescore {
            let background = lanes.len() - self.lanes;
            &lanes[self.lanes + key_slot(key, background)]
        } else {
            &lanes[key_slot(key, self.lanes)]
        }
    }

    /// Hands parked messages to their lanes in order; resumes a partition
    /// whose queue emptied.
    fn unpark(
        &self,
        parked: &mut HashMap<(String, i32), VecDeque<Message>>,
        lanes: &[mpsc::Sender<Message>],
        subscription: &dyn Subscription,
    ) {
        let mut resumed = Vec::new();
        for (slot, queue) in parked.iter_mut() {
            while let Some(message) = queue.pop_front() {
                match self.lane_for(lanes, &message).try_send(message) {
                    Ok(()) => {}
                    Err(
                        mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m),
                    ) => {
                        queue.push_front(m);
                        break;
                    }
                }
            }
            if queue.is_empty() {
                resumed.push(slot.clone());
            }
        }
        for slot in resumed {
            parked.remove(&slot);
            if let Err(err) = subscription.resume(&slot.0, slot.1) {
                tracing::warn!(error = %err, topic = %slot.0, partition = slot.1, "resume failed");
            }
            self.metrics.paused_partitions.dec();
        }
    }

    fn finish(&self, tracker: &mut OffsetTracker, subscription: &dyn Subscription, done: Finished) {
        if let Some(next) = tracker.finish(&done.topic, done.partition, done.offset)
            && let Err(err) = subscription.commit(&done.topic, done.partition, next)
        {
            // A later commit covers this offset too; until then a crash
            // only means redelivery, which is idempotent.
            tracing::warn!(error = %err, topic = %done.topic, partition = done.partition, "offset commit failed");
        }
        self.metrics.jobs_in_flight.set(tracker.in_flight() as i64);
    }
}
