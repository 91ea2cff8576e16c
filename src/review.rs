//! AdmissionReview in, AdmissionReview out (SPEC §8): the one path every entry point takes.
//!
//! [`review`] decodes the body, runs [`admit`] and encodes the answer; the HTTPS server and the
//! `review` command call it. The offline `mutate`/`check` commands call [`admit`] directly with
//! the objects of a manifest file, so they get exactly the server's decisions.
//!
//! Decoding reads only what the answer needs (uid, kind, operation, namespace, name) and keeps
//! the admitted object as raw JSON: it is parsed into a tree only when a rule will read it (a kind
//! the webhook handles, CREATE or UPDATE). Everything else in the envelope (userInfo, oldObject,
//! options, and the object of any other kind, however deep) is skipped without building anything.
//! Rules and patches work on the object exactly as sent.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::cluster::ClusterView;
use crate::deadline::{Deadline, Expired};
use crate::patch::{self, JsonPatch};
use crate::rules::{self, Denial, Findings, Kind, Subject};
use crate::settings::Settings;

/// Which webhook is being called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Mutate,
    Validate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

/// `request.operation` of an AdmissionReview.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn parse(s: &str) -> Option<Operation> {
        match s {
            "CREATE" => Some(Operation::Create),
            "UPDATE" => Some(Operation::Update),
            "DELETE" => Some(Operation::Delete),
            "CONNECT" => Some(Operation::Connect),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// The decision for one object.
#[derive(Clone, Debug, Default)]
pub struct Admission {
    /// Empty when nothing changes (then the answer carries no patch at all).
    pub patch: JsonPatch,
    pub warnings: Vec<String>,
    pub denials: Vec<Denial>,
}

impl Admission {
    pub fn denial_message(&self) -> Option<String> {
        (!self.denials.is_empty())
            .then(|| self.denials.iter().map(|d| d.message.as_str()).collect::<Vec<_>>().join("; "))
    }
}

/// Runs the rules of `endpoint` on one object. Kinds without rules, and DELETE/CONNECT, are
/// allowed untouched.
pub fn admit(
    endpoint: Endpoint,
    kind: Kind,
    operation: Operation,
    namespace: &str,
    object: &Value,
    settings: &Settings,
) -> Admission {
    admit_in(endpoint, kind, operation, namespace, object, settings, ClusterView::none(), Deadline::NONE)
        .expect("a review without a deadline always finishes")
}

/// [`admit`] with what is known of the cluster (SPEC §10), stopping with [`Expired`] once
/// `deadline` has passed.
#[allow(clippy::too_many_arguments)]
pub fn admit_in(
    endpoint: Endpoint,
    kind: Kind,
    operation: Operation,
    namespace: &str,
    object: &Value,
    settings: &Settings,
    cluster: &ClusterView,
    deadline: Deadline,
) -> Result<Admission, Expired> {
    admit_sized(endpoint, kind, operation, namespace, object, None, settings, cluster, deadline)
}

/// [`admit_in`] for an object whose size in JSON is known (`object_bytes`: the review's body).
#[allow(clippy::too_many_arguments)]
fn admit_sized(
    endpoint: Endpoint,
    kind: Kind,
    operation: Operation,
    namespace: &str,
    object: &Value,
    object_bytes: Option<usize>,
    settings: &Settings,
    cluster: &ClusterView,
    deadline: Deadline,
) -> Result<Admission, Expired> {
    if !matches!(operation, Operation::Create | Operation::Update) {
        return Ok(Admission::default());
    }
    let name = object.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("");
    let namespace = if kind == Kind::Namespace { name } else { namespace };
    let subject = Subject { kind, namespace, name, object, cluster };
    let mut findings = Findings::until(deadline);
    findings.object_bytes = object_bytes;
    let admission = match endpoint {
        Endpoint::Mutate => {
            // Refusals known before any work: no copy of a large object is made only to be
            // thrown away (SPEC §7 size).
            if let Some(bytes) = object_bytes.filter(|&bytes| bytes > MAX_MUTATED_OBJECT_BYTES) {
                let warning = format!(
                    "{} is {bytes} bytes of JSON, over the {MAX_MUTATED_OBJECT_BYTES} divert-webhook mutates: left unchanged",
                    kind.as_str()
                );
                return Ok(Admission { warnings: vec![warning], ..Admission::default() });
            }
            if let Some(patch) = rules::patch_directly(&subject, settings, &mut findings) {
                deadline.check()?;
                return Ok(Admission { patch, warnings: findings.warnings, denials: Vec::new() });
            }
            let mut mutated = object.clone();
            rules::mutate_into(&subject, &mut mutated, settings, &mut findings);
            deadline.check()?;
            let patch = patch::diff_until(object, &mutated, deadline)?;
            Admission { patch, warnings: findings.warnings, denials: Vec::new() }
        }
        Endpoint::Validate => {
            rules::validate_into(&subject, settings, &mut findings);
            Admission { patch: JsonPatch::default(), warnings: findings.warnings, denials: findings.denials }
        }
    };
    deadline.check()?;
    Ok(admission)
}

/// How a review ended, for metrics and the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Allowed,
    Patched,
    Denied,
    /// Not a readable AdmissionReview: answered with HTTP 400.
    Invalid,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Patched => "patched",
            Outcome::Denied => "denied",
            Outcome::Invalid => "invalid",
        }
    }
}

/// What the log line and the metrics say about one answered review.
#[derive(Clone, Debug)]
pub struct Summary {
    pub uid: String,
    /// `request.kind.kind` as sent (also for kinds without rules).
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub operation: &'static str,
    pub outcome: Outcome,
    pub patch_operations: usize,
    pub warnings: usize,
    pub denial_reasons: Vec<&'static str>,
}

/// A body that is not a readable AdmissionReview. The text is one line, for the HTTP 400 body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidReview(pub String);

impl fmt::Display for InvalidReview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidReview {}

/// One line, at most 200 characters: serde's messages can quote long input.
fn one_line(s: impl fmt::Display) -> String {
    let s: String = s.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 200 { s.chars().take(197).collect::<String>() + "..." } else { s }
}

/// Why a review got no answer of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unanswered {
    /// Not a readable AdmissionReview: HTTP 400.
    Invalid(InvalidReview),
    /// The deadline passed while it was being worked on.
    Expired,
}

impl From<InvalidReview> for Unanswered {
    fn from(invalid: InvalidReview) -> Self {
        Unanswered::Invalid(invalid)
    }
}

impl From<Expired> for Unanswered {
    fn from(_: Expired) -> Self {
        Unanswered::Expired
    }
}

/// Decodes an AdmissionReview body, decides, and returns the encoded answer (JSON) with its
/// summary. Errors are for bodies that are not a readable `admission.k8s.io/v1` review.
pub fn review(endpoint: Endpoint, body: &[u8], settings: &Settings) -> Result<(Vec<u8>, Summary), InvalidReview> {
    review_until(endpoint, body, settings, Deadline::NONE).map_err(|unanswered| match unanswered {
        Unanswered::Invalid(invalid) => invalid,
        Unanswered::Expired => unreachable!("a review without a deadline always finishes"),
    })
}

/// [`review`], given up with [`Unanswered::Expired`] once `deadline` has passed.
pub fn review_until(
    endpoint: Endpoint,
    body: &[u8],
    settings: &Settings,
    deadline: Deadline,
) -> Result<(Vec<u8>, Summary), Unanswered> {
    review_in(endpoint, body, settings, ClusterView::none(), deadline)
}

/// [`review_until`] with what is known of the cluster (SPEC §10).
pub fn review_in(
    endpoint: Endpoint,
    body: &[u8],
    settings: &Settings,
    cluster: &ClusterView,
    deadline: Deadline,
) -> Result<(Vec<u8>, Summary), Unanswered> {
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            InvalidReview(one_line(format_args!("not a readable AdmissionReview: {e}")))
        }
        _ => InvalidReview(one_line(format_args!("body is not JSON: {e}"))),
    })?;
    let api_version = envelope.api_version.as_ref().map_or("", |s| s.as_str());
    let review_kind = envelope.kind.as_ref().map_or("", |s| s.as_str());
    if (api_version, review_kind) != ("admission.k8s.io/v1", "AdmissionReview") {
        return Err(InvalidReview(one_line(format_args!(
            "expected apiVersion admission.k8s.io/v1, kind AdmissionReview; got apiVersion {api_version:?}, kind {review_kind:?}"
        )))
        .into());
    }
    let request = envelope.request.ok_or_else(|| InvalidReview("AdmissionReview has no request object".into()))?;
    let missing = |field: &str| InvalidReview(format!("not a readable AdmissionReview: request.{field} is missing"));
    let uid = request.uid.ok_or_else(|| missing("uid"))?;
    let gvk = request.kind.ok_or_else(|| missing("kind"))?;
    let operation = request.operation.ok_or_else(|| missing("operation"))?;
    let operation = Operation::parse(operation.as_str()).ok_or_else(|| {
        InvalidReview(one_line(format_args!(
            "not a readable AdmissionReview: request.operation {:?} is not CREATE, UPDATE, DELETE or CONNECT",
            operation.as_str()
        )))
    })?;
    let namespace = request.namespace.as_ref().map_or("", |s| s.as_str());

    let handled = Kind::from_gvk(gvk.group.as_str(), gvk.version.as_str(), gvk.kind.as_str());
    let admission = match (handled, request.object) {
        // Nothing to read when no rule can apply: the object stays unparsed.
        (Some(kind), Some(_)) if endpoint == Endpoint::Mutate && !rules::may_mutate(kind, namespace, settings) => {
            Admission::default()
        }
        (Some(kind), Some(object)) if matches!(operation, Operation::Create | Operation::Update) => {
            match parse_object(object)? {
                Parsed::Object(parsed) => {
                    // managedFields, left out of the tree, still counts in the stored object's size.
                    let bytes = Some(object.get().len());
                    admit_sized(endpoint, kind, operation, namespace, &parsed, bytes, settings, cluster, deadline)?
                }
                Parsed::TooDeep => {
                    unread(endpoint, kind, format!("is nested more than {MAX_OBJECT_DEPTH} levels deep"), "flatten it")
                }
                Parsed::TooLarge(bytes) => unread(
                    endpoint,
                    kind,
                    format!(
                        "is {bytes} bytes of JSON, over the {MAX_READ_OBJECT_BYTES} (etcd's default limit) divert-webhook reads"
                    ),
                    "make it smaller",
                ),
            }
        }
        _ => Admission::default(),
    };

    let outcome = if !admission.denials.is_empty() {
        Outcome::Denied
    } else if !admission.patch.is_empty() {
        Outcome::Patched
    } else {
        Outcome::Allowed
    };
    let answer = encode_answer(uid.as_str(), outcome, &admission)?;
    let summary = Summary {
        uid: uid.as_str().to_string(),
        kind: gvk.kind.as_str().to_string(),
        namespace: namespace.to_string(),
        name: request.name.as_ref().map_or("", |s| s.as_str()).to_string(),
        operation: operation.as_str(),
        outcome,
        patch_operations: if outcome == Outcome::Patched { admission.patch.operations } else { 0 },
        warnings: admission.warnings.len(),
        denial_reasons: admission.denials.iter().map(|d| d.reason).collect(),
    };
    Ok((answer, summary))
}

/// How much memory the rules' tree of this review's object will take (0 when it is not read:
/// a kind without rules, DELETE, an object over [`MAX_READ_OBJECT_BYTES`], an unreadable
/// body): about 17 times its JSON, twice that for a mutation that copies it. For the server's
/// memory budget; reads only the envelope.
pub fn tree_bytes(endpoint: Endpoint, body: &[u8], settings: &Settings) -> usize {
    let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(body) else { return 0 };
    let Some(request) = envelope.request else { return 0 };
    let (Some(gvk), Some(object)) = (request.kind, request.object) else { return 0 };
    let Some(kind) = Kind::from_gvk(gvk.group.as_str(), gvk.version.as_str(), gvk.kind.as_str()) else { return 0 };
    let operation = request.operation.as_ref().and_then(|op| Operation::parse(op.as_str()));
    let bytes = object.get().len();
    if !matches!(operation, Some(Operation::Create | Operation::Update)) || bytes > MAX_READ_OBJECT_BYTES {
        return 0;
    }
    let namespace = request.namespace.as_ref().map_or("", |s| s.as_str());
    match endpoint {
        Endpoint::Mutate if !rules::may_mutate(kind, namespace, settings) => 0,
        Endpoint::Mutate if bytes <= MAX_MUTATED_OBJECT_BYTES => bytes * 34,
        _ => bytes * 17,
    }
}

/// How deep the rules read an object: serde_json's limit for building a tree.
const MAX_OBJECT_DEPTH: usize = 128;

/// The largest object the rules read: etcd's default request limit (`--max-request-bytes`,
/// 1.5 MiB), so no object etcd would store is refused. A tree costs about 17 times its JSON,
/// so this also bounds a review's memory (SPEC §8).
pub const MAX_READ_OBJECT_BYTES: usize = 1536 * 1024;

/// The largest object the mutating webhook changes (SPEC §7: no mutation grows an object past
/// 1 MiB of JSON).
pub const MAX_MUTATED_OBJECT_BYTES: usize = crate::rules::virtual_service::divert_routes::MAX_OBJECT_BYTES;

enum Parsed {
    Object(Value),
    TooDeep,
    TooLarge(usize),
}

/// The admitted object as a tree, with `metadata.managedFields` left out: no rule reads it, and
/// it is often the larger part of the object (both the original and the rules' copy lack it, so
/// the patch never mentions it).
fn parse_object(raw: &RawValue) -> Result<Parsed, InvalidReview> {
    if raw.get().len() > MAX_READ_OBJECT_BYTES {
        return if raw.get().starts_with('{') {
            Ok(Parsed::TooLarge(raw.get().len()))
        } else {
            Err(InvalidReview("request.object is not a JSON object".into()))
        };
    }
    if !raw.get().starts_with('{') {
        return Err(InvalidReview("request.object is not a JSON object".into()));
    }
    let mut reader = serde_json::Deserializer::from_str(raw.get());
    let object = match serde::Deserializer::deserialize_map(&mut reader, ObjectVisitor) {
        Ok(object) => Value::Object(object),
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => return Ok(Parsed::TooDeep),
        Err(e) => return Err(InvalidReview(one_line(format_args!("request.object is not readable: {e}")))),
    };
    Ok(Parsed::Object(object))
}

/// Reads the object's top level as a map; `metadata` goes through [`MetadataSeed`].
struct ObjectVisitor;

impl<'de> serde::de::Visitor<'de> for ObjectVisitor {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = if key == "metadata" { map.next_value_seed(MetadataSeed)? } else { map.next_value()? };
            // A repeated key keeps its first place and its last value, as serde_json's own tree does.
            object.insert(key, value);
        }
        Ok(object)
    }
}

/// `metadata` as serde_json would read it, but for `managedFields`, which is skipped without
/// being built: no rule reads it, and it is often half of a small object.
struct MetadataSeed;

impl<'de> serde::de::DeserializeSeed<'de> for MetadataSeed {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for MetadataSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut metadata = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "managedFields" {
                map.next_value::<serde::de::IgnoredAny>()?;
            } else {
                let value = map.next_value()?;
                metadata.insert(key, value);
            }
        }
        Ok(Value::Object(metadata))
    }

    // Any other value is read as serde_json reads it.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
}

/// An object of a handled kind the rules do not read (too deep, too large): the mutating
/// webhook leaves it unchanged, and the validating webhook refuses it, since it cannot be checked.
fn unread(endpoint: Endpoint, kind: Kind, what: String, fix: &str) -> Admission {
    match endpoint {
        Endpoint::Mutate => Admission {
            warnings: vec![rules::fitting_warning(
                format!("this {} {what}: left unchanged", kind.as_str()),
                format!("this {} is too large or deep for divert-webhook: left unchanged", kind.as_str()),
            )],
            ..Default::default()
        },
        Endpoint::Validate => Admission {
            denials: vec![Denial {
                reason: "unreadable",
                message: format!("this {} {what}, so divert-webhook cannot check it; {fix}", kind.as_str()),
            }],
            ..Default::default()
        },
    }
}

/// A JSON string, borrowed from the body when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl Str<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// What is read of an AdmissionReview; every other field is skipped unread.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "apiVersion", borrow, default)]
    api_version: Option<Str<'a>>,
    #[serde(borrow, default)]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    request: Option<RequestFields<'a>>,
}

#[derive(Deserialize)]
struct RequestFields<'a> {
    #[serde(borrow, default)]
    uid: Option<Str<'a>>,
    #[serde(borrow, default)]
    kind: Option<GroupVersionKind<'a>>,
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
    #[serde(borrow, default)]
    namespace: Option<Str<'a>>,
    #[serde(borrow, default)]
    operation: Option<Str<'a>>,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct GroupVersionKind<'a> {
    #[serde(borrow)]
    group: Str<'a>,
    #[serde(borrow)]
    version: Str<'a>,
    #[serde(borrow)]
    kind: Str<'a>,
}

/// The answer, field for field as the apiserver reads it.
#[derive(Serialize)]
struct Answer<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    response: Response<'a>,
}

#[derive(Serialize)]
struct Response<'a> {
    uid: &'a str,
    allowed: bool,
    status: ResponseStatus<'a>,
    #[serde(rename = "patchType", skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
    /// base64 of the JSONPatch: the apiserver decodes `[]byte` only from a base64 string.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
}

/// `metav1.Status`: empty when allowed; for a denial, the message and 403 Forbidden.
#[derive(Serialize, Default)]
struct ResponseStatus<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

fn encode_answer(uid: &str, outcome: Outcome, admission: &Admission) -> Result<Vec<u8>, InvalidReview> {
    let status = match admission.denial_message() {
        Some(message) => ResponseStatus {
            status: Some("Failure"),
            code: Some(403),
            message: Some(Cow::Owned(message)),
            reason: Some("Forbidden"),
        },
        None => ResponseStatus::default(),
    };
    let patched = outcome == Outcome::Patched;
    let answer = Answer {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: Response {
            uid,
            allowed: outcome != Outcome::Denied,
            status,
            patch_type: patched.then_some("JSONPatch"),
            warnings: &admission.warnings,
            patch: None,
        },
    };
    let mut out = serde_json::to_vec(&answer).expect("an answer always serialises");
    if patched {
        // `,"patch":"<base64>"` last in `response`: base64 needs no JSON escaping, so it is
        // written straight into the answer instead of through the serialiser.
        let closing = out.split_off(out.len() - 2); // `}}`: the response, the review
        let json = &admission.patch.json;
        out.reserve(json.len().div_ceil(3) * 4 + 14);
        out.extend_from_slice(br#","patch":""#);
        // SIMD base64: on a patch of a few hundred clones the scalar encoder was a fifth of the review.
        base64_simd::STANDARD.encode_append(json, &mut out);
        out.push(b'"');
        out.extend_from_slice(&closing);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(json: &str) -> Value {
        let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
        match parse_object(&raw) {
            Ok(Parsed::Object(object)) => object,
            _ => panic!("not read: {json}"),
        }
    }

    #[test]
    fn the_object_is_read_as_serde_json_reads_it_but_for_managed_fields() {
        // Every shape `metadata` can take, repeated keys, escapes, numbers of every kind.
        for json in [
            r#"{"kind":"X","metadata":{"name":"a","labels":{"b":"c"}},"spec":{"n":[1,-2,3.5,1e300,0.1,null,true]}}"#,
            r#"{"metadata":null}"#,
            r#"{"metadata":"text"}"#,
            r#"{"metadata":[{"managedFields":1},2]}"#,
            r#"{"metadata":12.25,"metadata":{"name":"later"}}"#,
            r#"{"metadata":{"name":"a","name":"b"},"z":1,"a":2}"#,
            r#"{"metadata":{"name":"a\u0000b","x":18446744073709551615,"y":-9223372036854775808}}"#,
        ] {
            let expected: Value = serde_json::from_str(json).unwrap();
            assert_eq!(parsed(json), expected, "{json}");
            assert_eq!(serde_json::to_string(&parsed(json)).unwrap(), serde_json::to_string(&expected).unwrap());
        }
        let object = parsed(
            r#"{"metadata":{"name":"a","managedFields":[{"manager":"kubectl"}],"labels":{},"managed\u0046ields":{},"managedFields":7}}"#,
        );
        assert_eq!(object, serde_json::json!({"metadata": {"name": "a", "labels": {}}}));
        // Only the top-level metadata's managedFields are left out.
        let object = parsed(r#"{"spec":{"metadata":{"managedFields":1}}}"#);
        assert_eq!(object, serde_json::json!({"spec": {"metadata": {"managedFields": 1}}}));
    }
}
