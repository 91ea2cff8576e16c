//! One writer (SPEC §10.7): the coordination.k8s.io/v1 Lease `divert-webhook` in the webhook's
//! namespace. Every replica runs an [`Elector`]; only the one holding the Lease reconciles.
//!
//! A small loop of our own rather than kube-lease-manager (0.13 would fit kube 5 without a second
//! crypto provider): it lets go *by its own clock* — holding ends when the last successful renew
//! was sent one lease duration ago, even while a renew request hangs — and it is plain get /
//! create / replace with resourceVersion, which a faked API answers in a few lines.
//!
//! - The holder renews every `renew_interval` (5 s); the Lease lasts `duration` (15 s).
//! - Another replica takes over only when the Lease is free (no holder) or expired, where
//!   expired is judged as client-go does: the Lease record (holder, renewTime, resourceVersion)
//!   has not changed for a lease duration *as measured by the observer's own clock*, so clocks
//!   that disagree do not matter.
//! - A create or replace that loses the race (409) means someone else got it.
//! - On shutdown the holder stops writing, then frees the Lease so another replica takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use super::writer::ReconcilerMetrics;

/// The Lease's name (SPEC §10.7).
pub const LEASE_NAME: &str = "divert-webhook";

/// Where the in-cluster ServiceAccount mount says which namespace the pod runs in.
const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// What the elector publishes: not held, held until an instant (the last successful renew's
/// send time plus the Lease's duration), or held for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    No,
    Until(Instant),
    Always,
}

impl Held {
    fn now(self) -> bool {
        match self {
            Held::No => false,
            Held::Until(until) => Instant::now() < until,
            Held::Always => true,
        }
    }
}

/// Whether this replica holds the Lease now. Cheap to clone; the writer checks it before every
/// request. Held ends at the Lease's own deadline, read from the clock at each check: a renew
/// that fails while the reconciler plans (and the elector's task cannot run) stops the writes
/// all the same.
#[derive(Clone, Debug)]
pub struct Leadership(watch::Receiver<Held>);

impl Leadership {
    /// Held for good: leader election turned off (`--no-leader-election`).
    pub fn always() -> Leadership {
        Leadership(watch::channel(Held::Always).1)
    }

    pub fn is_held(&self) -> bool {
        self.0.borrow().now()
    }

    /// Completes once this replica holds the Lease; `false` if the elector is gone.
    pub async fn acquired(&self) -> bool {
        self.0.clone().wait_for(|held| held.now()).await.is_ok()
    }

    /// Completes once this replica does not hold the Lease: told so, or past the deadline of
    /// its last renew. Never, if it is held for good.
    pub async fn lost(&self) {
        let mut receiver = self.0.clone();
        loop {
            let held = *receiver.borrow_and_update();
            match held {
                Held::No => return,
                Held::Always => std::future::pending::<()>().await,
                Held::Until(until) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {
                            if *receiver.borrow() == held {
                                return;
                            }
                        }
                        changed = receiver.changed() => {
                            if changed.is_err() {
                                // The elector is gone: held no longer than its last deadline.
                                tokio::time::sleep_until(until).await;
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Which Lease, who this replica is, and the timing.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// The holder identity: the pod's name.
    pub identity: String,
    /// How long the Lease lasts without a renew.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew_interval: Duration,
    /// How often a replica that does not hold it (or failed to renew) tries again.
    pub retry_interval: Duration,
}

impl LeaseConfig {
    /// The Lease `divert-webhook` in `namespace`, held as `identity`: 15 s, renewed every 5 s.
    pub fn new(namespace: &str, identity: &str) -> LeaseConfig {
        LeaseConfig {
            namespace: namespace.to_string(),
            name: LEASE_NAME.to_string(),
            identity: identity.to_string(),
            duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(2),
        }
    }

    /// The namespace is `namespace` (`--namespace`, else `$POD_NAMESPACE`, as the settings read
    /// it), else the in-cluster ServiceAccount's namespace file; the identity is `$POD_NAME`,
    /// else `$HOSTNAME`, else /etc/hostname (a pod's hostname is its name).
    pub fn from_environment(namespace: Option<&str>) -> Result<LeaseConfig, String> {
        let non_empty = |s: String| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let namespace = namespace
            .map(str::to_string)
            .and_then(non_empty)
            .or_else(|| std::env::var("POD_NAMESPACE").ok().and_then(non_empty))
            .or_else(|| std::fs::read_to_string(NAMESPACE_FILE).ok().and_then(non_empty))
            .ok_or_else(|| {
                format!(
                    "the Lease {LEASE_NAME} needs the webhook's namespace: set --namespace or $POD_NAMESPACE (not running in a pod: {NAMESPACE_FILE} is missing), or pass --no-leader-election (one replica) or --no-reconcile"
                )
            })?;
        let identity = ["POD_NAME", "HOSTNAME"]
            .into_iter()
            .find_map(|var| std::env::var(var).ok().and_then(non_empty))
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok().and_then(non_empty))
            .ok_or_else(|| {
                format!(
                    "the Lease {LEASE_NAME} needs this replica's name: set $POD_NAME (the downward API's metadata.name)"
                )
            })?;
        Ok(LeaseConfig::new(&namespace, &identity))
    }
}

/// The Lease record as last seen, and when (by this replica's clock) it was first seen so.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    resource_version: Option<String>,
}

/// Takes, renews and frees the Lease for one replica; publishes whether it is held.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    metrics: ReconcilerMetrics,
    held: watch::Sender<Held>,
    observed: Option<(Record, Instant)>,
    /// While held: when it stops being held unless renewed (the last successful renew's send time
    /// plus the duration).
    held_until: Option<Instant>,
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig, metrics: ReconcilerMetrics) -> (Elector, Leadership) {
        let (held, leadership) = watch::channel(Held::No);
        let api = Api::namespaced(client, &config.namespace);
        (Elector { api, config, metrics, held, observed: None, held_until: None }, Leadership(leadership))
    }

    /// Tries to take or renew the Lease, for ever.
    pub async fn run(&mut self) {
        loop {
            let started = Instant::now();
            // A renew may take at most until the Lease would lapse; a try to take it, a duration.
            let deadline = self.held_until.unwrap_or(started + self.config.duration);
            let result = tokio::time::timeout_at(deadline, self.try_acquire_or_renew(started)).await;
            let next = match result {
                Ok(Ok(true)) => {
                    self.held_until = Some(started + self.config.duration);
                    self.set_held(self.held_until);
                    started + self.config.renew_interval
                }
                Ok(Ok(false)) => {
                    self.held_until = None;
                    self.set_held(None);
                    started + self.config.retry_interval
                }
                Ok(Err(error)) => {
                    tracing::warn!(lease = %self.describe(), %error, "cannot take or renew the Lease");
                    started + self.config.retry_interval
                }
                Err(_) => {
                    tracing::warn!(lease = %self.describe(), "the Lease's API request timed out");
                    Instant::now()
                }
            };
            let next = match self.held_until {
                Some(until) if until <= Instant::now() => {
                    tracing::warn!(lease = %self.describe(), "not renewed within its duration: writes stop");
                    self.held_until = None;
                    self.set_held(None);
                    next
                }
                Some(until) => next.min(until),
                None => next,
            };
            tokio::time::sleep_until(next).await;
        }
    }

    /// Stops holding (at once), then frees the Lease if it is still ours, so another replica
    /// need not wait for it to expire.
    pub async fn release(&mut self) {
        let was_held = *self.held.borrow() != Held::No;
        self.held_until = None;
        self.set_held(None);
        if !was_held {
            return;
        }
        let freed = async {
            let Some(mut lease) = self.api.get_opt(&self.config.name).await? else { return Ok(()) };
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.renew_time = Some(now());
            self.api.replace(&self.config.name, &PostParams::default(), &lease).await.map(|_| ())
        };
        match tokio::time::timeout(self.config.renew_interval, freed).await {
            Ok(Ok(())) => tracing::info!(lease = %self.describe(), "Lease freed"),
            Ok(Err(error)) => {
                tracing::warn!(lease = %self.describe(), %error, "cannot free the Lease; it expires by itself")
            }
            Err(_) => tracing::warn!(lease = %self.describe(), "freeing the Lease timed out; it expires by itself"),
        }
    }

    fn describe(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    /// Publishes the deadline of the holding (None: not held); logs and counts the changes
    /// between held and not.
    fn set_held(&self, until: Option<Instant>) {
        // As published, not by the clock: a holding that lapsed unrenewed is still a change.
        let was = *self.held.borrow() != Held::No;
        self.held.send_replace(until.map_or(Held::No, Held::Until));
        let held = until.is_some();
        if was != held {
            self.metrics.lease_held(held);
            if held {
                tracing::info!(lease = %self.describe(), identity = %self.config.identity, "holding the Lease: reconciling");
            } else {
                tracing::info!(lease = %self.describe(), identity = %self.config.identity, "not holding the Lease");
            }
        }
    }

    /// `Ok(true)` if this replica holds the Lease after the call.
    async fn try_acquire_or_renew(&mut self, now_instant: Instant) -> Result<bool, kube::Error> {
        let duration_seconds = i32::try_from(self.config.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return answer(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = Record {
            holder: holder.clone(),
            renew_time: spec.renew_time.clone(),
            resource_version: lease.metadata.resource_version.clone(),
        };
        let observed_at = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                self.observed = Some((record, now_instant));
                now_instant
            }
        };
        let mine = holder.as_deref() == Some(self.config.identity.as_str());
        let lasts =
            Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(duration_seconds)).unwrap_or(0));
        let expired = holder.is_none() || observed_at + lasts <= now_instant;
        if !mine && !expired {
            return Ok(false);
        }
        let mut renewed = lease.clone();
        let new_spec = renewed.spec.get_or_insert_with(LeaseSpec::default);
        new_spec.holder_identity = Some(self.config.identity.clone());
        new_spec.lease_duration_seconds = Some(duration_seconds);
        new_spec.renew_time = Some(now());
        if !mine {
            new_spec.acquire_time = Some(now());
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        // `replace` sends the resourceVersion read: someone else's write in between is a 409.
        answer(self.api.replace(&self.config.name, &PostParams::default(), &renewed).await)
    }
}

/// A create or replace: done, lost the race (409), or failed.
fn answer(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §10.7: held ends at the last renew's deadline by the clock alone, with nothing sent
    /// (the elector's task may not run while a long plan computes); a renew moves it on.
    #[tokio::test]
    async fn holding_ends_at_its_deadline_without_a_word_from_the_elector() {
        let (sender, receiver) = watch::channel(Held::Until(Instant::now() + Duration::from_millis(1000)));
        let leadership = Leadership(receiver);
        assert!(leadership.is_held());
        let lost = tokio::spawn({
            let leadership = leadership.clone();
            async move { leadership.lost().await }
        });
        // Renewed once: held on past the first deadline.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let renewed_until = Instant::now() + Duration::from_millis(2000);
        sender.send_replace(Held::Until(renewed_until));
        tokio::time::sleep_until(renewed_until - Duration::from_millis(600)).await;
        assert!(leadership.is_held(), "renewed");
        assert!(!lost.is_finished());
        // No renew: gone at the deadline, though the channel still says Until.
        tokio::time::sleep_until(renewed_until + Duration::from_millis(50)).await;
        assert!(!leadership.is_held());
        tokio::time::timeout(Duration::from_secs(5), lost).await.expect("lost() completes").unwrap();
        assert!(Leadership::always().is_held());
        drop(sender);
    }
}
