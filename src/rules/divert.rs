//! The divert wire contract shared by the VirtualService and Ingress rules (SPEC §2, §7):
//! annotation names, the divert key, and the header forms that are always wrong.

use serde_json::Value;

use super::{Subject, metadata_str, required_text};
use crate::selector::is_dns_label;
use crate::settings::Settings;

/// Prefix of every divert annotation.
pub const ANNOTATION_PREFIX: &str = "divert.okteto.com/";
/// On a developer's VirtualService or Ingress: the divert key to inject (SPEC §5, §6).
pub const HEADER_ANNOTATION: &str = "divert.okteto.com/header";
/// Not a divert entry either (SPEC §4).
pub const NAMESPACE_ANNOTATION: &str = "divert.okteto.com/namespace";
/// The baggage list-member key that carries the divert key.
pub const BAGGAGE_MEMBER: &str = "okteto-divert";
pub const BAGGAGE_HEADER: &str = "baggage";
/// Deprecated separate header, accepted only with `--legacy-header` (SPEC §2).
pub const LEGACY_HEADER: &str = "baggage.okteto-divert";
/// Name prefix reserved for routes the webhook generates (SPEC §4.1).
pub const GENERATED_ROUTE_PREFIX: &str = "okteto-divert-";

/// `divert.okteto.com/header` of `object`, if set (the value is not checked here).
pub fn header_annotation(object: &Value) -> Option<&str> {
    metadata_str(object, "annotations", HEADER_ANNOTATION)
}

/// SPEC §10.3: an object of a developer namespace (labelled `divert.okteto.com/from`, known from
/// the cluster view) without `divert.okteto.com/header` gets the header injection as if annotated
/// with its namespace: the namespace's name. An annotation someone wrote, whatever its value,
/// decides instead (`None` here).
pub fn implied_header_key<'a>(subject: &Subject<'a>, settings: &Settings) -> Option<&'a str> {
    let has_annotation = subject
        .object
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(HEADER_ANNOTATION));
    if has_annotation {
        return None;
    }
    subject.cluster.shared_namespace_of(subject.namespace, settings).map(|_| subject.namespace)
}

/// A divert key is a namespace name: a DNS-1123 label. `Err` is the reason, for a message.
pub fn check_divert_key(key: &str) -> Result<(), String> {
    if is_dns_label(key) {
        Ok(())
    } else {
        Err(format!(
            "{key:?} is not a namespace name (DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending alphanumeric)"
        ))
    }
}

/// Header names that look like divert but are not its header (SPEC §2 wrong forms).
/// Header names are case-insensitive.
pub fn wrong_header_name(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    matches!(lower.as_str(), "okteto-divert" | "x-okteto-divert").then(|| {
        format!("header {name:?} is not read by divert; use the {BAGGAGE_HEADER} header with the member {BAGGAGE_MEMBER}=<namespace>")
    })
}

/// Baggage values that use a wrong form of the divert member (SPEC §2 wrong forms), with the
/// optional whitespace the baggage grammar allows before the separator (`okteto-divert :cindy`,
/// `baggage.okteto-divert =cindy`).
pub fn wrong_baggage_value(value: &str) -> Option<String> {
    if let Some(form) = form_before(value, "baggage.okteto-divert", '=') {
        return Some(format!(
            "baggage value {value:?} uses {form:?}; the member is written {BAGGAGE_MEMBER}=<namespace>"
        ));
    }
    if let Some(form) = form_before(value, BAGGAGE_MEMBER, ':') {
        return Some(format!(
            "baggage value {value:?} uses {form:?}; baggage members use '=': {BAGGAGE_MEMBER}=<namespace>"
        ));
    }
    None
}

/// The first `word`, optional spaces and tabs, and `separator` in `value`, as written.
fn form_before<'v>(value: &'v str, word: &str, separator: char) -> Option<&'v str> {
    value.match_indices(word).find_map(|(at, _)| {
        let rest = &value[at + word.len()..];
        let spaces = rest.len() - rest.trim_start_matches([' ', '\t']).len();
        rest[spaces..].starts_with(separator).then(|| &value[at..at + word.len() + spaces + 1])
    })
}

/// The same, for a regex matched against a baggage value: a regex every match of which holds a
/// wrong form, however it spells it (`okteto-divert[:]cindy`, `okteto\-divert\s*\x3a`,
/// `baggage\.okteto-divert=`); see [`super::required_text`].
pub fn wrong_baggage_pattern(pattern: &str) -> Option<String> {
    (required_text::requires_legacy_form(pattern) || required_text::requires_colon_form(pattern)).then(|| {
        format!(
            "baggage regex {pattern:?} looks for a wrong form of the divert member; the member is written {BAGGAGE_MEMBER}=<namespace>"
        )
    })
}

/// "VirtualService staging/reviews", for messages.
pub fn object_ref(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() { format!("{kind} {name}") } else { format!("{kind} {namespace}/{name}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divert_keys_are_dns_labels() {
        for ok in ["cindy", "a", "dev-1", "0abc"] {
            assert!(check_divert_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Cindy", "-a", "a-", "a.b", "a_b", &"a".repeat(64)] {
            assert!(check_divert_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wrong_forms_are_recognised() {
        assert!(wrong_header_name("okteto-divert").is_some());
        assert!(wrong_header_name("X-Okteto-Divert").is_some());
        assert!(wrong_header_name("baggage").is_none());
        assert!(wrong_header_name("baggage.okteto-divert").is_none());
        assert!(wrong_baggage_value("baggage.okteto-divert=cindy").is_some());
        assert!(wrong_baggage_value("a=1,okteto-divert:cindy").is_some());
        assert!(wrong_baggage_value("okteto-divert=cindy").is_none());
        assert!(wrong_baggage_value("okteto-divert :cindy").is_some());
        assert!(wrong_baggage_value("a=1, okteto-divert\t: cindy").is_some());
        assert!(wrong_baggage_value("baggage.okteto-divert = cindy").is_some());
        assert!(wrong_baggage_value("okteto-divert = cindy").is_none());
        assert!(wrong_baggage_value("okteto-divert-x:1").is_none());
        assert_eq!(
            wrong_baggage_value("okteto-divert :cindy").unwrap(),
            "baggage value \"okteto-divert :cindy\" uses \"okteto-divert :\"; baggage members use '=': okteto-divert=<namespace>"
        );
        for wrong in [
            ".*baggage\\.okteto-divert=cindy.*",
            ".*okteto-divert\\s*:cindy",
            "okteto\\-divert\\:\\s+cindy",
            "okteto-divert[:]cindy",
            "okteto-divert :cindy",
            "okteto-divert\\x3acindy",
        ] {
            assert!(wrong_baggage_pattern(wrong).is_some(), "{wrong}");
        }
        for right in [
            ".*okteto-divert=cindy.*",
            &crate::rules::baggage::divert_pattern("cindy"),
            &crate::rules::baggage::divert_pattern("a-b"),
            r"(?:.*,)?[ \t]*okteto-divert[ \t]*=[ \t]*cindy[ \t]*(?:[;,].*)?",
            "a:b",
            "okteto-divert[:=]cindy",
        ] {
            assert!(wrong_baggage_pattern(right).is_none(), "{right}");
        }
    }
}
