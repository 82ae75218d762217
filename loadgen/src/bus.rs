//! Bus targets: Avro jobs published on the request topics, decisions read by
//! tailing the decisions topic (Kafka, or the embedded bus of an in-process
//! engine).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use timbre::backends::connect_bus;
use timbre::client::JobClient;
use timbre::config::Config;
use timbre::domain::BIOMETRIC_PURPOSE;
use timbre::domain::{Policy, now_ms};
use timbre::engine::{Engine, EngineError};
use timbre::ports::{Bus, BusError};
use timbre::topics::{TopicNames, catalogue};
use timbre_schemas::{
    ConsentChanged, Decision, DecisionKind, EnrollmentRequested, ProfileStatus, Registry, Request,
    VerificationRequested,
};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::corpus::{Clips, Corpus};
use crate::mix::{Claimant, Mix};
use crate::report::{NotEnrolled, Progress, Tally, Verdict};
use crate::{Enrolled, Options, Plan, Verified, user_id};

/// A setup job without its decision for this long is published again with
/// the same request id: the processor answers a repeated id with the stored
/// decision, and a tail that was not positioned yet has missed the first.
const RESEND_AFTER: Duration = Duration::from_secs(5);

/// The in-process engine of the `embedded` target.
struct Embedded {
    token: CancellationToken,
    task: Option<JoinHandle<Result<(), EngineError>>>,
    store: PathBuf,
}

/// A job client on the bus, and a tail of the decisions topic that stamps
/// each decision's arrival (the latency clock).
pub(crate) struct BusTarget {
    client: JobClient,
    topics: TopicNames,
    tenant: String,
    decisions: mpsc::UnboundedReceiver<(Decision, Instant)>,
    reader: JoinHandle<()>,
    engine: Option<Embedded>,
}

impl BusTarget {
    /// Starts an engine in this process: embedded bus, a temporary file
    /// store, the real model; the tenant gets a policy that suits load tests
    /// (`--enroll-target-ms`, practically no cooldown). `TIMBRE__…` variables
    /// tune the rest of the engine as they would `timbre up`.
    pub(crate) async fn embedded(opts: &Options, tenant: &str, run_id: &str) -> Result<Self> {
        let store = std::env::temp_dir().join(format!("timbre-loadgen-{run_id}.redb"));
        let mut config = Config::load(None, std::env::vars())?;
        config.bus = "embedded://".into();
        config.store = format!("file://{}", store.display());
        config.topic_prefix = format!("loadgen{run_id}.");
        config.group = format!("loadgen{run_id}");
        config.listen.set_port(0);
        if let Some(w) = opts.workers {
            config.workers = w;
        }
        if opts.no_synthetic_check {
            config.synthetic.enabled = false;
        }
        let policy = Policy {
            enrollment_target_millis: opts.enroll_target_ms,
            // Repeated impostor attempts must not put users in cooldown:
            // that would turn rejects into cooldowns and distort FAR/FRR.
            free_failures: 1_000_000,
            // Attempts reuse the corpus' clips, which replay detection
            // would rightly reject as recordings played again.
            replay_memory_days: 0,
            ..config.policy.clone()
        };
        config.tenants.insert(tenant.to_string(), policy);
        let engine = Engine::connect(config).await?;
        engine.apply_topics(Some(1)).await?;
        engine.store.migrate().await?;
        let (bus, topics) = (engine.bus.clone(), engine.topics.clone());
        let token = CancellationToken::new();
        let stop = token.clone();
        let task = tokio::spawn(async move { engine.run(stop).await });
        let embedded = Embedded {
            token,
            task: Some(task),
            store,
        };
        Self::start(bus, topics, tenant, Some(embedded)).await
    }

    /// Connects to Kafka; `--apply-topics` creates missing topics first.
    pub(crate) async fn kafka(
        url: &str,
        opts: &Options,
        tenant: &str,
        progress: &Progress,
    ) -> Result<Self> {
        let bus = connect_bus(url)?;
        if opts.apply_topics {
            let specs = catalogue(&opts.topic_prefix, opts.replication);
            for drift in bus.ensure_topics(&specs).await? {
                progress.note(&format!("topic drift: {drift}"));
            }
        }
        let topics = TopicNames::with_prefix(&opts.topic_prefix);
        Self::start(bus, topics, tenant, None).await
    }

    /// Positions the decisions tail before anything is published.
    async fn start(
        bus: Arc<dyn Bus>,
        topics: TopicNames,
        tenant: &str,
        engine: Option<Embedded>,
    ) -> Result<Self> {
        let mut tail = bus.tail(&topics.decisions).await.with_context(|| {
            format!(
                "tailing {} (create the topics with `timbre topics apply` or --apply-topics)",
                topics.decisions
            )
        })?;
        let (tx, decisions) = mpsc::unbounded_channel();
        let registry = Registry::new();
        let (reader_registry, reader_tenant) = (registry.clone(), tenant.to_string());
        let reader = tokio::spawn(async move {
            loop {
                match tail.next().await {
                    Ok(m) => {
                        let at = Instant::now();
                        let Ok(d) = reader_registry.decode::<Decision>(&m.payload) else {
                            continue;
                        };
                        if d.tenant == reader_tenant && tx.send((d, at)).is_err() {
                            return;
                        }
                    }
                    Err(BusError::Closed) => return,
                    Err(e) => {
                        eprintln!("decisions tail: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Ok(Self {
            client: JobClient::new(bus, topics.clone(), None),
            topics,
            tenant: tenant.to_string(),
            decisions,
            reader,
            engine,
        })
    }

    /// Fails when the in-process engine stopped.
    async fn engine_alive(&mut self) -> Result<()> {
        let Some(e) = &mut self.engine else {
            return Ok(());
        };
        if e.task.as_ref().is_some_and(JoinHandle::is_finished) {
            let task = e.task.take().expect("checked above");
            task.await??;
            bail!("the in-process engine stopped");
        }
        Ok(())
    }

    async fn publish(&self, request: &Request) -> Result<()> {
        self.client
            .publish(request)
            .await
            .with_context(|| format!("publishing {}", request.request_id()))
    }

    /// Publishes `jobs` and waits for their decisions: jobs without one are
    /// resent after [`RESEND_AFTER`] without progress, and given up after
    /// `drain` without progress.
    async fn round(
        &mut self,
        jobs: Vec<(String, Request)>,
        drain: Duration,
        progress: &Progress,
    ) -> Result<HashMap<String, Decision>> {
        let mut pending = HashMap::new();
        for (id, request) in jobs {
            self.publish(&request).await?;
            progress.sent();
            pending.insert(id, request);
        }
        let mut decided = HashMap::new();
        let (mut moved, mut resent) = (Instant::now(), Instant::now());
        while !pending.is_empty() && moved.elapsed() < drain {
            self.engine_alive().await?;
            match tokio::time::timeout(Duration::from_millis(200), self.decisions.recv()).await {
                Ok(Some((d, _))) => {
                    if pending.remove(&d.request_id).is_some() {
                        progress.decided();
                        moved = Instant::now();
                        decided.insert(d.request_id.clone(), d);
                    }
                }
                Ok(None) => bail!("the decisions tail stopped"),
                Err(_) => {}
            }
            if moved.elapsed() >= RESEND_AFTER && resent.elapsed() >= RESEND_AFTER {
                for job in pending.values() {
                    self.publish(job).await?;
                }
                resent = Instant::now();
            }
        }
        Ok(decided)
    }

    /// Consent for every candidate, then enrollment rounds: round k sends
    /// utterance k of every speaker not enrolled yet, keeping at least one
    /// utterance of each speaker out of enrollment.
    pub(crate) async fn enroll(
        &mut self,
        corpus: &Corpus,
        candidates: &[usize],
        run_id: &str,
        plan: Plan,
        progress: &Progress,
    ) -> Result<Enrolled> {
        struct State {
            speaker: usize,
            user: String,
            samples: u64,
            speech: i64,
            last: String,
        }
        let mut active: Vec<State> = candidates
            .iter()
            .map(|&s| State {
                speaker: s,
                user: user_id(run_id, &corpus.speakers[s].label),
                samples: 0,
                speech: 0,
                last: "no_decision".into(),
            })
            .collect();
        let mut out = Enrolled {
            claimants: Vec::new(),
            not_enrolled: Vec::new(),
            samples: 0,
        };
        let give_up = |s: State, out: &mut Enrolled| {
            out.not_enrolled.push(NotEnrolled {
                speaker: corpus.speakers[s.speaker].label.clone(),
                samples: s.samples,
                speech_millis: s.speech,
                last: s.last,
            });
        };

        progress.phase("consent");
        let jobs = active
            .iter()
            .map(|s| {
                let id = format!("{run_id}-c{}", s.speaker);
                let job = ConsentChanged::new(
                    id.clone(),
                    self.tenant.clone(),
                    s.user.clone(),
                    now_ms(),
                    true,
                    BIOMETRIC_PURPOSE,
                    false,
                );
                (id, Request::Consent(job))
            })
            .collect();
        let decided = self.round(jobs, plan.drain, progress).await?;
        if decided.is_empty() {
            bail!(
                "no consent job was decided within {:?}: is a processor consuming {} \
                 (same --topic-prefix)?",
                plan.drain,
                self.topics.consent
            );
        }
        let mut consented = Vec::new();
        for mut s in active.drain(..) {
            match decided.get(&format!("{run_id}-c{}", s.speaker)) {
                Some(d) if d.decision == DecisionKind::Applied => consented.push(s),
                Some(d) => {
                    s.last = format!(
                        "consent {}",
                        d.error_code
                            .clone()
                            .unwrap_or_else(|| format!("{:?}", d.decision))
                    );
                    give_up(s, &mut out);
                }
                None => {
                    s.last = "consent undecided".into();
                    give_up(s, &mut out);
                }
            }
        }
        active = consented;

        for k in 0.. {
            // Speakers with an enrollment utterance left (the last one is held out).
            let (ready, exhausted): (Vec<State>, Vec<State>) = active
                .drain(..)
                .partition(|s| k + 1 < corpus.speakers[s.speaker].utterances.len());
            for s in exhausted {
                give_up(s, &mut out);
            }
            if ready.is_empty() {
                break;
            }
            progress.phase(&format!("enroll{}", k + 1));
            let mut jobs = Vec::new();
            for s in &ready {
                let id = format!("{run_id}-e{}-{k}", s.speaker);
                let audio = corpus.read(corpus.speakers[s.speaker].utterances[k])?;
                let job = EnrollmentRequested::new(
                    id.clone(),
                    self.tenant.clone(),
                    s.user.clone(),
                    now_ms(),
                    audio,
                );
                jobs.push((id, Request::Enrollment(job)));
            }
            out.samples += jobs.len() as u64;
            let decided = self.round(jobs, plan.drain, progress).await?;
            for mut s in ready {
                s.samples += 1;
                match decided.get(&format!("{run_id}-e{}-{k}", s.speaker)) {
                    Some(d) => {
                        s.speech += d.speech_millis;
                        s.last = d
                            .error_code
                            .clone()
                            .or_else(|| d.reasons.first().cloned())
                            .unwrap_or_else(|| format!("{:?}", d.decision).to_lowercase());
                        if d.profile_status == Some(ProfileStatus::Enrolled) {
                            let utterances = &corpus.speakers[s.speaker].utterances;
                            out.claimants.push(Claimant {
                                user_id: s.user,
                                speaker: s.speaker,
                                held_out: utterances[k + 1..].to_vec(),
                            });
                            continue;
                        }
                    }
                    None => s.last = "enrollment undecided".into(),
                }
                active.push(s);
            }
        }
        out.claimants.sort_by_key(|c| c.speaker);
        Ok(out)
    }

    /// Sends the verification mix per `plan` and collects the decisions.
    pub(crate) async fn verify(
        &mut self,
        mut mix: Mix,
        mut clips: Clips,
        run_id: &str,
        plan: Plan,
        progress: &Arc<Progress>,
    ) -> Result<Verified> {
        progress.phase("verify");
        let pending: Arc<Mutex<HashMap<String, (Instant, bool)>>> = Arc::default();
        let room = Arc::new(Notify::new());
        let started = Instant::now();
        let publisher = {
            let (client, tenant) = (self.client.clone(), self.tenant.clone());
            let (pending, room, progress) = (pending.clone(), room.clone(), progress.clone());
            let run_id = run_id.to_string();
            let claimants = mix.claimants().clone();
            tokio::spawn(async move {
                let mut i = 0u64;
                loop {
                    let at = match plan.due(i) {
                        Some(due) => {
                            if plan.done(i, due) {
                                break;
                            }
                            tokio::time::sleep_until((started + due).into()).await;
                            started + due
                        }
                        None => {
                            if plan.done(i, started.elapsed()) {
                                break;
                            }
                            while pending.lock().expect("pending lock").len() >= plan.max_in_flight
                            {
                                let _ = tokio::time::timeout(
                                    Duration::from_millis(50),
                                    room.notified(),
                                )
                                .await;
                            }
                            Instant::now()
                        }
                    };
                    let a = mix.next().expect("the mix is endless");
                    let id = format!("{run_id}-v{i}");
                    let request = Request::Verification(VerificationRequested::new(
                        id.clone(),
                        tenant.clone(),
                        claimants[a.claimant].user_id.clone(),
                        now_ms(),
                        clips.get(a.utterance)?.to_vec(),
                    ));
                    pending
                        .lock()
                        .expect("pending lock")
                        .insert(id.clone(), (at, a.genuine));
                    client
                        .publish(&request)
                        .await
                        .with_context(|| format!("publishing {id}"))?;
                    progress.sent();
                    i += 1;
                }
                anyhow::Ok(i)
            })
        };
        let mut publisher = Some(publisher);
        let mut tally = Tally::default();
        let mut sent = None;
        let mut drained_by = None;
        loop {
            self.engine_alive().await?;
            if publisher.as_ref().is_some_and(JoinHandle::is_finished) {
                let done = publisher.take().expect("checked above").await??;
                sent = Some(done);
                drained_by = Some(Instant::now() + plan.drain);
            }
            if sent.is_some() && pending.lock().expect("pending lock").is_empty() {
                break;
            }
            if drained_by.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(50), self.decisions.recv()).await {
                Ok(Some((d, at))) => {
                    let sent_at = pending.lock().expect("pending lock").remove(&d.request_id);
                    if let Some((sent_at, genuine)) = sent_at {
                        let latency = at.saturating_duration_since(sent_at);
                        tally.record(genuine, &Verdict::of(&d), latency, at);
                        progress.decided();
                        room.notify_one();
                    }
                }
                Ok(None) => bail!("the decisions tail stopped"),
                Err(_) => {}
            }
        }
        Ok(Verified {
            tally,
            sent: sent.unwrap_or_default(),
            started,
        })
    }

    /// Stops the tail and the in-process engine; removes its store.
    pub(crate) async fn finish(mut self) -> Result<()> {
        self.reader.abort();
        let Some(mut e) = self.engine.take() else {
            return Ok(());
        };
        e.token.cancel();
        let result = match e.task.take() {
            Some(task) => task
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r.map_err(anyhow::Error::from)),
            None => Ok(()),
        };
        let _ = std::fs::remove_file(&e.store);
        result
    }
}
