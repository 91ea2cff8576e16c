//! Shared helpers for the server tests: a PKI made with rcgen, the server run in-process on
//! port 0, TLS clients (reqwest and a raw HTTP/1.1 client over tokio-rustls), review bodies,
//! and reading /metrics.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use clap::Parser;
use divert_webhook::server::{ServeArgs, Server};
use divert_webhook::settings::Settings;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA that issues server and client certificates.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A PEM certificate and its PEM key.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Pki { ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A server certificate for 127.0.0.1 and localhost, expiring on January 1st of 2040 + serial
    /// (so each one's expiry is recognisable in the metrics).
    pub fn server(&self, common_name: &str, serial: u64) -> Identity {
        self.issue(common_name, serial, ExtendedKeyUsagePurpose::ServerAuth)
    }

    pub fn client(&self, common_name: &str) -> Identity {
        self.issue(common_name, 7, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// Unix time of the expiry [`Pki::server`] gives the certificate with `serial`.
    pub fn expiry_of(serial: u64) -> i64 {
        rcgen::date_time_ymd(2040 + serial as i32, 1, 1).unix_timestamp()
    }

    fn issue(&self, common_name: &str, serial: u64, usage: ExtendedKeyUsagePurpose) -> Identity {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_after = rcgen::date_time_ymd(2040 + serial as i32, 1, 1);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Identity { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

/// ServeArgs as the command line would give them, on free local ports.
pub fn serve_args(extra: &[&str]) -> ServeArgs {
    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let mut argv = vec!["serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--shutdown-delay", "0s"];
    argv.extend_from_slice(extra);
    Command::try_parse_from(argv).expect("test flags parse").serve
}

/// The server running in-process on its own task.
pub struct TestServer {
    pub https: SocketAddr,
    pub metrics: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(args: ServeArgs) -> TestServer {
        TestServer::start_with(args, Settings::default()).await
    }

    pub async fn start_with(args: ServeArgs, settings: Settings) -> TestServer {
        TestServer::run(Server::bind(args, settings).await.expect("server binds"))
    }

    /// Runs a server bound (and set up) by the test.
    pub fn run(server: Server) -> TestServer {
        let (https, metrics) = (server.https_addr(), server.metrics_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server.run(async move { drop(stopped.await) }).await.expect("server runs and stops cleanly");
        });
        TestServer { https, metrics, stop: Some(stop), task }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("https://{}{path_and_query}", self.https)
    }

    pub async fn metrics_text(&self) -> String {
        let response = plain_client().get(format!("http://{}/metrics", self.metrics)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), &mut self.task).await.expect("server stops").unwrap();
    }
}

/// The value of the sample `name{labels}` exactly as written in the exposition; 0 when absent.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

pub fn client_tls(ca_pem: &str, alpn: &[&[u8]], identity: Option<&Identity>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => {
            let chain: Vec<CertificateDer<'static>> =
                rustls_pemfile::certs(&mut identity.cert_pem.as_bytes()).map(Result::unwrap).collect();
            let key: PrivateKeyDer<'static> =
                rustls_pemfile::private_key(&mut identity.key_pem.as_bytes()).unwrap().unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A reqwest client trusting `ca_pem`, speaking HTTP/1.1 (ALPN http/1.1) unless `alpn` says h2.
pub fn client(ca_pem: &str, alpn: &[&[u8]], identity: Option<&Identity>) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(client_tls(ca_pem, alpn, identity))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// For the plain-HTTP metrics port (reqwest needs a TLS config even so: one trusting nothing).
pub fn plain_client() -> reqwest::Client {
    let no_roots = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder().use_preconfigured_tls(no_roots).timeout(Duration::from_secs(20)).build().unwrap()
}

pub fn http1_client(ca_pem: &str) -> reqwest::Client {
    client(ca_pem, &[b"http/1.1"], None)
}

pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// An AdmissionReview in the fixture's envelope for `object` of `group/version kind`.
pub fn review_of(uid: &str, gvk: (&str, &str, &str), resource: &str, operation: &str, object: Value) -> Value {
    let mut review = fixture("namespace-create.json");
    let request = &mut review["request"];
    let (group, version, kind) = gvk;
    request["uid"] = json!(uid);
    request["kind"] = json!({"group": group, "version": version, "kind": kind});
    request["requestKind"] = request["kind"].clone();
    request["resource"] = json!({"group": group, "version": version, "resource": resource});
    request["requestResource"] = request["resource"].clone();
    request["name"] = object["metadata"]["name"].clone();
    if let Some(namespace) = object["metadata"]["namespace"].as_str() {
        request["namespace"] = json!(namespace);
    }
    request["operation"] = json!(operation);
    if operation == "DELETE" {
        request["oldObject"] = object;
        request["object"] = Value::Null;
    } else {
        request["object"] = object;
    }
    review
}

/// The response's JSONPatch, decoded from base64; None when the answer has no patch.
pub fn response_patch(answer: &Value) -> Option<json_patch::Patch> {
    let encoded = answer["response"]["patch"].as_str()?;
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).expect("patch is base64");
    Some(serde_json::from_slice(&bytes).expect("patch is a JSONPatch"))
}

/// POSTs a review (JSON) and returns the parsed answer, asserting HTTP 200 + application/json.
pub async fn post_review(client: &reqwest::Client, url: &str, review: &Value) -> Value {
    let response = client.post(url).json(review).send().await.expect("request succeeds");
    assert_eq!(response.status(), 200, "{url}");
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

/// A raw HTTP/1.1 client on one TLS connection: exactly what goes over the wire is visible,
/// and requests can be sent slowly or several on one connection.
pub struct RawHttp1 {
    stream: BufReader<TlsStream<TcpStream>>,
}

pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl RawHttp1 {
    pub async fn connect(addr: SocketAddr, ca_pem: &str) -> RawHttp1 {
        RawHttp1::connect_with(addr, client_tls(ca_pem, &[b"http/1.1"], None)).await.expect("TLS connects")
    }

    /// With a TLS configuration of the test's own (e.g. one protocol version only).
    pub async fn connect_with(addr: SocketAddr, config: rustls::ClientConfig) -> std::io::Result<RawHttp1> {
        Ok(RawHttp1 { stream: BufReader::new(tls_connect(addr, config).await?) })
    }

    /// The TLS session: negotiated version, the server's certificate.
    pub fn tls(&self) -> &rustls::ClientConnection {
        self.stream.get_ref().get_ref().1
    }

    /// The common name of the certificate the server presented on this connection.
    pub fn peer_common_name(&self) -> String {
        let der = &self.tls().peer_certificates().expect("a server certificate")[0];
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        cert.subject().iter_common_name().next().unwrap().as_str().unwrap().to_string()
    }

    /// Writes the request head of a POST with `content-length` bytes to come.
    pub async fn send_head(&mut self, path: &str, content_length: usize) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {content_length}\r\n\r\n"
        );
        self.write(head.as_bytes()).await;
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.try_write(bytes).await.unwrap();
    }

    /// Like [`RawHttp1::write`], but a write the server refused (reset, closed) is an error.
    pub async fn try_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let stream = self.stream.get_mut();
        stream.write_all(bytes).await?;
        stream.flush().await
    }

    pub async fn post(&mut self, path: &str, body: &[u8]) -> RawResponse {
        self.try_post(path, body).await.expect("a response")
    }

    /// Like [`RawHttp1::post`], but a connection the server closed or reset is an error.
    pub async fn try_post(&mut self, path: &str, body: &[u8]) -> std::io::Result<RawResponse> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        self.try_write(head.as_bytes()).await?;
        self.try_write(body).await?;
        self.try_read_response().await
    }

    /// None when the server closed the connection before a response.
    pub async fn read_response(&mut self) -> Option<RawResponse> {
        self.try_read_response().await.ok()
    }

    /// The response, or why none could be read (closed before a response: UnexpectedEof; or reset).
    pub async fn try_read_response(&mut self) -> std::io::Result<RawResponse> {
        let mut status_line = String::new();
        if self.stream.read_line(&mut status_line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status = status_line.split_whitespace().nth(1).expect("status code").parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let mut response = RawResponse { status, headers, body: Vec::new() };
        let length: usize = response.header("content-length").expect("content-length").parse().unwrap();
        response.body = vec![0; length];
        self.stream.read_exact(&mut response.body).await?;
        Ok(response)
    }

    /// True once the server closed the connection (EOF or reset) without sending anything.
    pub async fn closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte).await, Ok(0) | Err(_))
    }
}

pub async fn tls_connect(addr: SocketAddr, config: rustls::ClientConfig) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    TlsConnector::from(Arc::new(config)).connect(name, tcp).await
}

/// The real binary, `serve --self-signed` on free local ports, JSON logs in `dir/stderr.log`.
/// Killed on drop if it is still running (a test that failed half-way).
pub struct ServerProcess {
    child: std::process::Child,
    pub https: SocketAddr,
    pub metrics: SocketAddr,
    pub ca_pem: String,
    pub dir: tempfile::TempDir,
}

fn free_local_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

impl ServerProcess {
    /// Starts it with `extra` flags and returns once /readyz answers 200.
    pub async fn start(extra: &[&str]) -> ServerProcess {
        ServerProcess::start_limited(extra, None).await
    }

    /// Same, with its address space bounded to `address_space` bytes (RLIMIT_AS): a server that
    /// would take the machine's memory aborts instead.
    pub async fn start_limited(extra: &[&str], address_space: Option<libc::rlim_t>) -> ServerProcess {
        let dir = tempfile::tempdir().unwrap();
        let (https, metrics) = (free_local_addr(), free_local_addr());
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_divert-webhook"));
        command
            .args(["serve", "--self-signed", "--write-ca", dir.path().join("ca.pem").to_str().unwrap()])
            .args(["--addr", &https.to_string(), "--metrics-addr", &metrics.to_string(), "--log-format", "json"])
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap());
        if let Some(bytes) = address_space {
            use std::os::unix::process::CommandExt as _;
            let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut server = ServerProcess {
            child: command.spawn().expect("the binary starts"),
            https,
            metrics,
            ca_pem: String::new(),
            dir,
        };
        let started = std::time::Instant::now();
        loop {
            let ready = plain_client().get(format!("http://{metrics}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(server.child.try_wait().unwrap().is_none(), "the server exited at start: {}", server.log());
            assert!(started.elapsed() < Duration::from_secs(30), "/readyz never answered 200: {}", server.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.ca_pem = std::fs::read_to_string(server.dir.path().join("ca.pem")).expect("--write-ca wrote the CA");
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("https://{}{path_and_query}", self.https)
    }

    /// What it wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, signal) }, 0, "kill failed");
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for it to exit by itself, failing the test after `within`.
    pub async fn exit_status(&mut self, within: Duration) -> std::process::ExitStatus {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < within, "the server did not exit within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        }
    }
}

/// A `/proc/PID/status` field in KiB (VmRSS, VmHWM, Threads…); None once the process is gone.
pub fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?;
    line.split_whitespace().next()?.parse().ok()
}

/// Raises this process's soft RLIMIT_NOFILE to at least `needed` (up to the hard limit; child
/// processes inherit it) and returns the soft limit now in force.
pub fn raise_open_files_limit(needed: libc::rlim_t) -> libc::rlim_t {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < needed {
            limit.rlim_cur = needed.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    limit.rlim_cur
}

/// The deployment's memory limit in bytes, as deploy/base/deployment.yaml sets it (`limits: {memory: 128Mi}`).
pub fn deployment_memory_limit() -> u64 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base/deployment.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let value = yaml
        .lines()
        .find_map(|line| line.split_once("limits:")?.1.split_once("memory:").map(|(_, v)| v.to_string()))
        .expect("deploy/base/deployment.yaml sets limits: {memory: ...}");
    let value = value.trim().trim_end_matches(['}', ',', ' ']);
    let (number, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len()));
    let number: u64 = number.parse().unwrap_or_else(|_| panic!("memory limit {value:?}"));
    number
        * match unit {
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "" => 1,
            other => panic!("memory limit unit {other:?} in {value:?}"),
        }
}
