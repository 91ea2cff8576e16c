//! The rules: pure functions from an admitted object and the operator's [`Settings`] to a
//! decision. No I/O here; the server, the `review` command and the offline `mutate`/`check`
//! commands all call [`mutate`] and [`validate`] through [`crate::review::admit`].
//!
//! One module per kind. Mutation edits a copy of the raw JSON (never a typed struct, which
//! would drop fields it does not know); [`crate::patch::diff`] turns the edit into a JSONPatch.

pub mod baggage;
pub mod divert;
pub mod ingress;
pub mod namespace;
mod nginx_snippet;
pub mod virtual_service;

use serde_json::Value;

use crate::deadline::Deadline;
use crate::settings::Settings;

/// The kinds divert-webhook has rules for. Everything else is allowed untouched (SPEC §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Namespace,
    VirtualService,
    Ingress,
}

impl Kind {
    /// The kind an AdmissionReview's `request.kind` names, if divert-webhook handles it.
    pub fn from_gvk(group: &str, version: &str, kind: &str) -> Option<Kind> {
        match (group, version, kind) {
            ("", "v1", "Namespace") => Some(Kind::Namespace),
            ("networking.istio.io", "v1" | "v1beta1" | "v1alpha3", "VirtualService") => Some(Kind::VirtualService),
            ("networking.k8s.io", "v1", "Ingress") => Some(Kind::Ingress),
            _ => None,
        }
    }

    /// Same, from a manifest's `apiVersion` and `kind`.
    pub fn from_manifest(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        Kind::from_gvk(group, version, kind)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::VirtualService => "VirtualService",
            Kind::Ingress => "Ingress",
        }
    }
}

/// The object under admission, as the rules see it.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub kind: Kind,
    /// The object's namespace (for a Namespace: its own name).
    pub namespace: &'a str,
    pub name: &'a str,
    pub object: &'a Value,
}

/// A reason to reject the object. `reason` is a stable short slug (the metrics label);
/// `message` names the object, the field and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub reason: &'static str,
    pub message: String,
}

/// What a rule found besides the edit itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// One short sentence each (SPEC §8: under 120 characters).
    pub warnings: Vec<String>,
    pub denials: Vec<Denial>,
    /// When the work must stop (SPEC §8): loops over routes, clones and regexes check
    /// [`Findings::out_of_time`] and return early; the review then answers nothing of it.
    pub deadline: Deadline,
    /// The admitted object's size in JSON, when known (the review's body): the size limit of
    /// SPEC §7 is checked against it without writing the object out again.
    pub object_bytes: Option<usize>,
}

/// SPEC §8: a warning is one short sentence, under this many characters.
pub const MAX_WARNING_CHARS: usize = 120;

impl Findings {
    pub fn until(deadline: Deadline) -> Findings {
        Findings { deadline, ..Findings::default() }
    }

    /// Has the review's deadline passed? Long loops stop when it has.
    pub fn out_of_time(&self) -> bool {
        self.deadline.passed()
    }

    /// Adds a warning. Rules keep their sentences short by cutting user-written names with
    /// [`shorten`]; a sentence that is still too long is cut here, so that no answer ever
    /// carries a warning of [`MAX_WARNING_CHARS`] characters or more.
    pub fn warn(&mut self, message: impl Into<String>) {
        let message = message.into();
        let message = if message.chars().count() < MAX_WARNING_CHARS {
            message
        } else {
            message.chars().take(MAX_WARNING_CHARS - 2).collect::<String>() + "…"
        };
        self.warnings.push(message);
    }

    pub fn deny(&mut self, reason: &'static str, message: impl Into<String>) {
        self.denials.push(Denial { reason, message: message.into() });
    }
}

/// Mutation: edits `object` in place (it starts as a copy of the admitted object) and returns
/// the warnings. Must be idempotent: mutating the result again changes nothing.
pub fn mutate(subject: &Subject<'_>, object: &mut Value, settings: &Settings) -> Vec<String> {
    let mut findings = Findings::default();
    mutate_into(subject, object, settings, &mut findings);
    findings.warnings
}

/// [`mutate`], with the warnings (and the deadline) in `findings`.
pub fn mutate_into(subject: &Subject<'_>, object: &mut Value, settings: &Settings, findings: &mut Findings) {
    match subject.kind {
        Kind::Namespace => namespace::mutate(subject, object, settings, findings),
        Kind::VirtualService => virtual_service::mutate(subject, object, settings, findings),
        Kind::Ingress => ingress::mutate(subject, object, settings, findings),
    }
}

/// A mutation the rules refuse before doing any of it (SPEC §7 size), as the warning that says
/// so: the caller then leaves the object unchanged without copying it.
pub fn refused_mutation(subject: &Subject<'_>, settings: &Settings, object_bytes: Option<usize>) -> Option<String> {
    match subject.kind {
        Kind::VirtualService => virtual_service::refused_mutation(subject, settings, object_bytes),
        Kind::Namespace | Kind::Ingress => None,
    }
}

/// Validation: denials and warnings for the object as it would be stored.
pub fn validate(subject: &Subject<'_>, settings: &Settings) -> Findings {
    let mut findings = Findings::default();
    validate_into(subject, settings, &mut findings);
    findings
}

/// [`validate`], into `findings` (which carries the deadline).
pub fn validate_into(subject: &Subject<'_>, settings: &Settings, findings: &mut Findings) {
    match subject.kind {
        Kind::Namespace => namespace::validate(subject, settings, findings),
        Kind::VirtualService => virtual_service::validate(subject, settings, findings),
        Kind::Ingress => ingress::validate(subject, settings, findings),
    }
}

/// `detailed` if it fits in one warning (one line, under [`MAX_WARNING_CHARS`]), else the
/// shorter `fallback` that says the same with less detail.
pub fn fitting_warning(detailed: String, fallback: impl Into<String>) -> String {
    if detailed.chars().count() < MAX_WARNING_CHARS && !detailed.contains('\n') { detailed } else { fallback.into() }
}

/// A user-written name cut to at most `max` characters (`…` marks the cut), for warnings.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { s.chars().take(max - 1).collect::<String>() + "…" }
}

/// `metadata.labels` / `metadata.annotations` value of `key`, if it is a string.
pub fn metadata_str<'a>(object: &'a Value, map: &str, key: &str) -> Option<&'a str> {
    object.get("metadata")?.get(map)?.get(key)?.as_str()
}

/// The `metadata.<map>` object of `object`, created if absent (or not an object).
pub fn metadata_map_mut<'a>(object: &'a mut Value, map: &str) -> Option<&'a mut serde_json::Map<String, Value>> {
    let root = object.as_object_mut()?;
    let metadata = root.entry("metadata").or_insert_with(|| Value::Object(Default::default()));
    let metadata = metadata.as_object_mut()?;
    let entry = metadata.entry(map).or_insert_with(|| Value::Object(Default::default()));
    if !entry.is_object() {
        return None;
    }
    entry.as_object_mut()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_one_line_under_the_limit() {
        let long = "x".repeat(200);
        assert_eq!(fitting_warning(long.clone(), "short"), "short");
        assert_eq!(fitting_warning("two\nlines".into(), "one line"), "one line");
        assert_eq!(fitting_warning("fine".into(), "short"), "fine");
        let mut findings = Findings::default();
        findings.warn(format!("{long}é"));
        findings.warn("fine");
        assert_eq!(findings.warnings[0].chars().count(), MAX_WARNING_CHARS - 1);
        assert!(findings.warnings[0].ends_with('…'));
        assert_eq!(findings.warnings[1], "fine");
    }
}
