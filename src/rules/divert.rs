//! The divert wire contract shared by the VirtualService and Ingress rules (SPEC §2, §7):
//! annotation names, the divert key, and the header forms that are always wrong.

use serde_json::Value;

use super::metadata_str;
use crate::selector::is_dns_label;

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

/// Baggage values that use a wrong form of the divert member (SPEC §2 wrong forms).
pub fn wrong_baggage_value(value: &str) -> Option<String> {
    if value.contains("baggage.okteto-divert=") {
        return Some(format!(
            "baggage value {value:?} uses \"baggage.okteto-divert=\"; the member is written {BAGGAGE_MEMBER}=<namespace>"
        ));
    }
    if value.contains("okteto-divert:") {
        return Some(format!(
            "baggage value {value:?} uses \"okteto-divert:\"; baggage members use '=': {BAGGAGE_MEMBER}=<namespace>"
        ));
    }
    None
}

/// The same, for a regex matched against a baggage value: escapes of punctuation (`\.`, `\:`)
/// and optional whitespace between tokens (`\s*`, `[ \t]*`) do not hide a wrong form.
pub fn wrong_baggage_pattern(pattern: &str) -> Option<String> {
    let mut plain = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('\\', Some(next)) if next.is_ascii_punctuation() => {
                plain.push(next);
                chars.next();
            }
            _ => plain.push(c),
        }
    }
    for whitespace in ["\\s*", "\\s+", "\\s?", "[ \\t]*", "[ \\t]+", "[\\t ]*", "[\\t ]+", " *", " +", " "] {
        plain = plain.replace(whitespace, "");
    }
    wrong_baggage_value(&plain).map(|_| {
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
        for wrong in [".*baggage\\.okteto-divert=cindy.*", ".*okteto-divert\\s*:cindy", "okteto\\-divert\\:\\s+cindy"] {
            assert!(wrong_baggage_pattern(wrong).is_some(), "{wrong}");
        }
        for right in
            [".*okteto-divert=cindy.*", r"(?:.*,)?[ \t]*okteto-divert[ \t]*=[ \t]*cindy[ \t]*(?:[;,].*)?", "a:b"]
        {
            assert!(wrong_baggage_pattern(right).is_none(), "{right}");
        }
    }
}
