//! A fake Kubernetes API server for tests: plain HTTP on 127.0.0.1, speaking the real JSON of
//! list (paged by `limit` and `continue`), watch (newline-delimited events: ADDED, MODIFIED, DELETED, BOOKMARK, ERROR with 410
//! Gone when a resumed watch is too old), get, create, replace, patch (server-side apply of
//! annotations by field manager, or of whole objects, see [`server_side_apply`]; JSON patch with
//! `test`, merge patch), delete (with a uid precondition), and discovery of
//! `/apis/GROUP/VERSION`. It holds an in-memory store that the test changes through
//! [`FakeApi`]'s methods; every change bumps the resourceVersion and is sent to the watches.
//!
//! Point a kube client at it with [`FakeApi::client`] (or a kubeconfig file,
//! [`FakeApi::kubeconfig`]). Faults: [`FakeApi::drop_watches`] (the connection drops; kube
//! resumes from its last resourceVersion), [`FakeApi::compact`] (resuming gets 410 Gone, kube
//! lists again), [`FakeApi::remove_silently`] (an object goes without a DELETED event, as
//! during a watch outage), [`FakeApi::set_unavailable`] (every request fails).
//!
//! Opt-in admission ([`FakeApi::admit`]): writes of a resource through the HTTP API (create,
//! replace, patch) go through the webhook's /mutate and then /validate over HTTPS before they are
//! stored, as the apiserver calls its admission webhooks ([`Webhooks`]). Requests are recorded
//! with who sent them ([`FakeApi::client_as`] gives a client its own bearer token).
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A resource the fake serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    fn prefix(&self) -> String {
        if self.group.is_empty() { format!("/api/{}", self.version) } else { format!("/apis/{}", self.api_version()) }
    }
}

pub const NAMESPACES: Resource =
    Resource { group: "", version: "v1", kind: "Namespace", plural: "namespaces", namespaced: false };
pub const SERVICES: Resource =
    Resource { group: "", version: "v1", kind: "Service", plural: "services", namespaced: true };
pub const INGRESSES: Resource =
    Resource { group: "networking.k8s.io", version: "v1", kind: "Ingress", plural: "ingresses", namespaced: true };
pub const VIRTUAL_SERVICES: Resource = Resource {
    group: "networking.istio.io",
    version: "v1",
    kind: "VirtualService",
    plural: "virtualservices",
    namespaced: true,
};
pub const VIRTUAL_SERVICES_V1BETA1: Resource = Resource { version: "v1beta1", ..VIRTUAL_SERVICES };
pub const HTTP_ROUTES: Resource = Resource {
    group: "gateway.networking.k8s.io",
    version: "v1",
    kind: "HTTPRoute",
    plural: "httproutes",
    namespaced: true,
};
pub const LINKERD_HTTP_ROUTES: Resource = Resource {
    group: "policy.linkerd.io",
    version: "v1beta3",
    kind: "HTTPRoute",
    plural: "httproutes",
    namespaced: true,
};
pub const REFERENCE_GRANTS: Resource = Resource {
    group: "gateway.networking.k8s.io",
    version: "v1beta1",
    kind: "ReferenceGrant",
    plural: "referencegrants",
    namespaced: true,
};
pub const LEASES: Resource =
    Resource { group: "coordination.k8s.io", version: "v1", kind: "Lease", plural: "leases", namespaced: true };

/// Every resource of a cluster with Istio and the Gateway API.
pub fn all_resources() -> Vec<Resource> {
    vec![NAMESPACES, SERVICES, INGRESSES, VIRTUAL_SERVICES, HTTP_ROUTES, REFERENCE_GRANTS, LEASES]
}

struct Watch {
    resource: Resource,
    namespace: Option<String>,
    metadata_only: bool,
    sender: mpsc::UnboundedSender<Bytes>,
}

struct Recorded {
    resource_version: u64,
    resource: Resource,
    namespace: Option<String>,
    kind: &'static str,
    object: Value,
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Who sent it: the bearer token of its client ([`FakeApi::client_as`]); None without one.
    pub user: Option<String>,
    pub content_type: String,
    /// The Accept header (`…;as=PartialObjectMetadata…` for a metadata-only list or watch).
    pub accept: String,
    pub body: Bytes,
}

impl Received {
    /// The body as JSON (Null when it is not JSON, e.g. a YAML apply configuration).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The `fieldManager` query parameter.
    pub fn field_manager(&self) -> Option<&str> {
        let (_, query) = self.uri.split_once('?')?;
        query.split('&').find_map(|pair| pair.strip_prefix("fieldManager="))
    }
}

/// The admission webhooks the fake calls on writes, as the apiserver does: the mutating one
/// (`/mutate`), its JSON patch applied, then the validating one (`/validate`); a denial fails the
/// write with the webhook's message. `endpoints` are the base URLs of the webhook's replicas
/// (`https://127.0.0.1:PORT`), tried in order as a Service's endpoints are: one that cannot be
/// reached is skipped. None reachable fails the write (`failurePolicy: Fail`, as deploy/ sets it).
#[derive(Clone)]
pub struct Webhooks {
    pub client: reqwest::Client,
    pub endpoints: Vec<String>,
}

/// A write about to be stored, as admission sees it.
struct Attributes {
    resource: Resource,
    operation: &'static str,
    namespace: String,
    name: String,
    user: Option<String>,
    object: Value,
    old_object: Option<Value>,
    field_manager: Option<String>,
}

/// A webhook's refusal or failure: the status code and message the apiserver answers with.
struct Refused(u16, String);

impl Webhooks {
    /// The object as admission leaves it, or why the write is refused.
    async fn admit(&self, attributes: &Attributes) -> Result<Value, Refused> {
        let mut object = attributes.object.clone();
        for (path, webhook) in [("mutate", "mutate.divert.okteto.com"), ("validate", "validate.divert.okteto.com")] {
            let answer = self.call(path, webhook, &attributes.review(&object)).await?;
            let response = &answer["response"];
            if response["allowed"] != json!(true) {
                let message = response["status"]["message"].as_str().unwrap_or("without explanation");
                // The apiserver never answers a rejection below 400.
                let code = response["status"]["code"].as_u64().filter(|c| (400..600).contains(c)).unwrap_or(400);
                return Err(Refused(
                    code as u16,
                    format!("admission webhook \"{webhook}\" denied the request: {message}"),
                ));
            }
            if let Some(encoded) = response["patch"].as_str() {
                let patch = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<json_patch::Patch>(&bytes).ok())
                    .ok_or_else(|| {
                        Refused(500, format!("webhook \"{webhook}\" answered a patch that is not a JSON patch"))
                    })?;
                json_patch::patch(&mut object, &patch)
                    .map_err(|error| Refused(500, format!("webhook \"{webhook}\"'s patch does not apply: {error}")))?;
            }
        }
        Ok(object)
    }

    async fn call(&self, path: &str, webhook: &str, review: &Value) -> Result<Value, Refused> {
        let mut failure = String::from("no endpoints");
        for endpoint in &self.endpoints {
            match self.client.post(format!("{endpoint}/{path}?timeout=10s")).json(review).send().await {
                Ok(response) if response.status() == 200 => {
                    return response.json().await.map_err(|error| {
                        Refused(500, format!("failed calling webhook \"{webhook}\": the answer is not JSON: {error}"))
                    });
                }
                Ok(response) => failure = format!("HTTP {}", response.status()),
                Err(error) => failure = error.to_string(),
            }
        }
        Err(Refused(500, format!("Internal error occurred: failed calling webhook \"{webhook}\": {failure}")))
    }
}

impl Attributes {
    /// The AdmissionReview the apiserver sends for this write.
    fn review(&self, object: &Value) -> Value {
        static UIDS: AtomicU64 = AtomicU64::new(1);
        let uid = format!("fake-api-{}", UIDS.fetch_add(1, Ordering::Relaxed));
        let kind = json!({"group": self.resource.group, "version": self.resource.version, "kind": self.resource.kind});
        let resource =
            json!({"group": self.resource.group, "version": self.resource.version, "resource": self.resource.plural});
        let options_kind = if self.operation == "CREATE" { "CreateOptions" } else { "UpdateOptions" };
        let mut request = json!({
            "uid": uid, "kind": kind, "resource": resource, "requestKind": kind, "requestResource": resource,
            "name": self.name, "operation": self.operation,
            "userInfo": {"username": self.user.clone().unwrap_or_else(|| "system:anonymous".into())},
            "object": object, "oldObject": self.old_object, "dryRun": false,
            "options": {"kind": options_kind, "apiVersion": "meta.k8s.io/v1"},
        });
        if !self.namespace.is_empty() {
            request["namespace"] = json!(self.namespace);
        }
        if let Some(manager) = &self.field_manager {
            request["options"]["fieldManager"] = json!(manager);
        }
        json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request})
    }
}

struct Inner {
    resource_version: u64,
    /// Resumes from a resourceVersion below this get 410 Gone.
    compacted: u64,
    served: Vec<Resource>,
    /// (plural and api version, namespace, name) -> object
    objects: BTreeMap<(String, String, String), Value>,
    history: Vec<Recorded>,
    watches: Vec<Watch>,
    unavailable: bool,
    requests: Vec<Received>,
    /// Resources whose writes go through admission, and the webhooks that admit them.
    admission: Vec<(Resource, Webhooks)>,
}

/// The fake API server, running on its own task until dropped.
pub struct FakeApi {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key(resource: &Resource, namespace: &str, name: &str) -> (String, String, String) {
    (format!("{}.{}", resource.plural, resource.api_version()), namespace.to_string(), name.to_string())
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn json_response(code: u16, body: &Value) -> Response {
    (StatusCode::from_u16(code).unwrap(), [(header::CONTENT_TYPE, "application/json")], body.to_string())
        .into_response()
}

fn partial(object: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": object["metadata"]})
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

impl FakeApi {
    /// Serves `served` (and discovery of their groups) on a free local port.
    pub async fn start(served: Vec<Resource>) -> FakeApi {
        let inner = Arc::new(Mutex::new(Inner {
            resource_version: 1,
            compacted: 0,
            served,
            objects: BTreeMap::new(),
            history: Vec::new(),
            watches: Vec::new(),
            unavailable: false,
            requests: Vec::new(),
            admission: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeApi { addr, inner, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client talking to this server.
    pub fn client(&self) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::new(self.url().parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// A kube client whose requests carry the bearer token `user`: the fake records them as sent
    /// by `user` (as the apiserver knows its requester).
    pub fn client_as(&self, user: &str) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut config = kube::Config::new(self.url().parse().unwrap());
        config.auth_info = serde_json::from_value(json!({"token": user})).unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// From now on, writes of `resource` through the HTTP API go through `webhooks` before they
    /// are stored ([`Webhooks`]). Objects the test stores itself ([`FakeApi::put`]) do not.
    pub fn admit(&self, resource: Resource, webhooks: Webhooks) {
        let mut inner = self.lock();
        inner.admission.retain(|(r, _)| *r != resource);
        inner.admission.push((resource, webhooks));
    }

    /// A kubeconfig file (in `dir`) pointing at this server, for the real binary.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{}\"}}\nusers:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake}}\ncurrent-context: fake\n",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    /// Creates or replaces `object` (apiVersion, kind and metadata name/namespace read from it),
    /// as a client would: ADDED or MODIFIED goes to the watches. Returns the stored object.
    pub fn put(&self, object: Value) -> Value {
        let mut inner = self.lock();
        let resource = inner.resource_of(&object).unwrap_or_else(|| panic!("the fake does not serve {object}"));
        inner.store(&resource, object)
    }

    /// Deletes an object: DELETED goes to the watches.
    pub fn delete(&self, resource: &Resource, namespace: &str, name: &str) {
        let mut inner = self.lock();
        inner.remove(resource, namespace, name, true);
    }

    /// Removes an object with no DELETED event (as if it went while the watch was down). Only a
    /// re-list shows it gone: follow with [`FakeApi::compact`] and [`FakeApi::drop_watches`].
    pub fn remove_silently(&self, resource: &Resource, namespace: &str, name: &str) {
        let mut inner = self.lock();
        inner.remove(resource, namespace, name, false);
    }

    pub fn get(&self, resource: &Resource, namespace: &str, name: &str) -> Option<Value> {
        self.lock().objects.get(&key(resource, namespace, name)).cloned()
    }

    /// Ends every open watch (the response ends, as when a connection drops).
    pub fn drop_watches(&self) {
        self.lock().watches.clear();
    }

    /// Forgets the history: a watch resumed from an older resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.compacted = inner.resource_version + 1;
        inner.history.clear();
    }

    /// Sends a BOOKMARK with the current resourceVersion to every watch that asked for them.
    pub fn bookmark(&self) {
        let mut inner = self.lock();
        let rv = inner.resource_version.to_string();
        inner.watches.retain(|watch| {
            let object = json!({"apiVersion": watch.resource.api_version(), "kind": watch.resource.kind,
                                "metadata": {"resourceVersion": rv}});
            watch.sender.send(event_line("BOOKMARK", &object)).is_ok()
        });
    }

    /// While set, every request fails (500) and open watches end.
    pub fn set_unavailable(&self, unavailable: bool) {
        let mut inner = self.lock();
        inner.unavailable = unavailable;
        if unavailable {
            inner.watches.clear();
        }
    }

    /// Serves or stops serving `resource` (a CRD installed or removed; its objects stay stored).
    pub fn serve(&self, resource: Resource, served: bool) {
        let mut inner = self.lock();
        inner.served.retain(|r| r != &resource);
        if served {
            inner.served.push(resource);
        } else {
            let gone = resource.clone();
            inner.watches.retain(|watch| watch.resource != gone);
        }
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.iter().map(|r| format!("{} {}", r.method, r.uri)).collect()
    }

    /// Every request so far, with who sent it and its body.
    pub fn received(&self) -> Vec<Received> {
        self.lock().requests.clone()
    }

    /// How many watches are open now.
    pub fn open_watches(&self) -> usize {
        let mut inner = self.lock();
        inner.watches.retain(|watch| !watch.sender.is_closed());
        inner.watches.len()
    }
}

impl Inner {
    fn resource_of(&self, object: &Value) -> Option<Resource> {
        let api_version = object["apiVersion"].as_str()?;
        let kind = object["kind"].as_str()?;
        self.served.iter().find(|r| r.api_version() == api_version && r.kind == kind).cloned()
    }

    fn next_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    /// Stores `object`, giving it a resourceVersion (and uid, creationTimestamp when new), and
    /// tells the watches.
    fn store(&mut self, resource: &Resource, mut object: Value) -> Value {
        let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string();
        let name = object["metadata"]["name"].as_str().expect("metadata.name").to_string();
        let key = key(resource, &namespace, &name);
        let existed = self.objects.get(&key).cloned();
        let rv = self.next_version();
        let metadata = object["metadata"].as_object_mut().unwrap();
        metadata.insert("resourceVersion".into(), json!(rv));
        let uid = existed
            .as_ref()
            .and_then(|old| old.pointer("/metadata/uid").cloned())
            .unwrap_or_else(|| json!(format!("uid-{rv}")));
        metadata.insert("uid".into(), uid);
        metadata.entry("creationTimestamp").or_insert(json!("2026-01-01T00:00:00Z"));
        object["apiVersion"] = json!(resource.api_version());
        object["kind"] = json!(resource.kind);
        self.objects.insert(key, object.clone());
        self.record(resource, &namespace, if existed.is_some() { "MODIFIED" } else { "ADDED" }, object.clone());
        object
    }

    fn remove(&mut self, resource: &Resource, namespace: &str, name: &str, with_event: bool) -> Option<Value> {
        let mut object = self.objects.remove(&key(resource, namespace, name))?;
        let rv = self.next_version();
        object["metadata"]["resourceVersion"] = json!(rv);
        if with_event {
            self.record(resource, namespace, "DELETED", object.clone());
        }
        Some(object)
    }

    fn record(&mut self, resource: &Resource, namespace: &str, kind: &'static str, object: Value) {
        let namespace = (!namespace.is_empty()).then(|| namespace.to_string());
        self.watches.retain(|watch| {
            if watch.resource != *resource || (watch.namespace.is_some() && watch.namespace != namespace) {
                return !watch.sender.is_closed();
            }
            let sent = if watch.metadata_only { partial(&object) } else { object.clone() };
            watch.sender.send(event_line(kind, &sent)).is_ok()
        });
        let resource_version = self.resource_version;
        self.history.push(Recorded { resource_version, resource: resource.clone(), namespace, kind, object });
    }
}

/// A request path taken apart: the resource, the namespace (if the path names one) and the
/// object name (if any).
fn route(served: &[Resource], path: &str) -> Option<(Resource, Option<String>, Option<String>)> {
    for resource in served {
        let Some(rest) = path.strip_prefix(&resource.prefix()) else { continue };
        let parts: Vec<&str> = rest.trim_start_matches('/').split('/').filter(|p| !p.is_empty()).collect();
        let found = match (resource.namespaced, parts.as_slice()) {
            (_, [plural]) if *plural == resource.plural => Some((None, None)),
            (false, [plural, name]) if *plural == resource.plural => Some((None, Some(name.to_string()))),
            (true, ["namespaces", ns, plural]) if *plural == resource.plural => Some((Some(ns.to_string()), None)),
            (true, ["namespaces", ns, plural, name]) if *plural == resource.plural => {
                Some((Some(ns.to_string()), Some(name.to_string())))
            }
            _ => None,
        };
        if let Some((namespace, name)) = found {
            return Some((resource.clone(), namespace, name));
        }
    }
    None
}

fn query_param<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let user = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let webhooks = {
        let mut state = inner.lock().unwrap();
        state.requests.push(Received {
            method: method.to_string(),
            uri: uri.to_string(),
            user: user.clone(),
            content_type,
            accept,
            body: body.clone(),
        });
        if state.unavailable {
            // 500, not 503: kube's client retries a 503 by itself for minutes before its caller sees it.
            return json_response(500, &status(500, "InternalError", "the fake API is failing"));
        }
        let write = matches!(method, Method::POST | Method::PUT | Method::PATCH);
        match route(&state.served, uri.path()) {
            Some((resource, _, _)) if write => {
                state.admission.iter().find(|(admitted, _)| *admitted == resource).map(|(_, webhooks)| webhooks.clone())
            }
            _ => None,
        }
    };
    match webhooks {
        Some(webhooks) => admitted_write(&inner, &webhooks, &method, &uri, &headers, &body, user).await,
        None => answer(&mut inner.lock().unwrap(), &method, &uri, &headers, &body),
    }
}

/// Answers a request that needs no admission.
fn answer(state: &mut Inner, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Response {
    let path = uri.path();
    // Discovery of one group version.
    if *method == Method::GET
        && let Some(group_version) = path.strip_prefix("/apis/").filter(|gv| gv.matches('/').count() == 1)
    {
        let resources: Vec<Value> = state
            .served
            .iter()
            .filter(|r| r.api_version() == group_version)
            .map(|r| {
                json!({"name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
                       "kind": r.kind, "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]})
            })
            .collect();
        if resources.is_empty() {
            return json_response(404, &status(404, "NotFound", "the server could not find the requested resource"));
        }
        return json_response(
            200,
            &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
        );
    }
    let Some((resource, namespace, name)) = route(&state.served, path) else {
        return json_response(404, &status(404, "NotFound", "the server could not find the requested resource"));
    };
    let metadata_only = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("as=PartialObjectMetadata"));
    let namespace_str = namespace.clone().unwrap_or_default();
    match (method.clone(), name) {
        (Method::GET, None) if query_param(uri, "watch") == Some("true") => {
            let from: u64 = query_param(uri, "resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
            let (sender, receiver) = mpsc::unbounded_channel();
            if from < state.compacted {
                let gone = status(410, "Expired", &format!("too old resource version: {from} ({})", state.compacted));
                let _ = sender.send(event_line("ERROR", &gone));
            } else {
                for recorded in state.history.iter().filter(|r| {
                    r.resource_version > from
                        && r.resource == resource
                        && (namespace.is_none() || r.namespace == namespace)
                }) {
                    let sent = if metadata_only { partial(&recorded.object) } else { recorded.object.clone() };
                    let _ = sender.send(event_line(recorded.kind, &sent));
                }
                state.watches.push(Watch { resource, namespace, metadata_only, sender });
            }
            // Without a sender left (a 410 answer), the stream ends after what was queued.
            let stream = futures::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|line| (Ok::<_, Infallible>(line), receiver))
            });
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response()
        }
        (Method::GET, None) => {
            let prefix = format!("{}.{}", resource.plural, resource.api_version());
            // Pages as the apiserver gives them: `limit` items, then a `continue` token (here
            // the offset of the next item).
            let offset: usize = query_param(uri, "continue").and_then(|c| c.parse().ok()).unwrap_or(0);
            let limit: usize =
                query_param(uri, "limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
            let mut matching = state
                .objects
                .iter()
                .filter(|((kind, ns, _), _)| *kind == prefix && (namespace.is_none() || *ns == namespace_str))
                .skip(offset);
            let items: Vec<Value> = matching
                .by_ref()
                .take(limit)
                .map(|(_, object)| if metadata_only { partial(object) } else { object.clone() })
                .collect();
            let more = matching.next().is_some();
            let mut list_metadata = json!({"resourceVersion": state.resource_version.to_string()});
            if more {
                list_metadata["continue"] = json!((offset + items.len()).to_string());
            }
            let (api_version, kind) = if metadata_only {
                ("meta.k8s.io/v1".to_string(), "PartialObjectMetadataList".to_string())
            } else {
                (resource.api_version(), format!("{}List", resource.kind))
            };
            json_response(
                200,
                &json!({"apiVersion": api_version, "kind": kind, "metadata": list_metadata, "items": items}),
            )
        }
        (Method::GET, Some(name)) => match state.objects.get(&key(&resource, &namespace_str, &name)) {
            Some(object) => json_response(200, object),
            None => json_response(404, &status(404, "NotFound", &format!("{} \"{name}\" not found", resource.plural))),
        },
        (Method::POST, None) | (Method::PUT, Some(_)) | (Method::PATCH, Some(_)) => {
            match candidate(state, method, uri, headers, body) {
                Ok(write) => {
                    let code = if write.old_object.is_some() { 200 } else { 201 };
                    let stored = state.store(&write.resource, write.object);
                    json_response(code, &stored)
                }
                Err((code, refused)) => json_response(code, &refused),
            }
        }
        (Method::DELETE, Some(name)) => {
            // DeleteOptions' `preconditions.uid`: the object must still be the one meant.
            let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let stored_uid = state
                .objects
                .get(&key(&resource, &namespace_str, &name))
                .and_then(|o| o.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string));
            if let (Some(wanted), Some(stored)) =
                (options.pointer("/preconditions/uid").and_then(Value::as_str), stored_uid.as_deref())
                && wanted != stored
            {
                let message =
                    format!("Precondition failed: UID in precondition: {wanted}, UID in object meta: {stored}");
                return json_response(409, &status(409, "Conflict", &message));
            }
            match state.remove(&resource, &namespace_str, &name, true) {
                Some(object) => json_response(200, &object),
                None => {
                    json_response(404, &status(404, "NotFound", &format!("{} \"{name}\" not found", resource.plural)))
                }
            }
        }
        _ => json_response(405, &status(405, "MethodNotAllowed", &format!("{method} is not supported here"))),
    }
}

/// Server-side apply. Annotations as the apiserver does them, by field manager
/// ([`apply_annotations`]). A patch holding more than metadata (a `spec`: what the reconciler
/// applies to its own routes and grants) is taken as its manager owning the whole object:
/// `labels` and `ownerReferences` become the patch's (gone when it has none, as a field the
/// manager owned and left out), and every field besides `apiVersion`, `kind` and `metadata` is
/// replaced whole by the patch's. Field conflicts between managers are not simulated.
fn server_side_apply(object: Value, patch: &Value, manager: &str) -> Value {
    let mut object = apply_annotations(object, patch, manager);
    let Some(patch) = patch.as_object() else { return object };
    if !patch.keys().any(|field| !matches!(field.as_str(), "apiVersion" | "kind" | "metadata")) {
        return object;
    }
    for (field, value) in patch {
        if !matches!(field.as_str(), "apiVersion" | "kind" | "metadata") {
            object[field] = value.clone();
        }
    }
    let metadata = object["metadata"].as_object_mut().unwrap();
    for owned in ["labels", "ownerReferences"] {
        match patch.get("metadata").and_then(|m| m.get(owned)) {
            Some(value) => metadata.insert(owned.to_string(), value.clone()),
            None => metadata.remove(owned),
        };
    }
    object
}

/// What a create (POST), replace (PUT) or patch (PATCH) would store, before admission; or the
/// answer refusing it (status code and Status).
fn candidate(
    state: &Inner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Attributes, (u16, Value)> {
    let not_found =
        |plural: &str, name: &str| refusal(404, &status(404, "NotFound", &format!("{plural} \"{name}\" not found")));
    let Some((resource, namespace, name)) = route(&state.served, uri.path()) else {
        return Err(refusal(404, &status(404, "NotFound", "the server could not find the requested resource")));
    };
    let namespace = namespace.unwrap_or_default();
    let (object, old_object, name) = match (method.clone(), name) {
        (Method::POST, None) => {
            let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
                return Err(refusal(400, &status(400, "BadRequest", "body is not JSON")));
            };
            if !namespace.is_empty() {
                object["metadata"]["namespace"] = json!(namespace);
            }
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
            if state.objects.contains_key(&key(&resource, &namespace, &name)) {
                return Err(refusal(
                    409,
                    &status(409, "AlreadyExists", &format!("{} \"{name}\" already exists", resource.plural)),
                ));
            }
            (object, None, name)
        }
        (Method::PUT, Some(name)) => {
            let Ok(object) = serde_json::from_slice::<Value>(body) else {
                return Err(refusal(400, &status(400, "BadRequest", "body is not JSON")));
            };
            let Some(current) = state.objects.get(&key(&resource, &namespace, &name)) else {
                return Err(not_found(resource.plural, &name));
            };
            let given = object.pointer("/metadata/resourceVersion").and_then(Value::as_str);
            if given.is_some_and(|rv| Some(rv) != current.pointer("/metadata/resourceVersion").and_then(Value::as_str))
            {
                return Err(refusal(
                    409,
                    &status(
                        409,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ),
                ));
            }
            (object, Some(current.clone()), name)
        }
        (Method::PATCH, Some(name)) => {
            let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            let is_apply = content_type.starts_with("application/apply-patch+yaml");
            let stored = state.objects.get(&key(&resource, &namespace, &name)).cloned();
            let existed = stored.is_some();
            // A server-side apply makes the object when there is none (the apiserver's upsert).
            let current = match stored {
                None if is_apply => json!({"metadata": {"name": name, "namespace": namespace}}),
                Some(current) => current,
                None => return Err(not_found(resource.plural, &name)),
            };
            let patched = match content_type.split(';').next().unwrap_or("") {
                "application/apply-patch+yaml" => {
                    let Some(manager) = query_param(uri, "fieldManager") else {
                        return Err(refusal(422, &status(422, "Invalid", "fieldManager is required for apply patch")));
                    };
                    let Ok(patch) = serde_saphyr::from_str::<Value>(std::str::from_utf8(body).unwrap_or("")) else {
                        return Err(refusal(400, &status(400, "BadRequest", "apply patch is not YAML")));
                    };
                    server_side_apply(current.clone(), &patch, manager)
                }
                "application/json-patch+json" => {
                    let Ok(patch) = serde_json::from_slice::<json_patch::Patch>(body) else {
                        return Err(refusal(400, &status(400, "BadRequest", "not a JSON patch")));
                    };
                    let mut object = current.clone();
                    if let Err(error) = json_patch::patch(&mut object, &patch) {
                        return Err(refusal(422, &status(422, "Invalid", &format!("the JSON patch failed: {error}"))));
                    }
                    object
                }
                "application/merge-patch+json" => {
                    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
                        return Err(refusal(400, &status(400, "BadRequest", "not a merge patch")));
                    };
                    let mut object = current.clone();
                    json_patch::merge(&mut object, &patch);
                    object
                }
                other => {
                    return Err(refusal(415, &status(415, "UnsupportedMediaType", &format!("patch type {other:?}"))));
                }
            };
            (patched, existed.then_some(current), name)
        }
        _ => {
            return Err(refusal(405, &status(405, "MethodNotAllowed", &format!("{method} is not supported here"))));
        }
    };
    let operation = if old_object.is_some() { "UPDATE" } else { "CREATE" };
    let field_manager = query_param(uri, "fieldManager").map(str::to_string);
    Ok(Attributes { resource, operation, namespace, name, user: None, object, old_object, field_manager })
}

/// A refusal of [`candidate`]: its status code and Status, answered by the caller.
fn refusal(code: u16, status: &Value) -> (u16, Value) {
    (code, status.clone())
}

/// A write that goes through admission: the candidate is computed, admitted without holding the
/// store (the webhook may take a while), then stored if the object did not change meanwhile;
/// if it did, all again from the new object, as the apiserver retries an update.
async fn admitted_write(
    inner: &Mutex<Inner>,
    webhooks: &Webhooks,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    user: Option<String>,
) -> Response {
    let version = |object: Option<&Value>| object.map(|o| o["metadata"]["resourceVersion"].clone());
    for _ in 0..5 {
        let attributes = {
            let state = inner.lock().unwrap();
            match candidate(&state, method, uri, headers, body) {
                Ok(attributes) => Attributes { user: user.clone(), ..attributes },
                Err((code, refused)) => return json_response(code, &refused),
            }
        };
        let admitted = match webhooks.admit(&attributes).await {
            Ok(admitted) => admitted,
            Err(Refused(code, message)) => {
                let reason = match code {
                    400 => "BadRequest",
                    403 => "Forbidden",
                    422 => "Invalid",
                    _ => "InternalError",
                };
                return json_response(code, &status(code, reason, &message));
            }
        };
        let mut state = inner.lock().unwrap();
        let current = state.objects.get(&key(&attributes.resource, &attributes.namespace, &attributes.name));
        if version(current) != version(attributes.old_object.as_ref()) {
            continue;
        }
        let code = if attributes.old_object.is_some() { 200 } else { 201 };
        let stored = state.store(&attributes.resource, admitted);
        return json_response(code, &stored);
    }
    json_response(409, &status(409, "Conflict", "the object kept changing while it was admitted"))
}

/// Server-side apply, as far as annotations go: `manager` owns exactly the annotations of its
/// patch afterwards; one it owned before and left out is removed (unless another manager owns
/// it too). Ownership is kept in `metadata.managedFields` as the apiserver writes it.
fn apply_annotations(mut object: Value, patch: &Value, manager: &str) -> Value {
    let applied: BTreeMap<String, Value> = patch
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let owned = |entry: &Value| -> BTreeSet<String> {
        entry
            .pointer("/fieldsV1/f:metadata/f:annotations")
            .and_then(Value::as_object)
            .map(|a| a.keys().filter_map(|k| k.strip_prefix("f:").map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let metadata = object["metadata"].as_object_mut().unwrap();
    let managed = metadata.entry("managedFields").or_insert_with(|| json!([])).as_array_mut().unwrap();
    let mine = managed.iter().position(|e| e["manager"] == manager && e["operation"] == "Apply");
    let before: BTreeSet<String> = mine.map(|i| owned(&managed[i])).unwrap_or_default();
    let others: BTreeSet<String> =
        managed.iter().enumerate().filter(|(i, _)| Some(*i) != mine).flat_map(|(_, e)| owned(e)).collect();
    let fields: serde_json::Map<String, Value> = applied.keys().map(|k| (format!("f:{k}"), json!({}))).collect();
    let entry = json!({"manager": manager, "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1",
                       "fieldsV1": {"f:metadata": {"f:annotations": fields}}});
    match mine {
        Some(i) if applied.is_empty() => {
            managed.remove(i);
        }
        Some(i) => managed[i] = entry,
        None if !applied.is_empty() => managed.push(entry),
        None => {}
    }
    let annotations = metadata.entry("annotations").or_insert_with(|| json!({})).as_object_mut().unwrap();
    for released in before.iter().filter(|k| !applied.contains_key(*k) && !others.contains(*k)) {
        annotations.remove(released);
    }
    for (k, v) in applied {
        annotations.insert(k, v);
    }
    object
}
