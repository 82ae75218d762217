//! A scoring pool whose embedder is a gate, on the embedded bus and a file
//! store: tests of the pipeline's scheduling hold jobs in scoring for as
//! long as they need (these test the pipeline, not the model).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use timbre::adapters::file_store::FileStore;
use timbre::adapters::memory_bus::MemoryBus;
use timbre::audio::AudioLimits;
use timbre::metrics::Metrics;
use timbre::pipeline::{Processor, ProcessorConfig};
use timbre::ports::{Bus, BusError, EmbedError, Embedder, Store, Subscription};
use timbre::scoring::ScoringPool;
use timbre::topics::{TopicNames, catalogue};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Blocks every embedding until opened.
pub struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
    entered: AtomicUsize,
}

impl Gate {
    /// Lets every waiting and later embedding through.
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.changed.notify_all();
    }

    /// Embeddings that reached the gate so far.
    pub fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }
}

impl Embedder for Gate {
    fn embed(&self, _: &[f32]) -> Result<Vec<f32>, EmbedError> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.changed.wait(open).unwrap();
        }
        Ok(vec![0.1; 192])
    }

    fn model_id(&self) -> String {
        GATE_MODEL.into()
    }
}

/// The model id of the gate's embeddings.
pub const GATE_MODEL: &str = "gate@test";

/// An embedded bus and store with the topics, a closed gate as the
/// scoring pool's one worker, and a real recording to enroll.
pub struct Setup {
    /// A real 16 kHz recording.
    pub wav: Vec<u8>,
    /// The embedded bus.
    pub bus: Arc<dyn Bus>,
    /// A fresh file store, migrated.
    pub store: Arc<dyn Store>,
    /// The gate, closed.
    pub gate: Arc<Gate>,
    /// One worker behind the gate, no queue.
    pub pool: Arc<ScoringPool>,
    /// Topic names (no prefix).
    pub topics: TopicNames,
}

/// Builds a [`Setup`].
pub async fn setup() -> Setup {
    let wav = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/librispeech-r/test-other/1688/1688-142285-0005.wav"
    ))
    .unwrap();
    let dir = std::env::temp_dir().join(format!("timbre-gate-{}", uuid::Uuid::new_v4()));
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(1_000));
    let store: Arc<dyn Store> = Arc::new(FileStore::open(&dir.join("t.redb")).unwrap());
    store.migrate().await.unwrap();
    bus.ensure_topics(&catalogue("", Some(1))).await.unwrap();
    let gate = Arc::new(Gate {
        open: Mutex::new(false),
        changed: Condvar::new(),
        entered: AtomicUsize::new(0),
    });
    let pool = Arc::new(ScoringPool::new(gate.clone(), 1, 0, AudioLimits::default()));
    Setup {
        wav,
        bus,
        store,
        gate,
        pool,
        topics: TopicNames::with_prefix(""),
    }
}

/// A processor running on a [`Setup`], and a reader of every decision.
pub struct Running {
    /// Every decision the processor publishes, in order.
    pub decisions: Box<dyn Subscription>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), BusError>>,
}

impl Setup {
    /// Starts a processor on this setup's bus, store and gated pool
    /// (`config.topics` is replaced by the setup's).
    pub async fn start(&self, config: ProcessorConfig, metrics: Metrics) -> Running {
        let processor = Processor::new(
            self.bus.clone(),
            self.store.clone(),
            self.pool.clone(),
            ProcessorConfig {
                topics: self.topics.clone(),
                ..config
            },
            metrics,
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(processor.run(shutdown.clone()));
        let decisions = self
            .bus
            .subscribe("observer", std::slice::from_ref(&self.topics.decisions))
            .await
            .unwrap();
        Running {
            decisions,
            shutdown,
            task,
        }
    }
}

impl Running {
    /// Stops the processor and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}
