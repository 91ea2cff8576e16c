//! SPEC §10 end to end (issue 9's acceptance): the real `Server` in cluster mode (watch caches,
//! reconciler, Lease) against one fake API server (tests/fake_api) that passes every write of a
//! VirtualService through the server's own /mutate and /validate over HTTPS before storing it,
//! as the apiserver calls its admission webhooks. A developer labels a namespace, runs Services,
//! unlabels or deletes it; the stored objects must follow within SPEC §10.6's 10 s.
//!
//! Nothing here calls the crate's reconcile functions: the expected entry keys are computed from
//! §10.2's formula, the routes from §4's, and who wrote what is read from the fake's request log
//! (each replica's client sends its own bearer token).

mod common;
mod fake_api;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Pki, TestServer, http1_client, metric, plain_client, serve_args};
use divert_webhook::cluster::caches::CacheOptions;
use divert_webhook::cluster::lease::LeaseConfig;
use divert_webhook::cluster::reconciler::ReconcilerConfig;
use divert_webhook::selector::Selector;
use divert_webhook::server::Server;
use divert_webhook::settings::{DEFAULT_MANAGED_SELECTOR, Driver, Settings};
use fake_api::{FakeApi, LEASES, NAMESPACES, Received, SERVICES, VIRTUAL_SERVICES, Webhooks, all_resources};
use serde_json::{Value, json};

const FROM: &str = "divert.okteto.com/from";
const HEADER: &str = "divert.okteto.com/header";
/// The webhook's namespace: where its Lease lives.
const OWN_NAMESPACE: &str = "divert-system";
/// SPEC §10.6: the stored objects follow a change within 10 s.
const CONVERGENCE: Duration = Duration::from_secs(10);

/// §10.2's key for the reconciler's entry of developer namespace `namespace`:
/// `divert.okteto.com/` + the first 40 hex of sha256("divert-webhook:" + namespace).
fn entry_key(namespace: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("divert-webhook:{namespace}").as_bytes());
    let hex: String = digest.as_ref().iter().map(|byte| format!("{byte:02x}")).collect();
    format!("divert.okteto.com/{}", &hex[..40])
}

/// The entry's value, byte for byte as §10.2 writes it.
fn entry_value(namespace: &str, services: &[&str]) -> String {
    let services: Vec<String> = services.iter().map(|s| format!("\"{s}\"")).collect();
    format!(r#"{{"namespace":"{namespace}","services":[{}]}}"#, services.join(","))
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn service(namespace: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
           "spec": {"ports": [{"port": 80}]}})
}

/// A shared VirtualService of staging with one route per Service, named after it.
fn shared_vs(name: &str, services: &[&str], annotations: Value) -> Value {
    let http: Vec<Value> = services
        .iter()
        .map(|s| json!({"name": s, "match": [{"uri": {"prefix": format!("/{s}")}}], "route": [{"destination": {"host": s}}]}))
        .collect();
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "staging", "annotations": annotations},
        "spec": {"hosts": [format!("{name}.example.com")], "http": http}
    })
}

/// A developer's own VirtualService `web` in `namespace`, routing to its Service web.
fn developer_vs(namespace: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"hosts": ["web"], "http": [{"name": "web", "route": [{"destination": {"host": "web"}}]}]}
    })
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["metadata"]["annotations"][key].as_str()
}

fn route_names(object: &Value) -> Vec<String> {
    object["spec"]["http"]
        .as_array()
        .map(|http| http.iter().map(|r| r["name"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

/// The generated routes (§4.1's reserved prefix).
fn clones(object: &Value) -> BTreeSet<String> {
    route_names(object).into_iter().filter(|n| n.starts_with("okteto-divert-")).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// The divert entries of `object` (`divert.okteto.com/` keys but the reserved names).
fn entries(object: &Value) -> BTreeSet<String> {
    let Some(annotations) = object["metadata"]["annotations"].as_object() else { return BTreeSet::new() };
    annotations.keys().filter(|k| k.starts_with("divert.okteto.com/") && *k != HEADER && *k != FROM).cloned().collect()
}

/// Checks what §4 says a clone of route `original` for developer `key` is: just before its
/// original (after the other clones of it), matching the baggage member, sending to the
/// developer's Service. The originals stay as they were.
fn check_clone(object: &Value, key: &str, original: &str) {
    let names = route_names(object);
    let name = format!("okteto-divert-{key}-{original}");
    let at = names.iter().position(|n| *n == name).unwrap_or_else(|| panic!("no route {name}: {object}"));
    let original_at = names.iter().position(|n| n == original).unwrap();
    assert!(
        at < original_at && names[at..original_at].iter().all(|n| n.starts_with("okteto-divert-")),
        "{name} is not just before {original}: {names:?}"
    );
    let clone = &object["spec"]["http"][at];
    assert_eq!(clone["route"], json!([{"destination": {"host": format!("{original}.{key}.svc.cluster.local")}}]));
    assert_eq!(clone["match"][0]["uri"], json!({"prefix": format!("/{original}")}));
    let pattern = clone["match"][0]["headers"]["baggage"]["regex"].as_str().unwrap_or_else(|| panic!("{clone}"));
    assert!(pattern.contains(key), "{pattern}");
    assert_eq!(object["spec"]["http"][original_at]["route"], json!([{"destination": {"host": original}}]));
}

/// Polls `holds` until it is true (then `true`) or `limit` has passed (then `false`).
async fn within<F: Future<Output = bool>>(limit: Duration, mut holds: impl FnMut() -> F) -> bool {
    let started = Instant::now();
    loop {
        if holds().await {
            return true;
        }
        if started.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A sync condition for [`within`].
fn now(holds: bool) -> std::future::Ready<bool> {
    std::future::ready(holds)
}

/// The fake API and the certificate the webhook replicas share (one Service, many pods).
struct Cluster {
    api: FakeApi,
    pki: Pki,
    tls: (PathBuf, PathBuf),
    _dir: tempfile::TempDir,
}

/// One `divert-webhook serve` replica in-process; `identity` is its pod name (Lease holder
/// identity) and its client's bearer token.
struct Replica {
    identity: &'static str,
    server: TestServer,
}

impl Replica {
    async fn holds_lease(&self) -> bool {
        metric(&self.server.metrics_text().await, "divert_webhook_lease_holder") == 1.0
    }

    async fn ready(&self) -> bool {
        let url = format!("http://{}/readyz", self.server.metrics);
        plain_client().get(url).send().await.is_ok_and(|r| r.status() == 200)
    }
}

impl Cluster {
    async fn new() -> Cluster {
        let api = FakeApi::start(all_resources()).await;
        let pki = Pki::new("divert-webhook-ca");
        let dir = tempfile::tempdir().unwrap();
        let identity = pki.server("divert-webhook", 1);
        let tls = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&tls.0, &identity.cert_pem).unwrap();
        std::fs::write(&tls.1, &identity.key_pem).unwrap();
        Cluster { api, pki, tls, _dir: dir }
    }

    /// Starts one replica per identity, in cluster mode with the reconciler and the Lease, with
    /// `flags` (the reconciler's timings); admission of VirtualServices then goes to them; waits
    /// until each is ready (its caches listed).
    async fn start(&self, identities: &[&'static str], flags: &[&str]) -> Vec<Replica> {
        let fast_caches =
            CacheOptions { rebuild_delay: Duration::from_millis(20), discovery_interval: Duration::from_secs(60) };
        let mut bound = Vec::new();
        for identity in identities {
            let mut argv = vec!["--tls-cert", self.tls.0.to_str().unwrap(), "--tls-key", self.tls.1.to_str().unwrap()];
            argv.extend_from_slice(flags);
            let args = serve_args(&argv);
            // The reconciler's flags as `serve` parsed them; the Lease's timings shortened (not flags).
            let config = ReconcilerConfig {
                stale_grace: args.reconciler.stale_grace,
                resync_interval: args.reconciler.resync_interval,
                lease: Some(LeaseConfig {
                    duration: Duration::from_secs(2),
                    renew_interval: Duration::from_millis(200),
                    retry_interval: Duration::from_millis(100),
                    ..LeaseConfig::new(OWN_NAMESPACE, identity)
                }),
            };
            let settings = Settings::new(
                Driver::Istio,
                Selector::parse(DEFAULT_MANAGED_SELECTOR).unwrap(),
                Some(OWN_NAMESPACE),
                &[],
            );
            let server = Server::bind(args, settings)
                .await
                .unwrap()
                .with_cluster(self.api.client_as(identity), fast_caches)
                .with_reconciler(config);
            bound.push((*identity, server));
        }
        let endpoints = bound.iter().map(|(_, server)| format!("https://{}", server.https_addr())).collect();
        self.api.admit(VIRTUAL_SERVICES, Webhooks { client: http1_client(&self.pki.ca_pem()), endpoints });
        let replicas: Vec<Replica> =
            bound.into_iter().map(|(identity, server)| Replica { identity, server: TestServer::run(server) }).collect();
        for replica in &replicas {
            assert!(within(CONVERGENCE, || replica.ready()).await, "{} never ready", replica.identity);
        }
        replicas
    }

    fn vs(&self, namespace: &str, name: &str) -> Value {
        self.api.get(&VIRTUAL_SERVICES, namespace, name).unwrap_or(Value::Null)
    }

    /// The PATCHes of VirtualServices received since request number `from`.
    fn vs_patches(&self, from: usize) -> Vec<Received> {
        self.api
            .received()
            .into_iter()
            .skip(from)
            .filter(|r| r.method == "PATCH" && r.uri.starts_with("/apis/networking.istio.io/"))
            .collect()
    }

    fn request_count(&self) -> usize {
        self.api.received().len()
    }

    fn lease_holder(&self) -> Option<String> {
        let lease = self.api.get(&LEASES, OWN_NAMESPACE, "divert-webhook")?;
        lease["spec"]["holderIdentity"].as_str().map(str::to_string)
    }
}

/// The apply configuration a PATCH sent (kube sends it as JSON, which is YAML).
fn apply_body(patch: &Received) -> Value {
    serde_saphyr::from_str(std::str::from_utf8(&patch.body).unwrap()).unwrap()
}

fn brief(patches: &[Received]) -> Vec<String> {
    patches.iter().map(|p| format!("{:?} {} {} ({})", p.user, p.method, p.uri, p.content_type)).collect()
}

/// Issue 9, acceptance 1–3 and §10.3: label a namespace, and the shared VirtualService gets its
/// entry, then its routes when the reconciler's patch comes back through admission; Services
/// created and deleted in the developer namespace change the entry; unlabelled or deleted, the
/// entry goes and the routes with it. The developer's own VirtualService gets the header
/// annotation, and loses it with the label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_namespace_gets_entries_and_routes_that_follow_its_services_and_go_with_it() {
    // `printf 'divert-webhook:cindy' | sha256sum` starts with these 40 hex.
    assert_eq!(entry_key("cindy"), "divert.okteto.com/556ce3f9eb9ddd35660e537569feb6938f5fd65c");
    let cluster = Cluster::new().await;
    let api = &cluster.api;
    api.put(namespace("staging", json!({})));
    api.put(namespace("cindy", json!({"team": "checkout"})));
    api.put(namespace("dave", json!({FROM: "staging"})));
    for (ns, name) in [("staging", "api"), ("staging", "web"), ("cindy", "api"), ("dave", "api")] {
        api.put(service(ns, name));
    }
    api.put(shared_vs("shop", &["api", "web"], json!({"team": "checkout"})));
    api.put(developer_vs("cindy"));
    let replicas = cluster.start(&["replica-a"], &[]).await;
    let shop = || cluster.vs("staging", "shop");

    // dave, labelled from the start, is diverted to for the Service he runs.
    let dave = entry_key("dave");
    let converged = within(CONVERGENCE, || {
        now(annotation(&shop(), &dave) == Some(&entry_value("dave", &["api"])) && clones(&shop()).len() == 1)
    })
    .await;
    assert!(converged, "{}", shop());
    check_clone(&shop(), "dave", "api");
    assert_eq!(annotation(&shop(), "team"), Some("checkout"), "others' annotations stay");
    // Not cindy, not yet: that round planned every object.
    assert_eq!(entries(&shop()), set(&[&dave]));
    assert_eq!(annotation(&cluster.vs("cindy", "web"), HEADER), None);

    // cindy is labelled.
    let before_label = cluster.request_count();
    api.put(namespace("cindy", json!({"team": "checkout", FROM: "staging"})));
    let cindy = entry_key("cindy");
    let converged = within(CONVERGENCE, || {
        now(annotation(&shop(), &cindy) == Some(&entry_value("cindy", &["api"]))
            && clones(&shop()) == set(&["okteto-divert-cindy-api", "okteto-divert-dave-api"]))
    })
    .await;
    assert!(converged, "{}", shop());
    check_clone(&shop(), "cindy", "api");
    check_clone(&shop(), "dave", "api");
    // The reconciler wrote annotations only (§10.2); the routes are admission's.
    let patches: Vec<Received> = cluster
        .vs_patches(before_label)
        .into_iter()
        .filter(|p| p.uri.contains("/staging/virtualservices/shop"))
        .collect();
    assert!(!patches.is_empty());
    for patch in &patches {
        assert_eq!(patch.user.as_deref(), Some("replica-a"));
        assert_eq!(patch.content_type, "application/apply-patch+yaml");
        assert_eq!(patch.field_manager(), Some("divert-webhook"));
        let body = apply_body(patch);
        assert_eq!(body["spec"], Value::Null, "no routes in the apply: {body}");
        assert_eq!(body["metadata"]["annotations"][&cindy], json!(entry_value("cindy", &["api"])), "{body}");
    }
    // §10.3: the developer's own VirtualService is annotated, and admission adds the header.
    let web = || cluster.vs("cindy", "web");
    let annotated = within(CONVERGENCE, || now(annotation(&web(), HEADER) == Some("cindy"))).await;
    assert!(annotated, "{}", web());
    assert_eq!(web()["spec"]["http"][0]["headers"]["request"]["add"]["baggage"], "okteto-divert=cindy", "{}", web());

    // cindy runs web too: the entry lists it, and web is diverted.
    api.put(service("cindy", "web"));
    let converged = within(CONVERGENCE, || {
        now(annotation(&shop(), &cindy) == Some(&entry_value("cindy", &["api", "web"]))
            && clones(&shop())
                == set(&["okteto-divert-cindy-api", "okteto-divert-cindy-web", "okteto-divert-dave-api"]))
    })
    .await;
    assert!(converged, "{}", shop());
    check_clone(&shop(), "cindy", "web");

    // ... and api no more.
    api.delete(&SERVICES, "cindy", "api");
    let converged = within(CONVERGENCE, || {
        now(annotation(&shop(), &cindy) == Some(&entry_value("cindy", &["web"]))
            && clones(&shop()) == set(&["okteto-divert-cindy-web", "okteto-divert-dave-api"]))
    })
    .await;
    assert!(converged, "{}", shop());

    // The label removed: cindy's entry and routes go, and the header annotation the reconciler
    // wrote, and with it the header.
    api.put(namespace("cindy", json!({"team": "checkout"})));
    let converged = within(CONVERGENCE, || {
        now(entries(&shop()) == set(&[&dave])
            && clones(&shop()) == set(&["okteto-divert-dave-api"])
            && annotation(&web(), HEADER).is_none()
            && web()["spec"]["http"][0].get("headers").is_none())
    })
    .await;
    assert!(converged, "{}\n{}", shop(), web());
    assert_eq!(web()["spec"], developer_vs("cindy")["spec"], "as it was before the label");

    // Labelled again, then she stops running web: no Service left that staging routes to.
    api.put(namespace("cindy", json!({FROM: "staging"})));
    let converged =
        within(CONVERGENCE, || now(annotation(&shop(), &cindy) == Some(&entry_value("cindy", &["web"])))).await;
    assert!(converged, "{}", shop());
    api.delete(&SERVICES, "cindy", "web");
    let converged = within(CONVERGENCE, || {
        now(entries(&shop()) == set(&[&dave]) && clones(&shop()) == set(&["okteto-divert-dave-api"]))
    })
    .await;
    assert!(converged, "{}", shop());

    // dave's namespace is deleted: his entry and routes go; shop is as it was written.
    api.delete(&NAMESPACES, "", "dave");
    let converged = within(CONVERGENCE, || now(entries(&shop()).is_empty() && clones(&shop()).is_empty())).await;
    assert!(converged, "{}", shop());
    assert_eq!(shop()["spec"], shared_vs("shop", &["api", "web"], json!({}))["spec"]);
    assert_eq!(annotation(&shop(), "team"), Some("checkout"));
    for replica in replicas {
        replica.server.stop().await;
    }
}

/// Issue 9, acceptance: an Okteto-CLI entry (someone else's, no `services`) naming a namespace
/// gone past `--stale-grace` is removed by a JSON patch that tests its value first (§10.5,
/// §10.6); one naming a namespace that exists is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_okteto_cli_entry_for_a_namespace_gone_past_the_grace_is_removed_and_others_stay() {
    const GRACE: Duration = Duration::from_millis(1500);
    let cluster = Cluster::new().await;
    let api = &cluster.api;
    for ns in ["staging", "bob", "erin"] {
        api.put(namespace(ns, json!({})));
        api.put(service(ns, "api"));
    }
    // Written by Okteto's CLI: the legacy key form for bob, a hash of its own for erin.
    let bob = "divert.okteto.com/bob-shop";
    let erin = "divert.okteto.com/0123456789abcdef0123456789abcdef01234567";
    let bob_value = r#"{"namespace":"bob"}"#;
    let erin_value = r#"{"namespace":"erin"}"#;
    api.put(shared_vs("shop", &["api"], json!({bob: bob_value, erin: erin_value})));
    let replicas = cluster.start(&["replica-a"], &["--stale-grace", "1500ms"]).await;
    let shop = || cluster.vs("staging", "shop");
    assert!(within(CONVERGENCE, || replicas[0].holds_lease()).await);

    api.delete(&NAMESPACES, "", "bob");
    let deleted = Instant::now();
    let removed = within(GRACE + CONVERGENCE, || now(annotation(&shop(), bob).is_none())).await;
    assert!(removed, "{}", shop());
    assert!(deleted.elapsed() >= GRACE, "removed {:?} after the deletion, before the grace", deleted.elapsed());
    assert_eq!(annotation(&shop(), erin), Some(erin_value), "erin exists: her entry stays");

    // One write: the JSON patch testing bob's value, by the reconciler.
    let patches = cluster.vs_patches(0);
    assert_eq!(patches.len(), 1, "{:?}", brief(&patches));
    let patch = &patches[0];
    assert_eq!(patch.user.as_deref(), Some("replica-a"));
    assert_eq!(patch.content_type, "application/json-patch+json");
    let path = "/metadata/annotations/divert.okteto.com~1bob-shop";
    assert_eq!(patch.json(), json!([{"op": "test", "path": path, "value": bob_value}, {"op": "remove", "path": path}]));
    // The patch came back through admission: erin's entry, without `services`, diverts what
    // erin runs (§10.4); bob has no routes.
    assert_eq!(clones(&shop()), set(&["okteto-divert-erin-api"]), "{}", shop());
    check_clone(&shop(), "erin", "api");
    for replica in replicas {
        replica.server.stop().await;
    }
}

/// Issue 9, acceptance: two replicas on one API; only the Lease holder writes, and once it stops
/// the other takes over (§10.7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_only_the_lease_holder_writes_and_the_other_takes_over_when_it_stops() {
    let cluster = Cluster::new().await;
    let api = &cluster.api;
    for ns in ["staging", "cindy", "dave"] {
        api.put(service(ns, "api"));
    }
    api.put(namespace("staging", json!({})));
    api.put(namespace("cindy", json!({FROM: "staging"})));
    api.put(namespace("dave", json!({})));
    api.put(shared_vs("shop", &["api"], json!({})));
    let replicas = cluster.start(&["replica-a", "replica-b"], &[]).await;
    let shop = || cluster.vs("staging", "shop");

    let mut holders = Vec::new();
    let one_holder = within(CONVERGENCE, || {
        let replicas = &replicas;
        async move {
            let mut held = Vec::new();
            for replica in replicas {
                if replica.holds_lease().await {
                    held.push(replica.identity);
                }
            }
            held.len() == 1
        }
    })
    .await;
    assert!(one_holder, "never exactly one holder");
    for replica in &replicas {
        if replica.holds_lease().await {
            holders.push(replica.identity);
        }
    }
    let holder = holders[0];
    assert_eq!(cluster.lease_holder().as_deref(), Some(holder));
    let cindy = entry_key("cindy");
    let converged = within(CONVERGENCE, || {
        now(annotation(&shop(), &cindy) == Some(&entry_value("cindy", &["api"])) && clones(&shop()).len() == 1)
    })
    .await;
    assert!(converged, "{}", shop());
    // Some Lease renewals later, still one holder, and every write was the holder's.
    let renewals = |who: &str| {
        cluster.api.received().iter().filter(|r| r.method == "PUT" && r.user.as_deref() == Some(who)).count()
    };
    let renewed_before = renewals(holder);
    assert!(within(CONVERGENCE, || now(renewals(holder) >= renewed_before + 3)).await);
    let patches = cluster.vs_patches(0);
    assert!(patches.iter().all(|p| p.user.as_deref() == Some(holder)), "{:?}", brief(&patches));
    let other = replicas.iter().find(|r| r.identity != holder).unwrap();
    assert!(!other.holds_lease().await);
    assert!(
        cluster.api.received().iter().any(|r| r.user.as_deref() == Some(other.identity) && r.uri.contains("/leases/")),
        "the other replica takes part in the election"
    );

    // The holder stops (SIGTERM): it frees the Lease, the other takes it and writes what
    // changes from then on.
    let other_identity = other.identity;
    let (stopping, staying): (Vec<Replica>, Vec<Replica>) = replicas.into_iter().partition(|r| r.identity == holder);
    let before_stop = cluster.request_count();
    for replica in stopping {
        replica.server.stop().await;
    }
    let stopped = cluster.request_count();
    let took_over = within(CONVERGENCE, || staying[0].holds_lease()).await;
    assert!(took_over, "{other_identity} never took the Lease over");
    assert_eq!(cluster.lease_holder().as_deref(), Some(other_identity));
    api.put(namespace("dave", json!({FROM: "staging"})));
    let dave = entry_key("dave");
    let converged = within(CONVERGENCE, || {
        now(annotation(&shop(), &dave) == Some(&entry_value("dave", &["api"])) && clones(&shop()).len() == 2)
    })
    .await;
    assert!(converged, "{}", shop());
    let patches = cluster.vs_patches(before_stop);
    assert!(!patches.is_empty());
    assert!(patches.iter().all(|p| p.user.as_deref() == Some(other_identity)), "{:?}", brief(&patches));
    let after_stop: Vec<String> = cluster.api.received()[stopped..]
        .iter()
        .filter(|r| r.user.as_deref() == Some(holder))
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect();
    assert!(after_stop.is_empty(), "the stopped replica sent {after_stop:?}");
    for replica in staying {
        replica.server.stop().await;
    }
}

/// Issue 9, acceptance: a reconcile after convergence writes nothing (§10.6). With a short
/// resync interval, several full reconciles pass over converged objects; a new VirtualService
/// is written once, and the others not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_converged_a_reconcile_writes_nothing() {
    let cluster = Cluster::new().await;
    let api = &cluster.api;
    api.put(namespace("staging", json!({})));
    api.put(namespace("cindy", json!({FROM: "staging"})));
    for ns in ["staging", "cindy"] {
        api.put(service(ns, "api"));
    }
    api.put(shared_vs("shop", &["api"], json!({})));
    api.put(developer_vs("cindy"));
    let replicas = cluster.start(&["replica-a"], &["--resync-interval", "300ms"]).await;
    let shop = || cluster.vs("staging", "shop");
    let web = || cluster.vs("cindy", "web");
    let converged = within(CONVERGENCE, || {
        now(clones(&shop()) == set(&["okteto-divert-cindy-api"]) && annotation(&web(), HEADER) == Some("cindy"))
    })
    .await;
    assert!(converged, "{}\n{}", shop(), web());
    let first = cluster.vs_patches(0);
    assert_eq!(first.len(), 2, "one write per object: {:?}", brief(&first));

    // A quiet period of several resyncs: nothing is written.
    let quiet_from = cluster.request_count();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(cluster.vs_patches(quiet_from).len(), 0, "{:?}", brief(&cluster.vs_patches(quiet_from)));

    // A new shared VirtualService: that one is written, once; shop and web are not touched.
    let (shop_version, web_version) =
        (shop()["metadata"]["resourceVersion"].clone(), web()["metadata"]["resourceVersion"].clone());
    api.put(shared_vs("cart", &["api"], json!({})));
    let cart = || cluster.vs("staging", "cart");
    let converged = within(CONVERGENCE, || now(clones(&cart()) == set(&["okteto-divert-cindy-api"]))).await;
    assert!(converged, "{}", cart());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let patches = cluster.vs_patches(quiet_from);
    let written: Vec<&str> = patches.iter().map(|p| p.uri.split('?').next().unwrap()).collect();
    assert_eq!(
        written,
        ["/apis/networking.istio.io/v1/namespaces/staging/virtualservices/cart"],
        "{:?}",
        brief(&patches)
    );
    assert_eq!(shop()["metadata"]["resourceVersion"], shop_version);
    assert_eq!(web()["metadata"]["resourceVersion"], web_version);
    for replica in replicas {
        replica.server.stop().await;
    }
}

/// A developer namespace deleted while the watches were down leaves no DELETED event: the
/// caches' re-list (after `410 Gone`) drops it, and its entry and routes go all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_deleted_during_a_watch_outage_loses_its_entry_after_the_relist() {
    let cluster = Cluster::new().await;
    let api = &cluster.api;
    api.put(namespace("staging", json!({})));
    api.put(namespace("dave", json!({FROM: "staging"})));
    for ns in ["staging", "dave"] {
        api.put(service(ns, "api"));
    }
    api.put(shared_vs("shop", &["api"], json!({})));
    let replicas = cluster.start(&["replica-a"], &[]).await;
    let shop = || cluster.vs("staging", "shop");
    let converged = within(CONVERGENCE, || now(clones(&shop()) == set(&["okteto-divert-dave-api"]))).await;
    assert!(converged, "{}", shop());

    let namespace_lists = || {
        let requests = cluster.api.requests();
        requests.iter().filter(|r| r.starts_with("GET /api/v1/namespaces?") && !r.contains("watch=true")).count()
    };
    let lists_before = namespace_lists();
    // Only the namespace: its Service, still listed, must not keep it a developer namespace.
    api.remove_silently(&NAMESPACES, "", "dave");
    api.compact();
    api.drop_watches();
    let converged = within(CONVERGENCE, || now(entries(&shop()).is_empty() && clones(&shop()).is_empty())).await;
    assert!(converged, "{}", shop());
    assert!(namespace_lists() > lists_before, "the namespaces were listed again");
    for replica in replicas {
        replica.server.stop().await;
    }
}
