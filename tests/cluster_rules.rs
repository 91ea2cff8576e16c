//! SPEC §10 at admission, through the real review path with a cluster view: the `services` of a
//! divert entry (§4), "only what the developer runs" (§10.4), the header opt-in of developer
//! namespaces (§10.3). Without a cluster (`ClusterView::none()`) every answer is today's.

mod ingress_support;
mod support;
mod virtual_service_support;

use std::collections::BTreeMap;

use divert_webhook::cluster::ClusterView;
use divert_webhook::deadline::Deadline;
use divert_webhook::review::{Endpoint, review_in};
use divert_webhook::settings::Settings;
use serde_json::{Value, json};
use virtual_service_support::{admission_review, entry_annotation, mutate, mutate_in};

const FROM: &str = "divert.okteto.com/from";

/// `staging/shop`: route `api` to Services api (v1/v2), route `web` to web, route `ext` outside,
/// route `both` to api and web; diverted by the given entry values.
fn shop(entries: &[Value]) -> Value {
    let annotations: serde_json::Map<String, Value> =
        entries.iter().enumerate().map(|(i, e)| (entry_annotation(i), json!(e.to_string()))).collect();
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "shop", "namespace": "staging", "annotations": annotations},
        "spec": {"hosts": ["shop.example.com"], "http": [
            {"name": "api", "match": [{"uri": {"prefix": "/api"}}], "route": [
                {"destination": {"host": "api", "subset": "v1"}, "weight": 90},
                {"destination": {"host": "api.staging.svc.cluster.local", "subset": "v2"}, "weight": 10},
            ]},
            {"name": "web", "match": [{"uri": {"prefix": "/web"}}], "route": [{"destination": {"host": "web"}}]},
            {"name": "ext", "match": [{"uri": {"prefix": "/ext"}}], "route": [{"destination": {"host": "ext.example.com"}}]},
            {"name": "both", "route": [
                {"destination": {"host": "api"}, "weight": 50},
                {"destination": {"host": "web.staging"}, "weight": 50},
            ]},
        ]}
    })
}

fn routes_by_name(object: &Value) -> BTreeMap<String, Value> {
    object["spec"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

fn names(object: &Value) -> Vec<&str> {
    object["spec"]["http"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect()
}

/// A cluster: `staging` runs api and web; each developer namespace is labelled from staging and
/// runs the Services given.
fn cluster(developers: &[(&str, &[&str])]) -> ClusterView {
    let mut view = ClusterView::empty_cluster();
    view.add_namespace("staging", BTreeMap::new());
    for service in ["api", "web"] {
        view.add_service("staging", service);
    }
    for (name, services) in developers {
        view.add_namespace(name, BTreeMap::from([(FROM.to_string(), "staging".to_string())]));
        for service in *services {
            view.add_service(name, service);
        }
    }
    view
}

/// The `response` of `endpoint` for `body`.
fn answer(endpoint: Endpoint, body: &[u8], settings: &Settings, cluster: &ClusterView) -> Value {
    let (answer, _) = review_in(endpoint, body, settings, cluster, Deadline::NONE).expect("answered");
    serde_json::from_slice::<Value>(&answer).unwrap()["response"].clone()
}

#[test]
fn an_entry_with_services_diverts_only_those() {
    let object = shop(&[json!({"namespace": "cindy", "services": ["api"]})]);
    // The same with a cluster or without: the list decides.
    for view in [ClusterView::none().clone(), cluster(&[("cindy", &["web"])])] {
        let out = mutate_in(&object, &Settings::default(), &view);
        assert_eq!(
            names(&out.object),
            ["okteto-divert-cindy-api", "api", "web", "ext", "okteto-divert-cindy-both", "both"]
        );
        let routes = routes_by_name(&out.object);
        assert_eq!(
            routes["okteto-divert-cindy-api"]["route"],
            json!([{"destination": {"host": "api.cindy.svc.cluster.local"}}]),
            "subsets dropped, merged, the lone destination's weight gone"
        );
        assert_eq!(
            routes["okteto-divert-cindy-both"]["route"],
            json!([
                {"destination": {"host": "api.cindy.svc.cluster.local"}, "weight": 50},
                {"destination": {"host": "web.staging"}, "weight": 50},
            ]),
            "web is not listed: it stays in staging"
        );
        assert_eq!(
            out.warnings,
            [
                "divert of cindy: route web sends to none of the entry's services: not diverted",
                "route ext has no destination in namespace staging: not diverted",
            ]
        );
        assert_eq!(mutate_in(&out.object, &Settings::default(), &view).patch, Vec::<Value>::new(), "a fixed point");
    }
}

#[test]
fn services_of_a_developers_entries_are_read_together() {
    // Two entries for cindy listing services: their union. One without: what cindy runs.
    let listed = shop(&[
        json!({"namespace": "cindy", "services": ["api"], "routes": ["api"]}),
        json!({"namespace": "cindy", "services": ["web"], "routes": ["web"]}),
    ]);
    let out = mutate(&listed, &Settings::default());
    assert_eq!(names(&out.object), ["okteto-divert-cindy-api", "api", "okteto-divert-cindy-web", "web", "ext", "both"]);
    let mixed =
        shop(&[json!({"namespace": "cindy", "services": ["web"]}), json!({"namespace": "cindy", "routes": ["api"]})]);
    let out = mutate_in(&mixed, &Settings::default(), &cluster(&[("cindy", &["api"])]));
    assert_eq!(
        names(&out.object),
        ["okteto-divert-cindy-api", "api", "web", "ext", "okteto-divert-cindy-both", "both"]
    );
}

#[test]
fn services_that_are_not_a_list_of_strings_are_denied() {
    for (value, says) in [
        (json!({"namespace": "cindy", "services": "api"}), "\"services\" is not a list"),
        (
            json!({"namespace": "cindy", "services": ["api", 7]}),
            "\"services\"[1] is 7 (not a string); list Service names as strings",
        ),
    ] {
        let body = serde_json::to_vec(&admission_review(&shop(&[value]), "CREATE")).unwrap();
        let response = answer(Endpoint::Validate, &body, &Settings::default(), ClusterView::none());
        assert_eq!(response["allowed"], false);
        let message = response["status"]["message"].as_str().unwrap();
        assert!(message.starts_with("VirtualService staging/shop: metadata.annotations"), "{message}");
        assert!(message.contains(says), "{message}");
    }
}

#[test]
fn with_a_cluster_entries_without_services_divert_only_what_the_developer_runs() {
    let object = shop(&[json!({"namespace": "cindy"})]);
    // No cluster: every destination in staging, as SPEC §4.4 says.
    let offline = mutate(&object, &Settings::default());
    assert_eq!(
        names(&offline.object),
        ["okteto-divert-cindy-api", "api", "okteto-divert-cindy-web", "web", "ext", "okteto-divert-cindy-both", "both"]
    );
    assert_eq!(mutate_in(&object, &Settings::default(), ClusterView::none()).object, offline.object);

    // cindy runs web only.
    let out = mutate_in(&object, &Settings::default(), &cluster(&[("cindy", &["web", "other"])]));
    assert_eq!(
        names(&out.object),
        ["api", "okteto-divert-cindy-web", "web", "ext", "okteto-divert-cindy-both", "both"]
    );
    assert_eq!(
        routes_by_name(&out.object)["okteto-divert-cindy-both"]["route"],
        json!([
            {"destination": {"host": "api"}, "weight": 50},
            {"destination": {"host": "web.cindy.svc.cluster.local"}, "weight": 50},
        ])
    );
    assert_eq!(
        out.warnings,
        [
            "divert of cindy: route api sends to no Service that cindy runs: not diverted",
            "route ext has no destination in namespace staging: not diverted",
        ]
    );
    // cindy is gone from the cluster: nothing is diverted, and what was generated goes.
    let gone = mutate_in(&out.object, &Settings::default(), &cluster(&[]));
    assert_eq!(names(&gone.object), ["api", "web", "ext", "both"]);
    assert!(
        gone.warnings
            .iter()
            .any(|w| w == "divert of cindy: route web sends to no Service that cindy runs: not diverted")
    );
}

/// A VirtualService of namespace `namespace` with one route to `web`.
fn developer_vs(namespace: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": namespace, "annotations": annotations},
        "spec": {"hosts": ["web"], "http": [{"route": [{"destination": {"host": "web"}}]}]}
    })
}

#[test]
fn virtual_services_of_a_developer_namespace_get_the_header_at_once() {
    let view = cluster(&[("cindy", &["web"])]);
    let out = mutate_in(&developer_vs("cindy", json!({})), &Settings::default(), &view);
    assert_eq!(
        out.object["spec"]["http"][0]["headers"],
        json!({"request": {"add": {"baggage": "okteto-divert=cindy"}}})
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(mutate_in(&out.object, &Settings::default(), &view).patch, Vec::<Value>::new(), "a fixed point");
    // An annotation someone wrote decides.
    let annotated = developer_vs("cindy", json!({"divert.okteto.com/header": "team-a"}));
    let out = mutate_in(&annotated, &Settings::default(), &view);
    assert_eq!(out.object["spec"]["http"][0]["headers"]["request"]["add"]["baggage"], "okteto-divert=team-a");
    // Not a developer namespace, or no cluster: nothing.
    for (namespace, view) in [("staging", view.clone()), ("cindy", ClusterView::none().clone())] {
        let object = developer_vs(namespace, json!({}));
        assert_eq!(mutate_in(&object, &Settings::default(), &view).patch, Vec::<Value>::new(), "{namespace}");
    }
    // A namespace whose label is not valid (§10.1) is not a developer namespace.
    let mut bad = ClusterView::empty_cluster();
    bad.add_namespace("cindy", BTreeMap::from([(FROM.to_string(), "cindy".to_string())]));
    assert_eq!(mutate_in(&developer_vs("cindy", json!({})), &Settings::default(), &bad).patch, Vec::<Value>::new());
}

#[test]
fn ingresses_of_a_developer_namespace_get_the_header_under_the_nginx_driver() {
    let settings = ingress_support::nginx_settings(false);
    let view = cluster(&[("cindy", &["web"])]);
    let object = ingress_support::ingress(Value::Null);
    let body = ingress_support::admission_review(&object, "cindy");
    let response = answer(Endpoint::Mutate, &body, &settings, &view);
    assert!(response.get("patch").is_some(), "{response}");
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &ingress_support::patch_of(&response)).unwrap();
    let snippet = ingress_support::snippet_of(&patched).expect("a snippet");
    assert!(snippet.contains("okteto-divert=cindy"), "{snippet}");
    // Again: nothing more to do; and validation of the result passes.
    let body = ingress_support::admission_review(&patched, "cindy");
    assert!(answer(Endpoint::Mutate, &body, &settings, &view).get("patch").is_none());
    assert_eq!(answer(Endpoint::Validate, &body, &settings, &view)["allowed"], true);
    // No cluster: nothing.
    let body = ingress_support::admission_review(&object, "cindy");
    assert!(answer(Endpoint::Mutate, &body, &settings, ClusterView::none()).get("patch").is_none());
}
