//! SPEC §4 and §5 through the real review path: where requests go after the divert routes are
//! generated (a small evaluator of Istio's first-match routing), destinations, warnings,
//! regeneration and the developer header.

mod virtual_service_support;

use divert_webhook::manifests::Verdict;
use divert_webhook::settings::Settings;
use serde_json::{Value, json};
use virtual_service_support::{entry_annotation, entry_value, mutate};

// ---- a small Istio http route evaluator -------------------------------------------------

/// A request as a sidecar sees it. Repeated headers are joined with "," as Envoy does before
/// matching.
struct Request<'a> {
    uri: &'a str,
    headers: Vec<(&'a str, &'a str)>,
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> =
            self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v).collect();
        (!values.is_empty()).then(|| values.join(","))
    }
}

/// Envoy string match: exact, prefix, or a regex matched against the WHOLE value.
fn string_matches(condition: &Value, value: &str) -> bool {
    let condition = condition.as_object().expect("string match is a map");
    assert_eq!(condition.len(), 1, "one of exact/prefix/regex: {condition:?}");
    let (how, want) = condition.iter().next().unwrap();
    let want = want.as_str().unwrap();
    match how.as_str() {
        "exact" => value == want,
        "prefix" => value.starts_with(want),
        "regex" => regex::Regex::new(&format!("^(?:{want})$")).unwrap().is_match(value),
        other => panic!("evaluator does not know {other}"),
    }
}

fn entry_matches(entry: &Value, request: &Request<'_>) -> bool {
    entry.as_object().unwrap().iter().all(|(field, condition)| match field.as_str() {
        "name" => true,
        "uri" => string_matches(condition, request.uri),
        "headers" => condition
            .as_object()
            .unwrap()
            .iter()
            .all(|(name, condition)| request.header(name).is_some_and(|value| string_matches(condition, &value))),
        other => panic!("evaluator does not know match field {other}"),
    })
}

/// The first route that matches (Istio: first match wins; a route without match entries, or
/// with an empty list, matches every request).
fn first_route<'v>(object: &'v Value, request: &Request<'_>) -> &'v Value {
    let routes = object["spec"]["http"].as_array().unwrap();
    routes
        .iter()
        .find(|route| match route.get("match").and_then(Value::as_array) {
            None => true,
            Some(entries) => entries.is_empty() || entries.iter().any(|e| entry_matches(e, request)),
        })
        .expect("some route matches")
}

/// The destination hosts of the first route that matches.
fn destinations(object: &Value, request: &Request<'_>) -> Vec<String> {
    let route = first_route(object, request);
    route["route"].as_array().unwrap().iter().map(|d| d["destination"]["host"].as_str().unwrap().to_string()).collect()
}

fn get<'a>(uri: &'a str, baggage: &[&'a str]) -> Request<'a> {
    Request { uri, headers: baggage.iter().map(|b| ("baggage", *b)).collect() }
}

// ---- fixtures -------------------------------------------------------------------------

fn shared_vs(annotations: Value, http: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "frontend", "namespace": "staging", "annotations": annotations},
        "spec": {"hosts": ["frontend"], "http": http}
    })
}

fn api_and_catch_all() -> Value {
    json!([
        {"name": "api", "match": [{"uri": {"prefix": "/api"}}], "route": [{"destination": {"host": "svc-a"}}]},
        {"name": "web", "route": [{"destination": {"host": "svc-b"}}]}
    ])
}

fn names(object: &Value) -> Vec<&str> {
    object["spec"]["http"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap_or("-")).collect()
}

// ---- §4 ----------------------------------------------------------------------------------

#[test]
fn a_diverted_catch_all_does_not_steal_requests_of_earlier_routes() {
    let object = shared_vs(json!({ entry_annotation(1): entry_value("cindy", &["web"]) }), api_and_catch_all());
    let out = mutate(&object, &Settings::default());
    assert_eq!(names(&out.object), ["api", "okteto-divert-cindy-web", "web"]);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);

    let key = ["okteto-divert=cindy"];
    assert_eq!(destinations(&out.object, &get("/api/movies", &key)), ["svc-a"]);
    assert_eq!(destinations(&out.object, &get("/other", &key)), ["svc-b.cindy.svc.cluster.local"]);
    assert_eq!(destinations(&out.object, &get("/other", &[])), ["svc-b"]);
    assert_eq!(destinations(&out.object, &get("/other", &["okteto-divert=cindy-2"])), ["svc-b"]);
    assert_eq!(destinations(&out.object, &get("/other", &["a=1;okteto-divert=cindy"])), ["svc-b"]);
    // two baggage headers, other vendors' members and properties around the divert member
    let two = ["sentry-trace_id=771a43a4;p=1", " okteto-divert = cindy ;x=y, b=2"];
    assert_eq!(destinations(&out.object, &get("/other", &two)), ["svc-b.cindy.svc.cluster.local"]);
}

#[test]
fn every_route_is_diverted_when_the_entry_names_none() {
    let object = shared_vs(json!({ entry_annotation(1): r#"{"namespace":"cindy"}"# }), api_and_catch_all());
    let out = mutate(&object, &Settings::default());
    assert_eq!(names(&out.object), ["okteto-divert-cindy-api", "api", "okteto-divert-cindy-web", "web"]);
    let key = ["okteto-divert=cindy"];
    assert_eq!(destinations(&out.object, &get("/api", &key)), ["svc-a.cindy.svc.cluster.local"]);
    assert_eq!(destinations(&out.object, &get("/api", &[])), ["svc-a"]);
    assert_eq!(destinations(&out.object, &get("/x", &key)), ["svc-b.cindy.svc.cluster.local"]);
    assert_eq!(destinations(&out.object, &get("/x", &["okteto-divert=zed"])), ["svc-b"]);
    // the clone of the api route keeps its uri condition and adds the baggage one
    assert_eq!(out.object["spec"]["http"][0]["match"][0]["uri"], json!({"prefix": "/api"}));
    // only additions: the original routes are not touched
    assert!(out.patch.iter().all(|op| op["op"] == "add"), "{:?}", out.patch);
}

#[test]
fn a_name_shared_by_two_routes_diverts_both() {
    // Istio allows it; cindy's `/b` requests must reach cindy's `b` too (issue 8).
    let http = json!([
        {"name": "dup", "match": [{"uri": {"prefix": "/a"}}], "route": [{"destination": {"host": "svc-a"}}]},
        {"name": "dup", "match": [{"uri": {"prefix": "/b"}}], "route": [{"destination": {"host": "svc-b"}}]},
        {"name": "web", "route": [{"destination": {"host": "svc-w"}}]},
    ]);
    let object = shared_vs(json!({ entry_annotation(3): entry_value("cindy", &["dup"]) }), http);
    let out = mutate(&object, &Settings::default());
    assert_eq!(names(&out.object), ["okteto-divert-cindy-dup", "dup", "okteto-divert-cindy-dup-1", "dup", "web"]);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let key = ["okteto-divert=cindy"];
    assert_eq!(destinations(&out.object, &get("/a", &key)), ["svc-a.cindy.svc.cluster.local"]);
    assert_eq!(destinations(&out.object, &get("/b", &key)), ["svc-b.cindy.svc.cluster.local"]);
    assert_eq!(destinations(&out.object, &get("/b", &[])), ["svc-b"]);
    assert_eq!(destinations(&out.object, &get("/w", &key)), ["svc-w"]);
    // only additions: the original routes are not touched
    assert!(out.patch.iter().all(|op| op["op"] == "add"), "{:?}", out.patch);
}

#[test]
fn subsets_collapse_into_one_developer_destination() {
    let object = shared_vs(
        json!({ entry_annotation(2): entry_value("cindy", &[]) }),
        json!([{"name": "reviews", "route": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
            {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10}
        ]}]),
    );
    let out = mutate(&object, &Settings::default());
    let clone = &out.object["spec"]["http"][0];
    assert_eq!(clone["name"], "okteto-divert-cindy-reviews");
    assert_eq!(clone["route"], json!([{"destination": {"host": "reviews.cindy.svc.cluster.local"}}]));
    assert_eq!(out.object["spec"]["http"][1], object["spec"]["http"][0]);
}

#[test]
fn only_hosts_of_the_own_namespace_are_rewritten_and_weights_are_summed() {
    let object = shared_vs(
        json!({ entry_annotation(3): entry_value("cindy", &[]) }),
        json!([{"route": [
            {"destination": {"host": "reviews.staging.svc.cluster.local", "subset": "v1", "port": {"number": 9080}}, "weight": 50},
            {"destination": {"host": "ratings.other.svc.cluster.local"}, "weight": 20},
            {"destination": {"host": "reviews.staging", "subset": "v2", "port": {"number": 9080}}, "weight": 20,
             "headers": {"request": {"set": {"x": "1"}}}},
            {"destination": {"host": "reviews", "subset": "v3", "port": {"number": 9080}}, "weight": 10}
        ], "timeout": "3s", "retries": {"attempts": 2}, "mirror": {"host": "reviews", "subset": "v9"}}]),
    );
    let out = mutate(&object, &Settings::default());
    let clone = &out.object["spec"]["http"][0];
    assert_eq!(clone["name"], "okteto-divert-cindy-0");
    let host = "reviews.cindy.svc.cluster.local";
    assert_eq!(
        clone["route"],
        json!([
            {"destination": {"host": host, "port": {"number": 9080}}, "weight": 60},
            {"destination": {"host": "ratings.other.svc.cluster.local"}, "weight": 20},
            {"destination": {"host": host, "port": {"number": 9080}}, "weight": 20, "headers": {"request": {"set": {"x": "1"}}}}
        ])
    );
    for field in ["timeout", "retries", "mirror"] {
        assert_eq!(clone[field], object["spec"]["http"][0][field], "{field}");
    }
}

#[test]
fn a_custom_cluster_domain_is_used() {
    let settings = Settings { cluster_domain: "corp.internal".into(), ..Settings::default() };
    let object = shared_vs(
        json!({ entry_annotation(3): entry_value("cindy", &[]) }),
        json!([{"route": [{"destination": {"host": "a.staging.svc.corp.internal"}}]},
               {"route": [{"destination": {"host": "b.staging.svc.cluster.local"}}]}]),
    );
    let out = mutate(&object, &settings);
    assert_eq!(out.object["spec"]["http"][0]["route"][0]["destination"]["host"], "a.cindy.svc.corp.internal");
    assert_eq!(names(&out.object), ["okteto-divert-cindy-0", "-", "-"]);
    assert_eq!(out.warnings, ["route spec.http[1] has no destination in namespace staging: not diverted"]);
}

#[test]
fn routes_that_cannot_be_diverted_are_named_in_warnings() {
    let object = shared_vs(
        json!({ entry_annotation(4): entry_value("cindy", &["ext", "moved", "gone", "db", "own", "mine"]) }),
        json!([
            {"name": "ext", "route": [{"destination": {"host": "api.example.com"}}]},
            {"name": "moved", "redirect": {"uri": "/new"}},
            {"name": "own", "match": [{"headers": {"baggage": {"exact": "okteto-divert=cindy"}}}, {"uri": {"exact": "/x"}}],
             "route": [{"destination": {"host": "own"}}]},
            {"name": "mine", "match": [{"headers": {"Baggage": {"prefix": "okteto-divert=cindy"}}}],
             "route": [{"destination": {"host": "mine"}}]}
        ]),
    );
    let mut object = object;
    object["spec"]["tcp"] = json!([{"name": "db", "route": [{"destination": {"host": "db"}}]}]);
    let out = mutate(&object, &Settings::default());
    assert_eq!(names(&out.object), ["ext", "moved", "okteto-divert-cindy-own", "own", "mine"]);
    // the match entry that already tests baggage is left out of the clone
    assert_eq!(out.object["spec"]["http"][2]["match"].as_array().unwrap().len(), 1);
    let mut warnings = out.warnings.clone();
    warnings.sort();
    assert_eq!(
        warnings,
        [
            "divert of cindy: route db is a tcp/tls route; only http routes are diverted",
            "divert of cindy: route moved redirects, responds or delegates: it does not forward",
            "divert of cindy: there is no http route named gone",
            "route ext has no destination in namespace staging: not diverted",
            // one warning per route: a route none of whose entries can be cloned gets only this
            "route mine: every match entry already tests baggage: it is not diverted",
            "route own: match[0] already tests the baggage header; it is not diverted",
        ]
    );
}

#[test]
fn legacy_header_duplicates_each_match_entry() {
    let settings = Settings { legacy_header: true, ..Settings::default() };
    let object = shared_vs(json!({ entry_annotation(1): entry_value("cindy", &[]) }), api_and_catch_all());
    let out = mutate(&object, &settings);
    let api = &out.object["spec"]["http"][0]["match"];
    assert_eq!(api.as_array().unwrap().len(), 2);
    assert_eq!(api[1], json!({"uri": {"prefix": "/api"}, "headers": {"baggage.okteto-divert": {"exact": "cindy"}}}));
    let legacy = Request { uri: "/api", headers: vec![("baggage.okteto-divert", "cindy")] };
    assert_eq!(destinations(&out.object, &legacy), ["svc-a.cindy.svc.cluster.local"]);
    let web = &out.object["spec"]["http"][2]["match"];
    assert_eq!(web.as_array().unwrap().len(), 2);
    assert!(web[0]["headers"]["baggage"]["regex"].as_str().unwrap().contains("cindy"));
}

#[test]
fn regeneration_restores_and_is_stable() {
    let original = shared_vs(json!({"team": "movies"}), api_and_catch_all());
    let mut diverted = original.clone();
    let annotations = diverted["metadata"]["annotations"].as_object_mut().unwrap();
    annotations.insert(entry_annotation(1), entry_value("cindy", &["web"]).into());
    annotations.insert("divert.okteto.com/zed-frontend".into(), entry_value("zed", &[]).into());
    let once = mutate(&diverted, &Settings::default()).object;
    assert_eq!(
        names(&once),
        ["okteto-divert-zed-api", "api", "okteto-divert-cindy-web", "okteto-divert-zed-web", "web"]
    );
    let twice = mutate(&once, &Settings::default());
    assert!(twice.patch.is_empty(), "{:?}", twice.patch);
    assert!(twice.warnings.is_empty(), "{:?}", twice.warnings);

    let mut undiverted = once.clone();
    undiverted["metadata"]["annotations"] = original["metadata"]["annotations"].clone();
    let back = mutate(&undiverted, &Settings::default());
    assert_eq!(back.object, original);
    assert_eq!(back.warnings.len(), 3, "{:?}", back.warnings);
    assert!(back.patch.iter().all(|op| op["op"] == "remove"), "{:?}", back.patch);
}

#[test]
fn tcp_tls_and_delegate_virtual_services_are_left_alone() {
    let annotations = json!({ entry_annotation(5): entry_value("cindy", &[]) });
    let tcp = json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
        "metadata": {"name": "db", "namespace": "staging", "annotations": annotations},
        "spec": {"hosts": ["db"], "tcp": [{"route": [{"destination": {"host": "db"}}]}]}});
    let out = mutate(&tcp, &Settings::default());
    assert!(out.patch.is_empty());
    assert_eq!(out.warnings, ["divert of cindy: this VirtualService has no http routes"]);

    let delegate = json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "staging", "annotations": annotations},
        "spec": {"http": [{"route": [{"destination": {"host": "reviews"}}]}]}});
    let out = mutate(&delegate, &Settings::default());
    assert!(out.patch.is_empty());
    assert_eq!(out.warnings.len(), 1);

    let root = shared_vs(
        annotations,
        json!([{"name": "r", "match": [{"uri": {"prefix": "/r"}}], "delegate": {"name": "reviews", "namespace": "staging"}}]),
    );
    let out = mutate(&root, &Settings::default());
    assert!(out.patch.is_empty());
    assert_eq!(
        out.warnings,
        ["divert of cindy: no http route here forwards (delegates are not diverted); nothing is diverted"]
    );
}

#[test]
fn malformed_entries_are_skipped_in_mutation() {
    let object = shared_vs(
        json!({
            entry_annotation(1): "{not json",
            entry_annotation(2): r#"{"namespace":"staging"}"#,
            entry_annotation(3): entry_value("cindy", &["web"]),
        }),
        api_and_catch_all(),
    );
    let out = mutate(&object, &Settings::default());
    assert_eq!(names(&out.object), ["api", "okteto-divert-cindy-web", "web"]);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

// ---- §5 ----------------------------------------------------------------------------------

fn developer_vs(annotations: Value, http: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "frontend", "namespace": "cindy", "annotations": annotations},
        "spec": {"hosts": ["frontend.example.com"], "gateways": ["istio-ingress/gw"], "http": http}
    })
}

fn add_headers(object: &Value, route: usize) -> &Value {
    &object["spec"]["http"][route]["headers"]["request"]["add"]
}

#[test]
fn developer_routes_get_the_divert_member() {
    let http = json!([
        {"name": "plain", "route": [{"destination": {"host": "frontend"}}]},
        {"name": "traced", "headers": {"request": {"add": {"baggage": "vendor=1;p=2, other=x", "x-a": "1"}, "remove": ["x-b"]}},
         "route": [{"destination": {"host": "frontend"}}]},
        {"name": "stale", "headers": {"request": {"add": {"baggage": "okteto-divert=zed,vendor=1"}}},
         "route": [{"destination": {"host": "frontend"}}]},
        {"name": "moved", "redirect": {"uri": "/"}}
    ]);
    let object = developer_vs(json!({"divert.okteto.com/header": "cindy", "other": "kept"}), http.clone());
    let out = mutate(&object, &Settings::default());
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(add_headers(&out.object, 0), &json!({"baggage": "okteto-divert=cindy"}));
    assert_eq!(
        add_headers(&out.object, 1),
        &json!({"baggage": "vendor=1;p=2, other=x,okteto-divert=cindy", "x-a": "1"})
    );
    assert_eq!(out.object["spec"]["http"][1]["headers"]["request"]["remove"], json!(["x-b"]));
    assert_eq!(add_headers(&out.object, 2), &json!({"baggage": "okteto-divert=cindy,vendor=1"}));
    assert_eq!(out.object["spec"]["http"][3], http[3]);

    // idempotent
    let again = mutate(&out.object, &Settings::default());
    assert!(again.patch.is_empty(), "{:?}", again.patch);

    // the header reaches a shared VirtualService's clone: the sidecar sees the member
    let sent = add_headers(&out.object, 1)["baggage"].as_str().unwrap();
    let shared = mutate(
        &shared_vs(json!({ entry_annotation(1): entry_value("cindy", &["web"]) }), api_and_catch_all()),
        &Settings::default(),
    );
    assert_eq!(destinations(&shared.object, &get("/x", &[sent])), ["svc-b.cindy.svc.cluster.local"]);

    // annotation removed: what was added goes, the rest stays
    let mut removed = out.object.clone();
    removed["metadata"]["annotations"].as_object_mut().unwrap().remove("divert.okteto.com/header");
    let back = mutate(&removed, &Settings::default());
    assert_eq!(back.object["spec"]["http"][0], http[0]);
    assert_eq!(add_headers(&back.object, 1), &json!({"baggage": "vendor=1;p=2, other=x", "x-a": "1"}));
    assert_eq!(add_headers(&back.object, 2), &json!({"baggage": "vendor=1"}));
    assert_eq!(back.warnings.len(), 1, "{:?}", back.warnings);
    let settled = mutate(&back.object, &Settings::default());
    assert!(settled.patch.is_empty() && settled.warnings.is_empty());
}

#[test]
fn the_developer_header_changes_with_the_annotation() {
    let http = json!([{"route": [{"destination": {"host": "frontend"}}]}]);
    let cindy = mutate(&developer_vs(json!({"divert.okteto.com/header": "cindy"}), http.clone()), &Settings::default());
    let mut zed = cindy.object.clone();
    zed["metadata"]["annotations"]["divert.okteto.com/header"] = "zed".into();
    let zed = mutate(&zed, &Settings::default());
    assert_eq!(add_headers(&zed.object, 0), &json!({"baggage": "okteto-divert=zed"}));
    assert_eq!(zed.patch.len(), 1, "{:?}", zed.patch);
    assert_eq!(zed.patch[0]["op"], "replace");
}

// ---- docs --------------------------------------------------------------------------------

/// The worked example in docs/virtualservices.md is deploy/examples/virtualservice.yaml and
/// what `mutate -f` prints for it (same function as the command).
#[test]
fn the_documented_example_is_what_mutate_prints() {
    let root = env!("CARGO_MANIFEST_DIR");
    let example = std::fs::read_to_string(format!("{root}/deploy/examples/virtualservice.yaml")).unwrap();
    let docs = std::fs::read_to_string(format!("{root}/docs/virtualservices.md")).unwrap();
    let blocks: Vec<&str> = docs.split("```yaml\n").skip(1).map(|b| b.split("```").next().unwrap()).collect();
    let input: String = example.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    assert_eq!(blocks[0], input);
    let report = divert_webhook::manifests::mutate_documents(&example, &Settings::default());
    assert!(report.verdict == Verdict::Passed && report.stderr.is_empty(), "{:?}", report.stderr);
    assert_eq!(blocks[1], report.stdout);
}

#[test]
fn the_readme_example_is_what_mutate_prints_and_its_request_table_holds() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let section = readme.split("## Worked example: divert routing").nth(1).expect("README has the worked example");
    let section = section.split("\n## ").next().unwrap();
    let blocks: Vec<&str> = section.split("```yaml\n").skip(1).map(|b| b.split("```").next().unwrap()).collect();
    assert_eq!(blocks.len(), 2, "input and output YAML");
    let report = divert_webhook::manifests::mutate_documents(blocks[0], &Settings::default());
    assert!(report.verdict == Verdict::Passed && report.stderr.is_empty(), "{:?}", report.stderr);
    assert_eq!(blocks[1], report.stdout, "the README's output is not what mutate prints");

    // | `GET /path` | `baggage` or `other` or none | `route name` ... | destination |
    let mutated: Value = serde_saphyr::from_str(&report.stdout).unwrap();
    let ticked = |cell: &str| -> Vec<String> { cell.split('`').skip(1).step_by(2).map(str::to_string).collect() };
    let mut rows = 0;
    for line in section.lines().filter(|l| l.starts_with("| `GET ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let path = ticked(cells[1])[0].strip_prefix("GET ").unwrap().to_string();
        let mut baggages: Vec<Option<String>> = ticked(cells[2]).into_iter().map(Some).collect();
        if cells[2].starts_with("none") {
            baggages.push(None);
        }
        let want_route = &ticked(cells[3])[0];
        for baggage in baggages {
            let request = Request { uri: &path, headers: baggage.iter().map(|b| ("baggage", b.as_str())).collect() };
            let route = first_route(&mutated, &request);
            assert_eq!(route["name"], json!(want_route), "README row {line:?} with baggage {baggage:?}");
            rows += 1;
        }
    }
    assert!(rows >= 6, "only {rows} requests read from the README table");
}

#[test]
fn virtual_services_are_not_mutated_under_the_nginx_driver_or_in_protected_namespaces() {
    let diverted = shared_vs(json!({ entry_annotation(1): r#"{"namespace":"cindy"}"# }), api_and_catch_all());
    let developer = developer_vs(
        json!({"divert.okteto.com/header": "cindy"}),
        json!([{"route": [{"destination": {"host": "a"}}]}]),
    );
    assert!(!mutate(&diverted, &Settings::default()).patch.is_empty(), "the istio driver diverts it");
    assert!(!mutate(&developer, &Settings::default()).patch.is_empty(), "the istio driver adds the header");
    let nginx = Settings { driver: divert_webhook::settings::Driver::Nginx, ..Settings::default() };
    for object in [&diverted, &developer] {
        let out = mutate(object, &nginx);
        assert!(out.patch.is_empty() && out.warnings.is_empty(), "nginx driver: {:?}", out.patch);
        for namespace in ["istio-system", "kube-system"] {
            let mut protected = object.clone();
            protected["metadata"]["namespace"] = json!(namespace);
            let out = mutate(&protected, &Settings::default());
            assert!(out.patch.is_empty() && out.warnings.is_empty(), "{namespace}: {:?}", out.patch);
        }
    }
}
