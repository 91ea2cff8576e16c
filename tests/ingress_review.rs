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
fn header_annotation_adds_one_block_in_front_of_the_users_lines() {
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
    // The user's text follows the block's end-marker line untouched.
    assert_eq!(snippet, format!("{block}{USER_LINES}"));
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
    // The user adds a line in front of the block; it must stay in front of it.
    let with_before = format!("add_header X-Before 1;\n{}", snippet_of(&object).unwrap());
    object["metadata"]["annotations"][SNIPPET] = with_before.clone().into();
    object["metadata"]["annotations"][HEADER] = "bob".into();

    let mutated = mutate(&object, &settings);
    let snippet = snippet_of(&mutated).unwrap();
    let (user, block) = split_block(snippet);
    assert_eq!(user, format!("add_header X-Before 1;\n{USER_LINES}"));
    assert_block_for(&block, "bob", false);
    assert!(!snippet.contains("cindy"), "{snippet}");
    assert_eq!(snippet, format!("add_header X-Before 1;\n{block}{USER_LINES}"));
}

#[test]
fn a_block_an_earlier_version_wrote_is_rewritten_in_place() {
    let settings = nginx_settings(false);
    let current = snippet_of(&mutate(&annotated("cindy", None), &settings)).unwrap().to_string();
    assert_ne!(current, EARLIER_BLOCK_BOB.replace("bob", "cindy"), "the block changed (issue 8 item 4)");
    // In front of the user's lines (where the webhook puts it), between them (lines added in
    // front later), behind them (where the first versions appended it), CRLF and no final newline.
    for (before, after) in [
        ("", USER_LINES),
        ("add_header X-Before 1;\r\n\t\r\n", "add_header X-After 1;"),
        (USER_LINES, ""),
        ("x y;\r\n", ""),
    ] {
        let stored = format!("{before}{EARLIER_BLOCK_BOB}{after}");
        let mutated = mutate(&annotated("cindy", Some(&stored)), &settings);
        let snippet = snippet_of(&mutated).unwrap();
        assert_eq!(snippet, format!("{before}{current}{after}"), "{stored:?}");
        assert_eq!(split_block(snippet).0, format!("{before}{after}"));
        assert_eq!(mutate(&mutated, &settings), mutated, "idempotent");
        // Removing the annotation takes the block out and leaves the user's lines as they were.
        let mut unannotated = annotated("cindy", Some(&stored));
        unannotated["metadata"]["annotations"].as_object_mut().unwrap().remove(HEADER);
        let removed = mutate(&unannotated, &settings);
        let users = format!("{before}{after}");
        assert_eq!(snippet_of(&removed), (!users.is_empty()).then_some(users.as_str()));
    }
}

#[test]
fn removing_the_annotation_removes_the_block_and_keeps_the_users_lines() {
    let settings = nginx_settings(true);
    // CRLF endings, a blank line, a comment and no final newline: byte for byte.
    let users = "add_header X-User 1;\r\n  proxy_set_header X-User-Line \"a  b\";\n\n# the user's own comment\nadd_header X-After 1;";
    let mut object = mutate(&annotated("cindy", Some(users)), &settings);
    // The user then adds lines in front of the block.
    let before = "add_header X-Before 1;\r\n\t\r\n";
    let snippet = format!("{before}{}", snippet_of(&object).unwrap());
    object["metadata"]["annotations"][SNIPPET] = snippet.clone().into();
    assert_eq!(mutate(&object, &settings), object, "a block among user lines is already right");

    object["metadata"]["annotations"].as_object_mut().unwrap().remove(HEADER);
    let removed = mutate(&object, &settings);
    assert_eq!(snippet_of(&removed), Some(format!("{before}{users}").as_str()));
    assert_eq!(removed["metadata"]["annotations"]["kubernetes.io/ingress.class"], "nginx");
}

#[test]
fn adding_then_removing_the_annotation_gives_the_snippet_back_exactly() {
    for legacy in [false, true] {
        let settings = nginx_settings(legacy);
        for users in [
            "a;\nadd_header X 1;",
            "a;\r\nadd_header X 1;",
            "a;\r\nadd_header X 1;\r\n",
            "add_header X 1;  \t",
            "add_header X 1;\n\n  ",
            " ",
            "\n",
            "\r\n\r\n",
            "\t",
            "# only a comment",
        ] {
            let with = mutate(&annotated("cindy", Some(users)), &settings);
            assert_eq!(
                snippet_of(&with),
                Some(format!("{}{users}", split_block(snippet_of(&with).unwrap()).1).as_str())
            );
            let mut without = with.clone();
            without["metadata"]["annotations"].as_object_mut().unwrap().remove(HEADER);
            let (restored, patch) = mutate_with_patch(&without, &settings);
            assert_eq!(snippet_of(&restored), Some(users), "{users:?}");
            let ops = serde_json::to_value(&patch).unwrap();
            assert_eq!(ops.as_array().unwrap().len(), 1, "{ops}");
            assert_eq!(ops[0]["op"], "replace", "{ops}");
        }
    }
}

#[test]
fn an_empty_snippet_annotation_goes_away_with_the_block() {
    // SPEC §6: the annotation is removed when the block was all it held; "" held nothing else.
    let settings = nginx_settings(false);
    let with = mutate(&annotated("cindy", Some("")), &settings);
    assert_block_for(snippet_of(&with).unwrap(), "cindy", false);
    let mut without = with.clone();
    without["metadata"]["annotations"].as_object_mut().unwrap().remove(HEADER);
    assert_eq!(snippet_of(&mutate(&without, &settings)), None);
    // Without the header annotation an empty snippet is left as it is.
    let empty = ingress(json!({SNIPPET: ""}));
    assert_eq!(mutate(&empty, &settings), empty);
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
    assert_eq!(allowed_with_warnings(&object, &nginx_settings(false)).len(), 1);
    assert!(
        allowed_with_warnings(&object, &nginx_settings(false))[0]
            .starts_with("configuration-snippet line 2 sets baggage too")
    );
    // With the block in front, the line is still counted as the user wrote it.
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
            "configuration-snippet line 2: baggage.okteto-divert is off (deprecated); use baggage: okteto-divert=<namespace>"
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
            "server-snippet line 1: baggage.okteto-divert is off (deprecated); use baggage: okteto-divert=<namespace>"
        ]
    );
}

#[test]
fn wrong_header_names_are_denied_wherever_a_directive_names_them() {
    for (line, said, fix) in [
        ("add_header okteto-divert cindy;", r#"add_header sets header "okteto-divert""#, "delete it from the line"),
        (
            "add_header X-Okteto-Divert $host always;",
            r#"add_header sets header "X-Okteto-Divert""#,
            "delete it from the line",
        ),
        (
            "more_set_headers -s 200 'X-Okteto-Divert: cindy';",
            r#"more_set_headers sets header "X-Okteto-Divert""#,
            "delete it",
        ),
        ("more_clear_headers X-A okteto-divert;", r#"more_clear_headers clears header "okteto-divert""#, "delete it"),
        (
            "more_clear_input_headers -t text/html 'x-okteto-divert';",
            r#"more_clear_input_headers clears header "x-okteto-divert""#,
            "the webhook's block replaces a client's okteto-divert member",
        ),
        ("proxy_hide_header okteto-divert;", r#"proxy_hide_header hides header "okteto-divert""#, "delete it"),
        ("proxy_pass_header X-OKTETO-DIVERT;", r#"proxy_pass_header passes header "X-OKTETO-DIVERT""#, "delete it"),
        ("grpc_hide_header x-okteto-divert;", r#"grpc_hide_header hides header "x-okteto-divert""#, "delete it"),
        (
            "if ($http_x_okteto_divert) { return 403; }",
            r#"$http_x_okteto_divert reads header "x-okteto-divert", which divert never sends"#,
            "read $http_baggage instead",
        ),
        (
            r#"proxy_set_header baggage "okteto-divert=${http_okteto_divert}";"#,
            r#"${http_okteto_divert} reads header "okteto-divert""#,
            "read $http_baggage instead",
        ),
        (
            "add_header X-Seen $sent_http_okteto_divert;",
            r#"$sent_http_okteto_divert reads header "okteto-divert""#,
            "read $http_baggage instead",
        ),
    ] {
        let snippet = format!("add_header X-User 1;\r\n\r\n{line}\n");
        let object = ingress(json!({SNIPPET: snippet}));
        for settings in [nginx_settings(false), Settings::default()] {
            let message = denied(&object, &settings);
            assert!(message.contains(&format!("{SNIPPET_FIELD} line 3: {said}")), "{message}");
            assert!(message.contains("baggage as the member okteto-divert=<namespace>"), "{message}");
            assert!(message.contains(fix), "{message}");
        }
        // After the mutation put the block in front: the line as the user wrote it, and where
        // it is in the stored snippet.
        let object = mutate(&annotated("cindy", Some(&snippet)), &nginx_settings(false));
        let block_lines = split_block(snippet_of(&object).unwrap()).1.lines().count();
        let message = denied(&object, &nginx_settings(false));
        assert!(message.contains(&format!("{SNIPPET_FIELD} line 3: {said}")), "{message}");
        let stored = format!("(line 3 not counting the divert-webhook block; line {} as stored)", block_lines + 3);
        assert!(message.ends_with(&stored), "{message}");
        // The server snippet too.
        let object = ingress(json!({"nginx.ingress.kubernetes.io/server-snippet": format!("{line}\n")}));
        let message = denied(&object, &nginx_settings(false));
        assert!(message.contains(&format!("server-snippet\"] line 1: {said}")), "{message}");
    }
}

#[test]
fn correct_configuration_that_looks_alike_is_allowed() {
    // Other headers whose names merely contain the wrong ones, header patterns, the right
    // header read and sent, comments: never denied, never warned about.
    let snippet = "add_header X-Okteto-Divert-Key 1;\n\
                   more_clear_headers 'X-Okteto-*' 'okteto-divert-*';\n\
                   proxy_hide_header x-okteto-diverted;\n\
                   # proxy_set_header okteto-divert cindy; ($http_x_okteto_divert)\n\
                   set $route \"$http_okteto_divert_2 $http_xokteto_divert $arg_okteto_divert $cookie_okteto_divert\";\n\
                   add_header baggage \"okteto-divert=cindy\";\n\
                   add_header baggage.okteto-divert cindy;\n\
                   proxy_set_header X-Trace \"$http_baggage\";\n\
                   more_clear_input_headers baggage.okteto-divert;\n";
    let object = ingress(json!({SNIPPET: snippet}));
    for settings in [nginx_settings(false), nginx_settings(true), Settings::default()] {
        assert!(allowed_with_warnings(&object, &settings).is_empty());
    }
    let mutated = mutate(&annotated("cindy", Some(snippet)), &nginx_settings(false));
    assert!(allowed_with_warnings(&mutated, &nginx_settings(false)).is_empty());
}

#[test]
fn warnings_stay_under_120_characters_with_long_names_and_line_numbers() {
    // 45 000 lines (just under the 1 MiB the webhook mutates), long header names and long
    // directive arguments: every warning stays one short sentence.
    let long_name = format!("X-{}", "Very-Long-Header-Name-".repeat(200));
    let mut snippet = String::new();
    for i in 0..45_000 {
        if i % 10_000 == 0 {
            snippet.push_str(&format!("proxy_set_header {long_name} \"{}\";\r\n", "v".repeat(5_000)));
        }
        snippet.push_str("add_header X-Pad 1;\n");
    }
    snippet.push_str("proxy_set_header Baggage.Okteto-Divert cindy;\r\n");
    snippet.push_str(&format!("more_set_input_headers 'baggage: okteto-divert=cindy' '{long_name}: x';"));
    let lines = snippet.split_inclusive('\n').count();
    for settings in [nginx_settings(false), nginx_settings(true)] {
        let object = annotated("cindy", Some(&snippet));
        let warnings = allowed_with_warnings(&object, &settings);
        // The same once the block is in front (lines are counted as the user wrote them).
        assert_eq!(allowed_with_warnings(&mutate(&object, &settings), &settings), warnings);
        let legacy = if settings.legacy_header { "is deprecated" } else { "is off (deprecated)" };
        assert_eq!(
            warnings,
            vec![
                format!(
                    "configuration-snippet line {}: baggage.okteto-divert {legacy}; use baggage: okteto-divert=<namespace>",
                    lines - 1
                ),
                format!(
                    "configuration-snippet line {lines} sets baggage too; delete it (divert-webhook sets it from divert.okteto.com/header)"
                ),
            ]
        );
    }
}

// ---- add, then remove: the user's snippet comes back byte for byte ------------------------

mod round_trip {
    use super::*;
    use proptest::prelude::*;

    /// One line of text (no '\n'): printable ASCII with tabs and stray CRs, any non-control
    /// Unicode, or something close to (but not) a marker line or a directive.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~\t\r]{0,40}",
            "\\PC{0,12}",
            prop::sample::select(vec![
                "# divert-webhook begin x",
                "#divert-webhook begin",
                "# divert-webhook",
                "x # divert-webhook end",
                "# divert-webhook end;",
                "proxy_set_header X-A \"a;b\";",
                "more_set_headers 'X-B: 1';",
                "if ($http_x) {",
                "}",
                "'unclosed",
                "",
                " \t ",
            ])
            .prop_map(str::to_string),
        ]
    }

    /// A user's snippet: lines ending in LF or CRLF, the last one maybe without any ending;
    /// `None`: no snippet annotation.
    fn users_snippet() -> impl Strategy<Value = Option<String>> {
        let ending = || prop::sample::select(vec!["\n", "\r\n"]);
        let last_ending = prop::sample::select(vec!["", "\n", "\r\n"]);
        let snippet =
            (prop::collection::vec((text(), ending()), 0..6), text(), last_ending).prop_map(|(lines, last, end)| {
                let mut snippet: String = lines.into_iter().map(|(text, ending)| text + ending).collect();
                snippet.push_str(&last);
                snippet.push_str(end);
                snippet
            });
        prop::option::weighted(0.9, snippet).prop_filter("no marker lines", |s| {
            s.as_deref().is_none_or(|s| s.split_inclusive('\n').all(|l| l.trim() != BEGIN && l.trim() != END))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        #[test]
        fn any_users_snippet_survives_adding_and_removing_the_header(
            original in users_snippet(),
            legacy in any::<bool>(),
        ) {
            let settings = nginx_settings(legacy);
            let object = annotated("cindy", original.as_deref());

            // Added: the block, then the user's text as it was.
            let with = mutate(&object, &settings);
            let snippet = snippet_of(&with).expect("a snippet").to_string();
            let (user, block) = split_block(&snippet);
            prop_assert_eq!(&snippet, &format!("{block}{}", original.as_deref().unwrap_or("")));
            prop_assert_eq!(user.as_str(), original.as_deref().unwrap_or(""));

            // Idempotent: a second pass has nothing to do.
            let again = mutate_with_patch(&with, &settings).1;
            prop_assert!(again.0.is_empty(), "second pass patched: {:?}", again);

            // Warnings, if any, are short.
            let response = validate(&with, &settings);
            for warning in response.get("warnings").and_then(Value::as_array).into_iter().flatten() {
                prop_assert!(warning.as_str().unwrap().len() < 120, "{}", warning);
            }

            // Removed: the user's snippet byte for byte, or no annotation when it held nothing.
            let mut without = with.clone();
            without["metadata"]["annotations"].as_object_mut().unwrap().remove(HEADER);
            let restored = mutate(&without, &settings);
            let expected = original.as_deref().filter(|s| !s.is_empty());
            prop_assert_eq!(snippet_of(&restored), expected);
            let mut unannotated = object.clone();
            unannotated["metadata"]["annotations"].as_object_mut().unwrap().remove(HEADER);
            if original.as_deref() == Some("") {
                unannotated["metadata"]["annotations"].as_object_mut().unwrap().remove(SNIPPET);
            }
            prop_assert_eq!(restored, unannotated);
        }
    }
}
