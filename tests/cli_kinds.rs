//! `mutate -f` / `check -f` over multi-document YAML mixing every kind the webhook handles with
//! kinds it does not: the real binary, as a user runs it.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("POD_NAMESPACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{}/deploy/examples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

const CONFIG_MAP: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: staging
data:
  zeta: \"1\"
  alpha: 'true'
";

#[test]
fn every_kind_in_one_file_is_mutated_in_place_and_the_rest_passes_through() {
    let input =
        [example("namespaces.yaml"), example("virtualservice.yaml"), example("ingress.yaml"), CONFIG_MAP.to_string()]
            .join("\n---\n");
    let out = run(&["mutate", "-f", "-", "--driver", "istio"], &input);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&stdout).unwrap();
    let inputs: Vec<Value> =
        serde_saphyr::from_multiple::<Value>(&input).unwrap().into_iter().filter(|d| !d.is_null()).collect();
    assert_eq!(docs.len(), inputs.len(), "one document out per document in");
    // same objects in the same order
    for (i, (a, b)) in inputs.iter().zip(&docs).enumerate() {
        assert_eq!((&a["kind"], &a["metadata"]["name"]), (&b["kind"], &b["metadata"]["name"]), "document {i}");
    }
    let movies = docs.iter().find(|d| d["metadata"]["name"] == "movies-api").unwrap();
    let names: Vec<&str> =
        movies["spec"]["http"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["rentals", "okteto-divert-cindy-api", "api"]);
    // under the istio driver the Ingress is left alone; the ConfigMap always is, field order and all
    let ingress_in = inputs.iter().find(|d| d["kind"] == "Ingress").unwrap();
    assert_eq!(docs.iter().find(|d| d["kind"] == "Ingress").unwrap(), ingress_in);
    let config_map = stdout.split("---").find(|d| d.contains("kind: ConfigMap")).unwrap();
    assert!(config_map.find("zeta").unwrap() < config_map.find("alpha").unwrap(), "{config_map}");
    assert!(config_map.contains("alpha: \"true\""), "a string stays a string: {config_map}");

    let out = run(&["mutate", "-f", "-", "--driver", "nginx"], &input);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("# divert-webhook begin") && stdout.contains("okteto-divert=cindy"), "{stdout}");
}

#[test]
fn check_lists_denials_of_every_kind_on_stderr_and_fails() {
    let bad_vs = "\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: api
  namespace: staging
  annotations:
    divert.okteto.com/2615052508acbfaddeba0eeded4131631ea31a02: '{\"namespace\": \"staging\"}'
spec:
  hosts: [api]
  http:
  - match:
    - headers:
        okteto-divert:
          exact: cindy
    route:
    - destination: {host: api}
";
    let bad_ingress = "\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: cindy
  annotations:
    divert.okteto.com/header: Cindy
spec:
  rules: []
";
    let input = format!("{bad_vs}---\n{bad_ingress}---\n{CONFIG_MAP}");
    let out = run(&["check", "-f", "-"], &input);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let denials: Vec<&str> = stderr.lines().filter(|l| l.starts_with("denied: ")).collect();
    assert!(
        denials.iter().any(|l| l.contains("VirtualService staging/api") && l.contains("own namespace")),
        "{stderr}"
    );
    assert!(
        denials.iter().any(|l| l.contains("VirtualService staging/api") && l.contains("spec.http[0].match[0].headers")),
        "{stderr}"
    );
    assert!(
        denials.iter().any(|l| l.contains("Ingress cindy/web") && l.contains("divert.okteto.com/header")),
        "{stderr}"
    );
    // each denial names its object once
    for line in &denials {
        let object = if line.contains("VirtualService") { "VirtualService staging/api" } else { "Ingress cindy/web" };
        assert_eq!(line.matches(object).count(), 1, "{line}");
    }
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("allowed: ConfigMap staging/settings"), "{stdout}");
}
