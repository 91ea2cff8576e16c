//! Shared by the `virtual_service_*` tests: VirtualServices go through the real review path
//! (an AdmissionReview as the kube-apiserver sends it, `divert_webhook::review::review`, the
//! base64 JSONPatch decoded and applied with `json_patch`).
#![allow(dead_code)] // each test binary uses a different part

use base64::Engine as _;
use divert_webhook::cluster::ClusterView;
use divert_webhook::deadline::Deadline;
use divert_webhook::review::{Endpoint, review_in};
use divert_webhook::settings::Settings;
use serde_json::{Value, json};

/// What the mutating webhook answered for one object.
pub struct Mutated {
    pub object: Value,
    pub warnings: Vec<String>,
    /// The decoded JSONPatch (an empty list when the answer carried none).
    pub patch: Vec<Value>,
}

/// An AdmissionReview for `object` (a VirtualService), shaped like the tests/fixtures ones.
pub fn admission_review(object: &Value, operation: &str) -> Value {
    let api_version = object["apiVersion"].as_str().unwrap_or("networking.istio.io/v1");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or("VirtualService");
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": "virtualservices"});
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": object.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
            "namespace": object.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
            "operation": operation,
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": object,
            "oldObject": if operation == "UPDATE" { object.clone() } else { Value::Null },
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"}
        }
    })
}

/// Sends `object` to the mutating webhook's review path and applies the answer's patch.
pub fn mutate(object: &Value, settings: &Settings) -> Mutated {
    mutate_in(object, settings, ClusterView::none())
}

/// [`mutate`], with what the webhook knows of the cluster (SPEC §10).
pub fn mutate_in(object: &Value, settings: &Settings, cluster: &ClusterView) -> Mutated {
    let body = serde_json::to_vec(&admission_review(object, "CREATE")).unwrap();
    let (answer, _) = review_in(Endpoint::Mutate, &body, settings, cluster, Deadline::NONE).expect("a readable review");
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    let response = &answer["response"];
    assert_eq!(response["uid"], "0df28fbd-5f5f-11e8-bc74-36e6bb280816");
    assert_eq!(response["allowed"], true, "{answer}");
    let warnings: Vec<String> = serde_json::from_value(response["warnings"].clone()).unwrap_or_default();
    let mut mutated = object.clone();
    let patch: Vec<Value> = match response.get("patch") {
        None | Some(Value::Null) => {
            assert!(response.get("patchType").is_none_or(Value::is_null), "patchType without a patch: {answer}");
            Vec::new()
        }
        Some(encoded) => {
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD.decode(encoded.as_str().unwrap()).unwrap();
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            json_patch::patch(&mut mutated, &patch).expect("the patch applies");
            assert!(!patch.0.is_empty(), "an empty patch was sent");
            serde_json::from_slice(&bytes).unwrap()
        }
    };
    for op in &patch {
        let path = op["path"].as_str().unwrap();
        assert!(!matches!(path, "" | "/spec" | "/metadata" | "/spec/http"), "whole-object replace {op}");
    }
    Mutated { object: mutated, warnings, patch }
}

/// A divert entry annotation: `divert.okteto.com/<40 hex>` chosen from `seed`, as Okteto's CLI
/// writes (the hash of the developer's manifest).
pub fn entry_annotation(seed: usize) -> String {
    format!("divert.okteto.com/{:040x}", seed as u128 * 0x9e37_79b9_7f4a_7c15 + 1)
}

pub fn entry_value(namespace: &str, routes: &[&str]) -> String {
    json!({"namespace": namespace, "routes": routes}).to_string()
}
