//! SPEC §7 size and §8 bounded work: what a mutation would generate is counted before anything
//! is generated; above `--max-generated-routes` or 1 MiB of JSON the object is left unchanged by
//! /mutate and denied by /validate, with the count, the limit and the fix. Objects the rules do
//! not read (too large, too deep) get an answer; kinds without rules are never parsed at all.
//! The deadline stops a review's work.

mod support;
mod virtual_service_support;

use std::time::{Duration, Instant};

use divert_webhook::cluster::ClusterView;
use divert_webhook::deadline::Deadline;
use divert_webhook::review::{Endpoint, Outcome, Unanswered, review_until};
use divert_webhook::settings::Settings;
use proptest::prelude::*;
use serde_json::{Value, json};
use support::{ask, review_of};
use virtual_service_support::{entry_annotation, mutate, mutate_in};

/// A shared VirtualService in `staging` with `routes` http routes (the last a catch-all),
/// diverted by `developers` developers; every route forwards inside `staging`. `padding`
/// bytes of header values per route make routes larger.
fn shared(routes: usize, developers: usize, padding: usize) -> Value {
    let http: Vec<Value> = (0..routes)
        .map(|i| {
            let mut route = json!({
                "name": format!("r{i}"),
                "match": [{"uri": {"prefix": format!("/r{i}")}}],
                "route": [{"destination": {"host": format!("svc-{}", i % 7), "subset": "v1"}}],
            });
            if padding > 0 {
                route["headers"] = json!({"request": {"set": {"x-pad": "p".repeat(padding)}}});
            }
            if i + 1 == routes {
                route.as_object_mut().unwrap().remove("match");
            }
            route
        })
        .collect();
    let annotations: serde_json::Map<String, Value> =
        (0..developers).map(|d| (entry_annotation(d), json!(format!("{{\"namespace\":\"dev-{d}\"}}")))).collect();
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "shop", "namespace": "staging", "annotations": annotations},
        "spec": {"hosts": ["shop"], "http": http}
    })
}

fn kit_body(name: &str) -> Option<Vec<u8>> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/perf/bodies").join(name)).ok()
}

fn generated_routes(object: &Value) -> usize {
    object["spec"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"].as_str().is_some_and(|n| n.starts_with("okteto-divert-")))
        .count()
}

#[test]
fn too_many_routes_are_not_generated_and_the_object_is_denied() {
    let object = shared(100, 30, 0); // 3 000 clones
    let settings = Settings::default();
    let mutated = ask(Endpoint::Mutate, &review_of(&object), &settings);
    assert_eq!(mutated.response["allowed"], true);
    assert!(mutated.response.get("patch").is_none(), "left unchanged: {}", mutated.response);
    assert_eq!(
        mutated.warnings(),
        ["divert not applied: it would generate 3000 routes, above --max-generated-routes 2000"]
    );
    let validated = ask(Endpoint::Validate, &review_of(&object), &settings);
    assert_eq!(validated.outcome, Outcome::Denied);
    let message = validated.response["status"]["message"].as_str().unwrap();
    assert_eq!(validated.response["status"]["code"], 403);
    for part in ["VirtualService staging/shop", "3000 routes", "limit of 2000", "--max-generated-routes", "\"routes\""]
    {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
}

#[test]
fn the_limit_is_the_operators_and_exact() {
    let object = shared(40, 5, 0); // 200 clones
    let at = Settings { max_generated_routes: 200, ..Settings::default() };
    let out = mutate(&object, &at);
    assert_eq!(generated_routes(&out.object), 200);
    assert!(ask(Endpoint::Validate, &review_of(&out.object), &at).outcome != Outcome::Denied);
    let below = Settings { max_generated_routes: 199, ..Settings::default() };
    let out = mutate(&object, &below);
    assert_eq!(generated_routes(&out.object), 0);
    assert_eq!(out.warnings, ["divert not applied: it would generate 200 routes, above --max-generated-routes 199"]);
    assert_eq!(ask(Endpoint::Validate, &review_of(&object), &below).outcome, Outcome::Denied);
}

#[test]
fn the_load_kits_worst_body_is_refused_by_the_bound() {
    let Some(body) = kit_body("vs-100x100.json") else {
        panic!("../shared/perf/bodies/vs-100x100.json is missing (is ../shared beside the repo?)")
    };
    let settings = Settings::default();
    let (answer, summary) = divert_webhook::review::review(Endpoint::Mutate, &body, &settings).unwrap();
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(summary.outcome, Outcome::Allowed);
    assert!(answer["response"].get("patch").is_none());
    assert_eq!(
        answer["response"]["warnings"][0],
        "divert not applied: it would generate 7600 routes, above --max-generated-routes 2000"
    );
    let (_, summary) = divert_webhook::review::review(Endpoint::Validate, &body, &settings).unwrap();
    assert_eq!(summary.outcome, Outcome::Denied);
    assert_eq!(summary.denial_reasons, ["too-large"]);
}

#[test]
fn a_result_over_1_mib_is_not_generated_and_the_object_is_denied() {
    // 60 routes of about 4 KB, 4 developers: 240 clones, far under the route limit, 1.2 MB.
    let object = shared(60, 4, 4000);
    let settings = Settings::default();
    let mutated = ask(Endpoint::Mutate, &review_of(&object), &settings);
    assert!(mutated.response.get("patch").is_none(), "left unchanged");
    let warning = &mutated.warnings()[0];
    assert!(
        warning.starts_with("divert not applied: the result would be ")
            && warning.ends_with("above the limit of 1048576"),
        "{warning}"
    );
    let validated = ask(Endpoint::Validate, &review_of(&object), &settings);
    assert_eq!(validated.outcome, Outcome::Denied);
    let message = validated.response["status"]["message"].as_str().unwrap();
    assert!(message.contains("bytes of JSON, above the limit of 1048576") && message.contains("etcd"), "{message}");
    // Two developers fit: generated, and what validation sees then passes.
    let two = shared(60, 2, 4000);
    let out = mutate(&two, &settings);
    assert_eq!(generated_routes(&out.object), 120);
    assert!(serde_json::to_vec(&out.object).unwrap().len() <= 1024 * 1024);
    assert_ne!(ask(Endpoint::Validate, &review_of(&out.object), &settings).outcome, Outcome::Denied);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
    /// The count known beforehand is the count generated: a limit of exactly that many lets the
    /// mutation through, one less refuses it, naming the count. The size estimate is close to
    /// the real size of the result, and errs upwards. The same with the Services an entry lists
    /// and, with a cluster, the Services each developer runs (SPEC §4 `services`, §10.4).
    #[test]
    fn the_count_known_beforehand_is_what_is_generated(
        routes in 1usize..30,
        developers in 1usize..6,
        padding in 0usize..300,
        named in proptest::collection::vec(0usize..40, 0..4),
        listed in proptest::collection::vec(0usize..8, 0..3),
        runs in proptest::option::of(proptest::collection::vec(proptest::collection::btree_set(0usize..8, 0..4), 6)),
        legacy in any::<bool>(),
    ) {
        let mut object = shared(routes, developers, padding);
        // Some developers divert only some routes (names that may not exist, or repeat).
        if !named.is_empty() {
            let names: Vec<String> = named.iter().map(|i| format!("r{i}")).collect();
            object["metadata"]["annotations"][entry_annotation(0)] = json!(json!({"namespace": "dev-0", "routes": names}).to_string());
        }
        // One developer's entry lists Services (svc-7 is no route's); a second entry of the
        // same developer, without `services`, when `named` also holds a route name.
        if developers > 1 && !listed.is_empty() {
            let services: Vec<String> = listed.iter().map(|i| format!("svc-{i}")).collect();
            object["metadata"]["annotations"][entry_annotation(1)] = json!(json!({"namespace": "dev-1", "services": services}).to_string());
            if let Some(first) = named.first() {
                object["metadata"]["annotations"][entry_annotation(100)] =
                    json!(json!({"namespace": "dev-1", "routes": [format!("r{first}")]}).to_string());
            }
        }
        // A cluster where dev-d runs the Services svc-i of its set (dev-5 is not in it).
        let view = runs.map(|runs| {
            let mut view = ClusterView::empty_cluster();
            for (d, services) in runs.iter().enumerate().take(5) {
                view.add_namespace(&format!("dev-{d}"), Default::default());
                for i in services {
                    view.add_service(&format!("dev-{d}"), &format!("svc-{i}"));
                }
            }
            view
        });
        let view = view.as_ref().unwrap_or(ClusterView::none());
        let mutate = |object: &Value, settings: &Settings| mutate_in(object, settings, view);
        let unbounded = Settings { max_generated_routes: usize::MAX, legacy_header: legacy, ..Settings::default() };
        let out = mutate(&object, &unbounded);
        let generated = generated_routes(&out.object);
        prop_assume!(generated > 0);
        let exact = Settings { max_generated_routes: generated, ..unbounded.clone() };
        prop_assert_eq!(generated_routes(&mutate(&object, &exact).object), generated);
        let below = Settings { max_generated_routes: generated - 1, ..unbounded.clone() };
        let refused = mutate(&object, &below);
        prop_assert_eq!(generated_routes(&refused.object), 0);
        prop_assert_eq!(
            refused.warnings.clone(),
            vec![format!("divert not applied: it would generate {generated} routes, above --max-generated-routes {}", generated - 1)]
        );
        // The size estimate, read back through the validating webhook's message at a limit of 0 routes over.
        let actual = serde_json::to_vec(&out.object).unwrap().len();
        let subject = divert_webhook::rules::Subject {
            kind: divert_webhook::rules::Kind::VirtualService, namespace: "staging", name: "shop", object: &object,
            cluster: view,
        };
        let plan = divert_webhook::rules::virtual_service::divert_routes::planned(&subject, &unbounded, None).unwrap();
        prop_assert_eq!(plan.routes, generated);
        // Never under by more than 1%; over by at most 5% and a few bytes per clone (subsets
        // dropped and weights merged are not foreseen).
        let (estimate, actual) = (plan.object_bytes as f64, actual as f64);
        prop_assert!(estimate >= actual * 0.99, "estimate {} under {} bytes", estimate, actual);
        prop_assert!(estimate <= actual * 1.05 + 32.0 * generated as f64, "estimate {} over {} bytes", estimate, actual);
    }
}

#[test]
fn objects_the_rules_do_not_read_get_an_answer() {
    let settings = Settings::default();
    // Over etcd's 1.5 MiB: not parsed; /mutate leaves it, /validate refuses it.
    let mut big = shared(3, 1, 0);
    big["metadata"]["annotations"]["x"] = json!("x".repeat(1600 * 1024));
    let mutated = ask(Endpoint::Mutate, &review_of(&big), &settings);
    assert!(mutated.response.get("patch").is_none());
    assert!(mutated.warnings()[0].contains("left unchanged"), "{:?}", mutated.warnings());
    let validated = ask(Endpoint::Validate, &review_of(&big), &settings);
    assert_eq!(validated.outcome, Outcome::Denied);
    assert!(validated.response["status"]["message"].as_str().unwrap().contains("bytes of JSON"));
    // Between 1 MiB and 1.5 MiB: read and validated, but not mutated.
    let mut large = shared(3, 0, 0);
    large["metadata"]["annotations"]["x"] = json!("x".repeat(1100 * 1024));
    let mutated = ask(Endpoint::Mutate, &review_of(&large), &settings);
    assert!(mutated.response.get("patch").is_none());
    assert!(mutated.warnings()[0].contains("over the 1048576 divert-webhook mutates"), "{:?}", mutated.warnings());
    assert_eq!(ask(Endpoint::Validate, &review_of(&large), &settings).outcome, Outcome::Allowed);
}

/// JSON nested `depth` levels inside `object.spec.x`.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn body_with_object(kind: (&str, &str, &str), object_json: &str) -> Vec<u8> {
    let (group, version, kind) = kind;
    format!(
        r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{"uid":"deep-1","kind":{{"group":"{group}","version":"{version}","kind":"{kind}"}},"resource":{{"group":"{group}","version":"{version}","resource":"things"}},"name":"x","namespace":"staging","operation":"CREATE","userInfo":{{"username":"u"}},"object":{object_json},"oldObject":null,"dryRun":false}}}}"#
    )
    .into_bytes()
}

#[test]
fn deep_objects_of_kinds_without_rules_are_allowed_unread() {
    // The apiserver accepts up to 10 000 levels; nothing reads a kind without rules.
    let object = format!(
        r#"{{"apiVersion":"example.com/v1","kind":"Thing","metadata":{{"name":"x"}},"spec":{{"x":{}}}}}"#,
        nested(10_000)
    );
    let body = body_with_object(("example.com", "v1", "Thing"), &object);
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        let (answer, summary) = divert_webhook::review::review(endpoint, &body, &Settings::default()).unwrap();
        assert_eq!(summary.outcome, Outcome::Allowed);
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["response"]["uid"], "deep-1");
    }
}

#[test]
fn deep_objects_of_handled_kinds_are_left_unchanged_and_denied() {
    let object = format!(
        r#"{{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{{"name":"x","namespace":"staging"}},"spec":{{"x":{}}}}}"#,
        nested(200)
    );
    let body = body_with_object(("networking.istio.io", "v1", "VirtualService"), &object);
    let (answer, summary) = divert_webhook::review::review(Endpoint::Mutate, &body, &Settings::default()).unwrap();
    assert_eq!(summary.outcome, Outcome::Allowed);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert!(answer["response"]["warnings"][0].as_str().unwrap().contains("nested more than 128 levels"), "{answer}");
    let (answer, summary) = divert_webhook::review::review(Endpoint::Validate, &body, &Settings::default()).unwrap();
    assert_eq!(summary.outcome, Outcome::Denied, "{}", String::from_utf8_lossy(&answer));
}

#[test]
fn work_stops_at_the_deadline() {
    // 1 900 clones: inside the limits, but long in a debug build.
    let object = shared(950, 2, 0);
    let body = serde_json::to_vec(&review_of(&object)).unwrap();
    let settings = Settings::default();
    let started = Instant::now();
    let full = review_until(Endpoint::Mutate, &body, &settings, Deadline::NONE);
    let full_time = started.elapsed();
    assert!(full.is_ok());
    // A deadline a twentieth of the way in: the review stops soon after it, not at the end
    // (compared loosely: the machine may be busy with other tests).
    let budget = full_time / 20;
    let started = Instant::now();
    let cut = review_until(Endpoint::Mutate, &body, &settings, Deadline::after(budget));
    let cut_time = started.elapsed();
    assert_eq!(cut.err(), Some(Unanswered::Expired));
    assert!(cut_time < full_time * 3 / 4, "stopped after {cut_time:?}; the whole review takes {full_time:?}");
    // Validation too: finished without a deadline, abandoned with one already passed.
    assert!(review_until(Endpoint::Validate, &body, &settings, Deadline::NONE).is_ok());
    let cut = review_until(Endpoint::Validate, &body, &settings, Deadline::after(Duration::ZERO));
    assert_eq!(cut.err(), Some(Unanswered::Expired));
}

/// The server writes a shared VirtualService's patch straight from the decision; the rules also
/// mutate a copy (offline commands, VirtualServices the header rule changes too). Both must give
/// the same object, from scratch and over earlier clones: other developers, other routes, and
/// clones whose keys the apiserver re-encoded in another order.
fn rules_mutate(object: &Value, settings: &Settings) -> Value {
    let subject = divert_webhook::rules::Subject {
        kind: divert_webhook::rules::Kind::VirtualService,
        namespace: "staging",
        name: "shop",
        object,
        cluster: divert_webhook::cluster::ClusterView::none(),
    };
    let mut copy = object.clone();
    divert_webhook::rules::mutate(&subject, &mut copy, settings);
    copy
}

/// `value` with every map's keys in reverse order (as another encoder might write them).
fn reordered(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.iter().rev().map(|(k, v)| (k.clone(), reordered(v))).collect()),
        Value::Array(items) => Value::Array(items.iter().map(reordered).collect()),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
    #[test]
    fn the_servers_patch_gives_what_the_rules_give_on_a_copy(
        routes in 1usize..12,
        before in 0usize..4,
        after in 0usize..4,
        named in proptest::collection::vec(0usize..14, 0..3),
        legacy in any::<bool>(),
        scramble in any::<bool>(),
    ) {
        let settings = Settings { legacy_header: legacy, ..Settings::default() };
        // Earlier clones from `before` developers, then the annotations change to `after`.
        let first = shared(routes, before, 0);
        let mut object = mutate(&first, &settings).object;
        prop_assert_eq!(&object, &rules_mutate(&first, &settings));
        if scramble {
            object = reordered(&object);
        }
        let annotations: serde_json::Map<String, Value> = (0..after)
            .map(|d| {
                let value = if d == 0 && !named.is_empty() {
                    json!({"namespace": "dev-0", "routes": named.iter().map(|i| format!("r{i}")).collect::<Vec<_>>()}).to_string()
                } else {
                    format!("{{\"namespace\":\"dev-{d}\"}}")
                };
                (entry_annotation(d), json!(value))
            })
            .collect();
        object["metadata"]["annotations"] = Value::Object(annotations);
        let served = mutate(&object, &settings);
        prop_assert_eq!(&served.object, &rules_mutate(&object, &settings));
        // And once more: nothing left to change.
        let again = mutate(&served.object, &settings);
        prop_assert!(again.patch.is_empty(), "{:?}", again.patch);
    }
}

#[test]
fn the_servers_patch_gives_what_the_rules_give_on_every_corpus_virtual_service() {
    let settings = Settings::default();
    let mut compared = 0;
    for (file, mut object) in support::corpus_objects("virtualservices", "VirtualService") {
        object["metadata"]["namespace"] = json!("staging");
        let annotations = object["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
        let mut annotations = annotations;
        annotations.insert(entry_annotation(1), json!(r#"{"namespace":"cindy"}"#));
        annotations.insert(entry_annotation(2), json!(r#"{"namespace":"zed"}"#));
        object["metadata"]["annotations"] = Value::Object(annotations);
        let body = serde_json::to_vec(&review_of(&object)).unwrap();
        let Ok((answer, _)) = divert_webhook::review::review(Endpoint::Mutate, &body, &settings) else { continue };
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        let served =
            support::Answer { response: answer["response"].clone(), outcome: Outcome::Allowed }.apply_to(&object);
        assert_eq!(served, rules_mutate(&object, &settings), "{file}");
        compared += 1;
    }
    assert!(compared > 100, "only {compared} corpus VirtualServices compared");
}
