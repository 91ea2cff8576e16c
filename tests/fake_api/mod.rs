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
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
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
    requests: Vec<String>,
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
    let mut state = inner.lock().unwrap();
    state.requests.push(format!("{method} {uri}"));
    if state.unavailable {
        // 500, not 503: kube's client retries a 503 by itself for minutes before its caller sees it.
        return json_response(500, &status(500, "InternalError", "the fake API is failing"));
    }
    let path = uri.path();
    // Discovery of one group version.
    if method == Method::GET
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
        (Method::GET, None) if query_param(&uri, "watch") == Some("true") => {
            let from: u64 = query_param(&uri, "resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
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
            let offset: usize = query_param(&uri, "continue").and_then(|c| c.parse().ok()).unwrap_or(0);
            let limit: usize =
                query_param(&uri, "limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
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
        (Method::POST, None) => {
            let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                return json_response(400, &status(400, "BadRequest", "body is not JSON"));
            };
            if let Some(ns) = &namespace {
                object["metadata"]["namespace"] = json!(ns);
            }
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
            if state.objects.contains_key(&key(&resource, &namespace_str, &name)) {
                return json_response(
                    409,
                    &status(409, "AlreadyExists", &format!("{} \"{name}\" already exists", resource.plural)),
                );
            }
            let stored = state.store(&resource, object);
            json_response(201, &stored)
        }
        (Method::PUT, Some(name)) => {
            let Ok(object) = serde_json::from_slice::<Value>(&body) else {
                return json_response(400, &status(400, "BadRequest", "body is not JSON"));
            };
            let Some(current) = state.objects.get(&key(&resource, &namespace_str, &name)) else {
                return json_response(
                    404,
                    &status(404, "NotFound", &format!("{} \"{name}\" not found", resource.plural)),
                );
            };
            let given = object.pointer("/metadata/resourceVersion").and_then(Value::as_str);
            if given.is_some_and(|rv| Some(rv) != current.pointer("/metadata/resourceVersion").and_then(Value::as_str))
            {
                return json_response(
                    409,
                    &status(
                        409,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ),
                );
            }
            let stored = state.store(&resource, object);
            json_response(200, &stored)
        }
        (Method::PATCH, Some(name)) => {
            let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            let is_apply = content_type.starts_with("application/apply-patch+yaml");
            let current = state.objects.get(&key(&resource, &namespace_str, &name)).cloned();
            // A server-side apply makes the object when there is none (the apiserver's upsert).
            let current = match current {
                None if is_apply => Some(json!({"metadata": {"name": name, "namespace": namespace_str}})),
                current => current,
            };
            let Some(current) = current else {
                return json_response(
                    404,
                    &status(404, "NotFound", &format!("{} \"{name}\" not found", resource.plural)),
                );
            };
            let patched = match content_type.split(';').next().unwrap_or("") {
                "application/apply-patch+yaml" => {
                    let Some(manager) = query_param(&uri, "fieldManager") else {
                        return json_response(422, &status(422, "Invalid", "fieldManager is required for apply patch"));
                    };
                    let Ok(patch) = serde_saphyr::from_str::<Value>(std::str::from_utf8(&body).unwrap_or("")) else {
                        return json_response(400, &status(400, "BadRequest", "apply patch is not YAML"));
                    };
                    server_side_apply(current, &patch, manager)
                }
                "application/json-patch+json" => {
                    let Ok(patch) = serde_json::from_slice::<json_patch::Patch>(&body) else {
                        return json_response(400, &status(400, "BadRequest", "not a JSON patch"));
                    };
                    let mut object = current;
                    if let Err(error) = json_patch::patch(&mut object, &patch) {
                        return json_response(422, &status(422, "Invalid", &format!("the JSON patch failed: {error}")));
                    }
                    object
                }
                "application/merge-patch+json" => {
                    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                        return json_response(400, &status(400, "BadRequest", "not a merge patch"));
                    };
                    let mut object = current;
                    json_patch::merge(&mut object, &patch);
                    object
                }
                other => {
                    return json_response(415, &status(415, "UnsupportedMediaType", &format!("patch type {other:?}")));
                }
            };
            let stored = state.store(&resource, patched);
            json_response(200, &stored)
        }
        (Method::DELETE, Some(name)) => {
            // DeleteOptions' `preconditions.uid`: the object must still be the one meant.
            let options: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
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
