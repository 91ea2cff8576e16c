//! The reconciler's decision (SPEC §10.2, §10.3, §10.5), as a pure function: from the cluster's
//! state to the annotation changes that make the stored objects what §10 says they should be.
//! Who writes them, and how, is not decided here; each change says which kind of write it needs
//! (server-side apply of the webhook's own annotation, or a JSON patch that tests a value someone
//! else wrote before removing it, §10.6).
//!
//! Ownership is read from the objects, so the decision keeps no state of its own:
//! - a divert entry is the reconciler's when its key is [`entry_annotation`] of the namespace its
//!   value names (the key is a hash of that name, which nobody else writes);
//! - a `divert.okteto.com/header` annotation is the reconciler's when the object's managedFields
//!   say field manager `divert-webhook` owns it. A dump without managedFields (kubectl hides them
//!   by default) makes every header annotation someone else's: it is then never removed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use super::state::ClusterState;
use crate::rules::divert::{ANNOTATION_PREFIX, HEADER_ANNOTATION};
use crate::rules::http_route::is_reconciler_owned;
use crate::rules::virtual_service::annotations;
use crate::rules::virtual_service::divert_routes::routed_services;
use crate::settings::{Driver, Settings};

/// The field manager of the reconciler's server-side apply patches (SPEC §10.6).
pub const FIELD_MANAGER: &str = "divert-webhook";

/// `divert.okteto.com/<first 40 hex of sha256("divert-webhook:" + namespace)>`: the key of the
/// entry the reconciler writes for developer namespace `namespace` (SPEC §10.2).
pub fn entry_annotation(namespace: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("divert-webhook:{namespace}").as_bytes());
    let mut key = String::with_capacity(ANNOTATION_PREFIX.len() + 40);
    key.push_str(ANNOTATION_PREFIX);
    for byte in &digest.as_ref()[..20] {
        let _ = write!(key, "{byte:02x}");
    }
    key
}

/// The value of the reconciler's entry: `{"namespace":"D","services":[…sorted]}`.
pub fn entry_value(namespace: &str, services: &BTreeSet<&str>) -> String {
    serde_json::json!({ "namespace": namespace, "services": services }).to_string()
}

/// SPEC §10.5: an entry naming a namespace gone this long is stale (`--stale-grace`).
pub const DEFAULT_STALE_GRACE: Duration = Duration::from_secs(60);

/// How long namespaces have been gone, for stale entries (SPEC §10.5).
#[derive(Clone, Debug)]
pub struct Absence {
    /// `--stale-grace`.
    pub grace: Duration,
    /// Namespaces seen deleted, and how long ago.
    pub gone_for: BTreeMap<String, Duration>,
    /// How long the namespaces have been watched: a namespace never seen has been gone at least
    /// that long. `None`: no history (a dump), so a namespace missing from it is past the grace.
    pub watched_for: Option<Duration>,
}

impl Absence {
    /// No history: what a dump says (`reconcile --cluster FILE`).
    pub fn offline(grace: Duration) -> Absence {
        Absence { grace, gone_for: BTreeMap::new(), watched_for: None }
    }

    /// Has `namespace`, absent from the cluster, been gone for the grace period?
    pub fn past_grace(&self, namespace: &str) -> bool {
        match (self.gone_for.get(namespace), self.watched_for) {
            (Some(gone), _) => *gone >= self.grace,
            (None, Some(watched)) => watched >= self.grace,
            (None, None) => true,
        }
    }
}

/// One annotation change on one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Set the webhook's own annotation (server-side apply): added, or updated from `previous`.
    Apply { annotation: String, value: String, previous: Option<String> },
    /// Remove an annotation the webhook wrote (server-side apply without it).
    Release { annotation: String, value: String },
    /// Remove someone else's entry naming a namespace gone past the grace period: a JSON patch
    /// that tests `value` first, so an entry changed meanwhile is left alone.
    RemoveStale { annotation: String, value: String },
}

/// The changes to one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectChanges {
    pub kind: &'static str,
    pub api_version: String,
    pub namespace: String,
    pub name: String,
    pub changes: Vec<Change>,
    /// Every annotation the webhook wants to own on the object after the change: what its
    /// server-side apply sends (a field it owned and leaves out is removed by the apiserver).
    pub owned: BTreeMap<String, String>,
}

impl ObjectChanges {
    /// Does the change need a server-side apply (anything but stale removals)?
    pub fn needs_apply(&self) -> bool {
        self.changes.iter().any(|c| matches!(c, Change::Apply { .. } | Change::Release { .. }))
    }
}

/// What the reconciler would write (SPEC §10.2, §10.3, §10.5): every object that needs a change,
/// in the order of the state's objects. Empty when the cluster is as §10 says.
pub fn plan(state: &ClusterState, settings: &Settings, absence: &Absence) -> Vec<ObjectChanges> {
    // Developer namespaces by shared namespace.
    let mut developers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (namespace, _) in state.view.namespaces() {
        if let Some(shared) = state.developer_of(namespace, settings) {
            developers.entry(shared).or_default().push(namespace);
        }
    }
    let mut out = Vec::new();
    let (objects, kind) = match settings.driver {
        Driver::Istio => (&state.virtual_services, "VirtualService"),
        Driver::Nginx => (&state.ingresses, "Ingress"),
    };
    for object in objects {
        let (namespace, name) = namespace_and_name(object);
        let (mut changes, mut owned) = match settings.driver {
            Driver::Istio => entry_changes(object, namespace, &developers, state, settings, absence),
            Driver::Nginx => Default::default(),
        };
        let (header_change, header_owned) = header_change(object, namespace, state, settings);
        changes.extend(header_change);
        owned.extend(header_owned);
        if !changes.is_empty() {
            let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
            let (namespace, name) = (namespace.to_string(), name.to_string());
            out.push(ObjectChanges { kind, api_version, namespace, name, changes, owned });
        }
    }
    // §10.3 for the HTTPRoutes of developer namespaces too (SPEC §11.4), under either driver
    // with `--gateway-api` (without it HTTPRoutes are not watched, and offline answers as the
    // server does); the reconciler's own routes (SPEC §11.3) carry no header.
    let http_routes = if settings.gateway_api { state.http_routes.as_slice() } else { &[] };
    for object in http_routes.iter().filter(|o| !is_reconciler_owned(o)) {
        let (namespace, name) = namespace_and_name(object);
        let (change, owned) = header_change(object, namespace, state, settings);
        if let Some(change) = change {
            out.push(ObjectChanges {
                kind: "HTTPRoute",
                api_version: object.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string(),
                namespace: namespace.to_string(),
                name: name.to_string(),
                changes: vec![change],
                owned: owned.into_iter().collect(),
            });
        }
    }
    out
}

fn namespace_and_name(object: &Value) -> (&str, &str) {
    let field = |f: &str| object.pointer(&format!("/metadata/{f}")).and_then(Value::as_str).unwrap_or_default();
    (field("namespace"), field("name"))
}

fn annotation_str<'a>(object: &'a Value, annotation: &str) -> Option<&'a str> {
    object.pointer("/metadata/annotations").and_then(|a| a.get(annotation)).and_then(Value::as_str)
}

/// §10.2 and §10.5 on one VirtualService of namespace `namespace`: the changes, and the entries
/// the webhook owns afterwards.
fn entry_changes(
    object: &Value,
    namespace: &str,
    developers: &BTreeMap<&str, Vec<&str>>,
    state: &ClusterState,
    settings: &Settings,
    absence: &Absence,
) -> (Vec<Change>, BTreeMap<String, String>) {
    if settings.is_protected(namespace) {
        return Default::default();
    }
    // What the entries should be: one per developer namespace that runs a Service this
    // VirtualService routes to in its own namespace.
    let mut desired: BTreeMap<String, String> = BTreeMap::new();
    if let Some(developers) = developers.get(namespace) {
        let routed = routed_services(object, namespace, settings);
        let shared = state.view.namespace(namespace).map(|ns| &ns.services);
        for developer in developers {
            let Some(run) = state.view.namespace(developer).map(|ns| &ns.services) else { continue };
            let services: BTreeSet<&str> = routed
                .iter()
                .filter(|s| shared.is_some_and(|shared| shared.contains(*s)) && run.contains(*s))
                .map(String::as_str)
                .collect();
            if !services.is_empty() {
                desired.insert(entry_annotation(developer), entry_value(developer, &services));
            }
        }
    }
    let mut changes = Vec::new();
    for (annotation, value) in &desired {
        let current = annotation_str(object, annotation);
        if current != Some(value.as_str()) {
            changes.push(Change::Apply {
                annotation: annotation.clone(),
                value: value.clone(),
                previous: current.map(str::to_string),
            });
        }
    }
    for entry in annotations::entries(object, namespace).into_iter().flatten() {
        let Some(value) = annotation_str(object, &entry.annotation) else { continue };
        let ours = entry.annotation == entry_annotation(&entry.key);
        if ours {
            if !desired.contains_key(&entry.annotation) {
                changes.push(Change::Release { annotation: entry.annotation.clone(), value: value.to_string() });
            }
        } else if state.view.namespace(&entry.key).is_none() && absence.past_grace(&entry.key) {
            changes.push(Change::RemoveStale { annotation: entry.annotation.clone(), value: value.to_string() });
        }
    }
    (changes, desired)
}

/// §10.3 on one object of namespace `namespace`: the header annotation written on the objects
/// of a developer namespace, and removed (only if the webhook wrote it) when the namespace
/// stops being one. Also the annotation the webhook owns afterwards: its own value, when it is
/// there or added (owning a value someone else also set shares the field; it stays theirs
/// when the webhook lets go).
fn header_change(
    object: &Value,
    namespace: &str,
    state: &ClusterState,
    settings: &Settings,
) -> (Option<Change>, Option<(String, String)>) {
    let current = object.pointer("/metadata/annotations").and_then(|a| a.get(HEADER_ANNOTATION));
    let developer = state.developer_of(namespace, settings).is_some();
    let owned = (developer && current.is_none_or(|c| c.as_str() == Some(namespace)))
        .then(|| (HEADER_ANNOTATION.to_string(), namespace.to_string()));
    let change = match current {
        None if developer => Some(Change::Apply {
            annotation: HEADER_ANNOTATION.to_string(),
            value: namespace.to_string(),
            previous: None,
        }),
        Some(Value::String(value)) if !developer && owned_by_webhook(object, HEADER_ANNOTATION) => {
            Some(Change::Release { annotation: HEADER_ANNOTATION.to_string(), value: value.clone() })
        }
        _ => None,
    };
    (change, owned)
}

/// Do the object's managedFields say field manager `divert-webhook` owns annotation `annotation`?
pub fn owned_by_webhook(object: &Value, annotation: &str) -> bool {
    let Some(managed) = object.pointer("/metadata/managedFields").and_then(Value::as_array) else { return false };
    let field = format!("f:{annotation}");
    managed.iter().any(|entry| {
        entry.get("manager").and_then(Value::as_str) == Some(FIELD_MANAGER)
            && entry
                .get("fieldsV1")
                .and_then(|f| f.get("f:metadata"))
                .and_then(|m| m.get("f:annotations"))
                .is_some_and(|a| a.get(&field).is_some())
    })
}

/// `objects` with `changes` applied as the writes would leave them: annotations set or removed,
/// and the webhook's ownership of what it applies recorded in managedFields, as the apiserver
/// records a server-side apply (for tests, and to show the result).
pub fn apply(objects: &mut [Value], kind: &str, changes: &[ObjectChanges]) {
    for object_changes in changes.iter().filter(|c| c.kind == kind) {
        let Some(object) = objects
            .iter_mut()
            .find(|o| namespace_and_name(o) == (object_changes.namespace.as_str(), object_changes.name.as_str()))
        else {
            continue;
        };
        for change in &object_changes.changes {
            let (annotation, value) = match change {
                Change::Apply { annotation, value, .. } => (annotation, Some(value)),
                Change::Release { annotation, .. } | Change::RemoveStale { annotation, .. } => (annotation, None),
            };
            if let Some(annotations) = crate::rules::metadata_map_mut(object, "annotations") {
                match value {
                    Some(value) => annotations.insert(annotation.clone(), Value::String(value.clone())),
                    None => annotations.remove(annotation),
                };
            }
            record_ownership(object, annotation, value.is_some());
        }
    }
}

/// Marks (or unmarks) `annotation` as owned by [`FIELD_MANAGER`] in the object's managedFields.
fn record_ownership(object: &mut Value, annotation: &str, owned: bool) {
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    let managed = metadata.entry("managedFields").or_insert_with(|| Value::Array(Vec::new()));
    let Some(managed) = managed.as_array_mut() else { return };
    let position = managed.iter().position(|m| {
        m.get("manager").and_then(Value::as_str) == Some(FIELD_MANAGER)
            && m.get("operation").and_then(Value::as_str) == Some("Apply")
    });
    let index = match position {
        Some(index) => index,
        None if owned => {
            managed.push(serde_json::json!({
                "manager": FIELD_MANAGER, "operation": "Apply", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:annotations": {}}},
            }));
            managed.len() - 1
        }
        None => return,
    };
    if let Some(fields) =
        managed[index].pointer_mut("/fieldsV1/f:metadata/f:annotations").and_then(Value::as_object_mut)
    {
        let field = format!("f:{annotation}");
        if owned {
            fields.insert(field, serde_json::json!({}));
        } else {
            fields.remove(&field);
        }
    }
}

/// The server-side apply configuration of `changes` (SPEC §10.6), if it needs one: the object's
/// identity and every annotation the webhook owns afterwards.
pub fn apply_configuration(changes: &ObjectChanges) -> Option<Value> {
    changes.needs_apply().then(|| {
        serde_json::json!({
            "apiVersion": changes.api_version,
            "kind": changes.kind,
            "metadata": {"name": changes.name, "namespace": changes.namespace, "annotations": changes.owned},
        })
    })
}

/// The JSON patch that removes someone else's stale entries (SPEC §10.6): each value tested
/// first, so an entry changed since it was read is left alone (the patch then fails whole).
pub fn stale_patch(changes: &ObjectChanges) -> Option<Value> {
    let ops: Vec<Value> = changes
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::RemoveStale { annotation, value } => Some((annotation, value)),
            _ => None,
        })
        .flat_map(|(annotation, value)| {
            let path = format!("/metadata/annotations/{}", annotation.replace('~', "~0").replace('/', "~1"));
            [
                serde_json::json!({"op": "test", "path": path, "value": value}),
                serde_json::json!({"op": "remove", "path": path}),
            ]
        })
        .collect();
    (!ops.is_empty()).then_some(Value::Array(ops))
}

/// The writes themselves, as YAML documents: per object, its apply configuration and its JSON
/// patch, each after a comment line saying what it is.
pub fn writes_yaml(plan: &[ObjectChanges]) -> String {
    let mut out = String::new();
    for changes in plan {
        let object = format!("{} {}/{}", changes.kind, changes.namespace, changes.name);
        if let Some(configuration) = apply_configuration(changes) {
            let _ = writeln!(out, "---\n# server-side apply of {object}, field manager {FIELD_MANAGER}");
            out.push_str(&crate::manifests::to_yaml(&[configuration]));
        }
        if let Some(patch) = stale_patch(changes) {
            let _ = writeln!(out, "---\n# JSON patch of {object}: stale entries of someone else");
            out.push_str(&crate::manifests::to_yaml(&[patch]));
        }
    }
    out
}

/// The plan as a diff of annotations, object by object, saying how each is written.
pub fn diff(changes: &[ObjectChanges]) -> String {
    let mut out = String::new();
    for object in changes {
        let _ = writeln!(out, "--- {} {}/{}", object.kind, object.namespace, object.name);
        let _ = writeln!(out, "+++ {} {}/{}", object.kind, object.namespace, object.name);
        for change in &object.changes {
            match change {
                Change::Apply { annotation, value, previous } => {
                    let _ = writeln!(out, "# server-side apply, field manager {FIELD_MANAGER}");
                    if let Some(previous) = previous {
                        let _ = writeln!(out, "-metadata.annotations[{annotation:?}]: {previous}");
                    }
                    let _ = writeln!(out, "+metadata.annotations[{annotation:?}]: {value}");
                }
                Change::Release { annotation, value } => {
                    let _ = writeln!(out, "# server-side apply, field manager {FIELD_MANAGER}: released");
                    let _ = writeln!(out, "-metadata.annotations[{annotation:?}]: {value}");
                }
                Change::RemoveStale { annotation, value } => {
                    let _ = writeln!(out, "# JSON patch: test the value, then remove (its namespace is gone)");
                    let _ = writeln!(out, "-metadata.annotations[{annotation:?}]: {value}");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_key_is_the_hash_of_the_namespace() {
        // sha256("divert-webhook:cindy"), first 40 hex digits (computed with sha256sum).
        let key = entry_annotation("cindy");
        assert_eq!(key, "divert.okteto.com/556ce3f9eb9ddd35660e537569feb6938f5fd65c");
        assert!(annotations::is_entry_key(&key));
        assert_ne!(key, entry_annotation("cindy2"));
        assert_eq!(
            entry_value("cindy", &BTreeSet::from(["web", "api"])),
            r#"{"namespace":"cindy","services":["api","web"]}"#
        );
    }

    #[test]
    fn httproutes_of_developer_namespaces_get_the_header_annotation() {
        let (state, _) = crate::cluster::state::from_dump(
            r#"
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: cindy, labels: {divert.okteto.com/from: staging}}}
- {apiVersion: v1, kind: Namespace, metadata: {name: staging}}
- {apiVersion: gateway.networking.k8s.io/v1, kind: HTTPRoute, metadata: {name: web, namespace: cindy}}
- {apiVersion: gateway.networking.k8s.io/v1, kind: HTTPRoute, metadata: {name: shop, namespace: staging}}
- apiVersion: gateway.networking.k8s.io/v1
  kind: HTTPRoute
  metadata: {name: made, namespace: cindy, labels: {app.kubernetes.io/managed-by: divert-webhook}}
"#,
        )
        .unwrap();
        let istio_without_gateway_api = plan(&state, &Settings::default(), &Absence::offline(DEFAULT_STALE_GRACE));
        assert!(istio_without_gateway_api.is_empty(), "HTTPRoutes are left alone: {istio_without_gateway_api:?}");
        for driver in [Driver::Istio, Driver::Nginx] {
            let settings = Settings { driver, gateway_api: true, ..Settings::default() };
            let plan = plan(&state, &settings, &Absence::offline(DEFAULT_STALE_GRACE));
            let routes: Vec<_> = plan.iter().filter(|c| c.kind == "HTTPRoute").collect();
            assert_eq!(routes.len(), 1, "{plan:?}");
            assert_eq!((routes[0].namespace.as_str(), routes[0].name.as_str()), ("cindy", "web"));
            assert_eq!(
                routes[0].changes,
                [Change::Apply { annotation: HEADER_ANNOTATION.into(), value: "cindy".into(), previous: None }]
            );
        }
    }

    #[test]
    fn absence_counts_from_what_was_seen() {
        let grace = Duration::from_secs(60);
        let mut absence = Absence { grace, gone_for: BTreeMap::new(), watched_for: Some(Duration::from_secs(10)) };
        assert!(!absence.past_grace("never-seen"), "watched for 10 s only");
        absence.gone_for.insert("old".into(), Duration::from_secs(61));
        absence.gone_for.insert("new".into(), Duration::from_secs(5));
        assert!(absence.past_grace("old") && !absence.past_grace("new"));
        assert!(Absence::offline(grace).past_grace("anything"));
    }
}
