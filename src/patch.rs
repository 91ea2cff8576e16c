//! JSONPatch (RFC 6902) between the object as received and as the rules left it.
//!
//! The rules edit a copy of the raw JSON; this module turns the difference into the smallest
//! patch that touches only what changed (SPEC §8): objects are compared key by key, arrays
//! element by element (insertions and removals found by a patience diff over hashes of the
//! elements, so a route inserted before route 3 is one `add`, not a `replace` of every later
//! route), and only leaves whose value changed are replaced. Equal inputs give an empty patch.
//!
//! Cost: elements are aligned by their `name` when they all have distinct ones (routes), else
//! by a hash of each element computed once; `==` runs only on aligned pairs. So the work grows
//! with the size of the two values and the number of edits, never with their product. The
//! operations borrow their values from the new object and are written straight to JSON:
//! nothing is copied on the way.

use std::hash::{Hash, Hasher};

use json_patch::Patch;
use jsonptr::PointerBuf;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use similar::{Algorithm, DiffTag};

use crate::deadline::{Deadline, Expired};
use crate::rules::Field;

/// A JSONPatch, encoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JsonPatch {
    /// The operations as a JSON array; empty (no bytes) when there are none.
    pub json: Vec<u8>,
    pub operations: usize,
}

impl JsonPatch {
    pub fn is_empty(&self) -> bool {
        self.operations == 0
    }

    /// The operations as `json_patch` values (to apply them: offline commands, tests).
    pub fn decode(&self) -> Patch {
        if self.is_empty() {
            return Patch(Vec::new());
        }
        serde_json::from_slice(&self.json).expect("the webhook's own patch decodes")
    }
}

/// The patch from `old` to `new`, as `json_patch` operations.
pub fn diff(old: &Value, new: &Value) -> Patch {
    diff_until(old, new, Deadline::NONE).expect("a diff without a deadline always finishes").decode()
}

/// The patch from `old` to `new`, encoded; stops with [`Expired`] once `deadline` has passed.
pub fn diff_until(old: &Value, new: &Value, deadline: Deadline) -> Result<JsonPatch, Expired> {
    let mut differ = Differ { ops: Vec::new(), deadline, steps: 0 };
    differ.at(&mut PointerBuf::root(), old, new)?;
    if differ.ops.is_empty() {
        return Ok(JsonPatch::default());
    }
    let json = serde_json::to_vec(&differ.ops).expect("patch operations serialise");
    Ok(JsonPatch { json, operations: differ.ops.len() })
}

/// A patch of one `add` of `value` at `path` (for rules that know their one change).
pub fn add(path: PointerBuf, value: &Value) -> JsonPatch {
    one(Op::Add(path, value))
}

/// A patch of one `replace` of what is at `path` with `value`.
pub fn replace(path: PointerBuf, value: &Value) -> JsonPatch {
    one(Op::Replace(path, value))
}

fn one(op: Op<'_>) -> JsonPatch {
    JsonPatch { json: serde_json::to_vec(&[op]).expect("patch operations serialise"), operations: 1 }
}

/// One operation; values are borrowed from the new object.
enum Op<'a> {
    Add(PointerBuf, &'a Value),
    Remove(PointerBuf),
    Replace(PointerBuf, &'a Value),
}

impl Serialize for Op<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (op, path, value) = match self {
            Op::Add(path, value) => ("add", path, Some(value)),
            Op::Remove(path) => ("remove", path, None),
            Op::Replace(path, value) => ("replace", path, Some(value)),
        };
        let mut map = serializer.serialize_map(Some(if value.is_some() { 3 } else { 2 }))?;
        map.serialize_entry("op", op)?;
        map.serialize_entry("path", path.as_str())?;
        if let Some(value) = value {
            map.serialize_entry("value", value)?;
        }
        map.end()
    }
}

/// How many elements are looked at between two reads of the clock.
const STEPS_PER_DEADLINE_CHECK: u32 = 64;

struct Differ<'a> {
    ops: Vec<Op<'a>>,
    deadline: Deadline,
    steps: u32,
}

impl<'a> Differ<'a> {
    fn tick(&mut self) -> Result<(), Expired> {
        self.steps += 1;
        if self.steps.is_multiple_of(STEPS_PER_DEADLINE_CHECK) { self.deadline.check() } else { Ok(()) }
    }

    fn at(&mut self, path: &mut PointerBuf, old: &Value, new: &'a Value) -> Result<(), Expired> {
        if same_value(old, new) {
            return Ok(());
        }
        match (old, new) {
            (Value::Object(o), Value::Object(n)) => self.objects(path, o, n),
            (Value::Array(o), Value::Array(n)) => self.arrays(path, o, n),
            _ => {
                self.ops.push(Op::Replace(path.clone(), new));
                Ok(())
            }
        }
    }

    fn objects(
        &mut self,
        path: &mut PointerBuf,
        old: &Map<String, Value>,
        new: &'a Map<String, Value>,
    ) -> Result<(), Expired> {
        // The rules' copy keeps the original's key order, so keys are first looked for at the
        // same position: no hashing while both maps agree (an IndexMap lookup hashes the key
        // with SipHash).
        let mut aligned = old.len() <= new.len();
        let mut new_in_order = new.iter();
        for (key, old_value) in old {
            path.push_back(key.as_str());
            let at_same_place = new_in_order.next().filter(|(k, _)| *k == key).map(|(_, v)| v);
            aligned &= at_same_place.is_some();
            match at_same_place.or_else(|| new.get(key)) {
                None => self.ops.push(Op::Remove(path.clone())),
                Some(new_value) => self.at(path, old_value, new_value)?,
            }
            path.pop_back();
        }
        // When every old key was in place, the added keys are exactly those after them.
        let added = new
            .iter()
            .enumerate()
            .filter(|(at, (key, _))| if aligned { *at >= old.len() } else { !old.contains_key(*key) });
        for (_, (key, new_value)) in added {
            path.push_back(key.as_str());
            self.ops.push(Op::Add(path.clone(), new_value));
            path.pop_back();
        }
        Ok(())
    }

    fn arrays(&mut self, path: &mut PointerBuf, old: &[Value], new: &'a [Value]) -> Result<(), Expired> {
        // Common prefix and suffix need no hashing.
        let prefix = old.iter().zip(new).take_while(|(a, b)| same_value(a, b)).count();
        let suffix =
            old[prefix..].iter().rev().zip(new[prefix..].iter().rev()).take_while(|(a, b)| same_value(a, b)).count();
        let (o, n) = (&old[prefix..old.len() - suffix], &new[prefix..new.len() - suffix]);
        let mut index = prefix; // position in the array as the patch has rewritten it so far

        if o.len() == n.len() {
            // An in-place edit (the common case): pair elements by position.
            for (k, (old_item, new_item)) in o.iter().zip(n).enumerate() {
                self.tick()?;
                path.push_back(index + k);
                self.at(path, old_item, new_item)?;
                path.pop_back();
            }
            return Ok(());
        }

        // Elements that all carry a distinct `name` (routes) are aligned by name, without
        // looking inside them; others by a hash of their whole value.
        let deadline = self.deadline.instant();
        let script = match (unique_names(o), unique_names(n)) {
            (Some(old_names), Some(new_names)) => {
                similar::capture_diff_slices_deadline(Algorithm::Patience, &old_names, &new_names, deadline)
            }
            _ => {
                let old_hashes = self.hashes(o)?;
                let new_hashes = self.hashes(n)?;
                similar::capture_diff_slices_deadline(Algorithm::Patience, &old_hashes, &new_hashes, deadline)
            }
        };
        self.deadline.check()?;
        // Runs of removals and insertions between kept elements; a kept pair whose names or
        // hashes agree but whose values do not (an edited route, a collision) is treated as a
        // removal and an insertion, and the run pairs them up and patches inside.
        let (mut removed, mut inserted) = (Vec::new(), Vec::new());
        for op in script {
            let (tag, old_range, new_range) = op.as_tag_tuple();
            match tag {
                DiffTag::Equal => {
                    for (i, j) in old_range.zip(new_range) {
                        self.tick()?;
                        if same_value(&o[i], &n[j]) {
                            index = self.run(path, o, n, &removed, &inserted, index)?;
                            removed.clear();
                            inserted.clear();
                            index += 1;
                        } else {
                            removed.push(i);
                            inserted.push(j);
                        }
                    }
                }
                DiffTag::Delete | DiffTag::Insert | DiffTag::Replace => {
                    removed.extend(old_range);
                    inserted.extend(new_range);
                }
            }
        }
        self.run(path, o, n, &removed, &inserted, index)?;
        Ok(())
    }

    fn hashes(&mut self, items: &[Value]) -> Result<Vec<u64>, Expired> {
        let mut hashes = Vec::with_capacity(items.len());
        for item in items {
            self.tick()?;
            let mut hasher = rustc_hash::FxHasher::default();
            hash_value(item, &mut hasher);
            hashes.push(hasher.finish());
        }
        Ok(hashes)
    }

    /// Turns the removed elements `removed` (indices into `o`) into the inserted ones `inserted`
    /// (indices into `n`), starting at position `index` of the array being patched; returns the
    /// position after the run. A removed element and an inserted element that are the same
    /// element changed ([`same_element`], paired in order) are patched in place instead of
    /// replaced whole; the rest are removals and insertions.
    fn run(
        &mut self,
        path: &mut PointerBuf,
        o: &[Value],
        n: &'a [Value],
        removed: &[usize],
        inserted: &[usize],
        index: usize,
    ) -> Result<usize, Expired> {
        if removed.is_empty() && inserted.is_empty() {
            return Ok(index);
        }
        // Pair in order: each removed element with the first later inserted one it can become.
        // Elements with a `name` pair only with the same name, found through an index, so
        // this stays linear however many elements the run holds.
        let mut partner: Vec<Option<usize>> = vec![None; inserted.len()];
        let mut paired_old = vec![false; removed.len()];
        let mut by_name: rustc_hash::FxHashMap<&str, Vec<usize>> = rustc_hash::FxHashMap::default();
        for (at, &new) in inserted.iter().enumerate().rev() {
            if let Some(name) = element_name(&n[new]) {
                by_name.entry(name).or_default().push(at);
            }
        }
        let mut next_insert = 0;
        for (r, &old) in removed.iter().enumerate() {
            self.tick()?;
            let found = match element_name(&o[old]) {
                Some(name) => by_name.get_mut(name).and_then(|ats| {
                    while ats.last().is_some_and(|&at| at < next_insert) {
                        ats.pop();
                    }
                    ats.last().copied()
                }),
                None => inserted[next_insert..]
                    .iter()
                    .position(|&new| same_element(&o[old], &n[new]))
                    .map(|offset| next_insert + offset),
            };
            if let Some(at) = found {
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
                self.ops.push(Op::Remove(path.clone()));
            }
            path.pop_back();
        }
        // Insert the new elements among them, patching each paired one in place.
        let mut position = index;
        for (&new, old) in inserted.iter().zip(partner) {
            self.tick()?;
            path.push_back(position);
            match old {
                Some(old) => self.at(path, &o[old], &n[new])?,
                None => self.ops.push(Op::Add(path.clone(), &n[new])),
            }
            path.pop_back();
            position += 1;
        }
        Ok(position)
    }
}

/// The `name` of every element, if every element is a map with a string `name` and no two
/// share one.
fn unique_names(items: &[Value]) -> Option<Vec<&str>> {
    let names: Vec<&str> = items.iter().map(element_name).collect::<Option<_>>()?;
    let mut seen = rustc_hash::FxHashSet::default();
    names.iter().all(|name| seen.insert(*name)).then_some(names)
}

/// `name` of a map element, when it is a string.
fn element_name(value: &Value) -> Option<&str> {
    value.field("name").and_then(Value::as_str)
}

/// `a == b` for JSON values (maps equal whatever their key order), without hashing while the
/// two maps list their keys in the same order, as a copy of an object does.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            if a.len() != b.len() {
                return false;
            }
            let mut in_order = true;
            for ((ka, va), (kb, vb)) in a.iter().zip(b) {
                if ka != kb {
                    in_order = false;
                    break;
                }
                if !same_value(va, vb) {
                    return false;
                }
            }
            in_order || a.iter().all(|(k, va)| b.get(k).is_some_and(|vb| same_value(va, vb)))
        }
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_value(x, y)),
        _ => a == b,
    }
}

/// Could `new` be `old` edited? Maps that both have a `name` must have the same one.
fn same_element(old: &Value, new: &Value) -> bool {
    match (old.field("name"), new.field("name")) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// A hash consistent with `Value`'s `==`: maps compare without regard to key order, so their
/// entries are combined in an order-independent way.
fn hash_value(value: &Value, state: &mut impl Hasher) {
    match value {
        Value::Null => state.write_u8(0),
        Value::Bool(b) => {
            state.write_u8(1);
            b.hash(state);
        }
        Value::Number(number) => {
            state.write_u8(2);
            if let Some(u) = number.as_u64() {
                state.write_u8(0);
                u.hash(state);
            } else if let Some(i) = number.as_i64() {
                state.write_u8(1);
                i.hash(state);
            } else {
                state.write_u8(2);
                number.as_f64().unwrap_or(f64::NAN).to_bits().hash(state);
            }
        }
        Value::String(s) => {
            state.write_u8(3);
            s.hash(state);
        }
        Value::Array(items) => {
            state.write_u8(4);
            state.write_usize(items.len());
            for item in items {
                hash_value(item, state);
            }
        }
        Value::Object(map) => {
            state.write_u8(5);
            state.write_usize(map.len());
            let mut combined = 0u64;
            for (key, item) in map {
                let mut entry = rustc_hash::FxHasher::default();
                key.hash(&mut entry);
                hash_value(item, &mut entry);
                combined = combined.wrapping_add(entry.finish());
            }
            state.write_u64(combined);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use json_patch::PatchOperation;
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
