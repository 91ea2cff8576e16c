//! What the watch caches publish, and what the request path and the reconciler read: one
//! consistent [`ClusterState`] plus the history the stale cleanup needs (SPEC §10.5, §10.8).
//!
//! The caches (the only readers of the API) build a new snapshot when they change and publish it
//! whole; readers take an `Arc` and never lock or wait for the API.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::reconcile::Absence;
use super::state::ClusterState;

/// The cluster as the caches know it at one moment.
#[derive(Clone, Debug)]
pub struct ClusterSnapshot {
    pub state: ClusterState,
    /// Namespaces seen deleted since the watches started, and when they went.
    pub gone_since: BTreeMap<String, Instant>,
    /// When the Namespace watch first listed: a namespace never seen has been gone at least since then.
    pub watching_since: Instant,
}

impl ClusterSnapshot {
    /// How long namespaces have been gone at `now`, for the stale cleanup (`--stale-grace`).
    pub fn absence(&self, grace: Duration, now: Instant) -> Absence {
        Absence {
            grace,
            gone_for: self
                .gone_since
                .iter()
                .map(|(namespace, since)| (namespace.clone(), now.saturating_duration_since(*since)))
                .collect(),
            watched_for: Some(now.saturating_duration_since(self.watching_since)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absence_counts_from_deletion_or_from_the_first_list() {
        let start = Instant::now();
        let snapshot = ClusterSnapshot {
            state: ClusterState::empty(),
            gone_since: BTreeMap::from([("cindy".to_string(), start + Duration::from_secs(50))]),
            watching_since: start,
        };
        let absence = snapshot.absence(Duration::from_secs(60), start + Duration::from_secs(100));
        assert!(!absence.past_grace("cindy"), "gone 50 s");
        assert!(absence.past_grace("never-seen"), "watched 100 s");
        let absence = snapshot.absence(Duration::from_secs(60), start + Duration::from_secs(110));
        assert!(absence.past_grace("cindy"), "gone 60 s");
    }
}
