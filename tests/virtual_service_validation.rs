//! SPEC §7 for VirtualServices, through the real review path: AdmissionReviews shaped as the
//! apiserver sends them to /validate, answers read as the apiserver reads them.
//!
//! Each rule has a denied case (the message names the object, the field and the fix, on one
//! line) and the matching correct form, which is allowed.

mod support;

use divert_webhook::review::{Endpoint, Outcome};
use divert_webhook::settings::Settings;
use serde_json::{Value, json};
use support::{Answer, ask, corpus_objects, review_of};

const OBJECT: &str = "VirtualService staging/api";
const HASH: &str = "divert.okteto.com/2615052508acbfaddeba0eeded4131631ea31a02";
/// What divert-webhook generates as P("cindy") (SPEC §4.3), written out by hand.
const P_CINDY: &str = r"(?:.*,)?[ \t]*okteto-divert[ \t]*=[ \t]*cindy[ \t]*(?:[;,].*)?";

fn legacy_on() -> Settings {
    Settings { legacy_header: true, ..Settings::default() }
}

/// VirtualService `staging/api` with these annotations and http routes.
fn virtual_service(annotations: Value, http: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "api", "namespace": "staging", "annotations": annotations},
        "spec": {"hosts": ["api"], "http": http}
    })
}

/// One http route forwarding to `api`, with `extra` fields merged in.
fn route(extra: Value) -> Value {
    let mut route = json!({"name": "main", "route": [{"destination": {"host": "api"}}]});
    for (k, v) in extra.as_object().expect("route fields") {
        route[k] = v.clone();
    }
    route
}

/// An http route without name and match: it takes every request left.
fn unnamed_catch_all() -> Value {
    json!({"route": [{"destination": {"host": "api"}}]})
}

fn validate(object: &Value, settings: &Settings) -> Answer {
    ask(Endpoint::Validate, &review_of(object), settings)
}

/// Asserts `object` is allowed (with `settings`) and returns the answer.
fn allowed(object: &Value, settings: &Settings) -> Answer {
    let answer = validate(object, settings);
    assert_eq!(answer.response["allowed"], true, "expected allowed: {}", answer.response);
    assert_eq!(answer.outcome, Outcome::Allowed);
    answer
}

/// Asserts `object` is denied with one message that names the object, `field` and `fix`.
fn denied(object: &Value, settings: &Settings, field: &str, fix: &str) -> String {
    let answer = validate(object, settings);
    assert_eq!(answer.response["allowed"], false, "expected a denial: {}", answer.response);
    assert_eq!(answer.outcome, Outcome::Denied);
    assert_eq!(answer.response["status"]["code"], 403);
    let message = answer.response["status"]["message"].as_str().expect("denial message").to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(message.starts_with(&format!("{OBJECT}: {field}: ")), "object and field {field:?}: {message}");
    assert!(message.contains(fix), "fix {fix:?}: {message}");
    message
}

// --- divert annotations ---------------------------------------------------------------------

#[test]
fn divert_entries_that_cannot_be_used_are_denied() {
    let field = format!("metadata.annotations[\"{HASH}\"]");
    let cases = [
        (r#"{"namespace":"cindy","routes":["main"]"#, "not valid JSON", r#"write it as {"namespace":"#),
        (r#"{"namespace":"Cindy"}"#, "\"Cindy\" is not a namespace name", "DNS-1123 label"),
        (r#"{"namespace":"cindy_2"}"#, "\"cindy_2\" is not a namespace name", "DNS-1123 label"),
        (r#"{"namespace":"staging"}"#, "own namespace", "divert into a developer namespace, not into itself"),
        (r#"{"namespace":"cindy","routes":["main",7]}"#, "\"routes\"[1] is 7", "list http route names as strings"),
        (r#"{"routes":["main"]}"#, "\"namespace\" is missing", r#"write it as {"namespace":"#),
        (r#"{"namespace":7}"#, "\"namespace\" is not a string", r#"write it as {"namespace":"#),
        (r#"{"namespace":"cindy","routes":"main"}"#, "\"routes\" is not a list", r#"write it as {"namespace":"#),
        (r#"["cindy"]"#, "not a JSON object", r#"write it as {"namespace":"#),
    ];
    for (value, what, fix) in cases {
        let vs = virtual_service(json!({ HASH: value }), json!([route(json!({}))]));
        let message = denied(&vs, &Settings::default(), &field, fix);
        assert!(message.contains(what), "{value}: {message}");
    }
    // Only offline (the apiserver stores annotations as strings), but answered the same way.
    let vs = virtual_service(json!({ HASH: 5 }), json!([route(json!({}))]));
    let message = denied(&vs, &Settings::default(), &field, r#"write it as {"namespace":"#);
    assert!(message.contains("the value is not a string"), "{message}");
    // The correct forms, including the legacy key form and "every route".
    for value in [
        r#"{"namespace":"cindy","routes":["main"]}"#,
        r#"{"namespace":"cindy"}"#,
        r#"{"namespace":"dev-2","routes":[]}"#,
    ] {
        let vs =
            virtual_service(json!({ HASH: value, "divert.okteto.com/cindy-movies": value }), json!([route(json!({}))]));
        let answer = allowed(&vs, &Settings::default());
        assert!(answer.warnings().is_empty(), "{:?}", answer.warnings());
    }
}

#[test]
fn every_bad_entry_is_named_in_one_answer() {
    let vs = virtual_service(
        json!({ HASH: "{", "divert.okteto.com/zed-app": r#"{"namespace":"staging"}"# }),
        json!([route(json!({}))]),
    );
    let message = denied(&vs, &Settings::default(), &format!("metadata.annotations[\"{HASH}\"]"), "not valid JSON");
    assert!(message.contains("; VirtualService staging/api: metadata.annotations[\"divert.okteto.com/zed-app\"]: "));
}

#[test]
fn header_annotation_must_name_a_namespace() {
    let field = "metadata.annotations[\"divert.okteto.com/header\"]";
    for bad in ["Cindy", "cindy.dev", "", "-cindy"] {
        let vs = virtual_service(json!({"divert.okteto.com/header": bad}), json!([route(json!({}))]));
        let message =
            denied(&vs, &Settings::default(), field, "set it to the name of the developer namespace (the divert key)");
        assert!(message.contains("DNS-1123 label"), "{message}");
    }
    let vs = virtual_service(json!({"divert.okteto.com/header": "cindy"}), json!([route(json!({}))]));
    allowed(&vs, &Settings::default());
}

#[test]
fn annotation_that_looks_like_an_entry_but_is_ignored_gets_a_warning() {
    // 39 hex digits and no '-': not an entry key, so mutation would silently skip it.
    let typo = "divert.okteto.com/2615052508acbfaddeba0eeded4131631ea31a0";
    let vs = virtual_service(json!({ typo: r#"{"namespace":"cindy"}"# }), json!([route(json!({}))]));
    let answer = allowed(&vs, &Settings::default());
    assert_eq!(answer.warnings().len(), 1);
    assert!(answer.warnings()[0].contains(typo), "{:?}", answer.warnings());
    // other divert.okteto.com/ annotations are not flagged
    let vs = virtual_service(json!({"divert.okteto.com/namespace": "staging"}), json!([route(json!({}))]));
    assert!(allowed(&vs, &Settings::default()).warnings().is_empty());
}

#[test]
fn an_object_without_a_name_yet_is_named_by_its_generate_name() {
    let mut vs = virtual_service(json!({"divert.okteto.com/header": "Cindy"}), json!([route(json!({}))]));
    let metadata = vs["metadata"].as_object_mut().unwrap();
    metadata.remove("name");
    metadata.insert("generateName".into(), json!("api-"));
    let answer = validate(&vs, &Settings::default());
    let message = answer.response["status"]["message"].as_str().unwrap();
    assert!(message.starts_with("VirtualService staging/api-*: metadata.annotations["), "{message}");
}

// --- wrong header forms (SPEC §2) -------------------------------------------------------------

const USE_BAGGAGE: &str = "use the baggage header with the member okteto-divert=<namespace>";
const MEMBER_FORM: &str = "okteto-divert=<namespace>";

#[test]
fn wrong_header_forms_are_denied_wherever_they_appear() {
    let m = |headers: Value| json!({"match": [{"uri": {"prefix": "/"}}, {"headers": headers}]});
    let cases = [
        (m(json!({"okteto-divert": {"exact": "cindy"}})), "spec.http[0].match[1].headers.okteto-divert", USE_BAGGAGE),
        (
            m(json!({"x-okteto-divert": {"exact": "cindy"}})),
            "spec.http[0].match[1].headers.x-okteto-divert",
            USE_BAGGAGE,
        ),
        (m(json!({"X-Okteto-Divert": {"prefix": "c"}})), "spec.http[0].match[1].headers.X-Okteto-Divert", USE_BAGGAGE),
        (
            m(json!({"baggage": {"exact": "baggage.okteto-divert=cindy"}})),
            "spec.http[0].match[1].headers.baggage.exact",
            MEMBER_FORM,
        ),
        (
            m(json!({"Baggage": {"regex": ".*okteto-divert:cindy.*"}})),
            "spec.http[0].match[1].headers.Baggage.regex",
            MEMBER_FORM,
        ),
        (
            m(json!({"baggage": {"regex": ".*baggage\\.okteto-divert=cindy.*"}})),
            "spec.http[0].match[1].headers.baggage.regex",
            MEMBER_FORM,
        ),
        (
            m(json!({"baggage": {"regex": ".*okteto-divert\\s*:\\s*cindy"}})),
            "spec.http[0].match[1].headers.baggage.regex",
            MEMBER_FORM,
        ),
        (
            json!({"match": [{"withoutHeaders": {"okteto-divert": {"exact": "cindy"}}}]}),
            "spec.http[0].match[0].withoutHeaders.okteto-divert",
            USE_BAGGAGE,
        ),
        (
            json!({"match": [{"withoutHeaders": {"baggage": {"prefix": "okteto-divert:"}}}]}),
            "spec.http[0].match[0].withoutHeaders.baggage.prefix",
            MEMBER_FORM,
        ),
        (
            json!({"headers": {"request": {"set": {"okteto-divert": "cindy"}}}}),
            "spec.http[0].headers.request.set.okteto-divert",
            USE_BAGGAGE,
        ),
        (
            json!({"headers": {"request": {"add": {"baggage": "a=1,okteto-divert:cindy"}}}}),
            "spec.http[0].headers.request.add.baggage",
            MEMBER_FORM,
        ),
        (
            json!({"headers": {"request": {"set": {"baggage": "baggage.okteto-divert=cindy"}}}}),
            "spec.http[0].headers.request.set.baggage",
            MEMBER_FORM,
        ),
        (
            json!({"headers": {"request": {"remove": ["x-request-id", "X-OKTETO-DIVERT"]}}}),
            "spec.http[0].headers.request.remove[1]",
            USE_BAGGAGE,
        ),
        (
            json!({"headers": {"response": {"add": {"x-okteto-divert": "cindy"}}}}),
            "spec.http[0].headers.response.add.x-okteto-divert",
            USE_BAGGAGE,
        ),
        (
            json!({"route": [
                {"destination": {"host": "api"}, "weight": 90},
                {"destination": {"host": "api-v2"}, "weight": 10, "headers": {"request": {"add": {"okteto-divert": "cindy"}}}}
            ]}),
            "spec.http[0].route[1].headers.request.add.okteto-divert",
            USE_BAGGAGE,
        ),
        (
            json!({"route": [{"destination": {"host": "api"}, "headers": {"response": {"remove": ["okteto-divert"]}}}]}),
            "spec.http[0].route[0].headers.response.remove[0]",
            USE_BAGGAGE,
        ),
    ];
    for (fields, field, fix) in cases {
        let vs = virtual_service(json!({}), json!([route(fields)]));
        denied(&vs, &Settings::default(), field, fix);
    }
}

#[test]
fn correct_header_forms_pass() {
    let http = json!([
        route(json!({
            "name": "okteto-divert-cindy-main",
            "match": [{"uri": {"prefix": "/"}, "headers": {"baggage": {"regex": P_CINDY}}}],
            "headers": {"request": {"add": {"baggage": "okteto-divert=cindy"}}},
        })),
        route(json!({
            "match": [{"uri": {"prefix": "/"}, "withoutHeaders": {"baggage": {"exact": "okteto-divert=cindy"}}}],
            "headers": {
                "request": {"set": {"x-request-id": "1", "baggage": "a=1,okteto-divert=cindy;p=2"}, "remove": ["x-debug"]},
                "response": {"add": {"x-served-by": "staging"}}
            },
            "route": [{"destination": {"host": "api"}, "headers": {"request": {"add": {"baggage": "okteto-divert = cindy"}}}}],
        })),
    ]);
    let vs = virtual_service(json!({}), http);
    let answer = allowed(&vs, &Settings::default());
    assert!(answer.warnings().is_empty(), "{:?}", answer.warnings());
}

// --- regexes ----------------------------------------------------------------------------------

const RE2: &str = "rewrite it in RE2 syntax: https://github.com/google/re2/wiki/Syntax";

#[test]
fn regexes_re2_rejects_are_denied() {
    // The reasons are RE2's own words (the linked RE2 decides), with a hint where they leave
    // the cause unsaid.
    let cases = [
        (
            json!({"headers": {"x-user": {"regex": "cindy(?=-dev)"}}}),
            "headers.x-user.regex",
            r#"invalid perl operator "(?="; look-ahead is not supported"#,
        ),
        (
            json!({"uri": {"regex": r"/(a|b)/\1"}}),
            "uri.regex",
            r#"invalid escape sequence "\\1"; back-references are not supported"#,
        ),
        (json!({"uri": {"regex": "/api/(v1"}}), "uri.regex", r#"missing ) "/api/(v1""#),
        (
            json!({"withoutHeaders": {"x-user": {"regex": "(?<!bot)user"}}}),
            "withoutHeaders.x-user.regex",
            "look-behind is not supported",
        ),
        (
            json!({"queryParams": {"id": {"regex": "[0-9]{1001}"}}}),
            "queryParams.id.regex",
            r#"invalid repetition size "{1001}"; counts go up to 1000"#,
        ),
        (
            json!({"authority": {"regex": r"\p{Alphabetic}+\.example"}}),
            "authority.regex",
            r#"invalid character class range "\\p{Alphabetic}""#,
        ),
        (json!({"method": {"regex": "(?x) GET | POST"}}), "method.regex", r#"invalid perl operator "(?x""#),
    ];
    for (condition, field, why) in cases {
        let vs = virtual_service(json!({}), json!([route(json!({"match": [{"uri": {"prefix": "/"}}, condition]}))]));
        let message = denied(&vs, &Settings::default(), &format!("spec.http[0].match[1].{field}"), RE2);
        assert!(message.contains(why) && message.contains("is not valid RE2"), "{message}");
    }
    let rewrite = route(json!({"rewrite": {"uriRegexRewrite": {"match": "^/v1/(.*)(?<=x)$", "rewrite": "/\\1"}}}));
    denied(
        &virtual_service(json!({}), json!([rewrite])),
        &Settings::default(),
        "spec.http[0].rewrite.uriRegexRewrite.match",
        RE2,
    );
    let cors = route(json!({"corsPolicy": {"allowOrigins": [{"exact": "https://a"}, {"regex": "https://(?=x)"}]}}));
    denied(
        &virtual_service(json!({}), json!([cors])),
        &Settings::default(),
        "spec.http[0].corsPolicy.allowOrigins[1].regex",
        RE2,
    );
}

#[test]
fn regex_longer_than_1024_is_denied() {
    let long = format!("/{}", "a".repeat(1024));
    let vs = virtual_service(json!({}), json!([route(json!({"match": [{"uri": {"regex": long}}]}))]));
    let message = denied(
        &vs,
        &Settings::default(),
        "spec.http[0].match[0].uri.regex",
        "the regex is 1025 bytes long, Istio accepts at most 1024; shorten it",
    );
    assert!(message.len() < 400, "the regex is not quoted whole: {message}");
    let exactly = "a".repeat(1024);
    allowed(
        &virtual_service(json!({}), json!([route(json!({"match": [{"uri": {"regex": exactly}}]}))])),
        &Settings::default(),
    );
}

#[test]
fn valid_re2_regexes_pass() {
    let http = json!([route(json!({
        "match": [{
            "uri": {"regex": r"/api/v[0-9]+/(users|orders)/\d+"},
            "authority": {"regex": r"^[a-z0-9-]+\.example\.com(:\d+)?$"},
            "headers": {
                "user-agent": {"regex": "(?i).*(chrome|firefox).*"},
                "baggage": {"regex": P_CINDY},
                "x-name": {"regex": r"\p{Greek}+|\QC++\E|(?P<v>v\d{1,3})"},
            },
            "queryParams": {"id": {"regex": "[0-9]{1,1000}"}},
        }],
        "corsPolicy": {"allowOrigins": [{"regex": r"https://.*\.example\.com"}]},
        "rewrite": {"uriRegexRewrite": {"match": "^/v1/(.*)$", "rewrite": r"/v2/\1"}},
    }))]);
    allowed(&virtual_service(json!({}), http), &Settings::default());
}

// --- legacy header ----------------------------------------------------------------------------

#[test]
fn legacy_header_is_allowed_with_a_warning_only_while_the_flag_is_off() {
    let http = json!([route(json!({
        "match": [
            {"headers": {"baggage.okteto-divert": {"exact": "cindy"}}},
            {"headers": {"baggage": {"regex": P_CINDY}}},
        ],
        "headers": {"request": {"set": {"baggage.okteto-divert": "cindy"}}},
    }))]);
    let vs = virtual_service(json!({}), http);
    let off = allowed(&vs, &Settings::default());
    assert_eq!(
        off.warnings(),
        vec![
            "spec.http[0].match[0].headers.baggage.okteto-divert (+1 more): legacy header, deprecated and off here; \
             use baggage"
        ]
    );
    // With the flag on the header is accepted, and still deprecated (SPEC §2).
    let on = allowed(&vs, &legacy_on());
    assert_eq!(
        on.warnings(),
        vec!["spec.http[0].match[0].headers.baggage.okteto-divert (+1 more): legacy header, deprecated; use baggage"]
    );
}

#[test]
fn the_legacy_header_the_webhook_writes_itself_is_not_warned_about() {
    // §5 with --legacy-header: every route sets the legacy header to the annotation's key.
    let http = json!([route(json!({"headers": {"request": {
        "add": {"baggage": "okteto-divert=cindy"},
        "set": {"baggage.okteto-divert": "cindy"},
    }}}))]);
    let vs = virtual_service(json!({"divert.okteto.com/header": "cindy"}), http.clone());
    assert!(allowed(&vs, &legacy_on()).warnings().is_empty());
    // Without the annotation, or with another value, that line is the user's own.
    let vs = virtual_service(json!({}), http);
    assert_eq!(allowed(&vs, &legacy_on()).warnings().len(), 1);
}

// --- generated routes -------------------------------------------------------------------------

/// A shared VirtualService as §4 mutation leaves it (with `--legacy-header`): clone with the
/// baggage regex, its legacy duplicate, the original after it.
fn diverted() -> Value {
    let clone_route = json!([{"destination": {"host": "api.cindy.svc.cluster.local"}}]);
    virtual_service(
        json!({ HASH: r#"{"namespace":"cindy","routes":["main"]}"# }),
        json!([
            {
                "name": "okteto-divert-cindy-main",
                "match": [
                    {"uri": {"prefix": "/v1"}, "headers": {"baggage": {"regex": P_CINDY}}},
                    {"uri": {"prefix": "/v1"}, "headers": {"baggage.okteto-divert": {"exact": "cindy"}}},
                ],
                "route": clone_route,
            },
            route(json!({"match": [{"uri": {"prefix": "/v1"}}]})),
        ]),
    )
}

#[test]
fn generated_routes_pass() {
    let answer = allowed(&diverted(), &legacy_on());
    assert!(answer.warnings().is_empty(), "{:?}", answer.warnings());
}

#[test]
fn a_route_named_okteto_divert_by_hand_is_not_a_validation_error() {
    // Mutation removes and regenerates every okteto-divert-* route (SPEC §4.6) and warns;
    // validation has nothing to add.
    let vs = virtual_service(json!({}), json!([route(json!({"name": "okteto-divert-mine"}))]));
    assert!(allowed(&vs, &Settings::default()).warnings().is_empty());
}

#[test]
fn what_mutation_generates_passes_validation() {
    // Through the real pipeline, as the apiserver runs it: mutate, apply the patch, validate.
    for settings in [Settings::default(), legacy_on()] {
        let original = virtual_service(
            json!({ HASH: r#"{"namespace":"cindy"}"#, "divert.okteto.com/zed-app": r#"{"namespace":"zed"}"# }),
            json!([
                route(json!({"match": [{"uri": {"prefix": "/v1"}}, {"headers": {"x-user": {"regex": "a.*"}}}]})),
                unnamed_catch_all(),
            ]),
        );
        let mutated = ask(Endpoint::Mutate, &review_of(&original), &settings).apply_to(&original);
        let generated = mutated["spec"]["http"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["name"].as_str().is_some_and(|n| n.starts_with("okteto-divert-")))
            .count();
        assert_eq!(generated, 4, "two entries x two routes cloned: {mutated}");
        allowed(&mutated, &settings);
    }
}

#[test]
fn fields_of_the_wrong_type_get_an_answer_not_a_panic() {
    // The apiserver checks the CRD schema; offline `check` does not. Either way: an answer.
    for http in [
        json!("not a list"),
        json!([1, null, {"match": 5}, {"match": [7, {"headers": [1]}, {"uri": "x"}, {"headers": {"baggage": 3}}]}]),
        json!([{"headers": {"request": [1], "response": {"set": 2, "remove": [3, null]}}, "route": {"a": 1}}]),
        json!([{"route": [5, {"headers": {"request": {"add": {"baggage": 7}}}}], "corsPolicy": {"allowOrigins": 1}}]),
        json!([{"match": [{"uri": {"regex": 5}}], "rewrite": {"uriRegexRewrite": "x"}}]),
    ] {
        allowed(&virtual_service(json!({}), http), &Settings::default());
    }
    let vs = virtual_service(json!({"divert.okteto.com/header": 5}), json!([]));
    denied(&vs, &Settings::default(), "metadata.annotations[\"divert.okteto.com/header\"]", "not a string");
}

#[test]
fn every_corpus_virtual_service_mutated_for_divert_passes_validation() {
    // Each corpus VirtualService, diverted for cindy (§4) and, separately, made a developer
    // VirtualService (§5), then validated as the apiserver would: no denial, ever.
    let mut cloned = 0;
    for settings in [Settings::default(), legacy_on()] {
        for (file, object) in corpus_objects("virtualservices", "VirtualService") {
            for (annotation, value) in [(HASH, r#"{"namespace":"cindy"}"#), ("divert.okteto.com/header", "cindy")] {
                let mut annotated = object.clone();
                let metadata = annotated["metadata"].as_object_mut().expect("metadata");
                let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
                annotations[annotation] = json!(value);
                let mutated = ask(Endpoint::Mutate, &review_of(&annotated), &settings).apply_to(&annotated);
                let http = mutated["spec"]["http"].as_array().map(Vec::as_slice).unwrap_or_default();
                cloned +=
                    http.iter().filter(|r| r["name"].as_str().is_some_and(|n| n.starts_with("okteto-divert-"))).count();
                let answer = validate(&mutated, &settings);
                assert_eq!(answer.response["allowed"], true, "{file} with {annotation}: {}", answer.response);
            }
        }
    }
    assert!(cloned > 100, "only {cloned} routes were cloned: is the §4 mutation merged?");
}

// --- the corpus -------------------------------------------------------------------------------

#[test]
fn every_corpus_virtual_service_validates_without_denial() {
    let objects = corpus_objects("virtualservices", "VirtualService");
    assert!(objects.len() > 200, "corpus found: {} VirtualServices", objects.len());
    for settings in [Settings::default(), legacy_on()] {
        for (file, object) in &objects {
            let answer = validate(object, &settings);
            assert_eq!(answer.response["allowed"], true, "{file}: {}", answer.response);
            assert!(answer.warnings().is_empty(), "{file}: {:?}", answer.warnings());
        }
    }
}

#[test]
fn every_corpus_regex_is_checked_and_passes() {
    // Guards the test above against passing because regexes were never reached: the same
    // regexes, each with a look-ahead appended, are denied at their fields.
    let mut checked = 0;
    for (file, mut object) in corpus_objects("virtualservices", "VirtualService") {
        let mut fields = Vec::new();
        poison_regexes(&mut object["spec"], &mut String::from("spec"), &mut fields);
        if fields.is_empty() {
            continue;
        }
        let answer = validate(&object, &Settings::default());
        let message = answer.response["status"]["message"].as_str().unwrap_or_default().to_string();
        for field in &fields {
            assert!(message.contains(&format!(": {field}: regex ")), "{file}: {field} not checked: {message}");
        }
        checked += fields.len();
    }
    assert!(checked >= 10, "only {checked} corpus regexes");
}

/// Appends a look-ahead to every regex (`regex`, `uriRegexRewrite.match`) under `node`,
/// collecting their paths in the messages' notation.
fn poison_regexes(node: &mut Value, path: &mut String, fields: &mut Vec<String>) {
    let len = path.len();
    match node {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if (key == "regex" || path.ends_with(".uriRegexRewrite") && key == "match")
                    && let Value::String(s) = value
                {
                    s.push_str("(?=x)");
                    fields.push(format!("{path}.{key}"));
                    continue;
                }
                path.push('.');
                path.push_str(key);
                poison_regexes(value, path, fields);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push_str(&format!("[{i}]"));
                poison_regexes(item, path, fields);
                path.truncate(len);
            }
        }
        _ => {}
    }
}
