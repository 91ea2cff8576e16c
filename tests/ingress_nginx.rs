//! The divert block in a real nginx (Debian's package, as CI installs it): the snippets the
//! webhook returns through the review path are pasted into `location` blocks the way
//! ingress-nginx does, next to the proxy_set_header lines ingress-nginx writes itself, in front
//! of an echo upstream that answers with the request headers it received.
//!
//! nginx runs on loopback from a temporary prefix (its own nginx.conf, pid file, temp paths and
//! error log), in the foreground as one process, and is killed when the test ends.

mod ingress_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ingress_support::*;
use serde_json::json;

const NGINX: &str = "/usr/sbin/nginx";
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn nginx_binary() -> PathBuf {
    let path = PathBuf::from(NGINX);
    assert!(
        path.is_file(),
        "{NGINX} is missing: this test needs a real nginx. Install it (apt-get update && apt-get install -y nginx); \
         CI installs it in .ci/run"
    );
    path
}

/// An upstream that answers every request with the request's header block as the body.
struct EchoUpstream {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoUpstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let _ = echo_headers(stream);
                }
            }
        });
        EchoUpstream { port, stop, thread: Some(thread) }
    }
}

fn echo_headers(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
        head.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.shutdown(Shutdown::Both)
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A running nginx; killed on drop.
struct Nginx {
    child: Child,
    port: u16,
    error_log: PathBuf,
    _prefix: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// nginx.conf for `locations` (path → snippet), all proxying to the echo upstream; `http`
/// holds extra directives of the `http` block (none: nginx's defaults, as ingress-nginx's).
fn nginx_conf(prefix: &Path, port: u16, upstream: u16, http: &str, locations: &[(&str, &str)]) -> String {
    let p = prefix.display();
    let mut conf = format!(
        "master_process off;\ndaemon off;\npid {p}/nginx.pid;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/client_body;\n  proxy_temp_path {p}/proxy;\n  \
         fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n  {http}\n  \
         server {{\n    listen 127.0.0.1:{port};\n"
    );
    for (path, snippet) in locations {
        // What ingress-nginx writes into each location, with the configuration snippet in it.
        conf.push_str(&format!(
            "    location {path} {{\n      proxy_set_header Host $host;\n      proxy_set_header X-Request-ID $request_id;\n      \
             proxy_set_header X-Forwarded-For $remote_addr;\n      proxy_http_version 1.1;\n      \
             proxy_set_header Connection \"\";\n{snippet}\n      proxy_pass http://127.0.0.1:{upstream};\n    }}\n"
        ));
    }
    conf.push_str("  }\n}\n");
    conf
}

fn nginx_command(prefix: &Path, error_log: &Path) -> Command {
    let mut command = Command::new(nginx_binary());
    command
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .arg("-e")
        .arg(error_log)
        .stdin(Stdio::null());
    command
}

fn start_nginx(upstream: u16, locations: &[(&str, &str)]) -> Nginx {
    start_nginx_with(upstream, "", locations)
}

fn start_nginx_with(upstream: u16, http: &str, locations: &[(&str, &str)]) -> Nginx {
    let prefix = tempfile::tempdir().unwrap();
    let port = free_port();
    let error_log = prefix.path().join("error.log");
    let conf = nginx_conf(prefix.path(), port, upstream, http, locations);
    std::fs::write(prefix.path().join("nginx.conf"), conf).unwrap();

    let test = nginx_command(prefix.path(), &error_log).arg("-t").output().unwrap();
    let said = String::from_utf8_lossy(&test.stderr);
    assert!(test.status.success() && said.contains("syntax is ok"), "nginx -t rejected the config:\n{said}");

    let child = nginx_command(prefix.path(), &error_log).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut nginx = Nginx { child, port, error_log, _prefix: prefix };
    let deadline = Instant::now() + IO_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        let log = std::fs::read_to_string(&nginx.error_log).unwrap_or_default();
        assert!(nginx.child.try_wait().unwrap().is_none(), "nginx exited:\n{log}");
        assert!(Instant::now() < deadline, "nginx did not listen on {port}:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    nginx
}

struct Response {
    status: u16,
    /// Lower-cased names.
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The headers the upstream received (the echo body).
    fn upstream_headers(&self) -> Vec<(String, String)> {
        parse_headers(self.body.split("\r\n").skip(1))
    }

    fn upstream_header(&self, name: &str) -> Vec<String> {
        self.upstream_headers().into_iter().filter(|(n, _)| n == name).map(|(_, v)| v).collect()
    }
}

fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim_matches([' ', '\t']).to_string()))
        .collect()
}

fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: web-cindy.example.com\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status: {head}"));
    Response { status, headers: parse_headers(head.split("\r\n").skip(1)), body: body.to_string() }
}

/// The user's snippet before the Ingress got the divert annotation: CRLF line endings, a
/// comment, and a last line without a newline (ingress-nginx's template puts one after it).
const USER_OWN: &str = "add_header X-User 1;\r\nproxy_set_header X-User-Line 1;\r\n  # the user's comment\r\n\
                        proxy_set_header X-After-Block \"after the block\";\r\nproxy_set_header X-Last \"no newline\";";
/// Lines the user puts in front of the block afterwards (e.g. with `kubectl edit`).
const USER_ADDED: &str = "proxy_set_header X-Before-Block \"before the block\";\r\n\t\r\n";

/// The snippet the webhook produces for an Ingress annotated with `key`: the block in front of
/// the user's own lines, then (added by the user afterwards) lines in front of the block.
fn webhook_snippet(key: &str, legacy: bool) -> String {
    let settings = nginx_settings(legacy);
    let object = ingress(json!({HEADER: key, SNIPPET: USER_OWN}));
    let mut mutated = mutate(&object, &settings);
    let first = snippet_of(&mutated).unwrap().to_string();
    let (user, block) = split_block(&first);
    assert_eq!(user, USER_OWN, "user lines not kept byte for byte");
    assert_eq!(first, format!("{block}{USER_OWN}"));

    let edited = format!("{USER_ADDED}{first}");
    mutated["metadata"]["annotations"][SNIPPET] = edited.clone().into();
    let again = mutate(&mutated, &settings);
    let snippet = snippet_of(&again).unwrap().to_string();
    assert_eq!(snippet, edited, "a second mutation changed the snippet");
    assert_eq!(split_block(&snippet).0, format!("{USER_ADDED}{USER_OWN}"), "user lines not kept byte for byte");
    snippet
}

#[test]
fn nginx_sends_the_divert_member_upstream_and_keeps_the_clients_other_members() {
    let upstream = EchoUpstream::start();
    let plain = webhook_snippet("cindy", false);
    let legacy = webhook_snippet("cindy", true);
    assert!(plain.contains("\r\n") && !plain.ends_with('\n'), "{plain:?}");
    // A snippet whose last line is a comment without a newline: the line ingress-nginx writes
    // after the snippet (here proxy_pass) must not become part of the comment.
    let commented = {
        let object = ingress(json!({HEADER: "cindy", SNIPPET: "add_header X-User 1;\r\n# the end, no newline"}));
        snippet_of(&mutate(&object, &nginx_settings(false))).unwrap().to_string()
    };
    // A user's `rewrite … break` stops nginx's rewrite-phase directives (`set`, `if`) that come
    // after it: the block in front of it still runs. (Behind it, where earlier versions of the
    // webhook appended it and where existing objects keep it, the block's variable stays
    // empty and the client's other members are lost.)
    let rewrite = "rewrite /rw/(.*)$ /$1 break;\r\n";
    let rewriting = {
        let object = ingress(json!({HEADER: "cindy", SNIPPET: rewrite}));
        snippet_of(&mutate(&object, &nginx_settings(false))).unwrap().to_string()
    };
    assert!(rewriting.ends_with(rewrite), "{rewriting}");
    let behind = format!("{rewrite}{}", split_block(&rewriting).1);
    // A block an earlier version wrote, as stored, and as the webhook rewrites it in place.
    let earlier = format!("add_header X-User 1;\r\n{EARLIER_BLOCK_BOB}proxy_set_header X-After-Block 1;");
    let rewritten = {
        let object = ingress(json!({HEADER: "cindy", SNIPPET: earlier.as_str()}));
        snippet_of(&mutate(&object, &nginx_settings(false))).unwrap().to_string()
    };
    assert_eq!(split_block(&rewritten).0, split_block(&earlier).0, "user lines not kept byte for byte");
    let nginx = start_nginx(
        upstream.port,
        &[
            ("/", &plain),
            ("/legacy/", &legacy),
            ("/commented/", &commented),
            ("/rw/", &rewriting),
            ("/behind/rw/", &behind),
            ("/earlier/", &earlier),
            ("/rewritten/", &rewritten),
        ],
    );

    let cases: &[(Option<&str>, &str)] = &[
        (None, "okteto-divert=cindy"),
        (Some("okteto-divert=bob"), "okteto-divert=cindy"),
        (Some("a=1,okteto-divert=bob;p,b=2"), "okteto-divert=cindy,a=1,b=2"),
        (Some("okteto-divert=a,okteto-divert=b,okteto-divert=c"), "okteto-divert=cindy"),
        (
            Some("okteto-divert=x , a=1 ,okteto-divert = y;q=1, b=2;okteto-divert=z,okteto-divert=w"),
            "okteto-divert=cindy, a=1 , b=2;okteto-divert=z",
        ),
        (Some("okteto-divert=bob\t,\tk=v"), "okteto-divert=cindy,\tk=v"),
        (
            Some("x=okteto-divert=bob,okteto-divert-2=keep,xokteto-divert=keep"),
            "okteto-divert=cindy,x=okteto-divert=bob,okteto-divert-2=keep,xokteto-divert=keep",
        ),
        (
            Some("sentry-trace_id=771a43a4192642f0b136d5159a501700,sentry-sample_rate=0.25"),
            "okteto-divert=cindy,sentry-trace_id=771a43a4192642f0b136d5159a501700,sentry-sample_rate=0.25",
        ),
        (
            Some("okteto-divert=1,a=1,okteto-divert=2,b=2,okteto-divert=3,c=3,okteto-divert=4"),
            "okteto-divert=cindy,a=1,b=2,c=3",
        ),
        // Five and more separate runs: the earlier block's four rounds answered 400 here.
        (
            Some(
                "okteto-divert=b1,x=1,okteto-divert=b2,y=2,okteto-divert=b3,z=3,okteto-divert=b4,w=4,okteto-divert=b5",
            ),
            "okteto-divert=cindy,x=1,y=2,z=3,w=4",
        ),
        (
            Some(
                "okteto-divert=b1 ;p=1,x=1;okteto-divert=p,okteto-divert = b2,okteto-divert=b3\t, y=2,okteto-divert=b4,,okteto-divert=b5,z=3",
            ),
            "okteto-divert=cindy,x=1;okteto-divert=p, y=2,,z=3",
        ),
    ];
    // Fifty separate runs, each divert member between two members of other systems.
    let fifty: String = (1..=50).map(|i| format!("k{i}=v{i},okteto-divert=b{i},")).collect::<String>() + "last=1";
    let fifty_kept: String = (1..=50).map(|i| format!(",k{i}=v{i}")).collect::<String>() + ",last=1";
    let fifty_expected = format!("okteto-divert=cindy{fifty_kept}");
    let cases: Vec<(Option<&str>, &str)> =
        cases.iter().copied().chain([(Some(fifty.as_str()), fifty_expected.as_str())]).collect();
    for (path, legacy) in [("/", false), ("/legacy/", true)] {
        for (sent, expected) in &cases {
            let headers: Vec<(&str, &str)> = sent.iter().map(|b| ("baggage", *b)).collect();
            let response = get(nginx.port, path, &headers);
            let context = format!("{path} baggage {sent:?}: {} {}", response.status, response.body);
            assert_eq!(response.status, 200, "{context}");
            assert_eq!(response.upstream_header("baggage"), vec![expected.to_string()], "{context}");
            let legacy_expected: Vec<String> = if legacy { vec!["cindy".into()] } else { vec![] };
            assert_eq!(response.upstream_header("baggage.okteto-divert"), legacy_expected, "{context}");
            // The user's lines around the block still work, and so do ingress-nginx's own.
            assert_eq!(response.header("x-user"), vec!["1"], "{context}");
            assert_eq!(response.upstream_header("x-user-line"), vec!["1"], "{context}");
            assert_eq!(response.upstream_header("x-after-block"), vec!["after the block"], "{context}");
            assert_eq!(response.upstream_header("x-before-block"), vec!["before the block"], "{context}");
            assert_eq!(response.upstream_header("x-last"), vec!["no newline"], "{context}");
            assert_eq!(response.upstream_header("x-request-id").len(), 1, "{context}");
            assert_eq!(response.upstream_header("host"), vec!["web-cindy.example.com"], "{context}");
        }
    }

    let response = get(nginx.port, "/commented/", &[("baggage", "okteto-divert=bob,k=v")]);
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.upstream_header("baggage"), vec!["okteto-divert=cindy,k=v"]);
    assert_eq!(response.header("x-user"), vec!["1"]);

    let response = get(nginx.port, "/rw/x", &[("baggage", "a=1,okteto-divert=bob,b=2")]);
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(response.body.starts_with("GET /x HTTP/1.1\r\n"), "{}", response.body);
    assert_eq!(response.upstream_header("baggage"), vec!["okteto-divert=cindy,a=1,b=2"]);
    let response = get(nginx.port, "/behind/rw/x", &[("baggage", "a=1,okteto-divert=bob,b=2")]);
    assert!(response.body.starts_with("GET /x HTTP/1.1\r\n"), "{}", response.body);
    assert_eq!(response.upstream_header("baggage"), vec!["okteto-divert=cindy"], "the client's a=1,b=2 are lost");

    // Five separate runs: the earlier block refused them; rewritten, the same Ingress forwards.
    let five = "okteto-divert=b1,x=1,okteto-divert=b2,y=2,okteto-divert=b3,z=3,okteto-divert=b4,w=4,okteto-divert=b5";
    let response = get(nginx.port, "/earlier/", &[("baggage", five)]);
    assert_eq!(response.status, 400, "{}", response.body);
    assert!(response.body.contains("too many separate okteto-divert members"), "{}", response.body);
    let response = get(nginx.port, "/rewritten/", &[("baggage", five)]);
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.upstream_header("baggage"), vec!["okteto-divert=cindy,x=1,y=2,z=3,w=4"]);
    assert_eq!(response.header("x-user"), vec!["1"]);
    assert_eq!(response.upstream_header("x-after-block"), vec!["1"]);

    let log = std::fs::read_to_string(&nginx.error_log).unwrap_or_default();
    assert!(!log.contains("[emerg]") && !log.contains("[error]"), "nginx error log:\n{log}");
}

/// `n` separate runs of one `okteto-divert` member with nothing between them but empty members:
/// the most runs a header line of a given size holds.
fn runs_without_other_members(n: usize) -> String {
    vec!["okteto-divert="; n].join(",,")
}

#[test]
fn every_run_a_header_line_nginx_accepts_can_hold_is_removed() {
    let upstream = EchoUpstream::start();
    let block = {
        let object = ingress(json!({HEADER: "cindy"}));
        snippet_of(&mutate(&object, &nginx_settings(false))).unwrap().to_string()
    };
    // nginx's default header buffers, as ingress-nginx's: a line of at most 8 KiB.
    let nginx = start_nginx(upstream.port, &[("/", &block)]);

    // 511 runs: the most a line nginx accepts holds (`baggage: ` and CRLF included).
    let most = runs_without_other_members(511);
    assert!(most.len() + "baggage: \r\n".len() <= 8192, "{}", most.len());
    let response = get(nginx.port, "/", &[("baggage", &most)]);
    assert_eq!(response.status, 200, "{}", &response.body[..200.min(response.body.len())]);
    assert_eq!(response.upstream_header("baggage"), vec![format!("okteto-divert=cindy{}", ",".repeat(510))]);

    // Realistic members up to the same size: every other system's member kept, in order.
    let (mut sent, mut kept) = (String::new(), String::from("okteto-divert=cindy"));
    for i in 0.. {
        let member = format!("sentry-trace-{i}=771a43a4192642f0b136d5159a50{i:04}");
        if sent.len() + member.len() + 40 > 8000 {
            break;
        }
        sent.push_str(&format!("okteto-divert=dev-{i},{member},"));
        kept.push_str(&format!(",{member}"));
    }
    sent.push_str("okteto-divert=last");
    let response = get(nginx.port, "/", &[("baggage", &sent)]);
    assert_eq!(response.status, 200);
    assert_eq!(response.upstream_header("baggage"), vec![kept]);

    // One run more does not fit in a line: nginx itself refuses the request, before the block.
    let response = get(nginx.port, "/", &[("baggage", &runs_without_other_members(512))]);
    assert_eq!(response.status, 400);
    assert!(!response.body.contains("okteto-divert"), "{}", response.body);

    // With larger buffers (an operator's choice) the block still removes 511 runs, with other
    // members around them, and refuses more rather than forward a stale key or drop members.
    let large = start_nginx_with(upstream.port, "large_client_header_buffers 4 32k;", &[("/", &block)]);
    let response = get(large.port, "/", &[("baggage", &format!("a=1,{},b=2", runs_without_other_members(511)))]);
    assert_eq!(response.status, 200);
    assert_eq!(response.upstream_header("baggage"), vec![format!("okteto-divert=cindy,a=1{},b=2", ",".repeat(510))]);
    let response = get(large.port, "/", &[("baggage", &runs_without_other_members(512))]);
    assert_eq!(response.status, 400);
    assert!(response.body.contains("baggage: too many separate okteto-divert members"), "{}", response.body);

    for nginx in [&nginx, &large] {
        let log = std::fs::read_to_string(&nginx.error_log).unwrap_or_default();
        assert!(!log.contains("[emerg]") && !log.contains("[error]"), "nginx error log:\n{log}");
    }
}

#[test]
fn nginx_accepts_the_block_next_to_corpus_snippets() {
    // The two real configuration snippets of the corpus, with the block in front.
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/ingresses/");
    let mut snippets = Vec::new();
    for file in [
        "argo-rollouts--docs_getting-started_smi_ingress.yaml",
        "ingress-nginx--docs_examples_customization_configuration-snippets_ingress.yaml",
    ] {
        let text = std::fs::read_to_string(format!("{corpus}{file}")).unwrap();
        let mut object: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let users_own = snippet_of(&object).unwrap().to_string();
        object["metadata"]["annotations"][HEADER] = "cindy".into();
        let mutated = mutate(&object, &nginx_settings(true));
        let snippet = snippet_of(&mutated).unwrap().to_string();
        assert_eq!(split_block(&snippet).0, users_own, "{file}");
        // ingress-nginx variables the Linkerd line uses; more_set_headers needs headers-more,
        // which Debian's nginx lacks: both stand in as plain nginx here.
        let runnable = snippet
            .replace("$service_name.$namespace.svc.cluster.local:$service_port", "web.cindy.svc.cluster.local:8080")
            .replace("more_set_headers \"Request-Id: $req_id\";", "add_header Request-Id $request_id;");
        snippets.push(runnable);
    }
    let upstream = EchoUpstream::start();
    let nginx = start_nginx(upstream.port, &[("/a/", &snippets[0]), ("/b/", &snippets[1])]);
    let response = get(nginx.port, "/a/", &[("baggage", "okteto-divert=bob,k=v")]);
    assert_eq!(response.upstream_header("baggage"), vec!["okteto-divert=cindy,k=v"]);
    assert_eq!(response.upstream_header("l5d-dst-override"), vec!["web.cindy.svc.cluster.local:8080"]);
    let response = get(nginx.port, "/b/", &[]);
    assert_eq!(response.upstream_header("baggage"), vec!["okteto-divert=cindy"]);
    assert_eq!(response.header("request-id").len(), 1);
}
