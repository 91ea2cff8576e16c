//! deploy/ renders, with `kubectl kustomize`, to installs that are consistent with what the
//! binary handles and with what docs/operating.md ("Installing") and certs/README.md say: every
//! overlay and component, as committed and with the namespace, image, driver, selector and
//! replicas changed in their one place (the overlay) or by a kustomization on top; every built-in
//! object parses into its k8s-openapi type with no field lost; RBAC is exactly SPEC §10's; the
//! alert rules use only metrics the binary exports. And deploy/examples/namespaces-denied.yaml,
//! quoted by docs/namespaces.md, is denied for the reasons it says.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::CommandFactory as _;
use divert_webhook::review::{Endpoint, review};
use divert_webhook::rules::Kind;
use divert_webhook::server::parse_duration;
use divert_webhook::settings::{BUILTIN_PROTECTED_NAMESPACES, DEFAULT_MANAGED_SELECTOR, Driver, Settings};
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CONFIGURATIONS: [&str; 2] = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"];
const STEP_LABEL: &str = "app.kubernetes.io/component";
const REGISTRATION: &str = "admission-registration";

/// `kubectl kustomize DIR`, parsed.
fn render(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl").arg("kustomize").arg(dir).output().expect("kubectl is installed (README)");
    assert!(out.status.success(), "kubectl kustomize {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

/// A copy of deploy/ to edit as an operator would, in a directory under target/ (so that a
/// kustomization on top can name it by a relative path, as kustomize requires).
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        copy_dir(&Path::new(ROOT).join("deploy"), &dir.path().join("deploy"));
        Workspace { dir }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Replaces `from` (which must be there, once) by `to` in a file of the copy.
    fn edit(&self, relative: &str, from: &str, to: &str) {
        let path = self.path(relative);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(from).count(), 1, "{relative}: {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }

    fn write(&self, relative: &str, text: &str) {
        std::fs::create_dir_all(self.path(relative).parent().unwrap()).unwrap();
        std::fs::write(self.path(relative), text).unwrap();
    }

    /// Sets every setting of an overlay to something else, and enables every component.
    fn change_overlay(&self, overlay: &str, install: &Install) {
        let file = format!("deploy/overlays/{overlay}/kustomization.yaml");
        self.edit(&file, "namespace: divert-system", &format!("namespace: {}", install.namespace));
        self.edit(&file, "newName: ghcr.io/example/divert-webhook", &format!("newName: {}", install.image_name));
        self.edit(&file, "newTag: 0.1.0", &format!("newTag: {}", install.image_tag));
        self.edit(&file, "count: 2", &format!("count: {}", install.replicas));
        self.edit(
            &file,
            &format!("managed-selector={DEFAULT_MANAGED_SELECTOR}"),
            &format!("managed-selector={}", install.selector),
        );
        if install.driver == Driver::Nginx {
            self.edit(&file, "# - ../../components/nginx", "- ../../components/nginx");
        }
        self.edit(&file, "# - ../../components/prometheus", "- ../../components/prometheus");
        self.edit(&file, "# - ../../components/network-policy", "- ../../components/network-policy");
    }

    /// `divert-webhook certs`: the Secret deploy/overlays/self-managed applies.
    fn make_secret(&self, namespace: &str) -> Value {
        let secret = self.path("deploy/overlays/self-managed/tls-secret.yaml");
        let out = Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
            .args(["certs", "--namespace", namespace, "--secret"])
            .arg(&secret)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let ca_bundle = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let secret: Value = serde_saphyr::from_str(&std::fs::read_to_string(secret).unwrap()).unwrap();
        assert_eq!(secret["data"]["ca.crt"], ca_bundle.as_str(), "certs prints the Secret's ca.crt as caBundle");
        secret
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// What an install is expected to carry everywhere.
struct Install {
    namespace: &'static str,
    image_name: &'static str,
    image_tag: &'static str,
    driver: Driver,
    selector: &'static str,
    replicas: u64,
}

const DEFAULT: Install = Install {
    namespace: "divert-system",
    image_name: "ghcr.io/example/divert-webhook",
    image_tag: "0.1.0",
    driver: Driver::Istio,
    selector: DEFAULT_MANAGED_SELECTOR,
    replicas: 2,
};

const CHANGED: Install = Install {
    namespace: "platform-hooks",
    image_name: "registry.example.org/platform/divert",
    image_tag: "2.0.0",
    driver: Driver::Nginx,
    selector: "team in (a,b)",
    replicas: 3,
};

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

fn webhook<'a>(docs: &'a [Value], config: &str) -> &'a Value {
    &only(docs, config)["webhooks"][0]
}

fn deployment(docs: &[Value]) -> &Value {
    only(docs, "Deployment")
}

fn container(docs: &[Value]) -> &Value {
    &deployment(docs)["spec"]["template"]["spec"]["containers"][0]
}

fn duration(text: &Value) -> Duration {
    parse_duration(text.as_str().unwrap_or_else(|| panic!("{text} is not a duration string"))).unwrap()
}

fn strings(list: &Value) -> Vec<&str> {
    list.as_array().unwrap_or_else(|| panic!("{list} is not a list")).iter().map(|v| v.as_str().unwrap()).collect()
}

/// The value `serve` runs with for the flag `--long` in the rendered install: the flag in the
/// container's args, else the flag's environment variable in its env (a value, or a key of a
/// ConfigMap of `docs`), else the binary's default (all as clap defines them).
fn serve_setting(docs: &[Value], container: &Value, long: &str) -> String {
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
        if let Some(value) = entry["value"].as_str() {
            return value.to_string();
        }
        let reference = &entry["valueFrom"]["configMapKeyRef"];
        let map = find(docs, "ConfigMap", reference["name"].as_str().expect("a value or a configMapKeyRef"));
        if let Some(value) = map["data"][reference["key"].as_str().unwrap()].as_str() {
            return value.to_string();
        }
        assert_eq!(reference["optional"], true, "{variable}: a missing key would stop the pod");
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

/// Every built-in object, read into its k8s-openapi type and written back, is unchanged: a field
/// the type does not know (a typo, a field at the wrong level) would be dropped and show here.
/// The CRDs' objects (cert-manager, Prometheus Operator) have no type here; their fields are
/// checked by the tests that read them.
fn check_typed(doc: &Value) {
    use k8s_openapi::api::{
        admissionregistration::v1 as admission, apps::v1 as apps, core::v1 as core, networking::v1 as networking,
        policy::v1 as policy, rbac::v1 as rbac,
    };
    fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> Value {
        let typed: T = serde_json::from_value(doc.clone())
            .unwrap_or_else(|e| panic!("{} {}: {e}", doc["kind"], doc["metadata"]["name"]));
        serde_json::to_value(typed).unwrap()
    }
    let back = match (doc["apiVersion"].as_str().unwrap(), doc["kind"].as_str().unwrap()) {
        ("v1", "Namespace") => roundtrip::<core::Namespace>(doc),
        ("v1", "ServiceAccount") => roundtrip::<core::ServiceAccount>(doc),
        ("v1", "ConfigMap") => roundtrip::<core::ConfigMap>(doc),
        ("v1", "Secret") => roundtrip::<core::Secret>(doc),
        ("v1", "Service") => roundtrip::<core::Service>(doc),
        ("apps/v1", "Deployment") => roundtrip::<apps::Deployment>(doc),
        ("policy/v1", "PodDisruptionBudget") => roundtrip::<policy::PodDisruptionBudget>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => roundtrip::<rbac::ClusterRole>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => roundtrip::<rbac::ClusterRoleBinding>(doc),
        ("rbac.authorization.k8s.io/v1", "Role") => roundtrip::<rbac::Role>(doc),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => roundtrip::<rbac::RoleBinding>(doc),
        ("networking.k8s.io/v1", "NetworkPolicy") => roundtrip::<networking::NetworkPolicy>(doc),
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
            roundtrip::<admission::MutatingWebhookConfiguration>(doc)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
            roundtrip::<admission::ValidatingWebhookConfiguration>(doc)
        }
        ("cert-manager.io/v1", "Issuer" | "Certificate")
        | ("monitoring.coreos.com/v1", "ServiceMonitor" | "PrometheusRule") => return,
        (api_version, kind) => panic!("{api_version} {kind}: not expected in deploy/"),
    };
    assert_eq!(&back, doc, "{} {} has fields its type does not know", doc["kind"], doc["metadata"]["name"]);
}

/// The resources the mutating (or validating) webhook must be sent under `driver`: only the
/// kinds whose rules can change (or deny) an object under it.
fn routed_kinds(hook: &Value) -> BTreeSet<&'static str> {
    let mut routed = BTreeSet::new();
    for rule in hook["rules"].as_array().unwrap() {
        assert_eq!(strings(&rule["operations"]), ["CREATE", "UPDATE"]);
        for group in strings(&rule["apiGroups"]) {
            for version in strings(&rule["apiVersions"]) {
                let kind = match strings(&rule["resources"])[..] {
                    ["namespaces"] => "Namespace",
                    ["virtualservices"] => "VirtualService",
                    ["ingresses"] => "Ingress",
                    ["httproutes"] => "HTTPRoute",
                    ref other => panic!("unexpected resources {other:?}"),
                };
                let handled = Kind::from_gvk(group, version, kind);
                routed
                    .insert(handled.unwrap_or_else(|| panic!("{group}/{version} {kind}: no rule handles it")).as_str());
            }
        }
    }
    routed
}

/// Everything an install must get right, for the settings in `install`.
fn check_install(docs: &[Value], install: &Install, certificates: Certificates) {
    let text = serde_json::to_string(docs).unwrap();
    if install.namespace != "divert-system" {
        assert!(!text.contains("divert-system"), "the old namespace is left somewhere:\n{text}");
    }
    if install.image_name != DEFAULT.image_name {
        assert!(!text.contains(DEFAULT.image_name), "the old image is left somewhere");
    }
    for doc in docs {
        check_typed(doc);
    }

    // Namespace: every namespaced object, and every reference to it.
    let own = install.namespace;
    assert_eq!(only(docs, "Namespace")["metadata"]["name"], own);
    for doc in docs {
        match doc["kind"].as_str().unwrap() {
            "Namespace"
            | "MutatingWebhookConfiguration"
            | "ValidatingWebhookConfiguration"
            | "ClusterRole"
            | "ClusterRoleBinding" => assert!(doc["metadata"].get("namespace").is_none()),
            kind => assert_eq!(doc["metadata"]["namespace"], own, "{kind} {}", doc["metadata"]["name"]),
        }
    }
    for binding in ["ClusterRoleBinding", "RoleBinding"] {
        let subjects = &only(docs, binding)["subjects"];
        assert_eq!(subjects, &json!([{"kind": "ServiceAccount", "name": "divert-webhook", "namespace": own}]));
    }

    // The webhook configurations: the Service in the namespace, the namespace and the protected
    // ones excluded, the kinds of the driver, the documented policies.
    let service = find(docs, "Service", "divert-webhook");
    for config in CONFIGURATIONS {
        let hook = webhook(docs, config);
        let target = &hook["clientConfig"]["service"];
        assert_eq!(target["namespace"], own, "{config}");
        assert_eq!(target["name"], service["metadata"]["name"], "{config}");
        let expressions = hook["namespaceSelector"]["matchExpressions"].as_array().unwrap();
        assert_eq!(expressions.len(), 1, "{config}: one expression, on the name label");
        assert_eq!(expressions[0]["key"], "kubernetes.io/metadata.name");
        assert_eq!(expressions[0]["operator"], "NotIn");
        let excluded = strings(&expressions[0]["values"]);
        for namespace in BUILTIN_PROTECTED_NAMESPACES.iter().copied().chain([own]) {
            assert!(excluded.contains(&namespace), "{config} does not exclude {namespace}");
        }
        assert_eq!(only(docs, config)["metadata"]["labels"][STEP_LABEL], REGISTRATION, "{config}");
        assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(hook["sideEffects"], "None", "dryRun requests need sideEffects None");
        assert_eq!(hook["failurePolicy"], "Fail", "{config}");
        assert_eq!(hook["matchPolicy"], "Equivalent", "{config}");
        // The apiserver accepts 1..=30; the webhook honours the ?timeout= it appends.
        let timeout = hook["timeoutSeconds"].as_u64().unwrap();
        assert!((1..=30).contains(&timeout), "{config} timeoutSeconds {timeout}");
    }
    let mutated = match install.driver {
        // HTTPRoutes under both drivers: §11.4 adds the developer's header to developer routes.
        Driver::Istio => ["Namespace", "VirtualService", "HTTPRoute"],
        Driver::Nginx => ["Namespace", "Ingress", "HTTPRoute"],
    };
    assert_eq!(routed_kinds(webhook(docs, "MutatingWebhookConfiguration")), BTreeSet::from(mutated));
    assert_eq!(
        routed_kinds(webhook(docs, "ValidatingWebhookConfiguration")),
        BTreeSet::from(["Namespace", "VirtualService", "Ingress", "HTTPRoute"]),
        "validation runs under both drivers"
    );
    // Every mutation is idempotent, so the apiserver may call the mutating webhook again.
    assert_eq!(webhook(docs, "MutatingWebhookConfiguration")["reinvocationPolicy"], "IfNeeded");
    // Only the configurations are left for the second step of an install.
    for doc in docs {
        let registration = doc["metadata"]["labels"][STEP_LABEL] == REGISTRATION;
        assert_eq!(registration, CONFIGURATIONS.contains(&doc["kind"].as_str().unwrap()), "{}", doc["kind"]);
    }

    // The pods: image, replicas, rule settings.
    let container = container(docs);
    assert_eq!(container["image"], format!("{}:{}", install.image_name, install.image_tag));
    assert_eq!(deployment(docs)["spec"]["replicas"], install.replicas);
    assert_eq!(serve_setting(docs, container, "driver"), install.driver.to_string());
    assert_eq!(serve_setting(docs, container, "managed-selector"), install.selector);
    let env = container["env"].as_array().unwrap();
    let pod_namespace = env.iter().find(|e| e["name"] == "POD_NAMESPACE").expect("POD_NAMESPACE is set");
    assert_eq!(pod_namespace["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");
    assert!(env.iter().all(|e| e["name"] != "DIVERT_WEBHOOK_NAMESPACE"), "it would override POD_NAMESPACE");

    check_rbac(docs);
    check_tls(docs, own, certificates);
}

enum Certificates {
    CertManager,
    /// The Secret `divert-webhook certs` wrote.
    SelfManaged(Value),
}

/// Exactly what SPEC §10 and §11 need: the caches list and watch, the reconciler patches
/// VirtualServices, Ingresses and HTTPRoutes (annotations), makes, changes and deletes its own
/// HTTPRoutes (both API groups) and ReferenceGrants, and re-reads what conflicts; the Lease is
/// the only thing written in the own namespace.
fn check_rbac(docs: &[Value]) {
    let cluster_role = only(docs, "ClusterRole");
    assert_eq!(
        cluster_role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["namespaces", "services"], "verbs": ["list", "watch"]},
            {"apiGroups": ["networking.istio.io"], "resources": ["virtualservices"], "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": ["gateway.networking.k8s.io", "policy.linkerd.io"], "resources": ["httproutes"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
            {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["referencegrants"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
        ])
    );
    let role = only(docs, "Role");
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["divert-webhook"], "verbs": ["get", "update"]},
        ])
    );
    for (binding, role) in [("ClusterRoleBinding", cluster_role), ("RoleBinding", role)] {
        let reference = &only(docs, binding)["roleRef"];
        assert_eq!((&reference["kind"], &reference["name"]), (&role["kind"], &role["metadata"]["name"]));
    }
    let account = only(docs, "ServiceAccount");
    assert_eq!(account["automountServiceAccountToken"], true, "the kube client reads the token");
    assert_eq!(deployment(docs)["spec"]["template"]["spec"]["serviceAccountName"], account["metadata"]["name"]);
}

/// The serving certificate is valid for the name the apiserver dials and verifies against
/// caBundle; the container reads it from where it is mounted.
fn check_tls(docs: &[Value], own: &str, certificates: Certificates) {
    let pod = &deployment(docs)["spec"]["template"]["spec"];
    let tls_volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "tls").unwrap();
    let secret = tls_volume["secret"]["secretName"].as_str().unwrap();
    match certificates {
        Certificates::CertManager => {
            let serving = docs
                .iter()
                .find(|d| d["kind"] == "Certificate" && d["spec"]["secretName"] == secret)
                .expect("a Certificate writes the mounted Secret");
            let dns_names = strings(&serving["spec"]["dnsNames"]);
            assert_eq!(
                dns_names,
                [format!("divert-webhook.{own}.svc"), format!("divert-webhook.{own}.svc.cluster.local")]
            );
            for config in CONFIGURATIONS {
                let annotations = &only(docs, config)["metadata"]["annotations"];
                let serving_ref = format!("{own}/{}", serving["metadata"]["name"].as_str().unwrap());
                assert_eq!(annotations["cert-manager.io/inject-ca-from"], serving_ref.as_str(), "{config}");
                assert!(webhook(docs, config)["clientConfig"].get("caBundle").is_none());
            }
        }
        Certificates::SelfManaged(written) => {
            let applied = find(docs, "Secret", secret);
            assert_eq!(applied["data"], written["data"]);
            assert_eq!(applied["type"], "kubernetes.io/tls");
            assert!(docs.iter().all(|d| d["kind"] != "Certificate" && d["kind"] != "Issuer"));
            for config in CONFIGURATIONS {
                assert_eq!(webhook(docs, config)["clientConfig"]["caBundle"], written["data"]["ca.crt"], "{config}");
                assert!(only(docs, config)["metadata"].get("annotations").is_none(), "{config}: no cainjector");
            }
        }
    }
    let container = container(docs);
    let mount = container["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "tls").unwrap();
    let dir = mount["mountPath"].as_str().unwrap();
    assert_eq!(serve_setting(docs, container, "tls-cert"), format!("{dir}/tls.crt"));
    assert_eq!(serve_setting(docs, container, "tls-key"), format!("{dir}/tls.key"));
}

#[test]
fn the_cert_manager_overlay_renders_the_default_install() {
    let docs = render(&Path::new(ROOT).join("deploy/overlays/cert-manager"));
    check_install(&docs, &DEFAULT, Certificates::CertManager);
    for kind in ["ServiceMonitor", "PrometheusRule", "NetworkPolicy"] {
        assert!(docs.iter().all(|d| d["kind"] != kind), "{kind} is opt-in");
    }
}

#[test]
fn every_setting_changed_in_the_cert_manager_overlay_is_carried_everywhere() {
    let workspace = Workspace::new();
    workspace.change_overlay("cert-manager", &CHANGED);
    let docs = render(&workspace.path("deploy/overlays/cert-manager"));
    check_install(&docs, &CHANGED, Certificates::CertManager);
    check_components(&docs);
}

#[test]
fn the_self_managed_overlay_applies_the_secret_of_divert_webhook_certs() {
    let workspace = Workspace::new();
    let secret = workspace.make_secret("divert-system");
    let docs = render(&workspace.path("deploy/overlays/self-managed"));
    check_install(&docs, &DEFAULT, Certificates::SelfManaged(secret));

    let workspace = Workspace::new();
    workspace.change_overlay("self-managed", &CHANGED);
    let secret = workspace.make_secret(CHANGED.namespace);
    let docs = render(&workspace.path("deploy/overlays/self-managed"));
    check_install(&docs, &CHANGED, Certificates::SelfManaged(secret));
    check_components(&docs);
}

/// docs/operating.md: `namespace:` and `images:` in a kustomization of your own on top of an
/// overlay, with deploy/carry among its transformers.
#[test]
fn a_kustomization_on_top_can_change_namespace_and_image() {
    let workspace = Workspace::new();
    workspace.write(
        "mine/kustomization.yaml",
        "resources: [../deploy/overlays/cert-manager]\n\
         namespace: hooks-elsewhere\n\
         images:\n  - {name: ghcr.io/example/divert-webhook, newName: mirror.example.com/divert, newTag: \"3.1\"}\n\
         transformers: [../deploy/carry]\n",
    );
    let docs = render(&workspace.path("mine"));
    let install =
        Install { namespace: "hooks-elsewhere", image_name: "mirror.example.com/divert", image_tag: "3.1", ..DEFAULT };
    check_install(&docs, &install, Certificates::CertManager);
}

/// The base and each component render on their own too (the components on the base).
#[test]
fn the_base_and_every_component_render() {
    let docs = render(&Path::new(ROOT).join("deploy/base"));
    for doc in &docs {
        check_typed(doc);
    }
    let workspace = Workspace::new();
    for component in ["cert-manager", "nginx", "prometheus", "network-policy"] {
        let dir = format!("only-{component}");
        workspace.write(
            &format!("{dir}/kustomization.yaml"),
            &format!("resources: [../deploy/base]\ncomponents: [../deploy/components/{component}]\n"),
        );
        for doc in render(&workspace.path(&dir)) {
            check_typed(&doc);
        }
    }
}

/// The Prometheus Operator objects and the NetworkPolicy, as enabled in an overlay.
fn check_components(docs: &[Value]) {
    let service = find(docs, "Service", "divert-webhook");
    let monitor = only(docs, "ServiceMonitor");
    assert_eq!(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]);
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert!(service["spec"]["ports"].as_array().unwrap().iter().any(|p| p["name"] == endpoint["port"]));
    assert_eq!(endpoint["path"], "/metrics");

    let rules = only(docs, "PrometheusRule");
    let alerts: Vec<&Value> =
        rules["spec"]["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    assert!(alerts.len() >= 10);
    for alert in alerts {
        assert!(alert["alert"].as_str().unwrap().starts_with("DivertWebhook"));
        assert!(["critical", "warning", "info"].contains(&alert["labels"]["severity"].as_str().unwrap()));
        assert!(alert["annotations"]["summary"].is_string());
    }

    let policy = only(docs, "NetworkPolicy");
    let labels = &deployment(docs)["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&policy["spec"]["podSelector"]["matchLabels"], labels);
    let ports = |rules: &Value| -> BTreeSet<u64> {
        rules
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["ports"].as_array().unwrap())
            .map(|p| p["port"].as_u64().unwrap())
            .collect()
    };
    let container = container(docs);
    let https = port_of(&serve_setting(docs, container, "addr"));
    let metrics = port_of(&serve_setting(docs, container, "metrics-addr"));
    assert_eq!(ports(&policy["spec"]["ingress"]), BTreeSet::from([https, metrics]));
    // DNS, and the API server (443, or 6443 where it is not behind the kubernetes Service's port).
    assert_eq!(ports(&policy["spec"]["egress"]), BTreeSet::from([53, 443, 6443]));
}

/// The serving certificate is issued by a CA issuer (not self-signed): renewing it keeps its
/// `ca.crt`, so the caBundle injected from it does not change and no handshake fails while the
/// kubelet updates the mounted files (certs/README.md).
#[test]
fn the_serving_certificate_comes_from_a_ca_of_its_own() {
    let docs = render(&Path::new(ROOT).join("deploy/overlays/cert-manager"));
    let serving = find(&docs, "Certificate", "divert-webhook");
    assert_ne!(serving["spec"]["isCA"], true);
    let issuer_ref = &serving["spec"]["issuerRef"];
    assert_eq!(issuer_ref["kind"], "Issuer");
    let issuer = find(&docs, "Issuer", issuer_ref["name"].as_str().unwrap());
    assert!(issuer["spec"].get("selfSigned").is_none(), "the serving certificate must not be self-signed");
    let ca_secret =
        issuer["spec"]["ca"]["secretName"].as_str().expect("the serving certificate's Issuer is a ca Issuer");
    assert_ne!(ca_secret, serving["spec"]["secretName"], "the CA has its own Secret");
    let ca = docs
        .iter()
        .find(|c| c["kind"] == "Certificate" && c["spec"]["secretName"] == ca_secret)
        .expect("a Certificate writes the CA Secret");
    assert_eq!(ca["spec"]["isCA"], true);
    let root = find(&docs, "Issuer", ca["spec"]["issuerRef"]["name"].as_str().unwrap());
    assert_eq!(root["spec"]["selfSigned"], json!({}), "the CA is bootstrapped by a selfSigned Issuer");
    // Re-issued with the same key, certificates it signed before keep verifying against it; and
    // it is re-issued long enough before it expires that the serving certificate is renewed
    // (and caBundle follows) in between.
    assert_eq!(ca["spec"]["privateKey"]["rotationPolicy"], "Never");
    assert!(duration(&ca["spec"]["renewBefore"]) > duration(&serving["spec"]["duration"]));
    assert!(duration(&serving["spec"]["renewBefore"]) < duration(&serving["spec"]["duration"]));
}

/// `terminationGracePeriodSeconds` leaves room for the whole shutdown (docs/operating.md,
/// "Shutdown"): the kubelet kills the pod when it runs out, cutting in-flight reviews.
#[test]
fn the_grace_period_covers_shutdown_delay_and_drain_timeout() {
    let docs = render(&Path::new(ROOT).join("deploy/overlays/cert-manager"));
    let container = container(&docs);
    let delay = parse_duration(&serve_setting(&docs, container, "shutdown-delay")).unwrap();
    let drain = parse_duration(&serve_setting(&docs, container, "drain-timeout")).unwrap();
    let grace = deployment(&docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        Duration::from_secs(grace) > delay + drain,
        "terminationGracePeriodSeconds {grace} must exceed shutdown delay {delay:?} + drain timeout {drain:?}"
    );

    // serve_setting reads a flag first, then its variable (a value or a ConfigMap key), then the default.
    let sample = json!({
        "args": ["serve", "--drain-timeout=1m", "--shutdown-delay", "7s"],
        "env": [{"name": "DIVERT_WEBHOOK_DRAIN_TIMEOUT", "value": "2m"}, {"name": "DIVERT_WEBHOOK_ADDR", "value": "[::]:8443"},
                {"name": "DIVERT_WEBHOOK_DRIVER", "valueFrom": {"configMapKeyRef": {"name": "s", "key": "driver"}}}]
    });
    let maps = [json!({"kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"driver": "nginx"}})];
    assert_eq!(serve_setting(&maps, &sample, "drain-timeout"), "1m");
    assert_eq!(serve_setting(&maps, &sample, "shutdown-delay"), "7s");
    assert_eq!(serve_setting(&maps, &sample, "addr"), "[::]:8443");
    assert_eq!(serve_setting(&maps, &sample, "driver"), "nginx");
    assert_eq!(serve_setting(&maps, &json!({}), "shutdown-delay"), "5s");
}

#[test]
fn the_service_reaches_the_https_port_and_the_probes_the_metrics_port() {
    let docs = render(&Path::new(ROOT).join("deploy/overlays/cert-manager"));
    let container = container(&docs);
    let https = port_of(&serve_setting(&docs, container, "addr"));
    let metrics = port_of(&serve_setting(&docs, container, "metrics-addr"));
    assert_eq!((https, metrics), (8443, 9090));

    // The apiserver dials the Service port of clientConfig; it must lead to the HTTPS port.
    let target = &webhook(&docs, "MutatingWebhookConfiguration")["clientConfig"]["service"];
    let service = find(&docs, "Service", target["name"].as_str().unwrap());
    for config in CONFIGURATIONS {
        assert_eq!(webhook(&docs, config)["clientConfig"]["service"]["port"], target["port"], "{config}");
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

/// Replicas, at most one taken down voluntarily, preferably on different nodes.
#[test]
fn replicas_spread_over_nodes_and_a_disruption_budget() {
    let docs = render(&Path::new(ROOT).join("deploy/overlays/cert-manager"));
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

/// Metrics of the watch caches: exported in cluster mode only (the binary these tests start has
/// no cluster), so they are checked by name here and by tests/cluster_caches.rs against a fake API.
const CLUSTER_METRICS: [&str; 3] = [
    "divert_webhook_cache_synced",
    "divert_webhook_cache_watch_errors_total",
    "divert_webhook_cache_last_event_age_seconds",
];

/// The sample names the binary's /metrics has, from its `# TYPE` lines, once every family has a
/// sample (a family without one is left out of the exposition): a denied review, a timed-out
/// one, a failed handshake, a connection limit.
fn exported_samples() -> BTreeSet<String> {
    use divert_webhook::server::{Format, Listener, Metrics};
    let metrics = Metrics::new();
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "typo", "labels": {"istio-injection": "on"}}});
    let body = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "1", "name": "typo", "operation": "CREATE", "userInfo": {}, "object": namespace,
                    "kind": {"group": "", "version": "v1", "kind": "Namespace"},
                    "resource": {"group": "", "version": "v1", "resource": "namespaces"}}
    });
    let (_, summary) = review(Endpoint::Validate, &serde_json::to_vec(&body).unwrap(), &Settings::default()).unwrap();
    assert!(!summary.denial_reasons.is_empty());
    metrics.observe_review(Endpoint::Validate, Some(&summary), Duration::from_millis(1));
    metrics.review_timed_out(Endpoint::Mutate, Duration::from_secs(5));
    metrics.tls_handshake_failed("other");
    metrics.set_connection_limit(Listener::Admission, 4096);
    let text = metrics.encode(Format::OpenMetrics);
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = rest.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "info" => &["_info"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

/// The metric names a PromQL expression reads: identifiers that are not functions (followed by
/// `(`), keywords, label names (inside `{}` or `by (...)`), strings, numbers or durations.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    // Keywords, and the aggregation operators (which may be followed by `by (...)` before their `(`).
    const KEYWORDS: [&str; 23] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
    ];
    let bytes = expr.as_bytes();
    let mut names = BTreeSet::new();
    let (mut i, mut depth_braces, mut grouping) = (0, 0, false);
    let mut parens: Vec<bool> = Vec::new(); // per open paren: is it a by/without label list?
    let mut last_word = String::new();
    while i < bytes.len() {
        let c = bytes[i] as char;
        match c {
            '"' | '\'' => {
                let end = expr[i + 1..].find(c).expect("closed string") + i + 1;
                i = end + 1;
                continue;
            }
            '{' => depth_braces += 1,
            '}' => depth_braces -= 1,
            '[' => {
                i = expr[i..].find(']').expect("closed range") + i + 1;
                continue;
            }
            '(' => {
                parens.push(grouping);
                grouping = false;
            }
            ')' => {
                parens.pop().expect("balanced parentheses");
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let end = expr[i..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .map_or(expr.len(), |e| e + i);
                let word = &expr[i..end];
                let called = expr[end..].trim_start().starts_with('(');
                let in_label_list = parens.last().copied().unwrap_or(false);
                // The unit of a number (`5m` after offset, `1e3`) is not a name.
                let after_digit = i > 0 && bytes[i - 1].is_ascii_digit();
                if ["by", "without", "on", "ignoring"].contains(&word) {
                    grouping = true;
                } else if depth_braces == 0 && !called && !in_label_list && !after_digit && !KEYWORDS.contains(&word) {
                    names.insert(word.to_string());
                }
                last_word = word.to_string();
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    assert!(parens.is_empty() && depth_braces == 0, "unbalanced: {expr} (last word {last_word})");
    names
}

/// Every alert reads metrics that exist: the binary's, the caches' ([`CLUSTER_METRICS`]) or
/// Prometheus's own `up`. docs/operating.md explains each alert by name.
#[test]
fn the_alert_rules_use_only_exported_metrics_and_are_documented() {
    assert_eq!(
        promql_metrics(
            r#"sum by (le, endpoint) (rate(a_bucket{x="y", z=~"w"}[5m])) > 1 and on (pod) b offset 5m or c"#
        ),
        BTreeSet::from(["a_bucket".to_string(), "b".to_string(), "c".to_string()])
    );
    let exported = exported_samples();
    for family in ["process_cpu_seconds_total", "process_resident_memory_bytes", "divert_webhook_reviews_total"] {
        assert!(exported.contains(family), "{family} missing from {exported:?}");
    }
    let docs = std::fs::read_to_string(Path::new(ROOT).join("docs/operating.md")).unwrap();
    let rules: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("deploy/components/prometheus/alerts.yaml")).unwrap(),
    )
    .unwrap();
    let mut used = BTreeSet::new();
    for group in rules["spec"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            assert!(docs.contains(&format!("`{name}`")), "docs/operating.md does not explain {name}");
            if let Some(wait) = rule.get("for") {
                duration(wait);
            }
            for metric in promql_metrics(rule["expr"].as_str().unwrap()) {
                assert!(
                    exported.contains(&metric) || CLUSTER_METRICS.contains(&metric.as_str()) || metric == "up",
                    "{name} reads {metric}, which the binary does not export"
                );
                used.insert(metric);
            }
        }
    }
    for metric in CLUSTER_METRICS {
        assert!(used.contains(metric), "no alert on {metric}");
        assert!(!exported.contains(metric), "{metric} is exported without a cluster");
    }
    // Every exported family is explained in docs/operating.md.
    for metric in &exported {
        let family = metric.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
        assert!(docs.contains(&format!("`{family}")), "docs/operating.md does not explain {metric}");
    }
}
