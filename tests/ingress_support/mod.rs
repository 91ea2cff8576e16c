//! Shared by the `ingress_*` tests: AdmissionReviews for an Ingress shaped as the kube-apiserver
//! sends them (envelope of tests/fixtures/namespace-create.json), answered through the real
//! review path, with the returned patch decoded and applied by `json_patch`.

#![allow(dead_code)] // each test binary uses its own part

use base64::Engine as _;
use divert_webhook::review::{Endpoint, review};
use divert_webhook::selector::Selector;
use divert_webhook::settings::{Driver, Settings};
use serde_json::{Value, json};

pub const HEADER: &str = "divert.okteto.com/header";
pub const SNIPPET: &str = "nginx.ingress.kubernetes.io/configuration-snippet";
pub const BEGIN: &str = "# divert-webhook begin";
pub const END: &str = "# divert-webhook end";

/// The block as every version before issue 8 wrote it (for key `bob`): four removal rounds,
/// then 400. Objects stored then still hold it; it must be found and rewritten in place.
pub const EARLIER_BLOCK_BOB: &str = r#"# divert-webhook begin
# Written by divert-webhook from divert.okteto.com/header; edits between the markers are replaced.
set $okteto_divert_baggage "";
if ($http_baggage ~ "[^ \t]") { set $okteto_divert_baggage ",$http_baggage"; }
if ($okteto_divert_baggage ~ "^(.*?)(?:,[ \t]*okteto-divert[ \t]*=[^,]*)+(.*)$") { set $okteto_divert_baggage "$1$2"; }
if ($okteto_divert_baggage ~ "^(.*?)(?:,[ \t]*okteto-divert[ \t]*=[^,]*)+(.*)$") { set $okteto_divert_baggage "$1$2"; }
if ($okteto_divert_baggage ~ "^(.*?)(?:,[ \t]*okteto-divert[ \t]*=[^,]*)+(.*)$") { set $okteto_divert_baggage "$1$2"; }
if ($okteto_divert_baggage ~ "^(.*?)(?:,[ \t]*okteto-divert[ \t]*=[^,]*)+(.*)$") { set $okteto_divert_baggage "$1$2"; }
if ($okteto_divert_baggage ~ ",[ \t]*okteto-divert[ \t]*=") { return 400 "baggage: too many separate okteto-divert members\n"; }
proxy_set_header baggage "okteto-divert=bob$okteto_divert_baggage";
# divert-webhook end
"#;

pub fn nginx_settings(legacy_header: bool) -> Settings {
    let mut settings = Settings::new(Driver::Nginx, Selector::everything(), Some("divert-system"), &[]);
    settings.legacy_header = legacy_header;
    settings
}

/// An Ingress in namespace `cindy` with these annotations (omitted when `null`).
pub fn ingress(annotations: Value) -> Value {
    let mut metadata = json!({"name": "web", "namespace": "cindy", "uid": "0b3c1f6e-2d41-4bb8-9c55-3b8ad7f1e0aa"});
    if !annotations.is_null() {
        metadata["annotations"] = annotations;
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{"host": "web-cindy.example.com", "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 8080}}}
            }]}}]
        }
    })
}

/// The body the apiserver POSTs for a CREATE of `object` in `namespace`.
pub fn admission_review(object: &Value, namespace: &str) -> Vec<u8> {
    let gvk = json!({"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"});
    let gvr = json!({"group": "networking.k8s.io", "version": "v1", "resource": "ingresses"});
    let mut review = json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "3f2a9c1e-7b4d-4e0a-9d61-5c8e2b7a4f10",
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "cindy@example.com", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"}
        }
    });
    // The apiserver leaves `name` out when the object has none yet (generateName).
    if let Some(name) = object.pointer("/metadata/name") {
        review["request"]["name"] = name.clone();
    }
    serde_json::to_vec(&review).unwrap()
}

/// The `response` of the answer to `endpoint` for `object`.
pub fn answer(endpoint: Endpoint, object: &Value, namespace: &str, settings: &Settings) -> Value {
    let (body, _summary) = review(endpoint, &admission_review(object, namespace), settings).expect("review answered");
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["uid"], "3f2a9c1e-7b4d-4e0a-9d61-5c8e2b7a4f10");
    answer["response"].clone()
}

/// The decoded JSONPatch of a mutation answer (empty when there is none; then there must be
/// no patchType either).
pub fn patch_of(response: &Value) -> json_patch::Patch {
    match response.get("patch").and_then(Value::as_str) {
        Some(encoded) => {
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).expect("patch is base64");
            serde_json::from_slice(&bytes).expect("patch is a JSONPatch")
        }
        None => {
            assert!(response.get("patchType").is_none_or(Value::is_null), "patchType without patch: {response}");
            json_patch::Patch(Vec::new())
        }
    }
}

/// `object` as the mutating webhook leaves it, and the patch that did it.
pub fn mutate_with_patch(object: &Value, settings: &Settings) -> (Value, json_patch::Patch) {
    let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("cindy");
    let response = answer(Endpoint::Mutate, object, namespace, settings);
    assert_eq!(response["allowed"], true, "{response}");
    let patch = patch_of(&response);
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch).expect("the webhook's patch applies");
    (patched, patch)
}

pub fn mutate(object: &Value, settings: &Settings) -> Value {
    mutate_with_patch(object, settings).0
}

/// The validating webhook's `response` for `object`.
pub fn validate(object: &Value, settings: &Settings) -> Value {
    let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("cindy");
    answer(Endpoint::Validate, object, namespace, settings)
}

pub fn snippet_of(object: &Value) -> Option<&str> {
    object.pointer("/metadata/annotations")?.get(SNIPPET)?.as_str()
}

/// The snippet without its divert block (the user's own lines), and the block alone.
pub fn split_block(snippet: &str) -> (String, String) {
    let (mut user, mut block) = (String::new(), String::new());
    let mut inside = false;
    for line in snippet.split_inclusive('\n') {
        if line.trim() == BEGIN {
            inside = true;
        }
        if inside {
            block.push_str(line)
        } else {
            user.push_str(line)
        }
        if line.trim() == END {
            inside = false;
        }
    }
    (user, block)
}
