//! Property tests over generated VirtualServices and annotation sets (SPEC §4.6, §5):
//! mutating the webhook's own output gives no patch, and removing every divert annotation
//! gives back the original spec exactly.

mod virtual_service_support;

use divert_webhook::settings::Settings;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use virtual_service_support::{entry_annotation, mutate};

/// Names repeat (two routes of one name happen) and run long (warnings must stay short).
const ROUTE_NAMES: &[&str] =
    &["api", "web", "reviews", "r-1", "a-route-name-that-goes-on-and-on-well-past-thirty-two-characters"];
const KEYS: &[&str] = &["cindy", "zed", "dev-1", "a-developer-namespace-whose-name-is-63-characters-long-xxxxxxxxx"];

fn host() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "svc-a",
        "svc-a.staging",
        "svc-b.staging.svc",
        "svc-b.staging.svc.cluster.local",
        "svc-c.other.svc.cluster.local",
        "api.example.com",
        "*.example.com",
    ])
    .prop_map(str::to_string)
}

fn destination() -> impl Strategy<Value = Value> {
    (host(), prop::option::of("v[1-3]"), prop::option::of(0u32..=100), prop::option::of(9000u32..9100), any::<bool>())
        .prop_map(|(host, subset, weight, port, headers)| {
            let mut target = json!({"host": host});
            if let Some(subset) = subset {
                target["subset"] = subset.into();
            }
            if let Some(port) = port {
                target["port"] = json!({"number": port});
            }
            let mut d = json!({"destination": target});
            if let Some(weight) = weight {
                d["weight"] = weight.into();
            }
            if headers {
                d["headers"] = json!({
                    "response": {"set": {"x-served-by": host}},
                    "request": {"add": {"baggage": "okteto-divert=bob"}},
                });
            }
            d
        })
}

fn match_entry() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::sample::select(vec!["/api", "/", "/static"])),
        prop::option::of(prop::sample::select(vec!["x-user", "baggage", "end-user", "baggage.okteto-divert"])),
        prop::option::of(prop::sample::select(vec!["GET", "POST"])),
    )
        .prop_map(|(prefix, header, method)| {
            let mut m = Map::new();
            if let Some(prefix) = prefix {
                m.insert("uri".into(), json!({"prefix": prefix}));
            }
            if let Some(header) = header {
                m.insert("headers".into(), json!({ header: {"exact": "jason"} }));
            }
            if let Some(method) = method {
                m.insert("method".into(), json!({"exact": method}));
            }
            Value::Object(m)
        })
}

fn http_route() -> impl Strategy<Value = Value> {
    let action = prop_oneof![
        6 => prop::collection::vec(destination(), 1..4).prop_map(|d| json!({"route": d})),
        1 => Just(json!({"redirect": {"uri": "/moved"}})),
        1 => Just(json!({"directResponse": {"status": 503}})),
        1 => Just(json!({"delegate": {"name": "reviews", "namespace": "staging"}})),
    ];
    (
        prop::option::of(prop::sample::select(ROUTE_NAMES.to_vec())),
        prop::option::of(prop::collection::vec(match_entry(), 0..3)),
        action,
        any::<bool>(),
        // Values already there: other members, only separators, another developer's member.
        prop::option::of(prop::sample::select(vec!["vendor=1", "a=1;p=2, b=2", " , ", "okteto-divert=bob,t=1"])),
        any::<bool>(),
    )
        .prop_map(|(name, matches, action, extras, baggage, set)| {
            let mut route = Map::new();
            if let Some(name) = name {
                route.insert("name".into(), name.into());
            }
            if let Some(matches) = matches {
                route.insert("match".into(), matches.into());
            }
            route.extend(action.as_object().unwrap().clone());
            if extras {
                route.insert("timeout".into(), "5s".into());
                route.insert("retries".into(), json!({"attempts": 3, "perTryTimeout": "2s"}));
                route.insert("x-future-field".into(), json!({"kept": [1, 2]}));
            }
            if let Some(baggage) = baggage {
                // In `add`, an okteto-divert member is the webhook's (docs/virtualservices.md).
                let operation = if set || baggage.contains("okteto-divert") { "set" } else { "add" };
                route.insert("headers".into(), json!({"request": {operation: {"baggage": baggage, "x-a": "1"}}}));
            }
            Value::Object(route)
        })
}

fn annotations() -> impl Strategy<Value = Map<String, Value>> {
    let entry = (
        0usize..4,
        any::<bool>(),
        prop::sample::select(KEYS.to_vec()),
        prop::collection::vec(prop::sample::select(vec!["api", "web", "reviews", "r-1", "nope", "db"]), 0..3),
    );
    (prop::collection::vec(entry, 0..4), prop::option::of(prop::sample::select(KEYS.to_vec())), any::<bool>()).prop_map(
        |(entries, header, malformed)| {
            let mut a = Map::new();
            a.insert("team".into(), "movies".into());
            for (seed, legacy_key, key, routes) in entries {
                let annotation =
                    if legacy_key { format!("divert.okteto.com/{key}-m{seed}") } else { entry_annotation(seed) };
                a.insert(annotation, json!({"namespace": key, "routes": routes}).to_string().into());
            }
            if let Some(header) = header {
                a.insert("divert.okteto.com/header".into(), header.into());
            }
            if malformed {
                a.insert(entry_annotation(99), "{\"namespace\": 3}".into());
            }
            a
        },
    )
}

fn virtual_service() -> impl Strategy<Value = Value> {
    (prop::collection::vec(http_route(), 0..6), any::<bool>(), prop::sample::select(vec!["v1", "v1beta1", "v1alpha3"]))
        .prop_map(|(http, tcp, version)| {
            let mut spec = json!({"hosts": ["frontend"], "gateways": ["mesh"], "http": http});
            if tcp {
                spec["tcp"] = json!([{"name": "db", "route": [{"destination": {"host": "db"}}]}]);
            }
            json!({
                "apiVersion": format!("networking.istio.io/{version}"),
                "kind": "VirtualService",
                "metadata": {"name": "frontend", "namespace": "staging", "uid": "u-1", "annotations": {}},
                "spec": spec,
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn mutation_is_idempotent_and_reversible(
        original in virtual_service(),
        annotations in annotations(),
        legacy in any::<bool>(),
    ) {
        let settings = Settings { legacy_header: legacy, ..Settings::default() };
        let mut annotated = original.clone();
        annotated["metadata"]["annotations"] = Value::Object(annotations);

        let once = mutate(&annotated, &settings);
        prop_assert!(once.warnings.iter().all(|w| w.chars().count() < 120), "{:?}", once.warnings);
        let twice = mutate(&once.object, &settings);
        prop_assert!(twice.patch.is_empty(), "second patch {:?}", twice.patch);

        let mut stripped = once.object.clone();
        stripped["metadata"]["annotations"] = original["metadata"]["annotations"].clone();
        let back = mutate(&stripped, &settings);
        prop_assert_eq!(&back.object["spec"], &original["spec"]);
        prop_assert_eq!(&back.object, &original);

        // every original route is still there, unchanged apart from §5's header, in order
        let originals = original["spec"]["http"].as_array().unwrap();
        let kept: Vec<&Value> = once.object["spec"]["http"].as_array().unwrap().iter()
            .filter(|r| !r["name"].as_str().is_some_and(|n| n.starts_with("okteto-divert-")))
            .collect();
        prop_assert_eq!(kept.len(), originals.len());
        for (kept, original) in kept.iter().zip(originals) {
            let mut kept = (*kept).clone();
            let mut original = original.clone();
            for r in [&mut kept, &mut original] {
                r.as_object_mut().unwrap().remove("headers");
            }
            prop_assert_eq!(kept, original);
        }
    }
}

/// Any JSON at all where routes are expected, keyed with the field names the rules read.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..200).prop_map(Value::from),
        prop::sample::select(vec!["", "svc-a", "svc-a.staging", "okteto-divert-cindy-0", "okteto-divert=cindy", "a=1"])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        let field = prop::sample::select(vec![
            "name",
            "match",
            "route",
            "destination",
            "host",
            "subset",
            "weight",
            "headers",
            "request",
            "add",
            "set",
            "baggage",
            "uri",
            "redirect",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(field, inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Odd input never panics, always gets an answer, and the answer is stable.
    #[test]
    fn odd_input_gets_a_stable_answer(
        http in prop::collection::vec(any_json(), 0..5),
        header in any::<bool>(),
        legacy in any::<bool>(),
    ) {
        let settings = Settings { legacy_header: legacy, ..Settings::default() };
        let mut annotations = json!({ entry_annotation(1): r#"{"namespace":"cindy"}"# });
        if header {
            annotations["divert.okteto.com/header"] = "cindy".into();
        }
        let object = json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "odd", "namespace": "staging", "annotations": annotations},
            "spec": {"hosts": ["h"], "http": http},
        });
        let once = mutate(&object, &settings);
        prop_assert!(once.warnings.iter().all(|w| w.chars().count() < 120), "{:?}", once.warnings);
        let twice = mutate(&once.object, &settings);
        prop_assert!(twice.patch.is_empty(), "second patch {:?}", twice.patch);
    }
}
