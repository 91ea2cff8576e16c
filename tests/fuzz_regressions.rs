//! What the fuzz targets (fuzz/, docs/fuzzing.md) found, kept as tests. Each case is the
//! finding reduced by hand to the fields that matter.

mod support;

use divert_webhook::review::{Endpoint, review};
use divert_webhook::selector::Selector;
use divert_webhook::settings::{Driver, Settings};
use serde_json::{Value, json};
use support::{ask, review_of};

fn nginx() -> Settings {
    Settings::new(Driver::Nginx, Selector::parse("").unwrap(), None, &[])
}

fn assert_printable(text: &str) {
    assert!(!text.chars().any(char::is_control), "control character in {text:?}");
}

/// rules_namespace, found on 5c3fde9: a label value with line breaks was quoted raw in the
/// "enables Istio, but this cluster's divert driver is nginx" denial (fixed on main by c4c2f9e).
#[test]
fn a_mesh_label_value_with_control_characters_is_escaped_in_the_denial() {
    for value in ["{\r\n{\r\n", "# divert-webhook begin\n", "x\u{1}\u{13}y"] {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "cindy", "labels": {"istio.io/rev": value}}});
        let answer = ask(Endpoint::Validate, &review_of(&namespace), &nginx());
        assert_eq!(answer.response["allowed"], false, "{}", answer.response);
        let message = answer.response["status"]["message"].as_str().unwrap();
        assert_printable(message);
        assert!(message.contains("istio.io/rev"), "{message}");
    }
}

/// rules_ingress, found on 5c3fde9: the object's namespace, as the review sends it, was quoted
/// raw in a denial (the apiserver validates names only after mutating admission).
#[test]
fn a_namespace_with_control_characters_is_escaped_in_an_ingress_denial() {
    let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "app", "namespace": "# divert-webhook begin\n",
            "annotations": {"divert.okteto.com/header": 1}}});
    let answer = ask(Endpoint::Validate, &review_of(&ingress), &nginx());
    assert_eq!(answer.response["allowed"], false, "{}", answer.response);
    let message = answer.response["status"]["message"].as_str().unwrap();
    assert_printable(message);
    assert!(message.contains("is not a string"), "{message}");
}

/// review, found on 2f8b466: a body with invalid UTF-8 inside a field the webhook does not read
/// (`request.resource.resource`) is answered, since serde skips such fields unchecked. Harmless
/// (the apiserver sends valid JSON), and the answer is still a well-formed review echoing the uid;
/// invalid UTF-8 in a field it reads is refused.
#[test]
fn invalid_utf8_in_a_field_the_webhook_skips_is_answered() {
    let settings = Settings::default();
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cindy"}});
    let body = serde_json::to_vec(&review_of(&namespace)).unwrap();
    let marker = b"\"namespaces\"";
    let at = body.windows(marker.len()).position(|w| w == marker).expect("the resource field");
    let mut skipped = body.clone();
    skipped[at + 2] = 0x90; // "n\x90mespaces": not UTF-8
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        let (answer, _) = review(endpoint, &skipped, &settings).expect("answered");
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["response"]["uid"], "3c8b0d5e-6d62-4f8a-9a4b-7d1b2c3e4f50");
    }
    let marker = b"\"cindy\"";
    let at = body.windows(marker.len()).position(|w| w == marker).expect("the name");
    let mut read = body;
    read[at + 2] = 0x90;
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        let refused = review(endpoint, &read, &settings).expect_err("invalid UTF-8 in the object is refused");
        assert!(!refused.to_string().contains('\n'), "{refused}");
    }
}

/// patch_diff, found on 2f8b466: `patch::diff` returns its own encoded patch decoded again, and
/// serde_json's default float parser can land one unit in the last place off for long
/// mantissas (1.9107794261600437e+214 came back ...435e+214), so the patch no longer gave the
/// target. The same parser reads the admitted object, so a float in a cloned route could change.
/// Fixed with serde_json's `float_roundtrip` feature.
#[test]
fn floats_survive_the_patch_exactly() {
    for float in [1.9107794261600437e214, 5.4810834916123085e-143, 0.1, 2.2250738585072014e-308] {
        let old = json!({"spec": {"http": [{"name": "a"}]}});
        let new = json!({"spec": {"http": [{"name": "b", "fault": {"delay": {"percentage": {"value": float}}}}, {"name": "a"}]}});
        let mut applied = old.clone();
        json_patch::patch(&mut applied, &divert_webhook::patch::diff(&old, &new)).unwrap();
        assert_eq!(applied, new, "{float:e}");
        let text = serde_json::to_string(&new).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), new, "{float:e} read back from {text}");
    }
}
