//! The Kafka bus on rdkafka (librdkafka). Offsets are stored explicitly
//! (`enable.auto.offset.store=false`) only for work the pipeline reports done,
//! and auto-committed from there, so a crash redelivers unfinished jobs.

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::{Message as _, Offset, TopicPartitionList};

use crate::ports::{Bus, BusError, Message, Subscription, TopicSpec};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connection settings parsed from `kafka://host:port[,host:port][?librdkafka.option=value&…]`.
/// Query options go to librdkafka as they are (e.g. `security.protocol=SASL_SSL`,
/// `sasl.mechanism=SCRAM-SHA-512`, `sasl.username=…`); the SASL password comes
/// from `TIMBRE_KAFKA_SASL_PASSWORD`, never from the URL, so it is not logged.
#[derive(Clone, PartialEq)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// Extra librdkafka options.
    pub options: Vec<(String, String)>,
    /// Static member id of this process in its consumer groups
    /// (`group.instance.id`): a restarted member gets its partitions back at
    /// once instead of after the dead member's session times out.
    pub instance_id: Option<String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.options.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("options", &keys)
            .field("instance_id", &self.instance_id)
            .finish()
    }
}

impl KafkaConfig {
    /// Parses a `kafka://` URL.
    pub fn from_url(url: &str) -> Result<Self, BusError> {
        let rest = url.strip_prefix("kafka://").ok_or_else(|| {
            BusError::Config("bus url must start with kafka:// or embedded://".into())
        })?;
        let (brokers, query) = rest.split_once('?').unwrap_or((rest, ""));
        let brokers = brokers.trim_end_matches('/');
        if brokers.is_empty() {
            return Err(BusError::Config("kafka url has no brokers".into()));
        }
        let mut options = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| BusError::Config(format!("kafka option `{pair}` needs a value")))?;
            // Secrets never travel in the URL, which ends up in configs and logs.
            if k.contains("password") || k.contains("secret") || k.ends_with(".pem") {
                return Err(BusError::Config(format!(
                    "`{k}` is a secret: use TIMBRE_KAFKA_SASL_PASSWORD or a file-based option, not the url"
                )));
            }

            options.push((k.to_string(), v.to_string()));
        }
        Ok(Self {
            brokers: brokers.to_string(),
            options,
            instance_id: None,
        })
    }

    fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.options {
            cfg.set(k, v);
        }
        if let Ok(password) = std::env::var("TIMBRE_KAFKA_SASL_PASSWORD") {
            cfg.set("sasl.password", password);
        }
        cfg
    }
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

/// A [`Bus`] on a Kafka cluster.
pub struct KafkaBus {
    config: KafkaConfig,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
}

impl KafkaBus {
    /// Creates the producer and admin clients (connections are lazy).
    pub fn connect(config: KafkaConfig) -> Result<Self, BusError> {
        let producer = config
            .client_config()
            .set("enable.idempotence", "true")
            // Jobs carry up to 10 MiB of audio inline (topics allow 16 MiB).
            .set("message.max.bytes", "16777216")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(unavailable)?;
        let admin = config.client_config().create().map_err(unavailable)?;
        Ok(Self {
            config,
            producer,
            admin,
        })
    }

    async fn partition_counts(
        &self,
        topics: Vec<String>,
    ) -> Result<Vec<(String, Option<usize>)>, BusError> {
        let producer = self.producer.clone();
        // Metadata requests block; keep them off the async workers.
        tokio::task::spawn_blocking(move || {
            let md = producer
                .client()
                .fetch_metadata(None, METADATA_TIMEOUT)
                .map_err(unavailable)?;
            Ok(topics
                .into_iter()
                .map(|name| {
                    let count = md
                        .topics()
                        .iter()
                        .find(|t| t.name() == name && t.error().is_none())
                        .map(|t| t.partitions().len());
                    (name, count)
                })
                .collect())
        })
        .await
        .map_err(unavailable)?
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn publish(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), BusError> {
        self.producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                PRODUCE_TIMEOUT,
            )
            .await
            .map(drop)
            .map_err(|(e, _)| unavailable(e))
    }

    async fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Subscription>, BusError> {
        let context = GroupContext::default();
        let events = context.clone();
        let mut config = self.config.client_config();
        if let Some(id) = &self.config.instance_id {
            config.set("group.instance.id", id);
        }
        let consumer: StreamConsumer<GroupContext> = config
            .set("group.id", group)
            // Every request topic has as many partitions, and range
            // assignment gives one member partition p of each: all jobs of a
            // user reach one processor, whose per-user lock orders a
            // re-scoring job against that user's live jobs.
            .set("partition.assignment.strategy", "range")
            // librdkafka prefetches up to 64 MiB per partition by default:
            // bound it, or memory would not follow max_in_flight_bytes.
            .set("queued.max.messages.kbytes", "16384")
            // Feeds the consumer-lag gauge.
            .set("statistics.interval.ms", "5000")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", "10000")
            // Inference runs on worker threads fed by bounded queues and the
            // poll loop keeps polling while partitions are paused, so the
            // poll interval is never starved by slow scoring.
            .set("max.poll.interval.ms", "300000")
            .create_with_context(context)
            .map_err(unavailable)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(unavailable)?;
        Ok(Box::new(KafkaSubscription { consumer, events }))
    }

    async fn tail(&self, topic: &str) -> Result<Box<dyn Subscription>, BusError> {
        let partitions = self
            .partition_counts(vec![topic.to_string()])
            .await?
            .pop()
            .and_then(|(_, n)| n)
            .ok_or_else(|| BusError::Topic(format!("unknown topic {topic}")))?;
        // Manual assignment at the end: no group join (which would add
        // seconds of rebalancing per replica) and nothing to commit.
        let consumer: StreamConsumer<GroupContext> = self
            .config
            .client_config()
            .set("group.id", format!("timbre-tail-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .create_with_context(GroupContext::default())
            .map_err(unavailable)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(topic, p, Offset::End)
                .map_err(unavailable)?;
        }
        consumer.assign(&tpl).map_err(unavailable)?;
        Ok(Box::new(KafkaSubscription {
            consumer,
            events: GroupContext::default(),
        }))
    }

    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<Vec<String>, BusError> {
        let new_topics: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                NewTopic::new(
                    &t.name,
                    t.partitions,
                    TopicReplication::Fixed(i32::from(t.replication)),
                )
                .set("cleanup.policy", &t.cleanup_policy)
            })
            .collect();
        let retention: Vec<String> = topics.iter().map(|t| t.retention_ms.to_string()).collect();
        let max_bytes: Vec<Option<String>> = topics
            .iter()
            .map(|t| t.max_message_bytes.map(|b| b.to_string()))
            .collect();
        let new_topics: Vec<NewTopic<'_>> = new_topics
            .into_iter()
            .zip(retention.iter().zip(&max_bytes))
            .map(|(t, (r, m))| {
                let t = t.set("retention.ms", r);
                match m {
                    Some(m) => t.set("max.message.bytes", m),
                    None => t,
                }
            })
            .collect();
        let results = self
            .admin
            .create_topics(
                &new_topics,
                &AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT)),
            )
            .await
            .map_err(unavailable)?;
        for result in results {
            match result {
                Ok(name) => tracing::info!(topic = %name, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(BusError::Topic(format!("creating {name}: {code}")));
                }
            }
        }
        // A topic just created can take a moment to show in metadata.
        let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
        let mut counts = self.partition_counts(names.clone()).await?;
        for _ in 0..50 {
            if counts.iter().all(|(_, n)| n.is_some()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            counts = self.partition_counts(names.clone()).await?;
        }
        let mut drift = Vec::new();
        for (spec, (name, count)) in topics.iter().zip(counts) {
            match count {
                None => {
                    return Err(BusError::Topic(format!(
                        "topic {name} is missing after create"
                    )));
                }
                Some(n) if n as i32 != spec.partitions => drift.push(format!(
                    "{name}: {n} partitions, catalogue says {}",
                    spec.partitions
                )),
                Some(_) => {}
            }
        }
        Ok(drift)
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.partition_counts(Vec::new()).await.map(drop)
    }
}

/// What librdkafka reports from its own threads: revoked partitions and lag.
#[derive(Clone, Default)]
struct GroupContext {
    revoked: Arc<Mutex<Vec<(String, i32)>>>,
    /// Sum of the assigned partitions' lag (0 until the first statistics).
    lag: Arc<AtomicI64>,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        let lag = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .sum();
        self.lag.store(lag, Ordering::Relaxed);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
            for p in partitions.elements() {
                tracing::info!(
                    topic = p.topic(),
                    partition = p.partition(),
                    "partition revoked"
                );
                revoked.push((p.topic().to_string(), p.partition()));
            }
        }
    }
}

struct KafkaSubscription {
    consumer: StreamConsumer<GroupContext>,
    events: GroupContext,
}

impl KafkaSubscription {
    fn partition(topic: &str, partition: i32) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        tpl
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> Result<Message, BusError> {
        let m = self.consumer.recv().await.map_err(unavailable)?;
        Ok(Message {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        })
    }

    fn commit(&self, topic: &str, partition: i32, next_offset: i64) -> Result<(), BusError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(next_offset))
            .map_err(unavailable)?;
        match self.consumer.store_offsets(&tpl) {
            Ok(()) => Ok(()),
            // After a rebalance moved the partition away, the new owner will
            // redeliver; that is the at-least-once contract, not a failure.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::State) => {
                tracing::debug!(
                    topic,
                    partition,
                    "offset not stored: partition no longer assigned"
                );
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    fn pause(&self, topic: &str, partition: i32) -> Result<(), BusError> {
        self.consumer
            .pause(&Self::partition(topic, partition))
            .map_err(unavailable)
    }

    fn resume(&self, topic: &str, partition: i32) -> Result<(), BusError> {
        self.consumer
            .resume(&Self::partition(topic, partition))
            .map_err(unavailable)
    }

    fn take_revoked(&mut self) -> Vec<(String, i32)> {
        std::mem::take(
            &mut *self
                .events
                .revoked
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    fn lag(&self) -> Option<i64> {
        Some(self.events.lag.load(Ordering::Relaxed)).filter(|l| *l >= 0)
    }

    async fn close(self: Box<Self>) -> Result<(), BusError> {
        let consumer = self.consumer;
        tokio::task::spawn_blocking(move || {
            // Nothing stored yet is a normal state on close.
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => Ok(()),
                Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => Ok(()),
                Err(e) => Err(unavailable(e)),
            }
        })
        .await
        .map_err(unavailable)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bus_urls_and_keeps_passwords_out() {
        let c = KafkaConfig::from_url(
            "kafka://b1:9092,b2:9092?security.protocol=SASL_SSL&sasl.username=svc",
        )
        .unwrap();
        assert_eq!(c.brokers, "b1:9092,b2:9092");
        assert_eq!(c.options.len(), 2);
        assert!(
            !format!("{c:?}").contains("svc"),
            "option values are not printed"
        );
        for secret in [
            "sasl.password=x",
            "ssl.key.password=x",
            "sasl.oauthbearer.client.secret=x",
            "ssl.key.pem=x",
        ] {
            let err = KafkaConfig::from_url(&format!("kafka://b1:9092?{secret}")).unwrap_err();
            assert_eq!(err.code(), "bus_config", "{secret}");
        }
        assert!(KafkaConfig::from_url("embedded://").is_err());
    }
}
