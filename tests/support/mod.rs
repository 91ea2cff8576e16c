//! Shared by the in-process rule tests: build AdmissionReviews the way the kube-apiserver does,
//! read the answers the way it does (base64 JSONPatch), apply patches with json-patch, and walk
//! the corpus in ../shared/corpus.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use divert_webhook::review::{Endpoint, Outcome, review};
use divert_webhook::settings::Settings;
use serde_json::{Value, json};

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus")
}

/// A Namespace manifest with these labels and annotations.
pub fn namespace(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Value {
    let mut metadata = json!({"name": name});
    if !labels.is_empty() {
        metadata["labels"] = labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    }
    if !annotations.is_empty() {
        metadata["annotations"] = annotations.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    }
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata})
}

/// The AdmissionReview the apiserver sends for a CREATE of `object`.
pub fn review_of(object: &Value) -> Value {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let kind = object["kind"].as_str().unwrap_or("");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let resource = format!("{}s", kind.to_ascii_lowercase()).replace("ingresss", "ingresses");
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    let mut request = json!({
        "uid": "3c8b0d5e-6d62-4f8a-9a4b-7d1b2c3e4f50",
        "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(""),
        "operation": "CREATE",
        "userInfo": {"username": "cindy@example.com", "groups": ["system:authenticated"]},
        "object": object, "oldObject": null, "dryRun": false,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
    });
    if kind != "Namespace" {
        request["namespace"] =
            json!(object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default"));
    }
    json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request})
}

/// An answered review, as the apiserver would read it.
pub struct Answer {
    pub response: Value,
    pub outcome: Outcome,
}

impl Answer {
    /// The JSONPatch operations (empty when there is no patch).
    pub fn ops(&self) -> Value {
        match self.response.get("patch") {
            None => json!([]),
            Some(p) => {
                assert_eq!(self.response["patchType"], "JSONPatch");
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(p.as_str().expect("patch is a base64 string"))
                    .expect("patch is base64");
                serde_json::from_slice(&bytes).expect("patch is JSON")
            }
        }
    }

    pub fn apply_to(&self, object: &Value) -> Value {
        let patch: json_patch::Patch = serde_json::from_value(self.ops()).expect("patch is RFC 6902");
        let mut out = object.clone();
        json_patch::patch(&mut out, &patch).expect("patch applies");
        out
    }

    pub fn warnings(&self) -> Vec<String> {
        self.response["warnings"]
            .as_array()
            .map(|w| w.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }
}

pub fn ask(endpoint: Endpoint, review_json: &Value, settings: &Settings) -> Answer {
    let body = serde_json::to_vec(review_json).unwrap();
    let (answer, summary) = review(endpoint, &body, settings).expect("a well-formed review is answered");
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = answer["response"].clone();
    assert_eq!(response["uid"], review_json["request"]["uid"], "uid echoed");
    for w in response["warnings"].as_array().into_iter().flatten() {
        assert!(w.as_str().unwrap().chars().count() < 120, "warning of 120 characters or more: {w}");
    }
    Answer { response, outcome: summary.outcome }
}

/// Every document of `kind` in corpus/<folder> and corpus/multidoc, with its file name.
pub fn corpus_objects(folder: &str, kind: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for dir in [folder, "multidoc"] {
        let mut files: Vec<_> = std::fs::read_dir(corpus_dir().join(dir))
            .unwrap_or_else(|e| panic!("corpus folder {dir}: {e} (is ../shared beside the repo?)"))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            let docs: Vec<Value> =
                serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for doc in docs.into_iter().filter(|d| d["kind"] == kind) {
                out.push((path.file_name().unwrap().to_string_lossy().into_owned(), doc));
            }
        }
    }
    out
}

/// Every field of `original` is present in `patched` with an equal value (objects may gain
/// keys; arrays must be equal). `context` names the file in the failure.
pub fn assert_contains(original: &Value, patched: &Value, context: &str) {
    fn walk(o: &Value, p: &Value, path: &mut String, context: &str) {
        match (o, p) {
            (Value::Object(om), Value::Object(pm)) => {
                for (k, ov) in om {
                    let len = path.len();
                    path.push('/');
                    path.push_str(k);
                    match pm.get(k) {
                        Some(pv) => walk(ov, pv, path, context),
                        None => panic!("{context}: field {path} was lost"),
                    }
                    path.truncate(len);
                }
            }
            _ => assert_eq!(o, p, "{context}: field {path} changed"),
        }
    }
    walk(original, patched, &mut String::new(), context);
}

pub fn endpoint_name(e: Endpoint) -> &'static str {
    e.as_str()
}
