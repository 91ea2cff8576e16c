//! deploy/webhook.yaml stays consistent with what the binary handles and with what
//! docs/operating.md ("Deploying") and certs/README.md say about it: every kind the rules know is
//! routed to both endpoints, with the settings the code relies on; the serving certificate comes
//! from a CA of its own; the pod's ports, probes, grace period and namespace match the binary.
//! And deploy/examples/namespaces-denied.yaml, quoted by docs/namespaces.md, is denied for the
//! reasons it says.

use std::time::Duration;

use clap::CommandFactory as _;
use divert_webhook::review::{Endpoint, review};
use divert_webhook::rules::Kind;
use divert_webhook::server::parse_duration;
use divert_webhook::settings::{BUILTIN_PROTECTED_NAMESPACES, Driver, Settings};
use serde_json::{Value, json};

fn manifests() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/webhook.yaml")).unwrap();
    serde_saphyr::from_multiple(&text).unwrap()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} missing"))
}

fn only<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

fn webhook(kind: &str) -> Value {
    only(&manifests(), kind)["webhooks"][0].clone()
}

const CONFIGURATIONS: [&str; 2] = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"];

fn deployment(docs: &[Value]) -> &Value {
    only(docs, "Deployment")
}

fn container(docs: &[Value]) -> &Value {
    &deployment(docs)["spec"]["template"]["spec"]["containers"][0]
}

fn duration(text: &Value) -> Duration {
    parse_duration(text.as_str().unwrap_or_else(|| panic!("{text} is not a duration string"))).unwrap()
}

/// The value `serve` runs with for the flag `--long` in `container`: the flag in its args, else
/// the flag's environment variable in its env, else the binary's default (all as clap defines them).
fn serve_setting(container: &Value, long: &str) -> String {
    let mut cli = divert_webhook::cli::Cli::command();
    cli.build();
    let serve = cli.get_subcommands().find(|c| c.get_name() == "serve").unwrap();
    let arg = serve.get_arguments().find(|a| a.get_long() == Some(long)).unwrap_or_else(|| panic!("no --{long}"));
    let args: Vec<&str> = container["args"].as_array().into_iter().flatten().map(|a| a.as_str().unwrap()).collect();
    let flag = format!("--{long}");
    for (i, a) in args.iter().enumerate() {
        if *a == flag {
            return args[i + 1].to_string();
        }
        if let Some(value) = a.strip_prefix(&format!("{flag}=")) {
            return value.to_string();
        }
    }
    let variable = arg.get_env().unwrap().to_str().unwrap();
    if let Some(entry) = container["env"].as_array().into_iter().flatten().find(|e| e["name"] == variable) {
        return entry["value"].as_str().unwrap_or_else(|| panic!("{variable} must be a plain value")).to_string();
    }
    arg.get_default_values()[0].to_str().unwrap().to_string()
}

/// The container port a Service `targetPort` or probe `port` (number or port name) means.
fn container_port(container: &Value, port: &Value) -> u64 {
    if let Some(number) = port.as_u64() {
        return number;
    }
    let name = port.as_str().unwrap();
    let found = container["ports"].as_array().unwrap().iter().find(|p| p["name"] == name);
    found.unwrap_or_else(|| panic!("the container has no port named {name}"))["containerPort"].as_u64().unwrap()
}

fn port_of(address: &str) -> u64 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn both_webhooks_route_every_handled_kind_to_the_right_path() {
    for (config, path) in CONFIGURATIONS.into_iter().zip(["/mutate", "/validate"]) {
        let hook = webhook(config);
        assert_eq!(hook["clientConfig"]["service"]["path"], path);
        assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(hook["sideEffects"], "None", "dryRun requests need sideEffects None");
        let mut routed = Vec::new();
        for rule in hook["rules"].as_array().unwrap() {
            let ops: Vec<&str> = rule["operations"].as_array().unwrap().iter().map(|o| o.as_str().unwrap()).collect();
            assert_eq!(ops, ["CREATE", "UPDATE"]);
            for group in rule["apiGroups"].as_array().unwrap() {
                for version in rule["apiVersions"].as_array().unwrap() {
                    let resource = rule["resources"][0].as_str().unwrap();
                    let kind = match resource {
                        "namespaces" => "Namespace",
                        "virtualservices" => "VirtualService",
                        "ingresses" => "Ingress",
                        "httproutes" => "HTTPRoute",
                        other => panic!("unexpected resource {other}"),
                    };
                    let handled = Kind::from_gvk(group.as_str().unwrap(), version.as_str().unwrap(), kind);
                    assert!(handled.is_some(), "{config} routes {group}/{version} {kind}, which no rule handles");
                    routed.push(handled.unwrap());
                }
            }
        }
        for kind in [Kind::Namespace, Kind::VirtualService, Kind::Ingress, Kind::HttpRoute] {
            assert!(routed.contains(&kind), "{config} does not route {kind:?}");
        }
    }
}

/// The decisions docs/operating.md ("Deploying") explains.
#[test]
fn both_webhooks_have_the_documented_policies() {
    for config in CONFIGURATIONS {
        let hook = webhook(config);
        assert_eq!(hook["failurePolicy"], "Fail", "{config}");
        assert_eq!(hook["matchPolicy"], "Equivalent", "{config}");
        // The apiserver accepts 1..=30; the webhook honours the ?timeout= it appends.
        let timeout = hook["timeoutSeconds"].as_u64().unwrap();
        assert!((1..=30).contains(&timeout), "{config} timeoutSeconds {timeout}");
    }
    // Every mutation is idempotent, so the apiserver may call the mutating webhook again after
    // another webhook changed the object.
    assert_eq!(webhook("MutatingWebhookConfiguration")["reinvocationPolicy"], "IfNeeded");
}

/// The webhook's own namespace, the control plane, the meshes and cert-manager (which must be
/// able to write the webhook's certificate) are never blocked by the webhook being down.
#[test]
fn both_webhooks_skip_the_protected_namespaces_and_their_own() {
    let docs = manifests();
    let own = only(&docs, "Namespace")["metadata"]["name"].as_str().unwrap();
    for config in CONFIGURATIONS {
        let hook = webhook(config);
        let expressions = hook["namespaceSelector"]["matchExpressions"].as_array().unwrap();
        assert_eq!(expressions.len(), 1, "{config}: one expression, on the name label");
        let expression = &expressions[0];
        assert_eq!(expression["key"], "kubernetes.io/metadata.name");
        assert_eq!(expression["operator"], "NotIn");
        let excluded: Vec<&str> =
            expression["values"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        for namespace in BUILTIN_PROTECTED_NAMESPACES.iter().copied().chain([own]) {
            assert!(excluded.contains(&namespace), "{config} does not exclude {namespace}");
        }
    }
}

/// The serving certificate is issued by a CA issuer (not self-signed): renewing it keeps its
/// `ca.crt`, so the caBundle injected from it does not change and no handshake fails while the
/// kubelet updates the mounted files (certs/README.md).
#[test]
fn the_serving_certificate_comes_from_a_ca_of_its_own() {
    let docs = manifests();
    let pod = &deployment(&docs)["spec"]["template"]["spec"];
    let secret =
        pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "tls").unwrap()["secret"]["secretName"]
            .as_str()
            .unwrap();
    let certificates: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Certificate").collect();
    let serving = certificates
        .iter()
        .find(|c| c["spec"]["secretName"] == secret)
        .expect("a Certificate writes the mounted Secret");
    assert_ne!(serving["spec"]["isCA"], true);

    let issuer_ref = &serving["spec"]["issuerRef"];
    assert_eq!(issuer_ref["kind"], "Issuer");
    let issuer = find(&docs, "Issuer", issuer_ref["name"].as_str().unwrap());
    assert!(issuer["spec"].get("selfSigned").is_none(), "the serving certificate must not be self-signed");
    let ca_secret =
        issuer["spec"]["ca"]["secretName"].as_str().expect("the serving certificate's Issuer is a ca Issuer");
    assert_ne!(ca_secret, secret, "the CA has its own Secret");

    let ca =
        certificates.iter().find(|c| c["spec"]["secretName"] == ca_secret).expect("a Certificate writes the CA Secret");
    assert_eq!(ca["spec"]["isCA"], true);
    let root = find(&docs, "Issuer", ca["spec"]["issuerRef"]["name"].as_str().unwrap());
    assert_eq!(root["spec"]["selfSigned"], json!({}), "the CA is bootstrapped by a selfSigned Issuer");
    // Re-issued with the same key, certificates it signed before keep verifying against it; and
    // it is re-issued long enough before it expires that the serving certificate is renewed
    // (and caBundle follows) in between.
    assert_eq!(ca["spec"]["privateKey"]["rotationPolicy"], "Never");
    assert!(duration(&ca["spec"]["renewBefore"]) > duration(&serving["spec"]["duration"]));
    assert!(duration(&serving["spec"]["renewBefore"]) < duration(&serving["spec"]["duration"]));

    // Valid for the names the apiserver dials.
    let service = &webhook("MutatingWebhookConfiguration")["clientConfig"]["service"];
    let (name, namespace) = (service["name"].as_str().unwrap(), service["namespace"].as_str().unwrap());
    let dns_names = &serving["spec"]["dnsNames"];
    for dns_name in [format!("{name}.{namespace}.svc"), format!("{name}.{namespace}.svc.cluster.local")] {
        assert!(dns_names.as_array().unwrap().iter().any(|n| *n == dns_name), "dnsNames lack {dns_name}");
    }

    // cainjector fills caBundle of both configurations from the serving Certificate's ca.crt.
    let serving_ref = format!(
        "{}/{}",
        serving["metadata"]["namespace"].as_str().unwrap(),
        serving["metadata"]["name"].as_str().unwrap()
    );
    for config in CONFIGURATIONS {
        let annotations = &only(&docs, config)["metadata"]["annotations"];
        assert_eq!(annotations["cert-manager.io/inject-ca-from"], serving_ref.as_str(), "{config}");
    }

    // The container reads the pair from where the Secret is mounted.
    let mount = container(&docs)["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "tls").unwrap();
    let dir = mount["mountPath"].as_str().unwrap();
    assert_eq!(serve_setting(container(&docs), "tls-cert"), format!("{dir}/tls.crt"));
    assert_eq!(serve_setting(container(&docs), "tls-key"), format!("{dir}/tls.key"));
}

/// `divert-system` is written in many places (docs/operating.md, "Deploying"); they agree.
#[test]
fn every_object_and_reference_names_the_same_namespace() {
    let docs = manifests();
    let own = only(&docs, "Namespace")["metadata"]["name"].as_str().unwrap();
    for doc in &docs {
        match doc["kind"].as_str().unwrap() {
            "Namespace" | "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {}
            kind => assert_eq!(doc["metadata"]["namespace"], own, "{kind} {}", doc["metadata"]["name"]),
        }
    }
    for config in CONFIGURATIONS {
        let hook = webhook(config);
        assert_eq!(hook["clientConfig"]["service"]["namespace"], own, "{config}");
        let inject = only(&docs, config)["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].as_str().unwrap();
        assert!(inject.starts_with(&format!("{own}/")), "{config}: {inject}");
    }
}

/// `terminationGracePeriodSeconds` leaves room for the whole shutdown (docs/operating.md,
/// "Shutdown"): the kubelet kills the pod when it runs out, cutting in-flight reviews.
#[test]
fn the_grace_period_covers_shutdown_delay_and_drain_timeout() {
    let docs = manifests();
    let container = container(&docs);
    let delay = parse_duration(&serve_setting(container, "shutdown-delay")).unwrap();
    let drain = parse_duration(&serve_setting(container, "drain-timeout")).unwrap();
    let grace = deployment(&docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        Duration::from_secs(grace) > delay + drain,
        "terminationGracePeriodSeconds {grace} must exceed shutdown delay {delay:?} + drain timeout {drain:?}"
    );

    // serve_setting reads a flag first, then its variable, then the default.
    let sample = json!({
        "args": ["serve", "--drain-timeout=1m", "--shutdown-delay", "7s"],
        "env": [{"name": "DIVERT_WEBHOOK_DRAIN_TIMEOUT", "value": "2m"}, {"name": "DIVERT_WEBHOOK_ADDR", "value": "[::]:8443"}]
    });
    assert_eq!(serve_setting(&sample, "drain-timeout"), "1m");
    assert_eq!(serve_setting(&sample, "shutdown-delay"), "7s");
    assert_eq!(serve_setting(&sample, "addr"), "[::]:8443");
    assert_eq!(serve_setting(&json!({}), "shutdown-delay"), "5s");
}

#[test]
fn the_service_reaches_the_https_port_and_the_probes_the_metrics_port() {
    let docs = manifests();
    let container = container(&docs);
    let https = port_of(&serve_setting(container, "addr"));
    let metrics = port_of(&serve_setting(container, "metrics-addr"));
    assert_eq!((https, metrics), (8443, 9090));

    // The apiserver dials the Service port of clientConfig; it must lead to the HTTPS port.
    let target = &webhook("MutatingWebhookConfiguration")["clientConfig"]["service"];
    let service = find(&docs, "Service", target["name"].as_str().unwrap());
    for config in CONFIGURATIONS {
        assert_eq!(webhook(config)["clientConfig"]["service"]["port"], target["port"], "{config}");
    }
    let port = service["spec"]["ports"].as_array().unwrap().iter().find(|p| p["port"] == target["port"]).unwrap();
    assert_eq!(container_port(container, &port["targetPort"]), https);
    assert_eq!(service["spec"]["selector"], deployment(&docs)["spec"]["template"]["metadata"]["labels"]);

    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(container_port(container, &get["port"]), metrics, "{probe} must hit the metrics port");
        assert!(get.get("scheme").is_none_or(|s| s == "HTTP"), "{probe}: the metrics port is plain HTTP");
    }
}

/// `POD_NAMESPACE` tells the webhook its own namespace (protected from mutation); it must come
/// from the downward API so that it follows a renamed namespace.
#[test]
fn the_webhooks_own_namespace_comes_from_the_downward_api() {
    let docs = manifests();
    let env = container(&docs)["env"].as_array().unwrap();
    let pod_namespace = env.iter().find(|e| e["name"] == "POD_NAMESPACE").expect("POD_NAMESPACE is set");
    assert_eq!(pod_namespace["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");
    assert!(env.iter().all(|e| e["name"] != "DIVERT_WEBHOOK_NAMESPACE"), "it would override POD_NAMESPACE");
}

/// Two replicas, at most one taken down voluntarily, preferably on different nodes.
#[test]
fn two_replicas_spread_over_nodes_and_a_disruption_budget() {
    let docs = manifests();
    let deployment = deployment(&docs);
    let replicas = deployment["spec"]["replicas"].as_u64().unwrap();
    assert!(replicas >= 2);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];

    let budget = only(&docs, "PodDisruptionBudget");
    assert_eq!(&budget["spec"]["selector"]["matchLabels"], labels);
    let min_available = budget["spec"]["minAvailable"].as_u64().unwrap();
    assert!(min_available >= 1 && min_available < replicas, "minAvailable {min_available} of {replicas}");

    let preferred = &deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
    let term = &preferred[0]["podAffinityTerm"];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(&term["labelSelector"]["matchLabels"], labels);
}

/// Each Namespace of deploy/examples/namespaces-denied.yaml, validated as the apiserver sends it:
/// the reasons (metrics slugs) it is denied for, under each driver.
#[test]
fn the_denied_namespace_examples_are_denied_for_their_reason() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples/namespaces-denied.yaml"))
        .unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    // (name, reasons under istio, reasons under nginx)
    let expected: [(&str, &[&str], &[&str]); 6] = [
        ("two-meshes", &["mesh-conflict"], &["mesh-conflict"]),
        ("linkerd-dev", &["wrong-mesh"], &[]),
        ("istio-dev", &[], &["wrong-mesh"]),
        ("typo", &["invalid-istio-injection"], &["invalid-istio-injection"]),
        ("typo-linkerd", &["invalid-linkerd-inject"], &["invalid-linkerd-inject"]),
        ("canary", &["istio-injection-with-rev"], &["istio-injection-with-rev"]),
    ];
    assert_eq!(docs.len(), expected.len());
    for (object, (name, istio, nginx)) in docs.iter().zip(expected) {
        assert_eq!(object["metadata"]["name"], name);
        for (driver, reasons) in [(Driver::Istio, istio), (Driver::Nginx, nginx)] {
            let settings = Settings { driver, ..Settings::default() };
            let body = json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {
                    "uid": "1", "name": name, "operation": "CREATE", "userInfo": {}, "object": object,
                    "kind": {"group": "", "version": "v1", "kind": "Namespace"},
                    "resource": {"group": "", "version": "v1", "resource": "namespaces"}
                }
            });
            let (_, summary) = review(Endpoint::Validate, &serde_json::to_vec(&body).unwrap(), &settings).unwrap();
            assert_eq!(summary.denial_reasons, reasons, "{name} under {driver}");
        }
    }
}
