//! Rule answers as the kube-apiserver receives them: the server in-process over real TLS, an
//! HTTP/1.1 client posting AdmissionReviews, the JSONPatch decoded and applied. The cases of
//! issue 8: routes sharing a name, printable warnings and denials, canary Ingresses, root
//! VirtualServices that only delegate, `--cluster-domain` spelling, and wrong header forms spelled
//! with a space or as a regex.

mod common;

use clap::Parser;
use common::{TestServer, http1_client, post_review, response_patch, review_of, serve_args};
use divert_webhook::cli::RuleArgs;
use divert_webhook::selector::Selector;
use divert_webhook::settings::{Driver, Settings};
use serde_json::{Value, json};

const ENTRY: &str = "divert.okteto.com/2615052508acbfaddeba0eeded4131631ea31a02";
const VIRTUAL_SERVICE: (&str, &str, &str) = ("networking.istio.io", "v1", "VirtualService");
const INGRESS: (&str, &str, &str) = ("networking.k8s.io", "v1", "Ingress");

/// The server with `settings`, a self-signed certificate, and a client that trusts it.
struct Running {
    server: TestServer,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(settings: Settings) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        let args = serve_args(&["--self-signed", "--write-ca", ca_path.to_str().unwrap()]);
        let server = TestServer::start_with(args, settings).await;
        let client = http1_client(&std::fs::read_to_string(&ca_path).unwrap());
        Running { server, client, _dir: dir }
    }

    /// The `response` of `/mutate` or `/validate` for a CREATE of `object`.
    async fn answer(&self, path: &str, gvk: (&str, &str, &str), resource: &str, object: &Value) -> Value {
        let review = review_of("issue-8", gvk, resource, "CREATE", object.clone());
        let answer = post_review(&self.client, &self.server.url(path), &review).await;
        assert_eq!(answer["response"]["uid"], "issue-8");
        answer["response"].clone()
    }

    /// `object` with the mutating answer's patch applied, and the answer's warnings.
    async fn mutate(&self, gvk: (&str, &str, &str), resource: &str, object: &Value) -> (Value, Vec<String>) {
        let response = self.answer("/mutate", gvk, resource, object).await;
        assert_eq!(response["allowed"], true, "{response}");
        let mut patched = object.clone();
        if let Some(patch) = response_patch(&json!({ "response": response })) {
            json_patch::patch(&mut patched, &patch).expect("the patch applies");
        }
        (patched, warnings(&response))
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

fn warnings(response: &Value) -> Vec<String> {
    serde_json::from_value(response["warnings"].clone()).unwrap_or_default()
}

fn nginx() -> Settings {
    Settings::new(Driver::Nginx, Selector::everything(), None, &[])
}

fn shared_vs(entry: &str, http: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "frontend", "namespace": "staging", "annotations": {ENTRY: entry}},
        "spec": {"hosts": ["frontend"], "http": http}
    })
}

fn route_names(object: &Value) -> Vec<&str> {
    object["spec"]["http"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap_or("-")).collect()
}

fn ingress(name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "cindy", "annotations": annotations},
        "spec": {"rules": [{"host": "web-cindy.example.com"}]}
    })
}

/// A warning or message the apiserver keeps (no control character) and shows on one line.
fn assert_printable(text: &str) {
    assert!(!text.chars().any(char::is_control), "control character in {text:?}");
}

#[tokio::test]
async fn every_route_of_a_repeated_name_is_diverted() {
    let running = Running::start(Settings::default()).await;
    let http = json!([
        {"name": "dup", "match": [{"uri": {"prefix": "/a"}}], "route": [{"destination": {"host": "svc-a"}}]},
        {"name": "other", "match": [{"uri": {"prefix": "/o"}}], "route": [{"destination": {"host": "svc-o"}}]},
        {"name": "dup", "match": [{"uri": {"prefix": "/b"}}], "route": [{"destination": {"host": "svc-b"}}]},
    ]);
    let object = shared_vs(r#"{"namespace":"cindy","routes":["dup"]}"#, http);
    let (mutated, warnings) = running.mutate(VIRTUAL_SERVICE, "virtualservices", &object).await;
    assert_eq!(route_names(&mutated), ["okteto-divert-cindy-dup", "dup", "other", "okteto-divert-cindy-dup-2", "dup"]);
    let http = mutated["spec"]["http"].as_array().unwrap();
    assert_eq!(http[0]["route"][0]["destination"]["host"], "svc-a.cindy.svc.cluster.local");
    assert_eq!(http[3]["route"][0]["destination"]["host"], "svc-b.cindy.svc.cluster.local");
    assert_eq!(http[3]["match"][0]["uri"]["prefix"], "/b");
    assert!(warnings.is_empty(), "{warnings:?}");

    // Regeneration: the stored result mutates to itself, and validates.
    let (again, warnings) = running.mutate(VIRTUAL_SERVICE, "virtualservices", &mutated).await;
    assert_eq!(again, mutated);
    assert!(warnings.is_empty(), "{warnings:?}");
    let response = running.answer("/validate", VIRTUAL_SERVICE, "virtualservices", &mutated).await;
    assert_eq!(response["allowed"], true, "{response}");
    running.stop().await;
}

#[tokio::test]
async fn control_characters_in_user_text_are_escaped_in_warnings_and_denials() {
    let running = Running::start(Settings::default()).await;
    let route = |name: &str| json!([{"name": name, "route": [{"destination": {"host": "api"}}]}]);
    let entry = json!({"namespace": "cindy", "routes": ["api\nx\u{1b}[31m"]}).to_string();
    let (_, warnings) = running.mutate(VIRTUAL_SERVICE, "virtualservices", &shared_vs(&entry, route("api"))).await;
    assert_eq!(warnings, [r"divert of cindy: there is no http route named api\nx\u{1b}[31m"]);

    // Escapes count towards the limits: names made of control characters stay under 120.
    let noisy = "\u{7}".repeat(40);
    let entry = json!({"namespace": "cindy", "routes": [noisy, format!("y\u{202e}{noisy}")]}).to_string();
    let object = shared_vs(&entry, route(&format!("x\r\n{noisy}")));
    let (_, warnings) = running.mutate(VIRTUAL_SERVICE, "virtualservices", &object).await;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    for warning in &warnings {
        assert_printable(warning);
        assert!(warning.chars().count() < 120, "{warning}");
        assert!(warning.contains(r"\u{7}") && warning.ends_with('…'), "{warning}");
    }

    // A denial naming an object whose name holds control characters (the offline `check`
    // reads any file; the webhook does not count on the apiserver's name validation).
    let running_nginx = Running::start(nginx()).await;
    let object = ingress("web\u{1b}[31m\n", json!({"divert.okteto.com/header": "Cindy\t"}));
    let response = running_nginx.answer("/validate", INGRESS, "ingresses", &object).await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert_printable(message);
    assert!(message.starts_with(r"Ingress cindy/web\u{1b}[31m\n: "), "{message}");
    running_nginx.stop().await;
    running.stop().await;
}

#[tokio::test]
async fn a_canary_ingress_gets_a_warning_instead_of_a_block() {
    let running = Running::start(nginx()).await;
    let canary = ingress(
        "web-canary",
        json!({"divert.okteto.com/header": "cindy", "nginx.ingress.kubernetes.io/canary": "true"}),
    );
    let response = running.answer("/mutate", INGRESS, "ingresses", &canary).await;
    assert!(response.get("patch").is_none(), "{response}");
    assert_eq!(
        warnings(&response),
        [
            "canary Ingress: ingress-nginx ignores its configuration-snippet; set divert.okteto.com/header on the main Ingress"
        ]
    );
    // The main Ingress gets its block as before.
    let main = ingress("web", json!({"divert.okteto.com/header": "cindy"}));
    let (mutated, warnings) = running.mutate(INGRESS, "ingresses", &main).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    let snippet = mutated["metadata"]["annotations"]["nginx.ingress.kubernetes.io/configuration-snippet"].as_str();
    assert!(snippet.is_some_and(|s| s.starts_with("# divert-webhook begin\n")), "{mutated}");
    running.stop().await;
}

#[tokio::test]
async fn divert_entries_on_a_root_virtual_service_that_only_delegates_are_warned_about() {
    let running = Running::start(Settings::default()).await;
    let http = json!([
        {"name": "reviews", "match": [{"uri": {"prefix": "/reviews"}}], "delegate": {"name": "reviews", "namespace": "staging"}},
        {"name": "rest", "delegate": {"name": "rest"}},
    ]);
    let object = shared_vs(r#"{"namespace":"cindy"}"#, http);
    let response = running.answer("/mutate", VIRTUAL_SERVICE, "virtualservices", &object).await;
    assert!(response.get("patch").is_none(), "{response}");
    assert_eq!(
        warnings(&response),
        ["divert of cindy: no http route here forwards (delegates are not diverted); nothing is diverted"]
    );
    running.stop().await;
}

#[tokio::test]
async fn the_cluster_domain_flag_is_written_lowercase_without_its_trailing_dot() {
    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        rules: RuleArgs,
    }
    let rules = Command::try_parse_from(["divert-webhook", "--cluster-domain", "Cluster.Local."]).unwrap().rules;
    let running = Running::start(rules.settings()).await;
    let object = shared_vs(
        r#"{"namespace":"cindy"}"#,
        json!([{"name": "api", "route": [{"destination": {"host": "api.staging.svc.Cluster.Local"}}]}]),
    );
    let (mutated, warnings) = running.mutate(VIRTUAL_SERVICE, "virtualservices", &object).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(mutated["spec"]["http"][0]["route"][0]["destination"]["host"], "api.cindy.svc.cluster.local");
    running.stop().await;

    // A value that is not a DNS name stops the server before it starts, saying why.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
        .args(["serve", "--self-signed", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .args(["--cluster-domain", "cluster_local"])
        .env_remove("DIVERT_WEBHOOK_CLUSTER_DOMAIN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"cluster_local\" is not a DNS label"), "{stderr}");
    assert!(stderr.contains("give the cluster's DNS domain, as in cluster.local"), "{stderr}");
}

#[tokio::test]
async fn wrong_header_forms_spelled_with_a_space_or_as_a_regex_are_denied() {
    let running = Running::start(Settings::default()).await;
    let object = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "api", "namespace": "staging"},
        "spec": {"hosts": ["api"], "http": [{
            "name": "api",
            "match": [
                {"headers": {"baggage": {"exact": "okteto-divert :cindy"}}},
                {"headers": {"baggage": {"regex": "okteto-divert[:]cindy"}}},
                {"headers": {"baggage": {"regex": "okteto-divert[:=]cindy"}}},
            ],
            "route": [{"destination": {"host": "api"}}]
        }]}
    });
    let response = running.answer("/validate", VIRTUAL_SERVICE, "virtualservices", &object).await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains(r#"spec.http[0].match[0].headers.baggage.exact: baggage value "okteto-divert :cindy" uses "okteto-divert :""#), "{message}");
    assert!(message.contains(r#"spec.http[0].match[1].headers.baggage.regex: baggage regex "okteto-divert[:]cindy" looks for a wrong form"#), "{message}");
    assert!(!message.contains("match[2]"), "a regex that accepts the right form too is allowed: {message}");

    // What the webhook writes itself (P(key) in every clone) passes.
    let shared =
        shared_vs(r#"{"namespace":"cindy"}"#, json!([{"name": "api", "route": [{"destination": {"host": "api"}}]}]));
    let (mutated, _) = running.mutate(VIRTUAL_SERVICE, "virtualservices", &shared).await;
    assert_eq!(route_names(&mutated), ["okteto-divert-cindy-api", "api"]);
    let response = running.answer("/validate", VIRTUAL_SERVICE, "virtualservices", &mutated).await;
    assert_eq!(response["allowed"], true, "{response}");

    // The same forms in an Ingress's snippet: a value set, and an `if` comparing the baggage.
    let snippet = "proxy_set_header baggage \"okteto-divert :cindy\";\n\
                   if ($http_baggage ~ \"okteto-divert[:]cindy\") { return 403; }\n\
                   if ($http_baggage ~ \"okteto-divert=cindy\") { return 403; }\n";
    let object = ingress("web", json!({"nginx.ingress.kubernetes.io/configuration-snippet": snippet}));
    let response = running.answer("/validate", INGRESS, "ingresses", &object).await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains(r#"configuration-snippet"] line 1: baggage value "okteto-divert :cindy""#), "{message}");
    assert!(message.contains(r#"configuration-snippet"] line 2: baggage regex "okteto-divert[:]cindy""#), "{message}");
    assert!(!message.contains("line 3"), "{message}");
    running.stop().await;
}
