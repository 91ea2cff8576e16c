//! JSONPatch (RFC 6902) between the object as received and as the rules left it.
//!
//! The rules edit a copy of the raw JSON; this module turns the difference into the smallest
//! patch that touches only what changed (SPEC §8): objects are compared key by key, arrays
//! element by element (insertions and removals found by longest common subsequence, so a route
//! inserted before route 3 is one `add`, not a `replace` of every later route), and only leaves
//! whose value changed are replaced. Equal inputs give an empty patch.

use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use jsonptr::PointerBuf;
use serde_json::{Map, Value};

/// Above this many cells the LCS table is not built; differing elements are then compared
/// position by position (still correct, only less minimal). Routes lists are far below it.
const LCS_MAX_CELLS: usize = 1 << 20;

pub fn diff(old: &Value, new: &Value) -> Patch {
    let mut ops = Vec::new();
    diff_at(&mut PointerBuf::root(), old, new, &mut ops);
    Patch(ops)
}

fn diff_at(path: &mut PointerBuf, old: &Value, new: &Value, ops: &mut Vec<PatchOperation>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => diff_objects(path, o, n, ops),
        (Value::Array(o), Value::Array(n)) => diff_arrays(path, o, n, ops),
        _ => ops.push(PatchOperation::Replace(ReplaceOperation { path: path.clone(), value: new.clone() })),
    }
}

fn diff_objects(
    path: &mut PointerBuf,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    ops: &mut Vec<PatchOperation>,
) {
    for (key, old_value) in old {
        path.push_back(key.as_str());
        match new.get(key) {
            None => ops.push(PatchOperation::Remove(RemoveOperation { path: path.clone() })),
            Some(new_value) => diff_at(path, old_value, new_value, ops),
        }
        path.pop_back();
    }
    for (key, new_value) in new {
        if !old.contains_key(key) {
            path.push_back(key.as_str());
            ops.push(PatchOperation::Add(AddOperation { path: path.clone(), value: new_value.clone() }));
            path.pop_back();
        }
    }
}

enum Edit {
    Keep,
    Remove,
    Insert(usize),
}

fn diff_arrays(path: &mut PointerBuf, old: &[Value], new: &[Value], ops: &mut Vec<PatchOperation>) {
    // Common prefix and suffix need no table.
    let prefix = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let suffix = old[prefix..].iter().rev().zip(new[prefix..].iter().rev()).take_while(|(a, b)| a == b).count();
    let (o, n) = (&old[prefix..old.len() - suffix], &new[prefix..new.len() - suffix]);

    let edits = if o.len() == n.len() || o.len().saturating_mul(n.len()) > LCS_MAX_CELLS {
        None
    } else {
        Some(lcs_edits(o, n))
    };

    let mut index = prefix; // position in the array as the patch has rewritten it so far
    match edits {
        None => {
            // Same length (an in-place edit, the common case) or too large for a table:
            // pair elements by position, then remove or append the rest.
            let common = o.len().min(n.len());
            for k in 0..common {
                path.push_back(index + k);
                diff_at(path, &o[k], &n[k], ops);
                path.pop_back();
            }
            index += common;
            for _ in common..o.len() {
                path.push_back(index);
                ops.push(PatchOperation::Remove(RemoveOperation { path: path.clone() }));
                path.pop_back();
            }
            for item in &n[common..] {
                path.push_back(index);
                ops.push(PatchOperation::Add(AddOperation { path: path.clone(), value: item.clone() }));
                path.pop_back();
                index += 1;
            }
        }
        Some(edits) => {
            let mut old_i = 0;
            let mut k = 0;
            while k < edits.len() {
                if let Edit::Keep = edits[k] {
                    old_i += 1;
                    index += 1;
                    k += 1;
                    continue;
                }
                // A run of removals and insertions between kept elements.
                let run_end = (k..edits.len()).find(|&e| matches!(edits[e], Edit::Keep)).unwrap_or(edits.len());
                let mut removed = Vec::new();
                let mut inserted = Vec::new();
                for edit in &edits[k..run_end] {
                    match edit {
                        Edit::Remove => {
                            removed.push(old_i);
                            old_i += 1;
                        }
                        Edit::Insert(j) => inserted.push(*j),
                        Edit::Keep => unreachable!(),
                    }
                }
                index = patch_run(path, o, n, &removed, &inserted, index, ops);
                k = run_end;
            }
        }
    }
}

/// Turns the removed elements `removed` (indices into `o`) into the inserted ones `inserted`
/// (indices into `n`), starting at position `index` of the array being patched; returns the
/// position after the run. A removed element and an inserted element that are the same element
/// changed ([`same_element`], paired in order) are patched in place instead of replaced whole;
/// the rest are removals and insertions.
fn patch_run(
    path: &mut PointerBuf,
    o: &[Value],
    n: &[Value],
    removed: &[usize],
    inserted: &[usize],
    index: usize,
    ops: &mut Vec<PatchOperation>,
) -> usize {
    // Pair in order: each removed element with the first later inserted one it can become.
    let mut partner: Vec<Option<usize>> = vec![None; inserted.len()];
    let mut paired_old = vec![false; removed.len()];
    let mut next_insert = 0;
    for (r, &old) in removed.iter().enumerate() {
        if let Some(offset) = inserted[next_insert..].iter().position(|&new| same_element(&o[old], &n[new])) {
            let at = next_insert + offset;
            partner[at] = Some(old);
            paired_old[r] = true;
            next_insert = at + 1;
        }
    }
    // Remove the unpaired old elements; the paired ones then sit in order from `index`.
    let mut position = index;
    for paired in paired_old {
        path.push_back(position);
        if paired {
            position += 1;
        } else {
            ops.push(PatchOperation::Remove(RemoveOperation { path: path.clone() }));
        }
        path.pop_back();
    }
    // Insert the new elements among them, patching each paired one in place.
    let mut position = index;
    for (&new, old) in inserted.iter().zip(partner) {
        path.push_back(position);
        match old {
            Some(old) => diff_at(path, &o[old], &n[new], ops),
            None => ops.push(PatchOperation::Add(AddOperation { path: path.clone(), value: n[new].clone() })),
        }
        path.pop_back();
        position += 1;
    }
    position
}

/// Could `new` be `old` edited? Maps that both have a `name` must have the same one.
fn same_element(old: &Value, new: &Value) -> bool {
    match (old.get("name"), new.get("name")) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Edit script from `o` to `n` by longest common subsequence of equal elements.
fn lcs_edits(o: &[Value], n: &[Value]) -> Vec<Edit> {
    let (rows, cols) = (o.len(), n.len());
    // table[i][j] = LCS length of o[i..] and n[j..]
    let mut table = vec![0u32; (rows + 1) * (cols + 1)];
    let at = |i: usize, j: usize| i * (cols + 1) + j;
    for i in (0..rows).rev() {
        for j in (0..cols).rev() {
            table[at(i, j)] =
                if o[i] == n[j] { table[at(i + 1, j + 1)] + 1 } else { table[at(i + 1, j)].max(table[at(i, j + 1)]) };
        }
    }
    let mut edits = Vec::with_capacity(rows + cols);
    let (mut i, mut j) = (0, 0);
    while i < rows || j < cols {
        if i < rows && j < cols && o[i] == n[j] {
            edits.push(Edit::Keep);
            i += 1;
            j += 1;
        } else if j < cols && (i == rows || table[at(i, j + 1)] >= table[at(i + 1, j)]) {
            edits.push(Edit::Insert(j));
            j += 1;
        } else {
            edits.push(Edit::Remove);
            i += 1;
        }
    }
    // Put each removal before the insertions that share its position, so that a changed
    // element shows up as Remove+Insert and is patched in place.
    let mut k = 0;
    while k + 1 < edits.len() {
        if matches!(edits[k], Edit::Insert(_)) && matches!(edits[k + 1], Edit::Remove) {
            edits.swap(k, k + 1);
            k = k.saturating_sub(1);
        } else {
            k += 1;
        }
    }
    edits
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(old: Value, new: Value) -> Patch {
        let p = diff(&old, &new);
        let mut applied = old.clone();
        json_patch::patch(&mut applied, &p).unwrap();
        assert_eq!(applied, new, "patch {}", serde_json::to_string(&p).unwrap());
        p
    }

    fn ops(p: &Patch) -> Value {
        serde_json::to_value(p).unwrap()
    }

    #[test]
    fn equal_values_give_no_patch() {
        assert!(diff(&json!({"a": [1, {"b": 2}]}), &json!({"a": [1, {"b": 2}]})).0.is_empty());
    }

    #[test]
    fn adding_a_label_creates_only_that_key_and_escapes_the_pointer() {
        let p = check(
            json!({"metadata": {"labels": {"a": "1"}}}),
            json!({"metadata": {"labels": {"a": "1", "istio.io/rev": "x"}}}),
        );
        assert_eq!(ops(&p), json!([{"op": "add", "path": "/metadata/labels/istio.io~1rev", "value": "x"}]));
        let p = check(json!({"metadata": {"name": "n"}}), json!({"metadata": {"name": "n", "labels": {"a~b": "1"}}}));
        assert_eq!(ops(&p), json!([{"op": "add", "path": "/metadata/labels", "value": {"a~b": "1"}}]));
    }

    #[test]
    fn inserted_routes_are_adds_at_their_positions() {
        let old = json!({"http": [{"name": "a"}, {"name": "b"}, {"name": "c"}]});
        let new = json!({"http": [{"name": "x"}, {"name": "a"}, {"name": "b"}, {"name": "y"}, {"name": "c"}]});
        let p = check(old, new);
        assert_eq!(
            ops(&p),
            json!([
                {"op": "add", "path": "/http/0", "value": {"name": "x"}},
                {"op": "add", "path": "/http/3", "value": {"name": "y"}}
            ])
        );
    }

    #[test]
    fn removed_routes_are_removes_and_changed_routes_are_patched_inside() {
        let old = json!([{"name": "x"}, {"name": "a", "w": 1}, {"name": "y"}, {"name": "b"}]);
        let new = json!([{"name": "a", "w": 2}, {"name": "b"}]);
        let p = check(old, new);
        assert!(
            p.0.iter().all(|op| !matches!(op, PatchOperation::Replace(r) if r.path.as_str().matches('/').count() < 2)),
            "{}",
            ops(&p)
        );
        // same length: in place
        let p = check(json!([{"n": 1, "h": {"a": 1}}, {"n": 2}]), json!([{"n": 1, "h": {"a": 1, "b": 2}}, {"n": 2}]));
        assert_eq!(ops(&p), json!([{"op": "add", "path": "/0/h/b", "value": 2}]));
    }

    #[test]
    fn a_changed_route_next_to_a_new_one_is_patched_in_place_not_renamed() {
        // §4 and §5 together: a clone is inserted before its original, which changes too.
        let old = json!([{"name": "api", "route": [1]}, {"name": "b"}]);
        let new = json!([{"name": "okteto-divert-x-api", "route": [2]}, {"name": "api", "route": [1], "h": 1}, {"name": "b"}]);
        let p = check(old, new);
        assert_eq!(
            ops(&p),
            json!([
                {"op": "add", "path": "/0", "value": {"name": "okteto-divert-x-api", "route": [2]}},
                {"op": "add", "path": "/1/h", "value": 1}
            ])
        );
    }

    proptest::proptest! {
        /// Whatever the two arrays, the patch turns the first into the second.
        #[test]
        fn any_patch_applies_to_its_target(
            old in proptest::collection::vec((0u8..4, 0u8..3, proptest::bool::ANY), 0..12),
            new in proptest::collection::vec((0u8..4, 0u8..3, proptest::bool::ANY), 0..12),
        ) {
            let element = |(name, value, named): (u8, u8, bool)| {
                if named { json!({"name": format!("r{name}"), "v": value}) } else { json!({"v": value}) }
            };
            let old = Value::Array(old.into_iter().map(element).collect());
            let new = Value::Array(new.into_iter().map(element).collect());
            let p = diff(&old, &new);
            let mut applied = old.clone();
            json_patch::patch(&mut applied, &p).unwrap();
            proptest::prop_assert_eq!(applied, new);
        }
    }

    #[test]
    fn mixed_edits_apply_to_the_target() {
        let cases = [
            (json!([1, 2, 3, 4, 5]), json!([0, 2, 9, 4, 6, 7])),
            (json!([]), json!([1, 2])),
            (json!([1, 2]), json!([])),
            (json!([1, 2, 3]), json!([3, 2, 1])),
            (json!({"a": [1, {"x": [1, 2]}], "b": null}), json!({"a": [{"x": [2]}, 1], "c": true})),
            (json!("s"), json!({"t": 1})),
        ];
        for (old, new) in cases {
            check(old, new);
        }
    }
}
