//! SPEC §7 over the wire: regexes Envoy would refuse are denied by /validate on a real TLS
//! server, with RE2's program size and the limit in the message, and `--max-regex-program-size`
//! (or its environment variable) moves the limit.

mod common;

use clap::Parser as _;
use common::{TestServer, http1_client, post_review, review_of};
use divert_webhook::cli::{Cli, Command};
use serde_json::{Value, json};

/// `\pL` repeated 1000 times: RE2 itself refuses it ("pattern too large").
const TOO_LARGE_FOR_RE2: &str = r"\pL{1000}";
/// A common "Unicode identifier": RE2 compiles it to a program of about 86,000 instructions.
const UNICODE_IDENTIFIER: &str = r"[\pL\pN_-]{1,64}";

/// The server as `divert-webhook serve <flags>` starts it: the whole command line parsed as
/// main() parses it, on free local ports, with --self-signed; and the CA to trust.
async fn serve(rule_flags: &[&str]) -> (TestServer, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    let mut argv = vec!["divert-webhook", "serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"];
    argv.extend(["--shutdown-delay", "0s", "--self-signed", "--write-ca", ca_path.to_str().unwrap()]);
    argv.extend_from_slice(rule_flags);
    let Command::Serve { serve, rules } = Cli::try_parse_from(argv).expect("flags parse").command else {
        unreachable!("a serve command line")
    };
    let server = TestServer::start_with(*serve, rules.settings()).await;
    let ca = std::fs::read_to_string(&ca_path).expect("--write-ca wrote the CA");
    (server, ca, dir)
}

/// VirtualService staging/users matching `/users/<id>` by `id_regex` and `x-name` by `name_regex`.
fn review(id_regex: &str, name_regex: &str) -> Value {
    let vs = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "users", "namespace": "staging"},
        "spec": {"hosts": ["users"], "http": [{
            "match": [{"uri": {"regex": format!("/users/{id_regex}")}}, {"headers": {"x-name": {"regex": name_regex}}}],
            "route": [{"destination": {"host": "users"}}]
        }]}
    });
    review_of("regex-1", ("networking.istio.io", "v1", "VirtualService"), "virtualservices", "CREATE", vs)
}

/// The denial message of /validate's answer, or `None` when it allows.
async fn validate(server: &TestServer, ca: &str, review: &Value) -> Option<String> {
    let answer = post_review(&http1_client(ca), &server.url("/validate?timeout=10s"), review).await;
    let response = &answer["response"];
    assert_eq!(response["uid"], "regex-1");
    match response["allowed"].as_bool() {
        Some(true) => None,
        _ => {
            assert_eq!(response["status"]["code"], 403, "{answer}");
            Some(response["status"]["message"].as_str().unwrap().to_string())
        }
    }
}

/// RE2's program size for `pattern` (the linked RE2, as the webhook asks it).
fn program_size(pattern: &str) -> usize {
    divert_webhook::re2::compile(pattern).expect("RE2 compiles it")
}

#[tokio::test]
async fn regexes_envoy_refuses_are_denied_with_the_size_and_the_limit() {
    let (server, ca, _dir) = serve(&[]).await;
    let size = program_size(&format!("/users/{UNICODE_IDENTIFIER}"));
    assert!(size > 80_000, "{size}");
    let message = validate(&server, &ca, &review(UNICODE_IDENTIFIER, TOO_LARGE_FOR_RE2)).await.expect("denied");
    assert!(!message.contains('\n'), "{message}");
    let [id, name]: [&str; 2] = message
        .split("; VirtualService ")
        .collect::<Vec<_>>()
        .try_into()
        .unwrap_or_else(|_| panic!("two problems: {message}"));
    assert!(id.starts_with("VirtualService staging/users: spec.http[0].match[0].uri.regex: "), "{id}");
    assert!(id.contains(&format!("compiles to an RE2 program of size {size}, above the limit of 32768")), "{id}");
    assert!(id.contains("make it smaller"), "{id}");
    assert!(name.starts_with("staging/users: spec.http[0].match[1].headers.x-name.regex: "), "{name}");
    assert!(name.contains(r#"regex "\\pL{1000}" is too large for RE2"#), "{name}");
    assert!(name.contains("pattern too large - compile failed; the program size limit is 32768"), "{name}");

    // What Envoy takes passes: the same shapes with ASCII classes and smaller counts.
    assert_eq!(validate(&server, &ca, &review("[a-zA-Z0-9_-]{1,64}", r"\pL{1,10}")).await, None);
    server.stop().await;
}

#[tokio::test]
async fn the_flag_moves_the_limit() {
    let size = program_size(&format!("/users/{UNICODE_IDENTIFIER}"));
    let at_size = size.to_string();
    let (server, ca, _dir) = serve(&["--max-regex-program-size", &at_size]).await;
    assert_eq!(validate(&server, &ca, &review(UNICODE_IDENTIFIER, "x")).await, None, "allowed at its own size");
    // RE2's own refusal does not depend on the flag.
    let message = validate(&server, &ca, &review("x", TOO_LARGE_FOR_RE2)).await.expect("still denied");
    assert!(message.contains(&format!("the program size limit is {size}")), "{message}");
    server.stop().await;

    let below = (size - 1).to_string();
    let (server, ca, _dir) = serve(&["--max-regex-program-size", &below]).await;
    let message = validate(&server, &ca, &review(UNICODE_IDENTIFIER, "x")).await.expect("denied one below");
    assert!(message.contains(&format!("program of size {size}, above the limit of {below}")), "{message}");
    server.stop().await;

    // A small limit denies what the default allows.
    let small = "[a-z]{1,16}";
    let (server, ca, _dir) = serve(&["--max-regex-program-size", "20"]).await;
    let message = validate(&server, &ca, &review(small, "x")).await.expect("denied under a small limit");
    let size = program_size(&format!("/users/{small}"));
    assert!(message.contains(&format!("program of size {size}, above the limit of 20")), "{message}");
    server.stop().await;
}

#[test]
fn the_limit_is_read_from_the_environment_and_checked() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let run = |variable: &str, value: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
            .args(["review", "--endpoint", "validate"])
            .env(variable, value)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let body = serde_json::to_vec(&review(UNICODE_IDENTIFIER, "x")).unwrap();
        // A refused flag ends the process before it reads its input.
        let _ = child.stdin.take().unwrap().write_all(&body);
        child.wait_with_output().unwrap()
    };
    let allowed = |output: &std::process::Output| {
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
        answer["response"]["allowed"].as_bool().unwrap()
    };
    assert!(!allowed(&run("DIVERT_WEBHOOK_UNRELATED", "1")), "denied under the default 32768");
    assert!(allowed(&run("DIVERT_WEBHOOK_MAX_REGEX_PROGRAM_SIZE", "100000")));
    for bad in ["0", "-1", "many", "4294967296"] {
        let output = run("DIVERT_WEBHOOK_MAX_REGEX_PROGRAM_SIZE", bad);
        assert!(!output.status.success(), "{bad} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--max-regex-program-size"), "{bad}: {stderr}");
    }
}
