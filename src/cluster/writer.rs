//! The reconciler's writer (SPEC §10.6): the only code that changes objects in the cluster.
//! (The Lease it holds is written by [`super::lease`], next to it.)
//!
//! One [`ObjectChanges`] of the plan becomes at most two requests:
//! - a **server-side apply** (field manager `divert-webhook`) whose configuration holds exactly
//!   the annotations the webhook owns afterwards ([`reconcile::apply_configuration`]), nothing
//!   else. It is sent **without `force`**: the plan never applies a field someone else owns with
//!   another value (§10.3: an annotation someone else wrote is never changed), so a conflict means
//!   someone took the field after the snapshot was taken. Forcing would take it back from them;
//!   instead the object is read again, planned again, and the new plan written;
//! - a **JSON patch** that `test`s each stale entry someone else wrote before removing it (§10.5,
//!   [`reconcile::stale_patch`]). A failed test means the entry changed meanwhile: the object is
//!   read again and planned again, which leaves a changed entry alone. It is no error.
//!
//! The objects the reconciler owns (SPEC §11: developer HTTPRoutes, ReferenceGrants,
//! [`OwnedChange`]) are written whole, by [`Writer::write_owned`]:
//! - created by a server-side apply of the whole object, **not forced**: a conflict means an
//!   object of that name appeared after the snapshot; it is read again, and if it is not the
//!   webhook's (no managed-by label) it is left alone;
//! - updated by a server-side apply of the whole object, **forced**: every field of these objects
//!   is the webhook's, and a hand edit is undone rather than left conflicting forever;
//! - deleted with the uid planned from as a precondition (an object made again meanwhile is
//!   not the one planned: 409, read again). One already gone (404; the garbage collector
//!   deletes a developer route with its shared route) needs nothing.
//!
//! A conflict is retried [`MAX_ATTEMPTS`] times in all with fresh state. Any other failure (the
//! admission webhook's own §7 denial, 403 from RBAC, the API unreachable) is logged naming the
//! object and counted in `divert_webhook_reconcile_errors_total`; the caller goes on with the
//! next object. Before every request the writer checks that this replica still holds the Lease
//! (§10.7).

use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, Preconditions};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;

use super::http_routes::{Identity, OwnedChange};
use super::lease::Leadership;
use super::reconcile::{self, FIELD_MANAGER, ObjectChanges};

/// Attempts per object when it conflicts (409 on the apply, a failed `test` on the JSON patch).
pub const MAX_ATTEMPTS: usize = 4;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    kind: &'static str,
    /// `apply` (server-side apply), `json-patch` (stale entries of someone else) or `delete`
    /// (the webhook's own routes and grants no developer needs).
    patch: &'static str,
}

/// The reconciler's and the Lease's metrics (names fixed: alerts are written on them).
#[derive(Clone, Debug, Default)]
pub struct ReconcilerMetrics {
    errors: Counter,
    writes: Family<WriteLabels, Counter>,
    lease_holder: Gauge,
    lease_transitions: Counter,
    route_problems: Gauge,
}

impl ReconcilerMetrics {
    /// The metrics, registered in `registry` (whose prefix is `divert_webhook`).
    pub fn register(registry: &mut Registry) -> ReconcilerMetrics {
        let metrics = ReconcilerMetrics::default();
        registry.register(
            "reconcile_errors",
            "Objects the reconciler could not change (denied, forbidden, API unreachable, conflicts past the retries)",
            metrics.errors.clone(),
        );
        registry.register(
            "reconcile_writes",
            "Successful writes of the reconciler, by object kind and patch (apply: server-side apply; json-patch: stale entries of someone else)",
            metrics.writes.clone(),
        );
        registry.register(
            "reconcile_route_problems",
            "Developer HTTPRoutes and ReferenceGrants the last plan needs but cannot make (each named in the log)",
            metrics.route_problems.clone(),
        );
        registry.register(
            "lease_holder",
            "1 while this replica holds the Lease divert-webhook",
            metrics.lease_holder.clone(),
        );
        registry.register(
            "lease_transitions",
            "Times this replica started or stopped holding the Lease divert-webhook",
            metrics.lease_transitions.clone(),
        );
        // Every series exists from the start, so a first write reads as 0 -> 1.
        for kind in ["VirtualService", "Ingress"] {
            for patch in ["apply", "json-patch"] {
                let _ = metrics.writes.get_or_create(&WriteLabels { kind, patch });
            }
        }
        for kind in ["HTTPRoute", "ReferenceGrant"] {
            for patch in ["apply", "delete"] {
                let _ = metrics.writes.get_or_create(&WriteLabels { kind, patch });
            }
        }
        metrics
    }

    /// How many routes and grants the last plan could not make.
    pub fn route_problems(&self) -> i64 {
        self.route_problems.get()
    }

    pub(crate) fn set_route_problems(&self, problems: usize) {
        self.route_problems.set(i64::try_from(problems).unwrap_or(i64::MAX));
    }

    pub fn errors(&self) -> u64 {
        self.errors.get()
    }

    /// Successful writes of objects of `kind`, every patch type.
    pub fn writes(&self, kind: &'static str) -> u64 {
        ["apply", "json-patch", "delete"]
            .into_iter()
            .map(|patch| self.writes.get_or_create(&WriteLabels { kind, patch }).get())
            .sum()
    }

    pub fn lease_transitions(&self) -> u64 {
        self.lease_transitions.get()
    }

    pub fn is_lease_holder(&self) -> bool {
        self.lease_holder.get() == 1
    }

    /// This replica started (`true`) or stopped holding the Lease.
    pub(crate) fn lease_held(&self, held: bool) {
        self.lease_holder.set(i64::from(held));
        self.lease_transitions.inc();
    }
}

/// What became of one object's changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written.
    Written,
    /// Read again after a conflict, nothing was left to change (someone changed it meanwhile, or
    /// it is gone).
    Unneeded,
    /// Not written: logged and counted in `divert_webhook_reconcile_errors_total`.
    Failed,
    /// This replica does not hold the Lease (any more): nothing more was sent.
    Stopped,
}

enum Failure {
    /// Someone changed the object since the plan was made: read it again and plan again.
    Conflict(kube::Error),
    Other(kube::Error),
    Stopped,
}

/// Writes the plan's changes through `client`, while `leadership` says this replica holds the Lease.
#[derive(Clone)]
pub struct Writer {
    client: Client,
    metrics: ReconcilerMetrics,
    leadership: Leadership,
}

impl Writer {
    pub fn new(client: Client, metrics: ReconcilerMetrics, leadership: Leadership) -> Writer {
        Writer { client, metrics, leadership }
    }

    pub fn metrics(&self) -> &ReconcilerMetrics {
        &self.metrics
    }

    /// Writes one change to an object the webhook owns (SPEC §11.1–§11.3). After a conflict the
    /// object is read again and [`OwnedChange::again`] says what is left to write.
    pub async fn write_owned(&self, change: &OwnedChange) -> WriteOutcome {
        let identity = change.identity();
        let api = owned_api(&self.client, &identity);
        let mut current = change.clone();
        let mut attempt = 1;
        loop {
            let error = match self.write_owned_once(&api, &current).await {
                Ok(true) => return WriteOutcome::Written,
                Ok(false) => return WriteOutcome::Unneeded,
                Err(Failure::Stopped) => return WriteOutcome::Stopped,
                Err(Failure::Other(error)) => error,
                Err(Failure::Conflict(error)) if attempt >= MAX_ATTEMPTS => error,
                Err(Failure::Conflict(error)) => {
                    tracing::debug!(object = %identity, %error, attempt, "changed meanwhile: reading it again");
                    attempt += 1;
                    if !self.leadership.is_held() {
                        return WriteOutcome::Stopped;
                    }
                    match api.get_opt(&identity.name).await {
                        Ok(fresh) => {
                            let fresh = fresh.map(|fresh| serde_json::to_value(&fresh).unwrap_or_default());
                            match current.again(fresh.as_ref()) {
                                Ok(Some(next)) => {
                                    current = next;
                                    continue;
                                }
                                Ok(None) => return WriteOutcome::Unneeded,
                                Err(problem) => {
                                    tracing::warn!(object = %identity, "the reconciler leaves {identity} alone: {problem}");
                                    return WriteOutcome::Unneeded;
                                }
                            }
                        }
                        Err(error) => error,
                    }
                }
            };
            self.metrics.errors.inc();
            let fix = fix_hint(&error, &owned_resource(&identity).plural, "create, patch and delete", attempt);
            tracing::warn!(object = %identity, %error, "the reconciler cannot write {identity}: {error}{fix}");
            return WriteOutcome::Failed;
        }
    }

    /// `Ok(false)`: nothing was left to do (deleting an object already gone).
    async fn write_owned_once(&self, api: &Api<DynamicObject>, change: &OwnedChange) -> Result<bool, Failure> {
        if !self.leadership.is_held() {
            return Err(Failure::Stopped);
        }
        let kind = if change.identity().kind == "ReferenceGrant" { "ReferenceGrant" } else { "HTTPRoute" };
        let conflict = |error: kube::Error| match status_code(&error) {
            Some(409) => Failure::Conflict(error),
            _ => Failure::Other(error),
        };
        match change {
            OwnedChange::Create(object) | OwnedChange::Update { desired: object, .. } => {
                let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                let mut params = PatchParams::apply(FIELD_MANAGER);
                if matches!(change, OwnedChange::Update { .. }) {
                    params = params.force();
                }
                api.patch(name, &params, &Patch::Apply(object)).await.map_err(conflict)?;
                self.count(kind, "apply");
                Ok(true)
            }
            OwnedChange::Delete(identity) => {
                let params = DeleteParams {
                    preconditions: (!identity.uid.is_empty())
                        .then(|| Preconditions { uid: Some(identity.uid.clone()), resource_version: None }),
                    ..DeleteParams::default()
                };
                match api.delete(&identity.name, &params).await {
                    Ok(_) => {
                        self.count(kind, "delete");
                        Ok(true)
                    }
                    Err(error) if status_code(&error) == Some(404) => Ok(false),
                    Err(error) => Err(conflict(error)),
                }
            }
        }
    }

    /// Writes `changes`. After a conflict the object is read again and `replan` says what it
    /// needs now (`None`: nothing); the new changes are written instead.
    pub async fn write(
        &self,
        changes: &ObjectChanges,
        replan: &(dyn Fn(&Value) -> Option<ObjectChanges> + Sync),
    ) -> WriteOutcome {
        let api = api_of(&self.client, changes);
        let mut current = changes.clone();
        let mut attempt = 1;
        loop {
            let error = match self.write_once(&api, &current).await {
                Ok(()) => return WriteOutcome::Written,
                Err(Failure::Stopped) => return WriteOutcome::Stopped,
                Err(Failure::Other(error)) => error,
                Err(Failure::Conflict(error)) if attempt >= MAX_ATTEMPTS => error,
                Err(Failure::Conflict(error)) => {
                    tracing::debug!(object = %describe(changes), %error, attempt, "changed meanwhile: reading it again");
                    attempt += 1;
                    if !self.leadership.is_held() {
                        return WriteOutcome::Stopped;
                    }
                    match api.get_opt(&changes.name).await {
                        Ok(None) => return WriteOutcome::Unneeded,
                        Ok(Some(fresh)) => {
                            let fresh = serde_json::to_value(&fresh).unwrap_or_default();
                            match replan(&fresh) {
                                // A 422 (a JSON patch's `test` failed, or a denial) after which
                                // the object, read again, asks for the very same writes: not a
                                // race but a refusal, which the same writes would meet again.
                                // (A 409 is retried as it is: conflicts can pass.)
                                Some(next) if next == current && status_code(&error) == Some(422) => error,
                                Some(next) => {
                                    current = next;
                                    continue;
                                }
                                None => return WriteOutcome::Unneeded,
                            }
                        }
                        Err(error) => error,
                    }
                }
            };
            self.failed(changes, &error, attempt);
            return WriteOutcome::Failed;
        }
    }

    async fn write_once(&self, api: &Api<DynamicObject>, changes: &ObjectChanges) -> Result<(), Failure> {
        if let Some(configuration) = reconcile::apply_configuration(changes) {
            if !self.leadership.is_held() {
                return Err(Failure::Stopped);
            }
            let params = PatchParams::apply(FIELD_MANAGER);
            match api.patch(&changes.name, &params, &Patch::Apply(&configuration)).await {
                Ok(_) => self.count(changes.kind, "apply"),
                Err(error) if status_code(&error) == Some(409) => return Err(Failure::Conflict(error)),
                Err(error) => return Err(Failure::Other(error)),
            }
        }
        if let Some(patch) = reconcile::stale_patch(changes) {
            if !self.leadership.is_held() {
                return Err(Failure::Stopped);
            }
            let patch: json_patch::Patch =
                serde_json::from_value(patch).expect("stale_patch builds a valid JSON patch");
            match api.patch(&changes.name, &PatchParams::default(), &Patch::Json::<()>(patch)).await {
                Ok(_) => self.count(changes.kind, "json-patch"),
                // The apiserver answers 422 when a `test` fails (the entry changed or went
                // meanwhile); reading the object again tells that from a real refusal.
                Err(error) if matches!(status_code(&error), Some(409 | 422)) => return Err(Failure::Conflict(error)),
                Err(error) => return Err(Failure::Other(error)),
            }
        }
        Ok(())
    }

    fn count(&self, kind: &'static str, patch: &'static str) {
        self.metrics.writes.get_or_create(&WriteLabels { kind, patch }).inc();
    }

    fn failed(&self, changes: &ObjectChanges, error: &kube::Error, attempts: usize) {
        self.metrics.errors.inc();
        let fix = fix_hint(error, &api_resource(changes).plural, "get and patch", attempts);
        let annotations: Vec<&str> = changes.changes.iter().map(annotation_of).collect();
        tracing::warn!(
            object = %describe(changes),
            annotations = ?annotations,
            %error,
            "the reconciler cannot change {}: {error}{fix}",
            describe(changes),
        );
    }
}

/// What to do about `error`, when the error does not say it itself. A 403 is RBAC only when the
/// apiserver says which user is forbidden what: admission webhooks' denials (ours, §7, included)
/// are 403s too, and their message already names the field and the fix.
fn fix_hint(error: &kube::Error, plural: &str, verbs: &str, attempts: usize) -> String {
    match error {
        kube::Error::Api(status) if status.code == 403 && status.message.contains(" is forbidden: User ") => {
            format!("; fix: grant the webhook's ServiceAccount {verbs} on {plural} (deploy/ has its ClusterRole)")
        }
        kube::Error::Api(status) if status.code == 409 => {
            format!("; still conflicting after {attempts} attempts, tried again at the next snapshot or resync")
        }
        _ => String::new(),
    }
}

fn annotation_of(change: &reconcile::Change) -> &str {
    match change {
        reconcile::Change::Apply { annotation, .. }
        | reconcile::Change::Release { annotation, .. }
        | reconcile::Change::RemoveStale { annotation, .. } => annotation,
    }
}

fn describe(changes: &ObjectChanges) -> String {
    format!("{} {}/{}", changes.kind, changes.namespace, changes.name)
}

fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// The API resource of the changed object, from its apiVersion and kind.
fn api_resource(changes: &ObjectChanges) -> ApiResource {
    let (group, version) = changes.api_version.rsplit_once('/').unwrap_or(("", &changes.api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, changes.kind))
}

fn api_of(client: &Client, changes: &ObjectChanges) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), &changes.namespace, &api_resource(changes))
}

/// The API resource of an object the webhook owns (HTTPRoute or ReferenceGrant, whose plurals
/// are their lowercased kinds plus `s`).
fn owned_resource(identity: &Identity) -> ApiResource {
    let version = identity.api_version.rsplit_once('/').map_or(identity.api_version.as_str(), |(_, v)| v);
    ApiResource::from_gvk(&GroupVersionKind::gvk(identity.group(), version, &identity.kind))
}

fn owned_api(client: &Client, identity: &Identity) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), &identity.namespace, &owned_resource(identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_rbac_refusal_gets_the_rbac_fix() {
        let error = |code: u16, message: &str| {
            kube::Error::Api(
                kube::core::Status {
                    code,
                    message: message.to_string(),
                    ..kube::core::Status::failure(message, "Forbidden")
                }
                .boxed(),
            )
        };
        let rbac = error(
            403,
            r#"virtualservices.networking.istio.io "shop" is forbidden: User "system:serviceaccount:divert:divert-webhook" cannot patch resource "virtualservices""#,
        );
        assert!(
            fix_hint(&rbac, "virtualservices", "get and patch", 1)
                .contains("grant the webhook's ServiceAccount get and patch on virtualservices")
        );
        let denied = error(
            403,
            r#"admission webhook "validate.divert.okteto.com" denied the request: VirtualService staging/shop: ... ; remove ..."#,
        );
        assert_eq!(fix_hint(&denied, "virtualservices", "get and patch", 1), "");
        assert!(fix_hint(&error(409, "conflict"), "virtualservices", "get and patch", 4).contains("after 4 attempts"));
    }

    /// The names alerts are written on.
    #[test]
    fn the_metrics_have_their_fixed_names() {
        let mut registry = Registry::with_prefix("divert_webhook");
        let metrics = ReconcilerMetrics::register(&mut registry);
        metrics.errors.inc();
        metrics.lease_held(true);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for sample in [
            "divert_webhook_reconcile_errors_total 1",
            r#"divert_webhook_reconcile_writes_total{kind="VirtualService",patch="apply"} 0"#,
            r#"divert_webhook_reconcile_writes_total{kind="Ingress",patch="json-patch"} 0"#,
            r#"divert_webhook_reconcile_writes_total{kind="HTTPRoute",patch="delete"} 0"#,
            r#"divert_webhook_reconcile_writes_total{kind="ReferenceGrant",patch="apply"} 0"#,
            "divert_webhook_reconcile_route_problems 0",
            "divert_webhook_lease_holder 1",
            "divert_webhook_lease_transitions_total 1",
        ] {
            assert!(text.lines().any(|line| line == sample), "{sample} in\n{text}");
        }
        assert!(metrics.is_lease_holder());
        metrics.lease_held(false);
        assert_eq!((metrics.is_lease_holder(), metrics.lease_transitions()), (false, 2));
    }
}
