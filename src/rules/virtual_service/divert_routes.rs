//! SPEC §4: divert routes of a shared VirtualService.
//!
//! Every run starts from scratch: routes named `okteto-divert-*` are removed, then one clone
//! per (divert entry, selected forwarding http route) is generated from the current
//! annotations and put right before its original. The originals are never edited, so the
//! result depends only on the originals and the annotations: running it on its own output
//! changes nothing, and without annotations it gives back the original routes.
//!
//! Malformed divert entries are skipped without a warning: validation (§7) denies them with
//! the full message, and a second, vaguer sentence here would only repeat it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use rustc_hash::FxHashSet;

use serde_json::{Map, Value};

use super::annotations::{self, Entry};
use crate::cluster::ClusterView;
use crate::patch::JsonPatch;
use crate::rules::baggage::divert_pattern;
use crate::rules::divert::{BAGGAGE_HEADER, GENERATED_ROUTE_PREFIX, LEGACY_HEADER};
use crate::rules::{Field, Findings, Subject};
use crate::settings::Settings;

/// Route fields that make a route answer or hand off instead of forwarding (SPEC §4).
const NOT_FORWARDING: [&str; 3] = ["redirect", "directResponse", "delegate"];

/// What every clone of one VirtualService needs to know.
struct Context<'a> {
    namespace: &'a str,
    settings: &'a Settings,
    cluster: &'a ClusterView,
}

/// Which Services of the VirtualService's namespace a developer's clones send to the developer
/// (SPEC §4.4, §4 `services`, §10.4). One per developer: a developer's entries are read together,
/// as their routes are (a route is cloned once per developer).
enum Services<'a> {
    /// No cluster and no `services`: every Service (SPEC §4.4 as it is without a cluster).
    Every,
    /// Every entry of the developer lists `services`: the Services they list.
    Listed(BTreeSet<&'a str>),
    /// Some entry has no `services`, and there is a cluster: the Services the developer runs
    /// (`None`: the developer namespace does not exist).
    Run(Option<&'a BTreeSet<String>>),
}

impl Services<'_> {
    /// Is a destination to Service `service` (as written in the host) sent to the developer?
    fn admit(&self, service: &str) -> bool {
        let lower: std::borrow::Cow<'_, str> = if service.bytes().any(|b| b.is_ascii_uppercase()) {
            service.to_ascii_lowercase().into()
        } else {
            service.into()
        };
        match self {
            Services::Every => true,
            Services::Listed(listed) => listed.contains(lower.as_ref()),
            Services::Run(run) => run.is_some_and(|run| run.contains(lower.as_ref())),
        }
    }
}

/// The [`Services`] of every developer named in `entries`. Work grows with the entries and the
/// names they list.
fn developer_services<'a>(entries: &'a [Entry], cluster: &'a ClusterView) -> BTreeMap<&'a str, Services<'a>> {
    let mut by_key: BTreeMap<&str, Services<'_>> = BTreeMap::new();
    for entry in entries {
        let services = by_key.entry(entry.key.as_str()).or_insert_with(|| Services::Listed(BTreeSet::new()));
        match (&entry.services, &mut *services) {
            (None, _) if cluster.is_known() => {
                *services = Services::Run(cluster.namespace(&entry.key).map(|ns| &ns.services));
            }
            (None, _) => *services = Services::Every,
            (Some(names), Services::Listed(listed)) => listed.extend(names.iter().map(String::as_str)),
            (Some(_), Services::Every | Services::Run(_)) => {}
        }
    }
    by_key
}

/// Why a selected route is not cloned; each becomes one warning.
#[derive(Clone)]
enum Skip {
    NotForwarding,
    NotAMap,
    Unreadable(String),
    NothingToRewrite,
    /// It has destinations in the namespace, but to none of the developer's [`Services`].
    NoServiceOfTheDeveloper,
}

pub fn mutate(subject: &Subject<'_>, object: &mut Value, settings: &Settings, findings: &mut Findings) {
    let Some(decision) = decide(subject, settings, findings) else { return };
    let Some(http) = object.pointer_mut("/spec/http").and_then(Value::as_array_mut) else { return };
    let old = std::mem::take(http);
    let mut clones = decision.clones.into_iter();
    let mut originals = decision.originals.iter().peekable();
    for (position, route) in old.into_iter().enumerate() {
        if originals.next_if(|&&p| p == position).is_none() {
            continue; // an earlier clone: regenerated below, or gone
        }
        for clone in clones.next().into_iter().flatten() {
            http.push(serde_json::from_str(&clone.json).expect("a rendered clone is JSON"));
        }
        http.push(route);
    }
}

/// The divert routes of the object, decided: which routes are originals, and the clones to put
/// before each. Warnings go to `findings`. `None` when the http routes are left as they are
/// (no spec, no hosts, no list of routes, a size limit passed, or the deadline).
struct Decision {
    /// Positions in `spec.http` of the original routes; every other position holds a route an
    /// earlier run generated, which goes.
    originals: Vec<usize>,
    /// For each original, in order, its clones.
    clones: Vec<Vec<RenderedClone>>,
}

struct RenderedClone {
    name: String,
    /// The clone as compact JSON, keys in the order of the original route.
    json: String,
}

/// A divert key put in the place of the developer's while a route's clone is built once; every
/// developer's clone is then that JSON with their key in its place. A DNS label, as every key
/// is, so it is written as it is in names, hosts, JSON strings and P(key).
const KEY_PLACEHOLDER: &str = "divertkeyplaceholder7f3a9c2e51d8";

/// A route's clone with [`KEY_PLACEHOLDER`] for the key, cut where the key goes; `None` when the
/// route's own JSON holds the placeholder (then each clone is built for its key).
struct Template(Option<Vec<String>>);

impl Template {
    fn render(&self, key: &str) -> Option<String> {
        self.0.as_ref().map(|pieces| pieces.join(key))
    }
}

fn decide(subject: &Subject<'_>, settings: &Settings, findings: &mut Findings) -> Option<Decision> {
    let entries: Vec<Entry> =
        annotations::entries(subject.object, subject.namespace).into_iter().filter_map(Result::ok).collect();
    let Some(spec) = subject.object.field("spec").and_then(Value::as_object) else {
        if !entries.is_empty() {
            findings.warn("divert annotations are set but the VirtualService has no spec; nothing is diverted");
        }
        return None;
    };
    let has_hosts = spec.field("hosts").and_then(Value::as_array).is_some_and(|h| !h.is_empty());
    if !has_hosts {
        // A delegate VirtualService (no hosts): SPEC §4.7 leaves it alone.
        if !entries.is_empty() {
            findings.warn("this VirtualService has no hosts (a delegate): divert it on its root VirtualService");
        }
        return None;
    }
    let other_route_names = other_route_names(spec);
    let http = match spec.field("http") {
        Some(Value::Array(http)) => http,
        None | Some(Value::Null) => {
            for entry in &entries {
                findings.warn(format!("divert of {}: this VirtualService has no http routes", short(&entry.key)));
            }
            return None;
        }
        Some(_) => {
            if !entries.is_empty() {
                findings.warn("spec.http is not a list: no divert routes are generated");
            }
            return None;
        }
    };

    let context = Context { namespace: subject.namespace, settings, cluster: subject.cluster };
    // SPEC §7 size: what would be generated is counted first; above a limit nothing is.
    let plan = plan(&entries, http, &context, subject.object, findings.object_bytes);
    if let Some(excess) = plan.excess(settings) {
        findings.warn(excess.warning());
        return None;
    }

    type Positioned<'v> = Vec<(usize, &'v Value)>;
    let (removed, originals): (Positioned<'_>, Positioned<'_>) =
        http.iter().enumerate().partition(|(_, route)| route_name(route).is_some_and(is_generated_name));
    let (positions, originals): (Vec<usize>, Vec<&Value>) = originals.into_iter().unzip();
    let clone_suffixes = clone_suffixes(&originals);
    let mut warnings = Vec::new();
    let mut clones: Vec<Vec<RenderedClone>> = (0..originals.len()).map(|_| Vec::new()).collect();
    // Per original: its clone with the placeholder key, or why it has none.
    let mut templates: Vec<Option<Result<Template, Skip>>> = (0..originals.len()).map(|_| None).collect();
    // Hash sets: clone names share a long prefix, which made ordered sets compare at length.
    let mut generated: FxHashSet<String> = FxHashSet::default();
    let mut cloned: FxHashSet<(&str, usize)> = FxHashSet::default();
    // How warnings name each route, made once (not per developer).
    let labels: Vec<String> = originals.iter().enumerate().map(|(index, route)| route_label(route, index)).collect();
    // Routes whose clone is refused for a reason that is the same for every developer: warned once.
    let mut warned_route = vec![false; originals.len()];
    let developer_services = developer_services(&entries, context.cluster);
    // A template pays for itself from the second developer that renders it; with one, each
    // clone is built for its key straight away.
    let shared_clones = developer_services.values().filter(|s| matches!(s, Services::Every)).count() > 1;

    for entry in &entries {
        let key = short(&entry.key);
        let services = &developer_services[entry.key.as_str()];
        let selected = select_routes(entry, &originals, &other_route_names, &mut warnings);
        if selected.is_empty() && entry.routes.is_none() {
            warnings.push(format!("divert of {key}: this VirtualService has no http routes"));
        }
        if entry.routes.is_none() && !originals.is_empty() && originals.iter().all(|r| is_map_not_forwarding(r)) {
            // A root VirtualService whose routes all delegate: without this nothing would say
            // that the entry diverts nothing (a route named in `routes` is warned about below).
            warnings.push(format!(
                "divert of {key}: no http route here forwards{}; nothing is diverted",
                delegation_note(&originals)
            ));
        }
        for (index, named) in selected {
            if findings.out_of_time() {
                return None; // the review is abandoned
            }
            let route = originals[index];
            if !cloned.insert((entry.key.as_str(), index)) {
                continue; // two entries for the same developer select the same route
            }
            let name = clone_name(&entry.key, &clone_suffixes[index]);
            let label = labels[index].as_str();
            if generated.contains(&name) {
                // e.g. developer `a` on route `b-c` and developer `a-b` on route `c`
                warnings
                    .push(format!("divert of {key}: route {label} would get a clone name already in use; rename it"));
                continue;
            }
            // The same clone for every developer but for the key: built once per route, when
            // every destination in the namespace goes to the developer and more than one developer
            // renders it. Otherwise (one developer, or a cluster or a `services` list that decides
            // per developer) built for this developer.
            let rendered = if matches!(services, Services::Every) && shared_clones {
                let template = templates[index].get_or_insert_with(|| {
                    let placeholder_name = clone_name(KEY_PLACEHOLDER, &clone_suffixes[index]);
                    clone_route(route, &placeholder_name, label, KEY_PLACEHOLDER, services, &context, &mut warnings)
                        .map(|clone| {
                            let json = serde_json::to_string(&clone).expect("a route serialises");
                            Template(
                                (!holds_text(route, KEY_PLACEHOLDER))
                                    .then(|| json.split(KEY_PLACEHOLDER).map(str::to_string).collect()),
                            )
                        })
                });
                match template {
                    Ok(template) => template.render(&entry.key).map(Ok).unwrap_or_else(|| {
                        clone_route(route, &name, label, &entry.key, services, &context, &mut Vec::new())
                            .map(|clone| serde_json::to_string(&clone).expect("a route serialises"))
                    }),
                    Err(skip) => Err(skip.clone()),
                }
            } else {
                clone_route(route, &name, label, &entry.key, services, &context, &mut warnings)
                    .map(|clone| serde_json::to_string(&clone).expect("a route serialises"))
            };
            if let Err(Skip::NotAMap | Skip::Unreadable(_) | Skip::NothingToRewrite) = &rendered
                && std::mem::replace(&mut warned_route[index], true)
            {
                continue; // the same words for every developer
            }
            match rendered {
                Ok(json) => {
                    generated.insert(name.clone());
                    clones[index].push(RenderedClone { name, json });
                }
                Err(Skip::NotForwarding) if named => warnings.push(format!(
                    "divert of {key}: route {label} redirects, responds or delegates: it does not forward"
                )),
                Err(Skip::NotForwarding) => {}
                Err(Skip::NotAMap) => warnings.push(format!("spec.http[{index}] is not a map: it is not diverted")),
                Err(Skip::Unreadable(what)) => warnings.push(format!("route {label}: {what}: it is not diverted")),
                Err(Skip::NothingToRewrite) => warnings.push(format!(
                    "route {label} has no destination in namespace {}: not diverted",
                    short(context.namespace)
                )),
                Err(Skip::NoServiceOfTheDeveloper) => warnings.push(match services {
                    Services::Listed(_) => {
                        format!("divert of {key}: route {label} sends to none of the entry's services: not diverted")
                    }
                    _ => format!("divert of {key}: route {label} sends to no Service that {key} runs: not diverted"),
                }),
            }
        }
    }

    for (_, route) in &removed {
        let name = route_name(route).unwrap_or_default();
        if !generated.contains(name) {
            warnings.push(format!("removed route {}: no divert annotation generates it any more", short(name)));
        }
    }
    let mut seen = BTreeSet::new();
    for warning in warnings {
        if seen.insert(warning.clone()) {
            findings.warn(warning);
        }
    }
    Some(Decision { originals: positions, clones })
}

/// Does any key or string in `value` contain `text`?
fn holds_text(value: &Value, text: &str) -> bool {
    match value {
        Value::String(s) => s.contains(text),
        Value::Array(items) => items.iter().any(|item| holds_text(item, text)),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains(text) || holds_text(v, text)),
        _ => false,
    }
}

/// SPEC §4 as JSONPatch operations on `spec.http`, written straight from the decision: no copy
/// of the object is made and no clone is built as a tree (the server's path; [`mutate`] gives
/// the same result on a copy). Originals stay where they are; between two originals, the
/// earlier clones that equal the new ones stay, the rest are removed, replaced or added.
pub fn patch(subject: &Subject<'_>, settings: &Settings, findings: &mut Findings) -> JsonPatch {
    let Some(decision) = decide(subject, settings, findings) else { return JsonPatch::default() };
    let Some(http) = subject.object.pointer("/spec/http").and_then(Value::as_array) else {
        return JsonPatch::default();
    };
    // Room for every clone and its operation's words: the patch is written without regrowing.
    let room = decision.clones.iter().flatten().map(|clone| clone.json.len() + 48).sum::<usize>() + 2;
    let mut ops = PatchWriter { json: Vec::with_capacity(room), operations: 0 };
    let mut index = 0; // position in the array as the operations so far have made it
    let mut earlier: Vec<&Value> = Vec::new(); // clones found since the last original
    let mut clones = decision.clones.iter();
    let mut originals = decision.originals.iter().peekable();
    for (position, route) in http.iter().enumerate() {
        if originals.next_if(|&&p| p == position).is_none() {
            earlier.push(route);
            continue;
        }
        index = merge_clones(&mut ops, index, &earlier, clones.next().map_or(&[][..], Vec::as_slice));
        earlier.clear();
        index += 1; // the original
    }
    merge_clones(&mut ops, index, &earlier, &[]);
    ops.finish()
}

/// Turns the clones `old` (at `index` on) into `new`; returns the position after them.
fn merge_clones(ops: &mut PatchWriter, mut index: usize, old: &[&Value], new: &[RenderedClone]) -> usize {
    let wanted: FxHashSet<&str> = new.iter().map(|clone| clone.name.as_str()).collect();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let old_name = old.get(i).and_then(|route| route_name(route));
        match (old.get(i), new.get(j)) {
            (Some(route), Some(clone)) if old_name == Some(clone.name.as_str()) => {
                if !same_json(route, &clone.json) {
                    ops.op("replace", index, Some(&clone.json));
                }
                index += 1;
                i += 1;
                j += 1;
            }
            (Some(_), None) => {
                ops.op("remove", index, None);
                i += 1;
            }
            (Some(_), Some(_)) if old_name.is_none_or(|name| !wanted.contains(name)) => {
                ops.op("remove", index, None);
                i += 1;
            }
            (_, Some(clone)) => {
                ops.op("add", index, Some(&clone.json));
                index += 1;
                j += 1;
            }
            (None, None) => unreachable!("the loop runs while one side has more"),
        }
    }
    index
}

/// Is `route` the clone written as `json`? Equal text (the usual case: the webhook's own
/// output) or, after the apiserver re-encoded it with other key order, equal values.
fn same_json(route: &Value, json: &str) -> bool {
    serde_json::to_string(route).is_ok_and(|text| text == json)
        || serde_json::from_str::<Value>(json).is_ok_and(|clone| &clone == route)
}

/// JSONPatch operations on `/spec/http`, written as JSON as they come.
#[derive(Default)]
struct PatchWriter {
    json: Vec<u8>,
    operations: usize,
}

impl PatchWriter {
    fn op(&mut self, op: &str, index: usize, value: Option<&str>) {
        self.json.push(if self.operations == 0 { b'[' } else { b',' });
        self.json.extend_from_slice(br#"{"op":""#);
        self.json.extend_from_slice(op.as_bytes());
        self.json.extend_from_slice(br#"","path":"/spec/http/"#);
        self.json.extend_from_slice(index.to_string().as_bytes());
        self.json.push(b'"');
        if let Some(value) = value {
            self.json.extend_from_slice(b",\"value\":");
            self.json.extend_from_slice(value.as_bytes());
        }
        self.json.push(b'}');
        self.operations += 1;
    }

    fn finish(mut self) -> JsonPatch {
        if self.operations > 0 {
            self.json.push(b']');
        }
        JsonPatch { json: self.json, operations: self.operations }
    }
}

/// SPEC §7 size, for validation: what [`mutate`] would refuse to generate on this object.
pub fn excess(subject: &Subject<'_>, settings: &Settings, object_bytes: Option<usize>) -> Option<Excess> {
    planned(subject, settings, object_bytes)?.excess(settings)
}

/// What [`mutate`] would generate on this object (`None`: it has no divert entries or no http
/// routes to divert), counted without generating anything.
pub fn planned(subject: &Subject<'_>, settings: &Settings, object_bytes: Option<usize>) -> Option<Plan> {
    let entries: Vec<Entry> =
        annotations::entries(subject.object, subject.namespace).into_iter().filter_map(Result::ok).collect();
    if entries.is_empty() {
        return None;
    }
    let spec = subject.object.field("spec")?.as_object()?;
    spec.field("hosts").and_then(Value::as_array).filter(|h| !h.is_empty())?;
    let http = spec.field("http")?.as_array()?;
    let context = Context { namespace: subject.namespace, settings, cluster: subject.cluster };
    Some(plan(&entries, http, &context, subject.object, object_bytes))
}

/// Names of the tcp and tls routes (a divert entry naming one gets its own warning).
fn other_route_names(spec: &Map<String, Value>) -> BTreeSet<String> {
    ["tcp", "tls"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .filter_map(route_name)
        .map(str::to_string)
        .collect()
}

/// The largest object a mutation may produce (SPEC §7): etcd refuses requests over 1.5 MiB.
pub const MAX_OBJECT_BYTES: usize = 1024 * 1024;

/// What a mutation would generate, counted before anything is generated (SPEC §7 size): the
/// clones, and the object's size in JSON afterwards (an estimate from the originals' sizes,
/// within a few bytes per clone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub routes: usize,
    pub object_bytes: usize,
}

/// A mutation above a size limit: it is not done (/mutate), and the object is denied (/validate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Excess {
    Routes { count: usize, limit: usize },
    Bytes { bytes: usize, limit: usize },
}

impl Plan {
    pub fn excess(&self, settings: &Settings) -> Option<Excess> {
        if self.routes > settings.max_generated_routes {
            Some(Excess::Routes { count: self.routes, limit: settings.max_generated_routes })
        } else if self.routes > 0 && self.object_bytes > MAX_OBJECT_BYTES {
            Some(Excess::Bytes { bytes: self.object_bytes, limit: MAX_OBJECT_BYTES })
        } else {
            None
        }
    }
}

impl Excess {
    /// The /mutate warning: one sentence under 120 characters.
    pub fn warning(&self) -> String {
        match *self {
            Excess::Routes { count, limit } => {
                format!("divert not applied: it would generate {count} routes, above --max-generated-routes {limit}")
            }
            Excess::Bytes { bytes, limit } => {
                format!("divert not applied: the result would be {bytes} bytes of JSON, above the limit of {limit}")
            }
        }
    }

    /// The /validate denial, after the object's name: the count, the limit and the fix.
    pub fn denial(&self) -> String {
        match *self {
            Excess::Routes { count, limit } => format!(
                "its divert annotations would generate {count} routes, above the limit of {limit} \
                 (--max-generated-routes); divert fewer routes (list them in each entry's \"routes\"), \
                 remove entries of developers who are done, or split the VirtualService"
            ),
            Excess::Bytes { bytes, limit } => format!(
                "with its divert routes it would be {bytes} bytes of JSON, above the limit of {limit} \
                 (etcd refuses objects over 1.5 MiB); divert fewer routes (list them in each entry's \"routes\"), \
                 remove entries of developers who are done, or split the VirtualService"
            ),
        }
    }
}

/// Counts what [`mutate`] would generate for `entries` on the http routes `http` (originals and
/// earlier clones) of `object`, without generating anything. Work and memory grow with the input
/// (routes, entries, the names entries list), never with their product: whether a route can be
/// cloned and its size do not depend on the developer, so they are found once per route.
/// `object_bytes` is the object's size in JSON when the caller knows it (the review's body);
/// otherwise it is measured. (`object_bytes` is 0 in a plan that generates nothing.)
fn plan(entries: &[Entry], http: &[Value], context: &Context<'_>, object: &Value, object_bytes: Option<usize>) -> Plan {
    if entries.is_empty() {
        return Plan { routes: 0, object_bytes: 0 };
    }
    let originals: Vec<&Value> = http.iter().filter(|r| !route_name(r).is_some_and(is_generated_name)).collect();
    // Per original route that a divert could clone: its size, its match entries and the
    // Services of its destinations in the namespace (which developers run them is per developer).
    struct Clonable<'r> {
        route: &'r Value,
        match_entries: usize,
        local_services: Vec<&'r str>,
    }
    let clonable: Vec<Option<Clonable<'_>>> = originals
        .iter()
        .map(|route| {
            let local_services = local_services(route, context);
            (!local_services.is_empty()).then(|| Clonable {
                route,
                match_entries: route.field("match").and_then(Value::as_array).map_or(1, |m| m.len().max(1)),
                local_services,
            })
        })
        .collect();
    let developer_services = developer_services(entries, context.cluster);
    let mut by_name: std::collections::HashMap<&str, Vec<usize>> = std::collections::HashMap::new();
    for (index, route) in originals.iter().enumerate() {
        if let Some(name) = route_name(route) {
            by_name.entry(name).or_default().push(index);
        }
    }
    let all: Vec<usize> = (0..originals.len()).filter(|&i| clonable[i].is_some()).collect();
    // One developer's entries select the union of their routes (a route is cloned once per key).
    let mut selections: std::collections::BTreeMap<&str, Option<BTreeSet<usize>>> = std::collections::BTreeMap::new();
    for entry in entries {
        let selection = selections.entry(entry.key.as_str()).or_insert_with(|| Some(BTreeSet::new()));
        match (&entry.routes, selection.as_mut()) {
            (None, _) => *selection = None, // every route
            (Some(names), Some(selected)) => {
                for name in names {
                    selected
                        .extend(by_name.get(name.as_str()).into_iter().flatten().filter(|&&i| clonable[i].is_some()));
                }
            }
            (Some(_), None) => {}
        }
    }
    // The count first: above the limit, the sizes are not needed. A developer who clones every
    // route and gets every destination (no cluster, no `services`) is counted at once.
    let rewritten_by = |services: &Services<'_>, route: &Clonable<'_>| match services {
        Services::Every => route.local_services.len(),
        _ => route.local_services.iter().filter(|service| services.admit(service)).count(),
    };
    let mut routes = 0;
    for (key, selection) in &selections {
        let services = &developer_services[key];
        routes += match (selection, services) {
            (None, Services::Every) => all.len(),
            (None, _) => {
                all.iter().filter(|&&i| clonable[i].as_ref().is_some_and(|r| rewritten_by(services, r) > 0)).count()
            }
            (Some(selected), _) => selected
                .iter()
                .filter(|&&i| clonable[i].as_ref().is_some_and(|r| rewritten_by(services, r) > 0))
                .count(),
        };
    }
    if routes == 0 || routes > context.settings.max_generated_routes {
        return Plan { routes, object_bytes: 0 };
    }

    // Within the limit: the clones' sizes, each route written out (counted) once.
    let legacy = usize::from(context.settings.legacy_header);
    let mut route_bytes: Vec<Option<(usize, usize)>> = vec![None; originals.len()];
    let mut added_bytes = 0;
    let domain_bytes = context.settings.cluster_domain.len();
    for (key, selection) in &selections {
        let pattern_bytes = serde_json::to_string(&divert_pattern(key)).map_or(0, |p| p.len());
        let services = &developer_services[key];
        let mut add = |index: &usize| {
            let Some(route) = &clonable[*index] else { return };
            let rewritten = rewritten_by(services, route);
            if rewritten == 0 {
                return;
            }
            let (bytes, match_bytes) = *route_bytes[*index].get_or_insert_with(|| {
                let match_bytes = if legacy == 1 { route.route.field("match").map_or(0, json_bytes) } else { 0 };
                (json_bytes(route.route), match_bytes)
            });
            // The clone: the route, its new name (the prefix, the key, a position), one baggage
            // condition per match entry (`,"headers":{"baggage":{"regex":"…"}}`), with
            // --legacy-header each entry again with the legacy condition, the developer's part
            // of each rewritten host (`.<key>.svc.<domain>`); then a comma in the list. Subsets
            // dropped and weights merged only make it smaller.
            added_bytes += bytes
                + GENERATED_ROUTE_PREFIX.len()
                + key.len()
                + 8
                + route.match_entries * (pattern_bytes + 34)
                + legacy * (match_bytes + route.match_entries * (key.len() + 44))
                + rewritten * (key.len() + domain_bytes + 7)
                + 1;
        };
        match selection {
            None => all.iter().for_each(&mut add),
            Some(selected) => selected.iter().for_each(&mut add),
        }
    }
    if routes == 0 {
        return Plan { routes, object_bytes: 0 };
    }
    let generated_bytes: usize =
        http.iter().filter(|r| route_name(r).is_some_and(is_generated_name)).map(|r| json_bytes(r) + 1).sum();
    let base = object_bytes.unwrap_or_else(|| json_bytes(object));
    Plan { routes, object_bytes: base.saturating_sub(generated_bytes) + added_bytes }
}

/// The Service of each destination [`clone_route`] could rewrite in a clone of `route` (which
/// of them it does depends on the developer's [`Services`]): none when the route does not
/// forward or sends nowhere in the VirtualService's namespace. The same tests, without the copy.
fn local_services<'r>(route: &'r Value, context: &Context<'_>) -> Vec<&'r str> {
    let Some(route) = route.as_object() else { return Vec::new() };
    if !forwards(route) {
        return Vec::new();
    }
    let Some(destinations) = route.field("route").and_then(Value::as_array) else { return Vec::new() };
    destinations
        .iter()
        .filter_map(|d| destination_host(d).and_then(|h| local_service(h, context)))
        .map(|(service, _)| service)
        .collect()
}

/// The Services of `namespace` that the forwarding http routes of `object` send to, lowercase
/// (SPEC §10.2: what a developer namespace must run to get an entry). Generated routes are left
/// out, and so is a VirtualService without hosts (a delegate: never diverted, §4.7).
pub fn routed_services(object: &Value, namespace: &str, settings: &Settings) -> BTreeSet<String> {
    let Some(spec) = object.field("spec").and_then(Value::as_object) else { return BTreeSet::new() };
    if spec.field("hosts").and_then(Value::as_array).is_none_or(|h| h.is_empty()) {
        return BTreeSet::new();
    }
    let context = Context { namespace, settings, cluster: ClusterView::none() };
    let http = spec.field("http").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    http.iter()
        .filter(|route| !route_name(route).is_some_and(is_generated_name))
        .flat_map(|route| local_services(route, &context))
        .map(str::to_ascii_lowercase)
        .collect()
}

/// `destination.host` of a route destination.
fn destination_host(destination: &Value) -> Option<&str> {
    destination.field("destination")?.field("host")?.as_str()
}

/// The length of `value` written as compact JSON, without writing it anywhere.
fn json_bytes(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).expect("counting cannot fail");
    counter.0
}

/// The http routes `entry` diverts, as (index among the originals, named explicitly). Names
/// that are not http routes are reported in `warnings`.
fn select_routes<R: std::borrow::Borrow<Value>>(
    entry: &Entry,
    originals: &[R],
    other_route_names: &BTreeSet<String>,
    warnings: &mut Vec<String>,
) -> Vec<(usize, bool)> {
    let Some(names) = &entry.routes else { return (0..originals.len()).map(|i| (i, false)).collect() };
    let key = short(&entry.key);
    let mut selected = Vec::new();
    for name in names {
        // Names need not be unique (Istio allows it): a name selects every route that has it.
        let before = selected.len();
        selected.extend(
            originals
                .iter()
                .enumerate()
                .filter(|(_, r)| route_name(r.borrow()) == Some(name.as_str()))
                .map(|(i, _)| (i, true)),
        );
        if selected.len() > before {
            continue;
        }
        if other_route_names.contains(name) {
            warnings.push(format!(
                "divert of {key}: route {} is a tcp/tls route; only http routes are diverted",
                short(name)
            ));
        } else {
            warnings.push(format!("divert of {key}: there is no http route named {}", short(name)));
        }
    }
    selected
}

/// A route that is a map and redirects, answers or delegates.
fn is_map_not_forwarding(route: &Value) -> bool {
    route.as_object().is_some_and(|route| !forwards(route))
}

/// Said when an entry diverts nothing because no route forwards: delegation is named, since
/// the delegate VirtualServices are not diverted either (SPEC §4.7).
fn delegation_note(routes: &[&Value]) -> &'static str {
    if routes.iter().any(|r| r.field("delegate").is_some()) { " (delegates are not diverted)" } else { "" }
}

/// `name` of a route, if it is a non-empty string.
fn route_name(route: &Value) -> Option<&str> {
    route.field("name").and_then(Value::as_str).filter(|n| !n.is_empty())
}

/// Does this http route forward (`route:`), rather than redirect, answer or delegate?
pub(super) fn forwards(route: &Map<String, Value>) -> bool {
    route.has_field("route") && !NOT_FORWARDING.iter().any(|k| route.has_field(k))
}

/// Routes with this name prefix are the webhook's own (SPEC §4.1) and are regenerated.
pub fn is_generated_name(name: &str) -> bool {
    name.starts_with(GENERATED_ROUTE_PREFIX)
}

/// What follows `okteto-divert-<key>-` in the clone name of each original route (SPEC §4.1):
/// its name; its zero-based position among the original http routes when it has none; both,
/// `<name>-<position>`, when an earlier route already has its name.
fn clone_suffixes(originals: &[&Value]) -> Vec<String> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(originals.len());
    let mut suffixes = Vec::with_capacity(originals.len());
    for (index, route) in originals.iter().enumerate() {
        suffixes.push(match route_name(route) {
            Some(name) if seen.insert(name) => name.to_string(),
            Some(name) => format!("{name}-{index}"),
            None => index.to_string(),
        });
    }
    suffixes
}

/// `okteto-divert-<key>-<suffix>`, the suffix from [`clone_suffixes`].
fn clone_name(key: &str, suffix: &str) -> String {
    let mut name = String::with_capacity(GENERATED_ROUTE_PREFIX.len() + key.len() + 1 + suffix.len());
    for part in [GENERATED_ROUTE_PREFIX, key, "-", suffix] {
        name.push_str(part);
    }
    name
}

/// How warnings name a route: its name, or `spec.http[i]`.
fn route_label(route: &Value, index: usize) -> String {
    route_name(route).map(short).unwrap_or_else(|| format!("spec.http[{index}]"))
}

/// The clone of `route` for divert key `key`, or why there is none. Warnings about single
/// match entries that are left out go to `warnings`. The clone borrows what it keeps of the
/// original and is written out as JSON ([`ClonedRoute`] is `Serialize`): nothing of the route
/// is copied on the way.
fn clone_route<'r>(
    route: &'r Value,
    name: &str,
    label: &str,
    key: &str,
    services: &Services<'_>,
    context: &Context<'_>,
    warnings: &mut Vec<String>,
) -> Result<ClonedRoute<'r>, Skip> {
    let route = route.as_object().ok_or(Skip::NotAMap)?;
    if !forwards(route) {
        return Err(Skip::NotForwarding);
    }
    let Some(destinations) = route.field("route").and_then(Value::as_array) else {
        return Err(Skip::Unreadable("its route: is not a list".into()));
    };
    let matches = clone_matches(route.field("match"), label, warnings)?;
    let destinations = rewrite_destinations(destinations, key, services, context).ok_or_else(|| {
        let local =
            destinations.iter().any(|d| destination_host(d).is_some_and(|h| local_service(h, context).is_some()));
        if local { Skip::NoServiceOfTheDeveloper } else { Skip::NothingToRewrite }
    })?;
    Ok(ClonedRoute {
        route,
        name: name.to_string(),
        matches,
        baggage: Condition::Regex(divert_pattern(key)),
        legacy: context.settings.legacy_header.then(|| Condition::Exact(key.to_string())),
        destinations,
    })
}

/// A clone as it is written (SPEC §4.1, §4.2, §4.4): `name` first, then `match` if the original
/// has none, then the original's fields in its order, with its match entries each given the
/// baggage condition (and once more the legacy one with `--legacy-header`) and its rewritten
/// destinations.
struct ClonedRoute<'r> {
    route: &'r Map<String, Value>,
    name: String,
    /// The original's match entries that are cloned; `None`: the route matches everything.
    matches: Vec<Option<&'r Map<String, Value>>>,
    baggage: Condition,
    legacy: Option<Condition>,
    destinations: Vec<CloneDestination<'r>>,
}

/// A header condition of a clone's match entry: `{"regex": …}` or `{"exact": …}`.
enum Condition {
    Regex(String),
    Exact(String),
}

impl serde::Serialize for Condition {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        match self {
            Condition::Regex(pattern) => map.serialize_entry("regex", pattern)?,
            Condition::Exact(value) => map.serialize_entry("exact", value)?,
        }
        map.end()
    }
}

impl serde::Serialize for ClonedRoute<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let matches = Matches(self);
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", &self.name)?;
        if !self.route.has_field("match") {
            map.serialize_entry("match", &matches)?;
        }
        for (field, value) in self.route {
            match field.as_str() {
                "name" => {}
                "match" => map.serialize_entry(field, &matches)?,
                "route" => map.serialize_entry(field, &self.destinations)?,
                _ => map.serialize_entry(field, value)?,
            }
        }
        map.end()
    }
}

/// The clone's match list: each cloned entry with the baggage condition, then (with
/// `--legacy-header`) the same entry with the legacy condition instead.
struct Matches<'c, 'r>(&'c ClonedRoute<'r>);

impl serde::Serialize for Matches<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let clone = self.0;
        let mut seq = serializer.serialize_seq(None)?;
        for entry in &clone.matches {
            seq.serialize_element(&WithCondition { entry: *entry, header: BAGGAGE_HEADER, condition: &clone.baggage })?;
            if let Some(legacy) = &clone.legacy {
                seq.serialize_element(&WithCondition { entry: *entry, header: LEGACY_HEADER, condition: legacy })?;
            }
        }
        seq.end()
    }
}

/// A match entry with one more header condition: added last to its `headers` (which has no
/// condition on that header: such entries are not cloned), or as `headers` last in the entry
/// when it has none (in place of a `headers: null`).
struct WithCondition<'e> {
    entry: Option<&'e Map<String, Value>>,
    header: &'static str,
    condition: &'e Condition,
}

impl serde::Serialize for WithCondition<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Headers<'h>(Option<&'h Map<String, Value>>, &'static str, &'h Condition);
        impl serde::Serialize for Headers<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(None)?;
                for (name, condition) in self.0.into_iter().flatten() {
                    map.serialize_entry(name, condition)?;
                }
                map.serialize_entry(self.1, self.2)?;
                map.end()
            }
        }
        let mut map = serializer.serialize_map(None)?;
        let mut placed = false;
        for (field, value) in self.entry.into_iter().flatten() {
            if field == "headers" {
                map.serialize_entry(field, &Headers(value.as_object(), self.header, self.condition))?;
                placed = true;
            } else {
                map.serialize_entry(field, value)?;
            }
        }
        if !placed {
            map.serialize_entry("headers", &Headers(None, self.header, self.condition))?;
        }
        map.end()
    }
}

/// The match entries of a route that its clone keeps (SPEC §4.2): all of them, but those that
/// already test the baggage header (each named in a warning); `[None]` when the route matches
/// everything (the clone gets one entry with only the condition).
fn clone_matches<'r>(
    original: Option<&'r Value>,
    label: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<Option<&'r Map<String, Value>>>, Skip> {
    match original {
        None | Some(Value::Null) => Ok(vec![None]),
        Some(Value::Array(list)) if list.is_empty() => Ok(vec![None]),
        Some(Value::Array(list)) => {
            let mut usable = Vec::with_capacity(list.len());
            // Per-entry warnings are only given when some entries are cloned; a route none of
            // whose entries can be gets the one warning below.
            let mut left_out = Vec::new();
            for (i, entry) in list.iter().enumerate() {
                let Some(entry) = entry.as_object() else {
                    return Err(Skip::Unreadable(format!("match[{i}] is not a map")));
                };
                match entry.field("headers") {
                    None | Some(Value::Null) => usable.push(Some(entry)),
                    Some(Value::Object(headers)) if headers.keys().any(|h| is_baggage_condition(h)) => left_out.push(
                        format!("route {label}: match[{i}] already tests the baggage header; it is not diverted"),
                    ),
                    Some(Value::Object(_)) => usable.push(Some(entry)),
                    Some(_) => return Err(Skip::Unreadable(format!("match[{i}].headers is not a map"))),
                }
            }
            if usable.is_empty() {
                return Err(Skip::Unreadable("every match entry already tests baggage".into()));
            }
            warnings.extend(left_out);
            Ok(usable)
        }
        Some(_) => Err(Skip::Unreadable("match is not a list".into())),
    }
}

/// A header condition on the divert header (or its legacy form): such a match entry is
/// someone's own divert rule and is not combined with ours.
fn is_baggage_condition(header: &str) -> bool {
    header.eq_ignore_ascii_case(BAGGAGE_HEADER) || header.eq_ignore_ascii_case(LEGACY_HEADER)
}

/// The clone's destinations (SPEC §4.4), or `None` if no destination goes to one of the
/// developer's `services` in the VirtualService's namespace. Rewritten destinations lose
/// `subset`; rewritten destinations that are then identical (apart from `weight`) are merged
/// with their weights summed; a lone destination loses `weight`. Everything else is kept as it
/// is. Nothing is copied: each destination is written out from the original ([`CloneDestination`]).
fn rewrite_destinations<'r>(
    destinations: &'r [Value],
    key: &str,
    services: &Services<'_>,
    context: &Context<'_>,
) -> Option<Vec<CloneDestination<'r>>> {
    let mut out: Vec<CloneDestination<'r>> = Vec::with_capacity(destinations.len());
    for destination in destinations {
        let rewritten = (|| {
            let fields = destination.as_object()?;
            let target = fields.field("destination")?.as_object()?;
            let host = target.field("host")?.as_str()?;
            local_service(host, context).filter(|(service, _)| services.admit(service))?;
            let host = developer_host(host, key, context)?;
            Some(Rewritten { fields, target, host, weight: Weight::AsWritten })
        })();
        let Some(new) = rewritten else {
            out.push(CloneDestination::Kept(destination));
            continue;
        };
        let same = out.iter_mut().find_map(|other| match other {
            CloneDestination::Rewritten(other) if other.same_but_weight(&new) => Some(other),
            _ => None,
        });
        if !same.is_some_and(|other| other.merge_weight(&new)) {
            out.push(CloneDestination::Rewritten(new));
        }
    }
    if !out.iter().any(|d| matches!(d, CloneDestination::Rewritten(_))) {
        return None;
    }
    if let [CloneDestination::Rewritten(lone)] = out.as_mut_slice() {
        lone.weight = Weight::Dropped;
    }
    Some(out)
}

/// One destination of a clone: the original's, or the original sent to the developer's Service.
enum CloneDestination<'r> {
    Kept(&'r Value),
    Rewritten(Rewritten<'r>),
}

/// A destination sent to the developer: the original's fields in their order, with
/// `destination.host` replaced, `destination.subset` left out and `weight` as merged.
struct Rewritten<'r> {
    fields: &'r Map<String, Value>,
    /// The original's `destination`.
    target: &'r Map<String, Value>,
    host: String,
    weight: Weight,
}

#[derive(Clone, Copy)]
enum Weight {
    /// The original's `weight` field, or none.
    AsWritten,
    /// The sum of merged destinations' weights (written where the original has `weight`, else last).
    Sum(i64),
    /// Left out (a lone destination).
    Dropped,
}

impl Rewritten<'_> {
    /// Its weight when it can be summed: `Some(None)` for none (or null).
    fn integer_weight(&self) -> Option<Option<i64>> {
        match self.weight {
            Weight::Sum(sum) => Some(Some(sum)),
            Weight::Dropped => Some(None),
            Weight::AsWritten => match self.fields.field("weight") {
                None | Some(Value::Null) => Some(None),
                Some(w) => w.as_i64().map(Some),
            },
        }
    }

    /// Equal as JSON values but for `weight` (maps compare whatever their key order).
    fn same_but_weight(&self, other: &Rewritten<'_>) -> bool {
        self.host == other.host
            && same_map_but(self.fields, other.fields, &["weight", "destination"])
            && same_map_but(self.target, other.target, &["host", "subset"])
    }

    /// Adds `from`'s weight to this one's. False (nothing changed) when a weight is not an
    /// integer (or the sum does not fit): such destinations are kept apart rather than guessed at.
    fn merge_weight(&mut self, from: &Rewritten<'_>) -> bool {
        let (Some(a), Some(b)) = (self.integer_weight(), from.integer_weight()) else { return false };
        if a.is_some() || b.is_some() {
            let Some(sum) = a.unwrap_or(0).checked_add(b.unwrap_or(0)) else { return false };
            self.weight = Weight::Sum(sum);
        }
        true
    }
}

/// How many of `keys` the map has.
fn count_of(map: &Map<String, Value>, keys: &[&str]) -> usize {
    keys.iter().filter(|key| map.has_field(key)).count()
}

/// Do `a` and `b` hold the same fields with equal values, leaving out `ignored`?
fn same_map_but(a: &Map<String, Value>, b: &Map<String, Value>, ignored: &[&str]) -> bool {
    a.len() - count_of(a, ignored) == b.len() - count_of(b, ignored)
        && a.iter()
            .filter(|(k, _)| !ignored.contains(&k.as_str()))
            .all(|(k, v)| b.field(k).is_some_and(|w| crate::patch::same_value(v, w)))
}

impl serde::Serialize for CloneDestination<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let rewritten = match self {
            CloneDestination::Kept(original) => return original.serialize(serializer),
            CloneDestination::Rewritten(rewritten) => rewritten,
        };
        struct Target<'t>(&'t Rewritten<'t>);
        impl serde::Serialize for Target<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(None)?;
                for (field, value) in self.0.target {
                    match field.as_str() {
                        "host" => map.serialize_entry(field, &self.0.host)?,
                        "subset" => {}
                        _ => map.serialize_entry(field, value)?,
                    }
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(None)?;
        let mut weight_written = false;
        for (field, value) in rewritten.fields {
            match (field.as_str(), rewritten.weight) {
                ("destination", _) => map.serialize_entry(field, &Target(rewritten))?,
                ("weight", Weight::Dropped) => {}
                ("weight", Weight::Sum(sum)) => {
                    map.serialize_entry(field, &sum)?;
                    weight_written = true;
                }
                _ => map.serialize_entry(field, value)?,
            }
        }
        if let (Weight::Sum(sum), false) = (rewritten.weight, weight_written) {
            map.serialize_entry("weight", &sum)?;
        }
        map.end()
    }
}

/// `svc.<key>.svc.<domain>` when `host` names a Service of the VirtualService's own namespace
/// (`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.<domain>`); `None` for every other host.
/// DNS names are case-insensitive and Service names lowercase, so the service is written in
/// lowercase; a fully qualified host with a trailing dot keeps it.
fn developer_host(host: &str, key: &str, context: &Context<'_>) -> Option<String> {
    let (service, root) = local_service(host, context)?;
    let domain = context.settings.cluster_domain.as_str();
    let mut out = String::with_capacity(service.len() + key.len() + domain.len() + 7);
    for part in [service, ".", key, ".svc.", domain, root] {
        out.push_str(part);
    }
    out[..service.len()].make_ascii_lowercase();
    Some(out)
}

/// The Service `host` names in the VirtualService's own namespace, and `"."` if the host is
/// written fully qualified with a trailing dot (else `""`).
fn local_service<'h>(host: &'h str, context: &Context<'_>) -> Option<(&'h str, &'static str)> {
    if host.contains('*') {
        return None;
    }
    let (namespace, domain) = (context.namespace, context.settings.cluster_domain.as_str());
    let (host, root) = match host.strip_suffix('.') {
        Some(name) => (name, "."),
        None => (host, ""),
    };
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let mut parts = host.splitn(4, '.');
    let service = parts.next().filter(|s| !s.is_empty())?;
    let in_namespace = match (parts.next(), parts.next(), parts.next()) {
        (None, None, None) => root.is_empty(),
        (Some(ns), None, None) => root.is_empty() && eq(ns, namespace),
        (Some(ns), Some(svc), None) => root.is_empty() && eq(svc, "svc") && eq(ns, namespace),
        (Some(ns), Some(svc), Some(rest)) => eq(svc, "svc") && eq(ns, namespace) && eq(rest, domain),
        _ => false,
    };
    in_namespace.then_some((service, root))
}

/// User-written names in warnings are cut so that a sentence naming two of them stays under
/// 120 characters (SPEC §8).
fn short(s: &str) -> String {
    crate::rules::shorten(s, 24)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterView;
    use crate::rules::Kind;
    use serde_json::json;

    const HASH: &str = "divert.okteto.com/2615052508acbfaddeba0eeded4131631ea31a02";

    fn vs(annotations: Value, spec: Value) -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "vs", "namespace": "staging", "annotations": annotations},
            "spec": spec,
        })
    }

    fn run(object: &Value, settings: &Settings) -> (Value, Vec<String>) {
        let subject = Subject {
            kind: Kind::VirtualService,
            namespace: "staging",
            name: "vs",
            object,
            cluster: ClusterView::none(),
        };
        let mut out = object.clone();
        let mut findings = Findings::default();
        mutate(&subject, &mut out, settings, &mut findings);
        (out, findings.warnings)
    }

    fn names(object: &Value) -> Vec<String> {
        object["spec"]["http"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.field("name").and_then(Value::as_str).unwrap_or("-").to_string())
            .collect()
    }

    #[test]
    fn hosts_of_the_own_namespace_are_rewritten() {
        let settings = Settings::default();
        let context = Context { namespace: "staging", settings: &settings, cluster: ClusterView::none() };
        let want = Some("api.cindy.svc.cluster.local".to_string());
        for host in
            ["api", "api.staging", "api.staging.svc", "api.staging.svc.cluster.local", "API.Staging", "Api.STAGING.SVC"]
        {
            assert_eq!(developer_host(host, "cindy", &context), want, "{host}");
        }
        assert_eq!(
            developer_host("api.staging.svc.cluster.local.", "cindy", &context).as_deref(),
            Some("api.cindy.svc.cluster.local.")
        );
        // a trailing dot makes a name absolute: `api.` and `api.staging.` are not Services here
        for host in [
            "api.other",
            "api.other.svc.cluster.local",
            "api.staging.svc.example.org",
            "*.staging",
            "a.com",
            "",
            ".",
            "api.",
            "api.staging.",
            "api.staging.svc.",
        ] {
            assert_eq!(developer_host(host, "cindy", &context), None, "{host}");
        }
        let custom = Settings { cluster_domain: "corp.internal".into(), ..Settings::default() };
        let context = Context { namespace: "staging", settings: &custom, cluster: ClusterView::none() };
        assert_eq!(
            developer_host("api.staging.svc.corp.internal", "x", &context).as_deref(),
            Some("api.x.svc.corp.internal")
        );
        assert_eq!(developer_host("api.staging.svc.cluster.local", "x", &context), None);
    }

    #[test]
    fn two_entries_in_key_order_and_regeneration() {
        let spec = json!({"hosts": ["api"], "http": [{"name": "api", "route": [{"destination": {"host": "api"}}]}]});
        let object = vs(
            json!({"divert.okteto.com/zed-app": r#"{"namespace":"zed"}"#, HASH: r#"{"namespace":"cindy"}"#}),
            spec.clone(),
        );
        let (out, warnings) = run(&object, &Settings::default());
        assert_eq!(names(&out), ["okteto-divert-cindy-api", "okteto-divert-zed-api", "api"]);
        assert!(warnings.is_empty(), "{warnings:?}");
        let (again, warnings) = run(&out, &Settings::default());
        assert_eq!(again, out);
        assert!(warnings.is_empty(), "{warnings:?}");

        // zed's entry goes: its route goes, named in a warning; the rest is kept.
        let mut fewer = out.clone();
        fewer["metadata"]["annotations"].as_object_mut().unwrap().remove("divert.okteto.com/zed-app");
        let (out, warnings) = run(&fewer, &Settings::default());
        assert_eq!(names(&out), ["okteto-divert-cindy-api", "api"]);
        assert_eq!(warnings, ["removed route okteto-divert-zed-api: no divert annotation generates it any more"]);
    }

    #[test]
    fn duplicate_entries_for_one_developer_give_one_clone_per_route() {
        let spec = json!({"hosts": ["h"], "http": [
            {"name": "a", "route": [{"destination": {"host": "a"}}]},
            {"name": "b", "route": [{"destination": {"host": "b"}}]},
        ]});
        let object = vs(
            json!({
                HASH: r#"{"namespace":"cindy","routes":["a"]}"#,
                "divert.okteto.com/cindy-other": r#"{"namespace":"cindy","routes":["a","b"]}"#,
            }),
            spec,
        );
        let (out, _) = run(&object, &Settings::default());
        assert_eq!(names(&out), ["okteto-divert-cindy-a", "a", "okteto-divert-cindy-b", "b"]);
    }

    #[test]
    fn odd_input_is_skipped_with_a_warning_never_a_panic() {
        let entry = json!({ HASH: r#"{"namespace":"cindy"}"# });
        let specs = [
            json!(null),
            json!({"hosts": ["h"], "http": "nope"}),
            json!({"hosts": ["h"], "http": [1, "x", null, {"route": "x"}, {"route": [1, {"destination": 3}]}]}),
            json!({"hosts": ["h"], "http": [{"match": "x", "route": [{"destination": {"host": "a"}}]}]}),
            json!({"hosts": ["h"], "http": [{"match": [1], "route": [{"destination": {"host": "a"}}]}]}),
            json!({"hosts": ["h"], "http": [{"match": [{"headers": 1}], "route": [{"destination": {"host": "a"}}]}]}),
            json!({"hosts": ["h"], "http": [{"name": 7, "route": [{"destination": {"host": 7, "subset": 1}, "weight": "x"}]}]}),
            json!({"hosts": "h", "http": []}),
            json!({"hosts": ["h"], "tcp": [{"name": "t"}]}),
        ];
        for spec in specs {
            let object = vs(entry.clone(), spec.clone());
            let (out, warnings) = run(&object, &Settings::default());
            assert_eq!(out["spec"], object["spec"], "{spec}");
            assert!(!warnings.is_empty(), "{spec}");
            assert!(warnings.iter().all(|w| w.chars().count() < 120), "{warnings:?}");
        }
    }

    #[test]
    fn warnings_stay_short_with_long_names() {
        let long = "r".repeat(200);
        let key = "k".repeat(63);
        let object = vs(
            json!({ HASH: format!(r#"{{"namespace":"{key}","routes":["{long}","x{long}"]}}"#) }),
            json!({"hosts": ["h"], "http": [
                {"name": long, "route": [{"destination": {"host": "ext.example.com"}}]},
                {"name": format!("okteto-divert-{long}"), "route": []},
            ]}),
        );
        let (_, warnings) = run(&object, &Settings::default());
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings.iter().all(|w| w.chars().count() < 120), "{warnings:?}");
    }

    #[test]
    fn a_name_shared_by_several_routes_diverts_each_of_them() {
        let spec = json!({"hosts": ["h"], "http": [
            {"name": "dup", "match": [{"uri": {"prefix": "/a"}}], "route": [{"destination": {"host": "a"}}]},
            {"route": [{"destination": {"host": "c"}}]},
            {"name": "dup", "match": [{"uri": {"prefix": "/b"}}], "route": [{"destination": {"host": "b"}}]},
            {"name": "dup", "route": [{"destination": {"host": "d"}}]},
        ]});
        for routes in [r#""routes":["dup"]"#, r#""routes":["dup","dup"]"#, r#""routes":[]"#] {
            let object = vs(json!({ HASH: format!(r#"{{"namespace":"cindy",{routes}}}"#) }), spec.clone());
            let (out, warnings) = run(&object, &Settings::default());
            let mut want = vec!["okteto-divert-cindy-dup", "dup"];
            if routes.contains("[]") {
                want.extend(["okteto-divert-cindy-1", "-"]);
            } else {
                want.push("-");
            }
            want.extend(["okteto-divert-cindy-dup-2", "dup", "okteto-divert-cindy-dup-3", "dup"]);
            assert_eq!(names(&out), want, "{routes}");
            assert!(warnings.is_empty(), "{routes}: {warnings:?}");
            let (again, _) = run(&out, &Settings::default());
            assert_eq!(again, out, "{routes}");
        }
    }

    #[test]
    fn clone_names_follow_the_names_and_positions_of_the_originals() {
        let routes = [
            json!({"name": "a"}),
            json!({}),
            json!({"name": "a"}),
            json!({"name": ""}),
            json!({"name": "b"}),
            json!({"name": "a"}),
        ];
        assert_eq!(clone_suffixes(&routes.iter().collect::<Vec<_>>()), ["a", "1", "a-2", "3", "b", "a-5"]);
    }

    #[test]
    fn a_repeated_name_can_clash_with_a_route_named_like_its_clone() {
        // `dup` at position 1 would be cloned as okteto-divert-cindy-dup-1, the clone name of
        // the route named `dup-1`: the first in order gets it, the other is reported.
        let spec = json!({"hosts": ["h"], "http": [
            {"name": "dup", "route": [{"destination": {"host": "a"}}]},
            {"name": "dup", "route": [{"destination": {"host": "b"}}]},
            {"name": "dup-1", "route": [{"destination": {"host": "c"}}]},
        ]});
        let object = vs(json!({ HASH: r#"{"namespace":"cindy"}"# }), spec);
        let (out, warnings) = run(&object, &Settings::default());
        assert_eq!(names(&out), ["okteto-divert-cindy-dup", "dup", "okteto-divert-cindy-dup-1", "dup", "dup-1"]);
        assert_eq!(warnings, ["divert of cindy: route dup-1 would get a clone name already in use; rename it"]);
        let (again, warnings_again) = run(&out, &Settings::default());
        assert_eq!((again, warnings_again), (out, warnings));
    }

    #[test]
    fn an_entry_on_routes_that_only_delegate_is_warned_about() {
        let delegating = json!({"hosts": ["h"], "http": [
            {"name": "a", "match": [{"uri": {"prefix": "/a"}}], "delegate": {"name": "a", "namespace": "staging"}},
            {"name": "b", "delegate": {"name": "b"}},
        ]});
        let object = vs(json!({ HASH: r#"{"namespace":"cindy"}"# }), delegating);
        let (out, warnings) = run(&object, &Settings::default());
        assert_eq!(out, object);
        assert_eq!(
            warnings,
            ["divert of cindy: no http route here forwards (delegates are not diverted); nothing is diverted"]
        );
        let redirecting = json!({"hosts": ["h"], "http": [{"redirect": {"uri": "/x"}}]});
        let (_, warnings) = run(&vs(json!({ HASH: r#"{"namespace":"cindy"}"# }), redirecting), &Settings::default());
        assert_eq!(warnings, ["divert of cindy: no http route here forwards; nothing is diverted"]);
        // One route that forwards is enough: the others are skipped silently, as before.
        let mixed = json!({"hosts": ["h"], "http": [
            {"name": "a", "delegate": {"name": "a"}},
            {"name": "b", "route": [{"destination": {"host": "b"}}]},
        ]});
        let (out, warnings) = run(&vs(json!({ HASH: r#"{"namespace":"cindy"}"# }), mixed), &Settings::default());
        assert_eq!(names(&out), ["a", "okteto-divert-cindy-b", "b"]);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn clashing_clone_names_are_reported() {
        let spec = json!({"hosts": ["h"], "http": [
            {"name": "b-c", "route": [{"destination": {"host": "x"}}]},
            {"name": "c", "route": [{"destination": {"host": "y"}}]},
        ]});
        let object = vs(
            json!({
                "divert.okteto.com/a-1": r#"{"namespace":"a","routes":["b-c"]}"#,
                "divert.okteto.com/a-2": r#"{"namespace":"a-b","routes":["c"]}"#,
            }),
            spec,
        );
        let (out, warnings) = run(&object, &Settings::default());
        assert_eq!(names(&out), ["okteto-divert-a-b-c", "b-c", "c"]);
        assert_eq!(warnings, ["divert of a-b: route c would get a clone name already in use; rename it"]);
    }

    #[test]
    fn a_rewritten_destination_keeps_its_field_order_and_sums_that_overflow_are_not_merged() {
        let settings = Settings::default();
        let context = Context { namespace: "staging", settings: &settings, cluster: ClusterView::none() };
        let destinations = [
            json!({"weight": 9223372036854775807_i64, "destination": {"subset": "v1", "host": "r", "port": {"number": 80}}}),
            json!({"weight": 1, "destination": {"subset": "v2", "host": "r", "port": {"number": 80}}}),
        ];
        let got = rewrite_destinations(&destinations, "cindy", &Services::Every, &context).unwrap();
        assert_eq!(
            serde_json::to_string(&got).unwrap(),
            r#"[{"weight":9223372036854775807,"destination":{"host":"r.cindy.svc.cluster.local","port":{"number":80}}},{"weight":1,"destination":{"host":"r.cindy.svc.cluster.local","port":{"number":80}}}]"#
        );
    }

    #[test]
    fn weights_that_are_not_integers_are_not_merged() {
        let settings = Settings::default();
        let context = Context { namespace: "staging", settings: &settings, cluster: ClusterView::none() };
        let destinations = [
            json!({"destination": {"host": "r", "subset": "v1"}, "weight": 50}),
            json!({"destination": {"host": "r", "subset": "v2"}, "weight": "50"}),
            json!({"destination": {"host": "r", "subset": "v3"}}),
        ];
        let got = rewrite_destinations(&destinations, "cindy", &Services::Every, &context).unwrap();
        assert_eq!(
            serde_json::to_value(&got).unwrap(),
            json!([
                json!({"destination": {"host": "r.cindy.svc.cluster.local"}, "weight": 50}),
                json!({"destination": {"host": "r.cindy.svc.cluster.local"}, "weight": "50"}),
            ])
        );
    }
}
