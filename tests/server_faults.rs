//! Faults on the admission port (SPEC §8 bounded resources, §9), each with the server serving
//! other clients during and after it: slow clients, thousands of idle connections, clients that
//! vanish mid-body, bytes that are not TLS, wrong client certificates, certificate files turned
//! to garbage, SIGTERM under load, and 50 concurrent worst-case reviews under the deployment's
//! memory limit.

mod common;

use std::collections::HashMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    Pki, RawHttp1, ServerProcess, TestServer, client_tls, fixture, http1_client, metric, post_review, proc_status,
    serve_args, tls_connect,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HANDSHAKE_FAILURES: &str = "divert_webhook_tls_handshake_failures_total";

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

fn namespace_review(uid: &str) -> Value {
    let mut review = fixture("namespace-create.json");
    review["request"]["uid"] = json!(uid);
    review
}

/// Reviews sent one after another on one keep-alive client while `busy` is set, each checked
/// (HTTP 200, the uid echoed); returns how many were answered and the slowest answer.
fn serve_others_while(
    client: reqwest::Client,
    url: String,
    busy: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Duration)> {
    tokio::spawn(async move {
        let (mut served, mut slowest) = (0, Duration::ZERO);
        while busy.load(Ordering::SeqCst) {
            let uid = format!("other-{served}");
            let started = Instant::now();
            let answer = post_review(&client, &url, &namespace_review(&uid)).await;
            slowest = slowest.max(started.elapsed());
            assert_eq!(answer["response"]["uid"], uid.as_str());
            served += 1;
        }
        (served, slowest)
    })
}

/// How a trickled connection ended.
#[derive(Debug)]
struct Trickled {
    /// From the TCP connect to the server closing the connection or answering.
    after: Duration,
    /// Bytes of the trickled part sent before that.
    sent: usize,
    /// What the server sent back (an HTTP response head, or nothing).
    received: Vec<u8>,
}

/// Connects over TLS, sends `prefix` at once, then `trickle` one byte every 100 ms until the
/// server closes the connection or starts an answer (whose head is then read).
async fn trickle_over_tls(addr: SocketAddr, ca_pem: String, prefix: Vec<u8>, trickle: Vec<u8>) -> Trickled {
    let started = Instant::now();
    let stream = tls_connect(addr, client_tls(&ca_pem, &[b"http/1.1"], None)).await.expect("TLS connects");
    let (reader, mut writer) = tokio::io::split(stream);
    writer.write_all(&prefix).await.unwrap();
    writer.flush().await.unwrap();
    trickle_on(started, reader, writer, trickle).await
}

async fn trickle_on<R, W>(started: Instant, mut reader: R, mut writer: W, trickle: Vec<u8>) -> Trickled
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin,
{
    // Reads until the server closes, or until a response head is complete.
    let read = tokio::spawn(async move {
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => return (received, started.elapsed()),
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
            if received.windows(4).any(|w| w == b"\r\n\r\n") {
                return (received, started.elapsed());
            }
        }
    });
    let mut sent = 0;
    while sent < trickle.len() && !read.is_finished() {
        if writer.write_all(&trickle[sent..sent + 1]).await.is_err() || writer.flush().await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (received, after) = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the server neither closed the trickled connection nor answered")
        .unwrap();
    Trickled { after, sent, received }
}

fn post_head(path: &str, content_length: usize) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {content_length}\r\n\r\n"
    )
    .into_bytes()
}

/// The first flight of a TLS client (its ClientHello), as raw bytes.
fn client_hello(ca_pem: &str) -> Vec<u8> {
    let config = Arc::new(client_tls(ca_pem, &[b"http/1.1"], None));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut connection = rustls::ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    while connection.wants_write() {
        connection.write_tls(&mut hello).unwrap();
    }
    hello
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_trickling_heads_and_bodies_are_cut_at_their_deadlines_while_others_are_served() {
    const DEADLINE: Duration = Duration::from_secs(3);
    let (server, ca, _dir) =
        self_signed_server(&["--header-read-timeout", "3s", "--idle-timeout", "3s", "--request-timeout", "3s"]).await;
    let body = serde_json::to_vec(&namespace_review("trickled")).unwrap();
    let head = post_head("/mutate", body.len());

    let busy = Arc::new(AtomicBool::new(true));
    let others = serve_others_while(http1_client(&ca), server.url("/mutate"), busy.clone());

    // The TLS handshake itself, one byte at a time: cut at the header read timeout.
    let hello = client_hello(&ca);
    let handshake = tokio::spawn({
        let addr = server.https;
        async move {
            let started = Instant::now();
            let (reader, writer) = TcpStream::connect(addr).await.unwrap().into_split();
            trickle_on(started, reader, writer, hello).await
        }
    });
    // The first request head: cut at the header read timeout (counted from the accept).
    let first_head = tokio::spawn(trickle_over_tls(server.https, ca.clone(), Vec::new(), head.clone()));
    // The body, after a head sent at once: answered 408 at the request's deadline.
    let slow_body = tokio::spawn(trickle_over_tls(server.https, ca.clone(), head.clone(), body.clone()));
    // The head of a second request on a keep-alive connection: cut at the idle timeout.
    let second_head = tokio::spawn({
        let (addr, ca, head, body) = (server.https, ca.clone(), head.clone(), body.clone());
        async move {
            let mut connection = RawHttp1::connect(addr, &ca).await;
            assert_eq!(connection.post("/validate", &body).await.status, 200);
            let started = Instant::now();
            let mut sent = 0;
            for byte in &head {
                if connection.try_write(std::slice::from_ref(byte)).await.is_err() {
                    break;
                }
                sent += 1;
                // Reading for 100 ms is the pause between two bytes.
                let closed = tokio::time::timeout(Duration::from_millis(100), connection.closed_by_server()).await;
                if closed == Ok(true) {
                    break;
                }
            }
            Trickled { after: started.elapsed(), sent, received: Vec::new() }
        }
    });

    let (handshake, first_head, slow_body, second_head) = tokio::join!(handshake, first_head, slow_body, second_head);
    let (handshake, first_head, slow_body, second_head) =
        (handshake.unwrap(), first_head.unwrap(), slow_body.unwrap(), second_head.unwrap());
    busy.store(false, Ordering::SeqCst);
    let (served, slowest) = others.await.unwrap();

    for (what, trickled, total) in [
        ("the TLS handshake", &handshake, client_hello(&ca).len()),
        ("the first request head", &first_head, head.len()),
        ("the second request head", &second_head, head.len()),
    ] {
        assert!(trickled.sent < total, "{what}: sent whole ({trickled:?})");
        assert!(
            trickled.after >= DEADLINE - Duration::from_millis(200) && trickled.after < DEADLINE * 3,
            "{what}: not cut at its deadline of {DEADLINE:?}: {trickled:?}"
        );
        assert!(!trickled.received.starts_with(b"HTTP/1.1 200"), "{what}: answered {trickled:?}");
    }
    assert!(slow_body.sent < body.len(), "the slow body was read whole: {slow_body:?}");
    assert!(slow_body.received.starts_with(b"HTTP/1.1 408"), "{:?}", String::from_utf8_lossy(&slow_body.received));
    assert!(
        slow_body.after >= DEADLINE - Duration::from_millis(200) && slow_body.after < DEADLINE * 3,
        "{slow_body:?}"
    );

    // The others were served all along, none waiting anywhere near a trickler's deadline.
    assert!(served >= 5, "only {served} other reviews answered in {DEADLINE:?}");
    assert!(slowest < Duration::from_secs(2), "another client waited {slowest:?}");
    assert_eq!(
        post_review(&http1_client(&ca), &server.url("/validate"), &namespace_review("after")).await["response"]["uid"],
        "after"
    );
    server.stop().await;
}

/// Open file descriptors of this process (the in-process server's sockets among them).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_mid_body_are_dropped_at_once_while_others_are_served() {
    // Deadlines far away: what frees the connections must be noticing the client left.
    let (server, ca, _dir) = self_signed_server(&["--request-timeout", "60s", "--header-read-timeout", "60s"]).await;
    let client = http1_client(&ca);
    post_review(&client, &server.url("/mutate"), &namespace_review("warm-up")).await;
    let before = open_fds();

    let busy = Arc::new(AtomicBool::new(true));
    let others = serve_others_while(client.clone(), server.url("/validate"), busy.clone());
    let body = serde_json::to_vec(&namespace_review("vanishing")).unwrap();
    let mut vanishing = Vec::new();
    for n in 0..60 {
        let (addr, ca, body) = (server.https, ca.clone(), body.clone());
        vanishing.push(tokio::spawn(async move {
            let mut stream = tls_connect(addr, client_tls(&ca, &[b"http/1.1"], None)).await.unwrap();
            let path = if n % 2 == 0 { "/mutate" } else { "/validate" };
            stream.write_all(&post_head(path, body.len())).await.unwrap();
            stream.write_all(&body[..body.len() / 2]).await.unwrap();
            stream.flush().await.unwrap();
            match n % 3 {
                // A clean TLS close (close_notify, then FIN).
                0 => stream.shutdown().await.unwrap(),
                // The socket reset: SO_LINGER 0 makes the close an RST.
                1 => stream.get_ref().0.set_zero_linger().unwrap(),
                // Plain FIN, no close_notify.
                _ => {}
            }
            drop(stream);
        }));
    }
    for task in vanishing {
        task.await.unwrap();
    }
    // Every vanished connection is released long before any deadline.
    let started = Instant::now();
    while open_fds() > before + 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "{} sockets still open", open_fds() - before);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    busy.store(false, Ordering::SeqCst);
    let (served, _) = others.await.unwrap();
    assert!(served > 0);
    assert_eq!(
        post_review(&client, &server.url("/mutate"), &namespace_review("after")).await["response"]["uid"],
        "after"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_tls_on_the_tls_port_are_refused_while_others_are_served() {
    // The header read timeout is far: a refusal must come from reading the bytes, not from it.
    let (server, ca, _dir) = self_signed_server(&["--header-read-timeout", "20s"]).await;
    let client = http1_client(&ca);
    let review = serde_json::to_vec(&namespace_review("in-clear")).unwrap();
    let mut plain_post = post_head("/mutate", review.len());
    plain_post.extend_from_slice(&review);
    // Deterministic garbage (xorshift), small and large.
    let garbage = |len: usize| {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>()
    };
    let payloads: Vec<(&str, Vec<u8>)> = vec![
        ("a plain HTTP review", plain_post),
        ("a plain GET", b"GET /healthz HTTP/1.0\r\n\r\n".to_vec()),
        ("the h2c preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        ("64 bytes of garbage", garbage(64)),
        ("1 MiB of garbage", garbage(1 << 20)),
        ("an SSLv2 hello", vec![0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10]),
        // A TLS record header of a handshake record, then a wrong version: rustls refuses it.
        ("a bad TLS record", vec![0x16, 0x09, 0x09, 0x00, 0x05, 1, 2, 3, 4, 5]),
    ];
    let failures_before = metric(&server.metrics_text().await, HANDSHAKE_FAILURES);
    for (n, (what, payload)) in payloads.iter().enumerate() {
        let started = Instant::now();
        let mut tcp = TcpStream::connect(server.https).await.unwrap();
        // The server may close while a large payload is still being written.
        let _ = tcp.write_all(payload).await;
        let mut received = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut received)).await;
        assert!(read.is_ok(), "{what}: the connection was not closed");
        assert!(started.elapsed() < Duration::from_secs(10), "{what}: closed only at the timeout");
        // At most a TLS alert record (content type 21), never an HTTP answer.
        assert!(
            received.is_empty() || received[0] == 0x15,
            "{what}: answered {:?}",
            String::from_utf8_lossy(&received)
        );
        // Served in between.
        let uid = format!("between-{n}");
        assert_eq!(
            post_review(&client, &server.url("/validate"), &namespace_review(&uid)).await["response"]["uid"],
            uid
        );
    }
    let failures = metric(&server.metrics_text().await, HANDSHAKE_FAILURES) - failures_before;
    assert_eq!(failures, payloads.len() as f64, "each refused connection is one handshake failure");
    // A new connection after all that.
    assert_eq!(
        post_review(&http1_client(&ca), &server.url("/mutate"), &namespace_review("after")).await["response"]["uid"],
        "after"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_client_certificates_under_client_ca_are_refused_while_the_apiserver_is_served() {
    let server_pki = Pki::new("server CA");
    let client_pki = Pki::new("client CA");
    let stranger_pki = Pki::new("stranger CA");
    let dir = tempfile::tempdir().unwrap();
    let serving = server_pki.server("webhook", 1);
    let (cert, key, client_ca) = (dir.path().join("tls.crt"), dir.path().join("tls.key"), dir.path().join("ca.pem"));
    std::fs::write(&cert, &serving.cert_pem).unwrap();
    std::fs::write(&key, &serving.key_pem).unwrap();
    std::fs::write(&client_ca, client_pki.ca_pem()).unwrap();
    let server = TestServer::start(serve_args(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--client-ca",
        client_ca.to_str().unwrap(),
    ]))
    .await;
    let ca = server_pki.ca_pem();
    let apiserver = client_pki.client("kube-apiserver");
    let mut trusted =
        RawHttp1::connect_with(server.https, client_tls(&ca, &[b"http/1.1"], Some(&apiserver))).await.unwrap();
    let review = |uid: &str| serde_json::to_vec(&namespace_review(uid)).unwrap();
    assert_eq!(trusted.post("/mutate", &review("first")).await.status, 200);
    let failures_before = metric(&server.metrics_text().await, HANDSHAKE_FAILURES);

    let wrong = [
        ("no certificate", None),
        ("a certificate of another CA", Some(stranger_pki.client("kube-apiserver"))),
        // Signed by the right CA, but for serving (extended key usage serverAuth only).
        ("a server certificate of the client CA", Some(client_pki.server("kube-apiserver", 3))),
    ];
    for (n, (what, identity)) in wrong.iter().enumerate() {
        let config = client_tls(&ca, &[b"http/1.1"], identity.as_ref());
        // TLS 1.3 clients learn of the refusal on their first read, not at connect.
        let refused = match RawHttp1::connect_with(server.https, config).await {
            Err(_) => true,
            Ok(mut connection) => match connection.try_post("/mutate", &review("wrong")).await {
                Err(_) => true,
                Ok(response) => panic!("{what}: answered {}", response.status),
            },
        };
        assert!(refused);
        // The apiserver's keep-alive connection is served in between.
        let uid = format!("between-{n}");
        let response = trusted.post("/validate", &review(&uid)).await;
        assert_eq!(response.status, 200);
        assert_eq!(serde_json::from_slice::<Value>(&response.body).unwrap()["response"]["uid"], uid);
    }
    let failures = metric(&server.metrics_text().await, HANDSHAKE_FAILURES) - failures_before;
    assert_eq!(failures, wrong.len() as f64, "each refused client is one handshake failure");
    // And a new apiserver connection after.
    let mut again =
        RawHttp1::connect_with(server.https, client_tls(&ca, &[b"http/1.1"], Some(&apiserver))).await.unwrap();
    assert_eq!(again.post("/mutate", &review("after")).await.status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_turned_to_garbage_keep_the_old_certificate_serving() {
    const FAILURES: &str = r#"divert_webhook_certificate_reloads_total{result="failure"}"#;
    const SUCCESSES: &str = r#"divert_webhook_certificate_reloads_total{result="success"}"#;
    let pki = Pki::new("reload CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let v1 = pki.server("webhook-v1", 1);
    std::fs::write(&cert, &v1.cert_pem).unwrap();
    std::fs::write(&key, &v1.key_pem).unwrap();
    let server = TestServer::start(serve_args(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--cert-reload-interval",
        "50ms",
    ]))
    .await;
    let ca = pki.ca_pem();
    let mut keep_alive = RawHttp1::connect(server.https, &ca).await;
    let body = |uid: &str| serde_json::to_vec(&namespace_review(uid)).unwrap();
    assert_eq!(keep_alive.post("/mutate", &body("first")).await.status, 200);

    let wait_for_failures = |count: f64| {
        let server = &server;
        async move {
            let started = Instant::now();
            loop {
                let text = server.metrics_text().await;
                if metric(&text, FAILURES) >= count {
                    return text;
                }
                assert!(started.elapsed() < Duration::from_secs(20), "{FAILURES} never reached {count}: {text}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Overwritten in place (not the kubelet's atomic swap), the way a careless copy does it.
    let garbage: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let armoured = b"-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n".to_vec();
    // What the files become: (certificate, key) contents, None for a removed file.
    type Contents = Option<Vec<u8>>;
    let faults: [(&str, Contents, Contents); 4] = [
        ("both files garbage", Some(garbage.clone()), Some(garbage[1000..].to_vec())),
        ("PEM armour around garbage", Some(armoured), Some(v1.key_pem.clone().into_bytes())),
        ("both files empty", Some(Vec::new()), Some(Vec::new())),
        ("both files removed", None, None),
    ];
    let mut failures = metric(&server.metrics_text().await, FAILURES);
    for (n, (what, cert_contents, key_contents)) in faults.iter().enumerate() {
        for (path, contents) in [(&cert, cert_contents), (&key, key_contents)] {
            match contents {
                Some(contents) => std::fs::write(path, contents).unwrap(),
                None => std::fs::remove_file(path).unwrap(),
            }
        }
        let text = wait_for_failures(failures + 1.0).await;
        failures = metric(&text, FAILURES);
        assert_eq!(metric(&text, SUCCESSES), 0.0, "{what}: reloaded something");
        // The keep-alive connection and new connections are served, with the old certificate.
        let uid = format!("during-{n}");
        assert_eq!(keep_alive.post("/validate", &body(&uid)).await.status, 200, "{what}");
        let mut fresh = RawHttp1::connect(server.https, &ca).await;
        assert_eq!(fresh.peer_common_name(), "webhook-v1", "{what}");
        assert_eq!(fresh.post("/mutate", &body(&uid)).await.status, 200, "{what}");
    }
    // A good pair again is taken for new connections.
    let v2 = pki.server("webhook-v2", 2);
    std::fs::write(&key, &v2.key_pem).unwrap();
    std::fs::write(&cert, &v2.cert_pem).unwrap();
    let started = Instant::now();
    while metric(&server.metrics_text().await, SUCCESSES) < 1.0 {
        assert!(started.elapsed() < Duration::from_secs(20), "the good pair was never loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut fresh = RawHttp1::connect(server.https, &ca).await;
    assert_eq!(fresh.peer_common_name(), "webhook-v2");
    assert_eq!(fresh.post("/mutate", &body("after")).await.status, 200);
    assert_eq!(keep_alive.post("/mutate", &body("after-keep-alive")).await.status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_connections_do_not_stop_reviews() {
    const RAW_TCP: usize = 4_800;
    const KEPT_ALIVE: usize = 200;
    let limit = common::raise_open_files_limit(RAW_TCP as u64 + KEPT_ALIVE as u64 + 1_000);
    assert!(limit > (RAW_TCP + KEPT_ALIVE + 200) as u64, "RLIMIT_NOFILE hard limit too low for the test: {limit}");
    // The real binary: its own file descriptor table, inheriting the raised limit. Silent
    // connections are kept for a minute; kept-alive ones for the default two. The connection
    // cap (default 4096, tests/server_observability.rs) is raised past the 5,000: this test
    // is about what they cost.
    let server = ServerProcess::start(&["--header-read-timeout", "60s", "--max-connections", "6000"]).await;
    let ca = server.ca_pem.clone();
    let idle_rss = proc_status(server.pid(), "VmRSS").unwrap();
    let started = Instant::now();

    // Connections that never send a byte (not even a ClientHello), opened 100 at a time, each
    // batch once the server has accepted the last, so that no batch depends on the listen
    // backlog (1024, capped by net.core.somaxconn).
    let server_fds = || std::fs::read_dir(format!("/proc/{}/fd", server.pid())).unwrap().count();
    let before = server_fds();
    let mut silent = Vec::with_capacity(RAW_TCP);
    while silent.len() < RAW_TCP {
        let batch = (0..100).map(|_| TcpStream::connect(server.https));
        for stream in futures_join(batch.collect()).await {
            silent.push(stream.expect("connects").into_std().unwrap());
        }
        // (2 of slack: the server's end of the /readyz connection may close meanwhile)
        while server_fds() + 2 < before + silent.len() {
            let accepted = server_fds() as i64 - before as i64;
            assert!(started.elapsed() < Duration::from_secs(60), "the server accepted {accepted} of {}", silent.len());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let silent_opened = started.elapsed();
    // apiserver-like connections: one review each, then idle on keep-alive.
    let mut kept_alive = Vec::with_capacity(KEPT_ALIVE);
    for round in 0..KEPT_ALIVE / 50 {
        let batch = (0..50).map(|n| {
            let (addr, ca) = (server.https, ca.clone());
            async move {
                let mut connection = RawHttp1::connect(addr, &ca).await;
                let uid = format!("idle-{round}-{n}");
                let response =
                    connection.post("/validate", &serde_json::to_vec(&namespace_review(&uid)).unwrap()).await;
                assert_eq!(response.status, 200);
                connection
            }
        });
        kept_alive.extend(futures_join(batch.collect()).await);
    }

    // With all of them open: reviews on new connections, and on some of the idle ones.
    let fresh = reqwest::Client::builder()
        .use_preconfigured_tls(client_tls(&ca, &[b"http/1.1"], None))
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    for n in 0..20 {
        let uid = format!("fresh-{n}");
        let started = Instant::now();
        assert_eq!(post_review(&fresh, &server.url("/mutate"), &namespace_review(&uid)).await["response"]["uid"], uid);
        assert!(started.elapsed() < Duration::from_secs(5), "a review took {:?}", started.elapsed());
    }
    for (n, connection) in kept_alive.iter_mut().step_by(10).enumerate() {
        let uid = format!("again-{n}");
        let response = connection.post("/mutate", &serde_json::to_vec(&namespace_review(&uid)).unwrap()).await;
        assert_eq!(response.status, 200, "an idle keep-alive connection was dropped");
    }
    let busy_rss = proc_status(server.pid(), "VmRSS").unwrap();
    let limit = common::deployment_memory_limit();
    eprintln!(
        "RSS idle {} KiB, with {} open connections {} KiB (limit {} KiB); opened in {:?} + {:?}",
        idle_rss,
        RAW_TCP + KEPT_ALIVE,
        busy_rss,
        limit >> 10,
        silent_opened,
        started.elapsed() - silent_opened,
    );
    assert!(busy_rss * 1024 < limit, "RSS {busy_rss} KiB with 5,000 idle connections, over the deployment's limit");
    // Every silent connection is still open (not one was dropped to make room) ...
    let mut byte = [0u8; 1];
    let still_open = silent
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            matches!((&**s).read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    assert_eq!(still_open, RAW_TCP, "silent connections closed by the server");
    // ... and once they all go, the server serves on.
    drop(silent);
    drop(kept_alive);
    assert_eq!(
        post_review(&fresh, &server.url("/validate"), &namespace_review("after")).await["response"]["uid"],
        "after"
    );
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join<F: std::future::Future + Send + 'static>(futures: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(task.await.unwrap());
    }
    outputs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_review_the_server_accepted() {
    let mut server = ServerProcess::start(&["--shutdown-delay", "1s", "--drain-timeout", "30s"]).await;
    let ca = server.ca_pem.clone();
    // Each answer: (uid, HTTP status, answered after the signal).
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel::<(String, u16, bool)>();
    let signalled = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));

    // Workers on keep-alive connections; when one closes, a new one is opened, until the
    // listener refuses. Half send the body in two parts, so reviews are in flight mid-body.
    let mut workers = Vec::new();
    for worker in 0..8 {
        let (addr, ca, answers, signalled, sent) =
            (server.https, ca.clone(), answers.clone(), signalled.clone(), sent.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            'connections: loop {
                let Ok(connection) = RawHttp1::connect_with(addr, client_tls(&ca, &[b"http/1.1"], None)).await else {
                    break; // refused or cut during the handshake: the listener is closed
                };
                let mut connection = connection;
                loop {
                    let uid = format!("load-{worker}-{n}");
                    n += 1;
                    let body = serde_json::to_vec(&namespace_review(&uid)).unwrap();
                    sent.fetch_add(1, Ordering::SeqCst);
                    let response = if worker % 2 == 0 {
                        connection.try_post("/mutate", &body).await
                    } else {
                        async {
                            connection.try_write(&post_head("/validate", body.len())).await?;
                            connection.try_write(&body[..body.len() / 2]).await?;
                            tokio::task::yield_now().await;
                            connection.try_write(&body[body.len() / 2..]).await?;
                            connection.try_read_response().await
                        }
                        .await
                    };
                    match response {
                        Ok(response) => {
                            let after = signalled.load(Ordering::SeqCst);
                            let answer: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
                            assert_eq!(answer["response"]["uid"], uid.as_str(), "status {}", response.status);
                            answers.send((uid, response.status, after)).unwrap();
                            if response.header("connection") == Some("close") {
                                continue 'connections;
                            }
                        }
                        // Closed between two requests: the server had not read this one.
                        Err(_) => continue 'connections,
                    }
                }
            }
        }));
    }
    drop(answers);
    // Under load: 300 reviews answered, then SIGTERM.
    let mut statuses = HashMap::new();
    while statuses.len() < 300 {
        let (uid, status, _) = answered.recv().await.expect("workers answering");
        statuses.insert(uid, status);
    }
    server.signal(libc::SIGTERM);
    signalled.store(true, Ordering::SeqCst);
    let mut after_signal = 0;
    while let Some((uid, status, after)) = answered.recv().await {
        after_signal += usize::from(after);
        statuses.insert(uid, status);
    }
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(30), worker).await.expect("a worker never stopped").unwrap();
    }
    let status = server.exit_status(Duration::from_secs(30)).await;
    let log = server.log();
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(!log.contains("drain timeout passed"), "{log}");

    // Every review the server decided (one log line each) was answered, and with a 200.
    let decided: Vec<String> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "review")
        .map(|line| line["fields"]["uid"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(decided.len() >= 300, "{} review lines", decided.len());
    for uid in &decided {
        assert_eq!(statuses.get(uid), Some(&200), "review {uid} was decided but not answered 200");
    }
    assert!(statuses.values().all(|&s| s == 200), "{statuses:?}");
    assert!(after_signal > 0, "no review was served during the shutdown delay");
    eprintln!(
        "{} reviews sent, {} answered ({} after SIGTERM), {} decided by the server",
        sent.load(Ordering::SeqCst),
        statuses.len(),
        after_signal,
        decided.len()
    );
}

/// A VirtualService of the shared namespace `staging` with `routes` HTTP routes (each with
/// `matches` header matches) and a divert annotation for each of `developers` developers: the
/// rules clone every route for every developer.
fn worst_case_virtual_service(routes: usize, matches: usize, developers: usize) -> Value {
    let annotations: serde_json::Map<String, Value> = (0..developers)
        .map(|d| (format!("divert.okteto.com/{d:040x}"), json!(format!(r#"{{"namespace":"dev-{d:04}"}}"#))))
        .collect();
    let http: Vec<Value> = (0..routes)
        .map(|r| {
            let service = format!("service-{r}");
            json!({
                "name": service,
                "match": (0..matches).map(|m| json!({
                    "uri": {"prefix": format!("/api/v{m}/{service}")},
                    "headers": {"x-tenant": {"exact": format!("tenant-{m}")}},
                })).collect::<Vec<_>>(),
                "route": [
                    {"destination": {"host": format!("{service}.staging.svc.cluster.local"), "subset": "v1"}, "weight": 90},
                    {"destination": {"host": format!("{service}.staging.svc.cluster.local"), "subset": "v2"}, "weight": 10},
                ],
                "headers": {"request": {"set": {"x-service": service}}},
            })
        })
        .collect();
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "shop", "namespace": "staging", "annotations": annotations},
        "spec": {"hosts": ["shop.staging.svc.cluster.local"], "gateways": ["mesh"], "http": http},
    })
}

/// The largest review of the shape `shape(n)` that stays under the 3 MiB body limit.
fn largest_under_the_body_limit(uid: &str, shape: impl Fn(usize) -> Value) -> Vec<u8> {
    let body = |n: usize| {
        let review = common::review_of(
            uid,
            ("networking.istio.io", "v1", "VirtualService"),
            "virtualservices",
            "CREATE",
            shape(n),
        );
        serde_json::to_vec(&review).unwrap()
    };
    let limit = divert_webhook::server::MAX_BODY_BYTES;
    // The size grows about linearly with n: extrapolate from two sizes, then step down.
    let (small, double) = (body(8).len(), body(16).len());
    let per_unit = (double - small) / 8;
    let mut n = 8 + (limit - small) / per_unit;
    loop {
        let candidate = body(n);
        if candidate.len() <= limit {
            return candidate;
        }
        n -= 1 + (candidate.len() - limit) / per_unit;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_worst_case_reviews_stay_under_the_deployment_memory_limit() {
    let limit = common::deployment_memory_limit();
    // Many routes x many developers (the product is what the rules would generate), and 20
    // developers x 100 routes (2,000 generated routes, the default bound) with as many matches
    // as fit (each clone is large).
    let many_by_many = largest_under_the_body_limit("worst-many", |n| worst_case_virtual_service(n * 10, 1, n));
    let large_clones = largest_under_the_body_limit("worst-large", |n| worst_case_virtual_service(100, n, 20));
    eprintln!("bodies: {} and {} bytes", many_by_many.len(), large_clones.len());
    // A bound on the address space, far above the limit, so that a server without bounds
    // aborts instead of taking the machine's memory; it is also killed once past twice the
    // limit (DIVERT_TEST_KILL_AT_MIB sets another point, to see how far it would go).
    let kill_at: u64 =
        std::env::var("DIVERT_TEST_KILL_AT_MIB").map_or(2 * limit, |mib| mib.parse::<u64>().unwrap() << 20);
    // Milliseconds from the start of the watch to the kill; 0 while not killed.
    let killed_after_ms = Arc::new(AtomicU64::new(0));
    let server = Arc::new(std::sync::Mutex::new(
        ServerProcess::start_limited(&["--request-timeout", "30s"], Some(6 << 30)).await,
    ));
    let (pid, url, ca) = {
        let server = server.lock().unwrap();
        (server.pid(), server.url(""), server.ca_pem.clone())
    };
    let idle_hwm = proc_status(pid, "VmHWM").unwrap();
    // The high-water mark, read every 5 ms until the process is gone or the test is done.
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(idle_hwm));
    let watched_from = Instant::now();
    let watcher = std::thread::spawn({
        let (done, peak, server, killed_after_ms) =
            (done.clone(), peak.clone(), server.clone(), killed_after_ms.clone());
        move || {
            while !done.load(Ordering::SeqCst) {
                let Some(hwm) = proc_status(pid, "VmHWM") else { break };
                peak.fetch_max(hwm, Ordering::SeqCst);
                if hwm * 1024 > kill_at {
                    killed_after_ms.store(watched_from.elapsed().as_millis().max(1) as u64, Ordering::SeqCst);
                    server.lock().unwrap().kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });

    let started = Instant::now();
    let mut worst = Vec::new();
    for n in 0..50 {
        let body = if n % 2 == 0 { many_by_many.clone() } else { large_clones.clone() };
        let endpoint = if n % 4 < 2 { "/mutate" } else { "/validate" };
        // The apiserver's longest webhook timeout: a debug build under a loaded CI machine needs it.
        let (url, ca) = (format!("{url}{endpoint}?timeout=30s"), ca.clone());
        worst.push(tokio::spawn(async move {
            let client = http1_client(&ca);
            let response = client.post(url).header("content-type", "application/json").body(body).send().await;
            let response = response.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            // Refused by the bounds: /mutate leaves it unchanged, /validate denies it naming the limit.
            let response = &answer["response"];
            let as_bounded = match endpoint {
                "/mutate" => response["allowed"] == true && response.get("patch").is_none(),
                _ => {
                    response["allowed"] == false
                        && response["status"]["message"].as_str().is_some_and(|m| m.contains("limit"))
                }
            };
            Ok::<_, String>((status, as_bounded))
        }));
    }
    // Small reviews go on being answered meanwhile.
    let small = http1_client(&ca);
    let mut small_served = 0;
    while worst.iter().any(|task| !task.is_finished()) {
        let uid = format!("small-{small_served}");
        let response = small.post(format!("{url}/validate")).json(&namespace_review(&uid)).send().await;
        let status = response.as_ref().map(|r| r.status().as_u16());
        assert_eq!(
            status.as_ref().ok(),
            Some(&200),
            "a small review was not answered while the worst-case ones ran (peak RSS {} KiB; killed by the test \
             at {} KiB after {} ms; 0: not killed): {response:?}",
            peak.load(Ordering::SeqCst),
            kill_at >> 10,
            killed_after_ms.load(Ordering::SeqCst)
        );
        small_served += 1;
        assert!(started.elapsed() < Duration::from_secs(120), "the worst-case reviews never finished");
    }
    let mut statuses = Vec::new();
    for task in worst {
        statuses.push(task.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let peak = peak.load(Ordering::SeqCst);
    eprintln!(
        "idle VmHWM {idle_hwm} KiB, peak VmHWM {peak} KiB (limit {} KiB), {small_served} small reviews answered, \
         worst-case answers after {:?}: {statuses:?}",
        limit >> 10,
        started.elapsed()
    );
    let mut server = Arc::into_inner(server).unwrap().into_inner().unwrap();
    let died = server.try_wait();
    assert!(died.is_none(), "the server died ({died:?}): {}", server.log());
    assert!(statuses.iter().all(|s| s == &Ok((200, true))), "{statuses:?}");
    assert!(peak * 1024 < limit, "peak RSS {peak} KiB over the deployment's memory limit of {} KiB", limit >> 10);
}
