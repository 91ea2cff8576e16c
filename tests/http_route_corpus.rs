//! SPEC §11.1, §11.3 on every HTTPRoute of the shared corpus, placed in shared namespace
//! `staging` with one developer running every Service it sends to, and with several developers
//! running some of them:
//! - every developer route and ReferenceGrant the reconciler plans is valid against the real CRD
//!   schema of its API version (Linkerd's for `policy.linkerd.io`), and within the Gateway API's
//!   limits (16 rules, 128 matches, 16 headers per match);
//! - each mirrors every rule of the shared route (the left-out cases named), with the anchored
//!   baggage match of its developer, and moves exactly the backendRefs of Services the developer
//!   runs;
//! - the shared route is untouched: no write names it, and the mutating webhook leaves it as it is;
//! - a second plan on the cluster the first one leaves writes nothing.

mod http_route_support;
mod virtual_service_support;

use divert_webhook::cluster::http_routes::{
    self, MAX_HEADERS_PER_MATCH, MAX_MATCHES, MAX_RULES, OwnedChange, baggage_match, developer_route_name,
};
use divert_webhook::settings::{Driver, Settings};
use http_route_support::{Schemas, cluster, corpus, routed_services, stored_in_staging};
use serde_json::Value;

/// The developer routes and grants `plan` creates on a cluster holding only `shared`.
fn planned(state: &divert_webhook::cluster::state::ClusterState, settings: &Settings) -> Vec<Value> {
    let plan = http_routes::plan(state, settings);
    assert_eq!(http_route_support::section_11_1(&plan.problems), Vec::<&String>::new());
    plan.changes
        .iter()
        .map(|c| match c {
            OwnedChange::Create(object) => object.clone(),
            other => panic!("only creations on a cluster without owned objects: {other:?}"),
        })
        .collect()
}

/// How many matches of a shared rule its mirror keeps: all but those already testing baggage or
/// holding 16 headers (a rule without matches gets one).
fn usable_matches(rule: &Value) -> usize {
    rule["matches"].as_array().filter(|m| !m.is_empty()).map_or(1, |m| {
        m.iter()
            .filter(|m| {
                let headers = m["headers"].as_array().map(Vec::as_slice).unwrap_or_default();
                headers.len() < MAX_HEADERS_PER_MATCH
                    && !headers.iter().any(|h| h["name"].as_str().unwrap().eq_ignore_ascii_case("baggage"))
            })
            .count()
    })
}

/// Does the route need a developer route for a developer running every Service it sends to?
fn needs_developer_route(shared: &Value) -> bool {
    shared["spec"]["rules"].as_array().into_iter().flatten().any(|rule| {
        usable_matches(rule) > 0
            && rule["backendRefs"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| http_routes::service_of(r, "staging").is_some())
    })
}

fn check_route(file: &str, shared: &Value, route: &Value, developer: &str, runs: &[String], schemas: &Schemas) {
    let errors = schemas.errors(route);
    assert!(errors.is_empty(), "{file}: developer route for {developer} is invalid: {errors:#?}\n{route:#}");
    assert_eq!(
        route["metadata"]["name"],
        developer_route_name(shared["metadata"]["name"].as_str().unwrap(), developer)
    );
    assert!(route["metadata"]["name"].as_str().unwrap().len() <= 63);
    assert_eq!(route["metadata"]["ownerReferences"][0]["uid"], shared["metadata"]["uid"]);
    assert_eq!(route["spec"]["parentRefs"], shared["spec"]["parentRefs"], "{file}");
    assert_eq!(route["spec"]["hostnames"], shared["spec"]["hostnames"], "{file}");
    let rules = route["spec"]["rules"].as_array().unwrap();
    assert!(rules.len() <= MAX_RULES, "{file}");
    let matches: usize = rules.iter().map(|r| r["matches"].as_array().unwrap().len()).sum();
    assert!(matches <= MAX_MATCHES, "{file}: {matches} matches");
    let baggage = baggage_match(developer);
    // Every rule of the shared route is mirrored, in order, unless every one of its matches
    // already tests baggage or holds 16 headers.
    let mut mirrored = rules.iter();
    for (index, original) in shared["spec"]["rules"].as_array().unwrap().iter().enumerate() {
        let usable = usable_matches(original);
        if usable == 0 {
            continue;
        }
        let mirror = mirrored.next().unwrap_or_else(|| panic!("{file}: rule {index} is not mirrored"));
        let mirror_matches = mirror["matches"].as_array().unwrap();
        assert_eq!(mirror_matches.len(), usable, "{file}: rule {index}");
        for m in mirror_matches {
            let headers = m["headers"].as_array().unwrap();
            assert!(headers.len() <= MAX_HEADERS_PER_MATCH);
            assert_eq!(headers.last(), Some(&baggage), "{file}: rule {index}");
        }
        // Everything but the matches and the moved backendRefs is the original's.
        for (key, value) in original.as_object().unwrap() {
            if !matches!(key.as_str(), "matches" | "backendRefs" | "name") {
                assert_eq!(&mirror[key], value, "{file}: rule {index}.{key}");
            }
        }
        let original_refs = original["backendRefs"].as_array().map(Vec::as_slice).unwrap_or_default();
        let mirror_refs = mirror["backendRefs"].as_array().map(Vec::as_slice).unwrap_or_default();
        for reference in mirror_refs {
            let name = reference["name"].as_str().unwrap();
            let moved = reference["namespace"] == developer;
            let runs_it = runs.iter().any(|s| s == name)
                && original_refs.iter().any(|r| http_routes::service_of(r, "staging") == Some(name));
            assert_eq!(moved, runs_it, "{file}: rule {index} ref {reference}");
        }
        let weight = |refs: &[Value]| refs.iter().map(|r| r["weight"].as_u64().unwrap_or(1)).sum::<u64>();
        if original_refs.len() == mirror_refs.len() {
            assert_eq!(weight(original_refs), weight(mirror_refs), "{file}: rule {index}");
        }
    }
    assert!(mirrored.next().is_none(), "{file}: more rules than the shared route's");
}

#[test]
fn developer_routes_of_every_corpus_route_are_valid_and_within_limits() {
    let schemas = Schemas::load();
    let settings = Settings { gateway_api: true, ..Settings::default() };
    let (mut with_routes, mut several, mut invalid) = (0, 0, Vec::new());
    for (index, (file, route)) in corpus().into_iter().enumerate() {
        let shared = stored_in_staging(&route, index);
        // The apiserver never stores a route its CRD refuses (the corpus has such examples on purpose).
        if !schemas.errors(&shared).is_empty() {
            invalid.push(file);
            continue;
        }
        let services = routed_services(&shared, "staging");
        // One developer running everything the route sends to.
        let state = cluster(&services, &[("cindy", services.clone())], vec![shared.clone()]);
        let objects = planned(&state, &settings);
        let routes: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "HTTPRoute").collect();
        let grants: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "ReferenceGrant").collect();
        let expected = usize::from(needs_developer_route(&shared));
        assert_eq!(routes.len(), expected, "{file}");
        assert_eq!(grants.len(), routes.len(), "{file}");
        for route in &routes {
            check_route(&file, &shared, route, "cindy", &services, &schemas);
        }
        for grant in &grants {
            assert!(schemas.errors(grant).is_empty(), "{file}: {:?}", schemas.errors(grant));
            assert_eq!(grant["metadata"]["namespace"], "cindy");
        }
        with_routes += routes.len();

        // Several developers: cindy runs everything, zed the first Service, dev-1 the last
        // one, and another-developer nothing the route sends to.
        let first = services.iter().take(1).cloned().collect::<Vec<_>>();
        let last = services.iter().rev().take(1).cloned().collect::<Vec<_>>();
        let developers =
            [("cindy", services.clone()), ("zed", first), ("dev-1", last), ("another-developer", vec!["x".into()])];
        let state = cluster(&services, &developers, vec![shared.clone()]);
        let objects = planned(&state, &settings);
        let shared_name = shared["metadata"]["name"].as_str().unwrap();
        let route_of = |developer: &str| {
            objects.iter().find(|o| {
                o["kind"] == "HTTPRoute" && o["metadata"]["name"] == developer_route_name(shared_name, developer)
            })
        };
        for (developer, runs) in &developers {
            let expected = needs_developer_route(&shared) && !runs.is_empty() && *developer != "another-developer";
            match route_of(developer) {
                Some(route) => check_route(&file, &shared, route, developer, runs, &schemas),
                // zed and dev-1 run one Service: a route that sends to it only where no rule
                // can keep a mirror is the one case without a developer route.
                None => assert!(!expected || *developer != "cindy", "{file}: no route for {developer}"),
            }
            several += usize::from(route_of(developer).is_some());
        }
        assert!(route_of("another-developer").is_none(), "{file}: a developer who runs none of its Services");
        let routes = objects.iter().filter(|o| o["kind"] == "HTTPRoute").count();
        let found = developers.iter().filter(|(d, _)| route_of(d).is_some()).count();
        assert_eq!(routes, found, "{file}: a developer route for no developer");

        // The shared route is untouched: no write names it, the webhook does not patch it.
        let names_shared = objects.iter().any(|o| o["metadata"]["name"] == shared["metadata"]["name"]);
        assert!(!names_shared, "{file}");
        for driver in [Driver::Istio, Driver::Nginx] {
            let settings = Settings { driver, ..Settings::default() };
            if divert_webhook::rules::Kind::from_manifest(shared["apiVersion"].as_str().unwrap(), "HTTPRoute").is_some()
            {
                let mutated = virtual_service_support::mutate(&shared, &settings);
                assert_eq!(mutated.patch, Vec::<Value>::new(), "{file}");
            }
        }

        // The cluster as the writes leave it needs no write more.
        let mut stored = state.http_routes.clone();
        let plan = http_routes::plan(&state, &settings);
        http_routes::apply(&mut stored, &plan);
        let (routes, grants): (Vec<Value>, Vec<Value>) = stored.into_iter().partition(|o| o["kind"] == "HTTPRoute");
        let mut after = state.clone();
        after.http_routes = routes;
        after.reference_grants = grants;
        assert!(http_routes::plan(&after, &settings).changes.is_empty(), "{file}");
        assert!(after.http_routes.contains(&shared), "{file}");
    }
    eprintln!(
        "{with_routes} developer routes for one developer, {several} for several; {} invalid routes skipped",
        invalid.len()
    );
    assert!(invalid.len() < 30, "{} invalid corpus routes: {invalid:#?}", invalid.len());
    assert!(with_routes > 150, "only {with_routes} corpus routes got a developer route");
    assert!(several > with_routes, "{several}");
}

/// SPEC §11.2: the routes for a Service no HTTPRoute is attached to are valid too.
#[test]
fn routes_for_services_without_one_are_valid() {
    let schemas = Schemas::load();
    // At every version the reconciler may find served.
    let versions = ["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1", "policy.linkerd.io/v1beta3"];
    for (ports, api_version) in [vec![80], vec![80, 9090]].into_iter().flat_map(|p| versions.map(|v| (p.clone(), v))) {
        let routes = http_routes::service_routes(api_version, "staging", "api", &ports, "cindy");
        assert_eq!(routes.len(), ports.len());
        for route in &routes {
            let errors = schemas.errors(route);
            assert!(errors.is_empty(), "{errors:#?}\n{route:#}");
            assert_eq!(route["spec"]["rules"][0]["matches"][0]["headers"][0], baggage_match("cindy"));
        }
    }
}

/// SPEC §11.5 through the offline `check` (the server's code path): the corpus routes the webhook
/// handles pass (none uses a wrong header form or a regex RE2 refuses), and a route that does is
/// denied, naming the field.
#[test]
fn corpus_routes_pass_validation_and_wrong_ones_are_denied() {
    use divert_webhook::manifests::{Verdict, check_documents};
    let settings = Settings { driver: Driver::Nginx, gateway_api: true, ..Settings::default() };
    let mut checked = 0;
    for (file, route) in corpus() {
        let report = check_documents(&serde_json::to_string(&route).unwrap(), &settings);
        assert_eq!(report.verdict, Verdict::Passed, "{file}: {:?}", report.stderr);
        checked += 1;
    }
    assert!(checked > 250);
    let wrong = r#"{"apiVersion": "policy.linkerd.io/v1beta3", "kind": "HTTPRoute",
        "metadata": {"name": "api", "namespace": "staging"},
        "spec": {"rules": [{"matches": [{"headers": [{"name": "baggage", "type": "RegularExpression", "value": "okteto-divert=(?!zed)"}]}]}]}}"#;
    let report = check_documents(wrong, &settings);
    assert_eq!(report.verdict, Verdict::Denied);
    assert!(
        report.stderr.iter().any(|l| l.contains("spec.rules[0].matches[0].headers[0].value") && l.contains("RE2")),
        "{:?}",
        report.stderr
    );
}
