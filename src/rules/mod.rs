//! The rules: pure functions from an admitted object and the operator's [`Settings`] to a
//! decision. No I/O here; the server, the `review` command and the offline `mutate`/`check`
//! commands all call [`mutate`] and [`validate`] through [`crate::review::admit`].
//!
//! One module per kind. Mutation edits a copy of the raw JSON (never a typed struct, which
//! would drop fields it does not know); [`crate::patch::diff`] turns the edit into a JSONPatch.

pub mod baggage;
pub mod divert;
pub mod http_route;
pub mod ingress;
pub mod namespace;
// Public only for the fuzz targets (fuzz/): not part of the crate's interface.
#[doc(hidden)]
pub mod nginx_snippet;
mod required_text;
pub mod virtual_service;

use std::borrow::Cow;

use serde_json::Value;

use crate::cluster::ClusterView;
use crate::deadline::Deadline;
use crate::settings::{Driver, Settings};

/// A field of a JSON map, found by a scan when the map is small. The maps the rules read most
/// (routes, destinations, match entries, metadata) have a handful of keys, and a lookup in
/// serde_json's order-preserving map hashes the key with SipHash first, which costs more than
/// comparing a few short keys.
pub trait Field {
    fn field(&self, key: &str) -> Option<&Value>;
    fn has_field(&self, key: &str) -> bool {
        self.field(key).is_some()
    }
}

impl Field for serde_json::Map<String, Value> {
    fn field(&self, key: &str) -> Option<&Value> {
        if self.len() <= 8 { self.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v) } else { self.get(key) }
    }
}

impl Field for Value {
    fn field(&self, key: &str) -> Option<&Value> {
        self.as_object()?.field(key)
    }
}

/// The kinds divert-webhook has rules for. Everything else is allowed untouched (SPEC §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Namespace,
    VirtualService,
    Ingress,
    /// Gateway API (and Linkerd's) HTTPRoute (SPEC §11).
    HttpRoute,
}

impl Kind {
    /// The kind an AdmissionReview's `request.kind` names, if divert-webhook handles it.
    pub fn from_gvk(group: &str, version: &str, kind: &str) -> Option<Kind> {
        match (group, version, kind) {
            ("", "v1", "Namespace") => Some(Kind::Namespace),
            ("networking.istio.io", "v1" | "v1beta1" | "v1alpha3", "VirtualService") => Some(Kind::VirtualService),
            ("networking.k8s.io", "v1", "Ingress") => Some(Kind::Ingress),
            ("gateway.networking.k8s.io", "v1" | "v1beta1", "HTTPRoute") => Some(Kind::HttpRoute),
            ("policy.linkerd.io", "v1beta2" | "v1beta3", "HTTPRoute") => Some(Kind::HttpRoute),
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
            Kind::HttpRoute => "HTTPRoute",
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
    /// What is known of the cluster (SPEC §10); [`ClusterView::none`] without one.
    pub cluster: &'a ClusterView,
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
    /// carries a warning of [`MAX_WARNING_CHARS`] characters or more. Characters the apiserver
    /// would drop the warning for are escaped first ([`printable`]), and the limit counts the
    /// escapes.
    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(printable_cut(&message.into(), MAX_WARNING_CHARS - 1));
    }

    /// Adds a denial; its message is made [`printable`] (it is not cut: it names the fix).
    pub fn deny(&mut self, reason: &'static str, message: impl Into<String>) {
        let message = message.into();
        let message = match printable(&message) {
            Cow::Borrowed(_) => message,
            Cow::Owned(escaped) => escaped,
        };
        self.denials.push(Denial { reason, message });
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
        Kind::HttpRoute => http_route::mutate(subject, object, settings, findings),
    }
}

/// Can the mutating rules change an object of `kind` in `namespace` at all? When they cannot
/// (a kind the driver leaves alone, a protected namespace), the object need not even be read.
/// The rules check the same themselves.
pub fn may_mutate(kind: Kind, namespace: &str, settings: &Settings) -> bool {
    match kind {
        Kind::Namespace => true, // its namespace is its own name, read from the object
        Kind::VirtualService => settings.driver == Driver::Istio && !settings.is_protected(namespace),
        Kind::Ingress => settings.driver == Driver::Nginx && !settings.is_protected(namespace),
        Kind::HttpRoute => !settings.is_protected(namespace), // both drivers (SPEC §11)
    }
}

/// The mutation as JSONPatch operations, for kinds whose rules can write them without a copy
/// of the object (`None`: mutate a copy with [`mutate_into`] and diff it).
pub fn patch_directly(
    subject: &Subject<'_>,
    settings: &Settings,
    findings: &mut Findings,
) -> Option<crate::patch::JsonPatch> {
    match subject.kind {
        Kind::VirtualService => virtual_service::patch_directly(subject, settings, findings),
        Kind::Namespace => Some(namespace::patch(subject, settings, findings)),
        Kind::Ingress | Kind::HttpRoute => None,
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
        Kind::HttpRoute => http_route::validate(subject, settings, findings),
    }
}

/// `detailed` if it fits in one warning (one line, under [`MAX_WARNING_CHARS`] once made
/// [`printable`]), else the shorter `fallback` that says the same with less detail.
pub fn fitting_warning(detailed: String, fallback: impl Into<String>) -> String {
    let fits = printable(&detailed).chars().count() < MAX_WARNING_CHARS;
    if fits { detailed } else { fallback.into() }
}

/// A user-written name cut to at most `max` characters (`…` marks the cut), for warnings;
/// [`printable`] first, so the cut counts the escapes.
pub fn shorten(s: &str, max: usize) -> String {
    printable_cut(s, max)
}

/// Characters user-written text must not bring into a warning or a denial (SPEC §8): control
/// characters (the apiserver drops a warning that holds one: Go's `unicode.IsControl`, the same
/// set as [`char::is_control`]), and the ones that break a line or reorder how the rest reads
/// (line and paragraph separators, bidirectional controls), so that a message stays one honest
/// line.
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `s` with every [`must_escape`] character written as its Rust escape (`\n`, `\t`, `\u{1b}`,
/// `\u{202e}`); everything else, backslashes included, as it is.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(must_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if must_escape(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`printable`] `s`, cut to at most `max` characters with `…` marking the cut. An escape is
/// never split: it goes whole or not at all.
fn printable_cut(s: &str, max: usize) -> String {
    let escaped = printable(s);
    if escaped.chars().count() <= max {
        return escaped.into_owned();
    }
    let mut out = String::new();
    let mut count = 0;
    for c in s.chars() {
        let piece: String = if must_escape(c) { c.escape_debug().collect() } else { c.to_string() };
        let len = piece.chars().count();
        if count + len > max - 1 {
            break;
        }
        out.push_str(&piece);
        count += len;
    }
    out.push('…');
    out
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
        assert_eq!(fitting_warning("two\nlines".into(), "one line"), "two\nlines", "escaped, it is one line");
        assert_eq!(fitting_warning(format!("{}\u{1b}", "x".repeat(114)), "short"), "short", "the escape counts");
        assert_eq!(fitting_warning("fine".into(), "short"), "fine");
        let mut findings = Findings::default();
        findings.warn(format!("{long}é"));
        findings.warn("fine");
        assert_eq!(findings.warnings[0].chars().count(), MAX_WARNING_CHARS - 1);
        assert!(findings.warnings[0].ends_with('…'));
        assert_eq!(findings.warnings[1], "fine");
    }

    #[test]
    fn user_text_in_warnings_and_denials_is_escaped() {
        let mut findings = Findings::default();
        findings.warn("route api\nx\u{1b}[31m\t\u{7f}\u{85}\u{202e}\u{2028}\\n é");
        assert_eq!(findings.warnings[0], r"route api\nx\u{1b}[31m\t\u{7f}\u{85}\u{202e}\u{2028}\n é");
        findings.deny("r", "Ingress a/b\r\n: \u{0}");
        assert_eq!(findings.denials[0].message, r"Ingress a/b\r\n: \0");
        assert_eq!(shorten("a\u{1b}b", 24), r"a\u{1b}b");
        // Nothing that is already printable changes, backslashes included.
        assert_eq!(printable(r"\d+ \n"), r"\d+ \n");
        assert!(matches!(printable("plain ünïcode ✓"), Cow::Borrowed(_)));
    }

    #[test]
    fn escapes_count_towards_the_limits_and_are_never_split() {
        for n in 0..130 {
            for c in ['\u{1}', '\u{1b}', '\n', 'é', '\u{2069}'] {
                let text = format!("{}{}", "x".repeat(n), c.to_string().repeat(40));
                let mut findings = Findings::default();
                findings.warn(text.clone());
                let warning = &findings.warnings[0];
                assert!(warning.chars().count() < MAX_WARNING_CHARS, "{warning}");
                assert!(!warning.chars().any(must_escape), "{warning:?}");
                // A cut warning is the escaped form of a prefix of the text: no escape is split.
                match warning.strip_suffix('…') {
                    Some(kept) => assert!(
                        (0..text.chars().count()).any(|k| printable(&text.chars().take(k).collect::<String>()) == kept),
                        "split escape: {warning}"
                    ),
                    None => assert_eq!(*warning, printable(&text)),
                }
                let short = shorten(&text, 24);
                assert!(short.chars().count() <= 24, "{short}");
            }
        }
    }
}
