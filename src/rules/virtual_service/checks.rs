//! SPEC §7: validation of VirtualServices.
//!
//! Denied, each with a message naming the object, the field and the fix:
//! - divert annotations that cannot be used ([`annotations::entries`] says why; a
//!   `divert.okteto.com/header` value that is not a namespace name);
//! - the wrong header forms of SPEC §2 in any http header match (`headers`, `withoutHeaders`) or
//!   header operation (`headers.request`/`response` `set`/`add`/`remove`, on the route and on
//!   each destination);
//! - regexes Envoy would refuse (RE2 itself refuses them, or their RE2 program is larger than
//!   `--max-regex-program-size`), or longer than 1024 bytes (istiod's limit), in any `StringMatch`
//!   of an http route (`uri`, `scheme`, `method`, `authority`, `headers`, `withoutHeaders`,
//!   `queryParams`, `corsPolicy.allowOrigins`) and in `rewrite.uriRegexRewrite.match`: Envoy
//!   compiles all of them with RE2 (and istiod checks them all).
//!
//! Warned: the user's uses of the legacy header `baggage.okteto-divert` (deprecated; worded
//! "off here" while `--legacy-header` is off; what the webhook writes itself is not warned
//! about), and a `divert.okteto.com/...` annotation that looks like a divert entry but whose
//! key is not one.
//!
//! Generated `okteto-divert-*` routes are checked like any other: they must pass.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::annotations::{self, is_entry_key};
use super::divert_routes::{self, is_generated_name};
use super::regex_check::{self, MAX_REGEX_BYTES, RegexProblem};
use crate::re2::{ErrorKind, Refusal};
use crate::rules::divert::{
    ANNOTATION_PREFIX, BAGGAGE_HEADER, HEADER_ANNOTATION, LEGACY_HEADER, NAMESPACE_ANNOTATION, check_divert_key,
    header_annotation, implied_header_key, object_ref, wrong_baggage_pattern, wrong_baggage_value, wrong_header_name,
};
use crate::rules::{Findings, Subject, fitting_warning};
use crate::settings::{Driver, Settings};

pub const INVALID_DIVERT_ANNOTATION: &str = "invalid-divert-annotation";
pub const WRONG_HEADER_FORM: &str = "wrong-header-form";
pub const INVALID_REGEX: &str = "invalid-regex";
pub const TOO_LARGE: &str = "too-large";

pub fn validate(subject: &Subject<'_>, settings: &Settings, findings: &mut Findings) {
    // On CREATE with generateName the apiserver has not picked the name yet.
    let generated_name =
        subject.object.pointer("/metadata/generateName").and_then(Value::as_str).map(|g| format!("{g}*"));
    let name = match (subject.name, &generated_name) {
        ("", Some(generated)) => generated.as_str(),
        (name, _) => name,
    };
    // With --legacy-header the webhook itself writes the legacy header: in the match entries of
    // the routes it generates (§4) and, on a developer VirtualService, as
    // `headers.request.set` of every route (§5). Those uses are not the user's and get no warning.
    let generated_legacy_value = header_annotation(subject.object)
        .or_else(|| implied_header_key(subject, settings))
        .filter(|key| settings.legacy_header && check_divert_key(key).is_ok())
        .map(str::to_string);
    let mut check = Check {
        form: FormCheck::new(object_ref(subject.kind.as_str(), subject.namespace, name), findings, settings),
        in_generated_route: false,
        generated_legacy_value,
    };
    check.annotations(subject);
    // SPEC §7 size: only where the mutation would run (istio driver, unprotected namespace).
    if settings.driver == Driver::Istio
        && !settings.is_protected(subject.namespace)
        && let Some(excess) = divert_routes::excess(subject, settings, check.form.findings.object_bytes)
    {
        let message = format!("{}: {}", check.form.object, excess.denial());
        check.form.findings.deny(TOO_LARGE, message);
    }
    let http = subject.object.pointer("/spec/http").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for (i, route) in http.iter().enumerate() {
        if check.form.findings.out_of_time() {
            return; // the review is abandoned
        }
        check.in_generated_route = route.get("name").and_then(Value::as_str).is_some_and(is_generated_name);
        check.http_route(route, &format!("spec.http[{i}]"));
    }
    check.form.warn_legacy_uses(settings.legacy_header);
}

/// One VirtualService's validation.
struct Check<'a> {
    form: FormCheck<'a>,
    /// The route being checked is one the webhook generated (`okteto-divert-*`).
    in_generated_route: bool,
    /// The value the webhook sets the legacy header to on every route of this object (§5 with
    /// the flag on), if it does.
    generated_legacy_value: Option<String>,
}

/// What checking header forms and regexes needs, shared by the VirtualService and HTTPRoute
/// validations: where denials go, the user's uses of the legacy header, and RE2's verdicts.
pub(crate) struct FormCheck<'a> {
    /// "VirtualService staging/reviews"
    pub object: String,
    pub findings: &'a mut Findings,
    /// Fields where the user names the legacy header, in document order.
    legacy_uses: Vec<String>,
    /// `--max-regex-program-size`.
    max_regex_program_size: usize,
    /// What [`regex_check::problem`] said of each pattern seen so far (each distinct pattern is
    /// compiled once per object: divert clones repeat their original's regexes).
    regex_verdicts: HashMap<String, Option<RegexProblem>>,
}

impl<'a> FormCheck<'a> {
    pub fn new(object: String, findings: &'a mut Findings, settings: &Settings) -> FormCheck<'a> {
        FormCheck {
            object,
            findings,
            legacy_uses: Vec::new(),
            max_regex_program_size: settings.max_regex_program_size,
            regex_verdicts: HashMap::new(),
        }
    }

    pub fn deny(&mut self, reason: &'static str, field: &str, message: impl AsRef<str>) {
        let message = format!("{}: {field}: {}", self.object, message.as_ref());
        self.findings.deny(reason, message);
    }

    /// A header name at `field`: a wrong form (SPEC §2) is denied; the legacy header is noted
    /// for [`FormCheck::warn_legacy_uses`] when `users` (not where the webhook wrote it).
    pub fn header_name(&mut self, name: &str, field: &str, users: bool) {
        if let Some(problem) = wrong_header_name(name) {
            self.deny(WRONG_HEADER_FORM, field, problem);
        } else if users && name.eq_ignore_ascii_case(LEGACY_HEADER) {
            self.legacy_uses.push(field.to_string());
        }
    }

    /// An RE2 pattern at `field`, denied if the data plane would refuse it.
    pub fn pattern(&mut self, pattern: &str, field: &str) {
        // A compile cannot be interrupted: the deadline is checked before each one (SPEC §8).
        if self.findings.out_of_time() {
            return;
        }
        let limit = self.max_regex_program_size;
        let problem = match self.regex_verdicts.get(pattern) {
            Some(known) => known.clone(),
            None => {
                let found = regex_check::problem(pattern, limit);
                self.regex_verdicts.insert(pattern.to_string(), found.clone());
                found
            }
        };
        let Some(problem) = problem else { return };
        let message = regex_denial(pattern, problem, limit);
        self.deny(INVALID_REGEX, field, message);
    }

    /// One warning for the user's uses of the legacy header: deprecated (SPEC §2), and, while
    /// `--legacy-header` is off, also not accepted by this cluster (SPEC §7).
    pub fn warn_legacy_uses(&mut self, legacy_header_on: bool) {
        let Some(first) = self.legacy_uses.first() else { return };
        let more = match self.legacy_uses.len() {
            1 => String::new(),
            n => format!(" (+{} more)", n - 1),
        };
        let state = if legacy_header_on { "deprecated" } else { "deprecated and off here" };
        let warning = fitting_warning(
            format!("{first}{more}: legacy header, {state}; use {BAGGAGE_HEADER}"),
            format!("legacy header {LEGACY_HEADER} is {state}; use {BAGGAGE_HEADER}"),
        );
        self.findings.warn(warning);
    }
}

impl Check<'_> {
    fn deny(&mut self, reason: &'static str, field: &str, message: impl AsRef<str>) {
        self.form.deny(reason, field, message);
    }

    fn annotations(&mut self, subject: &Subject<'_>) {
        check_annotations(subject, &self.form.object, self.form.findings);
    }

    fn http_route(&mut self, route: &Value, path: &str) {
        for (j, entry) in array(route, "match").iter().enumerate() {
            let path = format!("{path}.match[{j}]");
            for field in ["uri", "scheme", "method", "authority"] {
                if let Some(string_match) = entry.get(field) {
                    self.regex(string_match, &format!("{path}.{field}"));
                }
            }
            for map in ["headers", "withoutHeaders"] {
                for (name, string_match) in object(entry, map) {
                    let field = format!("{path}.{map}{}", segment(name));
                    self.header_name(name, &field);
                    if name.eq_ignore_ascii_case(BAGGAGE_HEADER) {
                        for form in ["exact", "prefix"] {
                            if let Some(value) = string_match.get(form).and_then(Value::as_str) {
                                self.baggage_value(value, &format!("{field}.{form}"));
                            }
                        }
                        if let Some(pattern) = string_match.get("regex").and_then(Value::as_str)
                            && let Some(problem) = wrong_baggage_pattern(pattern)
                        {
                            self.deny(WRONG_HEADER_FORM, &format!("{field}.regex"), problem);
                        }
                    }
                    self.regex(string_match, &field);
                }
            }
            for (name, string_match) in object(entry, "queryParams") {
                self.regex(string_match, &format!("{path}.queryParams{}", segment(name)));
            }
        }
        self.header_operations(route, &format!("{path}.headers"), true);
        for (k, destination) in array(route, "route").iter().enumerate() {
            self.header_operations(destination, &format!("{path}.route[{k}].headers"), false);
        }
        if let Some(pattern) = route.pointer("/rewrite/uriRegexRewrite/match").and_then(Value::as_str) {
            self.pattern(pattern, &format!("{path}.rewrite.uriRegexRewrite.match"));
        }
        if let Some(cors) = route.get("corsPolicy") {
            for (k, origin) in array(cors, "allowOrigins").iter().enumerate() {
                self.regex(origin, &format!("{path}.corsPolicy.allowOrigins[{k}]"));
            }
        }
    }

    /// `headers.request` / `headers.response` of `owner` (a route or a destination).
    fn header_operations(&mut self, owner: &Value, path: &str, of_route: bool) {
        let Some(headers) = owner.get("headers") else { return };
        for direction in ["request", "response"] {
            let Some(operations) = headers.get(direction) else { continue };
            for operation in ["set", "add"] {
                for (name, value) in object(operations, operation) {
                    let field = format!("{path}.{direction}.{operation}{}", segment(name));
                    let webhook_written = of_route
                        && (direction, operation) == ("request", "set")
                        && name.eq_ignore_ascii_case(LEGACY_HEADER)
                        && value.as_str().is_some_and(|v| self.generated_legacy_value.as_deref() == Some(v));
                    if webhook_written {
                        continue;
                    }
                    self.header_name(name, &field);
                    if let (true, Some(value)) = (name.eq_ignore_ascii_case(BAGGAGE_HEADER), value.as_str()) {
                        self.baggage_value(value, &field);
                    }
                }
            }
            for (k, name) in array(operations, "remove").iter().enumerate() {
                if let Some(name) = name.as_str() {
                    self.header_name(name, &format!("{path}.{direction}.remove[{k}]"));
                }
            }
        }
    }

    fn header_name(&mut self, name: &str, field: &str) {
        self.form.header_name(name, field, !self.in_generated_route);
    }

    fn baggage_value(&mut self, value: &str, field: &str) {
        if let Some(problem) = wrong_baggage_value(value) {
            self.deny(WRONG_HEADER_FORM, field, problem);
        }
    }

    /// The `regex` of a `StringMatch` at `path`, if it has one.
    fn regex(&mut self, string_match: &Value, path: &str) {
        if let Some(pattern) = string_match.get("regex").and_then(Value::as_str) {
            self.pattern(pattern, &format!("{path}.regex"));
        }
    }

    fn pattern(&mut self, pattern: &str, field: &str) {
        self.form.pattern(pattern, field);
    }
}

/// The divert annotations of any kind that carries them (VirtualServices, HTTPRoutes): entries
/// that cannot be used and a `divert.okteto.com/header` that is not a namespace name are denied;
/// a look-alike of an entry under a key that is not one is warned about.
pub(crate) fn check_annotations(subject: &Subject<'_>, object: &str, findings: &mut Findings) {
    let deny = |findings: &mut Findings, field: &str, message: &str| {
        findings.deny(INVALID_DIVERT_ANNOTATION, format!("{object}: {field}: {message}"));
    };
    for entry in annotations::entries(subject.object, subject.namespace) {
        if let Err(e) = entry {
            deny(findings, &annotation_field(&e.annotation), &e.message);
        }
    }
    let Some(annotations) = subject.object.pointer("/metadata/annotations").and_then(Value::as_object) else {
        return;
    };
    if let Some(value) = annotations.get(HEADER_ANNOTATION) {
        let problem = match value.as_str() {
            Some(key) => check_divert_key(key).err(),
            None => Some(format!("the value is {value}, not a string")),
        };
        if let Some(problem) = problem {
            deny(
                findings,
                &annotation_field(HEADER_ANNOTATION),
                &format!("{problem}; set it to the name of the developer namespace (the divert key)"),
            );
        }
    }
    for (key, value) in annotations {
        let ignored = key.starts_with(ANNOTATION_PREFIX)
            && key != HEADER_ANNOTATION
            && key != NAMESPACE_ANNOTATION
            && !is_entry_key(key);
        if ignored && looks_like_entry(value) {
            findings.warn(fitting_warning(
                format!("annotation {key} is not a divert entry key and is ignored"),
                "an annotation divert.okteto.com/... is not a divert entry key and is ignored",
            ));
        }
    }
}

/// The denial message for a regex Envoy would refuse (SPEC §7); HTTPRoutes use it too.
pub(crate) fn regex_denial(pattern: &str, problem: RegexProblem, limit: usize) -> String {
    match problem {
        RegexProblem::TooLong(bytes) => format!(
            "the regex is {bytes} bytes long, Istio accepts at most {MAX_REGEX_BYTES}; \
             shorten it or split the match into several match entries"
        ),
        RegexProblem::Refused(refusal) if refusal.kind == ErrorKind::PatternTooLarge => format!(
            "regex {} is too large for RE2, which Envoy uses (RE2: {}; the program size \
             limit is {limit}); {SHRINK}",
            quoted_excerpt(pattern),
            refusal.reason
        ),
        RegexProblem::Refused(refusal) => format!(
            "regex {} is not valid RE2, which Envoy uses (RE2: {}); \
             rewrite it in RE2 syntax: https://github.com/google/re2/wiki/Syntax",
            quoted_excerpt(pattern),
            refusal_text(&refusal, pattern)
        ),
        RegexProblem::ProgramTooLarge { size, limit } => format!(
            "regex {} compiles to an RE2 program of size {size}, above the limit of {limit} \
             (Envoy's re2.max_program_size.error_level), so Envoy would reject the route configuration; \
             {SHRINK}",
            quoted_excerpt(pattern)
        ),
    }
}

/// `metadata.annotations["divert.okteto.com/…"]`
pub(crate) fn annotation_field(annotation: &str) -> String {
    format!("metadata.annotations[{annotation:?}]")
}

/// A map key as a path segment: `.x-user` when that reads unambiguously, else `["a b"]`.
pub(crate) fn segment(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        format!(".{key}")
    } else {
        format!("[{key:?}]")
    }
}

/// The fix for a regex whose RE2 program is too large.
const SHRINK: &str = "make it smaller: lower repetition counts (x{1,64} is 64 copies of x) and ASCII classes \
                      ([a-zA-Z0-9]) instead of Unicode ones (\\pL, \\pN)";

/// RE2's refusal of `pattern` in words: its reason, the part of the pattern it names (quoted,
/// shortened past 40 characters), and what it means where RE2's words leave it unsaid.
fn refusal_text(refusal: &Refusal, pattern: &str) -> String {
    let argument = &refusal.argument;
    let mut text = refusal.reason.clone();
    if !argument.is_empty() {
        let cut = refusal.argument_cut || argument.chars().count() > 40;
        let shown: String = argument.chars().take(40).collect();
        text.push_str(&format!(" {shown:?}{}", if cut { "..." } else { "" }));
    }
    let hint = match refusal.kind {
        ErrorKind::BadEscape if argument.len() == 2 && argument.as_bytes()[1].is_ascii_digit() => {
            "; back-references are not supported"
        }
        ErrorKind::BadPerlOp if argument.starts_with("(?=") || argument.starts_with("(?!") => {
            "; look-ahead is not supported"
        }
        ErrorKind::BadPerlOp
            if argument.starts_with("(?<") && (pattern.contains("(?<=") || pattern.contains("(?<!")) =>
        {
            "; look-behind is not supported"
        }
        // Newer RE2 (and Go) take `(?<name>`; the RE2 linked here is older (docs/validation.md).
        ErrorKind::BadPerlOp if argument.starts_with("(?<") => "; write a named group as (?P<name>...)",
        ErrorKind::RepeatSize => "; counts go up to 1000, nested ones multiplied",
        _ => "",
    };
    text + hint
}

/// A pattern in a message: quoted (so it stays one line), shortened past 80 characters.
fn quoted_excerpt(pattern: &str) -> String {
    if pattern.chars().count() <= 80 {
        format!("{pattern:?}")
    } else {
        format!("{:?}...", pattern.chars().take(80).collect::<String>())
    }
}

/// Is this annotation value a JSON object with a `namespace`: meant as a divert entry?
pub(crate) fn looks_like_entry(value: &Value) -> bool {
    value
        .as_str()
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .is_some_and(|parsed| parsed.get("namespace").is_some())
}

/// `owner[key]` as a list; anything else (absent, wrong type: the CRD schema's job) is empty.
fn array<'v>(owner: &'v Value, key: &str) -> &'v [Value] {
    owner.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// `owner[key]` as a map, likewise.
fn object<'v>(owner: &'v Value, key: &str) -> impl Iterator<Item = (&'v String, &'v Value)> {
    owner.get(key).and_then(Value::as_object).into_iter().flat_map(Map::iter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_read_unambiguously() {
        assert_eq!(segment("x-user"), ".x-user");
        assert_eq!(segment("baggage.okteto-divert"), ".baggage.okteto-divert");
        assert_eq!(segment("a b"), "[\"a b\"]");
        assert_eq!(segment("a\nb"), "[\"a\\nb\"]");
        assert_eq!(segment(""), "[\"\"]");
    }

    #[test]
    fn entry_lookalikes() {
        assert!(looks_like_entry(&Value::from(r#"{"namespace":"cindy"}"#)));
        assert!(!looks_like_entry(&Value::from("cindy")));
        assert!(!looks_like_entry(&Value::from(r#"{"other":1}"#)));
    }
}
