//! The watch caches (SPEC §10.8) and `serve` in cluster mode, against a fake API server that
//! speaks the real list/watch JSON over HTTP (tests/fake_api): the caches list and `/readyz`
//! flips, namespaces and Services change what `/mutate` answers (§10.3, §10.4), a dropped watch
//! resumes, a re-list drops what went without a DELETED event, a kind the cluster does not serve
//! is empty and found later, and the metrics move.

mod common;
mod fake_api;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, http1_client, metric, plain_client, post_review, response_patch, review_of, serve_args};
use divert_webhook::cluster::ClusterSnapshot;
use divert_webhook::cluster::caches::{self, CacheMetrics, CacheOptions, Caches};
use divert_webhook::server::Server;
use divert_webhook::settings::Settings;
use fake_api::{
    FakeApi, INGRESSES, NAMESPACES, REFERENCE_GRANTS, Resource, SERVICES, VIRTUAL_SERVICES, VIRTUAL_SERVICES_V1BETA1,
    all_resources,
};
use serde_json::{Value, json};
use tokio::sync::watch;

const FROM: &str = "divert.okteto.com/from";
const ENTRY: &str = "divert.okteto.com/2615052508acbfaddeba0eeded4131631ea31a02";
const VIRTUAL_SERVICE: (&str, &str, &str) = ("networking.istio.io", "v1", "VirtualService");

/// Short timings, so that the tests wait little.
fn fast() -> CacheOptions {
    CacheOptions { rebuild_delay: Duration::from_millis(20), discovery_interval: Duration::from_millis(300) }
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn service(namespace: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace, "annotations": {"big": "x".repeat(1000)}},
           "spec": {"ports": [{"port": 80}]}})
}

/// A VirtualService of `namespace` with one route to `web`.
fn developer_vs(namespace: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"hosts": ["web"], "http": [{"route": [{"destination": {"host": "web"}}]}]}
    })
}

/// `staging/shop`, routes `api` and `web`, diverted for cindy by an entry without `services`.
fn shop() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "shop", "namespace": "staging",
                     "annotations": {ENTRY: "{\"namespace\":\"cindy\"}"}},
        "spec": {"hosts": ["shop.example.com"], "http": [
            {"name": "api", "match": [{"uri": {"prefix": "/api"}}], "route": [{"destination": {"host": "api"}}]},
            {"name": "web", "route": [{"destination": {"host": "web"}}]},
        ]}
    })
}

fn route_names(object: &Value) -> Vec<String> {
    object["spec"]["http"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap_or("").to_string()).collect()
}

/// Waits (at most 20 s) until `done` holds.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let started = std::time::Instant::now();
    while !done().await {
        assert!(started.elapsed() < Duration::from_secs(20), "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most 20 s) for a published snapshot where `holds` is true.
async fn snapshot_where(
    snapshots: &mut watch::Receiver<Option<Arc<ClusterSnapshot>>>,
    what: &str,
    holds: impl Fn(&ClusterSnapshot) -> bool,
) -> Arc<ClusterSnapshot> {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(snapshot) = snapshots.borrow_and_update().clone().filter(|s| holds(s)) {
                return snapshot;
            }
            snapshots.changed().await.expect("the caches run");
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!("no snapshot where {what}: last {:?}", snapshots.borrow().as_ref().map(|s| &s.state))
    })
}

/// The caches on the fake, with their metrics in a registry of their own.
fn start_caches(api: &FakeApi) -> (Caches, prometheus_client::registry::Registry) {
    let mut registry = prometheus_client::registry::Registry::with_prefix("divert_webhook");
    let metrics = CacheMetrics::register(&mut registry);
    (caches::start(api.client(), metrics, fast(), true), registry)
}

fn encode(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

fn sample(name: &str, cache: &str) -> String {
    format!("divert_webhook_{name}{{cache=\"{cache}\"}}")
}

/// The server in cluster mode on the fake, self-signed, and an HTTPS client that trusts it.
struct Running {
    server: TestServer,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(api: &FakeApi) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        let args = serve_args(&["--self-signed", "--write-ca", ca_path.to_str().unwrap()]);
        let server = Server::bind(args, Settings::default()).await.unwrap().with_cluster(api.client(), fast());
        let server = TestServer::run(server);
        let client = http1_client(&std::fs::read_to_string(&ca_path).unwrap());
        Running { server, client, _dir: dir }
    }

    async fn readyz(&self) -> (u16, String) {
        let response = plain_client().get(format!("http://{}/readyz", self.server.metrics)).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// `object` as /mutate leaves it (a CREATE).
    async fn mutate(&self, object: &Value) -> Value {
        let review = review_of("caches", VIRTUAL_SERVICE, "virtualservices", "CREATE", object.clone());
        let answer = post_review(&self.client, &self.server.url("/mutate"), &review).await;
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        let mut patched = object.clone();
        if let Some(patch) = response_patch(&answer) {
            json_patch::patch(&mut patched, &patch).unwrap();
        }
        patched
    }
}

#[tokio::test]
async fn the_caches_list_then_readyz_passes_and_the_cluster_changes_what_mutate_answers() {
    let api = FakeApi::start(all_resources()).await;
    api.put(namespace("staging", json!({})));
    api.put(namespace("cindy", json!({})));
    for (ns, name) in [("staging", "api"), ("staging", "web"), ("cindy", "web")] {
        api.put(service(ns, name));
    }
    api.set_unavailable(true);
    let running = Running::start(&api).await;

    // The API is down: not ready, and the errors show.
    let (status, body) = running.readyz().await;
    assert_eq!(status, 503);
    assert!(body.starts_with("waiting for the cluster caches to list: namespaces, services"), "{body}");
    eventually("watch errors counted", || async {
        metric(&running.server.metrics_text().await, &sample("cache_watch_errors_total", "namespaces")) >= 1.0
    })
    .await;
    let text = running.server.metrics_text().await;
    assert_eq!(metric(&text, &sample("cache_synced", "services")), 0.0);
    assert!(text.contains(&format!("{} ", sample("cache_synced", "services"))), "a sample from the start: {text}");

    api.set_unavailable(false);
    eventually("/readyz passes", || async { running.readyz().await == (200, "ready\n".to_string()) }).await;
    let text = running.server.metrics_text().await;
    for cache in [
        "namespaces",
        "services",
        "virtualservices",
        "ingresses",
        "httproutes",
        "linkerd-httproutes",
        "referencegrants",
    ] {
        assert_eq!(metric(&text, &sample("cache_synced", cache)), 1.0, "{cache}: {text}");
        assert!(text.contains(&sample("cache_last_event_age_seconds", cache)), "{cache}: {text}");
    }

    // cindy is no developer namespace yet: a VirtualService of hers is left alone.
    assert_eq!(running.mutate(&developer_vs("cindy")).await, developer_vs("cindy"));
    // Labelled: the header opt-in at once (§10.3), from the Namespace cache.
    api.put(namespace("cindy", json!({FROM: "staging"})));
    eventually("the header is injected", || async {
        running.mutate(&developer_vs("cindy")).await["spec"]["http"][0]["headers"]
            == json!({"request": {"add": {"baggage": "okteto-divert=cindy"}}})
    })
    .await;

    // §10.4: cindy runs web only, so only web is diverted; once she runs api, api too.
    let diverted = running.mutate(&shop()).await;
    assert!(route_names(&diverted).contains(&"okteto-divert-cindy-web".to_string()), "{diverted}");
    assert!(!route_names(&diverted).contains(&"okteto-divert-cindy-api".to_string()), "{diverted}");
    api.put(service("cindy", "api"));
    eventually("api is diverted too", || async {
        route_names(&running.mutate(&shop()).await).contains(&"okteto-divert-cindy-api".to_string())
    })
    .await;

    // The request path never calls the API. (The caches' own discovery, `GET /apis/GROUP/VERSION`
    // every 300 ms here for each of the kinds it looks up, goes on meanwhile: left out.)
    let not_discovery = |api: &FakeApi| -> Vec<String> {
        let discovery = |r: &String| {
            r.strip_prefix("GET /apis/").is_some_and(|gv| gv.split('?').next().unwrap_or("").matches('/').count() == 1)
        };
        api.requests().into_iter().filter(|r| !discovery(r)).collect()
    };
    let requests = not_discovery(&api).len();
    for _ in 0..3 {
        running.mutate(&shop()).await;
    }
    assert_eq!(not_discovery(&api).len(), requests, "{:?}", &not_discovery(&api)[requests..]);

    // The API fails: the watches break and retry, and the webhook answers from what it knew.
    let errors = metric(&running.server.metrics_text().await, &sample("cache_watch_errors_total", "services"));
    api.set_unavailable(true);
    eventually("the broken watches are counted", || async {
        metric(&running.server.metrics_text().await, &sample("cache_watch_errors_total", "services")) > errors
    })
    .await;
    assert_eq!(running.readyz().await.0, 200, "still ready");
    assert!(route_names(&running.mutate(&shop()).await).contains(&"okteto-divert-cindy-api".to_string()));
    running.server.stop().await;
}

#[tokio::test]
async fn a_dropped_watch_resumes_from_its_resource_version_without_listing_again() {
    let api = FakeApi::start(all_resources()).await;
    api.put(namespace("staging", json!({})));
    api.put(service("staging", "api"));
    let (caches, registry) = start_caches(&api);
    let mut snapshots = caches.snapshots();
    snapshot_where(&mut snapshots, "staging runs api", |s| s.state.view.runs("staging", "api")).await;
    let lists = |api: &FakeApi| {
        api.requests().iter().filter(|r| r.starts_with("GET /api/v1/services?") && !r.contains("watch=true")).count()
    };
    let watches = |api: &FakeApi| {
        api.requests().iter().filter(|r| r.starts_with("GET /api/v1/services?") && r.contains("watch=true")).count()
    };
    let (lists_before, watches_before) = (lists(&api), watches(&api));

    api.drop_watches();
    api.put(service("staging", "web"));
    let snapshot = snapshot_where(&mut snapshots, "staging runs web", |s| s.state.view.runs("staging", "web")).await;
    assert!(snapshot.state.view.runs("staging", "api"), "the state before the drop is kept");
    assert!(watches(&api) > watches_before, "watched again");
    assert_eq!(lists(&api), lists_before, "resumed, not listed again: {:?}", api.requests());
    // Bookmarks keep a quiet watch's place; they change nothing.
    api.bookmark();
    api.put(service("staging", "db"));
    snapshot_where(&mut snapshots, "staging runs db", |s| s.state.view.runs("staging", "db")).await;
    assert_eq!(metric(&encode(&registry), &sample("cache_synced", "services")), 1.0);
}

#[tokio::test]
async fn a_relist_drops_what_went_without_a_delete_event_and_deletions_are_remembered() {
    let api = FakeApi::start(all_resources()).await;
    for ns in ["staging", "cindy", "dave"] {
        api.put(namespace(ns, json!({})));
    }
    api.put(service("cindy", "web"));
    let (caches, registry) = start_caches(&api);
    let mut snapshots = caches.snapshots();
    let first = snapshot_where(&mut snapshots, "cindy runs web", |s| s.state.view.runs("cindy", "web")).await;
    assert!(first.gone_since.is_empty());

    // A deletion seen as it happens.
    api.delete(&NAMESPACES, "", "dave");
    let snapshot = snapshot_where(&mut snapshots, "dave gone", |s| s.state.view.namespace("dave").is_none()).await;
    assert!(snapshot.gone_since.contains_key("dave"), "{:?}", snapshot.gone_since);

    // cindy and her Service go while the watches are down and the history is compacted: the
    // resumed watch gets 410 Gone, the caches list again, and the list lacks them.
    let errors_before = metric(&encode(&registry), &sample("cache_watch_errors_total", "namespaces"));
    api.remove_silently(&NAMESPACES, "", "cindy");
    api.remove_silently(&SERVICES, "cindy", "web");
    api.compact();
    api.drop_watches();
    let snapshot = snapshot_where(&mut snapshots, "cindy gone", |s| {
        s.state.view.namespace("cindy").is_none() && !s.state.view.runs("cindy", "web")
    })
    .await;
    assert!(snapshot.gone_since.contains_key("cindy"), "{:?}", snapshot.gone_since);
    assert!(snapshot.gone_since.contains_key("dave"), "{:?}", snapshot.gone_since);
    assert!(snapshot.state.view.namespace("staging").is_some());
    let text = encode(&registry);
    assert!(metric(&text, &sample("cache_watch_errors_total", "namespaces")) > errors_before, "{text}");

    // A namespace created again is no longer gone.
    api.put(namespace("cindy", json!({})));
    let snapshot = snapshot_where(&mut snapshots, "cindy back", |s| s.state.view.namespace("cindy").is_some()).await;
    assert!(!snapshot.gone_since.contains_key("cindy"));
}

#[tokio::test]
async fn a_kind_the_cluster_does_not_serve_is_empty_and_listed_until_it_appears() {
    // No Istio, no Gateway API.
    let api = FakeApi::start(vec![NAMESPACES, SERVICES, INGRESSES]).await;
    api.put(namespace("staging", json!({})));
    let (caches, registry) = start_caches(&api);
    let mut snapshots = caches.snapshots();
    let snapshot = snapshot_where(&mut snapshots, "listed", |_| true).await;
    assert!(snapshot.state.virtual_services.is_empty() && snapshot.state.http_routes.is_empty());
    assert_eq!(caches.status().waiting_for(), None, "ready without the CRDs");
    assert_eq!(metric(&encode(&registry), &sample("cache_synced", "virtualservices")), 1.0);

    // Istio installed, serving v1beta1 only: found at the next look-up and watched.
    api.serve(VIRTUAL_SERVICES_V1BETA1, true);
    let mut vs = developer_vs("staging");
    vs["apiVersion"] = json!("networking.istio.io/v1beta1");
    vs["status"] = json!({"validationMessages": []});
    vs["metadata"]["managedFields"] = json!([
        {"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}},
        {"manager": "divert-webhook", "operation": "Apply", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:metadata": {"f:annotations": {"f:divert.okteto.com/header": {}}}}},
    ]);
    api.put(vs);
    let snapshot = snapshot_where(&mut snapshots, "a VirtualService", |s| s.state.virtual_services.len() == 1).await;
    let cached = &snapshot.state.virtual_services[0];
    assert_eq!(cached["apiVersion"], "networking.istio.io/v1beta1");
    assert_eq!(cached["kind"], "VirtualService");
    assert_eq!(cached["spec"], developer_vs("staging")["spec"], "kept as read");
    assert!(cached.get("status").is_none(), "status dropped: {cached}");
    let managers: Vec<&str> = cached["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["divert-webhook"], "only the webhook's own entry");

    // Uninstalled: emptied at the next look-up.
    api.serve(VIRTUAL_SERVICES_V1BETA1, false);
    snapshot_where(&mut snapshots, "no VirtualService", |s| s.state.virtual_services.is_empty()).await;
    // v1 is preferred when both are served.
    api.serve(VIRTUAL_SERVICES, true);
    api.serve(VIRTUAL_SERVICES_V1BETA1, true);
    api.put(developer_vs("staging"));
    let snapshot = snapshot_where(&mut snapshots, "v1", |s| {
        s.state.virtual_services.iter().any(|vs| vs["apiVersion"] == "networking.istio.io/v1")
    })
    .await;
    assert_eq!(snapshot.state.virtual_services.len(), 1, "{:?}", snapshot.state.virtual_services);
}

/// The real binary in cluster mode through a kubeconfig, and in no-cluster mode without one.
#[tokio::test]
async fn the_binary_says_which_mode_it_is_in_and_why() {
    let api = FakeApi::start(all_resources()).await;
    api.put(namespace("staging", json!({})));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let run = |env: &[(&str, &str)], flags: &[&str]| {
        let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_divert-webhook"));
        command
            .args(["serve", "--self-signed", "--addr", "127.0.0.1:0", "--log-format", "json", "--shutdown-delay", "0s"])
            .args(["--metrics-addr", &metrics.to_string()])
            .args(flags)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBECONFIG")
            .env("HOME", dir.path())
            // In cluster mode the reconciler's Lease needs the webhook's namespace (a pod's).
            .env("POD_NAMESPACE", "divert-system")
            .stdin(std::process::Stdio::null())
            .stderr(log.reopen().unwrap());
        for (name, value) in env {
            command.env(name, value);
        }
        (command.spawn().unwrap(), metrics, log)
    };
    let mode_line = |log: &tempfile::NamedTempFile| {
        std::fs::read_to_string(log.path()).unwrap().lines().find(|l| l.contains("\"mode\"")).map(str::to_string)
    };
    let ready = |metrics: std::net::SocketAddr| async move {
        plain_client().get(format!("http://{metrics}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    };

    for (env, flags, mode, why) in [
        (
            // The reconciler's Lease lives in the webhook's namespace: a pod's, here the variable's.
            vec![("KUBECONFIG", kubeconfig.to_str().unwrap()), ("POD_NAMESPACE", "divert-system")],
            vec![],
            "cluster",
            kubeconfig.to_str().unwrap().to_string(),
        ),
        (vec![], vec![], "no-cluster", format!("no kubeconfig at {}/.kube/config", dir.path().display())),
        (vec![("KUBECONFIG", kubeconfig.to_str().unwrap())], vec!["--no-cluster"], "no-cluster", "--no-cluster".into()),
    ] {
        let (mut child, metrics, log) = run(&env, &flags);
        eventually("ready", || ready(metrics)).await;
        // The log is written in batches, up to 50 ms after the line.
        eventually("the mode is logged", || std::future::ready(mode_line(&log).is_some())).await;
        let line = mode_line(&log).expect("the mode is logged");
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["fields"]["mode"], mode, "{line}");
        let metrics_text =
            plain_client().get(format!("http://{metrics}/metrics")).send().await.unwrap().text().await.unwrap();
        assert_eq!(
            metrics_text.contains("divert_webhook_cache_synced{"),
            mode == "cluster",
            "cache samples only in cluster mode: {metrics_text}"
        );
        let said = format!(
            "{}{}",
            parsed["fields"]["source"].as_str().unwrap_or(""),
            parsed["fields"]["reason"].as_str().unwrap_or("")
        );
        assert!(said.contains(&why), "{line}");
        let _ = child.kill();
        let _ = child.wait();
    }
    // Only the cluster-mode run talked to the API: the caches listed every kind.
    let requests = api.requests();
    assert!(requests.iter().any(|r| r.starts_with("GET /api/v1/namespaces?")), "{requests:?}");
}

/// SPEC §10.8: the real binary's caches filled with 5,000 namespaces and 50,000 Services (with
/// the labels, annotations and managedFields real ones carry) stay under 200 MiB of RSS, peak
/// included. Ignored (it takes a while in a debug build); the command and the figures are in
/// BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn memory_of_5000_namespaces_and_50000_services() {
    let api = FakeApi::start(all_resources()).await;
    let managed = json!([{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1",
        "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
                     "f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:ports": {}, "f:selector": {}}}}]);
    for n in 0..5_000 {
        let name = format!("team-{n:04}");
        let mut labels = json!({"kubernetes.io/metadata.name": name, "dev.okteto.com/okteto-managed": "true"});
        if n % 2 == 1 {
            labels[FROM] = json!(format!("team-{:04}", n - 1));
        }
        let mut ns = namespace(&name, labels);
        ns["metadata"]["managedFields"] = managed.clone();
        api.put(ns);
        for s in 0..10 {
            let service_name = format!("service-{s}");
            let mut svc = service(&name, &service_name);
            svc["metadata"]["labels"] = json!({"app": service_name});
            svc["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/last-applied-configuration":
                format!("{{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{{\"name\":\"{service_name}\",\"namespace\":\"{name}\"}},\"spec\":{{\"ports\":[{{\"port\":80,\"targetPort\":8080}}],\"selector\":{{\"app\":\"{service_name}\"}}}}}}")});
            svc["metadata"]["managedFields"] = managed.clone();
            api.put(svc);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let https = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let ca_path = dir.path().join("ca.pem");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
        .args(["serve", "--self-signed", "--write-ca", ca_path.to_str().unwrap()])
        .args(["--addr", &https.to_string(), "--metrics-addr", &metrics.to_string()])
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", "divert-system")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let ready = plain_client().get(format!("http://{metrics}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = started.elapsed();
    // The first snapshot is built after the last list: once /mutate gives team-4999 (a developer
    // namespace) the header opt-in, the view is the whole cluster's.
    let client = http1_client(&std::fs::read_to_string(&ca_path).unwrap());
    let review = review_of("memory", VIRTUAL_SERVICE, "virtualservices", "CREATE", developer_vs("team-4999"));
    eventually("the snapshot is published", || async {
        let answer = post_review(&client, &format!("https://{https}/mutate"), &review).await;
        response_patch(&answer).is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = common::proc_status(child.id(), "VmRSS").unwrap();
    let peak = common::proc_status(child.id(), "VmHWM").unwrap();
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "5,000 namespaces, 50,000 Services: listed in {listed:?}; VmRSS {} MiB, VmHWM {} MiB",
        rss / 1024,
        peak / 1024
    );
    assert!(peak < 200 * 1024, "peak RSS {} MiB", peak / 1024);
}

/// The fake takes what a reconciler writes (for the reconciler's own tests): Lease get, create
/// and replace (a stale resourceVersion conflicts), server-side apply of annotations by field
/// manager (an annotation left out of the next apply goes, others' stay), and JSON patches
/// whose `test` decides.
#[tokio::test]
async fn the_fake_api_takes_leases_applies_and_json_patches() {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
    let api = FakeApi::start(all_resources()).await;
    let client = api.client();
    let is_status = |error: kube::Error, code: u16| matches!(error, kube::Error::Api(status) if status.code == code);

    let leases: kube::Api<Lease> = kube::Api::namespaced(client.clone(), "divert-system");
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "divert-webhook", "namespace": "divert-system"},
        "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    assert!(is_status(leases.get("divert-webhook").await.unwrap_err(), 404));
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    assert!(is_status(leases.create(&PostParams::default(), &lease).await.unwrap_err(), 409));
    let mut taken = leases.get("divert-webhook").await.unwrap();
    taken.spec.as_mut().unwrap().holder_identity = Some("replica-b".into());
    let replaced = leases.replace("divert-webhook", &PostParams::default(), &taken).await.unwrap();
    assert_eq!(replaced.spec.unwrap().holder_identity.as_deref(), Some("replica-b"));
    assert!(is_status(leases.replace("divert-webhook", &PostParams::default(), &created).await.unwrap_err(), 409));

    let mut shop = shop();
    shop["metadata"]["annotations"]["owner"] = json!("someone");
    api.put(shop);
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    );
    let vss: kube::Api<DynamicObject> = kube::Api::namespaced_with(client, "staging", &resource);
    let apply = |annotations: Value| {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
               "metadata": {"name": "shop", "namespace": "staging", "annotations": annotations}})
    };
    let params = PatchParams::apply("divert-webhook");
    vss.patch("shop", &params, &Patch::Apply(apply(json!({"a": "1", "b": "2"})))).await.unwrap();
    let after = vss.patch("shop", &params, &Patch::Apply(apply(json!({"a": "1"})))).await.unwrap();
    let annotations = after.metadata.annotations.unwrap();
    assert_eq!(annotations.get("a").map(String::as_str), Some("1"));
    assert!(!annotations.contains_key("b"), "released by leaving it out: {annotations:?}");
    assert_eq!(annotations.get("owner").map(String::as_str), Some("someone"), "not the webhook's");
    assert!(annotations.contains_key(ENTRY));
    let managers: Vec<String> =
        after.metadata.managed_fields.unwrap().into_iter().filter_map(|entry| entry.manager).collect();
    assert_eq!(managers, ["divert-webhook"]);

    let url = format!("{}/apis/networking.istio.io/v1/namespaces/staging/virtualservices/shop", api.url());
    let json_patch = |value: &str| {
        json!([{"op": "test", "path": "/metadata/annotations/owner", "value": value},
               {"op": "remove", "path": "/metadata/annotations/owner"}])
        .to_string()
    };
    let send = |body: String| {
        plain_client().patch(&url).header("content-type", "application/json-patch+json").body(body).send()
    };
    assert_eq!(send(json_patch("someone else")).await.unwrap().status(), 422, "the test failed: nothing changed");
    assert!(api.get(&VIRTUAL_SERVICES, "staging", "shop").unwrap()["metadata"]["annotations"].get("owner").is_some());
    assert_eq!(send(json_patch("someone")).await.unwrap().status(), 200);
    assert!(api.get(&VIRTUAL_SERVICES, "staging", "shop").unwrap()["metadata"]["annotations"].get("owner").is_none());
}

/// In cluster mode the reconciler needs the webhook's namespace for its Lease: without one
/// `serve` stops at once, naming the ways out, rather than running without its writer.
#[tokio::test]
async fn cluster_mode_without_the_webhooks_namespace_stops_naming_the_fix() {
    let api = FakeApi::start(all_resources()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
            .args(["serve", "--self-signed", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("POD_NAMESPACE")
            .env_remove("DIVERT_WEBHOOK_NAMESPACE")
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", dir.path())
            .stdin(std::process::Stdio::null())
            .output()
    });
    let output = tokio::time::timeout(Duration::from_secs(20), output).await.expect("serve stops").unwrap().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for fix in ["--namespace", "$POD_NAMESPACE", "--no-reconcile"] {
        assert!(stderr.contains(fix), "{fix} not named: {stderr}");
    }
}

/// SPEC §10.8 and `--gateway-api`: off (the istio driver's default), Services are watched
/// metadata-only and HTTPRoutes and ReferenceGrants not at all (listed and empty from the
/// start); on, Services are watched whole for their ports, and the snapshot names the versions
/// the cluster serves, which the reconciler writes at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_api_switch_decides_what_is_watched() {
    let api = FakeApi::start(all_resources()).await;
    api.put(namespace("staging", json!({})));
    api.put(namespace("cindy", json!({FROM: "staging"})));
    api.put(service("staging", "web"));
    api.put(service("cindy", "web"));
    api.put(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                   "metadata": {"name": "web", "namespace": "staging"},
                   "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web"}]}}));
    let start = |gateway_api: bool| {
        let mut registry = prometheus_client::registry::Registry::with_prefix("divert_webhook");
        let metrics = CacheMetrics::register(&mut registry);
        (caches::start(api.client(), metrics, fast(), gateway_api), registry)
    };

    let (off, registry) = start(false);
    let mut snapshots = off.snapshots();
    let snapshot = snapshot_where(&mut snapshots, "cindy runs web", |s| s.state.view.runs("cindy", "web")).await;
    assert!(snapshot.state.http_routes.is_empty() && snapshot.state.reference_grants.is_empty());
    assert!(snapshot.state.service_ports.is_empty(), "no ports: {:?}", snapshot.state.service_ports);
    assert_eq!((&snapshot.state.served.http_route, &snapshot.state.served.reference_grant), (&None, &None));
    assert_eq!(off.status().waiting_for(), None);
    let metrics = encode(&registry);
    for cache in ["httproutes", "linkerd-httproutes", "referencegrants"] {
        assert!(metrics.contains(&format!("divert_webhook_cache_synced{{cache=\"{cache}\"}} 1")), "{metrics}");
    }
    let received = api.received();
    let services: Vec<_> = received.iter().filter(|r| r.uri.starts_with("/api/v1/services")).collect();
    assert!(services.len() >= 2, "a list and a watch: {services:?}");
    assert!(services.iter().all(|r| r.accept.contains("as=PartialObjectMetadata")), "{services:?}");
    let gateway: Vec<_> = received.iter().filter(|r| r.uri.contains("gateway.networking.k8s.io")).collect();
    assert!(gateway.is_empty(), "the Gateway API is not even looked up: {gateway:?}");
    drop(off);

    // On, with ReferenceGrant served as v1 too: v1 is watched (and written).
    api.serve(Resource { version: "v1", ..REFERENCE_GRANTS }, true);
    let (on, _registry) = start(true);
    let mut snapshots = on.snapshots();
    let snapshot = snapshot_where(&mut snapshots, "the route and the ports", |s| {
        !s.state.http_routes.is_empty() && !s.state.service_ports.is_empty()
    })
    .await;
    assert_eq!(snapshot.state.service_ports["staging"]["web"], [80]);
    assert_eq!(snapshot.state.served.http_route.as_deref(), Some("gateway.networking.k8s.io/v1"));
    assert_eq!(snapshot.state.served.reference_grant.as_deref(), Some("gateway.networking.k8s.io/v1"));
    let whole = api
        .received()
        .into_iter()
        .any(|r| r.uri.starts_with("/api/v1/services") && !r.accept.contains("PartialObjectMetadata"));
    assert!(whole, "Services watched whole");
}
