//! Two JSON values -> `patch::diff`: the patch turns the first into the second, and equal
//! values give no patch. Values are built with the rules' vocabulary, the second one often an
//! edit of the first, so that arrays of named routes (the LCS and in-place pairing paths) come
//! up often; an input that is a JSON array `[old, new]` is taken as the pair (the seeds).
#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let (old, new) = match serde_json::from_slice::<Value>(data) {
        // Seeds: `[old, new]` pairs from real manifests.
        Ok(Value::Array(mut pair)) if pair.len() == 2 => {
            let new = pair.pop().unwrap();
            (pair.pop().unwrap(), new)
        }
        _ => {
            let mut u = Unstructured::new(data);
            let Ok(old) = divert_webhook_fuzz::value(&mut u, 5) else { return };
            // The second value is often the first edited, as in a mutation.
            let new = match u.int_in_range(0..=2u8) {
                Ok(0) => divert_webhook_fuzz::value(&mut u, 5).unwrap_or(Value::Null),
                _ => edit(&mut u, old.clone()),
            };
            (old, new)
        }
    };
    let patch = divert_webhook::patch::diff(&old, &new);
    if old == new {
        assert!(patch.0.is_empty(), "equal values gave a patch");
    }
    let mut applied = old.clone();
    json_patch::patch(&mut applied, &patch).unwrap_or_else(|e| panic!("patch does not apply: {e}"));
    assert_eq!(applied, new, "patch {}", serde_json::to_string(&patch).unwrap());
});

/// `value` with a few random edits: array elements inserted, removed, swapped or changed, and
/// object fields added, removed or changed, at any depth.
fn edit(u: &mut Unstructured<'_>, mut value: Value) -> Value {
    let edits = u.int_in_range(0..=6u8).unwrap_or(0);
    for _ in 0..edits {
        edit_one(u, &mut value, 0);
    }
    value
}

fn edit_one(u: &mut Unstructured<'_>, value: &mut Value, depth: u32) {
    let descend = depth < 6 && u.ratio(2u8, 3).unwrap_or(false);
    match value {
        Value::Array(items) if descend && !items.is_empty() => {
            let i = u.choose_index(items.len()).unwrap_or(0);
            edit_one(u, &mut items[i], depth + 1);
        }
        Value::Object(map) if descend && !map.is_empty() => {
            let i = u.choose_index(map.len()).unwrap_or(0);
            let (_, child) = map.iter_mut().nth(i).unwrap();
            edit_one(u, child, depth + 1);
        }
        Value::Array(items) => match u.int_in_range(0..=3u8).unwrap_or(0) {
            0 => {
                let at = u.int_in_range(0..=items.len()).unwrap_or(0);
                items.insert(at, divert_webhook_fuzz::value(u, 3).unwrap_or(Value::Null));
            }
            1 if !items.is_empty() => {
                items.remove(u.choose_index(items.len()).unwrap_or(0));
            }
            2 if items.len() > 1 => {
                let (a, b) = (u.choose_index(items.len()).unwrap_or(0), u.choose_index(items.len()).unwrap_or(0));
                items.swap(a, b);
            }
            _ => *value = divert_webhook_fuzz::value(u, 3).unwrap_or(Value::Null),
        },
        Value::Object(map) => match u.int_in_range(0..=2u8).unwrap_or(0) {
            0 => {
                let key = u.choose(divert_webhook_fuzz::KEYS).unwrap_or(&"name").to_string();
                map.insert(key, divert_webhook_fuzz::value(u, 3).unwrap_or(Value::Null));
            }
            1 if !map.is_empty() => {
                let i = u.choose_index(map.len()).unwrap_or(0);
                let key = map.keys().nth(i).unwrap().clone();
                map.shift_remove(&key);
            }
            _ => *value = divert_webhook_fuzz::value(u, 3).unwrap_or(Value::Null),
        },
        _ => *value = divert_webhook_fuzz::value(u, 3).unwrap_or(Value::Null),
    }
}
