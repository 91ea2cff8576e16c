//! SPEC §3 through the real review path: AdmissionReviews shaped as the apiserver sends them,
//! answers decoded as the apiserver decodes them, patches applied with json-patch.

mod support;

use divert_webhook::review::{Endpoint, Outcome};
use divert_webhook::selector::Selector;
use divert_webhook::settings::{Driver, Settings};
use serde_json::{Value, json};
use support::{Answer, ask, namespace, review_of};

fn istio() -> Settings {
    Settings::default()
}

fn nginx() -> Settings {
    Settings::new(Driver::Nginx, Selector::parse("dev.okteto.com/okteto-managed=true").unwrap(), None, &[])
}

const MANAGED: (&str, &str) = ("dev.okteto.com/okteto-managed", "true");

#[test]
fn managed_namespace_gets_istio_injection_and_the_result_is_a_fixed_point() {
    let ns = namespace("cindy", &[MANAGED, ("team", "a")], &[]);
    let answer = ask(Endpoint::Mutate, &review_of(&ns), &istio());
    assert_eq!(answer.outcome, Outcome::Patched);
    assert_eq!(answer.ops(), json!([{"op": "add", "path": "/metadata/labels/istio-injection", "value": "enabled"}]));
    let patched = answer.apply_to(&ns);
    assert_eq!(
        patched["metadata"]["labels"],
        json!({"dev.okteto.com/okteto-managed": "true", "team": "a", "istio-injection": "enabled"})
    );
    // everything else untouched
    let mut back = patched.clone();
    back["metadata"]["labels"].as_object_mut().unwrap().remove("istio-injection");
    assert_eq!(back, ns);

    let again = ask(Endpoint::Mutate, &review_of(&patched), &istio());
    assert_eq!(again.outcome, Outcome::Allowed);
    assert!(again.response.get("patch").is_none() && again.response.get("patchType").is_none(), "{}", again.response);
}

#[test]
fn labels_map_is_created_when_absent() {
    // Selector "" manages every namespace, so a namespace without labels is managed.
    let settings = Settings::new(Driver::Istio, Selector::parse("").unwrap(), None, &[]);
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bare"}});
    let answer = ask(Endpoint::Mutate, &review_of(&ns), &settings);
    assert_eq!(
        answer.ops(),
        json!([{"op": "add", "path": "/metadata/labels", "value": {"istio-injection": "enabled"}}])
    );
    assert_eq!(answer.apply_to(&ns)["metadata"]["labels"], json!({"istio-injection": "enabled"}));
    // a namespace without metadata at all still gets a clean answer
    let nothing = json!({"apiVersion": "v1", "kind": "Namespace"});
    let answer = ask(Endpoint::Mutate, &review_of(&nothing), &settings);
    assert_eq!(answer.apply_to(&nothing)["metadata"]["labels"]["istio-injection"], "enabled");
}

#[test]
fn protected_and_own_namespaces_are_never_mutated() {
    let settings = Settings::new(
        Driver::Istio,
        Selector::parse("dev.okteto.com/okteto-managed=true").unwrap(),
        Some("divert-system"),
        &["platform-tools".to_string()],
    );
    for name in [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "istio-system",
        "istio-ingress",
        "linkerd",
        "linkerd-viz",
        "cert-manager",
        "divert-system",
        "platform-tools",
    ] {
        let answer = ask(Endpoint::Mutate, &review_of(&namespace(name, &[MANAGED], &[])), &settings);
        assert_eq!(answer.outcome, Outcome::Allowed, "{name}");
        assert!(answer.response.get("patch").is_none(), "{name}");
    }
    // and the same namespace name unprotected is mutated: the protection is what stopped it
    let answer = ask(Endpoint::Mutate, &review_of(&namespace("tools", &[MANAGED], &[])), &settings);
    assert_eq!(answer.outcome, Outcome::Patched);
}

#[test]
fn unmanaged_namespaces_get_no_patch() {
    for labels in [&[][..], &[("dev.okteto.com/okteto-managed", "false")][..], &[("team", "a")][..]] {
        let answer = ask(Endpoint::Mutate, &review_of(&namespace("shop", labels, &[])), &istio());
        assert_eq!(answer.outcome, Outcome::Allowed, "{labels:?}");
    }
}

#[test]
fn explicit_injection_choices_are_respected() {
    let disabled = namespace("batch", &[MANAGED, ("istio-injection", "disabled")], &[]);
    let answer = ask(Endpoint::Mutate, &review_of(&disabled), &istio());
    assert_eq!(answer.outcome, Outcome::Allowed);
    let warnings = answer.warnings();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("istio-injection=disabled") && warnings[0].contains("batch"), "{warnings:?}");
    assert!(warnings[0].len() < 120);

    // A namespace name can be 63 characters; the warning still stays one short sentence.
    let long = "a-namespace-with-a-very-long-name-of-sixty-three-characters-xyz";
    assert_eq!(long.len(), 63);
    for (labels, annotations, settings) in [
        (vec![MANAGED, ("istio-injection", "disabled")], vec![], istio()),
        (vec![MANAGED], vec![("linkerd.io/inject", "disabled")], nginx()),
    ] {
        let answer = ask(Endpoint::Mutate, &review_of(&namespace(long, &labels, &annotations)), &settings);
        let warnings = answer.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].chars().count() < 120, "{} characters: {}", warnings[0].chars().count(), warnings[0]);
        assert!(warnings[0].contains("=disabled, so divert cannot reach its pods"), "{warnings:?}");
        assert!(!warnings[0].ends_with('…'), "cut at the end instead of shortening the name: {warnings:?}");
    }

    let revision = namespace("canary", &[MANAGED, ("istio.io/rev", "1-22")], &[]);
    let answer = ask(Endpoint::Mutate, &review_of(&revision), &istio());
    assert_eq!(answer.outcome, Outcome::Allowed);
    assert!(answer.warnings().is_empty());
}

#[test]
fn nginx_driver_adds_the_linkerd_annotation_instead() {
    let ns = namespace("cindy", &[MANAGED], &[]);
    let answer = ask(Endpoint::Mutate, &review_of(&ns), &nginx());
    assert_eq!(
        answer.ops(),
        json!([{"op": "add", "path": "/metadata/annotations", "value": {"linkerd.io/inject": "enabled"}}])
    );
    let patched = answer.apply_to(&ns);
    assert!(patched["metadata"]["labels"].get("istio-injection").is_none());
    assert_eq!(ask(Endpoint::Mutate, &review_of(&patched), &nginx()).outcome, Outcome::Allowed);

    let with_annotations = namespace("cindy", &[MANAGED], &[("owner", "c")]);
    let answer = ask(Endpoint::Mutate, &review_of(&with_annotations), &nginx());
    assert_eq!(
        answer.ops(),
        json!([{"op": "add", "path": "/metadata/annotations/linkerd.io~1inject", "value": "enabled"}])
    );

    let disabled = namespace("cindy", &[MANAGED], &[("linkerd.io/inject", "disabled")]);
    let answer = ask(Endpoint::Mutate, &review_of(&disabled), &nginx());
    assert_eq!(answer.outcome, Outcome::Allowed);
    assert!(answer.warnings()[0].contains("linkerd.io/inject=disabled"));
}

fn denied(ns: &Value, settings: &Settings) -> String {
    let answer = ask(Endpoint::Validate, &review_of(ns), settings);
    assert_eq!(answer.outcome, Outcome::Denied, "{ns}");
    assert_eq!(answer.response["allowed"], false);
    assert_eq!(answer.response["status"]["code"], 403);
    let message = answer.response["status"]["message"].as_str().unwrap().to_string();
    assert!(!message.contains('\n'), "{message}");
    message
}

#[test]
fn both_meshes_on_one_namespace_are_denied_naming_both_markers() {
    for (labels, annotation, istio_marker) in [
        (vec![("istio-injection", "enabled")], "enabled", "istio-injection=enabled"),
        (vec![("istio.io/rev", "stable")], "ingress", "istio.io/rev=stable"),
    ] {
        // managed or not: the conflict is denied everywhere
        for extra in [vec![], vec![MANAGED]] {
            let mut all = labels.clone();
            all.extend(extra);
            let ns = namespace("both", &all, &[("linkerd.io/inject", annotation)]);
            let message = denied(&ns, &istio());
            assert!(message.starts_with("Namespace both: "), "{message}");
            assert!(message.contains(istio_marker), "{message}");
            assert!(message.contains(&format!("linkerd.io/inject={annotation}")), "{message}");
            assert!(message.contains("remove one"), "{message}");
        }
    }
}

#[test]
fn the_other_mesh_on_a_managed_namespace_is_denied() {
    let linkerd = namespace("cindy", &[MANAGED], &[("linkerd.io/inject", "enabled")]);
    let message = denied(&linkerd, &istio());
    assert!(message.contains("linkerd.io/inject=enabled") && message.contains("driver is istio"), "{message}");
    // unmanaged: not our business
    let unmanaged = namespace("cindy", &[], &[("linkerd.io/inject", "enabled")]);
    assert_eq!(ask(Endpoint::Validate, &review_of(&unmanaged), &istio()).outcome, Outcome::Allowed);
    // disabled is not a mesh marker
    let off = namespace("cindy", &[MANAGED], &[("linkerd.io/inject", "disabled")]);
    assert_eq!(ask(Endpoint::Validate, &review_of(&off), &istio()).outcome, Outcome::Allowed);

    for label in [("istio-injection", "enabled"), ("istio.io/rev", "canary")] {
        let istio_ns = namespace("cindy", &[MANAGED, label], &[]);
        let message = denied(&istio_ns, &nginx());
        assert!(
            message.contains(&format!("{}={}", label.0, label.1)) && message.contains("driver is nginx"),
            "{message}"
        );
    }
    let off = namespace("cindy", &[MANAGED, ("istio-injection", "disabled")], &[]);
    assert_eq!(ask(Endpoint::Validate, &review_of(&off), &nginx()).outcome, Outcome::Allowed);
}

#[test]
fn an_unknown_istio_injection_value_is_denied_with_the_allowed_values() {
    for (value, settings) in [("true", istio()), ("Enabled", istio()), ("", nginx())] {
        let message = denied(&namespace("a", &[("istio-injection", value)], &[]), &settings);
        assert!(message.starts_with("Namespace a: label istio-injection="), "{message}");
        assert!(message.contains(&format!("istio-injection={value:?}")), "{message}");
        assert!(message.contains("set it to enabled or disabled"), "{message}");
    }
}

#[test]
fn an_unknown_linkerd_inject_value_is_denied_with_the_allowed_values() {
    for (value, settings) in [("yes", istio()), ("true", nginx())] {
        let message = denied(&namespace("a", &[], &[("linkerd.io/inject", value)]), &settings);
        assert!(message.starts_with("Namespace a: annotation linkerd.io/inject="), "{message}");
        assert!(message.contains(&format!("linkerd.io/inject={value:?}")), "{message}");
        assert!(message.contains("set it to enabled, disabled or ingress"), "{message}");
    }
}

#[test]
fn istio_injection_together_with_a_revision_is_denied() {
    for injection in ["enabled", "disabled"] {
        let ns = namespace("a", &[("istio-injection", injection), ("istio.io/rev", "canary")], &[]);
        let message = denied(&ns, &istio());
        assert!(
            message.contains(&format!("label istio-injection={injection}"))
                && message.contains("label istio.io/rev=canary"),
            "{message}"
        );
        assert!(message.contains("remove one"), "{message}");
    }
}

#[test]
fn well_formed_namespaces_pass_validation() {
    for ns in [
        namespace("a", &[], &[]),
        namespace("a", &[MANAGED], &[]),
        namespace("a", &[MANAGED, ("istio-injection", "enabled")], &[]),
        namespace("a", &[MANAGED, ("istio-injection", "disabled")], &[("linkerd.io/inject", "disabled")]),
        namespace("a", &[("istio.io/rev", "canary")], &[]),
        namespace("a", &[], &[("linkerd.io/inject", "ingress")]),
    ] {
        let answer = ask(Endpoint::Validate, &review_of(&ns), &istio());
        assert_eq!(answer.outcome, Outcome::Allowed, "{ns}");
        assert_eq!(answer.response["allowed"], true);
    }
}

#[test]
fn answers_echo_the_uid_and_dry_run_gets_the_same_answer() {
    let ns = namespace("cindy", &[MANAGED], &[]);
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        let mut review = review_of(&ns);
        review["request"]["uid"] = json!("11111111-2222-3333-4444-555555555555");
        let wet = ask(endpoint, &review, &istio());
        review["request"]["dryRun"] = json!(true);
        let dry = ask(endpoint, &review, &istio());
        assert_eq!(wet.response["uid"], "11111111-2222-3333-4444-555555555555");
        assert_eq!(wet.response, dry.response);
    }
}

#[test]
fn delete_and_connect_are_allowed_without_a_patch() {
    let ns = namespace("both", &[MANAGED, ("istio-injection", "enabled")], &[("linkerd.io/inject", "enabled")]);
    for op in ["DELETE", "CONNECT"] {
        for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
            let mut review = review_of(&ns);
            review["request"]["operation"] = json!(op);
            let answer = ask(endpoint, &review, &istio());
            assert_eq!(answer.outcome, Outcome::Allowed, "{op}");
        }
    }
}

#[test]
fn update_is_handled_like_create() {
    let ns = namespace("cindy", &[MANAGED], &[]);
    let mut review = review_of(&ns);
    review["request"]["operation"] = json!("UPDATE");
    review["request"]["oldObject"] = namespace("cindy", &[], &[]);
    assert_eq!(ask(Endpoint::Mutate, &review, &istio()).outcome, Outcome::Patched);
}

/// Every Namespace of the corpus, as a managed namespace under both drivers: the patch only adds
/// the marker, the result is a fixed point, and nothing the manifest held is lost.
#[test]
fn corpus_namespaces_keep_every_field() {
    let everything = Settings::new(Driver::Istio, Selector::parse("").unwrap(), None, &[]);
    let everything_nginx = Settings::new(Driver::Nginx, Selector::parse("").unwrap(), None, &[]);
    let docs = support::corpus_objects("namespaces", "Namespace");
    assert!(docs.len() >= 39, "corpus has {} namespaces", docs.len());
    for (file, ns) in docs {
        for settings in [&everything, &everything_nginx] {
            let answer = ask(Endpoint::Mutate, &review_of(&ns), settings);
            let patched = answer.apply_to(&ns);
            support::assert_contains(&ns, &patched, &file);
            for op in answer.ops().as_array().unwrap() {
                assert_eq!(op["op"], "add", "{file}: {op}");
            }
            let again = ask(Endpoint::Mutate, &review_of(&patched), settings);
            assert_eq!(again.outcome, Outcome::Allowed, "{file}: second pass {}", again.ops());
            let _: Answer = again;
        }
    }
}

#[test]
fn protected_namespaces_skip_the_wrong_mesh_denial_but_not_the_two_meshes_denial() {
    // istio-system labelled managed and wired to Linkerd: the operator's business, not divert's.
    let other_mesh = namespace("istio-system", &[MANAGED], &[("linkerd.io/inject", "enabled")]);
    let answer = ask(Endpoint::Validate, &review_of(&other_mesh), &istio());
    assert_eq!(answer.outcome, Outcome::Allowed, "{}", answer.response);
    // The same namespace unprotected is denied for the other mesh ...
    let unprotected = namespace("payments", &[MANAGED], &[("linkerd.io/inject", "enabled")]);
    assert!(denied(&unprotected, &istio()).contains("this cluster's divert driver is istio"));
    // ... and two meshes on one namespace are denied everywhere, protected or not.
    let both = namespace("istio-system", &[("istio-injection", "enabled")], &[("linkerd.io/inject", "enabled")]);
    let message = denied(&both, &istio());
    assert!(message.contains("istio-injection=enabled") && message.contains("linkerd.io/inject=enabled"), "{message}");
}

/// SPEC §10.1: the developer-namespace label is checked with or without a cluster.
#[test]
fn the_divert_from_label_must_name_another_unprotected_namespace() {
    const FROM: &str = "divert.okteto.com/from";
    for settings in [istio(), nginx()] {
        let fine = namespace("cindy", &[(FROM, "staging")], &[]);
        assert_ne!(ask(Endpoint::Validate, &review_of(&fine), &settings).outcome, Outcome::Denied);
        for (value, says) in [
            ("Staging", "is not a namespace name (DNS-1123 label"),
            ("cindy", "is this namespace itself"),
            ("kube-system", "is a protected namespace"),
            ("", "is not a namespace name"),
        ] {
            let ns = namespace("cindy", &[(FROM, value)], &[]);
            let message = denied(&ns, &settings);
            assert!(message.starts_with("Namespace cindy: label divert.okteto.com/from: "), "{message}");
            assert!(message.contains(says), "{value:?}: {message}");
            assert!(message.contains("set it to the shared namespace"), "{message}");
        }
    }
    // The operator's own protected namespaces count too.
    let extended = Settings::new(Driver::Istio, Selector::everything(), Some("divert"), &["ops".to_string()]);
    for protected in ["divert", "ops"] {
        let ns = namespace("cindy", &[(FROM, protected)], &[]);
        assert!(denied(&ns, &extended).contains("is a protected namespace"), "{protected}");
    }
}

/// The server writes a Namespace's patch directly (no copy of the object, no diff): for every
/// shape of metadata it gives exactly the patch and warnings of mutating a copy and diffing it.
mod direct_patch {
    use divert_webhook::cluster::ClusterView;
    use divert_webhook::rules::{self, Findings, Kind, Subject};
    use divert_webhook::selector::Selector;
    use divert_webhook::settings::{Driver, Settings};
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    /// A label or annotation map: absent, not a map, or a map of marker keys and others.
    fn entries() -> impl Strategy<Value = Option<Value>> {
        let key = prop::sample::select(vec![
            "istio-injection",
            "istio.io/rev",
            "linkerd.io/inject",
            "dev.okteto.com/okteto-managed",
            "team",
        ]);
        let value = prop_oneof![
            prop::sample::select(vec!["enabled", "disabled", "ingress", "true", "canary", ""]).prop_map(Value::from),
            Just(json!(5)),
            Just(Value::Null),
        ];
        prop_oneof![
            1 => Just(None),
            1 => prop_oneof![Just(Value::Null), Just(json!("x")), Just(json!([]))].prop_map(Some),
            4 => prop::collection::vec((key, value), 0..4)
                .prop_map(|pairs| Some(Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))),
        ]
    }

    fn namespace() -> impl Strategy<Value = Value> {
        let name = prop::sample::select(vec!["cindy", "kube-system", ""]);
        (0..4u8, name, entries(), entries()).prop_map(|(shape, name, labels, annotations)| {
            let mut metadata = Map::new();
            if !name.is_empty() {
                metadata.insert("name".into(), name.into());
            }
            if let Some(labels) = labels {
                metadata.insert("labels".into(), labels);
            }
            if let Some(annotations) = annotations {
                metadata.insert("annotations".into(), annotations);
            }
            let mut object = json!({"apiVersion": "v1", "kind": "Namespace"});
            match shape {
                0 => {}
                1 => object["metadata"] = json!("not a map"),
                _ => object["metadata"] = Value::Object(metadata),
            }
            object
        })
    }

    fn settings() -> impl Strategy<Value = Settings> {
        (any::<bool>(), prop::sample::select(vec!["", "dev.okteto.com/okteto-managed=true", "team"])).prop_map(
            |(nginx, selector)| {
                let driver = if nginx { Driver::Nginx } else { Driver::Istio };
                Settings::new(driver, Selector::parse(selector).unwrap(), None, &[])
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn the_direct_patch_is_the_diff_of_the_mutation(object in namespace(), settings in settings()) {
            let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
            let subject =
                Subject { kind: Kind::Namespace, namespace: name, name, object: &object, cluster: ClusterView::none() };
            let mut direct_findings = Findings::default();
            let direct = rules::patch_directly(&subject, &settings, &mut direct_findings).expect("Namespaces are patched directly");
            let mut mutated = object.clone();
            let warnings = rules::mutate(&subject, &mut mutated, &settings);
            let diffed = divert_webhook::patch::diff(&object, &mutated);
            prop_assert_eq!(direct.decode(), diffed);
            prop_assert_eq!(direct_findings.warnings, warnings);
            let mut applied = object.clone();
            json_patch::patch(&mut applied, &direct.decode()).unwrap();
            prop_assert_eq!(applied, mutated);
        }
    }
}
