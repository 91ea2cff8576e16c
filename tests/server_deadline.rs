//! SPEC §8 on the real binary: a review that cannot finish by its `?timeout=` is answered 408,
//! and its work stops there: the process's CPU time stops growing right after the answer
//! (nothing goes on in the background), and the server keeps serving others meanwhile.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{RawHttp1, fixture, plain_client};
use serde_json::{Value, json};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_local_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// user + system CPU time of `pid`, from /proc/PID/stat (clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// A VirtualService whose validation compiles `count` distinct regexes that RE2 takes long to
/// compile (Unicode classes, counted repetition; each over the program size limit).
fn regex_heavy(count: usize) -> Value {
    let http: Vec<Value> = (0..count)
        .map(|i| {
            json!({"name": format!("r{i}"), "match": [{"uri": {"regex": format!("/{i}[\\pL\\pN_-]{{1,64}}")}}],
                        "route": [{"destination": {"host": "api"}}]})
        })
        .collect();
    json!({
        "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "slow-1",
            "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
            "resource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
            "name": "slow", "namespace": "staging", "operation": "CREATE", "userInfo": {"username": "u"},
            "object": {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                       "metadata": {"name": "slow", "namespace": "staging"},
                       "spec": {"hosts": ["api"], "http": http}},
            "oldObject": null, "dryRun": false
        }
    })
}

#[tokio::test]
async fn a_review_past_its_deadline_is_answered_408_and_its_work_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (https, metrics) = (free_local_addr(), free_local_addr());
    let child = Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
        .args(["serve", "--self-signed", "--write-ca", dir.path().join("ca.pem").to_str().unwrap()])
        .args(["--addr", &https.to_string(), "--metrics-addr", &metrics.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let server = Running(child);
    let started = Instant::now();
    loop {
        let ready = plain_client().get(format!("http://{metrics}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the server never got ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let pid = server.0.id();

    // 3 000 slow compiles: minutes of work without the deadline.
    let body = serde_json::to_vec(&regex_heavy(3000)).unwrap();
    let mut slow = RawHttp1::connect(https, &ca).await;
    let before = cpu_time(pid);
    let sent = Instant::now();
    let slow_answer = tokio::spawn(async move { slow.post("/validate?timeout=1s", &body).await });

    // Others are served while it runs.
    let mut other = RawHttp1::connect(https, &ca).await;
    let namespace = serde_json::to_vec(&fixture("namespace-create.json")).unwrap();
    for _ in 0..5 {
        let asked = Instant::now();
        assert_eq!(other.post("/mutate", &namespace).await.status, 200);
        assert!(asked.elapsed() < Duration::from_secs(2), "another review waited {:?}", asked.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let answer = slow_answer.await.unwrap();
    let answered_after = sent.elapsed();
    assert_eq!(answer.status, 408, "{}", String::from_utf8_lossy(&answer.body));
    assert!(answered_after < Duration::from_secs(5), "answered after {answered_after:?}");
    // One compile may be under way at the deadline (it cannot be interrupted); after that the
    // work stops: over the next second the process is all but idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_answer = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = cpu_time(pid);
    assert!(
        after - at_answer <= Duration::from_millis(100),
        "{:?} of CPU in the second after the answer",
        after - at_answer
    );
    assert!(at_answer - before < Duration::from_secs(5), "{:?} of CPU for a 1 s review", at_answer - before);
    assert_eq!(other.post("/mutate", &namespace).await.status, 200);
}
