//! The topic catalogue (`topics/catalogue.toml`, compiled in) and the names
//! the pipeline uses.

use serde::Deserialize;
use timbre_schemas::JobKind;

use crate::ports::TopicSpec;

const CATALOGUE: &str = include_str!("../../topics/catalogue.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Catalogue {
    topic: Vec<TopicSpec>,
}

/// Topic names, after the deployment prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicNames {
    /// EnrollmentRequested jobs.
    pub enrollment: String,
    /// VerificationRequested jobs.
    pub verification: String,
    /// ConsentChanged jobs.
    pub consent: String,
    /// ProfileCommand jobs.
    pub profile: String,
    /// Decisions (one per job).
    pub decisions: String,
    /// RescoreRequested jobs.
    pub rescore: String,
    /// Dead letters.
    pub dead_letter: String,
}

impl TopicNames {
    /// Names with `prefix` prepended (empty for none).
    pub fn with_prefix(prefix: &str) -> Self {
        let n = |s: &str| format!("{prefix}timbre.{s}");
        Self {
            enrollment: n("enrollment"),
            verification: n("verification"),
            consent: n("consent"),
            profile: n("profile"),
            decisions: n("decisions"),
            rescore: n("rescore"),
            dead_letter: n("dead-letter"),
        }
    }

    /// The routing table: the topic that carries each kind of job.
    pub fn for_job(&self, job: JobKind) -> &str {
        match job {
            JobKind::Enrollment => &self.enrollment,
            JobKind::Verification => &self.verification,
            JobKind::Consent => &self.consent,
            JobKind::Profile => &self.profile,
            JobKind::Rescore => &self.rescore,
        }
    }

    /// The kind of job a request topic carries (the routing table read
    /// backwards); `None` for other topics.
    pub fn job_of(&self, topic: &str) -> Option<JobKind> {
        JobKind::ALL
            .into_iter()
            .find(|&job| self.for_job(job) == topic)
    }

    /// The request topics the processor consumes.
    pub fn requests(&self) -> Vec<String> {
        JobKind::ALL
            .into_iter()
            .map(|job| self.for_job(job).to_string())
            .collect()
    }
}

/// The catalogue, with names prefixed and replication capped at `max_replication`.
pub fn catalogue(prefix: &str, max_replication: Option<i16>) -> Vec<TopicSpec> {
    let parsed: Catalogue =
        toml::from_str(CATALOGUE).expect("the bundled catalogue parses (tested)");
    parsed
        .topic
        .into_iter()
        .map(|mut t| {
            t.name = format!("{prefix}{}", t.name);
            if let Some(max) = max_replication {
                t.replication = t.replication.min(max);
            }
            t
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routing_table_round_trips() {
        let names = TopicNames::with_prefix("x.");
        for job in JobKind::ALL {
            assert_eq!(names.job_of(names.for_job(job)), Some(job));
        }
        assert_eq!(names.job_of(&names.decisions), None);
        assert_eq!(names.requests().len(), JobKind::ALL.len());
    }

    #[test]
    fn catalogue_declares_every_topic_the_pipeline_uses() {
        let specs = catalogue("x.", Some(1));
        let names = TopicNames::with_prefix("x.");
        for name in names
            .requests()
            .iter()
            .chain([&names.decisions, &names.dead_letter])
        {
            let spec = specs
                .iter()
                .find(|s| &s.name == name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert!(spec.partitions > 0 && spec.replication == 1 && spec.retention_ms > 0);
            assert!(["delete", "compact"].contains(&spec.cleanup_policy.as_str()));
        }
        assert_eq!(specs.len(), 7);
    }
}
