//! What an operator sees of a running server (issue 11, docs/operating.md "Metrics"), over real
//! sockets: process_* metrics, the in-flight gauge, latency buckets up to the largest deadline,
//! 404/405 counted, content negotiation of /metrics, a denial's reasons in its log line, TLS
//! handshake failures logged at warn (rate-limited), the listen backlog and the connection cap.

mod common;

use std::time::{Duration, SystemTime};

use common::{
    Pki, RawHttp1, ServerProcess, TestServer, client, client_tls, metric, plain_client, post_review, review_of,
    serve_args,
};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

fn self_signed(dir: &tempfile::TempDir, extra: &[&str]) -> divert_webhook::server::ServeArgs {
    let ca = dir.path().join("ca.pem");
    let mut flags = vec!["--self-signed", "--write-ca", ca.to_str().unwrap()];
    flags.extend_from_slice(extra);
    serve_args(&flags)
}

fn ca_of(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("ca.pem")).unwrap()
}

/// The JSON log lines of the server, parsed.
fn log_lines(server: &ServerProcess) -> Vec<Value> {
    server.log().lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !check() {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn process_metrics_describe_the_server_process() {
    let server = ServerProcess::start(&[]).await;
    let text = plain_client().get(format!("http://{}/metrics", server.metrics)).send().await.unwrap();
    let text = text.text().await.unwrap();
    let rss = metric(&text, "process_resident_memory_bytes");
    let status_rss = common::proc_status(server.pid(), "VmRSS").unwrap() as f64 * 1024.0;
    assert!(rss > 1e6 && (rss - status_rss).abs() < status_rss / 2.0, "RSS {rss} vs /proc status {status_rss}");
    assert!(metric(&text, "process_open_fds") >= 5.0, "stdio, two listeners, epoll...");
    assert!(metric(&text, "process_max_fds") >= metric(&text, "process_open_fds"));
    assert!(metric(&text, "process_virtual_memory_bytes") > rss);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    let start = metric(&text, "process_start_time_seconds");
    assert!(start <= now + 1.0 && start > now - 60.0, "start {start}, now {now}");
    assert!(text.contains("# TYPE process_cpu_seconds counter\n"));
    assert!(text.lines().any(|l| l.starts_with("process_cpu_seconds_total ")));
}

#[tokio::test]
async fn the_in_flight_gauge_counts_reviews_until_they_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(self_signed(&dir, &[])).await;
    let in_flight = "divert_webhook_reviews_in_flight";
    assert_eq!(metric(&server.metrics_text().await, in_flight), 0.0);

    // A review whose body is still being sent is in flight.
    let body = serde_json::to_vec(&common::fixture("namespace-create.json")).unwrap();
    let mut slow = RawHttp1::connect(server.https, &ca_of(&dir)).await;
    slow.send_head("/mutate", body.len()).await;
    slow.write(&body[..10]).await;
    let mut second = RawHttp1::connect(server.https, &ca_of(&dir)).await;
    second.send_head("/validate", body.len()).await;
    let metrics = server.metrics;
    let scrape = || async move {
        let text = plain_client().get(format!("http://{metrics}/metrics")).send().await.unwrap();
        metric(&text.text().await.unwrap(), in_flight)
    };
    let started = std::time::Instant::now();
    while scrape().await != 2.0 {
        assert!(started.elapsed() < Duration::from_secs(10), "two reviews never showed in flight");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    slow.write(&body[10..]).await;
    assert_eq!(slow.read_response().await.unwrap().status, 200);
    assert_eq!(scrape().await, 1.0);
    drop(second); // the client went away mid-body: the review ends too
    let started = std::time::Instant::now();
    while scrape().await != 0.0 {
        assert!(started.elapsed() < Duration::from_secs(10), "an abandoned review stayed in flight");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn latency_buckets_reach_the_largest_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(self_signed(&dir, &[])).await;
    post_review(
        &client(&ca_of(&dir), &[b"http/1.1"], None),
        &server.url("/mutate"),
        &common::fixture("namespace-create.json"),
    )
    .await;
    let text = server.metrics_text().await;
    let bounds: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.starts_with("divert_webhook_review_duration_seconds_bucket{") && l.contains("endpoint=\"mutate\"")
        })
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next()?.parse().ok())
        .collect();
    let finite: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
    assert_eq!(finite.last(), Some(&30.0), "the largest --request-timeout is 30 s: {bounds:?}");
    assert!(finite.contains(&5.0) && finite.contains(&10.0), "the apiserver's default timeouts: {bounds:?}");
    assert!(bounds.iter().any(|b| b.is_infinite()));
    server.stop().await;
}

#[tokio::test]
async fn requests_to_no_route_or_with_a_wrong_method_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(self_signed(&dir, &[])).await;
    let https = client(&ca_of(&dir), &[b"http/1.1"], None);
    assert_eq!(https.get(server.url("/mutate")).send().await.unwrap().status(), 405);
    assert_eq!(https.get(server.url("/validate")).send().await.unwrap().status(), 405);
    assert_eq!(https.post(server.url("/nothing")).send().await.unwrap().status(), 404);
    let plain = plain_client();
    let metrics = |path: &str| format!("http://{}{path}", server.metrics);
    assert_eq!(plain.post(metrics("/metrics")).send().await.unwrap().status(), 405);
    assert_eq!(plain.get(metrics("/nothing")).send().await.unwrap().status(), 404);
    assert_eq!(plain.get(metrics("/")).send().await.unwrap().status(), 404);

    let text = server.metrics_text().await;
    let count = |listener: &str, status: &str| {
        metric(&text, &format!("divert_webhook_unrouted_requests_total{{listener=\"{listener}\",status=\"{status}\"}}"))
    };
    assert_eq!(count("admission", "405"), 2.0);
    assert_eq!(count("admission", "404"), 1.0);
    assert_eq!(count("metrics", "405"), 1.0);
    assert_eq!(count("metrics", "404"), 2.0);
    server.stop().await;
}

/// The Prometheus text format 0.0.4, checked line by line: every sample belongs to the family
/// of the `# TYPE` line before it, under the name that format gives it.
fn check_text_004(text: &str) {
    let mut family: Option<(String, String)> = None;
    for line in text.lines() {
        assert!(!line.starts_with("# EOF") && !line.starts_with("# UNIT"), "{line}");
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line}");
            family = Some((name.to_string(), kind.to_string()));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            let next = text.lines().skip_while(|l| *l != line).nth(1).unwrap();
            assert!(next.starts_with(&format!("# TYPE {name} ")), "HELP {name} is not followed by its TYPE");
            continue;
        }
        let (name, kind) = family.as_ref().unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
        let sample = line.split(['{', ' ']).next().unwrap();
        let allowed: Vec<String> = match kind.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"].iter().map(|s| format!("{name}{s}")).collect(),
            _ => vec![name.clone()],
        };
        assert!(allowed.iter().any(|a| a == sample), "{sample} under # TYPE {name} {kind}");
    }
}

#[tokio::test]
async fn metrics_are_the_text_format_for_a_client_that_asks_only_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(self_signed(&dir, &[])).await;
    post_review(
        &client(&ca_of(&dir), &[b"http/1.1"], None),
        &server.url("/mutate"),
        &common::fixture("namespace-create.json"),
    )
    .await;
    let url = format!("http://{}/metrics", server.metrics);
    let fetch = |accept: Option<&'static str>| {
        let mut request = plain_client().get(&url);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        async move {
            let response = request.send().await.unwrap();
            let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
            (content_type, response.text().await.unwrap())
        }
    };
    const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
    // Prometheus 2.x's scrape header: OpenMetrics preferred.
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    for accept in [None, Some(prometheus), Some("*/*"), Some("text/plain;q=0, application/json")] {
        let (content_type, body) = fetch(accept).await;
        assert_eq!(content_type, OPENMETRICS, "{accept:?}");
        assert!(body.ends_with("# EOF\n"), "{accept:?}");
    }
    for accept in
        ["text/plain", "text/plain;version=0.0.4;q=0.9,*/*;q=0.1", "application/openmetrics-text;q=0, text/plain"]
    {
        let (content_type, body) = fetch(Some(accept)).await;
        assert_eq!(content_type, TEXT, "{accept}");
        check_text_004(&body);
        assert!(body.contains("# TYPE divert_webhook_reviews_total counter\n"), "{body}");
        assert!(body.contains("# TYPE divert_webhook_build_info gauge\n"));
        assert!(body.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(body.contains("# TYPE divert_webhook_review_duration_seconds histogram\n"));
        // Same samples as the OpenMetrics answer.
        let (_, openmetrics) = fetch(None).await;
        let samples = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.starts_with("process_") && !l.contains("reviews_in_flight"))
                .map(|l| l.split(' ').next().unwrap().to_string())
                .collect()
        };
        assert_eq!(samples(&body), samples(&openmetrics));
    }
    server.stop().await;
}

#[tokio::test]
async fn a_denials_log_line_names_its_reasons() {
    let server = ServerProcess::start(&[]).await;
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "typo", "labels": {"istio-injection": "enable"}}});
    let review = review_of("uid-denied", ("", "v1", "Namespace"), "namespaces", "CREATE", namespace);
    let answer = post_review(&client(&server.ca_pem, &[b"http/1.1"], None), &server.url("/validate"), &review).await;
    assert_eq!(answer["response"]["allowed"], false);
    eventually("the review's log line", || log_lines(&server).iter().any(|l| l["fields"]["uid"] == "uid-denied")).await;
    let lines = log_lines(&server);
    let line = lines.iter().find(|l| l["fields"]["uid"] == "uid-denied").unwrap();
    assert_eq!(line["fields"]["decision"], "denied");
    assert_eq!(line["fields"]["reasons"], "invalid-istio-injection");
    assert_eq!(line["level"], "INFO");
}

#[tokio::test]
async fn tls_handshake_failures_are_warned_once_per_class_and_interval() {
    let server = ServerProcess::start(&[]).await;
    // A client that trusts another CA, as the apiserver with a wrong caBundle: it refuses the
    // serving certificate. Three times: one warning, three counted.
    let wrong = Pki::new("not the webhook's CA");
    for _ in 0..3 {
        let refused = common::tls_connect(server.https, client_tls(&wrong.ca_pem(), &[b"http/1.1"], None)).await;
        assert!(refused.is_err());
    }
    // Plain HTTP to the HTTPS port.
    let mut plain = TcpStream::connect(server.https).await.unwrap();
    plain.write_all(b"GET /mutate HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut ignored = Vec::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut ignored))
            .await;

    let warned = |class: &str| -> usize {
        log_lines(&server).iter().filter(|l| l["level"] == "WARN" && l["fields"]["class"] == class).count()
    };
    eventually("the not-tls warning", || warned("not-tls") == 1).await;
    assert_eq!(warned("client-rejected-certificate"), 1, "{}", server.log());
    let lines = log_lines(&server);
    let line = lines.iter().find(|l| l["fields"]["class"] == "client-rejected-certificate").unwrap();
    assert!(line["fields"]["message"].as_str().unwrap().contains("caBundle"), "{line}");
    assert!(line["fields"]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(line["fields"]["suppressed"], 0);

    let text = plain_client().get(format!("http://{}/metrics", server.metrics)).send().await.unwrap();
    let text = text.text().await.unwrap();
    let class =
        |c: &str| metric(&text, &format!("divert_webhook_tls_handshake_failures_by_class_total{{class=\"{c}\"}}"));
    assert_eq!(class("client-rejected-certificate"), 3.0);
    assert_eq!(class("not-tls"), 1.0);
    assert_eq!(metric(&text, "divert_webhook_tls_handshake_failures_total"), 4.0);
}

/// 600 connects at once to a server that accepts none yet: the kernel completes them all into
/// the backlog (1024). tokio's default backlog (128) would leave most of them waiting for a
/// SYN retransmission (a second or more).
#[tokio::test]
async fn the_listen_backlog_holds_a_burst_of_connects() {
    common::raise_open_files_limit(1400);
    let dir = tempfile::tempdir().unwrap();
    let server = divert_webhook::server::Server::bind(self_signed(&dir, &[]), Default::default()).await.unwrap();
    for addr in [server.https_addr(), server.metrics_addr()] {
        let connects: Vec<_> = (0..600)
            .map(|_| tokio::spawn(tokio::time::timeout(Duration::from_millis(900), TcpStream::connect(addr))))
            .collect();
        let mut completed = Vec::new();
        for connect in connects {
            if let Ok(Ok(stream)) = connect.await.unwrap() {
                completed.push(stream);
            }
        }
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap_or_default();
        assert_eq!(
            completed.len(),
            600,
            "connects to {addr} completed before any accept (the kernel caps the backlog at net.core.somaxconn = {})",
            somaxconn.trim()
        );
    }
}

/// At --max-connections nothing more is accepted: the next connection waits in the backlog
/// (its TLS handshake does not start) until one closes, and is then served.
#[tokio::test]
async fn beyond_the_connection_cap_new_connections_wait_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(self_signed(&dir, &["--max-connections", "2"])).await;
    let ca = ca_of(&dir);
    let first = RawHttp1::connect(server.https, &ca).await;
    let mut second = RawHttp1::connect(server.https, &ca).await;
    let body = serde_json::to_vec(&common::fixture("namespace-create.json")).unwrap();
    assert_eq!(second.post("/mutate", &body).await.status, 200);

    let text = server.metrics_text().await;
    assert_eq!(metric(&text, "divert_webhook_connections{listener=\"admission\"}"), 2.0);
    assert_eq!(metric(&text, "divert_webhook_connections_limit{listener=\"admission\"}"), 2.0);

    let third = tokio::spawn(common::tls_connect(server.https, client_tls(&ca, &[b"http/1.1"], None)));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!third.is_finished(), "a third connection was served beyond --max-connections 2");
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(5), third).await.expect("served once one closed");
    third.unwrap().expect("TLS handshake");
    second.post("/mutate", &body).await;
    server.stop().await;
}
