//! Arbitrary text as an nginx configuration snippet: the snippet reader (markers, block
//! replacement, directive tokenizer, header mentions) must not panic, taking the block out
//! again gives the user's text back, and the same text as an Ingress's `configuration-snippet`
//! goes through the rules of both endpoints with the usual checks.
#![no_main]

use divert_webhook::rules::nginx_snippet;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Some((&first, text)) = data.split_first() else { return };
    let snippet = String::from_utf8_lossy(text);

    for directive in nginx_snippet::user_directives(&snippet) {
        assert!(directive.line >= 1 && directive.own_line >= 1 && directive.own_line <= directive.line);
        let _ = nginx_snippet::header_mentions(&directive);
    }
    let checked = nginx_snippet::check_markers(&snippet);
    let block = nginx_snippet::divert_block("cindy", first & 2 != 0);
    match nginx_snippet::replace_blocks(&snippet, Some(&block)) {
        Ok(with_block) => {
            assert!(checked.is_ok(), "check_markers and replace_blocks disagree");
            let without = nginx_snippet::replace_blocks(&with_block, None).expect("our own block reads back");
            let user_text = nginx_snippet::replace_blocks(&snippet, None).unwrap();
            assert_eq!(without, user_text, "taking the block out again does not give the user's text back");
            let again = nginx_snippet::replace_blocks(&with_block, Some(&block)).unwrap();
            assert_eq!(again, with_block, "putting the block in twice is not a fixed point");
        }
        Err(error) => {
            assert_eq!(checked, Err(error.clone()), "check_markers and replace_blocks disagree");
            let _ = error.explain();
        }
    }

    let settings = divert_webhook_fuzz::settings(first | 1); // the nginx driver reads snippets
    let ingress = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "web",
            "namespace": "cindy",
            "annotations": {
                "divert.okteto.com/header": "cindy",
                "nginx.ingress.kubernetes.io/configuration-snippet": snippet,
            },
        },
        "spec": {"rules": [{"host": "web.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
    });
    divert_webhook_fuzz::check_review_both(&divert_webhook_fuzz::review_of(&ingress), &settings);
});
