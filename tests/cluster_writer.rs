//! The reconciler's writer, its loop and the Lease (SPEC §10.5–§10.7) against the kube client,
//! with the Kubernetes API faked at the HTTP level: a tower service that answers what the
//! apiserver answers for the requests they make (GET, POST, PUT with resourceVersion,
//! server-side apply of annotations, JSON patch with `test`), records every request, and can be
//! told to fail or hang.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use divert_webhook::cluster::ClusterSnapshot;
use divert_webhook::cluster::lease::{Elector, Leadership, LeaseConfig};
use divert_webhook::cluster::reconcile::{self, Absence, FIELD_MANAGER, ObjectChanges, entry_annotation};
use divert_webhook::cluster::reconciler::{self, ReconcilerConfig};
use divert_webhook::cluster::state::{ClusterState, from_dump};
use divert_webhook::cluster::writer::{ReconcilerMetrics, WriteOutcome, Writer};
use divert_webhook::settings::Settings;
use http_body_util::BodyExt as _;
use hyper::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::watch;

const VS_PATH: &str = "/apis/networking.istio.io/v1/namespaces/staging/virtualservices";

#[derive(Clone, Debug)]
struct Recorded {
    /// Which client sent it.
    who: &'static str,
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

/// A failure to answer instead of doing the request: the first request matching `method` and
/// a path ending in `path_suffix` gets `code`.
struct Injected {
    method: &'static str,
    path_suffix: String,
    code: u16,
    message: String,
}

type RequestHook = Box<dyn Fn(&Recorded) + Send>;

#[derive(Default)]
struct FakeState {
    objects: BTreeMap<String, Value>,
    requests: Vec<Recorded>,
    injected: VecDeque<Injected>,
    /// Clients whose requests are never answered (the API unreachable for them).
    partitioned: Vec<&'static str>,
    /// Called with each request before it is answered (a test's way of changing the world then).
    on_request: Option<RequestHook>,
    resource_version: u64,
}

#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<FakeState>>);

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

impl FakeApi {
    /// A kube client whose requests this fake answers, recorded as sent by `who`.
    fn client(&self, who: &'static str) -> Client {
        let fake = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.handle(who, request).await) }
        });
        Client::new(service, "default")
    }

    fn put_object(&self, path: &str, mut object: Value) {
        let mut state = self.0.lock().unwrap();
        state.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
        state.objects.insert(path.to_string(), object);
    }

    fn object(&self, path: &str) -> Option<Value> {
        self.0.lock().unwrap().objects.get(path).cloned()
    }

    fn requests(&self) -> Vec<Recorded> {
        self.0.lock().unwrap().requests.clone()
    }

    /// Requests that change VirtualServices (the reconciler's writes).
    fn writes(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method == "PATCH" && r.path.starts_with(VS_PATH)).collect()
    }

    fn inject(&self, method: &'static str, path_suffix: &str, code: u16, message: &str) {
        self.0.lock().unwrap().injected.push_back(Injected {
            method,
            path_suffix: path_suffix.to_string(),
            code,
            message: message.to_string(),
        });
    }

    fn on_request(&self, hook: impl Fn(&Recorded) + Send + 'static) {
        self.0.lock().unwrap().on_request = Some(Box::new(hook));
    }

    fn partition(&self, who: &'static str) {
        self.0.lock().unwrap().partitioned.push(who);
    }

    fn virtual_services(&self) -> Vec<Value> {
        let state = self.0.lock().unwrap();
        state.objects.iter().filter(|(path, _)| path.starts_with(VS_PATH)).map(|(_, o)| o.clone()).collect()
    }

    async fn handle(&self, who: &'static str, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let recorded = Recorded {
            who,
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            content_type: parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        };
        if self.0.lock().unwrap().partitioned.contains(&who) {
            std::future::pending::<()>().await;
        }
        let (code, body) = self.answer(recorded);
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    fn answer(&self, request: Recorded) -> (u16, Value) {
        let mut state = self.0.lock().unwrap();
        if let Some(hook) = &state.on_request {
            hook(&request);
        }
        state.requests.push(request.clone());
        if let Some(index) =
            state.injected.iter().position(|i| i.method == request.method && request.path.ends_with(&i.path_suffix))
        {
            let injected = state.injected.remove(index).unwrap();
            let reason = match injected.code {
                403 => "Forbidden",
                409 => "Conflict",
                422 => "Invalid",
                _ => "BadRequest",
            };
            return status(injected.code, reason, &injected.message);
        }
        let path = request.path.clone();
        let not_found = || status(404, "NotFound", &format!("{path} not found"));
        state.resource_version += 1;
        let version = state.resource_version.to_string();
        match request.method.as_str() {
            "GET" => state.objects.get(&path).map_or_else(not_found, |o| (200, o.clone())),
            "POST" => {
                let name = request.body["metadata"]["name"].as_str().unwrap_or_default();
                let key = format!("{path}/{name}");
                if state.objects.contains_key(&key) {
                    return status(409, "AlreadyExists", &format!("{key} already exists"));
                }
                let mut object = request.body.clone();
                object["metadata"]["resourceVersion"] = json!(version);
                state.objects.insert(key, object.clone());
                (201, object)
            }
            "PUT" => {
                let Some(stored) = state.objects.get(&path) else { return not_found() };
                if stored["metadata"]["resourceVersion"] != request.body["metadata"]["resourceVersion"] {
                    return status(
                        409,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    );
                }
                let mut object = request.body.clone();
                object["metadata"]["resourceVersion"] = json!(version);
                state.objects.insert(path, object.clone());
                (200, object)
            }
            "PATCH" => {
                let Some(stored) = state.objects.get_mut(&path) else { return not_found() };
                let result = match request.content_type.as_str() {
                    "application/apply-patch+yaml" => {
                        server_side_apply(stored, &request.body, &field_manager(&request.query));
                        Ok(())
                    }
                    "application/json-patch+json" => {
                        let patch: json_patch::Patch = serde_json::from_value(request.body.clone()).unwrap();
                        let mut patched = stored.clone();
                        json_patch::patch(&mut patched, &patch).map(|()| *stored = patched)
                    }
                    other => panic!("unexpected patch type {other}"),
                };
                match result {
                    Ok(()) => {
                        stored["metadata"]["resourceVersion"] = json!(version);
                        (200, stored.clone())
                    }
                    Err(error) => status(422, "Invalid", &error.to_string()),
                }
            }
            other => panic!("unexpected method {other}"),
        }
    }
}

fn field_manager(query: &str) -> String {
    query.split('&').find_map(|p| p.strip_prefix("fieldManager=")).unwrap_or_default().to_string()
}

/// What the apiserver does with a server-side apply of annotations: sets those applied, removes
/// those the manager applied before and leaves out now, and records what it owns.
fn server_side_apply(stored: &mut Value, configuration: &Value, manager: &str) {
    let applied = configuration["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
    let managed = stored["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
    let before: Vec<String> = managed
        .iter()
        .filter(|m| m["manager"] == manager)
        .flat_map(|m| m["fieldsV1"]["f:metadata"]["f:annotations"].as_object().cloned().unwrap_or_default())
        .map(|(field, _)| field.trim_start_matches("f:").to_string())
        .collect();
    let annotations = stored["metadata"]
        .as_object_mut()
        .unwrap()
        .entry("annotations")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .unwrap();
    for annotation in before.iter().filter(|a| !applied.contains_key(*a)) {
        annotations.remove(annotation);
    }
    for (annotation, value) in &applied {
        annotations.insert(annotation.clone(), value.clone());
    }
    let fields: serde_json::Map<String, Value> = applied.keys().map(|a| (format!("f:{a}"), json!({}))).collect();
    let mut managed: Vec<Value> = managed.into_iter().filter(|m| m["manager"] != manager).collect();
    managed.push(json!({"manager": manager, "operation": "Apply", "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:metadata": {"f:annotations": fields}}}));
    stored["metadata"]["managedFields"] = Value::Array(managed);
}

/// staging runs api and web; cindy (a developer namespace of staging) runs api; the
/// VirtualServices `names` of staging route to api.
fn cluster(names: &[&str], extra_annotations: Value) -> ClusterState {
    let mut dump = String::from(
        "apiVersion: v1\nkind: List\nitems:\n\
         - {apiVersion: v1, kind: Namespace, metadata: {name: staging}}\n\
         - {apiVersion: v1, kind: Namespace, metadata: {name: cindy, labels: {divert.okteto.com/from: staging}}}\n\
         - {apiVersion: v1, kind: Service, metadata: {name: api, namespace: staging}}\n\
         - {apiVersion: v1, kind: Service, metadata: {name: web, namespace: staging}}\n\
         - {apiVersion: v1, kind: Service, metadata: {name: api, namespace: cindy}}\n",
    );
    for name in names {
        dump.push_str(&format!(
            "- apiVersion: networking.istio.io/v1\n  kind: VirtualService\n  metadata: {{name: {name}, namespace: staging, annotations: {extra_annotations}}}\n  spec:\n    hosts: [{name}.example.com]\n    http:\n    - name: api\n      route:\n      - destination: {{host: api}}\n"
        ));
    }
    from_dump(&dump).unwrap().0
}

/// The fake holds the state's VirtualServices as stored objects.
fn fake_with(state: &ClusterState) -> FakeApi {
    let fake = FakeApi::default();
    for object in &state.virtual_services {
        fake.put_object(&format!("{VS_PATH}/{}", object["metadata"]["name"].as_str().unwrap()), object.clone());
    }
    fake
}

fn snapshot(state: ClusterState, gone_since: BTreeMap<String, Instant>, watched_for: Duration) -> Arc<ClusterSnapshot> {
    Arc::new(ClusterSnapshot { state, gone_since, watching_since: Instant::now() - watched_for })
}

/// The state with the VirtualServices as the fake stores them now (what the next snapshot shows).
fn state_from_fake(mut state: ClusterState, fake: &FakeApi) -> ClusterState {
    state.virtual_services = fake.virtual_services();
    state
}

fn replan_with<'a>(
    state: &'a ClusterState,
    settings: &'a Settings,
) -> impl Fn(&Value) -> Option<ObjectChanges> + Sync + 'a {
    move |fresh: &Value| {
        let mut single = ClusterState { view: state.view.clone(), ..ClusterState::default() };
        single.virtual_services.push(fresh.clone());
        reconcile::plan(&single, settings, &Absence::offline(Duration::ZERO)).into_iter().next()
    }
}

fn cindy_entry() -> (String, String) {
    (entry_annotation("cindy"), r#"{"namespace":"cindy","services":["api"]}"#.to_string())
}

/// Waits until `condition` holds, for at most `limit`.
async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

#[tokio::test]
async fn the_writer_applies_only_the_webhooks_annotations_with_its_field_manager() {
    let state = cluster(&["shop"], json!({"team": "checkout"}));
    let settings = Settings::default();
    let plan = reconcile::plan(&state, &settings, &Absence::offline(Duration::ZERO));
    assert_eq!(plan.len(), 1, "{plan:?}");
    let fake = fake_with(&state);
    let metrics = ReconcilerMetrics::default();
    let writer = Writer::new(fake.client("a"), metrics.clone(), Leadership::always());

    let outcome = writer.write(&plan[0], &replan_with(&state, &settings)).await;

    assert_eq!(outcome, WriteOutcome::Written);
    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let apply = &requests[0];
    assert_eq!((apply.method.as_str(), apply.path.as_str()), ("PATCH", &*format!("{VS_PATH}/shop")));
    assert_eq!(apply.content_type, "application/apply-patch+yaml");
    assert_eq!(field_manager(&apply.query), FIELD_MANAGER);
    assert!(!apply.query.contains("force=true"), "never forced: {}", apply.query);
    let (key, value) = cindy_entry();
    assert_eq!(
        apply.body,
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
               "metadata": {"name": "shop", "namespace": "staging", "annotations": {key.clone(): value.clone()}}}),
        "only the webhook's own annotations, nothing else of the object"
    );
    let stored = fake.object(&format!("{VS_PATH}/shop")).unwrap();
    assert_eq!(stored["metadata"]["annotations"][&key], json!(value));
    assert_eq!(stored["metadata"]["annotations"]["team"], json!("checkout"), "someone else's annotation kept");
    assert_eq!((metrics.writes("VirtualService"), metrics.errors()), (1, 0));
}

#[tokio::test]
async fn a_stale_entry_of_someone_else_goes_by_a_json_patch_that_tests_it_first() {
    let bob = "divert.okteto.com/bob-shop";
    let state = cluster(&["shop"], json!({bob: r#"{"namespace":"gone"}"#}));
    let settings = Settings::default();
    // cindy's entry (apply) and bob's, naming a namespace gone past the grace (JSON patch).
    let plan = reconcile::plan(&state, &settings, &Absence::offline(Duration::ZERO));
    let fake = fake_with(&state);
    let metrics = ReconcilerMetrics::default();
    let writer = Writer::new(fake.client("a"), metrics.clone(), Leadership::always());

    assert_eq!(writer.write(&plan[0], &replan_with(&state, &settings)).await, WriteOutcome::Written);

    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].content_type, "application/apply-patch+yaml");
    let (key, _) = cindy_entry();
    assert_eq!(
        requests[0].body["metadata"]["annotations"].as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![&key],
        "the apply holds no one else's annotation"
    );
    let patch = &requests[1];
    assert_eq!((patch.method.as_str(), patch.content_type.as_str()), ("PATCH", "application/json-patch+json"));
    assert_eq!(
        patch.body,
        json!([{"op": "test", "path": "/metadata/annotations/divert.okteto.com~1bob-shop", "value": r#"{"namespace":"gone"}"#},
               {"op": "remove", "path": "/metadata/annotations/divert.okteto.com~1bob-shop"}])
    );
    let stored = fake.object(&format!("{VS_PATH}/shop")).unwrap();
    assert!(stored["metadata"]["annotations"].get(bob).is_none(), "{stored}");
    assert_eq!((metrics.writes("VirtualService"), metrics.errors()), (2, 0));
}

#[tokio::test]
async fn an_entry_changed_meanwhile_fails_the_test_and_is_left_alone() {
    let bob = "divert.okteto.com/bob-shop";
    let state = cluster(&["shop"], json!({bob: r#"{"namespace":"gone"}"#}));
    let settings = Settings::default();
    let plan = reconcile::plan(&state, &settings, &Absence::offline(Duration::ZERO));
    let fake = fake_with(&state);
    // Since the snapshot, bob pointed the entry at cindy, a namespace that exists.
    let mut changed = state.virtual_services[0].clone();
    changed["metadata"]["annotations"][bob] = json!(r#"{"namespace":"cindy"}"#);
    fake.put_object(&format!("{VS_PATH}/shop"), changed);
    let metrics = ReconcilerMetrics::default();
    let writer = Writer::new(fake.client("a"), metrics.clone(), Leadership::always());

    let outcome = writer.write(&plan[0], &replan_with(&state, &settings)).await;

    let requests = fake.requests();
    let methods: Vec<(&str, &str)> = requests.iter().map(|r| (r.method.as_str(), r.content_type.as_str())).collect();
    // apply, the JSON patch whose test fails, a fresh read: nothing is left to write.
    assert_eq!(
        methods,
        [("PATCH", "application/apply-patch+yaml"), ("PATCH", "application/json-patch+json"), ("GET", "")],
        "{requests:?}"
    );
    assert_eq!(outcome, WriteOutcome::Unneeded);
    let stored = fake.object(&format!("{VS_PATH}/shop")).unwrap();
    assert_eq!(stored["metadata"]["annotations"][bob], json!(r#"{"namespace":"cindy"}"#), "left alone");
    assert_eq!(metrics.errors(), 0, "a failed test is no error");
}

#[tokio::test]
async fn a_conflict_is_retried_with_the_object_read_again() {
    let state = cluster(&["shop"], json!({}));
    let settings = Settings::default();
    let plan = reconcile::plan(&state, &settings, &Absence::offline(Duration::ZERO));
    let fake = fake_with(&state);
    fake.inject("PATCH", "/shop", 409, "Apply failed with 1 conflict: conflict with \"kubectl\"");
    let metrics = ReconcilerMetrics::default();
    let writer = Writer::new(fake.client("a"), metrics.clone(), Leadership::always());

    assert_eq!(writer.write(&plan[0], &replan_with(&state, &settings)).await, WriteOutcome::Written);

    let methods: Vec<String> = fake.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["PATCH", "GET", "PATCH"]);
    let (key, value) = cindy_entry();
    assert_eq!(fake.object(&format!("{VS_PATH}/shop")).unwrap()["metadata"]["annotations"][&key], json!(value));
    assert_eq!((metrics.writes("VirtualService"), metrics.errors()), (1, 0));

    // A conflict that does not go away is given up after a few attempts, and counted.
    for _ in 0..10 {
        fake.inject("PATCH", "/shop", 409, "Apply failed with 1 conflict");
    }
    let mut stale = plan[0].clone();
    stale.owned.insert(key.clone(), "{}".into());
    let before = fake.requests().len();
    assert_eq!(writer.write(&stale, &|_: &Value| Some(stale.clone())).await, WriteOutcome::Failed);
    let attempts = fake.requests()[before..].iter().filter(|r| r.method == "PATCH").count();
    assert_eq!(attempts, divert_webhook::cluster::writer::MAX_ATTEMPTS);
    assert_eq!(metrics.errors(), 1);
}

#[tokio::test]
async fn a_refused_object_is_counted_and_the_next_ones_are_still_written() {
    let state = cluster(&["a-forbidden", "b-denied", "c-fine"], json!({}));
    let settings = Arc::new(Settings::default());
    let fake = fake_with(&state);
    fake.inject("PATCH", "/a-forbidden", 403, "virtualservices.networking.istio.io \"a-forbidden\" is forbidden: User \"system:serviceaccount:divert:divert-webhook\" cannot patch resource");
    fake.inject(
        "PATCH",
        "/b-denied",
        400,
        "admission webhook \"validate.divert.okteto.com\" denied the request: VirtualService staging/b-denied: too many routes",
    );
    let metrics = ReconcilerMetrics::default();
    let writer = Writer::new(fake.client("a"), metrics.clone(), Leadership::always());
    let (_publish, snapshots) = watch::channel(Some(snapshot(state, BTreeMap::new(), Duration::from_secs(600))));
    let config = ReconcilerConfig {
        stale_grace: Duration::from_secs(60),
        resync_interval: Duration::from_secs(300),
        lease: None,
    };

    let reconciling =
        tokio::spawn(async move { reconciler::reconcile_while_held(&writer, snapshots, &settings, &config).await });
    assert!(eventually(Duration::from_secs(5), || fake.writes().len() == 3).await, "{:?}", fake.writes());
    reconciling.abort();

    let (key, value) = cindy_entry();
    assert_eq!(fake.object(&format!("{VS_PATH}/c-fine")).unwrap()["metadata"]["annotations"][&key], json!(value));
    assert_eq!(metrics.errors(), 2);
    assert_eq!(metrics.writes("VirtualService"), 1);
}

fn config(lease: Option<LeaseConfig>) -> ReconcilerConfig {
    ReconcilerConfig { stale_grace: Duration::from_millis(400), resync_interval: Duration::from_secs(300), lease }
}

#[tokio::test]
async fn the_loop_writes_what_a_snapshot_needs_and_nothing_once_it_shows_the_writes() {
    let state = cluster(&["shop", "cart"], json!({}));
    let settings = Arc::new(Settings::default());
    let fake = fake_with(&state);
    let metrics = ReconcilerMetrics::default();
    let (publish, snapshots) = watch::channel(None);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // The entry point, without leader election (--no-leader-election).
    let reconciling = tokio::spawn(reconciler::run(
        fake.client("a"),
        snapshots,
        settings.clone(),
        config(None),
        metrics.clone(),
        async move {
            let _ = stopped.await;
        },
    ));

    // Nothing before the caches have listed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(fake.requests().is_empty());
    publish.send_replace(Some(snapshot(state.clone(), BTreeMap::new(), Duration::from_secs(600))));
    assert!(eventually(Duration::from_secs(5), || fake.writes().len() == 2).await, "{:?}", fake.writes());

    // The caches see the writes come back: the plan is empty, nothing is written.
    let after = state_from_fake(state, &fake);
    assert!(reconcile::plan(&after, &settings, &Absence::offline(Duration::ZERO)).is_empty());
    publish.send_replace(Some(snapshot(after.clone(), BTreeMap::new(), Duration::from_secs(600))));
    publish.send_replace(Some(snapshot(after, BTreeMap::new(), Duration::from_secs(600))));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.requests().len(), 2, "{:?}", fake.requests());
    assert_eq!(metrics.writes("VirtualService"), 2);
    let _ = stop.send(());
    reconciling.await.unwrap();
    assert!(fake.requests().iter().all(|r| !r.path.contains("leases")), "no Lease without leader election");
}

#[tokio::test]
async fn a_newer_snapshot_while_writing_replaces_the_rest_of_the_plan() {
    let state = cluster(&["a-shop", "b-cart"], json!({}));
    let settings = Arc::new(Settings::default());
    let fake = fake_with(&state);
    let writer = Writer::new(fake.client("a"), ReconcilerMetrics::default(), Leadership::always());
    let (publish, snapshots) = watch::channel(Some(snapshot(state.clone(), BTreeMap::new(), Duration::from_secs(600))));
    // While a-shop is being written, cindy stops being a developer namespace: b-cart needs
    // nothing any more.
    let mut unlabelled = state.clone();
    unlabelled.view.add_namespace("cindy", BTreeMap::new());
    assert!(reconcile::plan(&unlabelled, &settings, &Absence::offline(Duration::ZERO)).is_empty());
    let newer = snapshot(unlabelled, BTreeMap::new(), Duration::from_secs(600));
    fake.on_request(move |request| {
        if request.path.ends_with("/a-shop") {
            publish.send_replace(Some(newer.clone()));
        }
    });
    let reconciling =
        tokio::spawn(
            async move { reconciler::reconcile_while_held(&writer, snapshots, &settings, &config(None)).await },
        );

    assert!(eventually(Duration::from_secs(3), || fake.writes().len() == 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writes: Vec<String> = fake.writes().iter().map(|w| w.path.clone()).collect();
    assert_eq!(writes, [format!("{VS_PATH}/a-shop")], "b-cart is not written from the older snapshot");
    reconciling.abort();
}

#[tokio::test]
async fn a_stale_entry_goes_once_the_grace_has_passed_without_a_new_snapshot() {
    let bob = "divert.okteto.com/bob-shop";
    // Every VirtualService already has cindy's entry; bob's names `gone`, deleted just now.
    let (key, value) = cindy_entry();
    let state = cluster(&["shop"], json!({bob: r#"{"namespace":"gone"}"#, key: value}));
    let settings = Arc::new(Settings::default());
    let fake = fake_with(&state);
    let writer = Writer::new(fake.client("a"), ReconcilerMetrics::default(), Leadership::always());
    let started = Instant::now();
    let gone = BTreeMap::from([("gone".to_string(), started)]);
    let (_publish, snapshots) = watch::channel(Some(snapshot(state, gone, Duration::from_secs(600))));
    let reconciling =
        tokio::spawn(
            async move { reconciler::reconcile_while_held(&writer, snapshots, &settings, &config(None)).await },
        );

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(fake.requests().is_empty(), "within the grace (400 ms): {:?}", fake.requests());
    assert!(eventually(Duration::from_secs(3), || fake.writes().len() == 1).await);
    assert!(started.elapsed() >= Duration::from_millis(400));
    let patch = &fake.writes()[0];
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert!(fake.object(&format!("{VS_PATH}/shop")).unwrap()["metadata"]["annotations"].get(bob).is_none());
    reconciling.abort();
}

fn lease_config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        duration: Duration::from_millis(1000),
        renew_interval: Duration::from_millis(150),
        retry_interval: Duration::from_millis(100),
        ..LeaseConfig::new("divert", identity)
    }
}

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/divert/leases/divert-webhook";

#[tokio::test]
async fn of_two_replicas_only_the_lease_holder_writes_and_losing_the_lease_stops_it() {
    let state = cluster(&["shop"], json!({}));
    let settings = Arc::new(Settings::default());
    let fake = fake_with(&state);
    let (publish, snapshots) = watch::channel(None::<Arc<ClusterSnapshot>>);
    let mut replicas = Vec::new();
    for who in ["a", "b"] {
        let metrics = ReconcilerMetrics::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(reconciler::run(
            fake.client(who),
            snapshots.clone(),
            settings.clone(),
            config(Some(lease_config(who))),
            metrics.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        replicas.push((who, metrics, stop, task));
    }
    let holders = |replicas: &Vec<(&'static str, ReconcilerMetrics, _, _)>| -> Vec<&'static str> {
        replicas.iter().filter(|r| r.1.is_lease_holder()).map(|r| r.0).collect()
    };
    assert!(eventually(Duration::from_secs(3), || holders(&replicas).len() == 1).await);
    let holder = holders(&replicas)[0];
    let other = if holder == "a" { "b" } else { "a" };
    let lease = fake.object(LEASE_PATH).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], json!(holder));

    publish.send_replace(Some(snapshot(state.clone(), BTreeMap::new(), Duration::from_secs(600))));
    assert!(eventually(Duration::from_secs(3), || fake.writes().len() == 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.writes().iter().all(|w| w.who == holder), "{:?}", fake.writes());
    assert_eq!(holders(&replicas), [holder], "still one holder after several renewals");
    // The caches see the write come back.
    publish.send_replace(Some(snapshot(
        state_from_fake(state.clone(), &fake),
        BTreeMap::new(),
        Duration::from_secs(600),
    )));

    // The holder is cut off from the API: it stops holding within the lease duration (by its
    // own clock, its renewals hang), and the other takes over once the Lease has expired.
    fake.partition(holder);
    let cut = Instant::now();
    let holder_metrics = replicas.iter().find(|r| r.0 == holder).unwrap().1.clone();
    assert!(eventually(Duration::from_secs(2), || !holder_metrics.is_lease_holder()).await);
    // Its renewals hang: it lets go by its own clock, within the duration (1 s) and a margin.
    assert!(cut.elapsed() <= Duration::from_millis(1400), "let go after {:?}", cut.elapsed());
    assert_eq!(holder_metrics.lease_transitions(), 2, "took it, lost it");
    assert!(eventually(Duration::from_secs(3), || holders(&replicas) == [other]).await);
    assert_eq!(fake.object(LEASE_PATH).unwrap()["spec"]["holderIdentity"], json!(other));
    assert_eq!(fake.object(LEASE_PATH).unwrap()["spec"]["leaseTransitions"], json!(1));

    // A change now is written by the new holder only.
    let mut changed = state_from_fake(state, &fake);
    changed.view.add_service("cindy", "web");
    changed.virtual_services[0]["spec"]["http"][0]["route"] = json!([{"destination": {"host": "web"}}]);
    fake.put_object(&format!("{VS_PATH}/shop"), changed.virtual_services[0].clone());
    publish.send_replace(Some(snapshot(changed, BTreeMap::new(), Duration::from_secs(600))));
    assert!(eventually(Duration::from_secs(3), || fake.writes().len() == 2).await, "{:?}", fake.writes());
    assert_eq!(fake.writes()[1].who, other);

    // Shutdown frees the Lease at once.
    for (who, _, stop, task) in replicas {
        let _ = stop.send(());
        if who == other {
            task.await.unwrap();
        } else {
            task.abort();
        }
    }
    assert_eq!(fake.object(LEASE_PATH).unwrap()["spec"].get("holderIdentity"), None);
}

#[tokio::test]
async fn a_replica_takes_a_lease_nobody_renews_only_once_it_expired() {
    let fake = FakeApi::default();
    let metrics = ReconcilerMetrics::default();
    let (mut first, first_holds) = Elector::new(fake.client("a"), lease_config("a"), metrics.clone());
    let first_task = tokio::spawn(async move { first.run().await });
    assert!(eventually(Duration::from_secs(2), || first_holds.is_held()).await);
    first_task.abort(); // crashed: nobody renews, nobody frees

    let (mut second, second_holds) = Elector::new(fake.client("b"), lease_config("b"), ReconcilerMetrics::default());
    let started = Instant::now();
    let second_task = tokio::spawn(async move { second.run().await });
    assert!(eventually(Duration::from_secs(3), || second_holds.is_held()).await);
    assert!(started.elapsed() >= Duration::from_millis(1000), "waited out the duration: {:?}", started.elapsed());
    second_task.abort();
    assert_eq!(metrics.lease_transitions(), 1);
}

#[tokio::test]
async fn a_holder_that_finds_someone_else_holding_the_lease_stops_at_once() {
    let state = cluster(&["shop"], json!({}));
    let settings = Arc::new(Settings::default());
    let fake = fake_with(&state);
    let (publish, snapshots) = watch::channel(None::<Arc<ClusterSnapshot>>);
    let metrics = ReconcilerMetrics::default();
    // Long enough that the intruder, who does not renew, is not judged expired during the test.
    let lease = LeaseConfig {
        duration: Duration::from_secs(10),
        renew_interval: Duration::from_millis(50),
        ..lease_config("a")
    };
    let reconciling = tokio::spawn(reconciler::run(
        fake.client("a"),
        snapshots,
        settings,
        config(Some(lease)),
        metrics.clone(),
        std::future::pending(),
    ));
    assert!(eventually(Duration::from_secs(2), || metrics.is_lease_holder()).await);

    // Someone else holds it now (an operator's edit, or a replica that judged it expired).
    let mut taken = fake.object(LEASE_PATH).unwrap();
    taken["spec"]["holderIdentity"] = json!("intruder");
    fake.put_object(LEASE_PATH, taken);
    assert!(eventually(Duration::from_millis(500), || !metrics.is_lease_holder()).await, "the next renew sees it");

    publish.send_replace(Some(snapshot(state, BTreeMap::new(), Duration::from_secs(600))));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
    assert_eq!(fake.object(LEASE_PATH).unwrap()["spec"]["holderIdentity"], json!("intruder"), "not taken back");
    assert_eq!(metrics.lease_transitions(), 2);
    reconciling.abort();
}

/// A stale entry's JSON patch refused with 422 while the object, read again, still asks for the
/// very same patch: a refusal (an admission denial), not a `test` that failed because the entry
/// changed. Given up at once and counted, not retried until the attempts run out.
#[tokio::test]
async fn a_refused_stale_patch_is_given_up_at_once() {
    let bob = "divert.okteto.com/bob-shop";
    let state = cluster(&["shop"], json!({bob: r#"{"namespace":"gone"}"#}));
    let fake = fake_with(&state);
    let changes = ObjectChanges {
        kind: "VirtualService",
        api_version: "networking.istio.io/v1".into(),
        namespace: state.virtual_services[0]["metadata"]["namespace"].as_str().unwrap().into(),
        name: "shop".into(),
        changes: vec![reconcile::Change::RemoveStale {
            annotation: bob.into(),
            value: r#"{"namespace":"gone"}"#.into(),
        }],
        owned: BTreeMap::new(),
    };
    assert!(reconcile::apply_configuration(&changes).is_none(), "a JSON patch only");
    for _ in 0..10 {
        fake.inject("PATCH", "/shop", 422, "admission webhook \"validate.example.com\" denied the request");
    }
    let metrics = ReconcilerMetrics::default();
    let writer = Writer::new(fake.client("a"), metrics.clone(), Leadership::always());

    assert_eq!(writer.write(&changes, &|_: &Value| Some(changes.clone())).await, WriteOutcome::Failed);
    let methods: Vec<String> = fake.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["PATCH", "GET"], "one patch, one read, no second patch");
    assert_eq!(metrics.errors(), 1);

    // A 422 after which the object asks for something else (the entry changed) is retried.
    let changed = ObjectChanges { changes: Vec::new(), ..changes.clone() };
    let before = fake.requests().len();
    let outcome = writer.write(&changes, &|_: &Value| Some(changed.clone())).await;
    assert_eq!(outcome, WriteOutcome::Written, "the empty change is nothing to write");
    assert_eq!(fake.requests()[before..].iter().filter(|r| r.method == "PATCH").count(), 1);
}
