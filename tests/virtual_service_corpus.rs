//! Every VirtualService of the shared corpus (virtualservices/ and the VirtualService documents
//! of multidoc/) through the real review path, with and without divert annotations:
//! - nothing of the input is lost: every field is still there and equal after the patch,
//!   except what SPEC §4/§5 change (inserted clones; the developer baggage header);
//! - clones copy everything of their original except name, match and destinations;
//! - the mutated `spec` is no "more invalid" than the input against the openAPIV3Schema of
//!   the VirtualService CRD version it uses (some corpus files are invalid already).

mod virtual_service_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use divert_webhook::settings::Settings;
use serde_json::{Map, Value, json};
use virtual_service_support::{entry_annotation, entry_value, mutate};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus");
const GENERATED: &str = "okteto-divert-";

/// (file, VirtualService) for every VirtualService document of the corpus, with
/// `metadata.namespace` filled in as the apiserver does (`default` when the file has none).
fn corpus() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for folder in ["virtualservices", "multidoc"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(CORPUS).join(folder))
            .unwrap_or_else(|e| panic!("corpus at {CORPUS}: {e}"))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{file:?}: {e}"));
            for (i, mut doc) in docs.into_iter().enumerate() {
                if doc["kind"] != "VirtualService" {
                    continue;
                }
                if doc.pointer("/metadata/namespace").is_none() {
                    doc["metadata"]["namespace"] = "default".into();
                }
                let name = file.file_name().unwrap().to_string_lossy();
                out.push((format!("{folder}/{name}#{i}"), doc));
            }
        }
    }
    assert!(out.len() > 200, "only {} VirtualServices found under {CORPUS}", out.len());
    out
}

// ---- the CRD schema ---------------------------------------------------------------------

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

/// The `spec` validators of the CRD, by version.
fn spec_validators() -> Vec<(String, jsonschema::Validator)> {
    let text = std::fs::read_to_string(format!("{CORPUS}/crds/virtualservice-crd.yaml")).unwrap();
    let crd: Value = serde_saphyr::from_str(&text).unwrap();
    let versions = crd["spec"]["versions"].as_array().unwrap();
    versions
        .iter()
        .map(|v| {
            let mut schema = v["schema"]["openAPIV3Schema"]["properties"]["spec"].clone();
            assert!(schema.is_object());
            to_json_schema(&mut schema);
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft4)
                .should_validate_formats(false)
                .build(&schema)
                .unwrap();
            (v["name"].as_str().unwrap().to_string(), validator)
        })
        .collect()
}

/// Schema errors of `spec`, as (instance path with http indices mapped through `http_origin`,
/// schema path).
fn schema_errors(
    validators: &[(String, jsonschema::Validator)],
    object: &Value,
    http_origin: &[usize],
) -> BTreeSet<(String, String)> {
    let version = object["apiVersion"].as_str().unwrap().rsplit('/').next().unwrap();
    let validator = &validators.iter().find(|(v, _)| v == version).unwrap_or_else(|| panic!("version {version}")).1;
    validator
        .iter_errors(&object["spec"])
        .map(|e| {
            let path = e.instance_path.to_string();
            let path = match path.strip_prefix("/http/").and_then(|rest| rest.split_once('/').or(Some((rest, "")))) {
                Some((index, rest)) if index.parse::<usize>().is_ok() => {
                    let origin = http_origin[index.parse::<usize>().unwrap()];
                    if rest.is_empty() { format!("/http/{origin}") } else { format!("/http/{origin}/{rest}") }
                }
                _ => path,
            };
            (path, e.schema_path.to_string())
        })
        .collect()
}

// ---- comparisons ------------------------------------------------------------------------

fn is_generated(route: &Value) -> bool {
    route.get("name").and_then(Value::as_str).is_some_and(|n| n.starts_with(GENERATED))
}

/// For every route of the mutated `http`, the index of the original route it is (or is a
/// clone of: a clone sits right before its original).
fn http_origin(object: &Value) -> Vec<usize> {
    let Some(http) = object.pointer("/spec/http").and_then(Value::as_array) else { return Vec::new() };
    let mut origin = vec![0; http.len()];
    let mut next = http.iter().filter(|r| !is_generated(r)).count();
    for (i, route) in http.iter().enumerate().rev() {
        if !is_generated(route) {
            next -= 1;
        }
        origin[i] = next;
    }
    origin
}

/// Every leaf of `before` is in `after` with the same value (`ignore` excepted: leaves under
/// those pointers are compared by the caller). Lists of the same length are compared element
/// by element, others whole.
fn missing_leaves(before: &Value, after: &Value, path: &str, ignore: &[&str], out: &mut Vec<String>) {
    if ignore.contains(&path) {
        return;
    }
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, v) in b {
                let p = format!("{path}/{k}");
                match a.get(k) {
                    Some(av) => missing_leaves(v, av, &p, ignore, out),
                    None if !ignore.contains(&p.as_str()) => out.push(format!("{p} is gone")),
                    None => {}
                }
            }
        }
        (Value::Array(b), Value::Array(a)) if a.len() == b.len() => {
            for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                missing_leaves(bv, av, &format!("{path}/{i}"), ignore, out);
            }
        }
        _ if before == after => {}
        _ => out.push(format!("{path} changed: {before} -> {after}")),
    }
}

fn with_annotations(object: &Value, extra: &Map<String, Value>) -> Value {
    let mut object = object.clone();
    let metadata = object["metadata"].as_object_mut().unwrap();
    let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
    annotations.as_object_mut().unwrap().extend(extra.clone());
    object
}

/// Divert entries that select each http route: cindy names every named route (or all when
/// none is named), zed takes every route.
fn divert_entries(object: &Value) -> Map<String, Value> {
    let names: Vec<&str> = object
        .pointer("/spec/http")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("name").and_then(Value::as_str))
        .collect();
    let mut m = Map::new();
    m.insert(entry_annotation(7), entry_value("cindy", &names).into());
    m.insert("divert.okteto.com/zed-movies".into(), json!({"namespace": "zed"}).to_string().into());
    m
}

/// VirtualServices in a protected namespace (istio-system, …) are never mutated (SPEC §2).
/// True, after checking exactly that, when `input` is one of them.
fn left_alone_in_protected_namespace(
    file: &str,
    input: &Value,
    settings: &Settings,
    failures: &mut Vec<String>,
) -> bool {
    let namespace = input.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    if !settings.is_protected(namespace) {
        return false;
    }
    let out = mutate(input, settings);
    if !out.patch.is_empty() || !out.warnings.is_empty() {
        failures.push(format!("{file}: mutated in protected namespace {namespace}: {:?}", out.patch));
    }
    true
}

fn forwards(route: &Value) -> bool {
    route.get("route").is_some() && ["redirect", "directResponse", "delegate"].iter().all(|k| route.get(*k).is_none())
}

// ---- the tests ------------------------------------------------------------------------------

#[test]
fn corpus_without_annotations_is_left_alone() {
    for (file, object) in corpus() {
        let out = mutate(&object, &Settings::default());
        assert!(out.patch.is_empty(), "{file}: {:?}", out.patch);
        assert!(out.warnings.is_empty(), "{file}: {:?}", out.warnings);
    }
}

#[test]
fn corpus_divert_loses_nothing_and_stays_schema_valid() {
    let validators = spec_validators();
    let mut failures = Vec::new();
    let mut clones = 0;
    let mut protected = 0;
    let mut valid_after_divert = 0;
    for legacy in [false, true] {
        let settings = Settings { legacy_header: legacy, ..Settings::default() };
        for (file, object) in corpus() {
            let input = with_annotations(&object, &divert_entries(&object));
            if left_alone_in_protected_namespace(&file, &input, &settings, &mut failures) {
                protected += 1;
                continue;
            }
            let out = mutate(&input, &settings);
            let after = &out.object;

            // Outside spec.http nothing changes; in it, the originals are all there, in order.
            let mut lost = Vec::new();
            missing_leaves(&input, after, "", &["/spec/http"], &mut lost);
            missing_leaves(after, &input, "", &["/spec/http"], &mut lost);
            let before_http = input.pointer("/spec/http");
            let kept: Option<Vec<&Value>> = after
                .pointer("/spec/http")
                .and_then(Value::as_array)
                .map(|h| h.iter().filter(|r| !is_generated(r)).collect());
            if before_http.and_then(Value::as_array).map(|h| h.iter().collect::<Vec<_>>()) != kept {
                lost.push("the original http routes are not all kept unchanged and in order".into());
            }

            // Each clone is its original but for name, match and destinations.
            let http = after.pointer("/spec/http").and_then(Value::as_array).cloned().unwrap_or_default();
            let origin = http_origin(after);
            let originals: Vec<&Value> = before_http.and_then(Value::as_array).into_iter().flatten().collect();
            for (i, route) in http.iter().enumerate().filter(|(_, r)| is_generated(r)) {
                clones += 1;
                let original = originals[origin[i]];
                let strip = |r: &Value| {
                    let mut r = r.as_object().unwrap().clone();
                    r.retain(|k, _| !matches!(k.as_str(), "name" | "match" | "route"));
                    r
                };
                if strip(route) != strip(original) {
                    lost.push(format!("clone {} differs from its original beyond name/match/route", route["name"]));
                }
                let conditions = route["match"].as_array().map_or(0, Vec::len);
                let original_conditions = original.get("match").and_then(Value::as_array).map_or(1, |m| m.len().max(1));
                let factor = if legacy { 2 } else { 1 };
                if conditions == 0 || conditions > original_conditions * factor {
                    lost.push(format!("clone {} has {conditions} match entries", route["name"]));
                }
            }
            // Every forwarding original that zed (who takes every route) did not get a clone
            // of is named in a warning (a delegate VirtualService, without hosts, gets one
            // warning for all).
            let delegate = out.warnings.iter().any(|w| w.contains("no hosts (a delegate)"));
            for (index, original) in originals.iter().enumerate().filter(|(_, r)| forwards(r) && !delegate) {
                let cloned = http.iter().enumerate().any(|(i, r)| {
                    is_generated(r)
                        && origin[i] == index
                        && r["name"].as_str().unwrap().starts_with("okteto-divert-zed-")
                });
                let label =
                    original.get("name").and_then(Value::as_str).map_or(format!("spec.http[{index}]"), str::to_string);
                let label: String = label.chars().take(23).collect();
                if !cloned && !out.warnings.iter().any(|w| w.contains(&label)) {
                    lost.push(format!("route {label} not diverted, without a warning: {:?}", out.warnings));
                }
            }

            let identity: Vec<usize> = (0..originals.len()).collect();
            let before_errors = schema_errors(&validators, &input, &identity);
            let after_errors = schema_errors(&validators, after, &origin);
            let new_errors: Vec<_> = after_errors.difference(&before_errors).collect();
            if !new_errors.is_empty() {
                lost.push(format!("new schema errors: {new_errors:?}"));
            }
            // A valid input gives a valid output, clones included (no mapping of errors).
            if before_errors.is_empty() {
                let errors = schema_errors(&validators, after, &(0..http.len()).collect::<Vec<_>>());
                if errors.is_empty() {
                    valid_after_divert += 1;
                } else {
                    lost.push(format!("schema-valid input, invalid output: {errors:?}"));
                }
            }

            // And back: without the annotations the input comes back exactly.
            let mut without = after.clone();
            without["metadata"] = object["metadata"].clone();
            if mutate(&without, &settings).object != object {
                lost.push("removing the annotations does not restore the input".into());
            }
            if !lost.is_empty() {
                failures.push(format!("{file} (legacy {legacy}): {}", lost.join("; ")));
            }
        }
    }
    failures.iter_mut().for_each(|f| *f = f.chars().take(600).collect());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures[..failures.len().min(20)].join("\n"));
    assert!(clones > 300, "only {clones} clones generated over the corpus");
    assert!(protected > 0, "no corpus VirtualService in a protected namespace was seen");
    // Most of the corpus is schema-valid; each of those stays valid after divert (both legacy modes).
    assert!(valid_after_divert > 300, "only {valid_after_divert} schema-valid VirtualServices were diverted");
}

#[test]
fn corpus_developer_header_loses_nothing_and_stays_schema_valid() {
    let validators = spec_validators();
    let mut failures = Vec::new();
    for legacy in [false, true] {
        let settings = Settings { legacy_header: legacy, ..Settings::default() };
        for (file, object) in corpus() {
            let header = Map::from_iter([("divert.okteto.com/header".to_string(), Value::from("cindy"))]);
            let input = with_annotations(&object, &header);
            if left_alone_in_protected_namespace(&file, &input, &settings, &mut failures) {
                continue;
            }
            let out = mutate(&input, &settings);
            let mut lost = Vec::new();
            let routes = input.pointer("/spec/http").and_then(Value::as_array).cloned().unwrap_or_default();
            for (i, route) in routes.iter().enumerate() {
                let add = format!("/spec/http/{i}/headers/request/add/baggage");
                let set = format!("/spec/http/{i}/headers/request/set/baggage.okteto-divert");
                missing_leaves(&input, &out.object, "", &[add.as_str(), set.as_str()], &mut lost);
                let sent = out.object.pointer(&add).and_then(Value::as_str);
                if forwards(route) {
                    let before = input.pointer(&add).and_then(Value::as_str).unwrap_or_default();
                    let members = |v: &str| -> Vec<String> {
                        v.split(',').map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect()
                    };
                    let mut want: Vec<String> =
                        members(before).into_iter().filter(|m| !m.starts_with("okteto-divert")).collect();
                    want.push("okteto-divert=cindy".into());
                    if sent.map(members) != Some(want.clone()) {
                        lost.push(format!("route {i}: baggage {sent:?}, want the members {want:?}"));
                    }
                    let legacy_sent = out.object.pointer(&set).and_then(Value::as_str);
                    if legacy_sent != legacy.then_some("cindy") {
                        lost.push(format!("route {i}: legacy header {legacy_sent:?}"));
                    }
                } else if input.pointer(&add) != out.object.pointer(&add) {
                    lost.push(format!("route {i} does not forward but got a header"));
                }
            }
            let identity: Vec<usize> = (0..routes.len()).collect();
            let new_errors: Vec<_> = schema_errors(&validators, &out.object, &identity)
                .difference(&schema_errors(&validators, &input, &identity))
                .cloned()
                .collect();
            if !new_errors.is_empty() {
                lost.push(format!("new schema errors: {new_errors:?}"));
            }
            let mut without = out.object.clone();
            without["metadata"] = object["metadata"].clone();
            if mutate(&without, &settings).object != object {
                lost.push("removing the annotation does not restore the input".into());
            }
            if !lost.is_empty() {
                failures.push(format!("{file} (legacy {legacy}): {}", lost.join("; ")));
            }
        }
    }
    failures.iter_mut().for_each(|f| *f = f.chars().take(600).collect());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures[..failures.len().min(20)].join("\n"));
}

#[test]
fn the_schema_check_sees_what_the_index_says_is_invalid() {
    // guards the converted schema itself: a file INDEX.md lists as a violation is one here, a
    // valid one is not, and a wrong type in a divert clone would be caught
    let validators = spec_validators();
    let all = corpus();
    let find = |name: &str| &all.iter().find(|(f, _)| f.contains(name)).unwrap().1;
    let bogus = find("destinationhosts--doc9-reviews-bogushost");
    assert!(!schema_errors(&validators, bogus, &[0]).is_empty());
    let good = find("virtual-service-reviews-90-10");
    assert!(schema_errors(&validators, good, &[0]).is_empty());
    let mut broken = good.clone();
    broken["spec"]["http"][0]["match"] = json!([{"headers": {"baggage": {"regex": 7}}}]);
    assert!(!schema_errors(&validators, &broken, &[0]).is_empty());
    broken["spec"]["http"][0]["match"] = json!([{"headers": {"baggage": {"exact": "a", "regex": "b"}}}]);
    assert!(!schema_errors(&validators, &broken, &[0]).is_empty());
}
