//! The reconcile loop (SPEC §10.2–§10.7, §11.1–§11.3): plans from the caches' snapshots with the
//! pure [`reconcile::plan`] (annotations) and [`http_routes::plan`] (the developer routes and
//! ReferenceGrants the webhook owns) and hands each change to the [`Writer`], while this replica
//! holds the Lease. Developer routes are created in the plan's order, oldest shared route first
//! (ties between developer routes go by creation time). A developer route whose shared route is
//! gone is deleted by the plan, whether or not the garbage collector was first.
//!
//! When it plans:
//! - on every new snapshot (the watch channel keeps only the newest: bursts of changes coalesce);
//! - when the earliest stale grace (`--stale-grace`) of a namespace gone expires, since that needs
//!   time to pass, not a new snapshot;
//! - every `--resync-interval` (5 min) in full: a deletion during a watch outage leaves no event,
//!   only an absence in the next list.
//!
//! A newer snapshot arriving while a plan is being written stops that plan: the rest is planned
//! again from the newer one. An object written in the last 2 s whose write the snapshot does not
//! show yet is not written twice (also when the round that wrote it had ended: the next one may
//! start from a snapshot built just before the write); it is looked at again 2 s later. A plan
//! with nothing to change writes nothing.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use serde_json::Value;
use tokio::sync::watch;

use super::ClusterSnapshot;
use super::http_routes::{self, OwnedChange};
use super::lease::{Elector, Leadership, LeaseConfig};
use super::reconcile::{self, Absence, ObjectChanges};
use super::state::ClusterState;
use super::writer::{ReconcilerMetrics, WriteOutcome, Writer};
use crate::server::parse_duration;
use crate::settings::{Driver, Settings};

/// The snapshots the watch caches publish: `None` until every cache has listed once.
pub type Snapshots = watch::Receiver<Option<Arc<ClusterSnapshot>>>;

/// How long after a round that skipped objects (written, not yet seen in a snapshot) the
/// reconciler looks again, in case one was changed back meanwhile.
const RECHECK_AFTER_SKIPS: Duration = Duration::from_secs(2);

/// The reconciler's flags of `serve`.
#[derive(clap::Args, Clone, Debug)]
pub struct ReconcilerArgs {
    /// Remove a divert entry naming a namespace only once the namespace has been gone this long.
    #[arg(long, env = "DIVERT_WEBHOOK_STALE_GRACE", default_value = "60s", value_parser = parse_duration)]
    pub stale_grace: Duration,
    /// How often the reconciler plans in full even without changes (deletions missed while a watch was down).
    #[arg(long, env = "DIVERT_WEBHOOK_RESYNC_INTERVAL", default_value = "5m", value_parser = parse_resync_interval)]
    pub resync_interval: Duration,
    /// Write no annotations: admission stays cluster-aware, the reconciler does not run.
    #[arg(long, env = "DIVERT_WEBHOOK_NO_RECONCILE")]
    pub no_reconcile: bool,
    /// Reconcile without holding the Lease divert-webhook (only for a single replica).
    #[arg(long, env = "DIVERT_WEBHOOK_NO_LEADER_ELECTION")]
    pub no_leader_election: bool,
}

/// A duration above zero: a zero resync would plan in a busy loop.
fn parse_resync_interval(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        interval if interval.is_zero() => Err("the resync interval must be above 0 (e.g. 5m)".to_string()),
        interval => Ok(interval),
    }
}

/// What [`run`] needs besides the client and the snapshots.
#[derive(Clone, Debug)]
pub struct ReconcilerConfig {
    pub stale_grace: Duration,
    pub resync_interval: Duration,
    /// `None`: no leader election, this replica always reconciles.
    pub lease: Option<LeaseConfig>,
}

impl ReconcilerArgs {
    /// The reconciler's configuration; `Ok(None)` with `--no-reconcile`. `own_namespace` is the
    /// webhook's namespace as the settings read it (`--namespace`, `$POD_NAMESPACE`).
    pub fn config(&self, own_namespace: Option<&str>) -> Result<Option<ReconcilerConfig>, String> {
        if self.no_reconcile {
            return Ok(None);
        }
        let lease = if self.no_leader_election { None } else { Some(LeaseConfig::from_environment(own_namespace)?) };
        Ok(Some(ReconcilerConfig { stale_grace: self.stale_grace, resync_interval: self.resync_interval, lease }))
    }
}

/// Runs the reconciler until `shutdown` completes: takes part in the leader election and, while
/// this replica holds the Lease, reconciles every snapshot. On shutdown writes stop and the
/// Lease is freed.
pub async fn run(
    client: Client,
    snapshots: Snapshots,
    settings: Arc<Settings>,
    config: ReconcilerConfig,
    metrics: ReconcilerMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let (mut elector, leadership) = match config.lease.clone() {
        Some(lease) => {
            let (elector, leadership) = Elector::new(client.clone(), lease, metrics.clone());
            (Some(elector), leadership)
        }
        None => (None, Leadership::always()),
    };
    let writer = Writer::new(client, metrics, leadership.clone());
    let elect = async {
        match elector.as_mut() {
            Some(elector) => elector.run().await,
            None => std::future::pending().await,
        }
    };
    let reconcile = async {
        while leadership.acquired().await {
            tokio::select! {
                () = reconcile_while_held(&writer, snapshots.clone(), &settings, &config) => return,
                () = leadership.lost() => tracing::warn!("the Lease is lost: reconciling stopped"),
            }
        }
    };
    tokio::select! {
        () = shutdown => {}
        () = elect => {}
        () = reconcile => {}
    }
    if let Some(elector) = elector.as_mut() {
        elector.release().await;
    }
}

/// Reconciles every snapshot, and on the timers, until the snapshots' sender goes away. The
/// caller cancels it when the Lease is lost (the writer also checks before every request).
pub async fn reconcile_while_held(
    writer: &Writer,
    mut snapshots: Snapshots,
    settings: &Settings,
    config: &ReconcilerConfig,
) {
    let mut next_resync = tokio::time::Instant::now() + config.resync_interval;
    let mut problems = Problems::default();
    let mut recent_writes = Vec::new();
    loop {
        let latest = snapshots.borrow_and_update().clone();
        let wake = match latest {
            None => None,
            Some(snapshot) => {
                let round = round(
                    writer,
                    &mut snapshots,
                    snapshot,
                    settings,
                    config.stale_grace,
                    &mut problems,
                    &mut recent_writes,
                )
                .await;
                if round.stopped {
                    // Lost the Lease: the caller cancels this; wait for it.
                    std::future::pending::<()>().await;
                }
                let stale = next_stale_deadline(&round.snapshot, config.stale_grace, Instant::now())
                    .map(tokio::time::Instant::from_std);
                let recheck = round.skipped.then(|| tokio::time::Instant::now() + RECHECK_AFTER_SKIPS);
                Some([Some(next_resync), stale, recheck].into_iter().flatten().min().unwrap_or(next_resync))
            }
        };
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() {
                return;
            },
            () = sleep_until(wake) => {}
        }
        let now = tokio::time::Instant::now();
        if now >= next_resync {
            next_resync = now + config.resync_interval;
        }
    }
}

async fn sleep_until(wake: Option<tokio::time::Instant>) {
    match wake {
        Some(wake) => tokio::time::sleep_until(wake).await,
        None => std::future::pending().await,
    }
}

struct Round {
    /// The snapshot the round ended with.
    snapshot: Arc<ClusterSnapshot>,
    /// Objects written recently (this round or in the last 2 s) were planned again unchanged and
    /// not written twice.
    skipped: bool,
    /// The Lease was lost.
    stopped: bool,
}

/// The routes and grants the last plan could not make, so that each is logged once, when it
/// first shows, rather than at every snapshot.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn report(&mut self, now: Vec<String>, writer: &Writer) {
        for problem in now.iter().filter(|p| !self.0.contains(p)) {
            tracing::warn!("the reconciler cannot make what a developer needs: {problem}");
        }
        writer.metrics().set_route_problems(now.len());
        self.0 = now;
    }
}

/// Plans from `snapshot` and writes the plan; a newer snapshot meanwhile replaces the rest of it.
/// `recent_writes` (kept across rounds) holds what was written and when.
async fn round(
    writer: &Writer,
    snapshots: &mut Snapshots,
    mut snapshot: Arc<ClusterSnapshot>,
    settings: &Settings,
    grace: Duration,
    problems: &mut Problems,
    recent_writes: &mut Vec<(ObjectChanges, tokio::time::Instant)>,
) -> Round {
    let mut written: Vec<ObjectChanges> = Vec::new();
    let mut written_owned: Vec<OwnedChange> = Vec::new();
    let mut skipped = false;
    recent_writes.retain(|(_, at)| at.elapsed() < RECHECK_AFTER_SKIPS);
    'plan: loop {
        let absence = snapshot.absence(grace, Instant::now());
        let plan = reconcile::plan(&snapshot.state, settings, &absence);
        if !plan.is_empty() {
            tracing::info!(objects = plan.len(), "reconciling");
        }
        for changes in plan {
            if snapshots.has_changed().unwrap_or(false)
                && let Some(newer) = snapshots.borrow_and_update().clone()
            {
                snapshot = newer;
                continue 'plan;
            }
            if written.contains(&changes) || recent_writes.iter().any(|(recent, _)| *recent == changes) {
                skipped = true;
                continue;
            }
            let replan = |fresh: &Value| plan_object(&snapshot.state, settings, &absence, fresh);
            match writer.write(&changes, &replan).await {
                WriteOutcome::Stopped => return Round { snapshot, skipped, stopped: true },
                WriteOutcome::Written => {
                    recent_writes.push((changes.clone(), tokio::time::Instant::now()));
                    written.push(changes);
                }
                WriteOutcome::Unneeded | WriteOutcome::Failed => written.push(changes),
            }
        }
        // SPEC §11: the objects the webhook owns, in the plan's order.
        let routes = http_routes::plan(&snapshot.state, settings);
        problems.report(routes.problems, writer);
        if !routes.changes.is_empty() {
            tracing::info!(objects = routes.changes.len(), "reconciling developer routes and grants");
        }
        for change in routes.changes {
            if snapshots.has_changed().unwrap_or(false)
                && let Some(newer) = snapshots.borrow_and_update().clone()
            {
                snapshot = newer;
                continue 'plan;
            }
            if written_owned.iter().any(|done| done.same_write(&change)) {
                skipped = true;
                continue;
            }
            match writer.write_owned(&change).await {
                WriteOutcome::Stopped => return Round { snapshot, skipped, stopped: true },
                WriteOutcome::Written | WriteOutcome::Unneeded | WriteOutcome::Failed => written_owned.push(change),
            }
        }
        return Round { snapshot, skipped, stopped: false };
    }
}

/// The changes `fresh` (the object as just read from the API) needs in the cluster of `state`.
fn plan_object(state: &ClusterState, settings: &Settings, absence: &Absence, fresh: &Value) -> Option<ObjectChanges> {
    // Rare (after a conflict): the view is cloned rather than made borrowable.
    let mut single =
        ClusterState { view: state.view.clone(), terminating: state.terminating.clone(), ..ClusterState::default() };
    // Header annotations are also written on developers' HTTPRoutes (SPEC §11.4), under either driver.
    match (fresh.get("kind").and_then(Value::as_str), settings.driver) {
        (Some("HTTPRoute"), _) => single.http_routes.push(fresh.clone()),
        (_, Driver::Istio) => single.virtual_services.push(fresh.clone()),
        (_, Driver::Nginx) => single.ingresses.push(fresh.clone()),
    }
    reconcile::plan(&single, settings, absence).into_iter().next()
}

/// The first moment after `now` at which a namespace gone (or never seen) reaches the grace: a
/// stale entry naming it may then have to go, with no new snapshot to say so.
pub fn next_stale_deadline(snapshot: &ClusterSnapshot, grace: Duration, now: Instant) -> Option<Instant> {
    snapshot
        .gone_since
        .values()
        .chain(std::iter::once(&snapshot.watching_since))
        .map(|since| *since + grace)
        .filter(|deadline| *deadline > now)
        .min()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_next_stale_deadline_is_the_first_grace_still_to_expire() {
        let start = Instant::now();
        let snapshot = ClusterSnapshot {
            state: ClusterState::empty(),
            gone_since: BTreeMap::from([
                ("old".to_string(), start),
                ("new".to_string(), start + Duration::from_secs(30)),
            ]),
            watching_since: start,
        };
        let grace = Duration::from_secs(60);
        // Before any expires: the first to.
        assert_eq!(next_stale_deadline(&snapshot, grace, start + Duration::from_secs(10)), Some(start + grace));
        // Past `old` and the first list: `new`'s.
        let later = start + Duration::from_secs(70);
        assert_eq!(next_stale_deadline(&snapshot, grace, later), Some(start + Duration::from_secs(90)));
        assert_eq!(next_stale_deadline(&snapshot, grace, start + Duration::from_secs(90)), None);
    }

    #[test]
    fn a_zero_resync_interval_is_refused() {
        assert_eq!(parse_resync_interval("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_resync_interval("0s").unwrap_err().contains("above 0"));
    }
}
