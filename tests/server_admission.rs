//! The admission endpoints over real TLS sockets with real HTTP clients (SPEC §8).

mod common;

use std::time::{Duration, Instant};

use common::{RawHttp1, TestServer, fixture, http1_client, metric, post_review, response_patch, review_of, serve_args};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

/// A server with --self-signed, and the CA it wrote with --write-ca.
async fn self_signed_server(extra: &[&str]) -> (TestServer, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    let mut args = vec!["--self-signed", "--write-ca", ca_path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let server = TestServer::start(serve_args(&args)).await;
    let ca_pem = std::fs::read_to_string(&ca_path).expect("--write-ca wrote the CA");
    (server, ca_pem, dir)
}

#[tokio::test]
async fn managed_namespace_is_patched_and_the_patched_object_needs_no_patch() {
    let (server, ca, _dir) = self_signed_server(&[]).await;
    let client = http1_client(&ca);
    let review = fixture("namespace-create.json");

    let answer = post_review(&client, &server.url("/mutate?timeout=10s"), &review).await;
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    assert_eq!(answer["response"]["allowed"], true);
    let patch = response_patch(&answer).expect("a patch");
    let mut patched = review["request"]["object"].clone();
    json_patch::patch(&mut patched, &patch).expect("the patch applies to the request object");
    assert_eq!(
        patched["metadata"]["labels"],
        json!({"dev.okteto.com/okteto-managed": "true", "kubernetes.io/metadata.name": "cindy", "istio-injection": "enabled"})
    );
    let mut unpatched_rest = patched.clone();
    unpatched_rest["metadata"]["labels"].as_object_mut().unwrap().remove("istio-injection");
    assert_eq!(unpatched_rest, review["request"]["object"], "nothing but the label changed");

    let mut again = review.clone();
    again["request"]["object"] = patched;
    again["request"]["operation"] = json!("UPDATE");
    let answer = post_review(&client, &server.url("/mutate?timeout=10s"), &again).await;
    assert_eq!(answer["response"]["allowed"], true);
    let response = answer["response"].as_object().unwrap();
    assert!(!response.contains_key("patch") && !response.contains_key("patchType"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn answers_echo_the_uid_and_dry_run_gets_the_same_answer() {
    let (server, ca, _dir) = self_signed_server(&[]).await;
    let client = http1_client(&ca);
    for (path, name) in [("/mutate", "namespace-create.json"), ("/validate", "namespace-mesh-conflict.json")] {
        let mut review = fixture(name);
        review["request"]["uid"] = json!(format!("uid-{name}"));
        let answer = post_review(&client, &server.url(path), &review).await;
        assert_eq!(answer["response"]["uid"], format!("uid-{name}"));
        review["request"]["dryRun"] = json!(true);
        let dry_answer = post_review(&client, &server.url(path), &review).await;
        assert_eq!(dry_answer, answer, "{path} {name}");
    }
    // The validating answer is a denial naming the fix.
    let answer = post_review(&client, &server.url("/validate"), &fixture("namespace-mesh-conflict.json")).await;
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 403);
    assert!(answer["response"]["status"]["message"].as_str().unwrap().contains("remove one of them"));
    server.stop().await;
}

#[tokio::test]
async fn unknown_kinds_and_delete_are_allowed_without_patch() {
    let (server, ca, _dir) = self_signed_server(&[]).await;
    let client = http1_client(&ca);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "cindy"},
                     "spec": {"containers": [{"name": "web", "image": "nginx"}]}});
    let managed_namespace = fixture("namespace-create.json")["request"]["object"].clone();
    let reviews = [
        review_of("pod-create", ("", "v1", "Pod"), "pods", "CREATE", pod),
        review_of("ns-delete", ("", "v1", "Namespace"), "namespaces", "DELETE", managed_namespace),
    ];
    for review in reviews {
        for path in ["/mutate", "/validate"] {
            let answer = post_review(&client, &server.url(path), &review).await;
            assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
            assert_eq!(answer["response"]["allowed"], true, "{path}: {answer}");
            assert!(answer["response"].get("patch").is_none(), "{path}: {answer}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn unreadable_bodies_get_400_with_one_line_reason() {
    let (server, ca, _dir) = self_signed_server(&[]).await;
    let client = http1_client(&ca);
    let not_a_review = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod"})).unwrap();
    for body in [b"{not json at all\n\n".to_vec(), not_a_review, Vec::new()] {
        let response = client.post(server.url("/mutate")).body(body.clone()).send().await.unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()["content-type"], "text/plain; charset=utf-8");
        let reason = response.text().await.unwrap();
        let reason = reason.strip_suffix('\n').unwrap();
        assert!(!reason.is_empty() && !reason.contains('\n'), "{reason:?}");
    }
    server.stop().await;
}

/// SPEC §8: every well-formed review gets HTTP 200. A `?timeout=` that cannot be read is ignored
/// (--request-timeout applies, a warning is logged); the review is answered and counted.
#[tokio::test]
async fn an_unreadable_timeout_is_ignored_and_the_review_answered() {
    let (server, ca, _dir) = self_signed_server(&[]).await;
    let client = http1_client(&ca);
    let allowed =
        r#"divert_webhook_reviews_total{endpoint="validate",kind="Namespace",operation="CREATE",outcome="allowed"}"#;
    let latency = r#"divert_webhook_review_duration_seconds_count{endpoint="validate"}"#;
    let before = server.metrics_text().await;
    let queries = ["timeout=soon", "timeout=-5s", "timeout=", "timeout=0s", "a=1&timeout=10x"];
    for (n, query) in queries.iter().enumerate() {
        let mut review = fixture("namespace-create.json");
        review["request"]["uid"] = json!(format!("timeout-{n}"));
        let answer = post_review(&client, &server.url(&format!("/validate?{query}")), &review).await;
        assert_eq!(answer["response"]["uid"], format!("timeout-{n}"), "{query}");
        assert_eq!(answer["response"]["allowed"], true, "{query}");
    }
    let after = server.metrics_text().await;
    let delta = |sample: &str| metric(&after, sample) - metric(&before, sample);
    assert_eq!(delta(allowed), queries.len() as f64, "{after}");
    assert_eq!(delta(latency), queries.len() as f64, "{after}");
    server.stop().await;
}

const MIB: usize = 1024 * 1024;

/// Runs a client on its own OS thread with its own runtime, as a remote client: the server's
/// socket handling is seen from outside. A reset sent by the server's kernel (closing a socket
/// with unread data) then fails the request here, which a client sharing the server's
/// current-thread runtime cannot observe.
async fn on_client_thread<C, F, T>(client: C) -> T
where
    C: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = T>,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(client())
    })
    .await
    .unwrap()
}

/// POSTs `size` bytes of spaces as a chunked body (no length declared) on a new connection.
async fn chunked_post(
    https: std::net::SocketAddr,
    ca: &str,
    path: &str,
    size: usize,
) -> std::io::Result<common::RawResponse> {
    let mut raw = RawHttp1::connect(https, ca).await;
    raw.try_write(format!("POST {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n").as_bytes()).await?;
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < size {
        raw.try_write(format!("{:x}\r\n", chunk.len()).as_bytes()).await?;
        raw.try_write(&chunk).await?;
        raw.try_write(b"\r\n").await?;
        sent += chunk.len();
    }
    raw.try_write(b"0\r\n\r\n").await?;
    raw.try_read_response().await
}

/// The 413 reaches the client every time, with and without a declared length: the server reads
/// (and discards) the rest of the body before answering and closing, so closing does not reset
/// the connection under the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_3_mib_get_413_every_time_never_a_reset() {
    let (server, ca, _dir) = self_signed_server(&[]).await;
    let (url, https) = (server.url("/mutate"), server.https);
    let failures = on_client_thread(move || async move {
        let client = http1_client(&ca);
        let mut failures = Vec::new();
        for attempt in 0..10 {
            // reqwest declares the length and sends no `Expect: 100-continue`.
            match client.post(&url).body(vec![b' '; 4 * MIB]).send().await {
                Ok(response) => {
                    let (status, connection) = (response.status(), response.headers().get("connection").cloned());
                    let text = response.text().await.unwrap_or_default();
                    if status != 413 || connection.as_ref().is_none_or(|c| c != "close") || !text.contains("limit") {
                        failures.push(format!("{attempt}, content-length: {status} {connection:?} {text:?}"));
                    }
                }
                Err(error) => failures.push(format!("{attempt}, content-length: {error:?}")),
            }
            match chunked_post(https, &ca, "/mutate", 4 * MIB).await {
                Ok(response) if response.status == 413 && response.header("connection") == Some("close") => {}
                Ok(response) => {
                    failures.push(format!("{attempt}, chunked: {} {:?}", response.status, response.headers))
                }
                Err(error) => failures.push(format!("{attempt}, chunked: {error:?}")),
            }
        }
        failures
    })
    .await;
    assert!(failures.is_empty(), "requests that got no 413: {failures:#?}");
    let metrics = server.metrics_text().await;
    let invalid =
        r#"divert_webhook_reviews_total{endpoint="mutate",kind="unknown",operation="unknown",outcome="invalid"}"#;
    assert_eq!(metric(&metrics, invalid), 20.0, "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn a_too_large_declared_length_with_expect_continue_or_beyond_19_mib_is_refused_before_the_body() {
    let (server, ca, _dir) = self_signed_server(&[]).await;
    let mut raw = RawHttp1::connect(server.https, &ca).await;
    let head =
        format!("POST /mutate HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n", 4 * MIB);
    raw.write(head.as_bytes()).await;
    // No body is sent: the answer comes without a `100 Continue` and without waiting for it.
    let response = raw.read_response().await.expect("a response");
    assert_eq!(response.status, 413);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(raw.closed_by_server().await);

    // A declared length beyond what the server would read anyway (19 MiB) is answered at once,
    // not after waiting (until the 30s deadline) for a body it would not read to its end.
    let mut raw = RawHttp1::connect(server.https, &ca).await;
    raw.write(format!("POST /mutate HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n", 100 * MIB).as_bytes()).await;
    let asked = Instant::now();
    let response = raw.read_response().await.expect("a response");
    assert_eq!(response.status, 413);
    assert!(asked.elapsed() < Duration::from_secs(5), "answered after {:?}", asked.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn a_body_just_under_3_mib_is_read() {
    let (server, ca, _dir) = self_signed_server(&[]).await;
    let client = http1_client(&ca);
    // Read in full, and it is not a review.
    let response = client.post(server.url("/mutate")).body(vec![b' '; 3 * MIB]).send().await.unwrap();
    assert_eq!(response.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn other_paths_404_and_other_methods_405() {
    let (server, ca, _dir) = self_signed_server(&[]).await;
    let client = http1_client(&ca);
    assert_eq!(client.get(server.url("/mutate")).send().await.unwrap().status(), 405);
    assert_eq!(client.put(server.url("/validate")).send().await.unwrap().status(), 405);
    assert_eq!(client.post(server.url("/admit")).send().await.unwrap().status(), 404);
    assert_eq!(client.get(server.url("/metrics")).send().await.unwrap().status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn h2_is_served_through_alpn() {
    let (server, ca, _dir) = self_signed_server(&[]).await;
    let client = common::client(&ca, &[b"h2", b"http/1.1"], None);
    let mut requests = Vec::new();
    for n in 0..5 {
        let mut review = fixture("namespace-create.json");
        review["request"]["uid"] = json!(format!("h2-{n}"));
        requests.push(client.post(server.url("/mutate?timeout=10s")).json(&review).send());
    }
    for (n, response) in futures_join_all(requests).await.into_iter().enumerate() {
        let response = response.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["response"]["uid"], format!("h2-{n}"));
        assert!(response_patch(&answer).is_some());
    }
    server.stop().await;
}

/// Awaits the futures concurrently on the current task's runtime.
async fn futures_join_all<F: std::future::Future + Send + 'static>(futures: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

#[tokio::test]
async fn http1_keep_alive_serves_several_reviews_on_one_connection() {
    let (server, ca, _dir) = self_signed_server(&[]).await;
    let mut connection = RawHttp1::connect(server.https, &ca).await;
    for n in 0..4 {
        let mut review = fixture("namespace-create.json");
        review["request"]["uid"] = json!(format!("keep-alive-{n}"));
        let path = if n % 2 == 0 { "/mutate?timeout=10s" } else { "/validate?timeout=10s" };
        let response = connection.post(path, &serde_json::to_vec(&review).unwrap()).await;
        assert_eq!(response.status, 200);
        assert_ne!(response.header("connection"), Some("close"));
        let answer: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(answer["response"]["uid"], format!("keep-alive-{n}"));
    }
    server.stop().await;
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_header_timeout_while_others_are_served() {
    let (server, ca, _dir) = self_signed_server(&["--header-read-timeout", "700ms"]).await;
    let client = http1_client(&ca);
    let opened = Instant::now();
    // Sends nothing at all (not even a TLS ClientHello).
    let mut silent_tcp = tokio::net::TcpStream::connect(server.https).await.unwrap();
    let silent_tcp = tokio::spawn(async move {
        let mut byte = [0u8; 1];
        let read = silent_tcp.read(&mut byte).await;
        assert!(matches!(read, Ok(0) | Err(_)), "the server sent data: {read:?}");
        opened.elapsed()
    });
    // Finishes the TLS handshake, then sends no request.
    let mut silent_tls = RawHttp1::connect(server.https, &ca).await;
    let silent_tls = tokio::spawn(async move { silent_tls.closed_by_server().await });

    let mut served = 0;
    while !silent_tcp.is_finished() || !silent_tls.is_finished() {
        let mut review = fixture("namespace-create.json");
        review["request"]["uid"] = json!(format!("busy-{served}"));
        let answer = post_review(&client, &server.url("/mutate"), &review).await;
        assert_eq!(answer["response"]["uid"], format!("busy-{served}"));
        served += 1;
        assert!(opened.elapsed() < Duration::from_secs(20), "silent connections were never closed");
    }
    let closed_after = silent_tcp.await.unwrap();
    assert!(closed_after >= Duration::from_millis(700), "closed before the timeout: {closed_after:?}");
    assert!(silent_tls.await.unwrap());
    assert!(served > 0);
    server.stop().await;
}

#[tokio::test]
async fn a_review_past_the_request_timeout_is_abandoned_with_408() {
    let (server, ca, _dir) = self_signed_server(&[]).await;
    let body = serde_json::to_vec(&fixture("namespace-create.json")).unwrap();
    let mut connection = RawHttp1::connect(server.https, &ca).await;
    // The body never completes: the 300ms deadline passes while it is being read.
    connection.send_head("/mutate?timeout=300ms", body.len()).await;
    connection.write(&body[..body.len() / 2]).await;
    let response = connection.read_response().await.expect("an answer at the deadline");
    assert_eq!(response.status, 408);
    assert!(String::from_utf8_lossy(&response.body).contains("timeout"));
    let metrics = server.metrics_text().await;
    assert_eq!(metric(&metrics, r#"divert_webhook_review_timeouts_total{endpoint="mutate"}"#), 1.0);
    // Its latency is observed too: one sample, of at least the deadline (in the 0.5s bucket, not the 0.25s one).
    let sample = |name: &str| metric(&metrics, &format!("divert_webhook_review_duration_seconds_{name}"));
    assert_eq!(sample(r#"count{endpoint="mutate"}"#), 1.0, "{metrics}");
    assert!(sample(r#"sum{endpoint="mutate"}"#) >= 0.3, "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_the_reviews_sent() {
    let (server, ca, _dir) = self_signed_server(&[]).await;
    let client = http1_client(&ca);
    let patched =
        r#"divert_webhook_reviews_total{endpoint="mutate",kind="Namespace",operation="CREATE",outcome="patched"}"#;
    let denied =
        r#"divert_webhook_reviews_total{endpoint="validate",kind="Namespace",operation="CREATE",outcome="denied"}"#;
    let other = r#"divert_webhook_reviews_total{endpoint="mutate",kind="other",operation="CREATE",outcome="allowed"}"#;
    let invalid =
        r#"divert_webhook_reviews_total{endpoint="mutate",kind="unknown",operation="unknown",outcome="invalid"}"#;
    let conflict = r#"divert_webhook_denials_total{reason="mesh-conflict"}"#;
    let latency = r#"divert_webhook_review_duration_seconds_count{endpoint="mutate"}"#;

    let before = server.metrics_text().await;
    for _ in 0..3 {
        post_review(&client, &server.url("/mutate"), &fixture("namespace-create.json")).await;
    }
    post_review(&client, &server.url("/validate"), &fixture("namespace-mesh-conflict.json")).await;
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "cindy"}});
    post_review(
        &client,
        &server.url("/mutate"),
        &review_of("cm", ("", "v1", "ConfigMap"), "configmaps", "CREATE", config_map),
    )
    .await;
    assert_eq!(client.post(server.url("/mutate")).body("nope").send().await.unwrap().status(), 400);
    let after = server.metrics_text().await;

    let delta = |sample: &str| metric(&after, sample) - metric(&before, sample);
    assert_eq!(delta(patched), 3.0, "{after}");
    assert_eq!(delta(denied), 1.0, "{after}");
    assert_eq!(delta(other), 1.0, "{after}");
    assert_eq!(delta(invalid), 1.0, "{after}");
    assert_eq!(delta(conflict), 1.0, "{after}");
    assert_eq!(delta(latency), 5.0, "{after}");
    assert!(after.contains(r#"divert_webhook_build_info{version=""#));
    let expiry = metric(&after, "divert_webhook_certificate_expiry_timestamp_seconds");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as f64;
    assert!(expiry > now, "the self-signed certificate expires in the future: {expiry}");
    server.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let (server, _ca, _dir) = self_signed_server(&[]).await;
    let plain = common::plain_client();
    for path in ["/healthz", "/readyz"] {
        let response = plain.get(format!("http://{}{path}", server.metrics)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    assert_eq!(plain.get(format!("http://{}/other", server.metrics)).send().await.unwrap().status(), 404);
    server.stop().await;
}

/// docs/operating.md: the latency histogram has buckets from 50µs to 30s (the largest deadline).
#[tokio::test]
async fn the_latency_histogram_has_buckets_from_50_microseconds_to_30_seconds() {
    let (server, ca, _dir) = self_signed_server(&[]).await;
    let client = http1_client(&ca);
    for _ in 0..3 {
        post_review(&client, &server.url("/validate"), &fixture("namespace-create.json")).await;
    }
    let text = server.metrics_text().await;
    let prefix = "divert_webhook_review_duration_seconds_bucket{le=\"";
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|line| line.strip_prefix(prefix))
        .filter(|rest| rest.contains(r#"endpoint="validate""#))
        .map(|rest| {
            let (le, rest) = rest.split_once('"').unwrap();
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
            (le, rest.rsplit_once(' ').unwrap().1.parse().unwrap())
        })
        .collect();
    let bounds: Vec<f64> = buckets.iter().map(|(le, _)| *le).collect();
    let expected = [
        5e-5,
        1e-4,
        2.5e-4,
        5e-4,
        1e-3,
        2.5e-3,
        5e-3,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
        30.0,
        f64::INFINITY,
    ];
    assert_eq!(bounds, expected, "{text}");
    // Cumulative counts, ending with every review in +Inf.
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{text}");
    assert_eq!(buckets.last().unwrap().1, 3.0, "{text}");
    assert_eq!(metric(&text, r#"divert_webhook_review_duration_seconds_count{endpoint="validate"}"#), 3.0);
    server.stop().await;
}

/// The apiserver's sequence for one object, over TLS: /mutate, the patch applied, /validate of
/// the result, and (reinvocation) /mutate of the result again, which must change nothing.
async fn mutate_then_validate(
    client: &reqwest::Client,
    server: &TestServer,
    review: &Value,
) -> (Value, Vec<json_patch::PatchOperation>) {
    let answer = post_review(client, &server.url("/mutate?timeout=10s"), review).await;
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let patch = response_patch(&answer).expect("a patch");
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let mut patched = review["request"]["object"].clone();
    json_patch::patch(&mut patched, &patch).expect("the patch applies to the request object");

    let mut stored = review.clone();
    stored["request"]["object"] = patched.clone();
    let validated = post_review(client, &server.url("/validate?timeout=10s"), &stored).await;
    assert_eq!(validated["response"]["allowed"], true, "{validated}");
    let again = post_review(client, &server.url("/mutate?timeout=10s"), &stored).await;
    let response = again["response"].as_object().unwrap();
    assert!(!response.contains_key("patch") && !response.contains_key("patchType"), "reinvocation: {again}");
    (patched, patch.0)
}

#[tokio::test]
async fn a_shared_virtual_service_is_diverted_over_tls() {
    let (server, ca, _dir) = self_signed_server(&[]).await;
    let client = http1_client(&ca);
    let review = fixture("virtualservice-divert.json");
    let (patched, patch) = mutate_then_validate(&client, &server, &review).await;
    // One clone, added right before `api`; nothing replaced.
    assert_eq!(patch.len(), 1, "{patch:?}");
    assert!(matches!(&patch[0], json_patch::PatchOperation::Add(add) if add.path.as_str() == "/spec/http/1"));
    let names: Vec<&str> =
        patched["spec"]["http"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["rentals", "okteto-divert-cindy-api", "api"]);
    assert_eq!(patched["spec"]["http"][1]["route"], json!([{"destination": {"host": "api.cindy.svc.cluster.local"}}]));

    // A broken divert annotation is denied by /validate, naming the field.
    let mut broken = review.clone();
    broken["request"]["object"]["metadata"]["annotations"]["divert.okteto.com/2615052508acbfaddeba0eeded4131631ea31a02"] =
        json!("{\"namespace\":\"Cindy\"}");
    let answer = post_review(&client, &server.url("/validate"), &broken).await;
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.starts_with("VirtualService staging/movies-api: metadata.annotations["), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn a_developer_ingress_gets_the_divert_block_over_tls_under_the_nginx_driver() {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    let args = serve_args(&["--self-signed", "--write-ca", ca_path.to_str().unwrap()]);
    let nginx = divert_webhook::settings::Settings {
        driver: divert_webhook::settings::Driver::Nginx,
        ..divert_webhook::settings::Settings::default()
    };
    let server = TestServer::start_with(args, nginx).await;
    let client = http1_client(&std::fs::read_to_string(&ca_path).unwrap());
    let review = fixture("ingress-header.json");
    let (patched, patch) = mutate_then_validate(&client, &server, &review).await;
    assert_eq!(patch.len(), 1, "only the snippet annotation changes: {patch:?}");
    let snippet =
        patched["metadata"]["annotations"]["nginx.ingress.kubernetes.io/configuration-snippet"].as_str().unwrap();
    assert!(snippet.starts_with("# divert-webhook begin\n"), "{snippet}");
    assert!(snippet.contains("proxy_set_header baggage \"okteto-divert=cindy"), "{snippet}");
    assert!(snippet.ends_with("# divert-webhook end\nmore_set_headers \"Request-Id: $req_id\";\n"), "{snippet}");
    server.stop().await;
}

/// SPEC §8 (issue 8, item 5): a custom resource nested 10 000 levels deep (the apiserver
/// accepts that many) is a well-formed review of a kind without rules: 200, allowed, nothing
/// read. An object of a handled kind nested past 128 levels gets 200 too: left unchanged by
/// /mutate (with a warning), denied by /validate.
#[tokio::test]
async fn deeply_nested_objects_get_200() {
    let (server, ca, _dir) = self_signed_server(&[]).await;
    let client = http1_client(&ca);
    let review = |group: &str, kind: &str, depth: usize| {
        let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        format!(
            r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{"uid":"deep","kind":{{"group":"{group}","version":"v1","kind":"{kind}"}},"resource":{{"group":"{group}","version":"v1","resource":"x"}},"name":"x","namespace":"staging","operation":"CREATE","userInfo":{{"username":"u"}},"object":{{"apiVersion":"{group}/v1","kind":"{kind}","metadata":{{"name":"x","namespace":"staging"}},"spec":{{"x":{nested}}}}},"oldObject":null,"dryRun":false}}}}"#
        )
    };
    for path in ["/mutate", "/validate"] {
        let response = client.post(server.url(path)).body(review("example.com", "Thing", 10_000)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["response"]["allowed"], true, "{path}: {answer}");
        assert_eq!(answer["response"]["uid"], "deep");
    }
    let deep_vs = review("networking.istio.io", "VirtualService", 200);
    let response = client.post(server.url("/mutate")).body(deep_vs.clone()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());
    assert!(answer["response"]["warnings"][0].as_str().unwrap().contains("128 levels"), "{answer}");
    let response = client.post(server.url("/validate")).body(deep_vs).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    server.stop().await;
}
