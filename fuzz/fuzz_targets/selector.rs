//! Arbitrary text as a label selector (`--managed-selector`): parsing never panics, a parsed
//! selector shows its trimmed source, parsing that again gives the same requirements, and
//! matching works on a few label sets.
#![no_main]

use divert_webhook::selector::Selector;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(selector) = Selector::parse(&text) else { return };
    assert_eq!(selector.to_string(), text.trim());
    let reparsed = Selector::parse(&selector.to_string()).expect("a selector's own text parses");
    assert_eq!(reparsed.requirements(), selector.requirements());

    let label_sets: Vec<Map<String, Value>> = [
        json!({}),
        json!({"dev.okteto.com/okteto-managed": "true"}),
        json!({"a": "b", "c": "", "env": "prod", "tier": "web"}),
        json!({"a": 1, "x": null}),
    ]
    .into_iter()
    .map(|v| v.as_object().unwrap().clone())
    .collect();
    // Labels named by the selector itself, so that matching paths are reached.
    let mut own = Map::new();
    for (i, word) in text.split(|c: char| !c.is_ascii_alphanumeric() && !"./-_".contains(c)).enumerate() {
        own.insert(word.to_string(), json!(if i % 2 == 0 { word } else { "" }));
    }
    for labels in label_sets.iter().chain([&own]) {
        let _ = selector.matches(Some(labels));
    }
    if selector.requirements().is_empty() {
        assert!(selector.matches(None) && label_sets.iter().all(|l| selector.matches(Some(l))));
    }
});
