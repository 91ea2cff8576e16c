//! Nothing lost (SPEC §6, §8): every real Ingress of the shared corpus, with and without the
//! divert header annotation, goes through the mutating webhook; everything but the snippet
//! annotation comes back equal and in the same order, the snippet keeps the user's lines byte
//! for byte after the block, and removing the annotation gives the original object back.

mod ingress_support;

use std::path::{Path, PathBuf};

use divert_webhook::review::Endpoint;
use ingress_support::*;
use serde_json::Value;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus");

fn yaml_files(folder: &str) -> Vec<PathBuf> {
    let dir = Path::new(CORPUS).join(folder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus folder {} unreadable: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// Every `networking.k8s.io/v1` Ingress of ingresses/ and multidoc/, named by file.
fn corpus_ingresses() -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for path in yaml_files("ingresses").into_iter().chain(yaml_files("multidoc")) {
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
        for (i, doc) in docs.into_iter().enumerate() {
            if doc["kind"] == "Ingress" && doc["apiVersion"] == "networking.k8s.io/v1" {
                found.push((format!("{} doc {i}", path.file_name().unwrap().to_string_lossy()), doc));
            }
        }
    }
    found
}

/// `object` without the snippet annotation (and without an annotations map the webhook had to
/// create), serialised in order: what must not change.
fn without_snippet(object: &Value, had_annotations: bool) -> String {
    let mut object = object.clone();
    if let Some(annotations) = object.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        annotations.remove(SNIPPET);
        if annotations.is_empty() && !had_annotations {
            object["metadata"].as_object_mut().unwrap().remove("annotations");
        }
    }
    serde_json::to_string(&object).unwrap()
}

fn with_header(object: &Value, key: &str) -> Value {
    let mut object = object.clone();
    // One corpus Ingress has no metadata at all (a docs excerpt).
    let metadata =
        object.as_object_mut().unwrap().entry("metadata").or_insert_with(|| Value::Object(Default::default()));
    let metadata = metadata.as_object_mut().unwrap();
    let annotations = metadata.entry("annotations").or_insert_with(|| Value::Object(Default::default()));
    annotations[HEADER] = key.into();
    object
}

#[test]
fn the_corpus_has_ingresses_with_snippets() {
    let ingresses = corpus_ingresses();
    assert!(ingresses.len() >= 70, "only {} Ingresses found under {CORPUS}", ingresses.len());
    assert!(ingresses.iter().filter(|(_, o)| snippet_of(o).is_some()).count() >= 2);
    assert!(ingresses.iter().any(|(name, _)| name.starts_with("ingress-nginx--docs_examples_auth_oauth")));
}

#[test]
fn corpus_ingresses_without_the_annotation_are_left_untouched() {
    for legacy in [false, true] {
        let settings = nginx_settings(legacy);
        for (name, object) in corpus_ingresses() {
            let (mutated, patch) = mutate_with_patch(&object, &settings);
            assert!(patch.0.is_empty(), "{name}: patched without divert annotation: {patch:?}");
            assert_eq!(serde_json::to_string(&mutated).unwrap(), serde_json::to_string(&object).unwrap(), "{name}");
            let response = validate(&object, &settings);
            assert_eq!(response["allowed"], true, "{name}: {response}");
        }
    }
}

/// ingress-nginx ignores a canary Ingress's snippet: it gets no block (issue 8).
fn is_canary(object: &Value) -> bool {
    object.pointer("/metadata/annotations/nginx.ingress.kubernetes.io~1canary").and_then(Value::as_str) == Some("true")
}

#[test]
fn corpus_ingresses_with_the_annotation_lose_nothing() {
    let mut canaries = 0;
    for legacy in [false, true] {
        let settings = nginx_settings(legacy);
        for (name, original) in corpus_ingresses() {
            let had_annotations = original.pointer("/metadata/annotations").is_some();
            let annotated = with_header(&original, "cindy");
            let (mutated, patch) = mutate_with_patch(&annotated, &settings);
            let namespace = original.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("cindy");
            if settings.is_protected(namespace) {
                assert!(patch.0.is_empty(), "{name}: namespace {namespace} is protected: {patch:?}");
                continue;
            }
            if is_canary(&original) {
                assert!(patch.0.is_empty(), "{name}: a canary got a block: {patch:?}");
                let response = answer(Endpoint::Mutate, &annotated, namespace, &settings);
                assert_eq!(
                    response["warnings"],
                    serde_json::json!([
                        "canary Ingress: ingress-nginx ignores its configuration-snippet; set divert.okteto.com/header on the main Ingress"
                    ]),
                    "{name}"
                );
                canaries += 1;
                continue;
            }
            assert_eq!(patch.0.len(), 1, "{name}: one operation on the snippet expected: {patch:?}");

            // Every other field: present, equal, same order.
            assert_eq!(
                without_snippet(&mutated, had_annotations),
                without_snippet(&annotated, had_annotations),
                "{name}"
            );

            // The block, then the user's snippet lines byte for byte.
            let snippet = snippet_of(&mutated).unwrap_or_else(|| panic!("{name}: no snippet"));
            let (user, block) = split_block(snippet);
            let users_own = snippet_of(&original).unwrap_or("");
            assert_eq!(user, users_own, "{name}");
            assert_eq!(snippet, format!("{block}{users_own}"), "{name}");
            assert!(block.contains("okteto-divert=cindy"), "{name}: {block}");
            assert_eq!(block.contains("baggage.okteto-divert"), legacy, "{name}");

            // Allowed, idempotent, and removing the annotation restores the original exactly.
            assert_eq!(validate(&mutated, &settings)["allowed"], true, "{name}");
            assert!(mutate_with_patch(&mutated, &settings).1.0.is_empty(), "{name}: second pass patched");
            let mut unannotated = mutated.clone();
            unannotated["metadata"]["annotations"].as_object_mut().unwrap().remove(HEADER);
            let restored = mutate(&unannotated, &settings);
            let mut expected = annotated.clone();
            expected["metadata"]["annotations"].as_object_mut().unwrap().remove(HEADER);
            assert_eq!(serde_json::to_string(&restored).unwrap(), serde_json::to_string(&expected).unwrap(), "{name}");
        }
    }
    assert!(canaries >= 2 * 5, "the corpus's canary Ingresses were seen: {canaries}");
}
