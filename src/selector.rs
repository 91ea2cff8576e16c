//! Kubernetes label-selector syntax (the `-l` of kubectl), for `--managed-selector`.
//!
//! Grammar, as in k8s.io/apimachinery/pkg/labels: comma-separated requirements, each one of
//! `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k` (does not exist).
//! The empty selector matches everything.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    source: String,
    requirements: Vec<Requirement>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct SelectorError {
    selector: String,
    reason: String,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

impl Selector {
    pub fn everything() -> Self {
        Selector { source: String::new(), requirements: Vec::new() }
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn parse(source: &str) -> Result<Self, SelectorError> {
        let err = |reason: String| SelectorError { selector: source.to_string(), reason };
        let mut requirements = Vec::new();
        for part in split_top_level(source).map_err(err)? {
            let part = part.trim();
            if part.is_empty() {
                if source.trim().is_empty() {
                    continue;
                }
                return Err(err("empty requirement (stray comma)".into()));
            }
            requirements.push(parse_requirement(part).map_err(err)?);
        }
        Ok(Selector { source: source.trim().to_string(), requirements })
    }

    /// `labels` is the object's `metadata.labels` (absent = no labels).
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.contains(x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

/// Splits on commas that are not inside `( … )`.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => {
                depth += 1;
                if depth > 1 {
                    return Err("nested parentheses".into());
                }
            }
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced ')'".into());
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(label_key(key.trim())?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(label_key(k.trim())?, label_value(v.trim())?));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals(label_key(k.trim())?, label_value(v.trim())?));
    }
    // Set-based: `key in (a,b)` / `key notin (a,b)`.
    if let Some(open) = part.find('(') {
        let head = part[..open].trim();
        let close = part.rfind(')').filter(|&c| c > open).ok_or("missing ')'")?;
        if !part[close + 1..].trim().is_empty() {
            return Err(format!("unexpected text after ')' in {part:?}"));
        }
        let mut words = head.split_whitespace();
        let (key, op) = (words.next().ok_or("missing key")?, words.next().ok_or("missing operator")?);
        if words.next().is_some() {
            return Err(format!("unexpected words in {part:?}"));
        }
        let key = label_key(key)?;
        let inside = &part[open + 1..close];
        // As Kubernetes: an empty set is an error, not a set that matches nothing (or everything).
        if inside.trim().is_empty() {
            return Err(format!(
                "{part:?} has an empty set of values; `{op}` needs at least one, e.g. {key} {op} (value)"
            ));
        }
        let values = inside.split(',').map(|v| label_value(v.trim())).collect::<Result<BTreeSet<_>, _>>()?;
        return match op {
            "in" => Ok(Requirement::In(key, values)),
            "notin" => Ok(Requirement::NotIn(key, values)),
            other => Err(format!("unknown operator {other:?}: use in or notin")),
        };
    }
    if part.split_whitespace().count() != 1 {
        return Err(format!("cannot read requirement {part:?}"));
    }
    Ok(Requirement::Exists(label_key(part)?))
}

/// A label key: optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
fn label_key(k: &str) -> Result<String, String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !p.split('.').all(is_dns_label))
    {
        return Err(format!("invalid label key prefix in {k:?}"));
    }
    if !is_label_name(name) {
        return Err(format!("invalid label key {k:?}"));
    }
    Ok(k.to_string())
}

fn label_value(v: &str) -> Result<String, String> {
    if v.is_empty() || is_label_name(v) { Ok(v.to_string()) } else { Err(format!("invalid label value {v:?}")) }
}

/// Label name or value: at most 63 of `[A-Za-z0-9._-]`, starting and ending alphanumeric.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// DNS-1123 label: at most 63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_operator_matches_as_kubectl_does() {
        let l = labels(json!({"env": "dev", "team": "a", "dev.okteto.com/okteto-managed": "true"}));
        let cases = [
            ("", true),
            ("env=dev", true),
            ("env==dev", true),
            ("env!=dev", false),
            ("env!=prod", true),
            ("missing!=x", true),
            ("env in (dev,prod)", true),
            ("env in (prod)", false),
            ("env notin (prod, qa)", true),
            ("env notin (dev)", false),
            ("missing notin (dev)", true),
            ("missing in (dev)", false),
            ("team", true),
            ("!team", false),
            ("!missing", true),
            ("dev.okteto.com/okteto-managed=true", true),
            ("env=dev, team=a", true),
            ("env=dev,team=b", false),
            ("env in (dev,prod),!missing,team", true),
        ];
        for (sel, want) in cases {
            let s = Selector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(Some(&l)), want, "selector {sel:?}");
        }
        assert!(Selector::parse("").unwrap().matches(None));
        assert!(!Selector::parse("env=dev").unwrap().matches(None));
        assert!(Selector::parse("!env").unwrap().matches(None));
    }

    #[test]
    fn malformed_selectors_are_rejected_with_the_reason() {
        for bad in [
            "env in (a",
            "env in a)",
            "env=dev,,team",
            "env between (a)",
            "=x",
            "env=bad value",
            "a/b/c=x",
            "env in (a) x",
            "env in ()",
            "env notin ( )",
            "team=a,env in ()",
        ] {
            let e = Selector::parse(bad).expect_err(bad);
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn an_empty_set_is_refused_as_kubernetes_does() {
        let e = Selector::parse("env in ()").unwrap_err().to_string();
        assert!(e.contains("empty set of values") && e.contains("env in (value)"), "{e}");
        let e = Selector::parse("env notin ()").unwrap_err().to_string();
        assert!(e.contains("`notin` needs at least one"), "{e}");
        // The empty value itself is a value (`in (,)` is the set {""}), as in Kubernetes.
        let s = Selector::parse("env in (,)").unwrap();
        assert!(!s.matches(Some(&labels(json!({"env": "dev"})))));
        assert!(s.matches(Some(&labels(json!({"env": ""})))));
    }
}
