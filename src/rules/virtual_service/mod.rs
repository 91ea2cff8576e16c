//! What happens to an Istio VirtualService (networking.istio.io v1, v1beta1, v1alpha3).
//!
//! - In a shared namespace, `divert.okteto.com/<hash>` annotations name developers whose
//!   traffic is diverted: [`divert_routes`] regenerates the cloned routes (SPEC §4).
//! - In a developer namespace, `divert.okteto.com/header: <key>` makes every forwarding route
//!   add the divert baggage member to requests: [`header`] (SPEC §5).
//! - [`checks`] holds the validation rules (SPEC §7).
//!
//! [`annotations`] reads the divert entries; all three use it.

pub mod annotations;
pub(crate) mod checks;
pub mod divert_routes;
mod header;
pub(crate) mod regex_check;

use serde_json::Value;

use super::{Findings, Subject};
use crate::patch::JsonPatch;
use crate::settings::{Driver, Settings};

/// Mutation runs under the istio driver only (SPEC §4, §5: under the nginx driver Linkerd
/// routes and VirtualServices are not divert's), and never in a protected namespace.
/// Validation runs under both drivers.
pub fn mutate(subject: &Subject<'_>, object: &mut Value, settings: &Settings, findings: &mut Findings) {
    if settings.driver != Driver::Istio || settings.is_protected(subject.namespace) {
        return;
    }
    divert_routes::mutate(subject, object, settings, findings);
    header::mutate(subject, object, settings, findings);
}

/// Mutation as JSONPatch operations written directly, when that is the whole of it: a shared
/// VirtualService whose only change is §4 (no header rule at work). `None`: use [`mutate`]
/// on a copy and diff. The answer is the same either way (tests compare them).
pub fn patch_directly(subject: &Subject<'_>, settings: &Settings, findings: &mut Findings) -> Option<JsonPatch> {
    if settings.driver != Driver::Istio || settings.is_protected(subject.namespace) {
        return Some(JsonPatch::default());
    }
    if !header::is_idle(subject, settings) {
        return None;
    }
    Some(divert_routes::patch(subject, settings, findings))
}

pub fn validate(subject: &Subject<'_>, settings: &Settings, findings: &mut Findings) {
    checks::validate(subject, settings, findings);
}
