//! What happens to a Gateway API HTTPRoute (SPEC §11): `gateway.networking.k8s.io` v1 and
//! v1beta1, and Linkerd's `policy.linkerd.io` v1beta2 and v1beta3 (the same rule shape).
//!
//! - A developer HTTPRoute (`divert.okteto.com/header: <key>`, or §10.3 through the cluster
//!   view) gets the divert baggage member on every forwarding rule: [`header`] (SPEC §11.4).
//! - [`checks`] holds the validation rules (SPEC §11.5, §7).
//!
//! Shared HTTPRoutes are never rewritten in place: the reconciler keeps separate developer
//! routes beside them ([`crate::cluster::http_routes`], SPEC §11.1). Those routes, and the
//! ReferenceGrants the reconciler makes, carry [`MANAGED_BY_LABEL`]: no admission rule touches
//! them (SPEC §11.3).

mod checks;
mod header;

use serde_json::Value;

use super::{Findings, Subject, metadata_str};
use crate::settings::Settings;

pub use checks::validate;

/// The label on every object the reconciler owns (SPEC §11.1, §11.3).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY_VALUE: &str = "divert-webhook";

/// Is `object` one the reconciler made (label `app.kubernetes.io/managed-by: divert-webhook`)?
pub fn is_reconciler_owned(object: &Value) -> bool {
    metadata_str(object, "labels", MANAGED_BY_LABEL) == Some(MANAGED_BY_VALUE)
}

/// Mutation runs under both drivers (SPEC §11: Gateway API routes are divert's under either),
/// never in a protected namespace, never on the reconciler's own routes.
pub fn mutate(subject: &Subject<'_>, object: &mut Value, settings: &Settings, findings: &mut Findings) {
    if settings.is_protected(subject.namespace) || is_reconciler_owned(subject.object) {
        return;
    }
    header::mutate(subject, object, settings, findings);
}

/// The rules of an HTTPRoute (`spec.rules`), or nothing.
fn rules(object: &Value) -> &[Value] {
    object.pointer("/spec/rules").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// Does a rule forward requests? Every rule does but one that redirects (a `RequestRedirect`
/// filter): a rule without backendRefs forwards to its parent Service under GAMMA.
fn forwards(rule: &serde_json::Map<String, Value>) -> bool {
    !rule
        .get("filters")
        .and_then(Value::as_array)
        .is_some_and(|filters| filters.iter().any(|f| f.get("type").and_then(Value::as_str) == Some("RequestRedirect")))
}
