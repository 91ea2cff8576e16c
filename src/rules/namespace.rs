//! What happens to a Namespace (SPEC §3).
//!
//! Mutation: a managed, unprotected namespace gets its mesh's injection marker
//! (`istio-injection: enabled` label under the istio driver, `linkerd.io/inject: enabled`
//! annotation under the nginx driver) unless it already says something about injection.
//!
//! Validation (every namespace): no two meshes on one namespace, no marker of the other mesh on
//! a managed namespace, no unknown injection values, and a `divert.okteto.com/from` label that
//! names another, unprotected namespace (SPEC §10.1).

use jsonptr::PointerBuf;
use serde_json::Value;

use super::{Findings, Subject, metadata_map_mut, metadata_str, shorten};
use crate::cluster::view::{FROM_LABEL, check_from_label};
use crate::patch::{self, JsonPatch};
use crate::settings::{Driver, Settings};

pub const ISTIO_INJECTION: &str = "istio-injection";
pub const ISTIO_REV: &str = "istio.io/rev";
pub const LINKERD_INJECT: &str = "linkerd.io/inject";

/// The mesh markers of one namespace, read once.
struct Markers<'a> {
    /// label `istio-injection`
    istio_injection: Option<&'a str>,
    /// label `istio.io/rev`
    istio_rev: Option<&'a str>,
    /// annotation `linkerd.io/inject`
    linkerd_inject: Option<&'a str>,
}

impl<'a> Markers<'a> {
    fn of(object: &'a Value) -> Self {
        Markers {
            istio_injection: metadata_str(object, "labels", ISTIO_INJECTION),
            istio_rev: metadata_str(object, "labels", ISTIO_REV),
            linkerd_inject: metadata_str(object, "annotations", LINKERD_INJECT),
        }
    }

    /// The marker that turns Istio sidecar injection on, as `key=value` for messages.
    fn istio_enabled(&self) -> Option<String> {
        if let Some(rev) = self.istio_rev {
            return Some(format!("label {ISTIO_REV}={rev}"));
        }
        (self.istio_injection == Some("enabled")).then(|| format!("label {ISTIO_INJECTION}=enabled"))
    }

    /// The marker that turns Linkerd proxy injection on.
    fn linkerd_enabled(&self) -> Option<String> {
        self.linkerd_inject
            .filter(|v| matches!(*v, "enabled" | "ingress"))
            .map(|v| format!("annotation {LINKERD_INJECT}={v}"))
    }
}

/// Managed = matches the operator's selector and is not protected. Protected namespaces
/// (kube-system, the mesh's own namespaces, …) are left to their owners entirely.
fn is_managed(name: &str, object: &Value, settings: &Settings) -> bool {
    let labels = object.get("metadata").and_then(|m| m.get("labels")).and_then(Value::as_object);
    !settings.is_protected(name) && settings.managed_selector.matches(labels)
}

/// The injection marker a managed namespace gets, if any: (`labels` or `annotations`, key),
/// its value being `enabled`. Warnings go to `findings`.
fn marker_to_add(
    subject: &Subject<'_>,
    settings: &Settings,
    findings: &mut Findings,
) -> Option<(&'static str, &'static str)> {
    let name = subject.name;
    if !is_managed(name, subject.object, settings) {
        return None;
    }
    let markers = Markers::of(subject.object);
    match settings.driver {
        Driver::Istio => {
            if markers.istio_injection == Some("disabled") {
                findings.warn(format!(
                    "Namespace {}: {ISTIO_INJECTION}=disabled, so divert cannot reach its pods (no Istio sidecars)",
                    shorten(name, 24)
                ));
            }
            // Already decided by its owner, or wired to the other mesh (validation denies that
            // with a clearer message than a second marker would give).
            if markers.istio_injection.is_some() || markers.istio_rev.is_some() || markers.linkerd_enabled().is_some() {
                return None;
            }
            Some(("labels", ISTIO_INJECTION))
        }
        Driver::Nginx => {
            if markers.linkerd_inject == Some("disabled") {
                findings.warn(format!(
                    "Namespace {}: {LINKERD_INJECT}=disabled, so divert cannot reach its pods (no Linkerd proxies)",
                    shorten(name, 24)
                ));
            }
            if markers.linkerd_inject.is_some() || markers.istio_enabled().is_some() {
                return None;
            }
            Some(("annotations", LINKERD_INJECT))
        }
    }
}

pub fn mutate(subject: &Subject<'_>, object: &mut Value, settings: &Settings, findings: &mut Findings) {
    if let Some((map, key)) = marker_to_add(subject, settings, findings)
        && let Some(map) = metadata_map_mut(object, map)
    {
        map.insert(key.into(), "enabled".into());
    }
}

/// [`mutate`] as JSONPatch operations, without a copy of the object (the server's path): the
/// same single operation a diff of [`mutate`]'s result gives.
pub fn patch(subject: &Subject<'_>, settings: &Settings, findings: &mut Findings) -> JsonPatch {
    let Some((map, key)) = marker_to_add(subject, settings, findings) else { return JsonPatch::default() };
    let Some(root) = subject.object.as_object() else { return JsonPatch::default() };
    let enabled = Value::from("enabled");
    let one = |key: &str, value: Value| Value::Object(serde_json::Map::from_iter([(key.to_owned(), value)]));
    match root.get("metadata") {
        None => patch::add(PointerBuf::from_tokens(["metadata"]), &one(map, one(key, enabled))),
        Some(Value::Object(metadata)) => match metadata.get(map) {
            None => patch::add(PointerBuf::from_tokens(["metadata", map]), &one(key, enabled)),
            Some(Value::Object(entries)) => {
                let path = PointerBuf::from_tokens(["metadata", map, key]);
                // Not a string there (else it would have counted as a marker): replaced.
                if entries.contains_key(key) { patch::replace(path, &enabled) } else { patch::add(path, &enabled) }
            }
            Some(_) => JsonPatch::default(),
        },
        Some(_) => JsonPatch::default(),
    }
}

pub fn validate(subject: &Subject<'_>, settings: &Settings, findings: &mut Findings) {
    let name = subject.name;
    let markers = Markers::of(subject.object);

    // SPEC §10.1: checked with or without a cluster, so a bad label never gets stored.
    if let Some(from) = metadata_str(subject.object, "labels", FROM_LABEL)
        && let Err(problem) = check_from_label(name, from, settings)
    {
        findings.deny("invalid-divert-from", format!("Namespace {name}: label {FROM_LABEL}: {problem}"));
    }

    if let Some(value) = markers.istio_injection
        && !matches!(value, "enabled" | "disabled")
    {
        findings.deny(
            "invalid-istio-injection",
            format!("Namespace {name}: label {ISTIO_INJECTION}={value:?} is not valid; set it to enabled or disabled"),
        );
    }
    if let Some(value) = markers.linkerd_inject
        && !matches!(value, "enabled" | "disabled" | "ingress")
    {
        findings.deny(
            "invalid-linkerd-inject",
            format!("Namespace {name}: annotation {LINKERD_INJECT}={value:?} is not valid; set it to enabled, disabled or ingress"),
        );
    }
    if let (Some(injection), Some(rev)) = (markers.istio_injection, markers.istio_rev) {
        findings.deny(
            "istio-injection-with-rev",
            format!(
                "Namespace {name}: label {ISTIO_INJECTION}={injection} and label {ISTIO_REV}={rev} are both set; \
                 Istio reads only one of them, remove one"
            ),
        );
    }

    let (istio, linkerd) = (markers.istio_enabled(), markers.linkerd_enabled());
    if let (Some(istio), Some(linkerd)) = (&istio, &linkerd) {
        findings.deny(
            "mesh-conflict",
            format!(
                "Namespace {name}: {istio} and {linkerd} both enable a mesh, and both would capture the same pods' traffic; \
                 remove one of them"
            ),
        );
        return;
    }
    if is_managed(name, subject.object, settings) {
        match (settings.driver, istio, linkerd) {
            (Driver::Istio, _, Some(linkerd)) => findings.deny(
                "wrong-mesh",
                format!(
                    "Namespace {name}: {linkerd} enables Linkerd, but this cluster's divert driver is istio; \
                     remove the annotation (divert-webhook adds {ISTIO_INJECTION}=enabled)"
                ),
            ),
            (Driver::Nginx, Some(istio), _) => findings.deny(
                "wrong-mesh",
                format!(
                    "Namespace {name}: {istio} enables Istio, but this cluster's divert driver is nginx (Linkerd); \
                     remove it (divert-webhook adds {LINKERD_INJECT}=enabled)"
                ),
            ),
            _ => {}
        }
    }
}
