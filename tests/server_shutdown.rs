//! SIGTERM on the real binary (SPEC §9): /readyz fails first, serving goes on for the shutdown
//! delay, the listener closes, the review in flight completes, idle keep-alive connections are
//! closed without waiting for the drain timeout, and the process exits 0.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{RawHttp1, fixture, plain_client};
use serde_json::{Value, json};

/// Kills the server if the test fails before it exits by itself.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_local_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

async fn readyz(metrics: SocketAddr) -> Option<u16> {
    let response = plain_client().get(format!("http://{metrics}/readyz")).send().await.ok()?;
    Some(response.status().as_u16())
}

/// Polls until `done` holds, failing the test after 30s.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < Duration::from_secs(30), "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the server process to exit by itself, failing the test after 60s.
async fn exit_status(server: &mut Running) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the server did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `serve --self-signed` on free ports with `extra` flags and JSON logs written to
/// `dir/stderr.log` (the CA to `dir/ca.pem`); returns once /readyz answers 200.
async fn start_serving(dir: &std::path::Path, extra: &[&str]) -> (Running, SocketAddr, SocketAddr) {
    let (https, metrics) = (free_local_addr(), free_local_addr());
    let child = Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
        .args(["serve", "--self-signed", "--write-ca", dir.join("ca.pem").to_str().unwrap()])
        .args(["--addr", &https.to_string(), "--metrics-addr", &metrics.to_string(), "--log-format", "json"])
        .args(extra)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .expect("the binary starts");
    let server = Running(child);
    eventually("/readyz answers 200", || async { readyz(metrics).await == Some(200) }).await;
    (server, https, metrics)
}

fn signal(server: &Running, signal: &str) {
    let sent = Command::new("kill").args([signal, &server.0.id().to_string()]).status().unwrap();
    assert!(sent.success());
}

#[tokio::test]
async fn sigterm_drains_in_flight_reviews_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let (mut server, https, metrics) =
        start_serving(dir.path(), &["--shutdown-delay", "3s", "--drain-timeout", "60s"]).await;
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();

    // A review in flight: the head and the first bytes of the body are sent, the rest later.
    let mut review = fixture("namespace-create.json");
    review["request"]["uid"] = json!("in-flight");
    let body = serde_json::to_vec(&review).unwrap();
    let mut in_flight = RawHttp1::connect(https, &ca).await;
    in_flight.send_head("/mutate?timeout=60s", body.len()).await;
    in_flight.write(&body[..10]).await;
    let mut sent = 10;
    // A keep-alive connection that has finished its review and sits idle.
    let mut idle = RawHttp1::connect(https, &ca).await;
    assert_eq!(
        idle.post("/validate", &serde_json::to_vec(&fixture("namespace-create.json")).unwrap()).await.status,
        200
    );

    signal(&server, "-TERM");
    eventually("/readyz answers 503", || async { readyz(metrics).await == Some(503) }).await;
    // Not ready, but still serving: the listener is open during the shutdown delay.
    assert!(tokio::net::TcpStream::connect(https).await.is_ok(), "listener closed before the shutdown delay");

    // Trickle the body until the listener has closed, so the review spans the close.
    while tokio::net::TcpStream::connect(https).await.is_ok() {
        assert!(sent < body.len() - 1, "the listener never closed");
        in_flight.write(&body[sent..sent + 1]).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle_closed = tokio::time::timeout(Duration::from_secs(30), idle.closed_by_server()).await;
    assert!(idle_closed.unwrap_or(false), "the idle keep-alive connection was not closed");
    in_flight.write(&body[sent..]).await;
    let response = in_flight.read_response().await.expect("the in-flight review is answered");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    let answer: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(answer["response"]["uid"], "in-flight");
    assert_eq!(answer["response"]["patchType"], "JSONPatch");

    let status = exit_status(&mut server).await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "exit status {status}; log:\n{log}");
    // Idle connections were closed by the drain, not cut by its timeout.
    assert!(!log.contains("drain timeout passed"), "{log}");
    let messages: Vec<String> = log
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}")))
        .map(|line| line["fields"]["message"].as_str().unwrap_or_default().to_string())
        .collect();
    let position = |message: &str| {
        messages.iter().position(|m| m.starts_with(message)).unwrap_or_else(|| panic!("{message}: {log}"))
    };
    assert!(position("SIGTERM received") < position("shutdown began"));
    assert!(position("shutdown began") < position("closing the listener"));
    assert!(position("closing the listener") < position("shutdown complete"));
    // One review line per review, with what the operator needs.
    let review_line = log
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|line| line["fields"]["uid"] == "in-flight")
        .expect("a log line for the in-flight review");
    let fields = &review_line["fields"];
    assert_eq!(fields["message"], "review");
    assert_eq!(fields["kind"], "Namespace");
    assert_eq!(fields["name"], "cindy");
    assert_eq!(fields["operation"], "CREATE");
    assert_eq!(fields["decision"], "patched");
    assert_eq!(fields["patch_operations"], 1);
    assert!(fields["micros"].as_u64().is_some());
}

/// Flags come from the environment too, and a bad value or a missing certificate source stops
/// the binary at once with a message naming the flag.
#[test]
fn bad_settings_from_flags_or_environment_stop_the_binary_with_a_clear_message() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let output = Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
            .arg("serve")
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (ok, stderr) = run(&["--self-signed"], &[("DIVERT_WEBHOOK_SHUTDOWN_DELAY", "soon")]);
    assert!(!ok && stderr.contains("--shutdown-delay") && stderr.contains("is not a duration"), "{stderr}");
    let (ok, stderr) = run(&["--self-signed"], &[("DIVERT_WEBHOOK_LOG_FORMAT", "xml")]);
    assert!(!ok && stderr.contains("--log-format"), "{stderr}");
    let (ok, stderr) = run(&["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"], &[]);
    assert!(!ok && stderr.contains("give --tls-cert and --tls-key (PEM files), or --self-signed"), "{stderr}");
    let (ok, stderr) = run(&["--addr", "127.0.0.1:0"], &[("DIVERT_WEBHOOK_TLS_CERT", "/nonexistent/tls.crt")]);
    assert!(!ok && stderr.contains("--tls-cert needs --tls-key"), "{stderr}");
}

#[tokio::test]
async fn sigint_stops_the_server_the_same_way() {
    // Ctrl-C in a terminal: /readyz fails at once, serving goes on for the delay, exit 0.
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let (mut server, https, metrics) = start_serving(dir.path(), &["--shutdown-delay", "1s"]).await;
    signal(&server, "-INT");
    eventually("/readyz answers 503", || async { readyz(metrics).await == Some(503) }).await;
    assert!(tokio::net::TcpStream::connect(https).await.is_ok(), "listener closed before the shutdown delay");
    let started = Instant::now();
    let status = exit_status(&mut server).await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(started.elapsed() >= Duration::from_millis(500), "exited before the shutdown delay");
    assert!(log.contains("SIGINT received") && log.contains("shutdown complete"), "{log}");
}

#[tokio::test]
async fn a_second_ctrl_c_cuts_the_shutdown_delay_short() {
    // Ctrl-C twice in a terminal: no waiting out a long delay; still a clean exit.
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let (mut server, _https, metrics) = start_serving(dir.path(), &["--shutdown-delay", "60s"]).await;
    signal(&server, "-INT");
    eventually("/readyz answers 503", || async { readyz(metrics).await == Some(503) }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.0.try_wait().unwrap().is_none(), "exited before the shutdown delay ended");
    let started = Instant::now();
    signal(&server, "-INT");
    let status = exit_status(&mut server).await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(started.elapsed() < Duration::from_secs(5), "the second SIGINT did not end the 60s delay");
    assert!(log.contains("shutdown delay cut short") && log.contains("shutdown complete"), "{log}");
}
