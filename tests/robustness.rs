//! Any object, however odd its shape, gets an answer: no panic, a patch that applies, and a
//! mutation that is a fixed point. Objects are generated from the field names the rules read, so
//! the rules' code paths see wrong types, missing parts and odd values in every position.

mod support;

use divert_webhook::review::{Endpoint, Outcome};
use divert_webhook::selector::Selector;
use divert_webhook::settings::{Driver, Settings};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use support::{ask, review_of};

const KEYS: &[&str] = &[
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "spec",
    "http",
    "tcp",
    "tls",
    "route",
    "match",
    "headers",
    "withoutHeaders",
    "request",
    "response",
    "set",
    "add",
    "remove",
    "baggage",
    "destination",
    "host",
    "subset",
    "weight",
    "uri",
    "regex",
    "exact",
    "prefix",
    "redirect",
    "delegate",
    "rules",
    "hosts",
    "istio-injection",
    "istio.io/rev",
    "linkerd.io/inject",
    "divert.okteto.com/header",
    "divert.okteto.com/2615052508acbfaddeba0eeded4131631ea31a02",
    "divert.okteto.com/cindy-app",
    "nginx.ingress.kubernetes.io/configuration-snippet",
    "dev.okteto.com/okteto-managed",
];

const STRINGS: &[&str] = &[
    "",
    "cindy",
    "staging",
    "true",
    "enabled",
    "disabled",
    "ingress",
    "svc",
    "svc.staging",
    "*.example.com",
    "okteto-divert=cindy",
    "okteto-divert:cindy",
    "baggage.okteto-divert=x",
    "(?=x)",
    "a{2,1}",
    "[",
    r#"{"namespace":"cindy"}"#,
    r#"{"namespace":"cindy","routes":["a",1]}"#,
    r#"{"namespace":"staging"}"#,
    "{not json",
    "okteto-divert-cindy-0",
    "# divert-webhook begin\n",
    "# divert-webhook end\n",
    "proxy_set_header okteto-divert cindy;",
    "more_set_headers \"x: y\";\n# divert-webhook begin",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..200).prop_map(Value::from),
        prop::sample::select(STRINGS).prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|fields| Value::Object(
                fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>()
            )),
        ]
    })
}

fn kinds() -> impl Strategy<Value = (&'static str, &'static str)> {
    prop::sample::select(vec![
        ("v1", "Namespace"),
        ("networking.istio.io/v1", "VirtualService"),
        ("networking.istio.io/v1alpha3", "VirtualService"),
        ("networking.k8s.io/v1", "Ingress"),
    ])
}

fn settings_for(nginx: bool, legacy: bool) -> Settings {
    let driver = if nginx { Driver::Nginx } else { Driver::Istio };
    let mut s = Settings::new(driver, Selector::parse("").unwrap(), None, &[]);
    s.legacy_header = legacy;
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn any_object_is_answered_and_mutation_is_a_fixed_point(
        (api_version, kind) in kinds(),
        metadata in value(),
        spec in value(),
        nginx in any::<bool>(),
        legacy in any::<bool>(),
    ) {
        let settings = settings_for(nginx, legacy);
        let mut object = json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec});
        // the apiserver always sends a namespace for namespaced kinds
        if kind != "Namespace" && object["metadata"].is_object() {
            object["metadata"]["namespace"] = json!("staging");
        }
        let review = review_of(&object);
        let validated = ask(Endpoint::Validate, &review, &settings);
        prop_assert!(validated.outcome != Outcome::Patched);
        let mutated = ask(Endpoint::Mutate, &review, &settings);
        prop_assert!(mutated.outcome != Outcome::Denied);
        let once = mutated.apply_to(&object);
        let again = ask(Endpoint::Mutate, &review_of(&once), &settings);
        prop_assert_eq!(again.outcome, Outcome::Allowed, "second pass patched {} from {}", again.ops(), once);
    }
}

#[test]
fn bodies_that_are_not_reviews_get_a_one_line_reason() {
    let settings = Settings::default();
    let cases: &[&[u8]] = &[
        b"",
        b"not json",
        b"[]",
        b"{}",
        br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x"}}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","kind":{"group":"","version":"v1","kind":"Namespace"},"resource":{"group":"","version":"v1","resource":"namespaces"},"operation":"CREATE","userInfo":{},"object":"a string"}}"#,
        &[0xff, 0xfe, 0x00],
    ];
    for body in cases {
        for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
            let err =
                divert_webhook::review::review(endpoint, body, &settings).expect_err(&String::from_utf8_lossy(body));
            assert!(!err.0.is_empty() && !err.0.contains('\n') && err.0.len() <= 200, "{:?}", err.0);
        }
    }
}
