//! deploy/webhook.yaml stays consistent with what the binary handles: every kind the rules know
//! is routed to both endpoints, with the settings the code relies on.

use divert_webhook::rules::Kind;
use serde_json::Value;

fn manifests() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/webhook.yaml")).unwrap();
    serde_saphyr::from_multiple(&text).unwrap()
}

fn webhook(kind: &str) -> Value {
    let docs = manifests();
    let config = docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("{kind} missing"));
    config["webhooks"][0].clone()
}

#[test]
fn both_webhooks_route_every_handled_kind_to_the_right_path() {
    for (config, path) in [("MutatingWebhookConfiguration", "/mutate"), ("ValidatingWebhookConfiguration", "/validate")]
    {
        let hook = webhook(config);
        assert_eq!(hook["clientConfig"]["service"]["path"], path);
        assert_eq!(hook["admissionReviewVersions"], serde_json::json!(["v1"]));
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
                        other => panic!("unexpected resource {other}"),
                    };
                    let handled = Kind::from_gvk(group.as_str().unwrap(), version.as_str().unwrap(), kind);
                    assert!(handled.is_some(), "{config} routes {group}/{version} {kind}, which no rule handles");
                    routed.push(handled.unwrap());
                }
            }
        }
        for kind in [Kind::Namespace, Kind::VirtualService, Kind::Ingress] {
            assert!(routed.contains(&kind), "{config} does not route {kind:?}");
        }
        // the webhook's own namespace can never be blocked by its own failure
        let excluded = &hook["namespaceSelector"]["matchExpressions"][0]["values"];
        assert!(excluded.as_array().unwrap().iter().any(|v| v == "divert-system"));
    }
    assert_eq!(webhook("MutatingWebhookConfiguration")["reinvocationPolicy"], "IfNeeded");
}

#[test]
fn the_deployment_probes_the_metrics_port_and_reads_the_mounted_certificate() {
    let docs = manifests();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let env: Vec<&str> = container["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(
        env.contains(&"DIVERT_WEBHOOK_TLS_CERT")
            && env.contains(&"DIVERT_WEBHOOK_TLS_KEY")
            && env.contains(&"POD_NAMESPACE")
    );
}
