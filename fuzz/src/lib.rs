//! What the fuzz targets share: settings chosen from the input, objects built from the field
//! names the rules read (the vocabulary of tests/robustness.rs, widened), and the checks every
//! answer must pass (SPEC §8): no panic, a JSON answer echoing the uid, one-line printable
//! warnings under 120 characters, a patch that applies and a mutation that is a fixed point.

use arbitrary::{Result, Unstructured};
use base64::Engine as _;
use divert_webhook::review::{Endpoint, review};
use divert_webhook::selector::Selector;
use divert_webhook::settings::{Driver, Settings};
use serde_json::{Map, Value, json};

/// Field names the rules read (tests/robustness.rs KEYS, plus the ones found by grepping
/// src/rules for `get("…")` and `pointer("…")`).
pub const KEYS: &[&str] = &[
    "metadata",
    "name",
    "namespace",
    "generateName",
    "labels",
    "annotations",
    "spec",
    "http",
    "tcp",
    "tls",
    "route",
    "match",
    "headers",
    "withoutHeaders",
    "request",
    "response",
    "set",
    "add",
    "remove",
    "baggage",
    "destination",
    "host",
    "port",
    "number",
    "subset",
    "weight",
    "uri",
    "regex",
    "exact",
    "prefix",
    "redirect",
    "rewrite",
    "uriRegexRewrite",
    "corsPolicy",
    "allowOrigins",
    "delegate",
    "rules",
    "paths",
    "path",
    "backend",
    "service",
    "hosts",
    "routes",
    "ingressClassName",
    "istio-injection",
    "istio.io/rev",
    "linkerd.io/inject",
    "divert.okteto.com/header",
    "divert.okteto.com/namespace",
    "divert.okteto.com/2615052508acbfaddeba0eeded4131631ea31a02",
    "divert.okteto.com/cindy-app",
    "divert.okteto.com/zed-app",
    "divert.okteto.com/",
    "nginx.ingress.kubernetes.io/configuration-snippet",
    "nginx.ingress.kubernetes.io/server-snippet",
    "dev.okteto.com/okteto-managed",
];

/// String values worth trying in any position (tests/robustness.rs STRINGS, widened).
pub const STRINGS: &[&str] = &[
    "",
    "cindy",
    "zed",
    "staging",
    "api",
    "app",
    "true",
    "enabled",
    "disabled",
    "ingress",
    "svc",
    "svc.staging",
    "svc.staging.svc.cluster.local",
    "*.example.com",
    "okteto-divert=cindy",
    "okteto-divert:cindy",
    "baggage",
    "baggage.okteto-divert",
    "x-okteto-divert",
    "okteto-divert",
    "(?=x)",
    "a{2,1}",
    "[",
    "^/api(/.*)?$",
    "\\Q.\\E",
    "[[:alpha:]-z]",
    "\u{7}bell\n",
    r#"{"namespace":"cindy"}"#,
    r#"{"namespace":"cindy","routes":["a",1]}"#,
    r#"{"namespace":"cindy","routes":["api"]}"#,
    r#"{"namespace":"staging"}"#,
    "{not json",
    "okteto-divert-cindy-0",
    "okteto-divert-cindy-api",
    "# divert-webhook begin\n",
    "# divert-webhook end\n",
    "proxy_set_header okteto-divert cindy;",
    "proxy_set_header baggage \"okteto-divert=cindy\";",
    "more_set_headers \"x: y\";\n# divert-webhook begin",
    "if ($http_baggage ~ \"x\") { return 400; }",
];

/// Lines an nginx configuration snippet is made of, for the Ingress and snippet targets.
pub const SNIPPET_LINES: &[&str] = &[
    "# divert-webhook begin",
    "# divert-webhook end",
    "proxy_set_header baggage \"okteto-divert=cindy\";",
    "proxy_set_header okteto-divert cindy;",
    "proxy_set_header Baggage $http_baggage;",
    "more_set_input_headers \"baggage: okteto-divert=x\";",
    "more_clear_input_headers baggage;",
    "proxy_hide_header baggage;",
    "grpc_pass_header x-okteto-divert;",
    "set $x \"$http_baggage\";",
    "if ($http_x_okteto_divert) {",
    "}",
    "'quoted \\' word' \"dq \\\" word\" ;",
    "{",
    ";",
    "\\",
    "#",
    "",
];

/// Settings from one byte: bit 0 the driver, bit 1 the legacy header, bit 2 a managed selector
/// that matches nothing special (the default) or everything.
pub fn settings(byte: u8) -> Settings {
    let driver = if byte & 1 == 0 { Driver::Istio } else { Driver::Nginx };
    let selector = if byte & 4 == 0 {
        Selector::parse(divert_webhook::settings::DEFAULT_MANAGED_SELECTOR).unwrap()
    } else {
        Selector::everything()
    };
    let mut settings = Settings::new(driver, selector, Some("divert"), &[]);
    settings.legacy_header = byte & 2 != 0;
    settings
}

/// A string: from the vocabulary, arbitrary, a snippet, or JSON text of a generated value (so
/// divert annotations get structured contents).
pub fn string(u: &mut Unstructured<'_>, depth: u32) -> Result<String> {
    // JSON text only above depth 0: each nesting escapes the one inside (its size doubles),
    // so an unbounded one grows exponentially with the input.
    let choices = if depth == 0 { 7 } else { 9 };
    Ok(match u.int_in_range(0..=choices)? {
        0..=4 => u.choose(STRINGS)?.to_string(),
        5 => u.choose(KEYS)?.to_string(),
        6 => String::arbitrary_take(u)?,
        7 => snippet(u)?,
        _ => serde_json::to_string(&value(u, depth.saturating_sub(1))?).unwrap(),
    })
}

/// An nginx snippet: vocabulary lines and arbitrary text, with mixed line endings.
pub fn snippet(u: &mut Unstructured<'_>) -> Result<String> {
    let mut out = String::new();
    for _ in 0..u.int_in_range(0..=8u8)? {
        match u.int_in_range(0..=4u8)? {
            0 => out.push_str(&String::arbitrary_take(u)?),
            _ => out.push_str(u.choose(SNIPPET_LINES)?),
        }
        out.push_str(u.choose(&["\n", "\r\n", " ", ""])?);
    }
    Ok(out)
}

trait ArbitraryTake: Sized {
    fn arbitrary_take(u: &mut Unstructured<'_>) -> Result<Self>;
}

impl ArbitraryTake for String {
    /// A short arbitrary string (at most 40 bytes of input), so one field does not eat the rest.
    fn arbitrary_take(u: &mut Unstructured<'_>) -> Result<String> {
        let len = u.int_in_range(0..=40usize)?.min(u.len());
        let bytes = u.bytes(len)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// Any JSON value, biased towards the shapes the rules read: objects keyed by [`KEYS`].
pub fn value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let choice = if depth == 0 { u.int_in_range(0..=4u8)? } else { u.int_in_range(0..=8u8)? };
    Ok(match choice {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => match u.int_in_range(0..=3u8)? {
            0 => json!(u.arbitrary::<i64>()?),
            1 => json!(u.arbitrary::<f64>()?),
            _ => json!(u.int_in_range(-3i64..=200)?),
        },
        3 | 4 => Value::String(string(u, depth)?),
        5 | 6 => {
            let n = u.int_in_range(0..=4u8)?;
            Value::Array((0..n).map(|_| value(u, depth - 1)).collect::<Result<_>>()?)
        }
        _ => Value::Object(object(u, depth - 1)?),
    })
}

/// An object keyed mostly by [`KEYS`].
pub fn object(u: &mut Unstructured<'_>, depth: u32) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for _ in 0..u.int_in_range(0..=6u8)? {
        let key = if u.ratio(7u8, 8)? { u.choose(KEYS)?.to_string() } else { String::arbitrary_take(u)? };
        map.insert(key, value(u, depth)?);
    }
    Ok(map)
}

/// An object of `api_version`/`kind` for a rules target: the input's first byte picks the
/// settings (bits 0-2, see [`settings`]) and the apiVersion (bits 3-4); the rest is either JSON
/// text (seeded from real manifests; its apiVersion and kind are overwritten) or the recipe for
/// a generated object with `metadata` and `spec`.
pub fn kind_object(data: &[u8], api_versions: &[&str], kind: &str) -> Option<(Settings, Value)> {
    let (&first, rest) = data.split_first()?;
    let settings = settings(first);
    let api_version = api_versions[usize::from(first >> 3 & 3) % api_versions.len()];
    let mut object = match serde_json::from_slice::<Value>(rest) {
        Ok(Value::Object(parsed)) => Value::Object(parsed),
        _ => {
            let mut u = Unstructured::new(rest);
            let mut metadata = object(&mut u, 2).ok()?;
            if u.ratio(3u8, 4).ok()? {
                metadata.insert("name".into(), json!(u.choose(&["cindy", "staging", "api", "app"]).ok()?));
            }
            for map in ["labels", "annotations"] {
                if u.ratio(1u8, 2).ok()? {
                    metadata.insert(map.into(), Value::Object(object(&mut u, 1).ok()?));
                }
            }
            json!({"metadata": metadata, "spec": value(&mut u, 6).ok()?})
        }
    };
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Some((settings, object))
}

/// The AdmissionReview the apiserver sends for a CREATE of `object` (tests/support::review_of).
pub fn review_of(object: &Value) -> Vec<u8> {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let kind = object["kind"].as_str().unwrap_or("");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let resource = format!("{}s", kind.to_ascii_lowercase()).replace("ingresss", "ingresses");
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let mut request = json!({
        "uid": "3c8b0d5e-6d62-4f8a-9a4b-7d1b2c3e4f50",
        "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": name,
        "operation": "CREATE",
        "userInfo": {"username": "cindy@example.com"},
        "object": object,
    });
    if kind != "Namespace" {
        // the apiserver always sends the namespace of a namespaced object
        request["namespace"] =
            json!(object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("staging"));
    }
    serde_json::to_vec(&json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request}))
        .unwrap()
}

/// Runs `body` through both endpoints and checks each answer (see [`check_answer`]).
pub fn check_review_both(body: &[u8], settings: &Settings) {
    for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
        check_answer(endpoint, body, settings);
    }
}

/// One review through [`review`]: a refusal is a one-line reason; an answer is JSON that
/// echoes the uid, with short printable warnings; /validate never patches; /mutate never denies,
/// and its patch applies to the object and gives an object that mutating again leaves alone.
pub fn check_answer(endpoint: Endpoint, body: &[u8], settings: &Settings) {
    let (answer, _summary) = match review(endpoint, body, settings) {
        Ok(answer) => answer,
        Err(invalid) => {
            let reason = invalid.to_string();
            assert!(!reason.is_empty() && !reason.contains(['\n', '\r']), "reason is not one line: {reason:?}");
            return;
        }
    };
    let answer: Value = serde_json::from_slice(&answer).expect("the answer is JSON");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    // The webhook skips the fields it does not read without checking their UTF-8 (serde's
    // IgnoredAny), so an answered body may hold invalid UTF-8 there: read it lossily.
    let sent: Value = serde_json::from_slice(body)
        .or_else(|_| serde_json::from_str(&String::from_utf8_lossy(body)))
        .expect("an answered body is JSON");
    assert_eq!(response["uid"], sent["request"]["uid"], "uid echoed");
    for warning in response["warnings"].as_array().into_iter().flatten() {
        let warning = warning.as_str().expect("a warning is a string");
        assert!(warning.chars().count() < 120, "warning of 120 characters or more: {warning:?}");
        assert!(!warning.chars().any(char::is_control), "warning with a control character: {warning:?}");
    }
    if let Some(message) = response.pointer("/status/message").and_then(Value::as_str) {
        assert!(!message.chars().any(|c| c.is_control()), "denial with a control character: {message:?}");
    }
    let patch = response.get("patch");
    match endpoint {
        Endpoint::Validate => assert!(patch.is_none(), "/validate answered a patch: {response}"),
        Endpoint::Mutate => assert_eq!(response["allowed"], true, "/mutate denied: {response}"),
    }
    let Some(patch) = patch else { return };
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD.decode(patch.as_str().expect("patch is a string")).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("patch is RFC 6902");
    assert!(!patch.0.is_empty(), "an empty patch was sent");
    let mut object = sent["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).unwrap_or_else(|e| panic!("patch does not apply: {e}"));
    let mut again = sent;
    again["request"]["object"] = object;
    let body = serde_json::to_vec(&again).unwrap();
    let (answer, _) = review(Endpoint::Mutate, &body, settings).expect("the mutated object is answered");
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert!(answer["response"].get("patch").is_none(), "mutating the result patched it again: {}", answer["response"]);
}
