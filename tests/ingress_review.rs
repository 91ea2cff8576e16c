//! SPEC §6 and the Ingress parts of §7, through the real review path: AdmissionReview bytes in,
//! answer out, the base64 JSONPatch decoded and applied with `json_patch`.

mod ingress_support;

use divert_webhook::settings::Settings;
use ingress_support::*;
use serde_json::{Value, json};

const USER_LINES: &str = "more_set_headers \"Request-Id: $req_id\";\nproxy_set_header X-User-Line 1;\n";

fn annotated(key: &str, snippet: Option<&str>) -> Value {
    let mut annotations = json!({"kubernetes.io/ingress.class": "nginx", HEADER: key});
    if let Some(snippet) = snippet {
        annotations[SNIPPET] = snippet.into();
    }
    ingress(annotations)
}

/// The block as the webhook wrote it, checked for what SPEC §6 requires of it.
fn assert_block_for(block: &str, key: &str, legacy: bool) {
    assert!(block.starts_with(&format!("{BEGIN}\n")) && block.ends_with(&format!("{END}\n")), "{block}");
    assert_eq!(block.matches(BEGIN).count(), 1, "{block}");
    let baggage = format!("proxy_set_header baggage \"okteto-divert={key}$okteto_divert_baggage\";\n");
    assert!(block.contains(&baggage), "{block}");
    let legacy_line = format!("proxy_set_header baggage.okteto-divert \"{key}\";\n");
    assert_eq!(block.contains(&legacy_line), legacy, "{block}");
}

#[test]
fn header_annotation_adds_one_block_after_the_users_lines() {
    let object = annotated("cindy", Some(USER_LINES));
    let (mutated, patch) = mutate_with_patch(&object, &nginx_settings(false));

    // One operation, on the snippet annotation only.
    let ops = serde_json::to_value(&patch).unwrap();
    assert_eq!(ops.as_array().unwrap().len(), 1, "{ops}");
    assert_eq!(ops[0]["op"], "replace");
    assert_eq!(ops[0]["path"], "/metadata/annotations/nginx.ingress.kubernetes.io~1configuration-snippet");

    let snippet = snippet_of(&mutated).unwrap();
    let (user, block) = split_block(snippet);
    assert_eq!(user, USER_LINES);
    assert!(snippet.starts_with(USER_LINES));
    assert_block_for(&block, "cindy", false);
}

#[test]
fn an_ingress_without_snippet_gets_the_annotation() {
    let object = annotated("cindy", None);
    let (mutated, patch) = mutate_with_patch(&object, &nginx_settings(false));
    let ops = serde_json::to_value(&patch).unwrap();
    assert_eq!(ops.as_array().unwrap().len(), 1, "{ops}");
    assert_eq!(ops[0]["op"], "add");
    let snippet = snippet_of(&mutated).unwrap();
    assert_block_for(snippet, "cindy", false);
    assert_eq!(split_block(snippet).0, "");

    // No annotations map at all: it is created.
    let mut bare = ingress(Value::Null);
    bare["metadata"]["annotations"] = json!({HEADER: "cindy"});
    let mutated = mutate(&bare, &nginx_settings(false));
    assert_block_for(snippet_of(&mutated).unwrap(), "cindy", false);
}

#[test]
fn mutation_is_idempotent() {
    for (settings, snippet) in
        [(nginx_settings(false), Some(USER_LINES)), (nginx_settings(true), None), (nginx_settings(false), Some("x y;"))]
    {
        let once = mutate(&annotated("cindy", snippet), &settings);
        let response = answer(divert_webhook::review::Endpoint::Mutate, &once, "cindy", &settings);
        assert!(response.get("patch").is_none_or(Value::is_null), "second pass patched: {response}");
        assert!(response.get("patchType").is_none_or(Value::is_null), "{response}");
    }
}

#[test]
fn a_changed_key_rewrites_the_block_in_place() {
    let settings = nginx_settings(false);
    let mut object = mutate(&annotated("cindy", Some(USER_LINES)), &settings);
    // The user adds a line after the block; it must stay after it.
    let with_after = format!("{}add_header X-After 1;\n", snippet_of(&object).unwrap());
    object["metadata"]["annotations"][SNIPPET] = with_after.clone().into();
    object["metadata"]["annotations"][HEADER] = "bob".into();

    let mutated = mutate(&object, &settings);
    let snippet = snippet_of(&mutated).unwrap();
    let (user, block) = split_block(snippet);
    assert_eq!(user, format!("{USER_LINES}add_header X-After 1;\n"));
    assert_block_for(&block, "bob", false);
    assert!(!snippet.contains("cindy"), "{snippet}");
    assert!(snippet.ends_with("# divert-webhook end\nadd_header X-After 1;\n"), "{snippet}");
    assert_eq!(snippet.replace(&block, ""), user);
}

#[test]
fn removing_the_annotation_removes_the_block_and_keeps_the_users_lines() {
    let settings = nginx_settings(true);
    // User lines before and after the block, CRLF endings and no final newline: byte for byte.
    let before = "add_header X-User 1;\r\n  proxy_set_header X-User-Line \"a  b\";\n";
    let after = "\n# the user's own comment\nadd_header X-After 1;";
    let mut object = mutate(&annotated("cindy", Some(before)), &settings);
    let snippet = format!("{}{after}", snippet_of(&object).unwrap());
    object["metadata"]["annotations"][SNIPPET] = snippet.clone().into();
    assert_eq!(mutate(&object, &settings), object, "a block among user lines is already right");

    object["metadata"]["annotations"].as_object_mut().unwrap().remove(HEADER);
    let removed = mutate(&object, &settings);
    assert_eq!(snippet_of(&removed), Some(format!("{before}{after}").as_str()));
    assert_eq!(removed["metadata"]["annotations"]["kubernetes.io/ingress.class"], "nginx");
}

#[test]
fn removing_the_annotation_removes_a_snippet_that_held_only_the_block() {
    let settings = nginx_settings(false);
    let original = annotated("cindy", None);
    let mut object = mutate(&original, &settings);
    object["metadata"]["annotations"].as_object_mut().unwrap().remove(HEADER);
    let (removed, patch) = mutate_with_patch(&object, &settings);
    let ops = serde_json::to_value(&patch).unwrap();
    assert_eq!(
        ops,
        json!([{"op": "remove", "path": "/metadata/annotations/nginx.ingress.kubernetes.io~1configuration-snippet"}])
    );
    let mut expected = original.clone();
    expected["metadata"]["annotations"].as_object_mut().unwrap().remove(HEADER);
    assert_eq!(serde_json::to_string(&removed).unwrap(), serde_json::to_string(&expected).unwrap());
}

#[test]
fn legacy_header_is_set_only_with_the_flag() {
    let object = annotated("cindy", Some(USER_LINES));
    let with = mutate(&object, &nginx_settings(true));
    assert_block_for(&split_block(snippet_of(&with).unwrap()).1, "cindy", true);
    let without = mutate(&object, &nginx_settings(false));
    assert_block_for(&split_block(snippet_of(&without).unwrap()).1, "cindy", false);
    // Turning the flag off takes the legacy line out again.
    let off = mutate(&with, &nginx_settings(false));
    assert_eq!(snippet_of(&off), snippet_of(&without));
}

#[test]
fn duplicated_blocks_are_repaired_into_one() {
    let settings = nginx_settings(false);
    let once = mutate(&annotated("cindy", Some(USER_LINES)), &settings);
    let block = split_block(snippet_of(&once).unwrap()).1;
    let mut object = once.clone();
    object["metadata"]["annotations"][SNIPPET] = format!("{block}{USER_LINES}{block}").into();
    let repaired = mutate(&object, &settings);
    assert_eq!(snippet_of(&repaired), Some(format!("{block}{USER_LINES}").as_str()));
    assert!(validate(&repaired, &settings)["allowed"].as_bool().unwrap());
}

#[test]
fn istio_driver_does_not_mutate_ingresses() {
    let object = annotated("cindy", Some(USER_LINES));
    let response = answer(divert_webhook::review::Endpoint::Mutate, &object, "cindy", &Settings::default());
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none_or(Value::is_null), "{response}");
}

#[test]
fn protected_namespaces_are_not_mutated() {
    let mut object = annotated("cindy", None);
    object["metadata"]["namespace"] = "divert-system".into();
    let response = answer(divert_webhook::review::Endpoint::Mutate, &object, "divert-system", &nginx_settings(false));
    assert!(response.get("patch").is_none_or(Value::is_null), "{response}");
}

// ---- §7 -------------------------------------------------------------------------------------

const SNIPPET_FIELD: &str = r#"metadata.annotations["nginx.ingress.kubernetes.io/configuration-snippet"]"#;

/// The denial message of a validation answer; also checks the answer's shape.
fn denied(object: &Value, settings: &Settings) -> String {
    let response = validate(object, settings);
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 403, "{response}");
    let message = response["status"]["message"].as_str().unwrap().to_string();
    assert!(message.starts_with("Ingress cindy/web: "), "object not named: {message}");
    message
}

fn allowed_with_warnings(object: &Value, settings: &Settings) -> Vec<String> {
    let response = validate(object, settings);
    assert_eq!(response["allowed"], true, "{response}");
    let warnings: Vec<String> = response
        .get("warnings")
        .and_then(Value::as_array)
        .map(|w| w.iter().map(|w| w.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    for warning in &warnings {
        assert!(warning.len() < 120, "warning too long ({}): {warning}", warning.len());
    }
    warnings
}

#[test]
fn a_key_that_is_not_a_namespace_name_is_denied() {
    for bad in ["Cindy", "cindy.dev", "cindy; return 200", ""] {
        let message = denied(&annotated(bad, None), &nginx_settings(false));
        assert!(message.contains(r#"metadata.annotations["divert.okteto.com/header"]: "#), "{message}");
        assert!(message.contains("DNS-1123"), "{message}");
        assert!(message.contains("set it to the developer namespace"), "{message}");
        // And it is never written into nginx syntax.
        let response =
            answer(divert_webhook::review::Endpoint::Mutate, &annotated(bad, None), "cindy", &nginx_settings(false));
        assert!(response.get("patch").is_none_or(Value::is_null), "{bad}: {response}");
    }
}

#[test]
fn wrong_header_names_in_the_snippet_are_denied_with_their_line() {
    for (line, name) in [
        ("proxy_set_header okteto-divert cindy;", "okteto-divert"),
        ("  proxy_set_header X-Okteto-Divert \"cindy\";", "X-Okteto-Divert"),
        ("more_set_input_headers 'x-okteto-divert: cindy';", "x-okteto-divert"),
        ("grpc_set_header okteto-divert cindy;", "okteto-divert"),
    ] {
        let snippet = format!("add_header X-User 1;\n\n{line}\n");
        let object = ingress(json!({SNIPPET: snippet}));
        for settings in [nginx_settings(false), Settings::default()] {
            let message = denied(&object, &settings);
            assert!(message.contains(&format!("{SNIPPET_FIELD} line 3: header {name:?}")), "{message}");
            assert!(message.contains("use the baggage header with the member okteto-divert=<namespace>"), "{message}");
            assert_eq!(validate(&object, &settings)["status"]["reason"], "Forbidden");
        }
    }
}

#[test]
fn wrong_baggage_values_in_the_snippet_are_denied_with_their_line() {
    for (line, wrong) in [
        (r#"more_set_input_headers "baggage: baggage.okteto-divert=cindy";"#, "baggage.okteto-divert="),
        (r#"more_set_input_headers -r "Baggage: a=1,okteto-divert:cindy";"#, "okteto-divert:"),
        ("proxy_set_header baggage baggage.okteto-divert=cindy;", "baggage.okteto-divert="),
        ("proxy_set_header baggage \"okteto-divert:cindy\";", "okteto-divert:"),
    ] {
        let object = ingress(json!({SNIPPET: format!("{line}\n")}));
        let message = denied(&object, &nginx_settings(false));
        assert!(message.contains(&format!("{SNIPPET_FIELD} line 1: baggage value")), "{message}");
        assert!(message.contains(wrong), "{message}");
        assert!(message.contains("okteto-divert=<namespace>"), "{message}");
    }
}

#[test]
fn a_correct_manual_baggage_line_is_allowed() {
    let object = ingress(json!({SNIPPET: "proxy_set_header baggage \"okteto-divert=cindy\";\n"}));
    assert!(allowed_with_warnings(&object, &nginx_settings(false)).is_empty());
    // Next to the header annotation it would send baggage twice: a warning names the line.
    let object = annotated("cindy", Some("add_header X-User 1;\nproxy_set_header baggage \"okteto-divert=cindy\";\n"));
    let warnings = allowed_with_warnings(&mutate(&object, &nginx_settings(false)), &nginx_settings(false));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("configuration-snippet line 2 sets baggage too"), "{warnings:?}");
}

#[test]
fn the_legacy_header_is_allowed_with_a_warning() {
    let object = ingress(json!({SNIPPET: "add_header X-User 1;\nproxy_set_header baggage.okteto-divert cindy;\n"}));
    let off = allowed_with_warnings(&object, &nginx_settings(false));
    assert_eq!(
        off,
        vec![
            "configuration-snippet line 2: baggage.okteto-divert is deprecated and off here; use baggage: okteto-divert=<namespace>"
        ]
    );
    let on = allowed_with_warnings(&object, &nginx_settings(true));
    assert_eq!(
        on,
        vec![
            "configuration-snippet line 2: baggage.okteto-divert is deprecated; use baggage: okteto-divert=<namespace>"
        ]
    );
    // The webhook's own legacy line is not the user's: no warning for it.
    let generated = mutate(&annotated("cindy", None), &nginx_settings(true));
    assert!(allowed_with_warnings(&generated, &nginx_settings(true)).is_empty());
}

#[test]
fn broken_block_markers_are_denied_with_their_line() {
    let settings = nginx_settings(false);
    let block = split_block(snippet_of(&mutate(&annotated("cindy", None), &settings)).unwrap()).1;
    let without_end = block.replace(&format!("{END}\n"), "");
    let without_begin = block.replace(&format!("{BEGIN}\n"), "");
    for (snippet, line, problem) in [
        (
            format!("add_header X-User 1;\n{without_end}"),
            2,
            r##""# divert-webhook begin" has no "# divert-webhook end" after it"##,
        ),
        (format!("{without_end}{block}"), 1, r##""# divert-webhook begin" has no "# divert-webhook end" after it"##),
        (
            format!("add_header X-User 1;\n{without_begin}"),
            2 + without_begin.lines().count() - 1,
            r##""# divert-webhook end" has no "# divert-webhook begin" before it"##,
        ),
    ] {
        for object in [annotated("cindy", Some(&snippet)), ingress(json!({SNIPPET: snippet.clone()}))] {
            // Left as it is by the mutation (which lines are the user's is unclear) ...
            let response = answer(divert_webhook::review::Endpoint::Mutate, &object, "cindy", &settings);
            assert!(response.get("patch").is_none_or(Value::is_null), "{response}");
            // ... and denied, naming the line and the fix.
            let message = denied(&object, &settings);
            assert!(message.contains(&format!("{SNIPPET_FIELD} line {line}: {problem}")), "{message}");
            assert!(
                message.contains("restore the missing marker line or delete the divert-webhook lines"),
                "{message}"
            );
        }
    }
}

#[test]
fn lines_inside_the_block_are_the_webhooks_and_not_checked() {
    // A hand-edited block: the mutation replaces its content, validation does not blame the user.
    let snippet = format!("add_header X-User 1;\n{BEGIN}\nproxy_set_header okteto-divert cindy;\n{END}\n");
    let object = annotated("cindy", Some(&snippet));
    assert!(allowed_with_warnings(&object, &nginx_settings(false)).is_empty());
    let repaired = mutate(&object, &nginx_settings(false));
    let (user, block) = split_block(snippet_of(&repaired).unwrap());
    assert_eq!(user, "add_header X-User 1;\n");
    assert_block_for(&block, "cindy", false);
}

#[test]
fn the_mutated_object_passes_validation() {
    for legacy in [false, true] {
        let settings = nginx_settings(legacy);
        let mutated = mutate(&annotated("cindy", Some(USER_LINES)), &settings);
        assert!(allowed_with_warnings(&mutated, &settings).is_empty());
    }
}

#[test]
fn wrong_forms_in_the_server_snippet_are_denied_too() {
    let object = ingress(json!({
        "nginx.ingress.kubernetes.io/server-snippet": "location /x {\n  proxy_set_header x-okteto-divert cindy;\n}\n"
    }));
    let message = denied(&object, &nginx_settings(false));
    assert!(
        message.contains(
            r#"metadata.annotations["nginx.ingress.kubernetes.io/server-snippet"] line 2: header "x-okteto-divert""#
        ),
        "{message}"
    );
    let object =
        ingress(json!({"nginx.ingress.kubernetes.io/server-snippet": "proxy_set_header baggage.okteto-divert a;\n"}));
    let warnings = allowed_with_warnings(&object, &nginx_settings(false));
    assert_eq!(
        warnings,
        vec![
            "server-snippet line 1: baggage.okteto-divert is deprecated and off here; use baggage: okteto-divert=<namespace>"
        ]
    );
}
