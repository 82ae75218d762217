//! The HTTP target: the native API (`/create-profile`, `/v1/consent`,
//! `/enroll`, `/v1/voice/verify`), one request per job; a `202` is polled at
//! `/v1/decisions/{id}` until the drain timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt;
use reqwest::multipart::{Form, Part};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::corpus::{Clips, Corpus};
use crate::mix::{Claimant, Mix};
use crate::report::{NotEnrolled, Progress, Tally, Verdict};
use crate::{Enrolled, Plan, Verified, user_id};

/// What became of one request.
enum Reply {
    /// A decision (the `200` body, or the polled decision).
    Decided(Value),
    /// An error body's stable code (`http_<status>` without one), and its retry hint.
    Refused(String, Option<u64>),
    /// No decision within the drain timeout.
    Missing,
}

/// A client of one API deployment.
#[derive(Clone)]
pub(crate) struct HttpTarget {
    base: String,
    key: String,
    client: reqwest::Client,
    plan: Plan,
}

/// The outcome of one speaker's setup.
enum SpeakerSetup {
    Enrolled(Claimant, u64),
    NotEnrolled(NotEnrolled),
}

impl HttpTarget {
    /// A client of `base` (`http://host:port`) with `key`.
    pub(crate) fn new(base: String, key: String, plan: Plan) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(plan.drain)
            .pool_max_idle_per_host(plan.concurrency)
            .build()?;
        Ok(Self {
            base,
            key,
            client,
            plan,
        })
    }

    fn post(&self, path: &str, id: &str) -> RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .header("x-api-key", &self.key)
            .header("idempotency-key", id)
    }

    /// Sends a job (built again by `build` if a setup call is retried) and
    /// follows a `202` until the decision or `deadline`.
    async fn call(&self, id: &str, build: RequestBuilder, deadline: Instant) -> Reply {
        let response = match build.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Reply::Missing,
            Err(_) => return Reply::Refused("http_transport".into(), None),
        };
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == StatusCode::ACCEPTED {
            return self.poll(id, deadline).await;
        }
        if status.is_success() {
            return Reply::Decided(body);
        }
        let code = body["error"]
            .as_str()
            .map_or_else(|| format!("http_{}", status.as_u16()), str::to_string);
        Reply::Refused(code, body["retryAfterMs"].as_u64())
    }

    async fn poll(&self, id: &str, deadline: Instant) -> Reply {
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let response = self
                .client
                .get(format!("{}/v1/decisions/{id}", self.base))
                .header("x-api-key", &self.key)
                .send()
                .await;
            let Ok(response) = response else { continue };
            if response.status() == StatusCode::OK {
                return Reply::Decided(response.json().await.unwrap_or(Value::Null));
            }
        }
        Reply::Missing
    }

    /// A setup call: retried while rate-limited, an unknown key is fatal.
    async fn setup_call(
        &self,
        id: &str,
        build: impl Fn() -> Result<RequestBuilder>,
        deadline: Instant,
    ) -> Result<Reply> {
        loop {
            match self.call(id, build()?, deadline).await {
                Reply::Refused(code, _) if code == "unauthorized" => {
                    bail!("the API refused the key (401 unauthorized)")
                }
                Reply::Refused(code, wait) if code == "rate_limited" => {
                    let wait = Duration::from_millis(wait.unwrap_or(1000).max(50));
                    if Instant::now() + wait >= deadline {
                        return Ok(Reply::Refused(code, None));
                    }
                    tokio::time::sleep(wait).await;
                }
                other => return Ok(other),
            }
        }
    }

    /// Profile, consent, then enrollment samples until `ENROLLED`, for one speaker.
    async fn setup_speaker(
        &self,
        corpus: &Corpus,
        speaker: usize,
        run_id: &str,
        progress: &Progress,
    ) -> Result<SpeakerSetup> {
        let label = corpus.speakers[speaker].label.clone();
        let user = user_id(run_id, &label);
        let mut not = NotEnrolled {
            speaker: label,
            samples: 0,
            speech_millis: 0,
            last: String::new(),
        };
        let deadline = || Instant::now() + self.plan.drain;
        let refused = |reply: &Reply| match reply {
            Reply::Decided(_) => None,
            Reply::Refused(code, _) => Some(code.clone()),
            Reply::Missing => Some("undecided".into()),
        };
        let steps = [
            ("/create-profile", "p", json!({"user_id": user})),
            (
                "/v1/consent",
                "c",
                json!({"user_id": user, "granted": true, "retain_audio": false}),
            ),
        ];
        for (path, tag, body) in steps {
            let id = format!("{run_id}-{tag}{speaker}");
            let reply = self
                .setup_call(&id, || Ok(self.post(path, &id).json(&body)), deadline())
                .await?;
            if let Some(code) = refused(&reply) {
                not.last = format!("{path} {code}");
                return Ok(SpeakerSetup::NotEnrolled(not));
            }
        }
        let utterances = &corpus.speakers[speaker].utterances;
        for k in 0..utterances.len() - 1 {
            let id = format!("{run_id}-e{speaker}-{k}");
            let audio = corpus.read(utterances[k])?;
            let build = || {
                let form = Form::new().text("user_id", user.clone()).part(
                    "audio",
                    Part::bytes(audio.clone())
                        .file_name("enroll.wav")
                        .mime_str("audio/wav")?,
                );
                Ok(self.post("/enroll", &id).multipart(form))
            };
            progress.sent();
            let reply = self.setup_call(&id, build, deadline()).await?;
            progress.decided();
            not.samples += 1;
            match reply {
                Reply::Decided(body) => {
                    not.speech_millis += body["speech_millis"].as_i64().unwrap_or(0);
                    let status = body["status"].as_str().unwrap_or_default();
                    not.last = body["reason"].as_str().unwrap_or(status).to_string();
                    if status == "ENROLLED" {
                        let claimant = Claimant {
                            user_id: user,
                            speaker,
                            held_out: utterances[k + 1..].to_vec(),
                        };
                        return Ok(SpeakerSetup::Enrolled(claimant, not.samples));
                    }
                }
                other => not.last = refused(&other).unwrap_or_default(),
            }
        }
        Ok(SpeakerSetup::NotEnrolled(not))
    }

    /// Sets up every candidate, `--concurrency` speakers at a time.
    pub(crate) async fn enroll(
        &self,
        corpus: &Corpus,
        candidates: &[usize],
        run_id: &str,
        progress: &Progress,
    ) -> Result<Enrolled> {
        progress.phase("enroll");
        let results: Vec<Result<SpeakerSetup>> = futures::stream::iter(candidates)
            .map(|&s| self.setup_speaker(corpus, s, run_id, progress))
            .buffered(self.plan.concurrency)
            .collect()
            .await;
        let mut out = Enrolled {
            claimants: Vec::new(),
            not_enrolled: Vec::new(),
            samples: 0,
        };
        for r in results {
            match r? {
                SpeakerSetup::Enrolled(c, samples) => {
                    out.samples += samples;
                    out.claimants.push(c);
                }
                SpeakerSetup::NotEnrolled(n) => {
                    out.samples += n.samples;
                    out.not_enrolled.push(n);
                }
            }
        }
        Ok(out)
    }

    /// One verification request; its verdict, or `None` when undecided.
    async fn verify_one(&self, id: String, user: String, audio: Arc<Vec<u8>>) -> Option<Verdict> {
        let part = Part::bytes(audio.to_vec())
            .file_name("verify.wav")
            .mime_str("audio/wav")
            .expect("a valid mime type");
        let form = Form::new().text("user_id", user).part("audio", part);
        let build = self.post("/v1/voice/verify", &id).multipart(form);
        match self
            .call(&id, build, Instant::now() + self.plan.drain)
            .await
        {
            Reply::Decided(body) => Some(Verdict::from_api(
                body["decision"].as_str().unwrap_or_default(),
                body["error"].as_str(),
            )),
            Reply::Refused(code, _) => Some(Verdict::Error(code)),
            Reply::Missing => None,
        }
    }

    /// Sends the verification mix per `plan`: at a fixed rate (latency from
    /// each request's due time, so a saturated client shows as latency), or
    /// back to back on `--concurrency` connections.
    pub(crate) async fn verify(
        &self,
        mut mix: Mix,
        mut clips: Clips,
        run_id: &str,
        plan: Plan,
        progress: &Arc<Progress>,
    ) -> Result<Verified> {
        progress.phase("verify");
        let slots = Arc::new(Semaphore::new(plan.concurrency));
        let (tx, mut rx) = mpsc::unbounded_channel::<(bool, Option<Verdict>, Instant, Instant)>();
        let claimants = mix.claimants().clone();
        let started = Instant::now();
        let mut sent = 0u64;
        loop {
            let due = plan.due(sent);
            if plan.done(sent, due.unwrap_or_else(|| started.elapsed())) {
                break;
            }
            if let Some(due) = due {
                tokio::time::sleep_until((started + due).into()).await;
            }
            let slot = slots.clone().acquire_owned().await?;
            let at = due.map_or_else(Instant::now, |d| started + d);
            let a = mix.next().expect("the mix is endless");
            let audio = clips.get(a.utterance)?;
            let (this, tx, progress) = (self.clone(), tx.clone(), progress.clone());
            let (id, user) = (
                format!("{run_id}-v{sent}"),
                claimants[a.claimant].user_id.clone(),
            );
            progress.sent();
            tokio::spawn(async move {
                let verdict = this.verify_one(id, user, audio).await;
                drop(slot);
                progress.decided();
                let _ = tx.send((a.genuine, verdict, at, Instant::now()));
            });
            sent += 1;
        }
        drop(tx);
        let mut tally = Tally::default();
        while let Some((genuine, verdict, at, done)) = rx.recv().await {
            if let Some(v) = verdict {
                tally.record(genuine, &v, done.saturating_duration_since(at), done);
            }
        }
        Ok(Verified {
            tally,
            sent,
            started,
        })
    }
}
