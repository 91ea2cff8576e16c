//! SPEC §11.1: developer routes move a developer's requests, and nothing else.
//!
//! A route evaluator (tests/http_route_support) implements Gateway API precedence across the
//! routes attached to one parent: path kind and length, method, header count, query count, then
//! route age (creationTimestamp), then namespace/name, then rule order; the baggage match (and
//! every other regex) runs through RE2, anchored to the whole value as Envoy does and as an
//! unanchored search as Linkerd does. For scenarios of shared routes (corpus routes, pairs of
//! corpus routes that are meant to share a parent, and the tie of issue 10), a table of requests
//! built from every match, with and without each developer's baggage, goes through the routes
//! before divert and through the routes plus the developer routes the reconciler plans:
//! - without a developer's key (no baggage, other members, a near miss), every request reaches
//!   the very same rule;
//! - with developer D's key, the request reaches the mirror of the rule it reached before, with
//!   the backends of the Services D runs in namespace D and the others where they were.

mod http_route_support;

use std::collections::BTreeMap;

use divert_webhook::cluster::http_routes::{self, OwnedChange, developer_route_name};
use divert_webhook::re2::Anchoring;
use divert_webhook::settings::Settings;
use http_route_support::{Request, Verdict, cluster, corpus, evaluate, routed_services, stored_in_staging};
use serde_json::{Value, json};

/// Baggage values of the table, and the developer each one carries.
const BAGGAGE: &[(Option<&str>, Option<&str>)] = &[
    (None, None),
    (Some("okteto-divert=cindy"), Some("cindy")),
    (Some("a=1, okteto-divert = zed;p=1"), Some("zed")),
    (Some("okteto-divert=cindy-2"), None),
    (Some("a=1;okteto-divert=cindy"), None),
    (Some("tracing=abc"), None),
];

/// Requests that satisfy each match of the routes, and each pair of matches at once (so that
/// rules of different specificity compete), on the exact path or under the prefix.
fn requests(routes: &[Value]) -> Vec<Request> {
    let matches: Vec<&Value> = routes
        .iter()
        .flat_map(|r| r["spec"]["rules"].as_array().into_iter().flatten())
        .flat_map(|rule| rule["matches"].as_array().into_iter().flatten())
        .collect();
    let mut out = vec![Request { path: "/".into(), method: "GET".into(), ..Request::default() }];
    let mut add = |entries: &[&Value]| {
        for suffix in ["", "/x"] {
            let mut request = Request { path: "/".into(), method: "GET".into(), ..Request::default() };
            for entry in entries {
                if let Some(path) = entry.get("path")
                    && path["type"].as_str().unwrap_or("PathPrefix") != "RegularExpression"
                {
                    let value = path["value"].as_str().unwrap_or("/");
                    if value.len() >= request.path.len() {
                        request.path = format!("{}{suffix}", value.trim_end_matches('/'));
                        if request.path.is_empty() {
                            request.path = "/".into();
                        }
                    }
                }
                if let Some(method) = entry.get("method").and_then(Value::as_str) {
                    request.method = method.into();
                }
                for header in entry["headers"].as_array().into_iter().flatten() {
                    if header["type"].as_str().unwrap_or("Exact") == "Exact" {
                        let name = header["name"].as_str().unwrap().to_ascii_lowercase();
                        request.headers.insert(name, header["value"].as_str().unwrap().into());
                    }
                }
                for query in entry["queryParams"].as_array().into_iter().flatten() {
                    if query["type"].as_str().unwrap_or("Exact") == "Exact" {
                        request
                            .query
                            .insert(query["name"].as_str().unwrap().into(), query["value"].as_str().unwrap().into());
                    }
                }
            }
            if !out.contains(&request) {
                out.push(request);
            }
        }
    };
    for (i, a) in matches.iter().enumerate() {
        add(&[a]);
        // Pairs of nearby matches (a route of 100 matches would give 5,000 pairs).
        for b in matches[i + 1..].iter().take(12) {
            add(&[a, b]);
        }
    }
    out
}

/// Where `before` should be for developer `developer` running `runs`: its backends of Services
/// of staging the developer runs in the developer's namespace.
fn moved(before: &Verdict, developer: &str, runs: &[String]) -> Vec<String> {
    let mut weights: BTreeMap<String, u64> = BTreeMap::new();
    for backend in &before.backends {
        let (reference, weight) = backend.rsplit_once(' ').unwrap();
        let mut reference = reference.to_string();
        if let Some(rest) = reference.strip_prefix("Service staging/") {
            let name = rest.split(':').next().unwrap();
            if runs.iter().any(|s| s == name) {
                reference = format!("Service {developer}/{rest}");
            }
        }
        *weights.entry(reference).or_default() += weight.parse::<u64>().unwrap();
    }
    weights.into_iter().map(|(k, w)| format!("{k} {w}")).collect()
}

struct Outcome {
    requests: usize,
    moved: usize,
}

/// Runs the table over `shared` (already stored in staging) with cindy running every Service
/// the routes send to and zed the first of them.
fn run(name: &str, shared: Vec<Value>) -> Outcome {
    run_for_host(name, shared, "")
}

/// [`run`], every request for `host` (every host: "").
fn run_for_host(name: &str, shared: Vec<Value>, host: &str) -> Outcome {
    let mut services: Vec<String> = shared.iter().flat_map(|r| routed_services(r, "staging")).collect();
    services.sort();
    services.dedup();
    let developers = [("cindy", services.clone()), ("zed", services.iter().take(1).cloned().collect::<Vec<_>>())];
    let state = cluster(&services, &developers, shared.clone());
    let plan = http_routes::plan(&state, &Settings { gateway_api: true, ..Settings::default() });
    assert_eq!(http_route_support::section_11_1(&plan.problems), Vec::<&String>::new(), "{name}");
    let mut all = shared.clone();
    for (order, change) in plan.changes.into_iter().enumerate() {
        let OwnedChange::Create(mut object) = change else { panic!("{name}: only creations") };
        if object["kind"] == "HTTPRoute" {
            // Made after every shared route, one after the other in the order of the plan.
            object["metadata"]["creationTimestamp"] = json!(format!("2026-06-01T00:00:{order:02}Z"));
            all.push(object);
        }
    }
    let mut outcome = Outcome { requests: 0, moved: 0 };
    for request in requests(&shared) {
        for (baggage, developer) in BAGGAGE {
            let mut request = request.clone();
            request.host = host.to_string();
            if let Some(baggage) = baggage {
                request.headers.insert("baggage".into(), baggage.to_string());
            }
            for anchoring in [Anchoring::Whole, Anchoring::Anywhere] {
                outcome.requests += 1;
                let before = evaluate(&shared, &request, anchoring);
                let after = evaluate(&all, &request, anchoring);
                let context = format!("{name}: {request:?} ({anchoring:?})");
                let Some(developer) = developer else {
                    assert_eq!(after, before, "{context}: moved without the developer's key");
                    continue;
                };
                let Some(before) = before else {
                    assert_eq!(after, None, "{context}");
                    continue;
                };
                let runs = &developers.iter().find(|(d, _)| d == developer).unwrap().1;
                let after = after.unwrap_or_else(|| panic!("{context}: no route after divert"));
                let expected = moved(&before, developer, runs);
                assert_eq!(after.backends, expected, "{context}: before {before:?}, after {after:?}");
                let shared_name = before.route.split('/').nth(1).unwrap();
                let developer_route = format!("staging/{}", developer_route_name(shared_name, developer));
                if all.iter().any(|r| format!("staging/{}", r["metadata"]["name"].as_str().unwrap()) == developer_route)
                {
                    assert_eq!(after.route, developer_route, "{context}: not the mirror of the rule it reached");
                } else {
                    assert_eq!(after, before, "{context}: nothing of this route moves for {developer}");
                }
                outcome.moved += usize::from(expected != before.backends);
            }
        }
    }
    outcome
}

/// Corpus routes whose rules all keep a mirror (none tests baggage or holds 16 headers) and
/// whose regexes RE2 compiles, stored in staging in the order given (older first).
fn stored(routes: &[Value], first_index: usize) -> Vec<Value> {
    let mut names = std::collections::BTreeSet::new();
    routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut route = stored_in_staging(r, first_index + i);
            // Two routes of one namespace cannot share a name.
            let name = route["metadata"]["name"].as_str().unwrap().to_string();
            if !names.insert(name.clone()) {
                route["metadata"]["name"] = format!("{name}-{i}").into();
            }
            route
        })
        .collect()
}

#[test]
fn every_corpus_route_moves_only_the_developers_requests() {
    let mut total = Outcome { requests: 0, moved: 0 };
    for (index, (file, route)) in corpus().into_iter().enumerate() {
        let tests_baggage = route.to_string().to_ascii_lowercase().contains("\"baggage\"");
        if tests_baggage {
            continue;
        }
        let outcome = run(&file, stored(&[route], index));
        total.requests += outcome.requests;
        total.moved += outcome.moved;
    }
    assert!(total.moved > 1000, "only {} of {} requests moved", total.moved, total.requests);
}

#[test]
fn routes_that_share_a_parent_keep_their_precedence() {
    let corpus: BTreeMap<String, Value> = corpus().into_iter().collect();
    let groups: &[&[&str]] = &[
        &[
            "kubernetes-sigs__gateway-api__conformance-tests-httproute-matching-across-routes--1.yaml#0",
            "kubernetes-sigs__gateway-api__conformance-tests-httproute-matching-across-routes--2.yaml#0",
        ],
        &[
            "istio__istio__pilot-pkg-config-kube-gateway-testdata-route-precedence--3.yaml#0",
            "istio__istio__pilot-pkg-config-kube-gateway-testdata-route-precedence--4.yaml#0",
        ],
    ];
    for group in groups {
        let routes: Vec<Value> =
            group.iter().map(|f| corpus.get(*f).unwrap_or_else(|| panic!("{f} not in the corpus")).clone()).collect();
        // Both orders of age: ties go to the older route either way.
        let outcome = run(&group.join(" + "), stored(&routes, 0));
        assert!(outcome.moved > 0, "{group:?}");
        let reversed: Vec<Value> = routes.into_iter().rev().collect();
        run(&group.join(" + "), stored(&reversed, 0));
    }
}

/// Issue 10's tie: rule X `/api` + header z and rule Y `/api` + headers a, b. A request with z,
/// a, b reaches Y (more headers); with cindy's key it reaches Y's mirror, not X's. And a
/// younger user route that ties with a mirror loses to nothing it did not lose to before.
#[test]
fn the_issues_tie_goes_where_it_went() {
    let shared = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "api"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "api", "port": 80}], "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "headers": [{"name": "z", "value": "1"}]}],
             "backendRefs": [{"name": "x", "port": 80}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                          "headers": [{"name": "a", "value": "1"}, {"name": "b", "value": "1"}]}],
             "backendRefs": [{"name": "y", "port": 80}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "queryParams": [{"name": "q", "value": "1"}]}],
             "backendRefs": [{"name": "q", "port": 80}]},
            {"backendRefs": [{"name": "api", "port": 80, "weight": 90}, {"name": "api-v2", "port": 80, "weight": 10}]},
        ]},
    });
    let younger = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "other"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "api", "port": 80}], "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                          "headers": [{"name": "z", "value": "1"}, {"name": "w", "value": "1"}]}],
             "backendRefs": [{"name": "w", "port": 80}]},
        ]},
    });
    let routes = stored(&[shared, younger], 0);
    let outcome = run("issue 10", routes.clone());
    assert!(outcome.moved > 0);

    let state = cluster(
        &["x".into(), "y".into(), "q".into(), "api".into(), "api-v2".into(), "w".into()],
        &[("cindy", vec!["x".into(), "y".into(), "api".into()])],
        routes.clone(),
    );
    let mut all = routes.clone();
    for change in http_routes::plan(&state, &Settings { gateway_api: true, ..Settings::default() }).changes {
        if let OwnedChange::Create(mut object) = change
            && object["kind"] == "HTTPRoute"
        {
            object["metadata"]["creationTimestamp"] = json!("2026-06-01T00:00:00Z");
            all.push(object);
        }
    }
    let request = |headers: &[(&str, &str)]| Request {
        path: "/api/v1".into(),
        method: "GET".into(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Request::default()
    };
    let with_key = request(&[("z", "1"), ("a", "1"), ("b", "1"), ("baggage", "okteto-divert=cindy")]);
    let got = evaluate(&all, &with_key, Anchoring::Anywhere).unwrap();
    assert_eq!((got.route.as_str(), got.rule), ("staging/api-divert-cindy", 1));
    assert_eq!(got.backends, ["Service cindy/y:80 1"]);
    let without = request(&[("z", "1"), ("a", "1"), ("b", "1")]);
    let got = evaluate(&all, &without, Anchoring::Anywhere).unwrap();
    assert_eq!((got.route.as_str(), got.rule), ("staging/api", 1));
    // The catch-all with its split: the Service cindy runs moves, the other stays.
    let got = evaluate(&all, &request(&[("baggage", "okteto-divert=cindy")]), Anchoring::Whole).unwrap();
    assert_eq!(got.backends, ["Service cindy/api:80 90", "Service staging/api-v2:80 10"]);
}

mod generated {
    //! The same property over generated routes sharing one parent: rules that tie, outrank
    //! each other on headers, methods or query parameters, catch-alls, split backends.
    use super::*;
    use proptest::prelude::*;

    fn match_entry() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(vec![
                ("PathPrefix", "/"),
                ("PathPrefix", "/api"),
                ("Exact", "/api/v1"),
                ("PathPrefix", "/api/v1"),
            ]),
            prop::option::of(prop::sample::select(vec!["GET", "POST"])),
            prop::sample::subsequence(vec!["x-a", "x-b", "x-c"], 0..=2),
            any::<bool>(),
        )
            .prop_map(|((kind, path), method, headers, query)| {
                let mut entry = json!({"path": {"type": kind, "value": path}});
                if let Some(method) = method {
                    entry["method"] = json!(method);
                }
                if !headers.is_empty() {
                    entry["headers"] = headers.iter().map(|h| json!({"name": h, "value": "1"})).collect();
                }
                if query {
                    entry["queryParams"] = json!([{"name": "q", "value": "1"}]);
                }
                entry
            })
    }

    fn rule() -> impl Strategy<Value = Value> {
        (
            prop::option::of(prop::collection::vec(match_entry(), 1..3)),
            prop::collection::vec(
                (prop::sample::select(vec!["svc-a", "svc-b", "svc-c"]), prop::option::of(0u64..5)),
                1..3,
            ),
        )
            .prop_map(|(matches, backends)| {
                let refs: Vec<Value> = backends
                    .into_iter()
                    .map(|(name, weight)| {
                        let mut r = json!({"name": name, "port": 80});
                        if let Some(weight) = weight {
                            r["weight"] = json!(weight);
                        }
                        r
                    })
                    .collect();
                let mut rule = json!({"backendRefs": refs});
                if let Some(matches) = matches {
                    rule["matches"] = json!(matches);
                }
                rule
            })
    }

    fn routes() -> impl Strategy<Value = Vec<Value>> {
        prop::collection::vec(prop::collection::vec(rule(), 1..5), 1..4).prop_map(|routes| {
            routes
                .into_iter()
                .enumerate()
                .map(|(i, rules)| {
                    let route = json!({
                        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                        "metadata": {"name": format!("r{i}")},
                        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "svc-a", "port": 80}], "rules": rules},
                    });
                    stored_in_staging(&route, i)
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn only_the_developers_requests_move(routes in routes()) {
            run("generated", routes);
        }

        /// Routes on one parent for several hosts: a route whose hosts no developer route can
        /// meet keeps no mirror, and requests for each host still go where they went.
        #[test]
        fn hosts_keep_their_routes_apart(
            routes in routes(),
            hosts in prop::collection::vec(prop::option::of(prop::sample::select(vec!["a.example.com", "*.example.com", "b.example.com"])), 3),
        ) {
            let routes: Vec<Value> = routes
                .into_iter()
                .zip(hosts)
                .map(|(mut route, host)| {
                    if let Some(host) = host {
                        route["spec"]["hostnames"] = json!([host]);
                    }
                    route
                })
                .collect();
            for host in ["a.example.com", "b.example.com", "c.example.com", "example.com"] {
                run_for_host("generated", routes.clone(), host);
            }
        }
    }
}
