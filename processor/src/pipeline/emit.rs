//! The one way out of a job: dead letter (for bad input), commit of state
//! and decision, publication of the decision, metrics, log. Decided jobs,
//! refusals and undecodable messages all leave through [`Processor::emit`];
//! a redelivered job republishes its stored decision through
//! [`Processor::replay`].

use sha2::{Digest, Sha256};
use timbre_schemas::{
    Code, Contract, DeadLetter, Decision, DecisionKind, JobKind, PayloadKept, Request,
};

use super::Processor;
use super::job::ProcessError;
use crate::domain::{JobCommit, Mutation, Outcome, now_ms};
use crate::ports::Message;

/// A dead letter of a message that did not decode keeps at most this many
/// leading bytes: enough to see the framing and the ids, too little to hold
/// a voice, and always far below the topic's message size limit.
const UNDECODED_PREFIX: usize = 4096;

/// A decision on its way out.
pub(super) struct Emission<'a> {
    message: &'a Message,
    /// The decoded job, when the message decoded.
    request: Option<&'a Request>,
    /// Key of the decision message (`tenant/user_id` when known).
    key: Vec<u8>,
    decision: Decision,
    /// State to write with the decision; `None` publishes without storing
    /// (a message that never became a job, a request id owned by another job).
    commit: Option<JobCommit>,
    /// `(code, detail)` for the dead-letter topic.
    dead_letter: Option<(Code, String)>,
}

impl<'a> Emission<'a> {
    /// The decision of a decoded job, committed with the outcome's mutations;
    /// it carries the job's digest so it answers only that job.
    pub(super) fn decided(
        message: &'a Message,
        request: &'a Request,
        digest: &str,
        outcome: Outcome,
    ) -> Self {
        let mut decision = outcome.decision(request, now_ms());
        decision.request_digest = Some(digest.to_string());
        let dead_letter = outcome
            .error
            .as_ref()
            .filter(|e| e.dead_letter)
            .map(|e| (e.code, e.message.clone()));
        let mut mutations = outcome.mutations;
        // Re-scoring is background work, not something the user did; a job
        // for a user nobody created lists nothing (made-up ids would
        // grow the index).
        let listed = !decision.user_id.is_empty()
            && !matches!(request, Request::Rescore(_))
            && !decision.has_reason(Code::ProfileNotFound)
            && decision.error_code.as_deref() != Some(Code::ProfileNotFound.as_str());
        if listed {
            mutations.push(Mutation::IndexDecision {
                user_id: decision.user_id.clone(),
                at: decision.processed_at,
            });
        }
        Self {
            message,
            request: Some(request),
            key: request.message_key().into_bytes(),
            decision,
            commit: Some(JobCommit {
                tenant: request.tenant().into(),
                request_id: request.request_id().into(),
                decision: Vec::new(),
                mutations,
            }),
            dead_letter,
        }
    }

    /// Publishes without storing anything.
    pub(super) fn without_commit(mut self) -> Self {
        self.commit = None;
        self
    }
}

impl Processor {
    /// Dead letter, commit, publish, count.
    pub(super) async fn emit(&self, emission: Emission<'_>) -> Result<(), ProcessError> {
        let Emission {
            message,
            request,
            key,
            decision,
            commit,
            dead_letter,
        } = emission;
        let bytes = self.registry.encode(&decision)?;
        if let Some((code, detail)) = &dead_letter {
            let tenant = Some(decision.tenant.as_str()).filter(|t| !t.is_empty());
            self.dead_letter(
                message,
                request,
                &decision.request_id,
                tenant,
                *code,
                detail,
            )
            .await?;
        }
        if let Some(mut commit) = commit {
            commit.decision = bytes.clone();
            self.store.commit(&commit).await?;
        }
        self.bus
            .publish(&self.topics.decisions, &key, &bytes)
            .await?;
        self.count(&decision);
        tracing::info!(
            request_id = %decision.request_id,
            decision = ?decision.decision,
            code = decision.error_code.as_deref().unwrap_or(""),
            "job decided"
        );
        Ok(())
    }

    /// Republishes the stored decision of a redelivered job.
    pub(super) async fn replay(
        &self,
        request: &Request,
        stored: &[u8],
    ) -> Result<(), ProcessError> {
        self.bus
            .publish(
                &self.topics.decisions,
                request.message_key().as_bytes(),
                stored,
            )
            .await?;
        Ok(())
    }

    /// An event that does not decode or validate: an error decision addressed
    /// with whatever ids could be read, plus the original bytes in the
    /// dead-letter topic.
    pub(super) async fn reject_undecodable(
        &self,
        message: &Message,
        code: Code,
        detail: &str,
    ) -> Result<(), ProcessError> {
        let envelope = self.registry.peek_envelope(&message.payload).ok();
        let envelope = envelope.as_ref();
        // Only ids the limits allow are echoed: the event may have failed on
        // exactly these, and a decision carrying megabytes of id would be
        // refused by the decisions topic and retried for ever.
        let usable = |id: &Option<String>| id.clone().filter(|s| self.limits.allows_id(s));
        let request_id = envelope
            .and_then(|e| usable(&e.request_id))
            .unwrap_or_else(|| {
                DeadLetter::position_id(&message.topic, message.partition, message.offset)
            });
        let job = envelope
            .and_then(|e| JobKind::of(e.kind))
            .or_else(|| self.topics.job_of(&message.topic))
            .unwrap_or(JobKind::Verification);
        let now = now_ms();
        let mut decision = Decision::new(
            request_id.clone(),
            envelope.and_then(|e| usable(&e.tenant)).unwrap_or_default(),
            envelope
                .and_then(|e| usable(&e.user_id))
                .unwrap_or_default(),
            job,
            DecisionKind::Error,
            now,
            now,
        );
        decision.set_error(code, detail);
        let key = self
            .bounded_key(message)
            .unwrap_or_else(|| request_id.clone().into_bytes());
        tracing::info!(request_id = %request_id, %code, "undecodable job dead-lettered");
        self.emit(Emission {
            message,
            request: None,
            key,
            decision,
            commit: None,
            dead_letter: Some((code, detail.to_string())),
        })
        .await
    }

    /// What a dead letter keeps of `message`: a decoded audio job without
    /// its audio (unless its tenant keeps audio for diagnosis), a decoded job
    /// without audio whole, and of a message that did not decode, a prefix.
    fn kept_payload(
        &self,
        message: &Message,
        request: Option<&Request>,
    ) -> Result<(Vec<u8>, PayloadKept), ProcessError> {
        let Some(request) = request else {
            return Ok(if message.payload.len() <= UNDECODED_PREFIX {
                (message.payload.clone(), PayloadKept::Whole)
            } else {
                (
                    message.payload[..UNDECODED_PREFIX].to_vec(),
                    PayloadKept::Prefix,
                )
            });
        };
        let keeps_audio = self.policies.for_tenant(request.tenant()).dead_letter_audio;
        match request.without_audio() {
            Some(redacted) if !keeps_audio => Ok((
                self.registry.encode_request(&redacted)?,
                PayloadKept::WithoutAudio,
            )),
            _ => Ok((message.payload.clone(), PayloadKept::Whole)),
        }
    }

    async fn dead_letter(
        &self,
        message: &Message,
        request: Option<&Request>,
        request_id: &str,
        tenant: Option<&str>,
        code: Code,
        reason: &str,
    ) -> Result<(), ProcessError> {
        let (payload, kept) = self.kept_payload(message, request)?;
        let record = DeadLetter {
            request_id: request_id.to_string(),
            tenant: tenant.map(str::to_string),
            source_topic: message.topic.clone(),
            partition: message.partition,
            offset: message.offset,
            key: self.bounded_key(message),
            payload,
            error_code: code.as_str().into(),
            error_message: reason.chars().take(1000).collect(),
            occurred_at: now_ms(),
            schema_version: DeadLetter::CURRENT_VERSION,
            payload_sha256: Some(hex::encode(Sha256::digest(&message.payload))),
            payload_size: Some(message.payload.len() as i64),
            payload_kept: kept.as_str().into(),
        };
        let bytes = self.registry.encode(&record)?;
        let key = DeadLetter::position_id(&message.topic, message.partition, message.offset);
        self.bus
            .publish(&self.topics.dead_letter, key.as_bytes(), &bytes)
            .await?;
        self.metrics
            .dead_letters
            .with_label_values(&[code.as_str()])
            .inc();
        Ok(())
    }

    /// The message's key when it could be a `tenant/user_id` key (within
    /// the limits of two ids); a longer one is not carried on.
    fn bounded_key(&self, message: &Message) -> Option<Vec<u8>> {
        message
            .key
            .clone()
            .filter(|k| k.len() <= 2 * self.limits.max_id_bytes + 1)
    }

    fn count(&self, d: &Decision) {
        let job = format!("{:?}", d.job).to_lowercase();
        let decision = format!("{:?}", d.decision).to_lowercase();
        self.metrics
            .decisions
            .with_label_values(&[job.as_str(), decision.as_str()])
            .inc();
    }
}
