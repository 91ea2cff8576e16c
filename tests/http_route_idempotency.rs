//! Property tests over generated developer HTTPRoutes (SPEC §11.4), through the real review
//! path: mutating the webhook's own output gives no patch; every rule that forwards carries the
//! divert member exactly once in one RequestHeaderModifier; and removing the annotation gives
//! back the route as it was (nothing the user wrote is lost or left changed).

mod virtual_service_support;

use divert_webhook::settings::{Driver, Settings};
use proptest::prelude::*;
use serde_json::{Value, json};
use virtual_service_support::mutate;

/// Valid divert keys, the longest a namespace name may be among them.
const KEYS: &[&str] = &["cindy", "zed", "dev-1", "a-developer-namespace-whose-name-is-63-characters-long-xxxxxxxx"];

fn header() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["baggage", "Baggage", "x-user", "baggage.okteto-divert"]),
        prop::sample::select(vec!["a=1", "a=1, b=2;p", "okteto-divert=bob", " , ", "t=1,okteto-divert=bob;q=2"]),
    )
        .prop_map(|(name, value)| json!({"name": name, "value": value}))
}

fn filter() -> impl Strategy<Value = Value> {
    prop_oneof![
        (
            prop::option::of(prop::collection::vec(header(), 1..3)),
            prop::option::of(prop::collection::vec(header(), 1..3)),
            prop::option::of(prop::collection::vec(prop::sample::select(vec!["x-a", "cookie"]), 1..2)),
        )
            // A modifier that does nothing (`{}`) is not generated: the removal cannot tell it
            // from the one the rule made, and removes it (docs/httproutes.md).
            .prop_filter("a modifier that does something", |(set, add, remove)| {
                set.is_some() || add.is_some() || remove.is_some()
            })
            .prop_map(|(set, add, remove)| {
                let mut modifier = json!({});
                if let Some(set) = set {
                    modifier["set"] = dedup(set);
                }
                if let Some(add) = add {
                    modifier["add"] = dedup(add);
                }
                if let Some(remove) = remove {
                    modifier["remove"] = json!(remove);
                }
                json!({"type": "RequestHeaderModifier", "requestHeaderModifier": modifier})
            }),
        Just(
            json!({"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "x-served", "value": "1"}]}})
        ),
        Just(
            json!({"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}})
        ),
        Just(json!({"type": "RequestRedirect", "requestRedirect": {"statusCode": 302}})),
    ]
}

/// Header names are unique within a `set` or an `add` (the Gateway API's CRD says so).
fn dedup(headers: Vec<Value>) -> Value {
    let mut seen = std::collections::BTreeSet::new();
    Value::Array(
        headers.into_iter().filter(|h| seen.insert(h["name"].as_str().unwrap().to_ascii_lowercase())).collect(),
    )
}

fn rule() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::collection::vec(filter(), 1..4)),
        prop::option::of(prop::sample::select(vec!["/api", "/"])),
        any::<bool>(),
        prop::option::of("[a-z]{1,8}"),
    )
        .prop_map(|(filters, path, backend, name)| {
            let mut rule = json!({});
            if let Some(filters) = filters {
                // One filter of each type per rule (the CRD's rule); a redirect goes alone.
                let mut seen = std::collections::BTreeSet::new();
                let filters: Vec<Value> =
                    filters.into_iter().filter(|f| seen.insert(f["type"].as_str().unwrap().to_string())).collect();
                rule["filters"] = json!(filters);
            }
            if let Some(path) = path {
                rule["matches"] = json!([{"path": {"type": "PathPrefix", "value": path}}]);
            }
            if backend {
                rule["backendRefs"] = json!([{"name": "api", "port": 8080}]);
            }
            if let Some(name) = name {
                rule["name"] = json!(name);
            }
            rule
        })
}

fn route() -> impl Strategy<Value = (Value, Option<&'static str>)> {
    (
        prop::collection::vec(rule(), 0..5),
        prop::option::of(prop::sample::select(KEYS.to_vec())),
        prop::sample::select(vec![
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1beta1",
            "policy.linkerd.io/v1beta3",
        ]),
    )
        .prop_map(|(rules, key, api_version)| {
            let mut object = json!({
                "apiVersion": api_version, "kind": "HTTPRoute",
                "metadata": {"name": "api", "namespace": "cindy", "labels": {"app": "api"}},
                "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "api", "port": 8080}], "rules": rules},
            });
            if let Some(key) = key {
                object["metadata"]["annotations"] = json!({"divert.okteto.com/header": key});
            }
            (object, key)
        })
}

fn forwards(rule: &Value) -> bool {
    !rule["filters"].as_array().into_iter().flatten().any(|f| f["type"] == "RequestRedirect")
}

/// The `okteto-divert` members a rule's RequestHeaderModifier adds, with their values.
fn added_members(rule: &Value) -> Vec<String> {
    let modifiers: Vec<&Value> =
        rule["filters"].as_array().into_iter().flatten().filter(|f| f["type"] == "RequestHeaderModifier").collect();
    assert!(modifiers.len() <= 1, "one RequestHeaderModifier per rule: {rule}");
    modifiers
        .iter()
        .flat_map(|f| f["requestHeaderModifier"]["add"].as_array().into_iter().flatten())
        .filter(|h| h["name"].as_str().unwrap().eq_ignore_ascii_case("baggage"))
        .flat_map(|h| h["value"].as_str().unwrap().split(',').map(|m| m.trim().to_string()).collect::<Vec<_>>())
        .filter(|m| m.split('=').next().unwrap().trim() == "okteto-divert")
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn an_invalid_key_changes_nothing((mut object, _) in route()) {
        // 64 characters: not a namespace name; validation denies it, mutation leaves it alone.
        object["metadata"]["annotations"] = json!({"divert.okteto.com/header": format!("{}x", KEYS[3])});
        prop_assert_eq!(mutate(&object, &Settings::default()).patch, Vec::<Value>::new());
    }

    #[test]
    fn header_injection_is_idempotent_and_reversible((object, key) in route(), nginx in any::<bool>()) {
        let settings = Settings { driver: if nginx { Driver::Nginx } else { Driver::Istio }, ..Settings::default() };
        let once = mutate(&object, &settings);
        let twice = mutate(&once.object, &settings);
        prop_assert_eq!(twice.patch, Vec::<Value>::new(), "not idempotent: {:#}", once.object);
        for (index, rule) in once.object["spec"]["rules"].as_array().unwrap().iter().enumerate() {
            let members = added_members(rule);
            match key {
                Some(key) if forwards(rule) => prop_assert_eq!(members, vec![format!("okteto-divert={key}")], "rule {}", index),
                Some(_) => prop_assert_eq!(rule, &object["spec"]["rules"][index], "a redirect is left alone"),
                None => prop_assert!(members.is_empty() || !forwards(rule), "rule {}: {:?}", index, members),
            }
        }
        // Removing the annotation gives back the route as written, when the user's own adds of
        // baggage held no okteto-divert member (that one is removed too: by its form, as in §5).
        let users_member = object["spec"]["rules"].as_array().unwrap().iter().any(|r| forwards(r) && !added_members(r).is_empty());
        if key.is_some() && !users_member {
            let mut without = once.object.clone();
            without["metadata"].as_object_mut().unwrap().remove("annotations");
            let back = mutate(&without, &settings);
            let mut original = object.clone();
            original["metadata"].as_object_mut().unwrap().remove("annotations");
            prop_assert_eq!(&back.object, &original);
        }
    }
}
