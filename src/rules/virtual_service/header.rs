//! SPEC §5: the divert header on a developer's VirtualService.
//!
//! With `divert.okteto.com/header: <key>`, every forwarding http route gets the member
//! `okteto-divert=<key>` in `headers.request.add.baggage`; the other members of a value already
//! there are kept, a stale `okteto-divert` member is replaced. With `--legacy-header` the route
//! also sets `headers.request.set["baggage.okteto-divert"]: <key>` (as the Ingress rule does,
//! §6): `set`, not `add`, so a stale value sent by the client is overwritten.
//!
//! Without the annotation, what the annotation added is removed. There is no record of what
//! was added, so "added" is recognised by its form: the `okteto-divert` member of
//! `headers.request.add.baggage` (the `baggage` entry goes when nothing else is left in it, and
//! so do the `add`, `request` and `headers` maps that end up empty) and the legacy header in
//! `headers.request.set`. A hand-written member of that form is removed too; the answer says so
//! in a warning. A key that is not a DNS-1123 label changes nothing: validation denies it.

use serde_json::{Map, Value};

use super::divert_routes::forwards;
use crate::rules::baggage::{is_divert_member, member_value, members, with_divert_member, without_divert_member};
use crate::rules::divert::{BAGGAGE_HEADER, LEGACY_HEADER, check_divert_key, header_annotation, implied_header_key};
use crate::rules::{Field, Findings, Subject};
use crate::settings::Settings;

pub fn mutate(subject: &Subject<'_>, object: &mut Value, settings: &Settings, findings: &mut Findings) {
    let key = header_annotation(subject.object).or_else(|| implied_header_key(subject, settings));
    if key.is_some_and(|k| check_divert_key(k).is_err()) {
        return;
    }
    let Some(http) = object.pointer_mut("/spec/http").and_then(Value::as_array_mut) else {
        if key.is_some() {
            findings
                .warn("divert.okteto.com/header is set but spec.http holds no list of http routes: no header added");
        }
        return;
    };
    let mut removed = 0;
    for (index, route) in http.iter_mut().enumerate() {
        let Some(route) = route.as_object_mut().filter(|r| forwards(r)) else { continue };
        match key {
            Some(key) => {
                if let Err(problem) = add_header(route, key, settings.legacy_header) {
                    findings.warn(format!("spec.http[{index}]: {problem}: divert header not added"));
                }
                if let Some(field) = competing_member(route, key) {
                    findings
                        .warn(format!("spec.http[{index}].{field}: sends a second okteto-divert member; remove it"));
                }
            }
            None => removed += usize::from(remove_header(route)),
        }
    }
    if removed > 0 {
        findings.warn(format!(
            "divert.okteto.com/header is not set: removed the okteto-divert baggage member from {removed} route(s)"
        ));
    }
}

/// Adds the divert member (and the legacy header). `Err` says which field is in the way.
fn add_header(route: &mut Map<String, Value>, key: &str, legacy: bool) -> Result<(), &'static str> {
    let request = child_map(route, "headers", "headers is not a map")?;
    let request = child_map(request, "request", "headers.request is not a map")?;
    // Checked before anything changes, so that a route is either fully done or left alone.
    if legacy && request.field("set").is_some_and(|set| !(set.is_null() || set.is_object())) {
        return Err("headers.request.set is not a map");
    }
    let add = child_map(request, "add", "headers.request.add is not a map")?;
    let name = header_key(add, BAGGAGE_HEADER).unwrap_or_else(|| BAGGAGE_HEADER.to_string());
    let current = match add.get(&name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err("headers.request.add.baggage is not a string"),
    };
    let value = with_divert_member(current, key);
    add.insert(name, Value::String(value));
    if legacy {
        let set = child_map(request, "set", "headers.request.set is not a map")?;
        let name = header_key(set, LEGACY_HEADER).unwrap_or_else(|| LEGACY_HEADER.to_string());
        set.insert(name, Value::String(key.to_string()));
    }
    Ok(())
}

/// A baggage header operation outside `headers.request.add` that sends an `okteto-divert`
/// member with another key than `key`: `headers.request.set.baggage` of the route, or a
/// destination's `headers.request.{set,add}.baggage`. Envoy would send both members, and the
/// request would match another developer's routes too. Left alone (it is the user's), named.
fn competing_member(route: &Map<String, Value>, key: &str) -> Option<String> {
    let competes = |operations: Option<&Value>, operation: &str| {
        let map = operations?.get(operation)?.as_object()?;
        let value = map.iter().find(|(name, _)| name.eq_ignore_ascii_case(BAGGAGE_HEADER))?.1.as_str()?;
        members(value).any(|m| is_divert_member(m) && member_value(m) != key).then_some(())
    };
    let route_request = route.field("headers").and_then(|h| h.field("request"));
    if competes(route_request, "set").is_some() {
        return Some("headers.request.set.baggage".to_string());
    }
    let destinations = route.field("route").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for (k, destination) in destinations.iter().enumerate() {
        let request = destination.field("headers").and_then(|h| h.field("request"));
        for operation in ["set", "add"] {
            if competes(request, operation).is_some() {
                return Some(format!("route[{k}].headers.request.{operation}.baggage"));
            }
        }
    }
    None
}

/// Removes what [`add_header`] adds. True if anything was removed.
/// Would [`mutate`] leave this object as it is? True when it has no `divert.okteto.com/header`
/// annotation (nor one implied by its namespace, SPEC §10.3) and no forwarding route carries what the rule removes then (the divert baggage
/// member in `headers.request.add`, the legacy header in `headers.request.set`). Read-only: the
/// server's fast path for shared VirtualServices relies on it.
pub fn is_idle(subject: &Subject<'_>, settings: &Settings) -> bool {
    if header_annotation(subject.object).or_else(|| implied_header_key(subject, settings)).is_some() {
        return false;
    }
    let Some(http) = subject.object.pointer("/spec/http").and_then(Value::as_array) else { return true };
    http.iter().filter_map(Value::as_object).filter(|route| forwards(route)).all(|route| {
        let Some(request) = route.field("headers").and_then(|h| h.field("request")) else { return true };
        let divert_member = request.field("add").and_then(Value::as_object).is_some_and(|add| {
            header_key(add, BAGGAGE_HEADER)
                .and_then(|name| {
                    add.get(&name).and_then(Value::as_str).map(|value| members(value).any(is_divert_member))
                })
                .unwrap_or(false)
        });
        let legacy =
            request.field("set").and_then(Value::as_object).is_some_and(|set| header_key(set, LEGACY_HEADER).is_some());
        !divert_member && !legacy
    })
}

fn remove_header(route: &mut Map<String, Value>) -> bool {
    let mut removed = false;
    let Some(headers) = route.get_mut("headers").and_then(Value::as_object_mut) else { return false };
    if let Some(request) = headers.get_mut("request").and_then(Value::as_object_mut) {
        if let Some(add) = request.get_mut("add").and_then(Value::as_object_mut)
            && let Some(name) = header_key(add, BAGGAGE_HEADER)
            && let Some(value) = add.get(&name).and_then(Value::as_str)
            && members(value).any(is_divert_member)
        {
            removed = true;
            match without_divert_member(value) {
                Some(rest) => add.insert(name, Value::String(rest)),
                None => add.remove(&name),
            };
        }
        if let Some(set) = request.get_mut("set").and_then(Value::as_object_mut)
            && let Some(name) = header_key(set, LEGACY_HEADER)
        {
            set.remove(&name);
            removed = true;
        }
        if removed {
            remove_if_empty(request, "add");
            remove_if_empty(request, "set");
        }
    }
    if removed {
        remove_if_empty(headers, "request");
        remove_if_empty(route, "headers");
    }
    removed
}

/// `map[field]` as a map, created if absent or null; `Err(problem)` if it is something else.
fn child_map<'a>(
    map: &'a mut Map<String, Value>,
    field: &str,
    problem: &'static str,
) -> Result<&'a mut Map<String, Value>, &'static str> {
    let child = map.entry(field).or_insert_with(|| Value::Object(Map::new()));
    if child.is_null() {
        *child = Value::Object(Map::new());
    }
    child.as_object_mut().ok_or(problem)
}

fn remove_if_empty(map: &mut Map<String, Value>, field: &str) {
    if map.get(field).and_then(Value::as_object).is_some_and(Map::is_empty) {
        map.remove(field);
    }
}

/// The key under which header `name` is written (header names are case-insensitive).
fn header_key(map: &Map<String, Value>, name: &str) -> Option<String> {
    map.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterView;
    use crate::rules::Kind;
    use serde_json::json;

    fn run(object: &Value, legacy: bool) -> (Value, Vec<String>) {
        let subject = Subject {
            kind: Kind::VirtualService,
            namespace: "cindy",
            name: "vs",
            object,
            cluster: ClusterView::none(),
        };
        let settings = Settings { legacy_header: legacy, ..Settings::default() };
        let mut out = object.clone();
        let mut findings = Findings::default();
        mutate(&subject, &mut out, &settings, &mut findings);
        (out, findings.warnings)
    }

    fn vs(annotations: Value, http: Value) -> Value {
        json!({"metadata": {"name": "vs", "namespace": "cindy", "annotations": annotations}, "spec": {"hosts": ["h"], "http": http}})
    }

    #[test]
    fn odd_routes_are_skipped() {
        let http = json!([
            1,
            {"redirect": {"uri": "/x"}},
            {"route": [], "headers": 3},
            {"route": [], "headers": {"request": {"add": {"baggage": 5}}}},
            {"route": [], "headers": {"request": {"add": null}}},
        ]);
        let object = vs(json!({"divert.okteto.com/header": "cindy"}), http.clone());
        let (out, warnings) = run(&object, false);
        assert_eq!(out["spec"]["http"].as_array().unwrap()[..4], http.as_array().unwrap()[..4]);
        assert_eq!(out["spec"]["http"][4]["headers"], json!({"request": {"add": {"baggage": "okteto-divert=cindy"}}}));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings.iter().all(|w| w.chars().count() < 120));
    }

    #[test]
    fn without_the_annotation_only_the_divert_member_goes() {
        let http = json!([
            {"route": [], "headers": {"request": {"add": {"baggage": ""}}}},
            {"route": [], "headers": {"request": {"add": {"baggage": " , "}, "set": {"x": "1"}}}},
            {"route": [], "headers": {"request": {"add": {"baggage": "a=1,okteto-divert=zed", "x": "1"}}}},
        ]);
        let (out, warnings) = run(&vs(json!({}), http.clone()), false);
        assert_eq!(out["spec"]["http"].as_array().unwrap()[..2], http.as_array().unwrap()[..2]);
        assert_eq!(out["spec"]["http"][2]["headers"]["request"]["add"], json!({"baggage": "a=1", "x": "1"}));
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn invalid_key_changes_nothing() {
        let object = vs(json!({"divert.okteto.com/header": "Not A Label"}), json!([{"route": []}]));
        assert_eq!(run(&object, false), (object, vec![]));
    }

    #[test]
    fn legacy_header_is_set_and_removed() {
        let object = vs(json!({"divert.okteto.com/header": "cindy"}), json!([{"route": []}]));
        let (out, _) = run(&object, true);
        assert_eq!(
            out["spec"]["http"][0]["headers"],
            json!({"request": {"add": {"baggage": "okteto-divert=cindy"}, "set": {"baggage.okteto-divert": "cindy"}}})
        );
        assert_eq!(run(&out, true).0, out);
        let mut without = out.clone();
        without["metadata"]["annotations"] = json!({});
        let (back, warnings) = run(&without, true);
        assert_eq!(back["spec"], object["spec"]);
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn a_route_is_done_fully_or_not_at_all() {
        let http = json!([{"route": [], "headers": {"request": {"set": "x"}}}]);
        let object = vs(json!({"divert.okteto.com/header": "cindy"}), http.clone());
        let (out, warnings) = run(&object, true);
        assert_eq!(out["spec"]["http"], http);
        assert_eq!(warnings, ["spec.http[0]: headers.request.set is not a map: divert header not added"]);
    }

    #[test]
    fn other_divert_members_sent_elsewhere_are_named_in_a_warning() {
        let http = json!([
            {"name": "a", "route": [], "headers": {"request": {"set": {"baggage": "okteto-divert=bob,t=1"}}}},
            {"name": "b", "route": [{"destination": {"host": "b"}, "headers": {"request": {"add": {"Baggage": "okteto-divert = bob"}}}}]},
            {"name": "c", "route": [{"destination": {"host": "c"}, "headers": {"request": {"set": {"baggage": "okteto-divert=cindy;p"}}}}]},
            {"name": "d", "route": [], "headers": {"request": {"set": {"baggage": "t=1"}}}},
        ]);
        let object = vs(json!({"divert.okteto.com/header": "cindy"}), http.clone());
        let (out, warnings) = run(&object, false);
        assert_eq!(
            warnings,
            [
                "spec.http[0].headers.request.set.baggage: sends a second okteto-divert member; remove it",
                "spec.http[1].route[0].headers.request.add.baggage: sends a second okteto-divert member; remove it",
            ]
        );
        // left as the user wrote them
        assert_eq!(out["spec"]["http"][0]["headers"]["request"]["set"], http[0]["headers"]["request"]["set"]);
        assert_eq!(out["spec"]["http"][1]["route"], http[1]["route"]);
        assert!(warnings.iter().all(|w| w.chars().count() < 120));
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let object = vs(
            json!({"divert.okteto.com/header": "cindy"}),
            json!([{"route": [], "headers": {"request": {"add": {"Baggage": "a=1"}}}}]),
        );
        let (out, _) = run(&object, false);
        assert_eq!(out["spec"]["http"][0]["headers"]["request"]["add"], json!({"Baggage": "a=1,okteto-divert=cindy"}));
    }
}
