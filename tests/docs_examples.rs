//! The outputs the docs (namespaces.md, operating.md, ingress.md, validation.md) quote as real
//! are what the webhook's code prints for the examples they name.

use divert_webhook::manifests::{Verdict, check_documents, mutate_documents};
use divert_webhook::selector::Selector;
use divert_webhook::settings::{DEFAULT_MANAGED_SELECTOR, Driver, Settings};

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The contents of the first fenced block after `marker` in `doc`.
fn block_after<'d>(doc: &'d str, marker: &str) -> &'d str {
    let rest = &doc[doc.find(marker).unwrap_or_else(|| panic!("no {marker:?}"))..];
    let fence = rest.find("```").expect("a fenced block");
    let body = &rest[fence..];
    let body = &body[body.find('\n').unwrap() + 1..];
    &body[..body.find("```").unwrap()]
}

fn settings(driver: Driver) -> Settings {
    Settings::new(driver, Selector::parse(DEFAULT_MANAGED_SELECTOR).unwrap(), None, &[])
}

#[test]
fn the_namespace_doc_quotes_real_output() {
    let doc = read("docs/namespaces.md");
    let mutated = mutate_documents(&read("deploy/examples/namespaces.yaml"), &settings(Driver::Istio));
    assert_eq!(mutated.verdict, Verdict::Passed);
    assert_eq!(block_after(&doc, "prints, verbatim:"), mutated.stdout);
    assert_eq!(block_after(&doc, "and on stderr:"), mutated.stderr.join("\n") + "\n");

    let nginx = mutate_documents(&read("deploy/examples/namespaces.yaml"), &settings(Driver::Nginx));
    assert!(nginx.stdout.contains(block_after(&doc, "and leaves\n`istio-system` and `unmanaged` alone:")));

    let denied = read("deploy/examples/namespaces-denied.yaml");
    let checked = check_documents(&denied, &settings(Driver::Istio));
    assert_eq!(checked.verdict, Verdict::Denied);
    assert_eq!(block_after(&doc, "prints on stderr (real output;"), checked.stderr.join("\n") + "\n");
    let checked = check_documents(&denied, &settings(Driver::Nginx));
    let nginx_line = block_after(&doc, "is\ndenied instead:").trim_end();
    assert!(checked.stderr.iter().any(|l| l == nginx_line), "{:?}", checked.stderr);
}

#[test]
fn the_operating_doc_quotes_the_real_answer_of_its_curl_example() {
    let fixture = read("tests/fixtures/namespace-create.json");
    let (answer, _) = divert_webhook::review::review(
        divert_webhook::review::Endpoint::Mutate,
        fixture.as_bytes(),
        &settings(Driver::Istio),
    )
    .unwrap();
    let doc = read("docs/operating.md");
    let quoted = block_after(&doc, "This is the real output (one line):");
    assert_eq!(quoted.trim_end(), String::from_utf8(answer).unwrap());
}

/// `doc_line` stands for `real`: equal, or, where the doc shortens a long line with `…`, the
/// real line starts with the part before the first `…`, ends with the part after the last, and
/// holds the parts between in order.
fn stands_for(doc_line: &str, real: &str) -> bool {
    let parts: Vec<&str> = doc_line.split('…').collect();
    let [first, middle @ .., last] = parts.as_slice() else { return doc_line == real };
    if !real.starts_with(first) || !real[first.len()..].ends_with(last) || real.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &real[first.len()..real.len() - last.len()];
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn the_ingress_doc_quotes_the_real_block() {
    let doc = read("docs/ingress.md");
    let quoted = block_after(&doc, "checks this block against the real output):");
    let mutated = mutate_documents(&read("deploy/examples/ingress.yaml"), &settings(Driver::Nginx));
    assert_eq!(mutated.verdict, Verdict::Passed);
    let lines: Vec<&str> = mutated.stdout.lines().collect();
    let mut quoted_lines = quoted.lines();
    let first = quoted_lines.next().unwrap();
    let start = lines.iter().position(|l| *l == first).unwrap_or_else(|| panic!("{first:?} in {}", mutated.stdout));
    let mut shortened = 0;
    for (i, doc_line) in quoted_lines.enumerate() {
        let real = lines.get(start + 1 + i).copied().unwrap_or_default();
        assert!(stands_for(doc_line, real), "doc: {doc_line}\nreal: {real}");
        shortened += usize::from(doc_line.contains('…'));
    }
    assert_eq!(shortened, 3, "the three wide passes are the shortened lines");
    assert!(!stands_for("a…z", "b…z") && !stands_for("a…q…z", "abz") && stands_for("a…q…z", "aqqz"));
}

#[test]
fn the_validation_doc_quotes_a_real_escaped_warning() {
    let doc = read("docs/validation.md");
    let quoted = block_after(&doc, "\"routes\": [\"api\\nx\\u001b[31m\"]` gives:");
    let manifest = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
  namespace: staging
  annotations:
    divert.okteto.com/2615052508acbfaddeba0eeded4131631ea31a02: "{\"namespace\":\"cindy\",\"routes\":[\"api\\nx\\u001b[31m\"]}"
spec:
  hosts: [api]
  http:
  - name: api
    route:
    - destination:
        host: api
"#;
    let mutated = mutate_documents(manifest, &settings(Driver::Istio));
    let expected = format!("warning: VirtualService staging/api: {}", quoted.trim_end());
    assert!(mutated.stderr.contains(&expected), "{:?}", mutated.stderr);
}

#[test]
fn the_cluster_doc_quotes_the_real_denial_of_a_bad_from_label() {
    let doc = read("docs/cluster.md");
    let quoted = block_after(&doc, "naming the label and the fix:");
    let manifest =
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: cindy\n  labels:\n    divert.okteto.com/from: cindy\n";
    let checked = check_documents(manifest, &settings(Driver::Istio));
    assert_eq!(checked.verdict, Verdict::Denied);
    assert_eq!(checked.stderr[0], format!("denied: {}", quoted.trim_end()));
}

/// docs/httproutes.md quotes the real output of `reconcile -o yaml` on its dump, the dump itself,
/// and the real output of `mutate` on the developer's route.
#[test]
fn the_httproutes_doc_quotes_real_output() {
    use std::process::Command;
    let doc = read("docs/httproutes.md");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_divert-webhook"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let fixture = "tests/fixtures/cluster-linkerd.yaml";
    assert_eq!(block_after(&doc, "`tests/fixtures/cluster-linkerd.yaml` dumps:"), read(fixture));
    let reconciled = run(&["reconcile", "--driver", "nginx", "--cluster", fixture, "-o", "yaml"]);
    assert_eq!(block_after(&doc, "prints what the reconciler writes"), reconciled);
    assert!(reconciled.contains("kind: ReferenceGrant") && reconciled.contains("name: api-divert-cindy"));
    let mutated =
        run(&["mutate", "--driver", "nginx", "--cluster", fixture, "-f", "deploy/examples/httproute-developer.yaml"]);
    assert_eq!(block_after(&doc, "deploy/examples/httproute-developer.yaml` prints"), mutated);
    assert!(mutated.contains("okteto-divert=cindy"));
    // The webhook rules the doc quotes are deploy/base/webhooks.yaml's, in both configurations.
    let webhook = read("deploy/base/webhooks.yaml");
    for line in block_after(&doc, "under either driver:").lines() {
        assert_eq!(
            webhook.matches(line.trim()).count(),
            2,
            "deploy/base/webhooks.yaml lacks {line} in a configuration"
        );
    }
}
