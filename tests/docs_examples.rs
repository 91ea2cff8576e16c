//! The outputs docs/namespaces.md quotes as real are what the webhook's code prints for the
//! example files it names.

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
