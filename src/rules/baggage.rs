//! The W3C `baggage` header as divert uses it (SPEC §2): the member `okteto-divert=<key>`.
//!
//! - [`divert_pattern`] is P(key), the RE2 pattern a VirtualService header match uses to
//!   recognise a request carrying the divert key (SPEC §4.3).
//! - [`members`], [`with_divert_member`] and [`without_divert_member`] edit a baggage value
//!   member by member, for the rules that inject the header (SPEC §5, §6): members of other
//!   systems are never dropped or altered.
//!
//! Baggage syntax (W3C): `member *(OWS "," OWS member)`, a member is
//! `key OWS "=" OWS value *(OWS ";" OWS property)`, OWS is spaces and tabs. Keys and values
//! cannot contain `,` or `;` (values are percent-encoded), so splitting on them is exact.

use super::divert::BAGGAGE_MEMBER;

/// Optional whitespace of the baggage grammar, as an RE2 class.
const OWS: &str = "[ \\t]*";

/// P(key): an RE2 pattern that Envoy matches against the WHOLE `baggage` value (two headers
/// arrive joined by `,`). True exactly when a list member has key `okteto-divert` and value
/// `key`.
///
/// ```text
/// (?:.*,)?[ \t]*okteto-divert[ \t]*=[ \t]*<key>[ \t]*(?:[;,].*)?
/// ```
///
/// Why it cannot be fooled without look-around: a member starts at the beginning of the value
/// or right after a `,` (never after a `;`, which starts a property), so the optional prefix
/// ends at a comma or is empty; properties and values cannot contain `,`, so a
/// `;okteto-divert=<key>` property has no comma right before it and is not matched. After the
/// key only OWS and then the end, a property (`;`) or the next member (`,`) may follow, so
/// `<key>-2`, `<key>.x` and `x<key>` do not match.
///
/// `key` is a divert key (a DNS-1123 label); any character that is not a letter, digit or
/// `-` is escaped anyway, so the pattern only ever matches the literal key.
pub fn divert_pattern(key: &str) -> String {
    let mut literal = String::with_capacity(key.len());
    for c in key.chars() {
        // `-` is literal outside a character class; escaping it would only hurt readability.
        if c.is_ascii_alphanumeric() || c == '-' {
            literal.push(c);
        } else {
            literal.push_str(&regex_syntax::escape(c.encode_utf8(&mut [0; 4])));
        }
    }
    format!("(?:.*,)?{OWS}{BAGGAGE_MEMBER}{OWS}={OWS}{literal}{OWS}(?:[;,].*)?")
}

/// The baggage list member that carries `key`: `okteto-divert=<key>`.
pub fn divert_member(key: &str) -> String {
    format!("{BAGGAGE_MEMBER}={key}")
}

/// The list members of a baggage value, each trimmed of OWS, empty ones (`a=1,,b=2`) skipped.
/// A member keeps its properties: `a=1;p=2` is one member.
pub fn members(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(trim_ows).filter(|m| !m.is_empty())
}

/// The key of a list member (`okteto-divert` for `okteto-divert = cindy;p=1`).
pub fn member_key(member: &str) -> &str {
    let pair = member.split(';').next().unwrap_or_default();
    trim_ows(pair.split('=').next().unwrap_or_default())
}

/// The value of a list member, without OWS and properties (`cindy` for `okteto-divert = cindy;p=1`).
pub fn member_value(member: &str) -> &str {
    let pair = member.split(';').next().unwrap_or_default();
    trim_ows(pair.split_once('=').map_or("", |(_, value)| value))
}

/// Is `member` an `okteto-divert` member (whatever its value)?
pub fn is_divert_member(member: &str) -> bool {
    member_key(member) == BAGGAGE_MEMBER
}

/// `value` with exactly one `okteto-divert` member, `okteto-divert=<key>`: it takes the place
/// of the first `okteto-divert` member there was (or is appended), other `okteto-divert`
/// members are dropped, and the rest of the value is kept byte for byte (so that
/// [`without_divert_member`] gives back exactly what was there). `None` or an empty value
/// gives just the member. Applying this twice changes nothing.
pub fn with_divert_member(value: Option<&str>, key: &str) -> String {
    let wanted = divert_member(key);
    let value = value.unwrap_or_default();
    let mut divert = members(value).filter(|m| is_divert_member(m));
    match (divert.next(), divert.next()) {
        (Some(only), None) if only == wanted => return value.to_string(),
        // Only an empty value is replaced; anything else (even a value of only spaces and
        // commas) is kept as written, so that removing the member gives it back.
        (None, _) if value.is_empty() => return wanted,
        (None, _) => return format!("{value},{wanted}"),
        _ => {}
    }
    let mut placed = false;
    let mut out: Vec<&str> = Vec::new();
    for segment in value.split(',') {
        if !is_divert_member(trim_ows(segment)) {
            out.push(segment);
        } else if !placed {
            out.push(&wanted);
            placed = true;
        }
    }
    out.join(",")
}

/// `value` without its `okteto-divert` members, the rest kept byte for byte; `None` when
/// nothing at all is left (the member was the whole value).
pub fn without_divert_member(value: &str) -> Option<String> {
    let rest: Vec<&str> = value.split(',').filter(|segment| !is_divert_member(trim_ows(segment))).collect();
    let rest = rest.join(",");
    (!rest.is_empty()).then_some(rest)
}

fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole_match(pattern: &str, value: &str) -> bool {
        regex::Regex::new(&format!("^(?:{pattern})$")).unwrap().is_match(value)
    }

    /// (baggage value, matches P("cindy"))
    const CASES: &[(&str, bool)] = &[
        ("okteto-divert=cindy", true),
        (" okteto-divert=cindy ", true),
        ("okteto-divert = cindy", true),
        ("okteto-divert\t=\tcindy", true),
        ("\tokteto-divert=cindy\t", true),
        ("a=1,okteto-divert=cindy", true),
        ("okteto-divert=cindy,a=1", true),
        ("a=1, okteto-divert=cindy , b=2", true),
        ("a=1,\tokteto-divert=cindy,\tb=2", true),
        ("okteto-divert=cindy;p=1", true),
        ("okteto-divert=cindy ; p=1 ; q", true),
        ("okteto-divert=cindy;okteto-divert=zed", true),
        ("a=1;p=2,okteto-divert=cindy", true),
        ("a=1;p=2 , okteto-divert=cindy;q=3,b=4;r", true),
        ("sentry-trace_id=771a43a4192642f0b136d5159a501700,okteto-divert=cindy", true),
        ("a=1,b=2,c=3,okteto-divert=cindy,d=4,e=5", true),
        // two baggage headers, joined by Envoy with ","
        ("a=1;p=2,okteto-divert=cindy", true),
        ("okteto-divert=zed,okteto-divert=cindy", true),
        ("a=1,okteto-divert=cindy;x=y", true),
        ("okteto-divert=cindy,", true),
        (",okteto-divert=cindy", true),
        // near misses
        ("okteto-divert=cindy-2", false),
        ("okteto-divert=xcindy", false),
        ("okteto-divert=cindy.x", false),
        ("okteto-divert=cindyx", false),
        ("okteto-divert=cindy2;p=1", false),
        ("a=1;okteto-divert=cindy", false),
        ("a=1 ; okteto-divert=cindy", false),
        ("a=1;okteto-divert=cindy,b=2", false),
        ("a=1,b=2;okteto-divert=cindy", false),
        ("x-okteto-divert=cindy", false),
        ("okteto-divertx=cindy", false),
        ("baggage.okteto-divert=cindy", false),
        ("okteto-divert:cindy", false),
        ("okteto-divert=zed", false),
        ("okteto-divert=", false),
        ("cindy", false),
        ("", false),
        ("a=okteto-divert=cindy", false),
        ("okteto-divert=Cindy", false),
        ("okteto-divert=cin dy", false),
    ];

    #[test]
    fn pattern_matches_exactly_the_divert_member() {
        let p = divert_pattern("cindy");
        assert!(CASES.len() >= 30);
        for (value, want) in CASES {
            assert_eq!(whole_match(&p, value), *want, "{value:?} against {p}");
        }
    }

    #[test]
    fn pattern_is_plain_re2() {
        // regex-syntax rejects look-around and back-references; also refuse Perl-only forms
        // RE2 lacks and make sure nothing but groups, classes, literals and repetition appear.
        use regex_syntax::ast::{Ast, parse::Parser};
        fn walk(ast: &Ast) {
            match ast {
                Ast::Empty(_) | Ast::Literal(_) | Ast::Dot(_) | Ast::ClassBracketed(_) => {}
                Ast::Repetition(r) => walk(&r.ast),
                Ast::Group(g) => {
                    assert!(matches!(g.kind, regex_syntax::ast::GroupKind::NonCapturing(_)), "{g:?}");
                    walk(&g.ast)
                }
                Ast::Concat(c) => c.asts.iter().for_each(walk),
                Ast::Alternation(a) => a.asts.iter().for_each(walk),
                other => panic!("unexpected construct {other:?}"),
            }
        }
        for key in ["cindy", "dev-1", "a"] {
            let p = divert_pattern(key);
            walk(&Parser::new().parse(&p).expect("parses"));
            assert!(p.len() < 1024);
        }
        assert_eq!(divert_pattern("dev-1"), "(?:.*,)?[ \\t]*okteto-divert[ \\t]*=[ \\t]*dev-1[ \\t]*(?:[;,].*)?");
    }

    /// The same table through Google's RE2 itself (Python `google-re2`, `pip install google-re2`),
    /// whose `fullmatch` is what Envoy does. Skipped when it is not installed, unless
    /// `DIVERT_REQUIRE_RE2=1` says it must run.
    #[test]
    fn pattern_behaves_the_same_in_re2() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        const SCRIPT: &str = "import json, sys, re2\n\
            p, cases = json.load(sys.stdin)\n\
            print(json.dumps([re2.fullmatch(p, v) is not None for v, _ in cases]))";
        let required = std::env::var("DIVERT_REQUIRE_RE2").is_ok_and(|v| v == "1");
        let probe = Command::new("python3").args(["-c", "import re2"]).output();
        if !probe.as_ref().is_ok_and(|o| o.status.success()) {
            assert!(!required, "python3 with google-re2 is required (DIVERT_REQUIRE_RE2=1)");
            eprintln!("skipped: python3 with google-re2 is not installed");
            return;
        }
        let mut child =
            Command::new("python3").args(["-c", SCRIPT]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let input = serde_json::to_vec(&(divert_pattern("cindy"), CASES)).unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let got: Vec<bool> = serde_json::from_slice(&output.stdout).unwrap();
        for ((value, want), got) in CASES.iter().zip(got) {
            assert_eq!(got, *want, "RE2 on {value:?}");
        }
    }

    #[test]
    fn keys_with_dashes_stay_literal() {
        let p = divert_pattern("dev-1");
        assert!(whole_match(&p, "okteto-divert=dev-1"));
        assert!(!whole_match(&p, "okteto-divert=dev-10"));
        assert!(!whole_match(&p, "okteto-divert=dev"));
        // a key that is not a label is escaped, never interpreted
        assert!(whole_match(&divert_pattern("a.b"), "okteto-divert=a.b"));
        assert!(!whole_match(&divert_pattern("a.b"), "okteto-divert=axb"));
    }

    #[test]
    fn members_and_keys() {
        assert_eq!(members(" a=1 ;p, ,b = 2\t").collect::<Vec<_>>(), ["a=1 ;p", "b = 2"]);
        assert_eq!(member_key(" okteto-divert = x;p=1"), "okteto-divert");
        assert_eq!(member_key("flag"), "flag");
        assert_eq!(member_value(" okteto-divert = x ;p=1"), "x");
        assert_eq!(member_value("flag"), "");
        assert!(is_divert_member("okteto-divert\t=x"));
        assert!(!is_divert_member("a=1;okteto-divert=x"));
    }

    #[test]
    fn adding_the_member_keeps_the_others() {
        let cases = [
            (None, "okteto-divert=cindy"),
            (Some(""), "okteto-divert=cindy"),
            (Some("okteto-divert=cindy"), "okteto-divert=cindy"),
            (Some("a=1, b=2;p"), "a=1, b=2;p,okteto-divert=cindy"),
            (Some(" , "), " , ,okteto-divert=cindy"),
            (Some("a=1,okteto-divert=zed;p=1,b=2"), "a=1,okteto-divert=cindy,b=2"),
            (Some("okteto-divert=zed,a=1,okteto-divert=cindy"), "okteto-divert=cindy,a=1"),
            // already right: untouched, whitespace and all
            (Some("a=1 , okteto-divert=cindy"), "a=1 , okteto-divert=cindy"),
        ];
        for (before, after) in cases {
            let got = with_divert_member(before, "cindy");
            assert_eq!(got, after, "{before:?}");
            assert_eq!(with_divert_member(Some(&got), "cindy"), got, "idempotent for {before:?}");
            assert!(whole_match(&divert_pattern("cindy"), &got));
        }
    }

    #[test]
    fn removing_the_member_keeps_the_others() {
        assert_eq!(without_divert_member("okteto-divert=cindy"), None);
        assert_eq!(without_divert_member(" okteto-divert=cindy , "), Some(" ".into()));
        assert_eq!(without_divert_member("okteto-divert=cindy,"), None);
        assert_eq!(without_divert_member("a=1,okteto-divert=cindy;p,b=2"), Some("a=1,b=2".into()));
        assert_eq!(without_divert_member("a=1 , b=2"), Some("a=1 , b=2".into()));
        assert_eq!(without_divert_member(""), None);
        assert_eq!(without_divert_member(" a=1;p=2\t, okteto-divert=x"), Some(" a=1;p=2\t".into()));
        // adding then removing gives back the value as written
        for value in ["a=1", " a=1 ;p=2 ,\tb=2 ", "a=1,", " , ", " ", ","] {
            let added = with_divert_member(Some(value), "cindy");
            assert_eq!(without_divert_member(&added).as_deref(), Some(value), "{value:?}");
        }
    }
}
