//! TLS of the admission port: client certificates, certificate rotation on disk, and the
//! errors a bad certificate set-up gets at start (SPEC §9).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Identity, Pki, RawHttp1, TestServer, fixture, metric, serve_args};
use divert_webhook::server::Server;
use divert_webhook::settings::Settings;
use serde_json::{Value, json};

const RELOAD_SUCCESS: &str = r#"divert_webhook_certificate_reloads_total{result="success"}"#;
const RELOAD_FAILURE: &str = r#"divert_webhook_certificate_reloads_total{result="failure"}"#;
const EXPIRY: &str = "divert_webhook_certificate_expiry_timestamp_seconds";

/// A Secret volume as the kubelet writes it: `tls.crt -> ..data/tls.crt`, `..data -> ..<generation>`,
/// each update a new generation directory swapped in by renaming a new `..data` symlink.
struct SecretVolume {
    dir: tempfile::TempDir,
}

impl SecretVolume {
    fn new(first: &Identity) -> SecretVolume {
        let volume = SecretVolume { dir: tempfile::tempdir().unwrap() };
        volume.publish("1", &first.cert_pem, &first.key_pem);
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(Path::new("..data").join(file), volume.dir.path().join(file)).unwrap();
        }
        volume
    }

    fn publish(&self, generation: &str, cert_pem: &str, key_pem: &str) {
        let generation_dir = format!("..{generation}");
        let path = self.dir.path().join(&generation_dir);
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("tls.crt"), cert_pem).unwrap();
        std::fs::write(path.join("tls.key"), key_pem).unwrap();
        let staged = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&generation_dir, &staged).unwrap();
        std::fs::rename(&staged, self.dir.path().join("..data")).unwrap();
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    fn flags(&self) -> Vec<String> {
        let (cert, key) = (self.cert(), self.key());
        ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()].map(String::from).to_vec()
    }
}

fn args(flags: &[String]) -> divert_webhook::server::ServeArgs {
    serve_args(&flags.iter().map(String::as_str).collect::<Vec<_>>())
}

/// One review over a new connection; returns the common name of the certificate the server
/// presented in that handshake.
async fn review_on_new_connection(client: &reqwest::Client, server: &TestServer, n: usize) -> String {
    let mut review = fixture("namespace-create.json");
    review["request"]["uid"] = json!(format!("rotation-{n}"));
    let response = client.post(server.url("/mutate")).json(&review).send().await.expect("no request fails");
    assert_eq!(response.status(), 200);
    let tls = response.extensions().get::<reqwest::tls::TlsInfo>().expect("TLS info").clone();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["response"]["uid"], format!("rotation-{n}"));
    let (_, cert) = x509_parser::parse_x509_certificate(tls.peer_certificate().unwrap()).unwrap();
    cert.subject().iter_common_name().next().unwrap().as_str().unwrap().to_string()
}

/// A client that opens a new connection (and handshake) for every request.
fn new_connection_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(common::client_tls(ca_pem, &[b"http/1.1"], None))
        .pool_max_idle_per_host(0)
        .tls_info(true)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn wait_for_metric(server: &TestServer, sample: &str, value: f64) -> String {
    let started = Instant::now();
    loop {
        let text = server.metrics_text().await;
        if metric(&text, sample) == value {
            return text;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{sample} never reached {value}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rotated_certificates_are_served_to_new_connections_without_failed_requests() {
    let pki = Pki::new("rotation CA");
    let volume = SecretVolume::new(&pki.server("webhook-v1", 1));
    let mut flags = volume.flags();
    flags.extend(["--cert-reload-interval", "100ms"].map(String::from));
    let server = TestServer::start(args(&flags)).await;
    let client = new_connection_client(&pki.ca_pem());
    let before = server.metrics_text().await;
    assert_eq!(metric(&before, EXPIRY), Pki::expiry_of(1) as f64);

    // Reviews keep going while the volume is updated; every one must succeed.
    let started = Instant::now();
    let mut seen = Vec::new();
    for n in 0.. {
        if n == 3 {
            let v2 = pki.server("webhook-v2", 2);
            volume.publish("2", &v2.cert_pem, &v2.key_pem);
        }
        seen.push(review_on_new_connection(&client, &server, n).await);
        if seen.iter().filter(|cn| *cn == "webhook-v2").count() == 3 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the new certificate was never served: {seen:?}");
    }
    assert_eq!(seen[0], "webhook-v1");
    let first_v2 = seen.iter().position(|cn| cn == "webhook-v2").unwrap();
    assert!(seen[first_v2..].iter().all(|cn| cn == "webhook-v2"), "went back to the old certificate: {seen:?}");
    let after = server.metrics_text().await;
    assert_eq!(metric(&after, RELOAD_SUCCESS), 1.0);
    assert_eq!(metric(&after, RELOAD_FAILURE), 0.0);
    assert_eq!(metric(&after, EXPIRY), Pki::expiry_of(2) as f64);
    server.stop().await;
}

#[tokio::test]
async fn an_invalid_certificate_pair_keeps_the_old_certificate_and_counts_one_failure() {
    let pki = Pki::new("reload CA");
    let v1 = pki.server("webhook-v1", 1);
    let volume = SecretVolume::new(&v1);
    let mut flags = volume.flags();
    flags.extend(["--cert-reload-interval", "50ms"].map(String::from));
    let server = TestServer::start(args(&flags)).await;
    let client = new_connection_client(&pki.ca_pem());

    // Half-written certificate file.
    let v2 = pki.server("webhook-v2", 2);
    volume.publish("2", &v2.cert_pem[..v2.cert_pem.len() / 2], &v2.key_pem);
    wait_for_metric(&server, RELOAD_FAILURE, 1.0).await;
    for n in 0..3 {
        assert_eq!(review_on_new_connection(&client, &server, n).await, "webhook-v1");
    }
    // The same bad content, polled again and again, is one failure, not one per poll.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = server.metrics_text().await;
    assert_eq!(metric(&text, RELOAD_FAILURE), 1.0);
    assert_eq!(metric(&text, EXPIRY), Pki::expiry_of(1) as f64);

    // A certificate with somebody else's key.
    volume.publish("3", &v2.cert_pem, &v1.key_pem);
    wait_for_metric(&server, RELOAD_FAILURE, 2.0).await;
    assert_eq!(review_on_new_connection(&client, &server, 3).await, "webhook-v1");

    // A good pair again is taken.
    volume.publish("4", &v2.cert_pem, &v2.key_pem);
    wait_for_metric(&server, RELOAD_SUCCESS, 1.0).await;
    assert_eq!(review_on_new_connection(&client, &server, 4).await, "webhook-v2");
    server.stop().await;
}

#[tokio::test]
async fn client_certificates_are_required_with_client_ca() {
    let server_pki = Pki::new("server CA");
    let client_pki = Pki::new("client CA");
    let stranger_pki = Pki::new("stranger CA");
    let volume = SecretVolume::new(&server_pki.server("webhook", 1));
    let client_ca = volume.dir.path().join("client-ca.pem");
    std::fs::write(&client_ca, client_pki.ca_pem()).unwrap();
    let mut flags = volume.flags();
    flags.extend(["--client-ca".to_string(), client_ca.to_str().unwrap().to_string()]);
    let server = TestServer::start(args(&flags)).await;
    let review = fixture("namespace-create.json");
    let ca = server_pki.ca_pem();

    let anonymous = common::client(&ca, &[b"http/1.1"], None);
    assert!(anonymous.post(server.url("/mutate")).json(&review).send().await.is_err(), "served without a client cert");
    let stranger = stranger_pki.client("stranger");
    let stranger = common::client(&ca, &[b"http/1.1"], Some(&stranger));
    assert!(stranger.post(server.url("/mutate")).json(&review).send().await.is_err(), "served an unknown CA's cert");

    let apiserver = client_pki.client("kube-apiserver");
    for alpn in [&[b"http/1.1".as_slice()][..], &[b"h2"]] {
        let trusted = common::client(&ca, alpn, Some(&apiserver));
        let answer = common::post_review(&trusted, &server.url("/mutate"), &review).await;
        assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    }
    let text = server.metrics_text().await;
    assert!(metric(&text, "divert_webhook_tls_handshake_failures_total") >= 2.0, "{text}");
    server.stop().await;
}

#[tokio::test]
async fn certificate_set_up_errors_name_the_flag_and_the_fix() {
    let pki = Pki::new("errors CA");
    let (v1, v2) = (pki.server("v1", 1), pki.server("v2", 2));
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (cert, key, other_key) =
        (write("tls.crt", &v1.cert_pem), write("tls.key", &v1.key_pem), write("v2.key", &v2.key_pem));
    let not_pem = write("junk.pem", "this is not PEM\n");
    let missing = dir.path().join("missing.pem").to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "give --tls-cert and --tls-key (PEM files), or --self-signed"),
        (vec!["--tls-cert", &cert], "--tls-cert needs --tls-key"),
        (vec!["--tls-key", &key], "--tls-key needs --tls-cert"),
        (vec!["--tls-cert", &cert, "--tls-key", &key, "--self-signed"], "not both"),
        (vec!["--tls-cert", &missing, "--tls-key", &key], "reading --tls-cert"),
        (vec!["--tls-cert", &not_pem, "--tls-key", &key], "no certificate found"),
        (vec!["--tls-cert", &cert, "--tls-key", &not_pem], "no private key found"),
        (vec!["--tls-cert", &cert, "--tls-key", &other_key], "is not the key of the certificate"),
        (vec!["--tls-cert", &cert, "--tls-key", &key, "--client-ca", &not_pem], "--client-ca"),
        (vec!["--tls-cert", &cert, "--tls-key", &key, "--write-ca", &missing], "--write-ca"),
    ];
    for (flags, expected) in cases {
        let error = match Server::bind(serve_args(&flags), Settings::default()).await {
            Ok(_) => panic!("{flags:?} started"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains(expected), "{flags:?}: {error}");
    }
}

/// A client that speaks only `version` (TLS 1.2 or 1.3), trusting `ca_pem`.
fn one_version_client_tls(
    ca_pem: &str,
    version: &'static rustls::SupportedProtocolVersion,
    alpn: &[u8],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(common::provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

/// SPEC §8: TLS 1.2 and 1.3. A client that can speak only one of them is served either way,
/// over HTTP/1.1 and h2.
#[tokio::test]
async fn tls_1_2_only_and_tls_1_3_only_clients_are_both_served() {
    let pki = Pki::new("versions CA");
    let volume = SecretVolume::new(&pki.server("webhook", 1));
    let server = TestServer::start(args(&volume.flags())).await;
    let ca = pki.ca_pem();
    let versions = [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ];
    for (version, expected) in versions {
        // The version really negotiated, seen on a raw connection.
        let config = one_version_client_tls(&ca, version, b"http/1.1");
        let mut connection = RawHttp1::connect_with(server.https, config).await.expect("the handshake succeeds");
        assert_eq!(connection.tls().protocol_version(), Some(expected));
        let mut review = fixture("namespace-create.json");
        review["request"]["uid"] = json!(format!("{expected:?}-raw"));
        let response = connection.post("/mutate?timeout=10s", &serde_json::to_vec(&review).unwrap()).await;
        assert_eq!(response.status, 200, "{expected:?}");
        let answer: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(answer["response"]["uid"], format!("{expected:?}-raw"));

        for alpn in [b"http/1.1".as_slice(), b"h2"] {
            let client = reqwest::Client::builder()
                .use_preconfigured_tls(one_version_client_tls(&ca, version, alpn))
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap();
            let answer = common::post_review(&client, &server.url("/validate"), &review).await;
            assert_eq!(answer["response"]["uid"], review["request"]["uid"], "{expected:?} {alpn:?}");
        }
    }
    server.stop().await;
}

/// Waits (at most 30s) until `done`.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(30), "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One review on a new connection, without panicking: the certificate's common name, or what failed.
async fn try_review_on_new_connection(client: &reqwest::Client, url: &str, uid: &str) -> Result<String, String> {
    let mut review = fixture("namespace-create.json");
    review["request"]["uid"] = json!(uid);
    let response = client.post(url).json(&review).send().await.map_err(|e| format!("{uid}: {e:?}"))?;
    if response.status() != 200 {
        return Err(format!("{uid}: HTTP {}", response.status()));
    }
    let tls = response.extensions().get::<reqwest::tls::TlsInfo>().ok_or("no TLS info")?.clone();
    let answer: Value = response.json().await.map_err(|e| format!("{uid}: {e}"))?;
    if answer["response"]["uid"] != uid {
        return Err(format!("{uid}: answered {}", answer["response"]["uid"]));
    }
    let (_, cert) = x509_parser::parse_x509_certificate(tls.peer_certificate().unwrap()).unwrap();
    Ok(cert.subject().iter_common_name().next().unwrap().as_str().unwrap().to_string())
}

/// SPEC §9: certificates rotated on disk with no failed request, while an apiserver-like
/// keep-alive connection and a client opening a new connection per review both keep sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_fails_no_review_of_a_keep_alive_client_or_a_new_connection_client() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let pki = Pki::new("concurrent rotation CA");
    let volume = SecretVolume::new(&pki.server("webhook-v1", 1));
    let mut flags = volume.flags();
    flags.extend(["--cert-reload-interval", "50ms"].map(String::from));
    let server = TestServer::start(args(&flags)).await;
    let ca = pki.ca_pem();
    let stop = Arc::new(AtomicBool::new(false));
    let keep_alive_served = Arc::new(AtomicUsize::new(0));
    let new_connection_seen = Arc::new(Mutex::new(Vec::<String>::new()));

    // One HTTP/1.1 connection for the whole test, as the apiserver keeps one.
    let keep_alive = {
        let (https, ca, stop, served) = (server.https, ca.clone(), stop.clone(), keep_alive_served.clone());
        tokio::spawn(async move {
            let mut connection = RawHttp1::connect(https, &ca).await;
            let certificate = connection.peer_common_name();
            let mut failures = Vec::new();
            for n in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let mut review = fixture("namespace-create.json");
                review["request"]["uid"] = json!(format!("keep-alive-{n}"));
                match connection.try_post("/mutate?timeout=10s", &serde_json::to_vec(&review).unwrap()).await {
                    Ok(response)
                        if response.status == 200
                            && response.header("connection") != Some("close")
                            && serde_json::from_slice::<Value>(&response.body).unwrap()["response"]["uid"]
                                == format!("keep-alive-{n}") =>
                    {
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(response) => {
                        failures.push(format!("keep-alive-{n}: HTTP {} {:?}", response.status, response.headers))
                    }
                    Err(error) => {
                        failures.push(format!("keep-alive-{n}: {error:?}"));
                        break;
                    }
                }
            }
            (certificate, failures)
        })
    };
    let new_connections = {
        let (url, client, stop, seen) =
            (server.url("/mutate"), new_connection_client(&ca), stop.clone(), new_connection_seen.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            for n in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match try_review_on_new_connection(&client, &url, &format!("new-connection-{n}")).await {
                    Ok(common_name) => seen.lock().unwrap().push(common_name),
                    Err(failure) => failures.push(failure),
                }
            }
            failures
        })
    };

    let seen_count = |name: &str| new_connection_seen.lock().unwrap().iter().filter(|cn| *cn == name).count();
    wait_until("both clients were served", || {
        keep_alive_served.load(Ordering::SeqCst) >= 3 && seen_count("webhook-v1") >= 3
    })
    .await;
    for (generation, name) in [("2", "webhook-v2"), ("3", "webhook-v3")] {
        let identity = pki.server(name, generation.parse().unwrap());
        let served_before = keep_alive_served.load(Ordering::SeqCst);
        volume.publish(generation, &identity.cert_pem, &identity.key_pem);
        wait_until(&format!("{name} was served on new connections"), || seen_count(name) >= 3).await;
        wait_until("the keep-alive connection was served after the rotation", || {
            keep_alive_served.load(Ordering::SeqCst) >= served_before + 3
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    let (keep_alive_certificate, keep_alive_failures) = keep_alive.await.unwrap();
    let new_connection_failures = new_connections.await.unwrap();
    assert!(keep_alive_failures.is_empty(), "keep-alive client: {keep_alive_failures:#?}");
    assert!(new_connection_failures.is_empty(), "new-connection client: {new_connection_failures:#?}");
    // The open connection kept the certificate of its handshake; new ones never went back.
    assert_eq!(keep_alive_certificate, "webhook-v1");
    let seen = new_connection_seen.lock().unwrap().clone();
    let first_v3 = seen.iter().position(|cn| cn == "webhook-v3").unwrap();
    assert!(seen[first_v3..].iter().all(|cn| cn == "webhook-v3"), "went back to an older certificate: {seen:?}");
    let text = server.metrics_text().await;
    assert_eq!(metric(&text, RELOAD_SUCCESS), 2.0, "{text}");
    assert_eq!(metric(&text, RELOAD_FAILURE), 0.0, "{text}");
    server.stop().await;
}
