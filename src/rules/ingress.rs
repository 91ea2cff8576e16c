//! What happens to a networking.k8s.io/v1 Ingress (SPEC §6, §7).
//!
//! Mutation (nginx driver only, SPEC §1): an Ingress annotated `divert.okteto.com/header: <key>`
//! gets the divert block in its `nginx.ingress.kubernetes.io/configuration-snippet` annotation
//! (see [`super::nginx_snippet`]); without the annotation the block is removed again. The
//! user's own snippet lines are never touched.
//!
//! Validation (every driver): the divert key, the block's marker lines, and the wrong header
//! forms of SPEC §2 in the user's snippet lines.

use serde_json::{Map, Value};

use super::divert::{
    BAGGAGE_HEADER, BAGGAGE_MEMBER, HEADER_ANNOTATION, LEGACY_HEADER, check_divert_key, implied_header_key, object_ref,
    wrong_baggage_pattern, wrong_baggage_value, wrong_header_name,
};
use super::nginx_snippet::{
    self, HeaderMention, HeaderUse, divert_block, header_mentions, replace_blocks, user_directives,
};
use super::{Findings, Subject, fitting_warning, metadata_map_mut};
use crate::settings::{Driver, Settings};

/// ingress-nginx copies this annotation into every `location` of the Ingress.
pub const SNIPPET_ANNOTATION: &str = "nginx.ingress.kubernetes.io/configuration-snippet";
/// ingress-nginx copies this one into the `server` block of the Ingress's hosts.
pub const SERVER_SNIPPET_ANNOTATION: &str = "nginx.ingress.kubernetes.io/server-snippet";
/// Marks a canary Ingress: ingress-nginx adds its backend to the locations of the main Ingress
/// of the same host and path and ignores its other annotations, the configuration snippet
/// included (the main Ingress's snippet runs for the canary's requests too).
pub const CANARY_ANNOTATION: &str = "nginx.ingress.kubernetes.io/canary";

/// Is the Ingress a canary? ingress-nginx reads the value with Go's `strconv.ParseBool`.
fn is_canary(object: &Value) -> bool {
    matches!(annotation(object, CANARY_ANNOTATION), Annotation::Text("1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// An annotation as found: absent, a string, or something else (only possible offline: the
/// apiserver stores annotations as strings).
enum Annotation<'a> {
    Absent,
    Text(&'a str),
    NotText,
}

fn annotation<'a>(object: &'a Value, key: &str) -> Annotation<'a> {
    let map: Option<&Map<String, Value>> =
        object.get("metadata").and_then(|m| m.get("annotations")).and_then(Value::as_object);
    match map.and_then(|m| m.get(key)) {
        None => Annotation::Absent,
        Some(Value::String(s)) => Annotation::Text(s),
        Some(_) => Annotation::NotText,
    }
}

fn snippet_field(annotation: &str, line: usize) -> String {
    format!("metadata.annotations[{annotation:?}] line {line}")
}

pub fn mutate(subject: &Subject<'_>, object: &mut Value, settings: &Settings, findings: &mut Findings) {
    // Under the istio driver VirtualServices carry the header (SPEC §5); the snippet is the
    // nginx driver's tool. Protected namespaces are never mutated.
    if settings.driver != Driver::Nginx || settings.is_protected(subject.namespace) {
        return;
    }
    let key = match annotation(subject.object, HEADER_ANNOTATION) {
        Annotation::Absent => implied_header_key(subject, settings),
        Annotation::Text(key) if check_divert_key(key).is_ok() => Some(key),
        // Validation denies it; a bad key must never reach nginx syntax.
        _ => return,
    };
    let snippet = match annotation(subject.object, SNIPPET_ANNOTATION) {
        Annotation::Absent => None,
        Annotation::Text(s) => Some(s),
        Annotation::NotText => return,
    };
    // A block on a canary would never run: none is written (one an older version wrote goes),
    // and the answer says where the header belongs.
    let key = if is_canary(subject.object) {
        if key.is_some() {
            findings.warn(format!(
                "canary Ingress: ingress-nginx ignores its configuration-snippet; set {HEADER_ANNOTATION} on the main Ingress"
            ));
        }
        None
    } else {
        key
    };
    if key.is_none() && snippet.is_none() {
        return;
    }
    let block = key.map(|key| divert_block(key, settings.legacy_header));
    // Broken marker lines: which lines are ours is unclear, so nothing is touched and
    // validation denies with the line to fix.
    let Ok(updated) = replace_blocks(snippet.unwrap_or(""), block.as_deref()) else { return };
    if snippet == Some(updated.as_str()) {
        return;
    }
    let Some(annotations) = metadata_map_mut(object, "annotations") else { return };
    if updated.is_empty() {
        // The block was all the annotation held.
        annotations.remove(SNIPPET_ANNOTATION);
    } else {
        annotations.insert(SNIPPET_ANNOTATION.into(), Value::String(updated));
    }
}

pub fn validate(subject: &Subject<'_>, settings: &Settings, findings: &mut Findings) {
    let object = object_ref(subject.kind.as_str(), subject.namespace, subject.name);
    let header_field = format!("metadata.annotations[{HEADER_ANNOTATION:?}]");
    let has_header = match annotation(subject.object, HEADER_ANNOTATION) {
        Annotation::Absent => implied_header_key(subject, settings).is_some(),
        Annotation::Text(key) => {
            if let Err(reason) = check_divert_key(key) {
                findings.deny(
                    "invalid-divert-annotation",
                    format!("{object}: {header_field}: {reason}; set it to the developer namespace whose services get the traffic"),
                );
            }
            true
        }
        Annotation::NotText => {
            findings.deny(
                "invalid-divert-annotation",
                format!("{object}: {header_field} is not a string; set it to the developer namespace's name"),
            );
            true
        }
    };

    match annotation(subject.object, SNIPPET_ANNOTATION) {
        Annotation::Absent => {}
        Annotation::Text(snippet) => {
            if let Err(error) = nginx_snippet::check_markers(snippet) {
                let field = snippet_field(SNIPPET_ANNOTATION, error.line());
                findings.deny("malformed-divert-block", format!("{object}: {field}: {}", error.explain()));
            }
            check_header_forms(&object, SNIPPET_ANNOTATION, snippet, has_header, settings, findings);
        }
        Annotation::NotText if has_header => findings.deny(
            "invalid-divert-annotation",
            format!(
                "{object}: metadata.annotations[{SNIPPET_ANNOTATION:?}] is not a string; \
                 write it as a string (divert-webhook adds its block to it)"
            ),
        ),
        Annotation::NotText => {}
    }
    // The server snippet is configuration too (SPEC §2: wrong forms are rejected wherever they
    // appear); the divert block never goes there.
    if let Annotation::Text(snippet) = annotation(subject.object, SERVER_SNIPPET_ANNOTATION) {
        check_header_forms(&object, SERVER_SNIPPET_ANNOTATION, snippet, has_header, settings, findings);
    }
}

/// SPEC §2 wrong forms (denied) wherever the user's own lines of `snippet` name a header, and
/// the legacy header (warned) in the request headers they set; the divert block's lines are the
/// webhook's, not checked.
fn check_header_forms(
    object: &str,
    annotation: &str,
    snippet: &str,
    has_header: bool,
    settings: &Settings,
    findings: &mut Findings,
) {
    // Warnings are short: the annotation's name without its prefix.
    let short = annotation.rsplit('/').next().unwrap_or(annotation);
    for directive in user_directives(snippet) {
        // The line as the user wrote it: the webhook's block in front of it is not counted.
        let line = directive.own_line;
        let field = snippet_field(annotation, line);
        let stored_at = if directive.line == line {
            String::new()
        } else {
            format!(" (line {line} not counting the divert-webhook block; line {} as stored)", directive.line)
        };
        if let Some(problem) = baggage_condition_problem(&directive.words) {
            findings.deny("wrong-header-form", format!("{object}: {field}: {problem}{stored_at}"));
        }
        for header in header_mentions(&directive) {
            if let Some(problem) = wrong_name_problem(&header) {
                findings.deny("wrong-header-form", format!("{object}: {field}: {problem}{stored_at}"));
                continue;
            }
            let is_baggage = header.name.eq_ignore_ascii_case(BAGGAGE_HEADER);
            if let (true, Some(problem)) = (is_baggage, header.value.as_deref().and_then(wrong_baggage_value)) {
                findings.deny("wrong-header-form", format!("{object}: {field}: {problem}{stored_at}"));
                continue;
            }
            // What reaches the upstream is what routes: the warnings are about request headers.
            if header.used != HeaderUse::SetsRequest {
                continue;
            }
            if is_baggage && has_header {
                findings.warn(line_warning(
                    short,
                    line,
                    &format!(" sets {BAGGAGE_HEADER} too; delete it (divert-webhook sets it from {HEADER_ANNOTATION})"),
                    &format!(" sets {BAGGAGE_HEADER} too; delete it ({HEADER_ANNOTATION} sets it)"),
                ));
            } else if header.name.eq_ignore_ascii_case(LEGACY_HEADER) {
                let (state, brief) = if settings.legacy_header {
                    ("is deprecated", "is deprecated")
                } else {
                    ("is off (deprecated)", "is off")
                };
                findings.warn(line_warning(
                    short,
                    line,
                    &format!(": {LEGACY_HEADER} {state}; use {BAGGAGE_HEADER}: {BAGGAGE_MEMBER}=<namespace>"),
                    &format!(": {LEGACY_HEADER} {brief}; use {BAGGAGE_HEADER}: {BAGGAGE_MEMBER}=<ns>"),
                ));
            }
        }
    }
}

/// What is wrong and the fix when `header` is one of the wrong header names of SPEC §2 (a
/// directive that sets, clears, hides, passes or reads it is the same misunderstanding: divert's
/// key never travels in a header of that name). Correct configuration never names them.
fn wrong_name_problem(header: &HeaderMention) -> Option<String> {
    let problem = wrong_header_name(&header.name)?;
    let HeaderMention { name, by, used, .. } = header;
    let key = format!("the key travels in {BAGGAGE_HEADER} as the member {BAGGAGE_MEMBER}=<namespace>");
    Some(match used {
        // The same words as for a VirtualService's header operations.
        HeaderUse::SetsRequest => format!(
            "{problem}; or delete the line and set {HEADER_ANNOTATION}: <namespace> to have divert-webhook add it"
        ),
        HeaderUse::Reads => format!(
            "{by} reads header {name:?}, which divert never sends ({key}); read ${BAGGAGE_HEADER_VARIABLE} instead"
        ),
        HeaderUse::ClearsRequest => format!(
            "{by} clears header {name:?}, which divert never reads ({key}); delete it from the line \
             (with {HEADER_ANNOTATION} the webhook's block replaces a client's {BAGGAGE_MEMBER} member)"
        ),
        HeaderUse::SetsResponse | HeaderUse::ClearsResponse | HeaderUse::Hides | HeaderUse::Passes => format!(
            "{by} {} header {name:?}, which divert never uses ({key}, on requests only); delete it from the line",
            used.verb()
        ),
    })
}

/// The nginx variable holding the client's `baggage` header.
const BAGGAGE_HEADER_VARIABLE: &str = "http_baggage";

/// An `if` that compares the client's baggage (`$http_baggage`) with a wrong form of the divert
/// member (SPEC §2): `if ($http_baggage = "okteto-divert:cindy")` or, as a regex,
/// `if ($http_baggage ~ "okteto-divert[:]cindy")`. What is wrong and the fix.
fn baggage_condition_problem(words: &[String]) -> Option<String> {
    let (command, condition) = words.split_first()?;
    if command != "if" {
        return None;
    }
    // nginx reads `(` and `)` off the first and last word; they may also stand alone.
    let mut condition: Vec<&str> = condition.iter().map(String::as_str).collect();
    let first = condition.first()?.strip_prefix('(')?;
    condition[0] = first;
    let last = condition.len() - 1;
    condition[last] = condition[last].strip_suffix(')')?;
    condition.retain(|w| !w.is_empty());
    let [variable, operator, operand] = condition[..] else { return None };
    let variable = variable.to_ascii_lowercase();
    if variable != format!("${BAGGAGE_HEADER_VARIABLE}") && variable != format!("${{{BAGGAGE_HEADER_VARIABLE}}}") {
        return None;
    }
    match operator {
        "=" | "!=" => wrong_baggage_value(operand),
        "~" | "~*" | "!~" | "!~*" => wrong_baggage_pattern(operand),
        _ => None,
    }
}

/// `"{short} line {line}{text}"`, or with `brief` in place of `text` when the line number is
/// too long for that to stay under [`super::MAX_WARNING_CHARS`] (only for absurdly long snippets: a
/// 3 MiB AdmissionReview holds at most 7-digit line numbers). Past that, [`Findings::warn`]
/// cuts the sentence, so no input can make a warning too long.
fn line_warning(short: &str, line: usize, text: &str, brief: &str) -> String {
    fitting_warning(format!("{short} line {line}{text}"), format!("{short} line {line}{brief}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::cluster::ClusterView;
    use crate::rules::MAX_WARNING_CHARS;

    use super::*;
    use crate::rules::{self, Kind};
    use crate::selector::Selector;

    fn nginx(legacy_header: bool) -> Settings {
        let mut settings = Settings::new(Driver::Nginx, Selector::everything(), None, &[]);
        settings.legacy_header = legacy_header;
        settings
    }

    fn ingress(annotations: Value) -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "cindy", "annotations": annotations},
            "spec": {"rules": [{"host": "web.example.com"}]}
        })
    }

    fn subject(object: &Value) -> Subject<'_> {
        Subject { kind: Kind::Ingress, namespace: "cindy", name: "web", object, cluster: ClusterView::none() }
    }

    fn mutated(object: &Value, settings: &Settings) -> Value {
        let mut copy = object.clone();
        rules::mutate(&subject(object), &mut copy, settings);
        copy
    }

    fn snippet_of(object: &Value) -> Option<&str> {
        object["metadata"]["annotations"].get(SNIPPET_ANNOTATION).and_then(Value::as_str)
    }

    #[test]
    fn header_annotation_adds_the_block_under_the_nginx_driver_only() {
        let object = ingress(json!({HEADER_ANNOTATION: "cindy"}));
        assert_eq!(snippet_of(&mutated(&object, &nginx(false))), Some(divert_block("cindy", false).as_str()));
        assert_eq!(mutated(&object, &Settings::default()), object, "istio driver leaves Ingresses alone");
        let mut protected = nginx(false);
        protected.protected_namespaces.insert("cindy".into());
        assert_eq!(mutated(&object, &protected), object);
    }

    #[test]
    fn a_canary_ingress_gets_no_block_and_a_warning() {
        let warning = "canary Ingress: ingress-nginx ignores its configuration-snippet; set divert.okteto.com/header on the main Ingress";
        let old_block = divert_block("bob", false);
        for canary in ["true", "True", "1", "t"] {
            let object = ingress(json!({HEADER_ANNOTATION: "cindy", CANARY_ANNOTATION: canary}));
            let mut copy = object.clone();
            assert_eq!(rules::mutate(&subject(&object), &mut copy, &nginx(false)), [warning]);
            assert_eq!(copy, object, "{canary}");
            // A block an older version wrote is taken out; the user's lines stay.
            let object = ingress(
                json!({HEADER_ANNOTATION: "cindy", CANARY_ANNOTATION: canary, SNIPPET_ANNOTATION: format!("{old_block}a b;")}),
            );
            assert_eq!(snippet_of(&mutated(&object, &nginx(false))), Some("a b;"));
        }
        for not_canary in ["false", "yes", "", "on"] {
            let object = ingress(json!({HEADER_ANNOTATION: "cindy", CANARY_ANNOTATION: not_canary}));
            let mut copy = object.clone();
            assert!(rules::mutate(&subject(&object), &mut copy, &nginx(false)).is_empty());
            assert_eq!(snippet_of(&copy), Some(divert_block("cindy", false).as_str()), "{not_canary}");
        }
        assert!(warning.chars().count() < MAX_WARNING_CHARS);
    }

    #[test]
    fn invalid_keys_never_reach_the_snippet() {
        for bad in [json!("cindy; return 200"), json!("Cindy"), json!(7), json!(null)] {
            let object = ingress(json!({HEADER_ANNOTATION: bad, SNIPPET_ANNOTATION: "a b;\n"}));
            assert_eq!(mutated(&object, &nginx(false)), object, "{bad}");
            let findings = rules::validate(&subject(&object), &nginx(false));
            assert_eq!(findings.denials.len(), 1, "{bad}: {findings:?}");
            assert_eq!(findings.denials[0].reason, "invalid-divert-annotation");
            assert!(findings.denials[0].message.contains(r#"metadata.annotations["divert.okteto.com/header"]"#));
        }
    }

    #[test]
    fn odd_shapes_are_answered_without_panicking() {
        for annotations in [json!("a string"), json!([1, 2]), json!(null), json!({SNIPPET_ANNOTATION: {"x": 1}})] {
            let object = ingress(annotations);
            assert_eq!(mutated(&object, &nginx(true)), object);
            let _ = rules::validate(&subject(&object), &nginx(true));
        }
        let object = json!({"kind": "Ingress", "metadata": "nope"});
        assert_eq!(mutated(&object, &nginx(false)), object);
        let object = ingress(json!({HEADER_ANNOTATION: "cindy", SNIPPET_ANNOTATION: 3}));
        assert_eq!(mutated(&object, &nginx(false)), object);
        let findings = rules::validate(&subject(&object), &nginx(false));
        assert!(findings.denials[0].message.contains("configuration-snippet\"] is not a string"), "{findings:?}");
    }

    #[test]
    fn warnings_stay_short_for_any_line_number() {
        // Every warning this module writes, at the longest line numbers there are.
        let legacy = |on| {
            let settings = nginx(on);
            let mut findings = Findings::default();
            let snippet = format!("{}proxy_set_header Baggage.Okteto-Divert x;\n", "\n".repeat(99));
            check_header_forms("Ingress cindy/web", SNIPPET_ANNOTATION, &snippet, true, &settings, &mut findings);
            let snippet = format!("{}proxy_set_header BAGGAGE \"okteto-divert=x\";\n", "\n".repeat(1_000_000));
            check_header_forms("Ingress cindy/web", SNIPPET_ANNOTATION, &snippet, true, &settings, &mut findings);
            findings.warnings
        };
        let (off, on) = (legacy(false), legacy(true));
        assert_eq!(
            off,
            [
                "configuration-snippet line 100: baggage.okteto-divert is off (deprecated); use baggage: okteto-divert=<namespace>",
                "configuration-snippet line 1000001 sets baggage too; delete it (divert-webhook sets it from divert.okteto.com/header)",
            ]
        );
        assert_eq!(
            on[0],
            "configuration-snippet line 100: baggage.okteto-divert is deprecated; use baggage: okteto-divert=<namespace>"
        );
        for line in [1, 99, 100, 9_999_999, 10_000_000, 123_456_789_012, usize::MAX] {
            for annotation in [SNIPPET_ANNOTATION, SERVER_SNIPPET_ANNOTATION] {
                let short = annotation.rsplit('/').next().unwrap();
                for (text, brief) in [
                    (
                        " sets baggage too; delete it (divert-webhook sets it from divert.okteto.com/header)",
                        " sets baggage too; delete it (divert.okteto.com/header sets it)",
                    ),
                    (
                        ": baggage.okteto-divert is off (deprecated); use baggage: okteto-divert=<namespace>",
                        ": baggage.okteto-divert is off; use baggage: okteto-divert=<ns>",
                    ),
                    (
                        ": baggage.okteto-divert is deprecated; use baggage: okteto-divert=<namespace>",
                        ": baggage.okteto-divert is deprecated; use baggage: okteto-divert=<ns>",
                    ),
                ] {
                    let warning = line_warning(short, line, text, brief);
                    assert!(warning.len() < MAX_WARNING_CHARS, "{} chars: {warning}", warning.len());
                    // The full sentence whenever it fits, always up to 7-digit line numbers (a
                    // 3 MiB review); the brief one beyond; never cut.
                    let full = format!("{short} line {line}{text}");
                    assert!(line >= 10_000_000 || full.len() < MAX_WARNING_CHARS, "{full}");
                    let expected =
                        if full.len() < MAX_WARNING_CHARS { full } else { format!("{short} line {line}{brief}") };
                    assert_eq!(warning, expected);
                }
            }
        }
        // The last resort: a sentence too long in any form is cut where warnings are collected.
        let mut findings = Findings::default();
        findings.warn(line_warning(&"é".repeat(100), usize::MAX, "x", "y"));
        let cut = &findings.warnings[0];
        assert!(cut.chars().count() < MAX_WARNING_CHARS && cut.ends_with('…'), "{cut}");
    }

    #[test]
    fn ifs_comparing_the_clients_baggage_with_a_wrong_form_are_found() {
        let words = |s: &str| user_directives(s).remove(0).words;
        for wrong in [
            "if ($http_baggage ~ \"okteto-divert[:]cindy\") { return 403; }",
            "if ($HTTP_BAGGAGE ~* okteto-divert\\s*:cindy) { return 403; }",
            "if ( ${http_baggage} = \"okteto-divert :cindy\" ) { return 403; }",
            "if ($http_baggage !~ \"baggage\\.okteto-divert=\") { return 403; }",
        ] {
            assert!(baggage_condition_problem(&words(wrong)).is_some(), "{wrong}");
        }
        for right in [
            "if ($http_baggage ~ \"okteto-divert=cindy\") { return 403; }",
            "if ($http_baggage ~ \"[^ \\t]\") { set $x 1; }",
            "if ($http_x ~ \"okteto-divert:cindy\") { return 403; }",
            "if ($http_baggage) { return 403; }",
            "if (-f $http_baggage) { return 403; }",
            "set $http_baggage \"okteto-divert:cindy\";",
            "if",
        ] {
            assert!(baggage_condition_problem(&words(right)).is_none(), "{right}");
        }
    }

    #[test]
    fn broken_markers_are_left_alone_and_denied() {
        let snippet = "add_header X-User 1;\n# divert-webhook begin\nproxy_set_header baggage x;\n";
        let object = ingress(json!({HEADER_ANNOTATION: "cindy", SNIPPET_ANNOTATION: snippet}));
        assert_eq!(mutated(&object, &nginx(false)), object);
        let findings = rules::validate(&subject(&object), &nginx(false));
        assert_eq!(findings.denials.len(), 1, "{findings:?}");
        assert_eq!(findings.denials[0].reason, "malformed-divert-block");
        let message = &findings.denials[0].message;
        assert!(message.starts_with("Ingress cindy/web: "), "{message}");
        assert!(message.contains(r#"["nginx.ingress.kubernetes.io/configuration-snippet"] line 2"#), "{message}");
        assert!(message.contains("restore the missing marker line"), "{message}");
    }
}
