//! Which offsets may be committed: jobs of one partition finish out of order
//! (different users run on different lanes), but a partition's committed
//! offset may only move past a contiguous prefix of finished jobs.

use std::collections::{BTreeSet, HashMap};

#[derive(Default)]
struct PartitionState {
    in_flight: BTreeSet<i64>,
    highest_seen: Option<i64>,
    committed: Option<i64>,
}

/// Tracks in-flight offsets per `(topic, partition)`.
#[derive(Default)]
pub struct OffsetTracker {
    partitions: HashMap<(String, i32), PartitionState>,
}

impl OffsetTracker {
    /// Records that a job at `offset` was read.
    pub fn start(&mut self, topic: &str, partition: i32, offset: i64) {
        let p = self
            .partitions
            .entry((topic.to_string(), partition))
            .or_default();
        // The first offset read is where the group already stands.
        p.committed.get_or_insert(offset);
        p.in_flight.insert(offset);
        p.highest_seen = Some(p.highest_seen.map_or(offset, |h| h.max(offset)));
    }

    /// Records that the job at `offset` is done; returns the new offset to
    /// commit (the next one to read) when it advanced.
    pub fn finish(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&(topic.to_string(), partition))?;
        p.in_flight.remove(&offset);
        let next = match p.in_flight.first() {
            Some(lowest) => *lowest,
            None => p.highest_seen? + 1,
        };
        if p.committed.is_some_and(|c| c >= next) {
            return None;
        }
        p.committed = Some(next);
        Some(next)
    }

    /// Stops tracking a partition this member lost: finishes of its
    /// in-flight jobs are ignored, and a new assignment starts afresh.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_string(), partition));
    }

    /// Jobs read and not finished.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.in_flight.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_past_a_contiguous_finished_prefix() {
        let mut t = OffsetTracker::default();
        for o in 10..14 {
            t.start("jobs", 0, o);
        }
        assert_eq!(t.finish("jobs", 0, 12), None, "10 and 11 still running");
        assert_eq!(t.finish("jobs", 0, 10), Some(11));
        assert_eq!(t.finish("jobs", 0, 11), Some(13), "12 was already done");
        assert_eq!(t.finish("jobs", 0, 13), Some(14));
        assert_eq!(t.in_flight(), 0);
        t.start("jobs", 1, 0);
        assert_eq!(
            t.finish("jobs", 1, 0),
            Some(1),
            "partitions are independent"
        );
        t.start("jobs", 2, 5);
        t.forget("jobs", 2);
        assert_eq!(
            t.finish("jobs", 2, 5),
            None,
            "a revoked partition commits nothing"
        );
        t.start("jobs", 2, 3);
        assert_eq!(
            t.finish("jobs", 2, 3),
            Some(4),
            "reassigned: tracked afresh"
        );
    }
}
