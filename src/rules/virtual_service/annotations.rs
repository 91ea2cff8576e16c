//! Divert entries of a shared VirtualService (SPEC §4):
//! `divert.okteto.com/<40 lowercase hex>` (or the legacy `divert.okteto.com/<devNamespace>-<manifest>`)
//! with a JSON value `{"namespace": <key>, "routes": [<http route name>, ...]}` and, written by
//! the reconciler (SPEC §10.2), `"services": [<Service name>, ...]`. Unknown fields are ignored.

use serde_json::Value;

use crate::rules::divert::{ANNOTATION_PREFIX, HEADER_ANNOTATION, NAMESPACE_ANNOTATION, check_divert_key};

/// A well-formed divert entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The full annotation key, e.g. `divert.okteto.com/2615…a02`.
    pub annotation: String,
    /// The divert key: the developer namespace.
    pub key: String,
    /// Names of the http routes to divert; `None` = every http route.
    pub routes: Option<Vec<String>>,
    /// Names of the Services whose destinations are diverted; `None` = every Service of the
    /// VirtualService's namespace (with a cluster: every one the developer runs, SPEC §10.4).
    /// An empty list is read as absent, as for `routes`.
    pub services: Option<Vec<String>>,
}

/// An entry that cannot be used. `message` says what is wrong and how to fix it; the caller
/// adds the object and field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryError {
    pub annotation: String,
    pub message: String,
}

/// Is `annotation` a divert entry key? The names `namespace` and `header` are not.
pub fn is_entry_key(annotation: &str) -> bool {
    let Some(name) = annotation.strip_prefix(ANNOTATION_PREFIX) else { return false };
    if annotation == NAMESPACE_ANNOTATION || annotation == HEADER_ANNOTATION {
        return false;
    }
    let hash = name.len() == 40 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    // legacy: <devNamespace>-<manifestName>
    hash || name.contains('-')
}

/// Every divert entry of `object`, ordered by annotation key (SPEC §4), each parsed or with the
/// reason it cannot be. `own_namespace` is the VirtualService's namespace (diverting into
/// itself is an error).
pub fn entries(object: &Value, own_namespace: &str) -> Vec<Result<Entry, EntryError>> {
    let Some(annotations) = object.pointer("/metadata/annotations").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = annotations.keys().filter(|k| is_entry_key(k)).collect();
    keys.sort();
    keys.into_iter().map(|k| parse_entry(k, &annotations[k], own_namespace)).collect()
}

/// How a divert entry is written, for messages.
const SHAPE: &str = r#"write it as {"namespace":"<developer namespace>","routes":["<http route name>"]}"#;

fn parse_entry(annotation: &str, value: &Value, own_namespace: &str) -> Result<Entry, EntryError> {
    let err = |message: String| EntryError { annotation: annotation.to_string(), message };
    let text = value.as_str().ok_or_else(|| err(format!("the value is not a string; {SHAPE}")))?;
    let parsed: Value =
        serde_json::from_str(text).map_err(|e| err(format!("the value is not valid JSON ({e}); {SHAPE}")))?;
    let fields = parsed.as_object().ok_or_else(|| err(format!("the value is not a JSON object; {SHAPE}")))?;
    let key = match fields.get("namespace") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(err(format!("\"namespace\" is not a string; {SHAPE}"))),
        None => return Err(err(format!("\"namespace\" is missing; {SHAPE}"))),
    };
    check_divert_key(&key).map_err(|reason| {
        err(format!("\"namespace\": {reason}; set it to the name of the developer namespace to divert to"))
    })?;
    if key == own_namespace {
        return Err(err(format!(
            "\"namespace\" is {key:?}, the VirtualService's own namespace; divert into a developer namespace, not into itself"
        )));
    }
    let routes = names(fields, "routes", "http route names").map_err(err)?;
    let services = names(fields, "services", "Service names").map_err(err)?;
    Ok(Entry { annotation: annotation.to_string(), key, routes, services })
}

/// The list of strings in `field` (`None`: absent, null or empty), or why it is not one.
fn names(fields: &serde_json::Map<String, Value>, field: &str, what: &str) -> Result<Option<Vec<String>>, String> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            let mut names = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => names.push(s.clone()),
                    other => return Err(format!("\"{field}\"[{i}] is {other} (not a string); list {what} as strings")),
                }
            }
            Ok((!names.is_empty()).then_some(names))
        }
        Some(_) => Err(format!("\"{field}\" is not a list; {SHAPE}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HASH: &str = "divert.okteto.com/2615052508acbfaddeba0eeded4131631ea31a02";

    fn vs(annotations: Value) -> Value {
        json!({"metadata": {"name": "api", "namespace": "staging", "annotations": annotations}})
    }

    #[test]
    fn entry_keys() {
        assert!(is_entry_key(HASH));
        assert!(is_entry_key("divert.okteto.com/cindy-movies"));
        assert!(!is_entry_key("divert.okteto.com/header"));
        assert!(!is_entry_key("divert.okteto.com/namespace"));
        assert!(!is_entry_key("divert.okteto.com/2615052508ACBFADDEBA0EEDED4131631EA31A02x"));
        assert!(!is_entry_key("other.io/cindy-movies"));
    }

    #[test]
    fn entries_parse_in_key_order() {
        let o = vs(json!({
            "divert.okteto.com/zed-app": r#"{"namespace":"zed"}"#,
            HASH: r#"{"namespace":"cindy","routes":["api"]}"#,
            "divert.okteto.com/header": "x",
        }));
        let got = entries(&o, "staging");
        assert_eq!(
            got,
            vec![
                Ok(Entry {
                    annotation: HASH.into(),
                    key: "cindy".into(),
                    routes: Some(vec!["api".into()]),
                    services: None
                }),
                Ok(Entry {
                    annotation: "divert.okteto.com/zed-app".into(),
                    key: "zed".into(),
                    routes: None,
                    services: None
                }),
            ]
        );
    }

    #[test]
    fn empty_routes_mean_every_route() {
        let got = entries(&vs(json!({HASH: r#"{"namespace":"cindy","routes":[]}"#})), "staging");
        assert_eq!(got[0].as_ref().unwrap().routes, None);
    }

    #[test]
    fn services_are_read_and_unknown_fields_ignored() {
        let value = r#"{"namespace":"cindy","services":["api","web"],"by":"someone","routes":null}"#;
        let got = entries(&vs(json!({ HASH: value })), "staging");
        let entry = got[0].as_ref().unwrap();
        assert_eq!(entry.services, Some(vec!["api".to_string(), "web".to_string()]));
        assert_eq!(entry.routes, None);
        let got = entries(&vs(json!({ HASH: r#"{"namespace":"cindy","services":[]}"# })), "staging");
        assert_eq!(got[0].as_ref().unwrap().services, None);
    }

    #[test]
    fn malformed_entries_say_why() {
        let cases = [
            ("{not json", "not valid JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"routes":["a"]}"#, "\"namespace\" is missing"),
            (r#"{"namespace":7}"#, "\"namespace\" is not a string"),
            (r#"{"namespace":"Cindy"}"#, "DNS-1123"),
            (r#"{"namespace":"staging"}"#, "own namespace"),
            (r#"{"namespace":"cindy","routes":["a",3]}"#, "\"routes\"[1] is 3"),
            (r#"{"namespace":"cindy","routes":"a"}"#, "\"routes\" is not a list"),
            (
                r#"{"namespace":"cindy","services":["a",{}]}"#,
                "\"services\"[1] is {} (not a string); list Service names",
            ),
            (r#"{"namespace":"cindy","services":"api"}"#, "\"services\" is not a list"),
        ];
        for (value, want) in cases {
            let got = entries(&vs(json!({ HASH: value })), "staging");
            let e = got[0].as_ref().expect_err(value);
            assert!(e.message.contains(want), "{value}: {}", e.message);
        }
        let got = entries(&vs(json!({ HASH: 5 })), "staging");
        assert!(got[0].as_ref().unwrap_err().message.contains("not a string"));
    }
}
