//! AdmissionReview in, AdmissionReview out (SPEC §8): the one path every entry point takes.
//!
//! [`review`] decodes the body, runs [`admit`] and encodes the answer; the HTTPS server and the
//! `review` command call it. The offline `mutate`/`check` commands call [`admit`] directly with
//! the objects of a manifest file, so they get exactly the server's decisions.
//!
//! The admitted object is taken out of the review as raw JSON before the envelope is decoded
//! with `kube::core::admission`: rules and patches work on the object exactly as sent.

use std::fmt;

use base64::Engine as _;
use json_patch::Patch;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Status};
use serde_json::Value;

use crate::patch;
use crate::rules::{self, Denial, Kind, Subject};
use crate::settings::Settings;

/// Which webhook is being called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Mutate,
    Validate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

/// The decision for one object.
#[derive(Clone, Debug, Default)]
pub struct Admission {
    /// Empty when nothing changes (then the answer carries no patch at all).
    pub patch: Patch,
    pub warnings: Vec<String>,
    pub denials: Vec<Denial>,
}

impl Admission {
    pub fn denial_message(&self) -> Option<String> {
        (!self.denials.is_empty())
            .then(|| self.denials.iter().map(|d| d.message.as_str()).collect::<Vec<_>>().join("; "))
    }
}

/// Runs the rules of `endpoint` on one object. Kinds without rules, and DELETE/CONNECT, are
/// allowed untouched.
pub fn admit(
    endpoint: Endpoint,
    kind: Kind,
    operation: &Operation,
    namespace: &str,
    object: &Value,
    settings: &Settings,
) -> Admission {
    if !matches!(operation, Operation::Create | Operation::Update) {
        return Admission::default();
    }
    let name = object.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("");
    let namespace = if kind == Kind::Namespace { name } else { namespace };
    let subject = Subject { kind, namespace, name, object };
    match endpoint {
        Endpoint::Mutate => {
            let mut mutated = object.clone();
            let warnings = rules::mutate(&subject, &mut mutated, settings);
            Admission { patch: patch::diff(object, &mutated), warnings, denials: Vec::new() }
        }
        Endpoint::Validate => {
            let findings = rules::validate(&subject, settings);
            Admission { patch: Patch(Vec::new()), warnings: findings.warnings, denials: findings.denials }
        }
    }
}

/// How a review ended, for metrics and the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Allowed,
    Patched,
    Denied,
    /// Not a readable AdmissionReview: answered with HTTP 400.
    Invalid,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Patched => "patched",
            Outcome::Denied => "denied",
            Outcome::Invalid => "invalid",
        }
    }
}

/// What the log line and the metrics say about one answered review.
#[derive(Clone, Debug)]
pub struct Summary {
    pub uid: String,
    /// `request.kind.kind` as sent (also for kinds without rules).
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub operation: &'static str,
    pub outcome: Outcome,
    pub patch_operations: usize,
    pub warnings: usize,
    pub denial_reasons: Vec<&'static str>,
}

/// A body that is not a readable AdmissionReview. The text is one line, for the HTTP 400 body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidReview(pub String);

impl fmt::Display for InvalidReview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidReview {}

fn operation_str(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// One line, at most 200 characters: serde's messages can quote long input.
fn one_line(s: impl fmt::Display) -> String {
    let s: String = s.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 200 { s.chars().take(197).collect::<String>() + "..." } else { s }
}

/// Decodes an AdmissionReview body, decides, and returns the encoded answer (JSON) with its
/// summary. Errors are for bodies that are not a readable `admission.k8s.io/v1` review.
pub fn review(endpoint: Endpoint, body: &[u8], settings: &Settings) -> Result<(Vec<u8>, Summary), InvalidReview> {
    let mut envelope: Value =
        serde_json::from_slice(body).map_err(|e| InvalidReview(one_line(format_args!("body is not JSON: {e}"))))?;
    let api_version = envelope.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = envelope.get("kind").and_then(Value::as_str).unwrap_or_default();
    if (api_version, kind) != ("admission.k8s.io/v1", "AdmissionReview") {
        return Err(InvalidReview(one_line(format_args!(
            "expected apiVersion admission.k8s.io/v1, kind AdmissionReview; got apiVersion {api_version:?}, kind {kind:?}"
        ))));
    }
    // Keep the object raw; the envelope goes through kube's types.
    let request = envelope
        .get_mut("request")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| InvalidReview("AdmissionReview has no request object".into()))?;
    let object = request.get_mut("object").map(Value::take).unwrap_or(Value::Null);
    request.remove("oldObject");
    if !(object.is_object() || object.is_null()) {
        return Err(InvalidReview("request.object is not a JSON object".into()));
    }
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(envelope)
        .map_err(|e| InvalidReview(one_line(format_args!("not a readable AdmissionReview: {e}"))))?;
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| InvalidReview("AdmissionReview has no request".into()))?;

    let handled = Kind::from_gvk(&request.kind.group, &request.kind.version, &request.kind.kind);
    let mut admission = match handled {
        Some(kind) if object.is_object() => {
            let namespace = request.namespace.as_deref().unwrap_or("");
            admit(endpoint, kind, &request.operation, namespace, &object, settings)
        }
        _ => Admission::default(),
    };

    let patch_operations = admission.patch.0.len();
    let mut response = AdmissionResponse::from(&request);
    let outcome = if let Some(message) = admission.denial_message() {
        response.allowed = false;
        response.result = Status::failure(&message, "Forbidden").with_code(403);
        Outcome::Denied
    } else if !admission.patch.0.is_empty() {
        response = response
            .with_patch(std::mem::take(&mut admission.patch))
            .map_err(|e| InvalidReview(one_line(format_args!("patch could not be encoded: {e}"))))?;
        Outcome::Patched
    } else {
        Outcome::Allowed
    };
    if !admission.warnings.is_empty() {
        response.warnings = Some(admission.warnings.clone());
    }
    let summary = Summary {
        uid: request.uid.clone(),
        kind: request.kind.kind.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        name: request.name.clone(),
        operation: operation_str(&request.operation),
        outcome,
        patch_operations: if outcome == Outcome::Patched { patch_operations } else { 0 },
        warnings: admission.warnings.len(),
        denial_reasons: admission.denials.iter().map(|d| d.reason).collect(),
    };
    Ok((encode_review(response), summary))
}

/// The answer as the apiserver reads it. kube-core serialises `response.patch` (a `Vec<u8>`) as
/// an array of numbers (kube-rs issue #1781); the apiserver decodes `[]byte` only from a
/// base64 string, so the patch is taken out and put back as base64.
fn encode_review(mut response: AdmissionResponse) -> Vec<u8> {
    let patch = response.patch.take().map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes));
    let mut review = serde_json::to_value(response.into_review()).expect("AdmissionReview serialises");
    if let (Some(patch), Some(Value::Object(fields))) = (patch, review.get_mut("response")) {
        fields.insert("patch".to_string(), Value::String(patch));
    }
    serde_json::to_vec(&review).expect("AdmissionReview serialises")
}
