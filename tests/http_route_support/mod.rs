//! Shared by the `http_route_*` tests: the HTTPRoutes of the shared corpus, the real CRD schemas
//! they are checked against, clusters built around them, and a route evaluator that implements
//! Gateway API precedence across the routes attached to one parent.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use divert_webhook::cluster::http_routes::service_of;
use divert_webhook::cluster::state::ClusterState;
use divert_webhook::re2::{Anchoring, is_match};
use serde_json::{Value, json};

pub const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus");

/// (file, HTTPRoute) for every HTTPRoute document of corpus/httproutes/.
pub fn corpus() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(CORPUS).join("httproutes"))
        .unwrap_or_else(|e| panic!("corpus at {CORPUS}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // A file the apiserver would refuse to read (a duplicate key) is left out, and counted.
        let Ok(docs) = serde_saphyr::from_multiple::<Value>(&text) else {
            unreadable.push(file.file_name().unwrap().to_string_lossy().to_string());
            continue;
        };
        for (i, doc) in docs.into_iter().enumerate() {
            if doc["kind"] == "HTTPRoute" {
                out.push((format!("{}#{i}", file.file_name().unwrap().to_string_lossy()), doc));
            }
        }
    }
    assert!(out.len() > 250, "only {} HTTPRoutes found under {CORPUS}", out.len());
    assert!(unreadable.len() <= 2, "unreadable corpus files: {unreadable:?}");
    out
}

// ---- the CRD schemas --------------------------------------------------------------------

/// OpenAPI v3 → JSON Schema: `nullable` becomes a `null` type, `x-kubernetes-*` keys go.
fn to_json_schema(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.retain(|k, _| !k.starts_with("x-kubernetes-"));
            if map.remove("nullable") == Some(Value::Bool(true))
                && let Some(Value::String(t)) = map.get("type").cloned()
            {
                map.insert("type".into(), json!([t, "null"]));
            }
            map.values_mut().for_each(to_json_schema);
        }
        Value::Array(items) => items.iter_mut().for_each(to_json_schema),
        _ => {}
    }
}

/// The `spec` validators of every CRD version, by `apiVersion` (`group/version`) and kind.
pub struct Schemas(BTreeMap<(String, String), jsonschema::Validator>);

impl Schemas {
    pub fn load() -> Schemas {
        let mut out = BTreeMap::new();
        for file in [
            "gateway-api-v1.6.1-httproutes-standard.yaml",
            "gateway-api-v1.6.1-referencegrants-standard.yaml",
            "linkerd-edge-26.8.3-httproutes.yaml",
        ] {
            let text = std::fs::read_to_string(format!("{CORPUS}/crds/{file}")).unwrap();
            let crd: Value = serde_saphyr::from_str(&text).unwrap();
            let group = crd["spec"]["group"].as_str().unwrap();
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
            for version in crd["spec"]["versions"].as_array().unwrap() {
                let mut schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"].clone();
                assert!(schema.is_object(), "{file}");
                to_json_schema(&mut schema);
                let validator = jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft4)
                    .should_validate_formats(false)
                    .build(&schema)
                    .unwrap();
                let api_version = format!("{group}/{}", version["name"].as_str().unwrap());
                out.insert((api_version, kind.to_string()), validator);
            }
        }
        Schemas(out)
    }

    /// The schema errors of `object`'s spec against the CRD version it names.
    pub fn errors(&self, object: &Value) -> Vec<String> {
        let key = (object["apiVersion"].as_str().unwrap().to_string(), object["kind"].as_str().unwrap().to_string());
        let validator = self.0.get(&key).unwrap_or_else(|| panic!("no CRD schema for {key:?}"));
        validator.iter_errors(&object["spec"]).map(|e| format!("{}: {e}", e.instance_path)).collect()
    }
}

// ---- clusters ---------------------------------------------------------------------------

/// The Services of `namespace` a route's rules send to.
pub fn routed_services(route: &Value, namespace: &str) -> Vec<String> {
    let mut out: Vec<String> = route["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["backendRefs"].as_array().into_iter().flatten())
        .filter_map(|r| service_of(r, namespace).map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `route` as stored in shared namespace `staging`, with a uid and a creation time.
pub fn stored_in_staging(route: &Value, index: usize) -> Value {
    let mut route = route.clone();
    route["metadata"]["namespace"] = "staging".into();
    route["metadata"]["uid"] = format!("00000000-0000-0000-0000-{index:012}").into();
    route["metadata"]["creationTimestamp"] = format!("2026-01-01T00:{:02}:{:02}Z", index / 60 % 60, index % 60).into();
    route
}

/// The plan's problems but those of SPEC §11.2: the states these tests build know no Service's
/// ports, so every Service without a route attached gets a line saying it gets no route of its
/// own (§11.2 has tests of its own).
pub fn section_11_1(problems: &[String]) -> Vec<&String> {
    problems.iter().filter(|p| !p.contains("no HTTPRoute is attached to it and its ports are unknown")).collect()
}

/// A cluster: namespace `staging` with `services`, and developer namespaces (labelled from
/// `staging`) each running the Services given; `routes` stored as they are.
pub fn cluster(services: &[String], developers: &[(&str, Vec<String>)], routes: Vec<Value>) -> ClusterState {
    let mut state = ClusterState::empty();
    state.view.add_namespace("staging", BTreeMap::new());
    for service in services {
        state.view.add_service("staging", service);
    }
    for (developer, runs) in developers {
        state
            .view
            .add_namespace(developer, BTreeMap::from([("divert.okteto.com/from".to_string(), "staging".to_string())]));
        for service in runs {
            state.view.add_service(developer, service);
        }
    }
    state.http_routes = routes;
    state
}

// ---- the route evaluator ----------------------------------------------------------------

/// A request as the mesh sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// The Host (authority); every host when empty (the route's hostnames are then not read).
    pub host: String,
    pub path: String,
    pub method: String,
    /// Lowercase names.
    pub headers: BTreeMap<String, String>,
    pub query: BTreeMap<String, String>,
}

/// Where a request went: the route (namespace/name), the rule index, and the rule's backends
/// with their namespace resolved (`namespace/name:port weight`), sorted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub route: String,
    pub rule: usize,
    pub backends: Vec<String>,
}

/// A match's specificity, compared field by field (greater wins), Gateway API's order:
/// an Exact path over a prefix (longer prefixes first; a regex path ranks between them, as
/// most implementations do), then a method match, then the number of header matches, then
/// the number of query matches.
type Specificity = (u8, usize, bool, usize, usize);

/// Among equally specific matches (greater wins): the oldest route, then the first by
/// namespace/name, then the first rule.
type TieBreak = std::cmp::Reverse<(String, String, usize)>;

fn string_matches(kind: &str, wanted: &str, value: &str, anchoring: Anchoring) -> bool {
    match kind {
        "RegularExpression" => is_match(wanted, value, anchoring).expect("RE2 compiles every regex of the table"),
        _ => wanted == value,
    }
}

/// Does `entry` (one of a rule's matches) match `request`? Regexes run through RE2 with
/// `anchoring` (Envoy anchors to the whole value; Linkerd searches).
pub fn match_applies(entry: &Value, request: &Request, anchoring: Anchoring) -> Option<Specificity> {
    let default_path = json!({"type": "PathPrefix", "value": "/"});
    let path = entry.get("path").unwrap_or(&default_path);
    let kind = path["type"].as_str().unwrap_or("PathPrefix");
    let value = path["value"].as_str().unwrap_or("/");
    let (rank, length) = match kind {
        "Exact" if request.path == value => (3, value.len()),
        "PathPrefix" if prefix_matches(value, &request.path) => (1, value.len()),
        "RegularExpression" if is_match(value, &request.path, Anchoring::Whole).expect("path regex") => (2, 0),
        _ => return None,
    };
    let method = entry.get("method").and_then(Value::as_str);
    if method.is_some_and(|m| m != request.method) {
        return None;
    }
    let headers = entry.get("headers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for header in headers {
        let name = header["name"].as_str().unwrap().to_ascii_lowercase();
        let kind = header["type"].as_str().unwrap_or("Exact");
        let got = request.headers.get(&name)?;
        if !string_matches(kind, header["value"].as_str().unwrap(), got, anchoring) {
            return None;
        }
    }
    let queries = entry.get("queryParams").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for query in queries {
        let kind = query["type"].as_str().unwrap_or("Exact");
        let got = request.query.get(query["name"].as_str().unwrap())?;
        if !string_matches(kind, query["value"].as_str().unwrap(), got, anchoring) {
            return None;
        }
    }
    Some((rank, length, method.is_some(), headers.len(), queries.len()))
}

/// Gateway API path prefixes match whole segments: `/api` matches `/api` and `/api/x`, not `/apix`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The rule every route attached to one parent gives `request` (all of `routes` are taken to
/// be attached to it): the most specific match; ties go to the oldest route (creationTimestamp),
/// then to the first in namespace/name order, then to the first rule.
pub fn evaluate(routes: &[Value], request: &Request, anchoring: Anchoring) -> Option<Verdict> {
    let mut best: Option<(Specificity, TieBreak, Verdict)> = None;
    for route in routes {
        let namespace = route["metadata"]["namespace"].as_str().unwrap();
        let name = route["metadata"]["name"].as_str().unwrap();
        let created = route["metadata"]["creationTimestamp"].as_str().unwrap().to_string();
        if !host_matches(route, &request.host) {
            continue;
        }
        for (index, rule) in route["spec"]["rules"].as_array().into_iter().flatten().enumerate() {
            let default = vec![json!({})];
            let matches = rule.get("matches").and_then(Value::as_array).filter(|m| !m.is_empty()).unwrap_or(&default);
            let Some(specificity) = matches.iter().filter_map(|m| match_applies(m, request, anchoring)).max() else {
                continue;
            };
            let order = std::cmp::Reverse((created.clone(), format!("{namespace}/{name}"), index));
            let better = best.as_ref().is_none_or(|(s, o, _)| (specificity, order.clone()) > (*s, o.clone()));
            if better {
                let verdict =
                    Verdict { route: format!("{namespace}/{name}"), rule: index, backends: backends(rule, namespace) };
                best = Some((specificity, order, verdict));
            }
        }
    }
    best.map(|(_, _, verdict)| verdict)
}

/// Does the route take requests for `host`? A route without hostnames takes every host; `*.x`
/// takes the hosts under `x` (not `x` itself). (Gateway API also ranks routes by the hostname
/// they matched; the routes compared here share their hostnames or have none.)
pub fn host_matches(route: &Value, host: &str) -> bool {
    let hostnames = route.pointer("/spec/hostnames").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    host.is_empty()
        || hostnames.is_empty()
        || hostnames.iter().filter_map(Value::as_str).any(|h| {
            h.eq_ignore_ascii_case(host)
                || h.strip_prefix('*').is_some_and(|suffix| host.ends_with(suffix) && host.len() > suffix.len())
        })
}

/// A rule's backends as `namespace/name:port weight`, sorted; identical ones merged.
pub fn backends(rule: &Value, namespace: &str) -> Vec<String> {
    let mut weights: BTreeMap<String, u64> = BTreeMap::new();
    for reference in rule["backendRefs"].as_array().into_iter().flatten() {
        let ns = reference["namespace"].as_str().unwrap_or(namespace);
        let kind = reference["kind"].as_str().unwrap_or("Service");
        let key = format!("{kind} {ns}/{}:{}", reference["name"].as_str().unwrap_or(""), reference["port"]);
        *weights.entry(key).or_default() += reference["weight"].as_u64().unwrap_or(1);
    }
    weights.into_iter().map(|(k, w)| format!("{k} {w}")).collect()
}
