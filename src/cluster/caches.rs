//! The watch caches (SPEC §10.8): the only part of the webhook that reads the cluster. An edge:
//! it lists and watches through kube, and publishes what it knows as [`ClusterSnapshot`]s that
//! the request path and the reconciler read without waiting for the API.
//!
//! - Namespaces: a metadata-only watch, stripped to what the view needs (names, labels and
//!   `deletionTimestamp`): `Api<PartialObjectMeta<_>>` asks for metadata only.
//! - Services: a metadata-only watch (SPEC §10.8), names only. With `--gateway-api`
//!   (`gateway_api` of [`start`]) a full watch instead, since §11.2 needs `spec.ports`, which
//!   metadata does not carry: read into [`ServicePorts`], which takes the name, namespace and
//!   port numbers and skips the rest while parsing; stored stripped to those.
//! - VirtualServices, Ingresses and, with `--gateway-api`, HTTPRoutes (both API groups) and
//!   ReferenceGrants of every namespace, as read (the reconciler and §4–§6, §11 need their spec
//!   and annotations), without `status` and with only the webhook's own managedFields entry (the
//!   reconciler reads its ownership from it). Without `--gateway-api` those three are not
//!   watched: empty, and listed from the start.
//! - A kind the cluster does not serve (no Istio in a Linkerd cluster, no Gateway API CRDs) is
//!   empty and listed, and looked up again every [`CacheOptions::discovery_interval`]; one
//!   that appears is then watched, one that goes away is emptied.
//! - Each watch runs through kube's watcher with its default backoff: a watch that breaks keeps
//!   its last state and retries; a re-list replaces the state whole (an object missing from it
//!   is gone, a Namespace among them counted in `gone_since`).
//!
//! Nothing is published (`None`) until every cache has listed once; then a new snapshot after
//! each burst of changes ([`CacheOptions::rebuild_delay`]), and only when it differs.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt as _, TryStreamExt as _};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta, TypeMeta};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{Lookup, Store};
use kube::runtime::watcher::{self, Event};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::reconcile::FIELD_MANAGER;
use super::state::ClusterState;
use super::view::FROM_LABEL;
use super::{ClusterSnapshot, ClusterView};

/// One watch cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cache {
    Namespaces,
    Services,
    VirtualServices,
    Ingresses,
    HttpRoutes,
    LinkerdHttpRoutes,
    ReferenceGrants,
}

impl Cache {
    pub const ALL: [Cache; 7] = [
        Cache::Namespaces,
        Cache::Services,
        Cache::VirtualServices,
        Cache::Ingresses,
        Cache::HttpRoutes,
        Cache::LinkerdHttpRoutes,
        Cache::ReferenceGrants,
    ];

    /// The `cache` label of the metrics, and the name in logs and `/readyz`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cache::Namespaces => "namespaces",
            Cache::Services => "services",
            Cache::VirtualServices => "virtualservices",
            Cache::Ingresses => "ingresses",
            Cache::HttpRoutes => "httproutes",
            Cache::LinkerdHttpRoutes => "linkerd-httproutes",
            Cache::ReferenceGrants => "referencegrants",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A kind found through discovery: its group, the versions taken in order of preference, and
/// its kind and resource names.
#[derive(Clone, Copy, Debug)]
struct Discovered {
    cache: Cache,
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    plural: &'static str,
}

const VIRTUAL_SERVICES: Discovered = Discovered {
    cache: Cache::VirtualServices,
    group: "networking.istio.io",
    versions: &["v1", "v1beta1"],
    kind: "VirtualService",
    plural: "virtualservices",
};
const INGRESSES: Discovered = Discovered {
    cache: Cache::Ingresses,
    group: "networking.k8s.io",
    versions: &["v1"],
    kind: "Ingress",
    plural: "ingresses",
};
const HTTP_ROUTES: Discovered = Discovered {
    cache: Cache::HttpRoutes,
    group: "gateway.networking.k8s.io",
    versions: &["v1", "v1beta1"],
    kind: "HTTPRoute",
    plural: "httproutes",
};
const LINKERD_HTTP_ROUTES: Discovered = Discovered {
    cache: Cache::LinkerdHttpRoutes,
    group: "policy.linkerd.io",
    versions: &["v1beta3", "v1beta2"],
    kind: "HTTPRoute",
    plural: "httproutes",
};
/// The version watched is the version the reconciler writes its grants at.
const REFERENCE_GRANTS: Discovered = Discovered {
    cache: Cache::ReferenceGrants,
    group: "gateway.networking.k8s.io",
    versions: &["v1", "v1beta1"],
    kind: "ReferenceGrant",
    plural: "referencegrants",
};
/// The kinds only `--gateway-api` needs.
const GATEWAY_API_CACHES: [Cache; 3] = [Cache::HttpRoutes, Cache::LinkerdHttpRoutes, Cache::ReferenceGrants];
/// The kinds found through discovery, in the order of their [`Cache`]s.
const DISCOVERED: [Discovered; 5] = [VIRTUAL_SERVICES, INGRESSES, HTTP_ROUTES, LINKERD_HTTP_ROUTES, REFERENCE_GRANTS];

/// A Service as the Service cache reads and keeps it: name, namespace and the port numbers
/// (SPEC §11.2: a route to a Service must name its port). Parsed from the full Service (a
/// metadata-only watch carries no spec); serde skips every other field while parsing, so the
/// rest of the spec is never held.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ServicePorts {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PortsSpec>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct PortsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortNumber>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct PortNumber {
    pub port: i32,
}

impl kube::Resource for ServicePorts {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Service".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "services".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl ServicePorts {
    /// The port numbers, in the Service's order.
    pub fn ports(&self) -> Vec<u64> {
        let ports = self.spec.as_ref().and_then(|spec| spec.ports.as_deref()).unwrap_or_default();
        ports.iter().filter_map(|p| u64::try_from(p.port).ok()).collect()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
}

/// The caches' metrics: `divert_webhook_cache_synced{cache}`,
/// `divert_webhook_cache_watch_errors_total{cache}` and
/// `divert_webhook_cache_last_event_age_seconds{cache}` (computed at each scrape). Without a
/// cluster no cache starts and none of them has a sample.
#[derive(Debug, Default)]
pub struct CacheMetrics {
    synced: Family<CacheLabels, Gauge>,
    watch_errors: Family<CacheLabels, Counter>,
    last_event: Arc<Mutex<BTreeMap<Cache, Instant>>>,
}

/// Renders the age of each cache's last event at scrape time.
#[derive(Debug)]
struct LastEventAge(Arc<Mutex<BTreeMap<Cache, Instant>>>);

impl Collector for LastEventAge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ages: Vec<(Cache, f64)> = {
            let last = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            last.iter().map(|(cache, at)| (*cache, at.elapsed().as_secs_f64())).collect()
        };
        if ages.is_empty() {
            return Ok(());
        }
        let family = Family::<CacheLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        for (cache, age) in ages {
            family.get_or_create(&CacheLabels { cache: cache.as_str() }).set(age);
        }
        let metric = encoder.encode_descriptor(
            "cache_last_event_age",
            "Seconds since the cache's last watch event (or since its kind was last found absent), per cache",
            Some(&Unit::Seconds),
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}

impl CacheMetrics {
    /// Registers the caches' metrics in `registry` (the server's, prefix `divert_webhook`).
    pub fn register(registry: &mut Registry) -> Arc<CacheMetrics> {
        let metrics = Arc::new(CacheMetrics::default());
        registry.register(
            "cache_synced",
            "1 while the cache holds a complete list (an absent kind counts as listed and empty), 0 while it lists",
            metrics.synced.clone(),
        );
        registry.register(
            "cache_watch_errors",
            "Failed lists, watches and discoveries per cache; the cache keeps its last state and retries with backoff",
            metrics.watch_errors.clone(),
        );
        registry.register_collector(Box::new(LastEventAge(metrics.last_event.clone())));
        metrics
    }

    fn labels(cache: Cache) -> CacheLabels {
        CacheLabels { cache: cache.as_str() }
    }

    /// Every cache has its samples from the start (0 synced, 0 errors), so that a first error
    /// reads as 0 -> 1.
    fn started(&self, cache: Cache) {
        self.synced.get_or_create(&Self::labels(cache)).set(0);
        let _ = self.watch_errors.get_or_create(&Self::labels(cache));
        self.event(cache);
    }

    fn set_synced(&self, cache: Cache, synced: bool) {
        self.synced.get_or_create(&Self::labels(cache)).set(i64::from(synced));
    }

    fn watch_error(&self, cache: Cache) {
        self.watch_errors.get_or_create(&Self::labels(cache)).inc();
    }

    fn event(&self, cache: Cache) {
        self.last_event.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(cache, Instant::now());
    }
}

/// Timings of the caches (tests shorten them).
#[derive(Clone, Copy, Debug)]
pub struct CacheOptions {
    /// After a change, how long to wait for more before building a snapshot: a burst of events
    /// (a re-list, a namespace deleted with its objects) makes one snapshot.
    pub rebuild_delay: Duration,
    /// How often a kind the cluster does not serve is looked for again, and a served one
    /// checked for a changed version.
    pub discovery_interval: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions { rebuild_delay: Duration::from_millis(150), discovery_interval: Duration::from_secs(60) }
    }
}

/// A namespace seen deleted is remembered this long. Past it, forgetting it changes nothing for
/// the stale cleanup as long as `--stale-grace` is shorter: a namespace never seen counts as gone
/// since the watch began, which is longer.
const GONE_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// A discovered kind's store, and the apiVersion it is watched at.
type Watched = (String, Store<DynamicObject>);

/// What the watch tasks share with the snapshot builder.
struct Shared {
    changed: Notify,
    /// Per cache: has it listed once (or found its kind absent)? Readiness waits for all.
    listed: [AtomicBool; Cache::ALL.len()],
    gone_since: Mutex<BTreeMap<String, Instant>>,
    /// When the Namespace cache first listed.
    watching_since: Mutex<Option<Instant>>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    services: Store<ServicePorts>,
    /// The stores of the discovered kinds, with the apiVersion each is watched at; None while
    /// the kind is absent (or not watched).
    objects: [Mutex<Option<Watched>>; DISCOVERED.len()],
}

impl Shared {
    fn new(namespaces: Store<PartialObjectMeta<Namespace>>, services: Store<ServicePorts>) -> Shared {
        Shared {
            changed: Notify::new(),
            listed: Default::default(),
            gone_since: Mutex::new(BTreeMap::new()),
            watching_since: Mutex::new(None),
            namespaces,
            services,
            objects: Default::default(),
        }
    }

    fn mark_listed(&self, cache: Cache) {
        if !self.listed[cache.index()].swap(true, Ordering::SeqCst) {
            tracing::info!(cache = cache.as_str(), "cache listed");
        }
        self.changed.notify_one();
    }

    fn object_slot(&self, cache: Cache) -> &Mutex<Option<Watched>> {
        &self.objects[cache.index() - Cache::VirtualServices.index()]
    }
}

/// Whether every cache has listed once, for `/readyz`.
#[derive(Clone)]
pub struct CacheStatus(Arc<Shared>);

impl CacheStatus {
    /// None when every cache has listed once; else the caches still waited for, named.
    pub fn waiting_for(&self) -> Option<String> {
        let waiting: Vec<&str> = Cache::ALL
            .into_iter()
            .filter(|cache| !self.0.listed[cache.index()].load(Ordering::SeqCst))
            .map(Cache::as_str)
            .collect();
        (!waiting.is_empty()).then(|| waiting.join(", "))
    }
}

/// The running caches. Dropping this stops them.
pub struct Caches {
    snapshots: watch::Receiver<Option<Arc<ClusterSnapshot>>>,
    status: CacheStatus,
    tasks: Vec<JoinHandle<()>>,
}

impl Caches {
    /// The published snapshots: `None` until every cache has listed once.
    pub fn snapshots(&self) -> watch::Receiver<Option<Arc<ClusterSnapshot>>> {
        self.snapshots.clone()
    }

    pub fn status(&self) -> CacheStatus {
        self.status.clone()
    }
}

impl Drop for Caches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts every cache and the snapshot builder on the current tokio runtime; `gateway_api`
/// (`--gateway-api`, from the settings) adds the HTTPRoute and ReferenceGrant caches and the
/// Services' ports.
pub fn start(client: kube::Client, metrics: Arc<CacheMetrics>, options: CacheOptions, gateway_api: bool) -> Caches {
    let namespaces_writer = Writer::<PartialObjectMeta<Namespace>>::default();
    let services_writer = Writer::<ServicePorts>::default();
    let shared = Arc::new(Shared::new(namespaces_writer.as_reader(), services_writer.as_reader()));
    for cache in Cache::ALL {
        metrics.started(cache);
    }
    let (sender, snapshots) = watch::channel(None);
    let mut tasks = Vec::new();

    let namespaces =
        watcher::watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), watcher::Config::default());
    tasks.push(tokio::spawn(follow(
        Cache::Namespaces,
        namespaces.default_backoff(),
        namespaces_writer,
        strip_namespace,
        shared.clone(),
        metrics.clone(),
        namespace_history(shared.clone()),
    )));
    let services = if gateway_api {
        watcher::watcher(Api::<ServicePorts>::all(client.clone()), watcher::Config::default()).boxed()
    } else {
        // Names only: the metadata of each Service, as a ServicePorts without ports.
        let metadata =
            watcher::watcher(Api::<PartialObjectMeta<ServicePorts>>::all(client.clone()), watcher::Config::default());
        metadata.map_ok(|event| event_map(event, |meta| ServicePorts { metadata: meta.metadata, spec: None })).boxed()
    };
    tasks.push(tokio::spawn(follow(
        Cache::Services,
        services.default_backoff(),
        services_writer,
        strip_service,
        shared.clone(),
        metrics.clone(),
        |_: &Event<_>, _: &Store<_>| {},
    )));
    for kind in DISCOVERED {
        if !gateway_api && GATEWAY_API_CACHES.contains(&kind.cache) {
            // Not watched: empty, and listed from the start.
            metrics.set_synced(kind.cache, true);
            shared.mark_listed(kind.cache);
            continue;
        }
        tasks.push(tokio::spawn(follow_discovered(client.clone(), kind, shared.clone(), metrics.clone(), options)));
    }
    tasks.push(tokio::spawn(build_snapshots(shared.clone(), sender, options)));
    Caches { snapshots, status: CacheStatus(shared), tasks }
}

/// Applies a watch stream to its store until the task is stopped. Errors are counted and
/// logged; the stream (kube's watcher with backoff) retries by itself. `after` sees each event
/// once the store has taken it.
async fn follow<K>(
    cache: Cache,
    stream: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    mut writer: Writer<K>,
    strip: fn(&mut K),
    shared: Arc<Shared>,
    metrics: Arc<CacheMetrics>,
    mut after: impl FnMut(&Event<K>, &Store<K>),
) where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let store = writer.as_reader();
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                let event = event.modify(strip);
                writer.apply_watcher_event(&event);
                after(&event, &store);
                metrics.event(cache);
                match event {
                    Event::Init => metrics.set_synced(cache, false),
                    Event::InitApply(_) => {}
                    Event::InitDone => {
                        metrics.set_synced(cache, true);
                        tracing::debug!(cache = cache.as_str(), objects = store.len(), "cache (re-)listed");
                        shared.mark_listed(cache);
                    }
                    Event::Apply(_) | Event::Delete(_) => shared.changed.notify_one(),
                }
            }
            Err(error) => {
                metrics.watch_error(cache);
                tracing::warn!(
                    cache = cache.as_str(),
                    %error,
                    "watch failed; the cache keeps its last state and retries with backoff"
                );
            }
        }
    }
}

/// The same event about another type of object.
fn event_map<A, B>(event: Event<A>, f: impl Fn(A) -> B) -> Event<B> {
    match event {
        Event::Init => Event::Init,
        Event::InitApply(object) => Event::InitApply(f(object)),
        Event::InitDone => Event::InitDone,
        Event::Apply(object) => Event::Apply(f(object)),
        Event::Delete(object) => Event::Delete(f(object)),
    }
}

/// Records deleted namespaces in `gone_since`: seen deleted, or missing from a re-list (a
/// deletion during a watch outage leaves no event).
fn namespace_history(
    shared: Arc<Shared>,
) -> impl FnMut(&Event<PartialObjectMeta<Namespace>>, &Store<PartialObjectMeta<Namespace>>) {
    let names = |store: &Store<PartialObjectMeta<Namespace>>| -> BTreeSet<String> {
        store.state().iter().filter_map(|ns| ns.metadata.name.clone()).collect()
    };
    let mut before_relist = BTreeSet::new();
    move |event, store| {
        let now = Instant::now();
        let mut gone = shared.gone_since.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match event {
            // The store still holds the previous list: remember what was there.
            Event::Init => before_relist = names(store),
            Event::InitApply(_) => {}
            Event::InitDone => {
                let listed = names(store);
                for name in before_relist.difference(&listed) {
                    gone.insert(name.clone(), now);
                }
                gone.retain(|name, since| !listed.contains(name) && now.duration_since(*since) < GONE_MEMORY);
                before_relist.clear();
                shared.watching_since.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get_or_insert(now);
            }
            Event::Apply(ns) => {
                if let Some(name) = &ns.metadata.name {
                    gone.remove(name);
                }
            }
            Event::Delete(ns) => {
                gone.retain(|_, since| now.duration_since(*since) < GONE_MEMORY);
                if let Some(name) = &ns.metadata.name {
                    gone.insert(name.clone(), now);
                }
            }
        }
    }
}

/// What the view needs of a Namespace: its name, labels and `deletionTimestamp`.
fn strip_namespace(ns: &mut PartialObjectMeta<Namespace>) {
    let metadata = std::mem::take(&mut ns.metadata);
    ns.types = None;
    ns.metadata = ObjectMeta {
        name: metadata.name,
        labels: metadata.labels,
        deletion_timestamp: metadata.deletion_timestamp,
        ..ObjectMeta::default()
    };
}

/// What the view and §11.2 need of a Service: its name, namespace and port numbers.
fn strip_service(service: &mut ServicePorts) {
    let metadata = std::mem::take(&mut service.metadata);
    service.metadata = ObjectMeta { name: metadata.name, namespace: metadata.namespace, ..ObjectMeta::default() };
    // A Service without ports keeps no spec at all.
    if service.spec.as_ref().is_some_and(|spec| spec.ports.as_ref().is_none_or(Vec::is_empty)) {
        service.spec = None;
    }
}

/// Objects the reconciler reads whole: without `status` (never read, never written), and with
/// only the webhook's own managedFields entry (its ownership of the header annotation, §10.3).
fn strip_object(object: &mut DynamicObject) {
    if let Some(managed) = &mut object.metadata.managed_fields {
        managed.retain(|entry| entry.manager.as_deref() == Some(FIELD_MANAGER));
    }
    if let Some(data) = object.data.as_object_mut() {
        data.remove("status");
    }
}

/// Looks the kind up; None when the cluster serves none of its versions.
async fn discover(client: &kube::Client, kind: Discovered) -> Result<Option<ApiResource>, kube::Error> {
    for version in kind.versions {
        let api_version = format!("{}/{version}", kind.group);
        match client.list_api_group_resources(&api_version).await {
            Ok(list) if list.resources.iter().any(|r| r.name == kind.plural) => {
                return Ok(Some(ApiResource {
                    group: kind.group.into(),
                    version: version.to_string(),
                    api_version,
                    kind: kind.kind.into(),
                    plural: kind.plural.into(),
                }));
            }
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(None)
}

/// A discovered kind's cache: found, it is watched until discovery finds it gone or served in
/// another version; absent, it is empty and listed, and looked for again.
async fn follow_discovered(
    client: kube::Client,
    kind: Discovered,
    shared: Arc<Shared>,
    metrics: Arc<CacheMetrics>,
    options: CacheOptions,
) {
    let cache = kind.cache;
    let mut retry = Duration::from_millis(800);
    let mut known_absent = false;
    loop {
        let resource = match discover(&client, kind).await {
            Ok(resource) => resource,
            Err(error) => {
                metrics.watch_error(cache);
                tracing::warn!(cache = cache.as_str(), %error, ?retry, "looking up the kind failed; the cache keeps its last state and retries");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        retry = Duration::from_millis(800);
        let Some(resource) = resource else {
            if !known_absent {
                tracing::info!(
                    cache = cache.as_str(),
                    group = kind.group,
                    kind = kind.kind,
                    every = ?options.discovery_interval,
                    "the cluster does not serve this kind: the cache is empty, and the kind is looked for again"
                );
                known_absent = true;
            }
            if shared.object_slot(cache).lock().unwrap_or_else(|p| p.into_inner()).take().is_some() {
                shared.changed.notify_one();
            }
            metrics.set_synced(cache, true);
            metrics.event(cache);
            shared.mark_listed(cache);
            tokio::time::sleep(options.discovery_interval).await;
            continue;
        };
        known_absent = false;
        tracing::info!(cache = cache.as_str(), api_version = %resource.api_version, kind = kind.kind, "watching");
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        let types = TypeMeta { api_version: resource.api_version.clone(), kind: resource.kind.clone() };
        let writer = Writer::<DynamicObject>::new(resource.clone());
        let slot_shared = shared.clone();
        let api_version = resource.api_version.clone();
        let watching = follow(
            cache,
            watcher::watcher(api, watcher::Config::default())
                .map_ok(move |event| {
                    // Items of a list may come without apiVersion and kind; the reconciler reads them.
                    event.modify(|object| {
                        if object.types.is_none() {
                            object.types = Some(types.clone());
                        }
                    })
                })
                .default_backoff(),
            writer,
            strip_object,
            shared.clone(),
            metrics.clone(),
            // The store in use is replaced once the new one has listed, so that a change of
            // version empties nothing in between.
            move |event: &Event<DynamicObject>, store: &Store<DynamicObject>| {
                if matches!(event, Event::InitDone) {
                    *slot_shared.object_slot(cache).lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((api_version.clone(), store.clone()));
                }
            },
        );
        let served_differently = async {
            loop {
                tokio::time::sleep(options.discovery_interval).await;
                match discover(&client, kind).await {
                    Ok(Some(now)) if now.version == resource.version => {}
                    Ok(_) => return,
                    Err(error) => {
                        tracing::debug!(cache = cache.as_str(), %error, "checking the kind's version failed; watching on")
                    }
                }
            }
        };
        tokio::select! {
            () = watching => {}
            () = served_differently => {
                tracing::info!(cache = cache.as_str(), "the kind's served versions changed; looking it up again");
            }
        }
    }
}

/// Builds and publishes snapshots: after a change, waits `rebuild_delay` for more, then builds
/// one from every store, once every cache has listed. An unchanged snapshot is not published.
async fn build_snapshots(
    shared: Arc<Shared>,
    sender: watch::Sender<Option<Arc<ClusterSnapshot>>>,
    options: CacheOptions,
) {
    loop {
        shared.changed.notified().await;
        tokio::time::sleep(options.rebuild_delay).await;
        if !shared.listed.iter().all(|listed| listed.load(Ordering::SeqCst)) {
            continue;
        }
        let snapshot = snapshot_of(&shared);
        let unchanged = sender
            .borrow()
            .as_deref()
            .is_some_and(|last| last.state == snapshot.state && last.gone_since == snapshot.gone_since);
        if !unchanged {
            sender.send_replace(Some(Arc::new(snapshot)));
        }
    }
}

/// The snapshot of what the stores hold now.
fn snapshot_of(shared: &Shared) -> ClusterSnapshot {
    let mut state = ClusterState { view: ClusterView::empty_cluster(), ..ClusterState::default() };
    for ns in shared.namespaces.state() {
        let Some(name) = ns.metadata.name.as_deref() else { continue };
        state.view.add_namespace(name, ns.metadata.labels.clone().unwrap_or_default());
        if ns.metadata.deletion_timestamp.is_some() {
            state.terminating.insert(name.to_string());
        }
    }
    // Ports only of the shared namespaces' Services (the namespaces a `divert.okteto.com/from`
    // label names): §11.2 reads no others, and the snapshot stays small.
    let shared_namespaces: BTreeSet<String> =
        state.view.namespaces().filter_map(|(_, namespace)| namespace.labels.get(FROM_LABEL).cloned()).collect();
    let mut service_ports: BTreeMap<String, BTreeMap<String, Vec<u64>>> = BTreeMap::new();
    // Services of a namespace the Namespace cache no longer has (deleted, its Services not yet)
    // would make it exist again in the view: left out.
    for service in shared.services.state() {
        if let (Some(namespace), Some(name)) = (&service.metadata.namespace, &service.metadata.name)
            && state.view.namespace(namespace).is_some()
        {
            state.view.add_service(namespace, name);
            if shared_namespaces.contains(namespace) {
                let ports = service.ports();
                if !ports.is_empty() {
                    service_ports.entry(namespace.clone()).or_default().insert(name.clone(), ports);
                }
            }
        }
    }
    state.service_ports = service_ports;
    let slot = |cache: Cache| shared.object_slot(cache).lock().unwrap_or_else(|p| p.into_inner()).clone();
    let objects = |cache: Cache| -> Vec<Value> {
        let Some((_, store)) = slot(cache) else {
            return Vec::new();
        };
        let mut objects: Vec<(String, String, Value)> = store
            .state()
            .iter()
            .filter_map(|object| {
                let value = serde_json::to_value(object.as_ref()).ok()?;
                Some((object.metadata.namespace.clone().unwrap_or_default(), object.metadata.name.clone()?, value))
            })
            .collect();
        // In a stable order, so that the reconciler's plan and its logs are too.
        objects.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        objects.into_iter().map(|(_, _, value)| value).collect()
    };
    state.virtual_services = objects(Cache::VirtualServices);
    state.ingresses = objects(Cache::Ingresses);
    state.http_routes = objects(Cache::HttpRoutes);
    state.http_routes.extend(objects(Cache::LinkerdHttpRoutes));
    state.reference_grants = objects(Cache::ReferenceGrants);
    // The versions the reconciler writes at: those the caches watch (the Gateway API's HTTPRoute
    // before Linkerd's), none where the cluster serves none.
    state.served.http_route =
        slot(Cache::HttpRoutes).or_else(|| slot(Cache::LinkerdHttpRoutes)).map(|(api_version, _)| api_version);
    state.served.reference_grant = slot(Cache::ReferenceGrants).map(|(api_version, _)| api_version);
    let gone_since = shared.gone_since.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let watching_since = shared.watching_since.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or_else(Instant::now);
    ClusterSnapshot { state, gone_since, watching_since }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};

    fn meta<K>(name: &str, namespace: Option<&str>, labels: &[(&str, &str)]) -> PartialObjectMeta<K> {
        PartialObjectMeta {
            types: Some(TypeMeta { api_version: "meta.k8s.io/v1".into(), kind: "PartialObjectMetadata".into() }),
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: namespace.map(str::to_string),
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                annotations: Some(BTreeMap::from([("big".to_string(), "x".repeat(100))])),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                resource_version: Some("7".into()),
                uid: Some("u".into()),
                ..ObjectMeta::default()
            },
            _phantom: std::marker::PhantomData,
        }
    }

    fn service(name: &str, namespace: &str, ports: &[i32]) -> ServicePorts {
        ServicePorts {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            spec: Some(PortsSpec { ports: Some(ports.iter().map(|&port| PortNumber { port }).collect()) }),
        }
    }

    /// Applies `events` (stripped, as the watch does) to `writer`, then `after`.
    fn apply<K>(
        writer: &mut Writer<K>,
        strip: fn(&mut K),
        events: Vec<Event<K>>,
        mut after: impl FnMut(&Event<K>, &Store<K>),
    ) where
        K: Lookup + Clone + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        let store = writer.as_reader();
        for event in events {
            let event = event.modify(strip);
            writer.apply_watcher_event(&event);
            after(&event, &store);
        }
    }

    #[test]
    fn metadata_is_stripped_to_what_the_view_needs() {
        let mut ns = meta::<Namespace>("cindy", None, &[("divert.okteto.com/from", "staging")]);
        ns.metadata.deletion_timestamp = Some(Time(Default::default()));
        strip_namespace(&mut ns);
        assert_eq!(ns.types, None);
        assert_eq!(ns.metadata.name.as_deref(), Some("cindy"));
        assert_eq!(ns.metadata.labels.as_ref().unwrap()["divert.okteto.com/from"], "staging");
        assert!(ns.metadata.deletion_timestamp.is_some());
        assert!(ns.metadata.annotations.is_none() && ns.metadata.managed_fields.is_none() && ns.metadata.uid.is_none());
        let mut service = service("api", "cindy", &[8080, 9090]);
        service.metadata = meta::<Namespace>("api", Some("cindy"), &[("app", "api")]).metadata;
        strip_service(&mut service);
        assert_eq!(
            service.metadata,
            ObjectMeta { name: Some("api".into()), namespace: Some("cindy".into()), ..ObjectMeta::default() }
        );
        assert_eq!(service.ports(), [8080, 9090]);
        let mut portless = self::service("db", "cindy", &[]);
        strip_service(&mut portless);
        assert!(portless.spec.is_none());
    }

    /// A Service as the apiserver sends it, status, selector and all: only the ports are read.
    #[test]
    fn a_full_service_is_read_into_its_ports() {
        let full = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "api", "namespace": "staging", "labels": {"app": "api"}},
            "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.1", "selector": {"app": "api"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}, {"port": 443}]},
            "status": {"loadBalancer": {}},
        });
        let service: ServicePorts = serde_json::from_value(full).unwrap();
        assert_eq!(service.ports(), [80, 443]);
        assert_eq!(service.metadata.name.as_deref(), Some("api"));
        let metadata_only: ServicePorts =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "api"}})).unwrap();
        assert!(metadata_only.ports().is_empty());
    }

    #[test]
    fn snapshots_are_built_from_the_stores_and_relists_record_namespaces_gone() {
        let mut namespaces = Writer::<PartialObjectMeta<Namespace>>::default();
        let mut services = Writer::<ServicePorts>::default();
        let shared = Arc::new(Shared::new(namespaces.as_reader(), services.as_reader()));
        let mut history = namespace_history(shared.clone());
        let from = [("divert.okteto.com/from", "staging")];
        let mut leaving = meta::<Namespace>("leaving", None, &from);
        leaving.metadata.deletion_timestamp = Some(Time(Default::default()));
        apply(
            &mut namespaces,
            strip_namespace,
            vec![
                Event::Init,
                Event::InitApply(meta("staging", None, &[])),
                Event::InitApply(meta("cindy", None, &from)),
                Event::InitApply(meta("dave", None, &from)),
                Event::InitApply(leaving),
                Event::InitDone,
            ],
            &mut history,
        );
        apply(
            &mut services,
            strip_service,
            vec![
                Event::Init,
                Event::InitApply(service("api", "staging", &[8080])),
                Event::InitApply(service("web", "staging", &[])),
                Event::InitApply(service("api", "cindy", &[8080])),
                Event::InitDone,
                Event::Apply(service("web", "cindy", &[80])),
                Event::Delete(service("api", "cindy", &[8080])),
            ],
            |_, _| {},
        );
        let snapshot = snapshot_of(&shared);
        let settings = crate::settings::Settings::default();
        assert!(snapshot.state.view.is_known());
        assert!(snapshot.state.view.runs("cindy", "web") && !snapshot.state.view.runs("cindy", "api"));
        assert_eq!(snapshot.state.developer_of("cindy", &settings), Some("staging"));
        assert_eq!(snapshot.state.developer_of("leaving", &settings), None, "being deleted");
        assert_eq!(snapshot.state.terminating, BTreeSet::from(["leaving".to_string()]));
        assert!(snapshot.gone_since.is_empty());
        // Ports of the shared namespace's Services only (staging is named by cindy's label).
        let ports = BTreeMap::from([("api".to_string(), vec![8080])]);
        assert_eq!(snapshot.state.service_ports, BTreeMap::from([("staging".to_string(), ports)]));

        // dave deleted as it happens; cindy missing from a re-list (deleted during an outage).
        apply(
            &mut namespaces,
            strip_namespace,
            vec![
                Event::Delete(meta("dave", None, &from)),
                Event::Init,
                Event::InitApply(meta("staging", None, &[])),
                Event::InitApply(meta("leaving", None, &from)),
                Event::InitDone,
            ],
            &mut history,
        );
        let snapshot = snapshot_of(&shared);
        assert_eq!(snapshot.gone_since.keys().collect::<Vec<_>>(), ["cindy", "dave"]);
        assert!(snapshot.state.view.namespace("cindy").is_none());
        assert!(!snapshot.state.view.runs("cindy", "web"), "the Services of a namespace gone are left out");
        // Back again: no longer gone.
        apply(&mut namespaces, strip_namespace, vec![Event::Apply(meta("cindy", None, &[]))], &mut history);
        assert_eq!(snapshot_of(&shared).gone_since.keys().collect::<Vec<_>>(), ["dave"]);
    }
}
