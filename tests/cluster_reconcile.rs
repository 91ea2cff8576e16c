//! SPEC §10.2, §10.3, §10.5: the reconciler's decision, a pure function from the cluster's state
//! to annotation changes. Unit cases for each rule, `reconcile --cluster` run as a user runs it,
//! and a proptest: for random clusters, applying the plan and then admission (the mutating
//! webhook's own path, with the cluster view) reaches a fixed point, and the routes admission
//! generates send each developer only the Services it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use divert_webhook::cluster::reconcile::{self, Absence, Change, ObjectChanges, entry_annotation, plan};
use divert_webhook::cluster::state::{ClusterState, from_dump};
use divert_webhook::deadline::Deadline;
use divert_webhook::review::{Endpoint, Operation, admit_in};
use divert_webhook::rules::Kind;
use divert_webhook::selector::Selector;
use divert_webhook::settings::{Driver, Settings};
use proptest::prelude::*;
use serde_json::{Value, json};

const FROM: &str = "divert.okteto.com/from";
const HEADER: &str = "divert.okteto.com/header";
const GRACE: Duration = Duration::from_secs(60);

fn dump() -> ClusterState {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cluster-dump.yaml")).unwrap();
    from_dump(&text).unwrap().0
}

fn labels(from: Option<&str>) -> BTreeMap<String, String> {
    from.map(|from| BTreeMap::from([(FROM.to_string(), from.to_string())])).unwrap_or_default()
}

fn vs(namespace: &str, name: &str, annotations: Value, hosts: &[&str]) -> Value {
    let http: Vec<Value> = hosts
        .iter()
        .enumerate()
        .map(|(i, host)| json!({"name": format!("r{i}"), "route": [{"destination": {"host": host}}]}))
        .collect();
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"hosts": [format!("{name}.example.com")], "http": http}
    })
}

fn ours(namespace: &str, services: &[&str]) -> (String, Value) {
    (entry_annotation(namespace), json!(json!({"namespace": namespace, "services": services}).to_string()))
}

#[test]
fn the_dump_gets_entries_for_what_developers_run_and_loses_stale_ones() {
    let state = dump();
    let changes = plan(&state, &Settings::default(), &Absence::offline(GRACE));
    let shop = ObjectChanges {
        kind: "VirtualService",
        api_version: "networking.istio.io/v1".into(),
        namespace: "staging".into(),
        name: "shop".into(),
        changes: vec![
            Change::Apply {
                annotation: entry_annotation("cindy"),
                value: r#"{"namespace":"cindy","services":["api"]}"#.into(),
                previous: None,
            },
            Change::Apply {
                annotation: entry_annotation("bob"),
                value: r#"{"namespace":"bob","services":["web"]}"#.into(),
                previous: None,
            },
            Change::RemoveStale {
                annotation: "divert.okteto.com/gone-shop".into(),
                value: r#"{"namespace":"gone","routes":["web"]}"#.into(),
            },
        ],
        owned: BTreeMap::from([
            (entry_annotation("cindy"), r#"{"namespace":"cindy","services":["api"]}"#.into()),
            (entry_annotation("bob"), r#"{"namespace":"bob","services":["web"]}"#.into()),
        ]),
    };
    let header = ObjectChanges {
        kind: "VirtualService",
        api_version: "networking.istio.io/v1".into(),
        namespace: "cindy".into(),
        name: "api".into(),
        changes: vec![Change::Apply { annotation: HEADER.into(), value: "cindy".into(), previous: None }],
        owned: BTreeMap::from([(HEADER.into(), "cindy".into())]),
    };
    assert_eq!(changes, [shop, header]);
    // Within the grace period the stale entry stays.
    let recent = Absence {
        grace: GRACE,
        gone_for: BTreeMap::from([("gone".into(), Duration::from_secs(5))]),
        watched_for: None,
    };
    let changes = plan(&state, &Settings::default(), &recent);
    assert!(!changes[0].changes.iter().any(|c| matches!(c, Change::RemoveStale { .. })), "{changes:?}");
    // Applied, the plan is empty.
    let mut applied = state.clone();
    let changes = plan(&state, &Settings::default(), &Absence::offline(GRACE));
    reconcile::apply(&mut applied.virtual_services, "VirtualService", &changes);
    assert_eq!(plan(&applied, &Settings::default(), &Absence::offline(GRACE)), []);
}

#[test]
fn entries_follow_labels_services_and_deletions() {
    let settings = Settings::default();
    let absence = Absence::offline(GRACE);
    let mut state = ClusterState::empty();
    state.view.add_namespace("staging", labels(None));
    for s in ["api", "web"] {
        state.view.add_service("staging", s);
    }
    state.view.add_namespace("cindy", labels(Some("staging")));
    state.view.add_service("cindy", "api");
    state.view.add_service("cindy", "web");
    let (key, value) = ours("cindy", &["api"]);
    state.virtual_services.push(vs(
        "staging",
        "shop",
        json!({ key.clone(): value }),
        &["api", "web.staging", "ext.example.com"],
    ));

    // A Service created in cindy: the entry is updated.
    let changes = plan(&state, &settings, &absence);
    assert_eq!(
        changes[0].changes,
        [Change::Apply {
            annotation: key.clone(),
            value: r#"{"namespace":"cindy","services":["api","web"]}"#.into(),
            previous: Some(r#"{"namespace":"cindy","services":["api"]}"#.into()),
        }]
    );
    // The label goes, or the namespace is being deleted: the entry goes at once.
    for change in ["unlabelled", "terminating"] {
        let mut changed = state.clone();
        match change {
            "unlabelled" => changed.view.add_namespace("cindy", labels(None)),
            _ => {
                changed.terminating.insert("cindy".into());
            }
        }
        let changes = plan(&changed, &settings, &absence);
        assert_eq!(
            changes[0].changes,
            [Change::Release { annotation: key.clone(), value: r#"{"namespace":"cindy","services":["api"]}"#.into() }],
            "{change}"
        );
    }
    // A second developer: the apply configuration keeps cindy's entry, which did not change (a
    // server-side apply without it would remove it).
    let mut two = state.clone();
    two.view.add_namespace("bob", labels(Some("staging")));
    two.view.add_service("bob", "web");
    let (_, current) = ours("cindy", &["api", "web"]);
    two.virtual_services[0]["metadata"]["annotations"][&key] = current.clone();
    let changes = plan(&two, &settings, &absence);
    assert_eq!(changes[0].changes.len(), 1, "{changes:?}");
    let configuration = reconcile::apply_configuration(&changes[0]).unwrap();
    assert_eq!(
        configuration,
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "shop", "namespace": "staging", "annotations": {
                key.clone(): current,
                entry_annotation("bob"): r#"{"namespace":"bob","services":["web"]}"#,
            }},
        })
    );
    assert_eq!(reconcile::stale_patch(&changes[0]), None);

    // Someone else's entry for cindy is not the reconciler's to change while cindy exists, even
    // unlabelled or being deleted.
    let mut foreign = state.clone();
    foreign.view.add_namespace("cindy", labels(None));
    foreign.terminating.insert("cindy".into());
    foreign.virtual_services[0]["metadata"]["annotations"] =
        json!({"divert.okteto.com/cindy-app": r#"{"namespace":"cindy"}"#});
    assert_eq!(plan(&foreign, &settings, &absence), []);
}

#[test]
fn header_annotations_written_by_the_webhook_are_removed_with_the_label_and_no_others() {
    let settings = Settings::default();
    let absence = Absence::offline(GRACE);
    let mut state = ClusterState::empty();
    state.view.add_namespace("cindy", labels(Some("staging")));
    state.virtual_services.push(vs("cindy", "a", json!({}), &["api"]));
    state.virtual_services.push(vs("cindy", "b", json!({HEADER: "team"}), &["api"]));
    let changes = plan(&state, &settings, &absence);
    assert_eq!(changes.len(), 1, "b's annotation is someone else's: {changes:?}");
    assert_eq!(changes[0].name, "a");
    let mut applied = state.clone();
    reconcile::apply(&mut applied.virtual_services, "VirtualService", &changes);
    assert!(reconcile::owned_by_webhook(&applied.virtual_services[0], HEADER));
    assert_eq!(plan(&applied, &settings, &absence), []);
    // The label goes: what the webhook wrote goes; the other annotation stays.
    applied.view.add_namespace("cindy", labels(None));
    let changes = plan(&applied, &settings, &absence);
    assert_eq!(
        changes,
        [ObjectChanges {
            kind: "VirtualService",
            api_version: "networking.istio.io/v1".into(),
            namespace: "cindy".into(),
            name: "a".into(),
            changes: vec![Change::Release { annotation: HEADER.into(), value: "cindy".into() }],
            owned: BTreeMap::new(),
        }]
    );
    // Under the nginx driver Ingresses get it, VirtualServices do not.
    let nginx = Settings::new(Driver::Nginx, Selector::everything(), None, &[]);
    let mut state = state.clone();
    state.ingresses.push(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": "cindy"}}));
    let changes = plan(&state, &nginx, &absence);
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].kind, changes[0].name.as_str()), ("Ingress", "web"));
}

#[test]
fn reconcile_prints_the_plan_as_a_diff() {
    let out = Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
        .args(["reconcile", "--cluster", "tests/fixtures/cluster-dump.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("POD_NAMESPACE")
        .output()
        .unwrap();
    assert!(out.status.success());
    let cindy = entry_annotation("cindy");
    let bob = entry_annotation("bob");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            r#"--- VirtualService staging/shop
+++ VirtualService staging/shop
# server-side apply, field manager divert-webhook
+metadata.annotations["{cindy}"]: {{"namespace":"cindy","services":["api"]}}
# server-side apply, field manager divert-webhook
+metadata.annotations["{bob}"]: {{"namespace":"bob","services":["web"]}}
# JSON patch: test the value, then remove (its namespace is gone)
-metadata.annotations["divert.okteto.com/gone-shop"]: {{"namespace":"gone","routes":["web"]}}
--- VirtualService cindy/api
+++ VirtualService cindy/api
# server-side apply, field manager divert-webhook
+metadata.annotations["divert.okteto.com/header"]: cindy
"#
        )
    );
    assert_eq!(String::from_utf8(out.stderr).unwrap(), "4 change(s) on 2 object(s)\n");
}

#[test]
fn reconcile_prints_the_writes_themselves_as_yaml() {
    let out = Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
        .args(["reconcile", "--cluster", "tests/fixtures/cluster-dump.yaml", "-o", "yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("POD_NAMESPACE")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("# server-side apply of VirtualService staging/shop, field manager divert-webhook\n"),
        "{stdout}"
    );
    let docs: Vec<Value> = serde_saphyr::from_multiple(&stdout).unwrap();
    assert_eq!(docs.len(), 3, "{stdout}");
    assert_eq!(docs[0]["metadata"]["annotations"].as_object().unwrap().len(), 2);
    assert_eq!(docs[2]["metadata"], json!({"name": "api", "namespace": "cindy", "annotations": {HEADER: "cindy"}}));
    // The JSON patch removes the stale entry from the object as it is, and from nothing else:
    // changed since it was read, the test fails and nothing is removed.
    let patch: json_patch::Patch = serde_json::from_value(docs[1].clone()).unwrap();
    let shop = dump().virtual_services.into_iter().find(|v| v["metadata"]["name"] == "shop").unwrap();
    let mut patched = shop.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    assert!(patched["metadata"]["annotations"].get("divert.okteto.com/gone-shop").is_none());
    assert_eq!(patched["metadata"]["annotations"].as_object().unwrap().len(), 1);
    let mut changed = shop.clone();
    changed["metadata"]["annotations"]["divert.okteto.com/gone-shop"] = json!(r#"{"namespace":"gone"}"#);
    let before = changed.clone();
    assert!(json_patch::patch(&mut changed, &patch).is_err());
    assert_eq!(changed, before);
}

/// Admission of every VirtualService of `state` with its view, as the reconciler's writes come
/// back through the mutating webhook; the objects are replaced by what it stores.
fn admit_all(state: &mut ClusterState, settings: &Settings) -> Vec<String> {
    let mut warnings = Vec::new();
    for object in &mut state.virtual_services {
        let namespace = object["metadata"]["namespace"].as_str().unwrap().to_string();
        let admission = admit_in(
            Endpoint::Mutate,
            Kind::VirtualService,
            Operation::Update,
            &namespace,
            object,
            settings,
            &state.view,
            Deadline::NONE,
        )
        .unwrap();
        json_patch::patch(object, &admission.patch.decode()).unwrap();
        warnings.extend(admission.warnings);
    }
    warnings
}

/// `objects` after the reconciler's writes as the apiserver performs them: a server-side apply
/// replaces the annotations field manager divert-webhook owned (its entries, and the header if
/// managedFields say so) with those of the apply configuration; a JSON patch tests, then removes.
fn written(objects: &[Value], plan: &[ObjectChanges]) -> Vec<Value> {
    let mut objects = objects.to_vec();
    for changes in plan {
        let object = objects
            .iter_mut()
            .find(|o| {
                o["metadata"]["namespace"] == changes.namespace.as_str()
                    && o["metadata"]["name"] == changes.name.as_str()
            })
            .unwrap();
        if let Some(configuration) = reconcile::apply_configuration(changes) {
            let header_owned = reconcile::owned_by_webhook(object, HEADER);
            let annotations = object["metadata"]["annotations"].as_object_mut().unwrap();
            annotations.retain(|key, value| {
                let entry_of_webhook = serde_json::from_str::<Value>(value.as_str().unwrap_or_default())
                    .ok()
                    .and_then(|v| v["namespace"].as_str().map(entry_annotation))
                    .is_some_and(|ours| ours == *key);
                !(entry_of_webhook || (key == HEADER && header_owned))
            });
            for (key, value) in configuration["metadata"]["annotations"].as_object().unwrap() {
                annotations.insert(key.clone(), value.clone());
            }
        }
        if let Some(patch) = reconcile::stale_patch(changes) {
            let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
            json_patch::patch(object, &patch).expect("the tests pass on the object read");
        }
    }
    objects
}

const SERVICES: [&str; 5] = ["svc-0", "svc-1", "svc-2", "svc-3", "svc-4"];

/// A random cluster: shared namespaces staging and prod with some Services; developer
/// namespaces d0..d4, labelled from one of them (or not, or wrongly), some being deleted,
/// running some Services; VirtualServices in the shared namespaces routing to Services by
/// every host form, carrying old entries of the reconciler and entries of someone else (some
/// naming namespaces that are gone); VirtualServices in developer namespaces, some annotated.
fn cluster() -> impl Strategy<Value = ClusterState> {
    let shared = proptest::collection::btree_set(0usize..5, 0..5);
    let developer = (0usize..4, any::<bool>(), proptest::collection::btree_set(0usize..5, 0..4));
    let route_hosts = proptest::collection::vec((0usize..5, 0usize..4), 1..4);
    let shared_vs = (
        0usize..2,
        proptest::collection::vec(route_hosts, 1..5),
        proptest::collection::vec((0usize..7, proptest::collection::btree_set(0usize..5, 0..3), any::<bool>()), 0..4),
    );
    (
        [shared.clone(), shared],
        proptest::collection::vec(developer, 5),
        proptest::collection::vec(shared_vs, 1..4),
        proptest::collection::vec((0usize..5, any::<bool>()), 0..4),
    )
        .prop_map(|(shared, developers, shared_vss, developer_vss)| {
            let mut state = ClusterState::empty();
            let shared_names = ["staging", "prod"];
            for (name, services) in shared_names.iter().zip(&shared) {
                state.view.add_namespace(name, labels(None));
                for s in services {
                    state.view.add_service(name, SERVICES[*s]);
                }
            }
            for (d, (label, terminating, services)) in developers.iter().enumerate() {
                let name = format!("d{d}");
                let from = match label {
                    0 => None,
                    1 => Some("staging".to_string()),
                    2 => Some("prod".to_string()),
                    _ => Some(name.clone()), // invalid: itself
                };
                state.view.add_namespace(&name, labels(from.as_deref()));
                if *terminating {
                    state.terminating.insert(name.clone());
                }
                for s in services {
                    state.view.add_service(&name, SERVICES[*s]);
                }
            }
            for (i, (ns, routes, entries)) in shared_vss.iter().enumerate() {
                let namespace = shared_names[*ns];
                let http: Vec<Value> = routes
                    .iter()
                    .enumerate()
                    .map(|(r, destinations)| {
                        let route: Vec<Value> = destinations
                            .iter()
                            .map(|(s, form)| {
                                let host = match form {
                                    0 => SERVICES[*s].to_string(),
                                    1 => format!("{}.{namespace}", SERVICES[*s]),
                                    2 => format!("{}.{namespace}.svc.cluster.local", SERVICES[*s]),
                                    _ => format!("{}.elsewhere.svc.cluster.local", SERVICES[*s]),
                                };
                                json!({"destination": {"host": host}})
                            })
                            .collect();
                        json!({"name": format!("r{r}"), "match": [{"uri": {"prefix": format!("/r{r}")}}], "route": route})
                    })
                    .collect();
                // Entries: d0..d4 (the reconciler's, with old services; or someone else's,
                // without), g5 and g6 namespaces that do not exist.
                let mut annotations = serde_json::Map::new();
                for (d, services, by_reconciler) in entries {
                    let target = if *d < 5 { format!("d{d}") } else { format!("g{d}") };
                    if *by_reconciler {
                        let services: Vec<&str> = services.iter().map(|s| SERVICES[*s]).collect();
                        let (key, value) = ours(&target, &services);
                        annotations.insert(key, value);
                    } else {
                        annotations.insert(format!("divert.okteto.com/{target}-app"), json!(json!({"namespace": target}).to_string()));
                    }
                }
                state.virtual_services.push(json!({
                    "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                    "metadata": {"name": format!("vs{i}"), "namespace": namespace, "annotations": annotations},
                    "spec": {"hosts": [format!("vs{i}.example.com")], "http": http}
                }));
            }
            for (i, (d, annotated)) in developer_vss.iter().enumerate() {
                let namespace = format!("d{d}");
                let annotations = if *annotated { json!({HEADER: "someone"}) } else { json!({}) };
                state.virtual_services.push(vs(&namespace, &format!("own{i}"), annotations, &["svc-0"]));
            }
            state
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
    #[test]
    fn applying_the_plan_and_admission_reach_a_fixed_point(state in cluster(), watched in proptest::option::of(0u64..120)) {
        let settings = Settings::default();
        let absence = Absence { grace: GRACE, gone_for: BTreeMap::new(), watched_for: watched.map(Duration::from_secs) };
        let mut state = state;
        let first = plan(&state, &settings, &absence);
        let by_writes = written(&state.virtual_services, &first);
        reconcile::apply(&mut state.virtual_services, "VirtualService", &first);
        // The writes themselves (apply configurations as the apiserver merges them, tested
        // JSON patches) leave the annotations the plan says.
        for (written, applied) in by_writes.iter().zip(&state.virtual_services) {
            prop_assert_eq!(&written["metadata"]["annotations"], &applied["metadata"]["annotations"]);
        }
        admit_all(&mut state, &settings);
        let second = plan(&state, &settings, &absence);
        prop_assert!(second.is_empty(), "a second plan: {:?}", second);

        // The generated routes send each developer only Services it runs; every developer
        // namespace running a Service its shared namespace routes to gets routes.
        for object in &state.virtual_services {
            let namespace = object["metadata"]["namespace"].as_str().unwrap();
            let mut diverted: BTreeSet<String> = BTreeSet::new();
            for route in object["spec"]["http"].as_array().unwrap() {
                let name = route["name"].as_str().unwrap_or_default();
                let Some(rest) = name.strip_prefix("okteto-divert-") else { continue };
                let developer = rest.split('-').next().unwrap();
                diverted.insert(developer.to_string());
                for destination in route["route"].as_array().unwrap() {
                    let host = destination["destination"]["host"].as_str().unwrap();
                    if let Some(service) = host.strip_suffix(&format!(".{developer}.svc.cluster.local")) {
                        prop_assert!(state.view.runs(developer, service), "{name} sends to {host}, which {developer} does not run");
                    }
                }
            }
            // Entries someone else wrote have no services: §10.4 diverts what the namespace runs
            // (whether or not the shared namespace has that Service); the reconciler's entries
            // name what both run.
            let foreign: BTreeSet<String> = object["metadata"]["annotations"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(key, _)| key.ends_with("-app"))
                .map(|(_, value)| serde_json::from_str::<Value>(value.as_str().unwrap()).unwrap()["namespace"].as_str().unwrap().to_string())
                .collect();
            let routed = divert_webhook::rules::virtual_service::divert_routes::routed_services(object, namespace, &settings);
            let shared = state.view.namespace(namespace).map(|ns| ns.services.clone()).unwrap_or_default();
            for (other, view) in state.view.namespaces() {
                let expected = if foreign.contains(other) {
                    routed.iter().any(|s| view.services.contains(s))
                } else {
                    state.developer_of(other, &settings) == Some(namespace)
                        && routed.iter().any(|s| shared.contains(s) && view.services.contains(s))
                };
                prop_assert_eq!(diverted.contains(other), expected, "{} in {}/{}", other, namespace, object["metadata"]["name"]);
            }
        }

        // Objects of developer namespaces carry the header: their own annotation or the webhook's.
        for object in &state.virtual_services {
            let namespace = object["metadata"]["namespace"].as_str().unwrap();
            if state.developer_of(namespace, &settings).is_some() {
                prop_assert!(object["metadata"]["annotations"].get(HEADER).is_some());
            }
        }
    }
}
