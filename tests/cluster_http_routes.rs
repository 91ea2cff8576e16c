//! The reconciler's own objects (SPEC §11.1–§11.3) in a cluster: the watch caches, the loop and
//! the writer against the kube client, with the Kubernetes API faked at the HTTP level
//! (tests/fake_api: real list/watch JSON, server-side apply that creates, deletions with a uid
//! precondition). Developer HTTPRoutes (both API groups) and ReferenceGrants appear, follow the
//! developers' Services and vanish; a route deleted by hand comes back; a shared route deleted
//! takes its developer routes with it (the fake has no garbage collector: the reconciler deletes
//! them itself); a reconcile with nothing to change writes nothing; someone else's object in the
//! way is left alone and counted; nothing is written without the Lease.

mod fake_api;

use std::sync::Arc;
use std::time::Duration;

use divert_webhook::cluster::ClusterSnapshot;
use divert_webhook::cluster::caches::{self, CacheMetrics, CacheOptions, Caches};
use divert_webhook::cluster::http_routes;
use divert_webhook::cluster::lease::LeaseConfig;
use divert_webhook::cluster::reconciler::{self, ReconcilerConfig};
use divert_webhook::cluster::writer::ReconcilerMetrics;
use divert_webhook::settings::{Driver, Settings};
use fake_api::{FakeApi, HTTP_ROUTES, LEASES, LINKERD_HTTP_ROUTES, REFERENCE_GRANTS, SERVICES, all_resources};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::watch;

const FROM: &str = "divert.okteto.com/from";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

fn namespace(name: &str, from: Option<&str>) -> Value {
    let labels = from.map_or(json!({}), |from| json!({FROM: from}));
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// A Service as the apiserver stores it: selector, cluster IP and named ports besides the numbers.
fn service(namespace: &str, name: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
           "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.10", "selector": {"app": name},
                    "ports": [{"name": "http", "port": port, "targetPort": 8000, "protocol": "TCP"}]}})
}

/// `staging/api` (Gateway API): `/api/v2` to api-v2, the rest 90/10 to api and api-v2.
fn api_route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "api", "namespace": "staging", "creationTimestamp": "2026-11-30T09:00:00Z"},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "api", "port": 8080}],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/api/v2"}}],
                 "backendRefs": [{"name": "api-v2", "port": 8080}]},
                {"backendRefs": [{"name": "api", "port": 8080, "weight": 90}, {"name": "api-v2", "port": 8080, "weight": 10}]},
            ],
        },
    })
}

/// `staging/web` (Linkerd's `policy.linkerd.io`), all to web.
fn web_route() -> Value {
    json!({
        "apiVersion": "policy.linkerd.io/v1beta3", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "staging", "creationTimestamp": "2026-11-30T10:00:00Z"},
        "spec": {
            "parentRefs": [{"group": "core", "kind": "Service", "name": "web", "port": 80}],
            "rules": [{"backendRefs": [{"name": "web", "port": 80}]}],
        },
    })
}

/// Short timings, so that the tests wait little.
fn fast() -> CacheOptions {
    CacheOptions { rebuild_delay: Duration::from_millis(20), discovery_interval: Duration::from_millis(300) }
}

/// The caches and the reconciler of one replica, on the fake API.
struct Replica {
    caches: Caches,
    metrics: ReconcilerMetrics,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Replica {
    fn start(api: &FakeApi, settings: Settings, lease: Option<LeaseConfig>) -> Replica {
        let mut registry = Registry::with_prefix("divert_webhook");
        let caches = caches::start(api.client(), CacheMetrics::register(&mut registry), fast(), true);
        let metrics = ReconcilerMetrics::register(&mut registry);
        let config =
            ReconcilerConfig { stale_grace: Duration::from_secs(60), resync_interval: Duration::from_secs(300), lease };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(reconciler::run(
            api.client(),
            caches.snapshots(),
            Arc::new(settings),
            config,
            metrics.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Replica { caches, metrics, stop: Some(stop), task }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|stop| stop.send(()));
        (&mut self.task).await.unwrap();
    }
}

fn nginx() -> Settings {
    Settings { driver: Driver::Nginx, gateway_api: true, ..Settings::default() }
}

/// Waits (at most 20 s) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
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
    let wait = snapshots.wait_for(|s| s.as_deref().is_some_and(&holds));
    let snapshot = tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("no snapshot with {what}"))
        .unwrap();
    snapshot.clone().unwrap()
}

/// The requests that write the reconciler's own objects.
fn owned_writes(api: &FakeApi) -> Vec<String> {
    api.requests()
        .into_iter()
        .filter(|r| {
            (r.starts_with("PATCH ") || r.starts_with("DELETE ") || r.starts_with("POST "))
                && (r.contains("/httproutes/") || r.contains("/referencegrants/"))
        })
        .collect()
}

fn names(api: &FakeApi, resource: &fake_api::Resource, namespace: &str) -> Vec<String> {
    ["api", "api-v2", "web", "db"]
        .into_iter()
        .map(|base| format!("{base}-divert-cindy"))
        .chain([http_routes::REFERENCE_GRANT_NAME.to_string()])
        .filter(|name| api.get(resource, namespace, name).is_some())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn developer_routes_and_grants_follow_the_developers_and_their_services() {
    let mut served = all_resources();
    served.push(LINKERD_HTTP_ROUTES);
    let api = FakeApi::start(served).await;
    api.put(namespace("staging", None));
    api.put(namespace("cindy", Some("staging")));
    for (name, port) in [("api", 8080), ("api-v2", 8080), ("web", 80), ("db", 5432)] {
        api.put(service("staging", name, port));
    }
    api.put(service("cindy", "api", 8080));
    let shared_api = api.put(api_route());
    api.put(web_route());
    let replica = Replica::start(&api, nginx(), None);

    // cindy runs api: its developer route and her grant appear.
    eventually("api-divert-cindy and the grant", || {
        api.get(&HTTP_ROUTES, "staging", "api-divert-cindy").is_some()
            && api.get(&REFERENCE_GRANTS, "cindy", "divert-webhook").is_some()
    })
    .await;
    let route = api.get(&HTTP_ROUTES, "staging", "api-divert-cindy").unwrap();
    assert_eq!(route["metadata"]["labels"][MANAGED_BY], "divert-webhook");
    assert_eq!(
        route["metadata"]["ownerReferences"],
        json!([{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "name": "api",
                "uid": shared_api["metadata"]["uid"], "controller": true}])
    );
    assert_eq!(route["spec"]["parentRefs"], api_route()["spec"]["parentRefs"]);
    assert_eq!(
        route["spec"]["rules"][1]["backendRefs"],
        json!([{"name": "api", "port": 8080, "namespace": "cindy", "weight": 90}, {"name": "api-v2", "port": 8080, "weight": 10}])
    );
    assert_eq!(route["spec"]["rules"][0]["backendRefs"], json!([{"name": "api-v2", "port": 8080}]), "not run by cindy");
    assert_eq!(route["spec"]["rules"][0]["matches"][0]["headers"], json!([http_routes::baggage_match("cindy")]));
    let grant = api.get(&REFERENCE_GRANTS, "cindy", "divert-webhook").unwrap();
    assert_eq!(grant["metadata"]["labels"][MANAGED_BY], "divert-webhook");
    assert_eq!(
        grant["spec"]["from"],
        json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "staging"}])
    );
    assert_eq!(names(&api, &LINKERD_HTTP_ROUTES, "staging"), Vec::<String>::new(), "cindy runs no web");
    assert!(api.get(&HTTP_ROUTES, "staging", "db-divert-cindy").is_none(), "cindy runs no db");
    assert_eq!(api.get(&HTTP_ROUTES, "staging", "api").unwrap(), shared_api, "the shared route is untouched");
    // Created by server-side apply with the webhook's field manager.
    let writes = owned_writes(&api);
    assert!(writes.iter().all(|w| w.starts_with("PATCH ") && w.contains("fieldManager=divert-webhook")), "{writes:?}");

    // She starts web, db and api-v2: the Linkerd route, the routes of db and api-v2 (Services
    // no route is attached to: §11.2, on their ports as the Service cache read them), api-v2
    // moved in api's route, and a grant for both API groups.
    api.put(service("cindy", "web", 80));
    api.put(service("cindy", "db", 5432));
    api.put(service("cindy", "api-v2", 8080));
    eventually("web's and db's developer routes", || {
        api.get(&LINKERD_HTTP_ROUTES, "staging", "web-divert-cindy").is_some()
            && api.get(&HTTP_ROUTES, "staging", "db-divert-cindy").is_some()
            && api.get(&HTTP_ROUTES, "staging", "api-v2-divert-cindy").is_some()
            && api.get(&REFERENCE_GRANTS, "cindy", "divert-webhook").unwrap()["spec"]["from"].as_array().unwrap().len()
                == 2
            && api.get(&HTTP_ROUTES, "staging", "api-divert-cindy").unwrap()["spec"]["rules"][0]["backendRefs"]
                == json!([{"name": "api-v2", "port": 8080, "namespace": "cindy"}])
    })
    .await;
    let web = api.get(&LINKERD_HTTP_ROUTES, "staging", "web-divert-cindy").unwrap();
    assert_eq!(web["metadata"]["ownerReferences"][0]["apiVersion"], "policy.linkerd.io/v1beta3");
    assert_eq!(web["spec"]["rules"][0]["backendRefs"], json!([{"name": "web", "port": 80, "namespace": "cindy"}]));
    let db = api.get(&HTTP_ROUTES, "staging", "db-divert-cindy").unwrap();
    assert_eq!(db["spec"]["parentRefs"], json!([{"group": "", "kind": "Service", "name": "db", "port": 5432}]));
    assert_eq!(db["spec"]["rules"][0]["backendRefs"], json!([{"name": "db", "namespace": "cindy", "port": 5432}]));
    assert_eq!(db["spec"]["rules"][1]["backendRefs"], json!([{"name": "db", "port": 5432}]));

    // Once the caches show every write, a reconcile has nothing to do and writes nothing: a
    // new snapshot (an unrelated namespace) plans again and sends no request.
    let mut snapshots = replica.caches.snapshots();
    snapshot_where(&mut snapshots, "the writes", |s| http_routes::plan(&s.state, &nginx()).changes.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = owned_writes(&api).len();
    let writes_before = replica.metrics.writes("HTTPRoute") + replica.metrics.writes("ReferenceGrant");
    api.put(namespace("unrelated", None));
    snapshot_where(&mut snapshots, "the unrelated namespace", |s| s.state.view.namespace("unrelated").is_some()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(owned_writes(&api).len(), before, "{:?}", &owned_writes(&api)[before..]);
    assert_eq!(replica.metrics.writes("HTTPRoute") + replica.metrics.writes("ReferenceGrant"), writes_before);
    assert!(writes_before >= 7, "four routes, a grant, its update and api's route's: {writes_before}");

    // A developer route deleted by hand comes back (a new object: a new uid).
    let old_uid = api.get(&HTTP_ROUTES, "staging", "api-divert-cindy").unwrap()["metadata"]["uid"].clone();
    api.delete(&HTTP_ROUTES, "staging", "api-divert-cindy");
    eventually("api-divert-cindy made again", || {
        api.get(&HTTP_ROUTES, "staging", "api-divert-cindy").is_some_and(|r| r["metadata"]["uid"] != old_uid)
    })
    .await;

    // An edit by hand is undone (the webhook owns every field of its routes).
    let mut edited = api.get(&HTTP_ROUTES, "staging", "api-divert-cindy").unwrap();
    edited["spec"]["rules"][1]["backendRefs"][0]["port"] = json!(9999);
    api.put(edited);
    eventually("the edit undone", || {
        api.get(&HTTP_ROUTES, "staging", "api-divert-cindy").unwrap()["spec"]["rules"][1]["backendRefs"][0]["port"]
            == 8080
    })
    .await;

    // She stops running web: its developer route goes, the grant keeps only the Gateway API group.
    api.delete(&SERVICES, "cindy", "web");
    eventually("web-divert-cindy gone", || {
        api.get(&LINKERD_HTTP_ROUTES, "staging", "web-divert-cindy").is_none()
            && api.get(&REFERENCE_GRANTS, "cindy", "divert-webhook").unwrap()["spec"]["from"].as_array().unwrap().len()
                == 1
    })
    .await;

    // cindy stops being a developer namespace: everything the reconciler made for her vanishes.
    api.put(namespace("cindy", None));
    eventually("everything of cindy's gone", || {
        names(&api, &HTTP_ROUTES, "staging").is_empty()
            && names(&api, &LINKERD_HTTP_ROUTES, "staging").is_empty()
            && names(&api, &REFERENCE_GRANTS, "cindy").is_empty()
    })
    .await;
    assert_eq!(replica.metrics.errors(), 0);
    assert_eq!(replica.metrics.route_problems(), 0);
    replica.stop().await;
}

/// An object of a name the reconciler needs that is not the webhook's (no managed-by label) is
/// never written over: the reconcile counts it in `divert_webhook_reconcile_route_problems` and
/// makes the rest. A shared route deleted takes its developer route with it (the shared
/// Service is a headless one without ports here, so §11.2 makes no route of its own for it once
/// no route is attached: a problem line instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_elses_object_in_the_way_is_left_alone_and_a_shared_route_takes_its_own_along() {
    let api = FakeApi::start(all_resources()).await;
    api.put(namespace("staging", None));
    api.put(namespace("cindy", Some("staging")));
    api.put(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "staging"},
                   "spec": {"clusterIP": "None", "selector": {"app": "api"}}}));
    api.put(service("cindy", "api", 8080));
    api.put(api_route());
    let theirs = api.put(json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "divert-webhook", "namespace": "cindy"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "elsewhere"}],
                 "to": [{"group": "", "kind": "Service"}]},
    }));
    let replica = Replica::start(&api, Settings { gateway_api: true, ..Settings::default() }, None);
    eventually("api-divert-cindy", || api.get(&HTTP_ROUTES, "staging", "api-divert-cindy").is_some()).await;
    eventually("the problem counted", || replica.metrics.route_problems() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.get(&REFERENCE_GRANTS, "cindy", "divert-webhook").unwrap(), theirs, "never written over");
    assert!(owned_writes(&api).iter().all(|w| !w.contains("/referencegrants/")), "{:?}", owned_writes(&api));

    // Once they delete theirs, the reconciler makes its own.
    api.delete(&REFERENCE_GRANTS, "cindy", "divert-webhook");
    eventually("the webhook's grant", || {
        api.get(&REFERENCE_GRANTS, "cindy", "divert-webhook")
            .is_some_and(|g| g["metadata"]["labels"][MANAGED_BY] == "divert-webhook")
    })
    .await;
    eventually("no problem left", || replica.metrics.route_problems() == 0).await;

    // The shared route deleted takes its developer route with it; the grant, needed by no route
    // any more, goes too. (The fake has no garbage collector: the plan deletes them.)
    api.delete(&HTTP_ROUTES, "staging", "api");
    eventually("api-divert-cindy and the grant gone with api", || {
        api.get(&HTTP_ROUTES, "staging", "api-divert-cindy").is_none()
            && api.get(&REFERENCE_GRANTS, "cindy", "divert-webhook").is_none()
    })
    .await;
    let writes = owned_writes(&api);
    assert!(
        writes
            .iter()
            .any(|w| w.starts_with("DELETE ") && w.trim_end_matches('?').ends_with("/httproutes/api-divert-cindy")),
        "{writes:?}"
    );
    assert_eq!(replica.metrics.errors(), 0);
    replica.stop().await;
}

/// SPEC §10.7 for §11: while another replica holds the Lease nothing is written; once the Lease
/// lapses, this replica takes it and makes the routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_written_only_while_holding_the_lease() {
    let api = FakeApi::start(all_resources()).await;
    api.put(namespace("staging", None));
    api.put(namespace("cindy", Some("staging")));
    api.put(service("staging", "api", 8080));
    api.put(service("cindy", "api", 8080));
    api.put(api_route());
    // Held by replica-b, which renews it (every change restarts replica-a's count of its
    // duration, measured by replica-a's own clock) until told to stop.
    let lease_object = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "divert-webhook", "namespace": "divert-system"},
        "spec": {"holderIdentity": "replica-b", "leaseDurationSeconds": 2},
    });
    api.put(lease_object.clone());
    let api = Arc::new(api);
    let renewing = {
        let api = api.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                api.put(lease_object.clone());
            }
        })
    };
    let lease = LeaseConfig {
        duration: Duration::from_secs(2),
        renew_interval: Duration::from_millis(300),
        retry_interval: Duration::from_millis(200),
        ..LeaseConfig::new("divert-system", "replica-a")
    };
    let replica = Replica::start(&api, Settings { gateway_api: true, ..Settings::default() }, Some(lease));
    let mut snapshots = replica.caches.snapshots();
    snapshot_where(&mut snapshots, "the shared route", |s| !s.state.http_routes.is_empty()).await;
    // Past one duration of the Lease: replica-a has been trying all along.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(owned_writes(&api), Vec::<String>::new(), "replica-b holds the Lease");
    assert!(api.get(&HTTP_ROUTES, "staging", "api-divert-cindy").is_none());

    // replica-b stops renewing: once the Lease lapses, replica-a takes it and writes.
    renewing.abort();
    eventually("replica-a holds the Lease and writes", || {
        api.get(&HTTP_ROUTES, "staging", "api-divert-cindy").is_some()
    })
    .await;
    assert_eq!(api.get(&LEASES, "divert-system", "divert-webhook").unwrap()["spec"]["holderIdentity"], "replica-a");
    replica.stop().await;
}
