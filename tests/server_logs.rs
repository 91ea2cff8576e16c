//! The log of `divert-webhook serve`, read from the real binary's stderr (SPEC §9): one line per
//! review with uid, kind, namespace/name, operation, decision, patch size and latency, in both
//! `--log-format text` and `json`; and values a client chooses cannot forge a line or a field.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{fixture, http1_client, post_review, review_of};
use serde_json::{Value, json};

/// The binary serving on free ports, with its stderr read line by line on a thread.
struct Served {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    https: String,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

impl Served {
    fn start(log_format: &str) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let mut child = Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
            .args(["serve", "--self-signed", "--write-ca", ca.to_str().unwrap(), "--log-format", log_format])
            .args(["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--shutdown-delay", "0s"])
            .env_remove("RUST_LOG")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        let mut served =
            Served { child, lines, seen: Vec::new(), https: String::new(), ca_pem: String::new(), _dir: dir };
        let serving = served.wait_for(1, |line| line.contains("https_addr")).remove(0);
        // text: `... serving https_addr=127.0.0.1:PORT ...`; json: `"https_addr":"127.0.0.1:PORT"`
        let at = serving.find("https_addr").expect("the serving line names the address");
        let address: String = serving[at + "https_addr".len()..]
            .trim_start_matches(['=', '"', ':'])
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        served.https = format!("https://{address}");
        served.ca_pem = std::fs::read_to_string(&ca).unwrap();
        served
    }

    /// Waits until `count` lines matching `wanted` were logged (in all, since the start); returns them.
    fn wait_for(&mut self, count: usize, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let started = Instant::now();
        loop {
            let matching: Vec<String> = self.seen.iter().filter(|l| wanted(l)).cloned().collect();
            if matching.len() >= count {
                return matching;
            }
            let left = Duration::from_secs(20).saturating_sub(started.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("never logged {count} such lines; the log:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Stops the server and returns every line it logged.
    fn stop(mut self) -> Vec<String> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.seen
    }
}

const HOSTILE_UID: &str =
    "x\n2026-01-01T00:00:00.000000Z  INFO divert_webhook::server::http: review uid=forged decision=\"allowed\"";
const HOSTILE_NAME: &str = "a b decision=denied";
const HOSTILE_NAMESPACE: &str = "ns\" kind=Forged\r\n";

/// What is sent: (review, expected uid, kind, namespace, name, operation, decision, patch operations).
fn reviews() -> Vec<(Value, [&'static str; 7])> {
    let managed = fixture("namespace-create.json");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "cindy"}});
    let mut hostile = review_of("placeholder", ("", "v1", "Pod"), "pods", "CREATE", pod);
    hostile["request"]["uid"] = json!(HOSTILE_UID);
    hostile["request"]["name"] = json!(HOSTILE_NAME);
    hostile["request"]["namespace"] = json!(HOSTILE_NAMESPACE);
    vec![
        (managed, ["705ab4f5-6393-11e8-b7cc-42010a800002", "Namespace", "", "cindy", "CREATE", "patched", "1"]),
        (hostile, [HOSTILE_UID, "Pod", HOSTILE_NAMESPACE, HOSTILE_NAME, "CREATE", "allowed", "0"]),
    ]
}

/// Sends every review of [`reviews`] (the second one with an unreadable `?timeout=`).
async fn send_reviews(served: &Served) {
    let client = http1_client(&served.ca_pem);
    for (n, (review, _)) in reviews().into_iter().enumerate() {
        let path = if n == 1 { "/mutate?timeout=in%20a%20bit%0Aforged" } else { "/mutate?timeout=10s" };
        let answer = post_review(&client, &format!("{}{path}", served.https), &review).await;
        assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    }
}

/// Splits the fields of a text log line (`key=value key="quoted \"value\""`) and unquotes them.
fn text_fields(fields: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = fields.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').unwrap_or_else(|| panic!("no `=` in {rest:?}"));
        assert!(!key.is_empty() && !key.contains([' ', '"']), "not a field name: {key:?} in {fields:?}");
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = closing_quote(quoted).unwrap_or_else(|| panic!("unclosed quote in {fields:?}"));
            (unescape(&quoted[..end]), &quoted[end + 1..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        assert!(after.is_empty() || after.starts_with(' '), "field {key} runs on: {after:?}");
        out.push((key.to_string(), value));
        rest = after.trim_start();
    }
    out
}

fn closing_quote(quoted: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in quoted.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

/// Undoes Rust's `{:?}` escaping of a string.
fn unescape(escaped: &str) -> String {
    let mut out = String::new();
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next().unwrap() {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            '0' => out.push('\0'),
            'u' => {
                let code: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&code, 16).unwrap()).unwrap());
            }
            other => out.push(other),
        }
    }
    out
}

/// A value logged through the webhook's LogValue: plain as is, anything else `{:?}`-quoted.
fn unquote_value(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => unescape(inner),
        None => value.to_string(),
    }
}

#[tokio::test]
async fn text_log_has_one_line_per_review_and_clients_cannot_forge_lines_or_fields() {
    let mut served = Served::start("text");
    send_reviews(&served).await;
    let marker = "divert_webhook::server::http: review ";
    served.wait_for(2, |line| line.contains(marker));
    let lines = served.stop();

    // Every line is a log line: a timestamp, a level, a target. Nothing a client sent starts a line.
    for line in &lines {
        let mut words = line.split_whitespace();
        let timestamp = words.next().unwrap_or_default();
        assert!(
            timestamp.len() > 20 && timestamp.starts_with("20") && timestamp.ends_with('Z'),
            "not a log line: {line:?}\n{lines:#?}"
        );
        assert!(["INFO", "WARN", "DEBUG", "ERROR"].contains(&words.next().unwrap_or_default()), "{line:?}");
    }
    let review_lines: Vec<&String> = lines.iter().filter(|l| l.contains(marker)).collect();
    assert_eq!(review_lines.len(), 2, "one line per review: {lines:#?}");
    for (line, (_, expected)) in review_lines.iter().zip(reviews()) {
        let fields = text_fields(line.split_once(marker).unwrap().1);
        let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "endpoint",
                "uid",
                "kind",
                "namespace",
                "name",
                "operation",
                "decision",
                "patch_operations",
                "warnings",
                "micros"
            ],
            "{line}"
        );
        let field = |key: &str| fields.iter().find(|(k, _)| k == key).unwrap().1.clone();
        let [uid, kind, namespace, name, operation, decision, patch_operations] = expected;
        assert_eq!(field("endpoint"), "mutate");
        assert_eq!(field("uid"), uid, "{line}");
        assert_eq!(field("kind"), kind, "{line}");
        assert_eq!(field("namespace"), namespace, "{line}");
        assert_eq!(field("name"), name, "{line}");
        assert_eq!(field("operation"), operation, "{line}");
        assert_eq!(field("decision"), decision, "{line}");
        assert_eq!(field("patch_operations"), patch_operations, "{line}");
        assert!(field("micros").parse::<u64>().is_ok(), "{line}");
    }
    // A plain uid stays unquoted, so the line is easy to grep.
    assert!(
        review_lines[0].contains(" uid=705ab4f5-6393-11e8-b7cc-42010a800002 kind=Namespace "),
        "{}",
        review_lines[0]
    );

    // The unreadable ?timeout= is ignored with a warning that shows it quoted, on one line.
    let warning = lines.iter().find(|l| l.contains("?timeout=")).expect("a warning about the timeout");
    assert!(warning.contains(" WARN "), "{warning}");
    let fields = text_fields(warning.split_once("--request-timeout ").unwrap().1);
    assert!(fields.contains(&("timeout".to_string(), "in%20a%20bit%0Aforged".to_string())), "{warning}");
    assert!(fields.contains(&("endpoint".to_string(), "mutate".to_string())), "{warning}");
}

#[tokio::test]
async fn json_log_has_one_object_per_review_with_the_values_sent() {
    let mut served = Served::start("json");
    send_reviews(&served).await;
    served.wait_for(2, |line| line.contains(r#""message":"review""#));
    let lines = served.stop();

    let objects: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}")))
        .collect();
    let review_fields: Vec<&Value> =
        objects.iter().map(|o| &o["fields"]).filter(|f| f["message"] == "review").collect();
    assert_eq!(review_fields.len(), 2, "{lines:#?}");
    for (fields, (_, expected)) in review_fields.into_iter().zip(reviews()) {
        let [uid, kind, namespace, name, operation, decision, patch_operations] = expected;
        let text = |key: &str| unquote_value(fields[key].as_str().unwrap_or_else(|| panic!("{key}: {fields}")));
        assert_eq!(text("uid"), uid, "{fields}");
        assert_eq!(text("kind"), kind, "{fields}");
        assert_eq!(text("namespace"), namespace, "{fields}");
        assert_eq!(text("name"), name, "{fields}");
        assert_eq!(fields["operation"], operation);
        assert_eq!(fields["decision"], decision);
        assert_eq!(fields["patch_operations"].to_string(), patch_operations);
        assert!(fields["micros"].is_u64(), "{fields}");
    }
}
