//! The reconciler's decision for Gateway API HTTPRoutes (SPEC §11.1, §11.3), as pure functions:
//! from the cluster's state to the objects the reconciler owns (developer routes beside the
//! shared ones, ReferenceGrants in developer namespaces) and the writes that make the cluster
//! hold exactly those ([`plan`]). Who writes them is not decided here.
//!
//! A developer route `<R>-divert-<D>` mirrors EVERY rule of the shared route R, in order, each
//! match with one header condition more (the anchored baggage match of D), so D's requests meet
//! R's rules in the same precedence as everyone's; only the backendRefs to Services of R's
//! namespace that D runs move to namespace D. Where a mirrored match ties with a rule of another
//! route, the older route wins (Gateway API precedence), and the shared routes are older than the
//! routes made from them.
//!
//! Every other route attached to a parent of a developer route gets a mirror for that developer
//! too (moving nothing of its own): a mirror's extra header would otherwise outrank its rules for
//! the developer's requests. SPEC §11.1 names only the routes whose backends move; this keeps its
//! promise that nothing but the developer's own requests moves.
//!
//! Ownership is read from the objects: what carries the label
//! `app.kubernetes.io/managed-by: divert-webhook` is the reconciler's, and nothing else is ever
//! changed or deleted.
//!
//! A Service of the shared namespace that a developer runs and to which no HTTPRoute is
//! attached gets a developer route of its own ([`service_route`], SPEC §11.2): the developer's
//! baggage to the developer's Service, everything else to the shared one. Its backendRefs must
//! name a port (the Gateway API requires it of a Service backendRef), so it is made only for
//! Services whose ports the state knows ([`ClusterState::service_ports`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::reconcile::FIELD_MANAGER;
use super::state::ClusterState;
use crate::rules::baggage::divert_pattern;
use crate::rules::divert::BAGGAGE_HEADER;
use crate::rules::http_route::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, is_reconciler_owned};
use crate::rules::virtual_service::annotations;
use crate::settings::Settings;

/// The Gateway API's limits on one HTTPRoute (its CRD's `maxItems` and CEL rules).
pub const MAX_RULES: usize = 16;
pub const MAX_MATCHES: usize = 128;
pub const MAX_HEADERS_PER_MATCH: usize = 16;

/// Kubernetes object names the reconciler makes are kept to a DNS label's length.
pub const MAX_NAME: usize = 63;

/// The name of every ReferenceGrant the reconciler makes (SPEC §11.3).
pub const REFERENCE_GRANT_NAME: &str = "divert-webhook";

/// `<R>-divert-<D>`, cut to [`MAX_NAME`] characters with a hash suffix when longer: the first
/// 54 characters (trailing `-` and `.` dropped), `-`, and 8 hex digits of the SHA-256 of the
/// whole name, so two long names that share a beginning stay apart.
pub fn developer_route_name(route: &str, developer: &str) -> String {
    let full = format!("{route}-divert-{developer}");
    if full.len() <= MAX_NAME {
        return full;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, full.as_bytes());
    let mut suffix = String::new();
    for byte in &digest.as_ref()[..4] {
        let _ = write!(suffix, "{byte:02x}");
    }
    // Names are ASCII (DNS subdomains), so byte positions are character positions.
    let prefix = full[..MAX_NAME - 9].trim_end_matches(['-', '.']);
    format!("{prefix}-{suffix}")
}

/// The header match that recognises D's requests: `^(?:P(D))$` (SPEC §11.1; anchored, since
/// Linkerd does not match the whole value by itself).
pub fn baggage_match(developer: &str) -> Value {
    json!({"type": "RegularExpression", "name": BAGGAGE_HEADER, "value": format!("^(?:{})$", divert_pattern(developer))})
}

/// Which rules of a shared route a developer diverts, and through which Services.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Rule names; `None`: every rule.
    pub rules: Option<BTreeSet<String>>,
    /// Service names; `None`: every Service the developer runs.
    pub services: Option<BTreeSet<String>>,
}

impl Selection {
    fn everything() -> Selection {
        Selection::default()
    }

    /// What both select (a developer named twice diverts what either names).
    fn union(self, other: Selection) -> Selection {
        let union = |a: Option<BTreeSet<String>>, b: Option<BTreeSet<String>>| match (a, b) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        };
        Selection { rules: union(self.rules, other.rules), services: union(self.services, other.services) }
    }
}

fn field<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// The Service of namespace `namespace` a backendRef (or parentRef) names, if it names one
/// there: group `""` (or Linkerd's `core`), kind `Service` (both the defaults), and no other
/// namespace.
pub fn service_of<'a>(reference: &'a Value, namespace: &str) -> Option<&'a str> {
    let group = reference.get("group").and_then(Value::as_str).unwrap_or("");
    let kind = reference.get("kind").and_then(Value::as_str).unwrap_or("Service");
    let ref_namespace = reference.get("namespace").and_then(Value::as_str).unwrap_or(namespace);
    let name = reference.get("name").and_then(Value::as_str)?;
    (matches!(group, "" | "core") && kind == "Service" && ref_namespace == namespace).then_some(name)
}

/// The developer route of shared route `shared` (namespace `namespace`) for `developer`, or
/// `None` when no selected rule sends to a Service `runs` says the developer runs. `Err` says
/// why a route that is needed cannot be made.
pub fn developer_route(
    shared: &Value,
    developer: &str,
    selection: &Selection,
    runs: &dyn Fn(&str) -> bool,
) -> Result<Option<Value>, String> {
    mirror_route(shared, developer, selection, runs, false)
}

/// [`developer_route`]; with `always`, also when nothing moves (a route sharing a parent with
/// one whose backends move, see [`desired`]), `None` then only when no rule can be mirrored.
fn mirror_route(
    shared: &Value,
    developer: &str,
    selection: &Selection,
    runs: &dyn Fn(&str) -> bool,
    always: bool,
) -> Result<Option<Value>, String> {
    let namespace = field(shared, "/metadata/namespace");
    let name = field(shared, "/metadata/name");
    let rules = shared.pointer("/spec/rules").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let moves =
        |service: &str| runs(service) && selection.services.as_ref().is_none_or(|services| services.contains(service));
    let mut moved_any = false;
    let mut mirrored = Vec::with_capacity(rules.len());
    let mut rule_names = BTreeSet::new();
    for rule in rules {
        let Some(rule) = rule.as_object() else { continue };
        let selected = selection
            .rules
            .as_ref()
            .is_none_or(|names| rule.get("name").and_then(Value::as_str).is_some_and(|n| names.contains(n)));
        let Some(mut mirror) = mirror_rule(rule, developer) else { continue };
        if selected && let Some(refs) = mirror.get_mut("backendRefs").and_then(Value::as_array_mut) {
            moved_any |= move_backends(refs, namespace, developer, &moves);
        }
        if let Some(Value::String(rule_name)) = mirror.get_mut("name") {
            *rule_name = unique_name(rule_name, &mut rule_names);
        }
        mirrored.push(Value::Object(mirror));
    }
    if !(moved_any || always && !mirrored.is_empty()) {
        return Ok(None);
    }
    let matches: usize = mirrored.iter().map(|r| r["matches"].as_array().map_or(0, Vec::len)).sum();
    if matches > MAX_MATCHES || mirrored.len() > MAX_RULES {
        return Err(format!(
            "HTTPRoute {namespace}/{name}: its developer route for {developer} would hold {} rules and {matches} matches, \
             over the Gateway API's {MAX_RULES} and {MAX_MATCHES}; split the route",
            mirrored.len()
        ));
    }
    let uid = field(shared, "/metadata/uid");
    if uid.is_empty() {
        return Err(format!(
            "HTTPRoute {namespace}/{name} has no metadata.uid, needed for the ownerReference of its developer route"
        ));
    }
    let api_version = field(shared, "/apiVersion");
    let mut spec = Map::new();
    for copied in ["parentRefs", "hostnames"] {
        if let Some(value) = shared.pointer(&format!("/spec/{copied}")) {
            spec.insert(copied.to_string(), value.clone());
        }
    }
    spec.insert("rules".to_string(), Value::Array(mirrored));
    Ok(Some(json!({
        "apiVersion": api_version,
        "kind": "HTTPRoute",
        "metadata": {
            "name": developer_route_name(name, developer),
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
            "ownerReferences": [{"apiVersion": api_version, "kind": "HTTPRoute", "name": name, "uid": uid, "controller": true}],
        },
        "spec": spec,
    })))
}

/// A rule of the shared route as the developer route holds it: every match with the baggage
/// match added (a rule without matches gets one, on every path); a match that already tests
/// `baggage` or holds [`MAX_HEADERS_PER_MATCH`] headers is left out, and a rule left without
/// matches is left out whole (it would match everything). The rest is copied.
fn mirror_rule(rule: &Map<String, Value>, developer: &str) -> Option<Map<String, Value>> {
    let mut mirror = rule.clone();
    let original = rule.get("matches").and_then(Value::as_array).filter(|m| !m.is_empty());
    let matches: Vec<Value> = match original {
        None => vec![json!({"path": {"type": "PathPrefix", "value": "/"}, "headers": [baggage_match(developer)]})],
        Some(matches) => matches
            .iter()
            .filter_map(|m| {
                let mut m = m.as_object()?.clone();
                let headers = m.entry("headers").or_insert_with(|| Value::Array(Vec::new()));
                if headers.is_null() {
                    *headers = Value::Array(Vec::new());
                }
                let headers = headers.as_array_mut()?;
                let tests_baggage = headers.iter().any(|h| {
                    h.get("name").and_then(Value::as_str).is_some_and(|n| n.eq_ignore_ascii_case(BAGGAGE_HEADER))
                });
                if tests_baggage || headers.len() >= MAX_HEADERS_PER_MATCH {
                    return None;
                }
                headers.push(baggage_match(developer));
                Some(Value::Object(m))
            })
            .collect(),
    };
    if matches.is_empty() {
        return None;
    }
    if original.is_some() {
        mirror.insert("matches".to_string(), Value::Array(matches)); // in its place
        return Some(mirror);
    }
    // A rule without matches gets them first (after its name), where people write them.
    let mut ordered = Map::new();
    if let Some(name) = mirror.shift_remove("name") {
        ordered.insert("name".to_string(), name);
    }
    ordered.insert("matches".to_string(), Value::Array(matches));
    ordered.extend(mirror);
    Some(ordered)
}

/// Moves the backendRefs to Services of `namespace` that `moves` accepts into namespace
/// `developer`, then merges identical refs (everything but the weight equal), summing their
/// weights (an absent weight is the Gateway API's default, 1). True if anything moved.
fn move_backends(refs: &mut Vec<Value>, namespace: &str, developer: &str, moves: &dyn Fn(&str) -> bool) -> bool {
    let mut moved = false;
    for reference in refs.iter_mut() {
        if service_of(reference, namespace).is_some_and(moves)
            && let Some(reference) = reference.as_object_mut()
        {
            reference.insert("namespace".to_string(), Value::String(developer.to_string()));
            moved = true;
        }
    }
    if !moved {
        return false;
    }
    let mut merged: Vec<(Value, Option<u64>)> = Vec::new(); // (ref without weight, weight)
    for reference in refs.drain(..) {
        let weight = reference.get("weight").and_then(Value::as_u64);
        let mut key = reference.clone();
        if let Some(key) = key.as_object_mut() {
            key.remove("weight");
        }
        match merged.iter_mut().find(|(k, _)| *k == key) {
            Some((_, sum)) => *sum = Some(sum.unwrap_or(1) + weight.unwrap_or(1)),
            None => merged.push((key, weight)),
        }
    }
    for (mut key, weight) in merged {
        if let (Some(weight), Some(map)) = (weight, key.as_object_mut()) {
            map.insert("weight".to_string(), json!(weight));
        }
        refs.push(key);
    }
    true
}

/// `name`, or `name-2`, `name-3`… if an earlier rule took it.
fn unique_name(name: &str, taken: &mut BTreeSet<String>) -> String {
    let mut candidate = name.to_string();
    let mut n = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{name}-{n}");
        n += 1;
    }
    candidate
}

/// Everything the reconciler should own for HTTPRoutes, and why some could not be made.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// Developer routes, then ReferenceGrants, in a stable order.
    pub objects: Vec<Value>,
    /// One line per route that is needed but cannot be made (for the log).
    pub problems: Vec<String>,
}

/// The developer namespaces of each shared HTTPRoute, with what each selects: every developer
/// namespace of the route's namespace (SPEC §10.1, everything), and every namespace a divert
/// entry on the route names (its `routes` select rules by name, its `services` Services).
fn developers_of(state: &ClusterState, settings: &Settings, route: &Value) -> BTreeMap<String, Selection> {
    let namespace = field(route, "/metadata/namespace");
    let mut out: BTreeMap<String, Selection> = BTreeMap::new();
    for (developer, _) in state.view.namespaces() {
        if state.developer_of(developer, settings) == Some(namespace) {
            out.insert(developer.to_string(), Selection::everything());
        }
    }
    for entry in annotations::entries(route, namespace).into_iter().flatten() {
        if settings.is_protected(&entry.key) || state.terminating.contains(&entry.key) {
            continue;
        }
        let selection = Selection {
            rules: entry.routes.map(|r| r.into_iter().collect()),
            services: entry.services.map(|s| s.into_iter().collect()),
        };
        let merged = match out.remove(&entry.key) {
            Some(known) => known.union(selection),
            None => selection,
        };
        out.insert(entry.key, merged);
    }
    out
}

/// SPEC §11.1 and §11.3: the developer routes and ReferenceGrants the cluster should hold with
/// `--gateway-api` ([`plan`] asks only then).
pub fn desired(state: &ClusterState, settings: &Settings) -> Desired {
    let mut desired = Desired::default();
    // developer namespace → (route group, shared namespace) pairs its grant lets in
    let mut grants: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut names = BTreeSet::new();
    // Oldest shared route first, as the Gateway API orders routes: created in this order, the
    // developer routes tie among themselves as their shared routes do (as far as creation
    // times, counted in seconds, tell them apart).
    let mut routes: Vec<&Value> = state.http_routes.iter().collect();
    routes.sort_by_key(|r| {
        (field(r, "/metadata/creationTimestamp"), field(r, "/metadata/namespace"), field(r, "/metadata/name"))
    });
    routes.retain(|r| !is_reconciler_owned(r) && !settings.is_protected(field(r, "/metadata/namespace")));
    // Pass 1: for each developer, the routes with backends that move.
    let mut made: BTreeMap<String, BTreeMap<usize, Value>> = BTreeMap::new();
    for (index, route) in routes.iter().enumerate() {
        let namespace = field(route, "/metadata/namespace");
        for (developer, selection) in developers_of(state, settings, route) {
            let runs = |service: &str| state.view.runs(&developer, service);
            match mirror_route(route, &developer, &selection, &runs, false) {
                Ok(Some(mirror)) => {
                    let group = field(route, "/apiVersion").rsplit_once('/').map_or("", |(g, _)| g).to_string();
                    grants.entry(developer.clone()).or_default().insert((group, namespace.to_string()));
                    made.entry(developer).or_default().insert(index, mirror);
                }
                Ok(None) => {}
                Err(problem) => desired.problems.push(problem),
            }
        }
    }
    // Pass 2: a route attached to a parent that a developer route is attached to gets a mirror
    // too, moving nothing of its own: otherwise a mirror (one header more) would outrank its
    // rules for the developer's requests, which before divert went to them. Until no more are
    // needed (a mirror brings along every parent of its shared route).
    for (developer, mirrors) in &mut made {
        let mut tried = BTreeSet::new();
        loop {
            let meets = |i: usize| {
                mirrors.keys().any(|&m| {
                    hostnames_overlap(routes[m], routes[i])
                        && parent_keys(routes[m]).iter().any(|p| parent_keys(routes[i]).contains(p))
                })
            };
            let next = (0..routes.len()).find(|&i| !mirrors.contains_key(&i) && !tried.contains(&i) && meets(i));
            let Some(index) = next else { break };
            tried.insert(index);
            let selection = developers_of(state, settings, routes[index]).remove(developer.as_str());
            let selection = selection.unwrap_or(Selection { rules: None, services: Some(BTreeSet::new()) });
            let runs = |service: &str| state.view.runs(developer, service);
            match mirror_route(routes[index], developer, &selection, &runs, true) {
                Ok(Some(mirror)) => {
                    mirrors.insert(index, mirror);
                }
                Ok(None) => {}
                Err(problem) => desired.problems.push(problem),
            }
        }
    }
    // Oldest shared route first, then by developer.
    for index in 0..routes.len() {
        for mirrors in made.values_mut() {
            let Some(mirror) = mirrors.remove(&index) else { continue };
            let identity =
                (field(&mirror, "/metadata/namespace").to_string(), field(&mirror, "/metadata/name").to_string());
            if !names.insert(identity.clone()) {
                desired.problems.push(format!(
                    "HTTPRoute {}/{}: two shared routes give this developer route name; rename one of them",
                    identity.0, identity.1
                ));
                continue;
            }
            desired.objects.push(mirror);
        }
    }
    // §11.2: Services of a shared namespace that a developer runs, with no route attached, at
    // the HTTPRoute version the cluster serves (none served: nothing can be made).
    if let Some(api_version) = &state.served.http_route {
        service_routes_for_developers(state, settings, api_version, &mut names, &mut grants, &mut desired);
    }
    grant_references(state, grants, &mut desired);
    desired
}

/// The ReferenceGrants the developer routes need (SPEC §11.3), at the version the cluster
/// serves; where it serves none, one problem line (the routes are still made: a mesh that does
/// not check grants routes them).
fn grant_references(state: &ClusterState, grants: BTreeMap<String, BTreeSet<(String, String)>>, desired: &mut Desired) {
    if grants.is_empty() {
        return;
    }
    let Some(api_version) = &state.served.reference_grant else {
        desired.problems.push(format!(
            "the cluster serves no ReferenceGrant, so the developer routes of {} send to other namespaces without one; \
             install the Gateway API's ReferenceGrant CRD if the mesh checks them",
            grants.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
        return;
    };
    for (developer, from) in grants {
        desired.objects.push(reference_grant(api_version, &developer, &from));
    }
}

/// SPEC §11.2: a developer route attached to each Service of a shared namespace that a
/// developer runs and to which no HTTPRoute is attached.
fn service_routes_for_developers(
    state: &ClusterState,
    settings: &Settings,
    api_version: &str,
    names: &mut BTreeSet<(String, String)>,
    grants: &mut BTreeMap<String, BTreeSet<(String, String)>>,
    desired: &mut Desired,
) {
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    let mut attached: BTreeSet<(&str, &str)> = BTreeSet::new();
    for route in state.http_routes.iter().filter(|r| !is_reconciler_owned(r)) {
        let namespace = field(route, "/metadata/namespace");
        for parent in route.pointer("/spec/parentRefs").and_then(Value::as_array).into_iter().flatten() {
            if let Some(service) = parent_service(parent, namespace) {
                attached.insert((namespace, service));
            }
        }
    }
    for (developer, _) in state.view.namespaces() {
        let Some(shared) = state.developer_of(developer, settings) else { continue };
        let (Some(theirs), Some(ours)) = (state.view.namespace(developer), state.view.namespace(shared)) else {
            continue;
        };
        for service in theirs.services.intersection(&ours.services) {
            if attached.contains(&(shared, service.as_str())) {
                continue;
            }
            let ports = state.service_ports.get(shared).and_then(|p| p.get(service)).map(Vec::as_slice);
            let Some(ports) = ports.filter(|p| !p.is_empty()) else {
                desired.problems.push(format!(
                    "Service {shared}/{service}: no HTTPRoute is attached to it and its ports are unknown, so {developer} \
                     gets no route to its copy; attach an HTTPRoute to it"
                ));
                continue;
            };
            for made in service_routes(api_version, shared, service, ports, developer) {
                let identity = (shared.to_string(), field(&made, "/metadata/name").to_string());
                if !names.insert(identity.clone()) {
                    desired.problems.push(format!(
                        "HTTPRoute {}/{}: a shared route gives this developer route name too; rename the route",
                        identity.0, identity.1
                    ));
                    continue;
                }
                grants.entry(developer.to_string()).or_default().insert((group.to_string(), shared.to_string()));
                desired.objects.push(made);
            }
        }
    }
}

/// A parent a route attaches to: group, kind, namespace, name (sections and ports left out: two
/// routes on one Gateway or Service may meet whatever their sections).
type ParentKey = (String, String, String, String);

fn parent_keys(route: &Value) -> Vec<ParentKey> {
    let namespace = field(route, "/metadata/namespace");
    let parents = route.pointer("/spec/parentRefs").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    parents
        .iter()
        .map(|parent| {
            let text =
                |key: &str, default: &str| parent.get(key).and_then(Value::as_str).unwrap_or(default).to_string();
            let group = match text("group", GATEWAY_GROUP).as_str() {
                "core" => String::new(),
                group => group.to_string(),
            };
            (group, text("kind", "Gateway"), text("namespace", namespace), text("name", ""))
        })
        .collect()
}

/// Can a request match both routes' hostnames? A route without hostnames takes every host; a
/// `*.` wildcard takes the hosts under it (and meets another wildcard above or below it).
fn hostnames_overlap(a: &Value, b: &Value) -> bool {
    let names = |route: &Value| -> Vec<String> {
        route
            .pointer("/spec/hostnames")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_ascii_lowercase)
            .collect()
    };
    let (a, b) = (names(a), names(b));
    let covers = |wild: &str, host: &str| {
        wild == host || wild.strip_prefix('*').is_some_and(|suffix| host.ends_with(suffix) && host.len() > suffix.len())
    };
    a.is_empty() || b.is_empty() || a.iter().any(|x| b.iter().any(|y| covers(x, y) || covers(y, x)))
}

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The Service of `namespace` a parentRef attaches to, if it is one: kind `Service` (a parentRef's
/// default kind is Gateway), group `""` or Linkerd's `core`, no other namespace.
pub fn parent_service<'a>(parent: &'a Value, namespace: &str) -> Option<&'a str> {
    let explicit_service = parent.get("kind").and_then(Value::as_str) == Some("Service");
    explicit_service.then(|| service_of(parent, namespace)).flatten()
}

/// SPEC §11.2: the developer routes of Service `service` of `shared`, to which no HTTPRoute is
/// attached, for `developer`: attached to the Service (one route per port when it has several,
/// `<service>-<port>-divert-<D>`), with two rules: D's baggage to D's Service, and the catch-all
/// to the Service in `shared` (attaching any route to a Service replaces its default routing).
pub fn service_routes(api_version: &str, shared: &str, service: &str, ports: &[u64], developer: &str) -> Vec<Value> {
    ports
        .iter()
        .map(|port| {
            let base = if ports.len() == 1 { service.to_string() } else { format!("{service}-{port}") };
            json!({
                "apiVersion": api_version,
                "kind": "HTTPRoute",
                "metadata": {
                    "name": developer_route_name(&base, developer),
                    "namespace": shared,
                    "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
                },
                "spec": {
                    "parentRefs": [{"group": "", "kind": "Service", "name": service, "port": port}],
                    "rules": [
                        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}, "headers": [baggage_match(developer)]}],
                         "backendRefs": [{"name": service, "namespace": developer, "port": port}]},
                        {"backendRefs": [{"name": service, "port": port}]},
                    ],
                },
            })
        })
        .collect()
}

/// The ReferenceGrant `divert-webhook` of developer namespace `developer`: HTTPRoutes of the
/// given (API group, namespace) pairs may send to its Services (SPEC §11.3), at `api_version`.
pub fn reference_grant(api_version: &str, developer: &str, from: &BTreeSet<(String, String)>) -> Value {
    let from: Vec<Value> = from
        .iter()
        .map(|(group, namespace)| json!({"group": group, "kind": "HTTPRoute", "namespace": namespace}))
        .collect();
    json!({
        "apiVersion": api_version,
        "kind": "ReferenceGrant",
        "metadata": {"name": REFERENCE_GRANT_NAME, "namespace": developer, "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
        "spec": {"from": from, "to": [{"group": "", "kind": "Service"}]},
    })
}

/// An object's identity: API group, kind, namespace, name; and, for a stored object, its uid
/// (a deletion is conditional on it: an object made again meanwhile is not the one planned).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Identity {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Empty for an object not stored yet.
    pub uid: String,
}

impl Identity {
    pub fn of(object: &Value) -> Identity {
        Identity {
            api_version: field(object, "/apiVersion").to_string(),
            kind: field(object, "/kind").to_string(),
            namespace: field(object, "/metadata/namespace").to_string(),
            name: field(object, "/metadata/name").to_string(),
            uid: field(object, "/metadata/uid").to_string(),
        }
    }

    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(group, _)| group)
    }

    /// Same object whatever the version it is read at.
    pub fn same_object(&self, other: &Identity) -> bool {
        (self.group(), &self.kind, &self.namespace, &self.name)
            == (other.group(), &other.kind, &other.namespace, &other.name)
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One write to an object the reconciler owns.
#[derive(Clone, Debug, PartialEq)]
pub enum OwnedChange {
    /// Server-side apply of a new object (field manager [`FIELD_MANAGER`]).
    Create(Value),
    /// Server-side apply of what the object should be; `current` is what is stored.
    Update { desired: Value, current: Value },
    /// Delete an object the reconciler made and no developer needs any more.
    Delete(Identity),
}

impl OwnedChange {
    /// The object written.
    pub fn identity(&self) -> Identity {
        match self {
            OwnedChange::Create(object) | OwnedChange::Update { desired: object, .. } => Identity::of(object),
            OwnedChange::Delete(identity) => identity.clone(),
        }
    }

    /// Does `other` write the same thing (whatever the stored object it was planned from)?
    pub fn same_write(&self, other: &OwnedChange) -> bool {
        match (self, other) {
            (OwnedChange::Delete(a), OwnedChange::Delete(b)) => a == b,
            (OwnedChange::Delete(_), _) | (_, OwnedChange::Delete(_)) => false,
            _ => self.desired() == other.desired(),
        }
    }

    /// The object a creation or an update writes.
    fn desired(&self) -> Option<&Value> {
        match self {
            OwnedChange::Create(object) | OwnedChange::Update { desired: object, .. } => Some(object),
            OwnedChange::Delete(_) => None,
        }
    }

    /// What is still to write once the object has been read again after a conflict (`fresh`:
    /// as stored now, `None` when there is none). `Ok(None)`: nothing; `Err`: the object is
    /// someone else's now (it appeared between the snapshot and the write), and is never
    /// written over.
    pub fn again(&self, fresh: Option<&Value>) -> Result<Option<OwnedChange>, String> {
        match (self, fresh) {
            (OwnedChange::Create(desired) | OwnedChange::Update { desired, .. }, None) => {
                Ok(Some(OwnedChange::Create(desired.clone())))
            }
            (OwnedChange::Create(desired) | OwnedChange::Update { desired, .. }, Some(fresh)) => {
                if !is_reconciler_owned(fresh) {
                    Err(format!(
                        "{} exists and is not divert-webhook's (no label {MANAGED_BY_LABEL}: {MANAGED_BY_VALUE}); \
                         rename or delete it so that the reconciler can make its own",
                        Identity::of(fresh)
                    ))
                } else if covers(fresh, desired) {
                    Ok(None)
                } else {
                    Ok(Some(OwnedChange::Update { desired: desired.clone(), current: fresh.clone() }))
                }
            }
            (OwnedChange::Delete(_), None) => Ok(None),
            // The same object still there: delete it. Another one of that name (made again
            // meanwhile, the uid precondition's conflict): not the one planned; the next plan,
            // from a snapshot that holds it, decides about it.
            (OwnedChange::Delete(planned), Some(fresh)) => {
                let identity = Identity::of(fresh);
                let same = identity.uid == planned.uid;
                Ok((same && is_reconciler_owned(fresh)).then_some(OwnedChange::Delete(identity)))
            }
        }
    }
}

/// What the reconciler would write for HTTPRoutes.
#[derive(Clone, Debug, Default)]
pub struct RoutePlan {
    pub changes: Vec<OwnedChange>,
    /// Routes that are needed but cannot be made, and objects in the way (someone else's object
    /// holds a name the reconciler needs): one line each, never written over.
    pub problems: Vec<String>,
}

/// SPEC §11.1–§11.3: the writes that make the objects the reconciler owns what [`desired`]
/// says. A stored object that already holds everything desired (the apiserver adds defaults)
/// gives no write.
pub fn plan(state: &ClusterState, settings: &Settings) -> RoutePlan {
    // `--gateway-api` off: every HTTPRoute and ReferenceGrant is left alone, the reconciler's
    // own included (docs/operating.md says how to remove those).
    if !settings.gateway_api {
        return RoutePlan::default();
    }
    let desired = desired(state, settings);
    let mut plan = RoutePlan { problems: desired.problems, ..RoutePlan::default() };
    let stored: Vec<&Value> = state.http_routes.iter().chain(&state.reference_grants).collect();
    let mut kept = BTreeSet::new();
    for object in desired.objects {
        let identity = Identity::of(&object);
        let current = stored.iter().enumerate().find(|(_, s)| Identity::of(s).same_object(&identity));
        match current {
            None => plan.changes.push(OwnedChange::Create(object)),
            Some((index, current)) if is_reconciler_owned(current) => {
                kept.insert(index);
                if !covers(current, &object) {
                    plan.changes.push(OwnedChange::Update { desired: object, current: (*current).clone() });
                }
            }
            Some(_) => plan.problems.push(format!(
                "{identity} exists and is not divert-webhook's (no label {MANAGED_BY_LABEL}: {MANAGED_BY_VALUE}); \
                 rename or delete it so that the reconciler can make its own"
            )),
        }
    }
    for (index, object) in stored.iter().enumerate() {
        if is_reconciler_owned(object) && !kept.contains(&index) {
            plan.changes.push(OwnedChange::Delete(Identity::of(object)));
        }
    }
    plan
}

/// Does `stored` hold everything `desired` says? Maps may hold more (defaults the apiserver
/// filled in, fields of other managers); lists must hold as many items, each covering its own.
pub fn covers(stored: &Value, desired: &Value) -> bool {
    match (stored, desired) {
        (Value::Object(stored), Value::Object(desired)) => {
            desired.iter().all(|(k, v)| stored.get(k).is_some_and(|s| covers(s, v)))
        }
        (Value::Array(stored), Value::Array(desired)) => {
            stored.len() == desired.len() && stored.iter().zip(desired).all(|(s, d)| covers(s, d))
        }
        _ => stored == desired,
    }
}

/// `objects` as the writes of `plan` leave them (for tests, and to show the result): created
/// and updated objects as desired, deleted ones gone. (No garbage collection is needed: the
/// plan itself deletes the developer routes of a shared route that is gone.)
pub fn apply(objects: &mut Vec<Value>, plan: &RoutePlan) {
    for change in &plan.changes {
        match change {
            OwnedChange::Create(object) => objects.push(object.clone()),
            OwnedChange::Update { desired, .. } => {
                let identity = Identity::of(desired);
                if let Some(stored) = objects.iter_mut().find(|o| Identity::of(o).same_object(&identity)) {
                    *stored = desired.clone();
                }
            }
            OwnedChange::Delete(identity) => objects.retain(|o| !Identity::of(o).same_object(identity)),
        }
    }
}

/// The writes as YAML documents, each after a comment line saying what it is.
pub fn writes_yaml(plan: &RoutePlan) -> String {
    let mut out = String::new();
    for change in &plan.changes {
        match change {
            OwnedChange::Create(object) | OwnedChange::Update { desired: object, .. } => {
                let verb = if matches!(change, OwnedChange::Create(_)) { "create" } else { "update" };
                let _ = writeln!(
                    out,
                    "---\n# server-side apply ({verb}) of {}, field manager {FIELD_MANAGER}",
                    Identity::of(object)
                );
                out.push_str(&crate::manifests::to_yaml(std::slice::from_ref(object)));
            }
            OwnedChange::Delete(identity) => {
                let _ = writeln!(out, "---\n# delete {identity}: no developer needs it any more");
                let reference = json!({"apiVersion": identity.api_version, "kind": identity.kind,
                    "metadata": {"name": identity.name, "namespace": identity.namespace}});
                out.push_str(&crate::manifests::to_yaml(&[reference]));
            }
        }
    }
    out
}

/// The writes as a diff: created objects as `+` lines, deleted ones named, updated ones as
/// their new form.
pub fn diff(plan: &RoutePlan) -> String {
    let mut out = String::new();
    for change in &plan.changes {
        let (header, object) = match change {
            OwnedChange::Create(object) => (format!("+++ {} (create)", Identity::of(object)), Some(object)),
            OwnedChange::Update { desired, .. } => (format!("+++ {} (update)", Identity::of(desired)), Some(desired)),
            OwnedChange::Delete(identity) => (format!("--- {identity} (delete)"), None),
        };
        let _ = writeln!(out, "{header}");
        if let Some(object) = object {
            let _ = writeln!(out, "# server-side apply, field manager {FIELD_MANAGER}");
            for line in crate::manifests::to_yaml(std::slice::from_ref(object)).lines() {
                let _ = writeln!(out, "+{line}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::{GATEWAY_HTTP_ROUTE_API_VERSION, GATEWAY_REFERENCE_GRANT_API_VERSION, ServedApis};
    use crate::settings::Driver;

    /// The default settings (istio driver) with `--gateway-api`.
    fn gateway_api() -> Settings {
        Settings { gateway_api: true, ..Settings::default() }
    }

    #[test]
    fn long_names_are_cut_with_a_hash() {
        assert_eq!(developer_route_name("api", "cindy"), "api-divert-cindy");
        let long = developer_route_name(&"r".repeat(60), "cindy");
        assert_eq!(long.len(), MAX_NAME);
        assert!(long.starts_with(&"r".repeat(54)));
        assert_ne!(long, developer_route_name(&"r".repeat(61), "cindy"));
        let dashed = developer_route_name(&format!("{}-x", "r".repeat(53)), "cindy");
        assert!(!dashed.contains("--"), "{dashed}");
    }

    #[test]
    fn identical_moved_refs_merge_and_weights_add_up() {
        let mut refs = vec![
            json!({"name": "api", "port": 80, "weight": 90}),
            json!({"name": "api", "port": 80, "weight": 10, "group": ""}),
            json!({"name": "api", "port": 80}),
            json!({"name": "web", "port": 80, "weight": 5}),
            json!({"name": "ext", "namespace": "other", "port": 80}),
        ];
        assert!(move_backends(&mut refs, "staging", "cindy", &|s| s == "api"));
        assert_eq!(
            refs,
            [
                json!({"name": "api", "port": 80, "namespace": "cindy", "weight": 91}),
                json!({"name": "api", "port": 80, "group": "", "namespace": "cindy", "weight": 10}),
                json!({"name": "web", "port": 80, "weight": 5}),
                json!({"name": "ext", "namespace": "other", "port": 80}),
            ]
        );
        let mut untouched = vec![json!({"name": "web", "port": 80})];
        assert!(!move_backends(&mut untouched, "staging", "cindy", &|s| s == "api"));
    }

    #[test]
    fn matches_that_cannot_take_the_baggage_match_are_left_out() {
        let sixteen: Vec<Value> = (0..16).map(|i| json!({"name": format!("h{i}"), "value": "1"})).collect();
        let rule = json!({"matches": [
            {"path": {"type": "PathPrefix", "value": "/a"}},
            {"headers": [{"name": "Baggage", "value": "x=1"}]},
            {"headers": sixteen},
        ]});
        let mirror = mirror_rule(rule.as_object().unwrap(), "cindy").unwrap();
        assert_eq!(mirror["matches"].as_array().unwrap().len(), 1);
        assert_eq!(mirror["matches"][0]["headers"], json!([baggage_match("cindy")]));
        let only_baggage = json!({"matches": [{"headers": [{"name": "baggage", "value": "x=1"}]}]});
        assert_eq!(mirror_rule(only_baggage.as_object().unwrap(), "cindy"), None);
        let catch_all = mirror_rule(json!({}).as_object().unwrap(), "cindy").unwrap();
        assert_eq!(
            catch_all["matches"],
            json!([{"path": {"type": "PathPrefix", "value": "/"}, "headers": [baggage_match("cindy")]}])
        );
    }

    #[test]
    fn services_without_a_route_get_one_with_the_gateway_api() {
        let (mut state, _) = crate::cluster::state::from_dump(
            r#"
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: staging}}
- {apiVersion: v1, kind: Namespace, metadata: {name: cindy, labels: {divert.okteto.com/from: staging}}}
- {apiVersion: v1, kind: Service, metadata: {name: api, namespace: staging}, spec: {ports: [{port: 8080}]}}
- {apiVersion: v1, kind: Service, metadata: {name: db, namespace: staging}, spec: {ports: [{port: 5432}, {port: 9000}]}}
- {apiVersion: v1, kind: Service, metadata: {name: web, namespace: staging}}
- {apiVersion: v1, kind: Service, metadata: {name: api, namespace: cindy}}
- {apiVersion: v1, kind: Service, metadata: {name: db, namespace: cindy}}
- {apiVersion: v1, kind: Service, metadata: {name: web, namespace: cindy}}
"#,
        )
        .unwrap();
        let nginx = Settings::new(Driver::Nginx, Settings::default().managed_selector, None, &[]);
        assert!(nginx.gateway_api, "on by default with the nginx driver");
        let made = desired(&state, &nginx);
        let names: Vec<&str> = made.objects.iter().map(|o| field(o, "/metadata/name")).collect();
        assert_eq!(names, ["api-divert-cindy", "db-5432-divert-cindy", "db-9000-divert-cindy", "divert-webhook"]);
        assert_eq!(
            made.objects[0]["spec"]["rules"][0]["backendRefs"],
            json!([{"name": "api", "namespace": "cindy", "port": 8080}])
        );
        assert_eq!(made.objects[0]["spec"]["rules"][1], json!({"backendRefs": [{"name": "api", "port": 8080}]}));
        assert_eq!(made.problems.len(), 1, "web's ports are unknown: {:?}", made.problems);
        assert!(made.problems[0].starts_with("Service staging/web:"));
        assert!(made.objects[..3].iter().all(|o| o["apiVersion"] == GATEWAY_HTTP_ROUTE_API_VERSION));
        assert_eq!(made.objects[3]["apiVersion"], GATEWAY_REFERENCE_GRANT_API_VERSION);
        assert!(plan(&state, &Settings::default()).changes.is_empty(), "istio: off by default");
        assert_eq!(desired(&state, &gateway_api()).objects, made.objects, "istio with --gateway-api");

        // At the versions the cluster serves: Linkerd's HTTPRoute only, ReferenceGrant v1.
        state.served = ServedApis {
            http_route: Some("policy.linkerd.io/v1beta3".into()),
            reference_grant: Some("gateway.networking.k8s.io/v1".into()),
        };
        let linkerd = desired(&state, &nginx);
        assert_eq!(linkerd.objects.len(), 4);
        assert!(linkerd.objects[..3].iter().all(|o| o["apiVersion"] == "policy.linkerd.io/v1beta3"));
        assert_eq!(linkerd.objects[3]["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(
            linkerd.objects[3]["spec"]["from"],
            json!([{"group": "policy.linkerd.io", "kind": "HTTPRoute", "namespace": "staging"}])
        );
        // No HTTPRoute served: nothing to attach to the Services. No ReferenceGrant served: the
        // routes without a grant, and a problem line that says so.
        state.served.http_route = None;
        assert!(desired(&state, &nginx).objects.is_empty(), "no HTTPRoute served");
        state.served = ServedApis { reference_grant: None, ..ServedApis::default() };
        let ungranted = desired(&state, &nginx);
        assert_eq!(ungranted.objects, made.objects[..3]);
        assert!(
            ungranted
                .problems
                .iter()
                .any(|p| p.starts_with("the cluster serves no ReferenceGrant, so the developer routes of cindy"))
        );
        state.served = ServedApis::default();

        // A route attached to the Service (kind Service, Linkerd's group `core`) takes its place.
        let (routes, _) = crate::cluster::state::from_dump(
            "{apiVersion: policy.linkerd.io/v1beta3, kind: HTTPRoute, metadata: {name: mine, namespace: staging}, \
             spec: {parentRefs: [{group: core, kind: Service, name: api}]}}",
        )
        .unwrap();
        state.http_routes = routes.http_routes;
        let names: Vec<String> =
            desired(&state, &nginx).objects.iter().map(|o| field(o, "/metadata/name").to_string()).collect();
        assert_eq!(names, ["db-5432-divert-cindy", "db-9000-divert-cindy", "divert-webhook"]);
    }

    #[test]
    fn hostnames_meet_through_wildcards_or_absence() {
        let route = |hosts: Value| json!({"spec": {"hostnames": hosts}});
        let none = json!({"spec": {}});
        assert!(hostnames_overlap(&none, &route(json!(["a.example.com"]))));
        assert!(hostnames_overlap(&route(json!(["*.example.com"])), &route(json!(["a.example.com"]))));
        assert!(hostnames_overlap(&route(json!(["A.example.com"])), &route(json!(["a.example.com", "b"]))));
        assert!(!hostnames_overlap(&route(json!(["*.example.com"])), &route(json!(["example.com"]))));
        assert!(!hostnames_overlap(&route(json!(["a.example.com"])), &route(json!(["b.example.com"]))));
    }

    #[test]
    fn owned_objects_follow_the_developers_and_others_are_never_touched() {
        let dump = r#"
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: staging}}
- {apiVersion: v1, kind: Namespace, metadata: {name: cindy, labels: {divert.okteto.com/from: staging}}}
- {apiVersion: v1, kind: Namespace, metadata: {name: zed, labels: {divert.okteto.com/from: staging}}}
- {apiVersion: v1, kind: Service, metadata: {name: api, namespace: cindy}}
- {apiVersion: v1, kind: Service, metadata: {name: api, namespace: zed}}
- apiVersion: gateway.networking.k8s.io/v1
  kind: HTTPRoute
  metadata: {name: api, namespace: staging, uid: u-1}
  spec:
    parentRefs: [{group: "", kind: Service, name: api}]
    rules: [{backendRefs: [{name: api, port: 80}]}]
"#;
        let (mut state, _) = crate::cluster::state::from_dump(dump).unwrap();
        let settings = gateway_api();
        let first = plan(&state, &settings);
        assert_eq!(first.changes.len(), 4, "two routes, two grants: {first:?}");
        let mut stored = state.http_routes.clone();
        apply(&mut stored, &first);
        let (routes, grants): (Vec<Value>, Vec<Value>) = stored.into_iter().partition(|o| o["kind"] == "HTTPRoute");
        state.http_routes = routes;
        state.reference_grants = grants;
        assert!(plan(&state, &settings).changes.is_empty());
        // Without --gateway-api nothing is planned, the reconciler's own objects left alone.
        state.view.add_namespace("cindy", BTreeMap::new());
        assert_eq!(plan(&state, &settings).changes.len(), 2, "cindy's route and grant would go");
        let off = plan(&state, &Settings::default());
        assert!(off.changes.is_empty() && off.problems.is_empty(), "{off:?}");
        let label = BTreeMap::from([(crate::cluster::view::FROM_LABEL.to_string(), "staging".to_string())]);
        state.view.add_namespace("cindy", label);

        // zed stops being a developer namespace; cindy's route was edited by hand; someone's
        // own ReferenceGrant named divert-webhook stands in a namespace the plan needs.
        state.view.add_namespace("zed", BTreeMap::new());
        let cindys = state.http_routes.iter_mut().find(|r| field(r, "/metadata/name") == "api-divert-cindy").unwrap();
        cindys["spec"]["rules"][0]["backendRefs"][0]["port"] = json!(81);
        state.reference_grants.retain(|g| field(g, "/metadata/namespace") != "cindy");
        state
            .reference_grants
            .push(json!({"apiVersion": GATEWAY_REFERENCE_GRANT_API_VERSION, "kind": "ReferenceGrant",
            "metadata": {"name": REFERENCE_GRANT_NAME, "namespace": "cindy"}}));
        let second = plan(&state, &settings);
        let summary: Vec<String> = second
            .changes
            .iter()
            .map(|c| match c {
                OwnedChange::Create(o) => format!("create {}", Identity::of(o)),
                OwnedChange::Update { desired, .. } => format!("update {}", Identity::of(desired)),
                OwnedChange::Delete(identity) => format!("delete {identity}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "update HTTPRoute staging/api-divert-cindy",
                "delete HTTPRoute staging/api-divert-zed",
                "delete ReferenceGrant zed/divert-webhook",
            ]
        );
        assert_eq!(second.problems.len(), 1, "{:?}", second.problems);
        assert!(
            second.problems[0].starts_with("ReferenceGrant cindy/divert-webhook exists and is not divert-webhook's")
        );
    }

    /// After a conflict the object is read again: a missing one is made, someone else's left
    /// alone, the webhook's updated only if it differs; a deletion goes on only for the object
    /// planned (the same uid), still the webhook's.
    #[test]
    fn a_change_read_again_after_a_conflict() {
        let ours = |port: u16, uid: &str| {
            json!({"apiVersion": GATEWAY_HTTP_ROUTE_API_VERSION, "kind": "HTTPRoute",
                   "metadata": {"name": "api-divert-cindy", "namespace": "staging", "uid": uid,
                                "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
                   "spec": {"rules": [{"backendRefs": [{"name": "api", "port": port}]}]}})
        };
        let desired = service_routes(GATEWAY_HTTP_ROUTE_API_VERSION, "staging", "api", &[80], "cindy").remove(0);
        let create = OwnedChange::Create(desired.clone());
        assert_eq!(create.again(None), Ok(Some(create.clone())));
        let mut theirs = desired.clone();
        theirs["metadata"].as_object_mut().unwrap().remove("labels");
        let problem = create.again(Some(&theirs)).unwrap_err();
        assert!(
            problem.starts_with("HTTPRoute staging/api-divert-cindy exists and is not divert-webhook's"),
            "{problem}"
        );
        let mut stored = desired.clone();
        stored["metadata"]["uid"] = json!("u-1");
        assert_eq!(create.again(Some(&stored)), Ok(None), "already as desired");
        let stale = ours(81, "u-1");
        assert_eq!(
            create.again(Some(&stale)),
            Ok(Some(OwnedChange::Update { desired: desired.clone(), current: stale.clone() }))
        );
        assert!(create.same_write(&OwnedChange::Update { desired: desired.clone(), current: stale.clone() }));

        let delete = OwnedChange::Delete(Identity::of(&ours(80, "u-1")));
        assert_eq!(delete.again(None), Ok(None));
        assert_eq!(delete.again(Some(&theirs)), Ok(None));
        assert_eq!(delete.again(Some(&ours(81, "u-1"))), Ok(Some(delete.clone())), "the same object, changed");
        let remade = ours(80, "u-2");
        assert_eq!(delete.again(Some(&remade)), Ok(None), "another object of that name: the next plan decides");
        assert!(!delete.same_write(&OwnedChange::Delete(Identity::of(&remade))), "another object");
        assert!(!delete.same_write(&create));
    }

    #[test]
    fn stored_defaults_are_not_a_change() {
        let desired = json!({"spec": {"rules": [{"backendRefs": [{"name": "api", "port": 80}]}]}});
        let stored = json!({"spec": {"rules": [{"backendRefs": [{"name": "api", "port": 80, "group": "", "kind": "Service", "weight": 1}]}]}, "status": {}});
        assert!(covers(&stored, &desired));
        let changed = json!({"spec": {"rules": [{"backendRefs": [{"name": "api", "port": 81}]}]}});
        assert!(!covers(&changed, &desired));
    }
}
