//! Offline `mutate -f` and `check -f`: multi-document YAML in, the webhook's decisions out.
//!
//! With `--cluster FILE` the rules get the cluster view read from a dump (SPEC §10.9), as the
//! server gets it from its caches.
//!
//! Each document goes through [`crate::review::admit`] exactly as the server would handle a
//! CREATE of it: mutation first, then validation of the mutated object (the apiserver's order).
//! Field order is kept (serde_json with `preserve_order`); documents the webhook has no rules
//! for are printed unchanged.

use serde_json::Value;

use crate::cluster::ClusterView;
use crate::deadline::Deadline;
use crate::review::{Endpoint, Operation, admit_in};
use crate::rules::Kind;
use crate::rules::divert::object_ref;
use crate::settings::Settings;

/// Objects without `metadata.namespace` are taken to be in this one, as kubectl does.
pub const DEFAULT_NAMESPACE: &str = "default";

/// What a command prints and whether it failed.
#[derive(Debug, Default)]
pub struct Report {
    pub stdout: String,
    /// Denials, warnings and errors, one line each.
    pub stderr: Vec<String>,
    pub verdict: Verdict,
}

/// How a run ended, worst first wins; the command's exit code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    #[default]
    Passed,
    /// Something was denied (exit code 1).
    Denied,
    /// The input could not be read as Kubernetes objects (exit code 2, not 1: a script can
    /// tell a broken file from a denial).
    Unreadable,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Passed => 0,
            Verdict::Denied => 1,
            Verdict::Unreadable => 2,
        }
    }
}

/// One object after the webhook: mutated copy, warnings and denials.
struct Processed {
    object: Value,
    label: String,
    warnings: Vec<String>,
    denials: Vec<String>,
}

/// How the output names an object: `Kind namespace/name`, as the rules' messages do (an object
/// not yet named is `<generateName>*`; a document without `kind` is `object`).
fn label(object: &Value, kind: &str, namespace: &str) -> String {
    let metadata = |field: &str| object.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str);
    let name = match (metadata("name"), metadata("generateName")) {
        (Some(name), _) if !name.is_empty() => name.to_string(),
        (_, Some(prefix)) => format!("{prefix}*"),
        _ => String::new(),
    };
    object_ref(if kind.is_empty() { "object" } else { kind }, namespace, &name)
}

fn process(object: Value, settings: &Settings, cluster: &ClusterView) -> Result<Processed, String> {
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind_name = object.get("kind").and_then(Value::as_str).unwrap_or_default();
    let Some(kind) = Kind::from_manifest(api_version, kind_name) else {
        let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
        let label = label(&object, kind_name, namespace);
        return Ok(Processed { object, label, warnings: Vec::new(), denials: Vec::new() });
    };
    let namespace =
        object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or(DEFAULT_NAMESPACE).to_string();
    let label = label(&object, kind.as_str(), if kind == Kind::Namespace { "" } else { &namespace });

    let admit = |endpoint, object: &Value| {
        admit_in(endpoint, kind, Operation::Create, &namespace, object, settings, cluster, Deadline::NONE)
            .expect("a review without a deadline always finishes")
    };
    let mutation = admit(Endpoint::Mutate, &object);
    let mut mutated = object;
    json_patch::patch(&mut mutated, &mutation.patch.decode())
        .map_err(|e| format!("{label}: the webhook's own patch does not apply: {e}"))?;
    let validation = admit(Endpoint::Validate, &mutated);
    let mut warnings = mutation.warnings;
    warnings.extend(validation.warnings);
    let denials = validation.denials.into_iter().map(|d| d.message).collect();
    Ok(Processed { object: mutated, label, warnings, denials })
}

/// Parses multi-document YAML; empty documents are skipped; a `kind: List` is expanded.
pub(crate) fn documents(input: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(input).map_err(|e| yaml_error(&e.to_string(), None))?;
    let mut out = Vec::with_capacity(docs.len());
    for doc in docs {
        match doc {
            Value::Null => {}
            Value::Object(ref map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
                out.extend(map.get("items").and_then(Value::as_array).into_iter().flatten().cloned());
            }
            Value::Object(_) => out.push(doc),
            other => return Err(format!("a YAML document is not a Kubernetes object (found {})", type_name(&other))),
        }
    }
    Ok(out)
}

/// The YAML parser's message for a file: its own `error: ` prefix dropped (the caller's line
/// has one), and its snippet's `<input>` replaced by the file's name.
fn yaml_error(rendered: &str, file: Option<&str>) -> String {
    let message = rendered.strip_prefix("error: ").unwrap_or(rendered);
    match file {
        Some(file) => format!("{file}: cannot read YAML: {}", message.replace("--> <input>:", &format!("--> {file}:"))),
        None => format!("cannot read YAML: {message}"),
    }
}

/// [`documents`] of the file `file`, which must hold at least one object, each with a `kind`:
/// an empty file or a document that is not an object is an error naming the file, not a pass.
fn file_documents(file: &str, input: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(input).map_err(|e| yaml_error(&e.to_string(), Some(file)))?;
    let mut out = Vec::with_capacity(docs.len());
    for (i, doc) in docs.into_iter().enumerate() {
        let number = i + 1;
        match doc {
            Value::Null => {}
            Value::Object(ref map) => match map.get("kind").and_then(Value::as_str) {
                Some("List") => out.extend(map.get("items").and_then(Value::as_array).into_iter().flatten().cloned()),
                Some(kind) if !kind.is_empty() => out.push(doc),
                _ => {
                    return Err(format!(
                        "{file}: document {number} has no `kind`, so it is not a Kubernetes object; add `apiVersion` and `kind`"
                    ));
                }
            },
            other => {
                return Err(format!(
                    "{file}: document {number} is not a Kubernetes object (found {}); give manifests (maps with `apiVersion` and `kind`)",
                    type_name(&other)
                ));
            }
        }
    }
    if out.is_empty() {
        return Err(format!("{file}: no Kubernetes objects in it (empty, or only `---` and comments)"));
    }
    Ok(out)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn run(file: Option<&str>, input: &str, settings: &Settings, cluster: &ClusterView, print_objects: bool) -> Report {
    let mut report = Report::default();
    let docs = match file.map_or_else(|| documents(input), |file| file_documents(file, input)) {
        Ok(d) => d,
        Err(e) => {
            report.stderr.push(format!("error: {e}"));
            report.verdict = Verdict::Unreadable;
            return report;
        }
    };
    let mut out = Vec::with_capacity(docs.len());
    let mut denied = 0;
    for doc in docs {
        match process(doc, settings, cluster) {
            Ok(p) => {
                for w in &p.warnings {
                    report.stderr.push(format!("warning: {}", naming(&p.label, w)));
                }
                for d in &p.denials {
                    report.stderr.push(format!("denied: {}", naming(&p.label, d)));
                }
                if !p.denials.is_empty() {
                    denied += 1;
                    report.verdict = report.verdict.max(Verdict::Denied);
                }
                if print_objects {
                    out.push(p.object);
                } else {
                    let verdict = if p.denials.is_empty() { "allowed" } else { "denied" };
                    report.stdout.push_str(&format!("{verdict}: {}\n", p.label));
                }
            }
            Err(e) => {
                report.stderr.push(format!("error: {e}"));
                report.verdict = Verdict::Unreadable;
            }
        }
    }
    if print_objects && report.verdict == Verdict::Passed {
        report.stdout = to_yaml(&out);
    } else if print_objects {
        // All or nothing, so that `mutate -f FILE | kubectl apply -f -` (without pipefail)
        // applies nothing when something is denied or unreadable.
        let what = if denied > 0 { format!("{denied} object(s) denied") } else { "an unreadable object".to_string() };
        report
            .stderr
            .push(format!("{what}: nothing printed (mutate prints the manifests only when every object is allowed)"));
    } else if denied > 0 {
        report.stderr.push(format!("{denied} object(s) denied"));
    }
    report
}

/// `message` with the object named in front, unless the rule already starts with it.
fn naming(label: &str, message: &str) -> String {
    if message.starts_with(label) { message.to_string() } else { format!("{label}: {message}") }
}

/// Multi-document YAML, `---` between documents.
pub fn to_yaml(objects: &[Value]) -> String {
    let mut s = String::new();
    for (i, object) in objects.iter().enumerate() {
        if i > 0 {
            s.push_str("---\n");
        }
        s.push_str(&serde_saphyr::to_string(object).expect("JSON values serialise as YAML"));
        if !s.ends_with('\n') {
            s.push('\n');
        }
    }
    s
}

/// `mutate -f`: the mutated manifests on stdout, only when every object is allowed (nothing
/// otherwise); warnings and denials on stderr.
pub fn mutate_documents(input: &str, settings: &Settings) -> Report {
    run(None, input, settings, ClusterView::none(), true)
}

/// `check -f`: a verdict line per object on stdout; denials and warnings on stderr.
pub fn check_documents(input: &str, settings: &Settings) -> Report {
    run(None, input, settings, ClusterView::none(), false)
}

/// `mutate -f --cluster`: [`mutate_documents`] with the cluster's state (SPEC §10.9).
pub fn mutate_documents_in(input: &str, settings: &Settings, cluster: &ClusterView) -> Report {
    run(None, input, settings, cluster, true)
}

/// `check -f --cluster`: [`check_documents`] with the cluster's state (SPEC §10.9).
pub fn check_documents_in(input: &str, settings: &Settings, cluster: &ClusterView) -> Report {
    run(None, input, settings, cluster, false)
}

/// `mutate -f FILE` as the command runs it: [`mutate_documents_in`], where errors name `file`
/// and an empty file or a document without `kind` is an error.
pub fn mutate_file(file: &str, input: &str, settings: &Settings, cluster: &ClusterView) -> Report {
    run(Some(file), input, settings, cluster, true)
}

/// `check -f FILE` as the command runs it (see [`mutate_file`]).
pub fn check_file(file: &str, input: &str, settings: &Settings, cluster: &ClusterView) -> Report {
    run(Some(file), input, settings, cluster, false)
}
