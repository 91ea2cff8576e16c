//! SPEC §11.4: the divert header on a developer's HTTPRoute.
//!
//! With `divert.okteto.com/header: <key>` (or §10.3), every forwarding rule gets, in its
//! `RequestHeaderModifier` filter, an `add` of `baggage` holding the member
//! `okteto-divert=<key>`: an existing `add` of `baggage` is kept member by member (a stale
//! `okteto-divert` member replaced, [`with_divert_member`]), an existing filter is merged into
//! (the Gateway API allows one filter of each type per rule), and a rule without one gets a new
//! filter at the end of its `filters`.
//!
//! Without the annotation, what it added is removed, recognised by its form as in §5: the
//! `okteto-divert` member of an `add` of `baggage`; the entry goes when nothing else is left in
//! it, and so do an `add` list, a filter and a `filters` list that end up empty.

use serde_json::{Map, Value, json};

use super::forwards;
use crate::rules::baggage::{is_divert_member, member_value, members, with_divert_member, without_divert_member};
use crate::rules::divert::{BAGGAGE_HEADER, check_divert_key, header_annotation, implied_header_key};
use crate::rules::{Findings, Subject};
use crate::settings::Settings;

const MODIFIER_TYPE: &str = "RequestHeaderModifier";
const MODIFIER_FIELD: &str = "requestHeaderModifier";

pub fn mutate(subject: &Subject<'_>, object: &mut Value, settings: &Settings, findings: &mut Findings) {
    let key = header_annotation(subject.object).or_else(|| implied_header_key(subject, settings));
    if key.is_some_and(|k| check_divert_key(k).is_err()) {
        return; // validation denies it
    }
    let Some(rules) = object.pointer_mut("/spec/rules").and_then(Value::as_array_mut) else {
        if key.is_some() {
            findings.warn("divert.okteto.com/header is set but spec.rules holds no list of rules: no header added");
        }
        return;
    };
    let mut removed = 0;
    for (index, rule) in rules.iter_mut().enumerate() {
        let Some(rule) = rule.as_object_mut().filter(|r| forwards(r)) else { continue };
        match key {
            Some(key) => {
                if let Err(problem) = add_header(rule, key) {
                    findings.warn(format!("spec.rules[{index}]: {problem}: divert header not added"));
                } else if competing_member(rule, key) {
                    findings.warn(format!(
                        "spec.rules[{index}]: a set of baggage sends a second okteto-divert member; remove it"
                    ));
                }
            }
            None => removed += usize::from(remove_header(rule)),
        }
    }
    if removed > 0 {
        findings.warn(format!(
            "divert.okteto.com/header is not set: removed the okteto-divert baggage member from {removed} rule(s)"
        ));
    }
}

/// The rule's `RequestHeaderModifier` filter (its `requestHeaderModifier` map), made if there is
/// none. `Err` says which field is in the way; nothing is changed then.
fn modifier(rule: &mut Map<String, Value>) -> Result<&mut Map<String, Value>, &'static str> {
    let filters = rule.entry("filters").or_insert_with(|| Value::Array(Vec::new()));
    if filters.is_null() {
        *filters = Value::Array(Vec::new());
    }
    let filters = filters.as_array_mut().ok_or("filters is not a list")?;
    let position = filters.iter().position(|f| f.get("type").and_then(Value::as_str) == Some(MODIFIER_TYPE));
    let filter = match position {
        Some(i) => &mut filters[i],
        None => {
            filters.push(json!({"type": MODIFIER_TYPE, MODIFIER_FIELD: {}}));
            filters.last_mut().expect("just pushed")
        }
    };
    let filter = filter.as_object_mut().ok_or("a RequestHeaderModifier filter is not a map")?;
    let modifier = filter.entry(MODIFIER_FIELD).or_insert_with(|| Value::Object(Map::new()));
    if modifier.is_null() {
        *modifier = Value::Object(Map::new());
    }
    modifier.as_object_mut().ok_or("requestHeaderModifier is not a map")
}

/// Checked before anything changes, so that a rule is either fully done or left alone.
fn blocked(rule: &Map<String, Value>) -> Option<&'static str> {
    let filters = match rule.get("filters") {
        None | Some(Value::Null) => return None,
        Some(Value::Array(filters)) => filters,
        Some(_) => return Some("filters is not a list"),
    };
    let filter = filters.iter().find(|f| f.get("type").and_then(Value::as_str) == Some(MODIFIER_TYPE))?;
    let Some(filter) = filter.as_object() else { return Some("a RequestHeaderModifier filter is not a map") };
    let modifier = match filter.get(MODIFIER_FIELD) {
        None | Some(Value::Null) => return None,
        Some(Value::Object(modifier)) => modifier,
        Some(_) => return Some("requestHeaderModifier is not a map"),
    };
    let add = match modifier.get("add") {
        None | Some(Value::Null) => return None,
        Some(Value::Array(add)) => add,
        Some(_) => return Some("requestHeaderModifier.add is not a list"),
    };
    add.iter()
        .any(|h| !h.is_object() || (is_baggage(h) && !h.get("value").is_none_or(|v| v.is_string() || v.is_null())))
        .then_some("requestHeaderModifier.add holds an entry that is not a header name and string value")
}

fn is_baggage(header: &Value) -> bool {
    header.get("name").and_then(Value::as_str).is_some_and(|n| n.eq_ignore_ascii_case(BAGGAGE_HEADER))
}

fn add_header(rule: &mut Map<String, Value>, key: &str) -> Result<(), &'static str> {
    if let Some(problem) = blocked(rule) {
        return Err(problem);
    }
    let modifier = modifier(rule)?;
    let add = modifier.entry("add").or_insert_with(|| Value::Array(Vec::new()));
    if add.is_null() {
        *add = Value::Array(Vec::new());
    }
    let add = add.as_array_mut().expect("checked by blocked");
    match add.iter_mut().find(|h| is_baggage(h)) {
        Some(header) => {
            let value = with_divert_member(header.get("value").and_then(Value::as_str), key);
            header["value"] = Value::String(value);
        }
        None => add.push(json!({"name": BAGGAGE_HEADER, "value": with_divert_member(None, key)})),
    }
    Ok(())
}

/// Does the rule's `RequestHeaderModifier` also `set` a baggage value with another
/// `okteto-divert` member? `set` wins over `add`, so the key added would not be sent. Left as
/// the user wrote it, named in a warning.
fn competing_member(rule: &Map<String, Value>, key: &str) -> bool {
    let filters = rule.get("filters").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    filters
        .iter()
        .filter(|f| f.get("type").and_then(Value::as_str) == Some(MODIFIER_TYPE))
        .filter_map(|f| f.pointer("/requestHeaderModifier/set").and_then(Value::as_array))
        .flatten()
        .filter(|h| is_baggage(h))
        .filter_map(|h| h.get("value").and_then(Value::as_str))
        .any(|value| members(value).any(|m| is_divert_member(m) && member_value(m) != key))
}

/// Removes what [`add_header`] adds. True if anything was removed. Only a filter (and a
/// `filters` list) emptied here goes; an empty one the user wrote stays.
fn remove_header(rule: &mut Map<String, Value>) -> bool {
    let Some(filters) = rule.get_mut("filters").and_then(Value::as_array_mut) else { return false };
    let mut emptied = Vec::new();
    for (index, filter) in filters.iter_mut().enumerate() {
        if filter.get("type").and_then(Value::as_str) != Some(MODIFIER_TYPE) {
            continue;
        }
        let Some(modifier) = filter.get_mut(MODIFIER_FIELD).and_then(Value::as_object_mut) else { continue };
        let Some(add) = modifier.get_mut("add").and_then(Value::as_array_mut) else { continue };
        let mut removed = false;
        add.retain_mut(|header| {
            let Some(value) = header.get("value").and_then(Value::as_str).filter(|_| is_baggage(header)) else {
                return true;
            };
            if !members(value).any(is_divert_member) {
                return true;
            }
            removed = true;
            match without_divert_member(value) {
                Some(rest) => {
                    header["value"] = Value::String(rest);
                    true
                }
                None => false,
            }
        });
        if !removed {
            continue;
        }
        if add.is_empty() {
            modifier.remove("add");
        }
        emptied.push((index, modifier.is_empty()));
    }
    for (index, empty) in emptied.iter().rev() {
        if *empty {
            filters.remove(*index);
        }
    }
    if !emptied.is_empty() && filters.is_empty() {
        rule.remove("filters");
    }
    !emptied.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterView;
    use crate::rules::Kind;

    fn run(object: &Value) -> (Value, Vec<String>) {
        let subject =
            Subject { kind: Kind::HttpRoute, namespace: "cindy", name: "r", object, cluster: ClusterView::none() };
        let mut out = object.clone();
        let mut findings = Findings::default();
        mutate(&subject, &mut out, &Settings::default(), &mut findings);
        (out, findings.warnings)
    }

    fn route(annotations: Value, rules: Value) -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
               "metadata": {"name": "r", "namespace": "cindy", "annotations": annotations}, "spec": {"rules": rules}})
    }

    #[test]
    fn every_forwarding_rule_gets_one_merged_filter() {
        let rules = json!([
            {"backendRefs": [{"name": "api", "port": 80}]},
            {"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
                "set": [{"name": "x", "value": "1"}], "add": [{"name": "Baggage", "value": "a=1,okteto-divert=zed"}]}}]},
            {"filters": [{"type": "RequestRedirect", "requestRedirect": {"statusCode": 301}}]},
        ]);
        let object = route(json!({"divert.okteto.com/header": "cindy"}), rules.clone());
        let (out, warnings) = run(&object);
        assert_eq!(warnings, Vec::<String>::new());
        assert_eq!(
            out["spec"]["rules"][0]["filters"],
            json!([{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "baggage", "value": "okteto-divert=cindy"}]}}])
        );
        assert_eq!(
            out["spec"]["rules"][1]["filters"][0]["requestHeaderModifier"],
            json!({"set": [{"name": "x", "value": "1"}], "add": [{"name": "Baggage", "value": "a=1,okteto-divert=cindy"}]})
        );
        assert_eq!(out["spec"]["rules"][2], rules[2], "a redirect does not forward");
        assert_eq!(run(&out).0, out, "idempotent");
        // Without the annotation: what was added goes, the user's member stays.
        let mut without = out.clone();
        without["metadata"]["annotations"] = json!({});
        let (back, warnings) = run(&without);
        assert_eq!(back["spec"]["rules"][0], rules[0]);
        assert_eq!(
            back["spec"]["rules"][1]["filters"][0]["requestHeaderModifier"]["add"],
            json!([{"name": "Baggage", "value": "a=1"}])
        );
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn a_rule_in_the_way_is_left_alone_and_named() {
        let rules = json!([{"filters": 3}, {"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": "x"}}]}]);
        let object = route(json!({"divert.okteto.com/header": "cindy"}), rules.clone());
        let (out, warnings) = run(&object);
        assert_eq!(out["spec"]["rules"], rules);
        assert_eq!(
            warnings,
            [
                "spec.rules[0]: filters is not a list: divert header not added",
                "spec.rules[1]: requestHeaderModifier.add is not a list: divert header not added"
            ]
        );
    }

    #[test]
    fn a_competing_set_is_named() {
        let rules = json!([{"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "set": [{"name": "baggage", "value": "okteto-divert=bob"}]}}]}]);
        let (_, warnings) = run(&route(json!({"divert.okteto.com/header": "cindy"}), rules));
        assert_eq!(warnings, ["spec.rules[0]: a set of baggage sends a second okteto-divert member; remove it"]);
    }

    #[test]
    fn an_invalid_key_or_the_reconcilers_route_changes_nothing() {
        let object = route(json!({"divert.okteto.com/header": "Not A Label"}), json!([{}]));
        assert_eq!(run(&object), (object, vec![]));
        let mut owned = route(json!({"divert.okteto.com/header": "cindy"}), json!([{}]));
        owned["metadata"]["labels"] = json!({"app.kubernetes.io/managed-by": "divert-webhook"});
        let subject = Subject {
            kind: Kind::HttpRoute,
            namespace: "cindy",
            name: "r",
            object: &owned,
            cluster: ClusterView::none(),
        };
        let mut out = owned.clone();
        crate::rules::http_route::mutate(&subject, &mut out, &Settings::default(), &mut Findings::default());
        assert_eq!(out, owned, "the reconciler's routes are skipped");
        // Without that label the same route is changed: the skip is the label's doing.
        let mut unlabelled = owned.clone();
        unlabelled["metadata"]["labels"] = json!({});
        let subject = Subject { object: &unlabelled, ..subject };
        crate::rules::http_route::mutate(&subject, &mut out, &Settings::default(), &mut Findings::default());
        assert_ne!(out["spec"], owned["spec"]);
    }
}
