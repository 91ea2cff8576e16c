//! Would RE2 (what Envoy and istiod compile VirtualService regexes with) accept a pattern?
//!
//! `regex-syntax` parses nearly the same language as RE2. Where the two differ, this module
//! leans towards RE2 so that a regex the mesh accepts is never denied:
//! - RE2 syntax that `regex-syntax` lacks is rewritten before parsing: `\Q...\E` quoting,
//!   octal escapes (`\0`, `\012`), `\p{^Greek}`, and a `[` inside a class (a literal in RE2,
//!   a nested class in `regex-syntax`; `&` and `~` likewise are literals there).
//! - `regex-syntax` syntax that RE2 lacks is rejected after parsing: the flags `x`, `u`, `R`,
//!   `\<` `\>` `\b{start}` word boundaries, `\u` escapes, Unicode properties other than general
//!   categories and scripts, repetition counts above 1000 (also nested ones multiplied), stacked
//!   repetition operators (`a**`), and `.[]` in group names.
//!
//! Look-around and back-references are rejected by `regex-syntax` itself, as by RE2.

use regex_syntax::ast::{self, Ast, ClassSetItem, Flag, FlagsItemKind, GroupKind, LiteralKind, Span};

/// Istio rejects longer regexes (SPEC §7). istiod counts UTF-8 bytes (Go's `len`), and so does
/// this: for ASCII, bytes are characters.
pub const MAX_REGEX_BYTES: usize = 1024;
/// RE2's `kMaxRepeat`: the largest repetition count, and the largest product of nested ones.
const MAX_REPEAT: u32 = 1000;
/// RE2's maximum nesting depth (`regex-syntax` defaults to 250, which would deny valid RE2).
const NEST_LIMIT: u32 = 1000;

/// What is wrong with a regex, for a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegexProblem {
    /// Longer than [`MAX_REGEX_BYTES`]; the length in bytes.
    TooLong(usize),
    /// RE2 would reject it; one line saying why and where.
    NotRe2(String),
}

/// `None` when RE2 accepts `pattern` and it is short enough.
pub fn problem(pattern: &str) -> Option<RegexProblem> {
    if pattern.len() > MAX_REGEX_BYTES {
        return Some(RegexProblem::TooLong(pattern.len()));
    }
    let rewritten = rewrite_re2_only_syntax(pattern);
    let at = |span: &Span| excerpt(&rewritten[span.start.offset..span.end.offset]);
    let parsed = ast::parse::ParserBuilder::new().nest_limit(NEST_LIMIT).build().parse(&rewritten);
    let tree = match parsed {
        Ok(tree) => tree,
        Err(e) => return Some(RegexProblem::NotRe2(format!("{} at {}", e.kind(), at(e.span())))),
    };
    if let Err((reason, span)) = ast::visit(&tree, Re2Only { budgets: vec![MAX_REPEAT] }) {
        return Some(RegexProblem::NotRe2(format!("{reason} at {}", at(&span))));
    }
    // Unknown Unicode property names are only found when translating.
    if let Err(e) = regex_syntax::hir::translate::Translator::new().translate(&rewritten, &tree) {
        return Some(RegexProblem::NotRe2(format!("{} at {}", e.kind(), at(e.span()))));
    }
    None
}

/// The offending part of a pattern, quoted, at most 40 characters.
fn excerpt(s: &str) -> String {
    if s.chars().count() <= 40 { format!("{s:?}") } else { format!("{:?}...", s.chars().take(40).collect::<String>()) }
}

/// Rewrites RE2 syntax that `regex-syntax` does not parse into equivalent `regex-syntax`.
fn rewrite_re2_only_syntax(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len());
    let mut in_class = false;
    // Right after `[` or `[^`, where `]` is a literal.
    let mut class_start = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let at_class_start = std::mem::take(&mut class_start);
        match c {
            '\\' if next == Some('Q') && !in_class => {
                // RE2 (like Go): everything up to `\E` or the end is literal.
                let rest: String = chars[i + 2..].iter().collect();
                let (literal, consumed) = match rest.find("\\E") {
                    Some(end) => (&rest[..end], end + 2),
                    None => (rest.as_str(), rest.len()),
                };
                out.push_str(&regex_syntax::escape(literal));
                i += 2 + rest[..consumed].chars().count();
                continue;
            }
            '\\' if matches!(next, Some('0'..='7')) => {
                // RE2: `\0` starts an octal escape; `\1`-`\7` only if another octal digit follows
                // (alone they are back-references, which `regex-syntax` rejects as RE2 does).
                let is_octal_digit = |k: usize| matches!(chars.get(k), Some('0'..='7'));
                if next == Some('0') || is_octal_digit(i + 2) {
                    let digits = (i + 1..(i + 4).min(chars.len())).take_while(|&k| is_octal_digit(k)).count();
                    let text: String = chars[i + 1..i + 1 + digits].iter().collect();
                    let value = u32::from_str_radix(&text, 8).expect("octal digits");
                    out.push_str(&format!("\\x{{{value:X}}}"));
                    i += 1 + digits;
                    continue;
                }
                out.push('\\');
                i += 1;
                continue;
            }
            '\\' if matches!(next, Some('p' | 'P'))
                && chars.get(i + 2) == Some(&'{')
                && chars.get(i + 3) == Some(&'^') =>
            {
                // `\p{^Greek}` is RE2 for `\P{Greek}`.
                out.push_str(if next == Some('p') { "\\P{" } else { "\\p{" });
                i += 4;
                continue;
            }
            '\\' => {
                // Any other escape is copied whole, so an escaped `[` or `]` does not open or close.
                out.push(c);
                out.extend(next);
                i += 2;
                continue;
            }
            '[' if in_class && next == Some(':') => {
                // `[:alpha:]` inside a class: copied whole.
                let rest: String = chars[i..].iter().collect();
                let end = rest.find(":]").map_or(rest.len(), |e| e + 2);
                out.push_str(&rest[..end]);
                i += rest[..end].chars().count();
                continue;
            }
            '[' | '&' | '~' if in_class => out.push_str(&format!("\\{c}")),
            '[' => {
                in_class = true;
                class_start = true;
                out.push('[');
                if next == Some('^') {
                    out.push('^');
                    i += 1;
                }
            }
            ']' if in_class && !at_class_start => {
                in_class = false;
                out.push(']');
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// Rejects what `regex-syntax` parses but RE2 does not. The error is (reason, where).
struct Re2Only {
    /// RE2's `RepetitionWalker`: 1000 divided by each enclosing repetition count; 0 = too many.
    budgets: Vec<u32>,
}

type Found = (&'static str, Span);

/// General categories RE2 knows by their one- and two-letter names.
const GENERAL_CATEGORIES: &[&str] = &[
    "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn", "N", "Nd", "Nl", "No", "P",
    "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm", "So", "Z", "Zl", "Zp", "Zs",
];

impl Re2Only {
    fn flags(items: &[ast::FlagsItem]) -> Result<(), Found> {
        for item in items {
            if let FlagsItemKind::Flag(Flag::Unicode | Flag::CRLF | Flag::IgnoreWhitespace) = item.kind {
                return Err(("RE2 knows only the flags i, m, s and U", item.span));
            }
        }
        Ok(())
    }

    fn literal(literal: &ast::Literal) -> Result<(), Found> {
        use ast::HexLiteralKind::{UnicodeLong, UnicodeShort};
        match literal.kind {
            LiteralKind::HexFixed(UnicodeShort | UnicodeLong) | LiteralKind::HexBrace(UnicodeShort | UnicodeLong) => {
                Err(("RE2 has no \\u or \\U escapes (write \\x{...})", literal.span))
            }
            _ => Ok(()),
        }
    }

    fn unicode_class(class: &ast::ClassUnicode) -> Result<(), Found> {
        let known = match &class.kind {
            ast::ClassUnicodeKind::OneLetter(_) => true,
            ast::ClassUnicodeKind::Named(name) => {
                // A script, by its long name in RE2's spelling (Old_Italic); `regex-syntax` knows
                // which names are scripts.
                let title_case = name.split('_').all(|w| w.starts_with(|c: char| c.is_ascii_uppercase()));
                let is_script = || {
                    let probe = format!("\\p{{sc={name}}}");
                    regex_syntax::Parser::new().parse(&probe).is_ok()
                };
                name == "Any" || GENERAL_CATEGORIES.contains(&name.as_str()) || (title_case && is_script())
            }
            ast::ClassUnicodeKind::NamedValue { .. } => false,
        };
        if known {
            Ok(())
        } else {
            Err(("RE2 knows only general categories (\\p{Lu}) and scripts (\\p{Greek}) as Unicode classes", class.span))
        }
    }
}

impl ast::Visitor for Re2Only {
    type Output = ();
    type Err = Found;

    fn finish(self) -> Result<(), Found> {
        Ok(())
    }

    fn visit_pre(&mut self, node: &Ast) -> Result<(), Found> {
        match node {
            Ast::Flags(set) => Self::flags(&set.flags.items),
            Ast::Literal(literal) => Self::literal(literal),
            Ast::ClassUnicode(class) => Self::unicode_class(class),
            Ast::Assertion(assertion) => {
                use ast::AssertionKind::*;
                match assertion.kind {
                    WordBoundaryStart
                    | WordBoundaryEnd
                    | WordBoundaryStartAngle
                    | WordBoundaryEndAngle
                    | WordBoundaryStartHalf
                    | WordBoundaryEndHalf => {
                        Err(("RE2 has no \\<, \\> or \\b{...} word boundaries, only \\b", assertion.span))
                    }
                    _ => Ok(()),
                }
            }
            Ast::Group(group) => match &group.kind {
                GroupKind::NonCapturing(flags) => Self::flags(&flags.items),
                GroupKind::CaptureName { name, .. } if !name.name.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                    Err(("RE2 group names use only letters, digits and _", name.span))
                }
                _ => Ok(()),
            },
            Ast::Repetition(repetition) => {
                if matches!(*repetition.ast, Ast::Repetition(_)) {
                    return Err((
                        "RE2 does not allow a repetition right after another (a**, a{2}*); group the first: (?:a*)*",
                        repetition.op.span,
                    ));
                }
                let count = match repetition.op.kind {
                    ast::RepetitionKind::Range(ast::RepetitionRange::Exactly(n))
                    | ast::RepetitionKind::Range(ast::RepetitionRange::AtLeast(n)) => n,
                    ast::RepetitionKind::Range(ast::RepetitionRange::Bounded(_, max)) => max,
                    _ => 0,
                };
                if count > MAX_REPEAT {
                    return Err(("RE2 allows repetition counts up to 1000", repetition.op.span));
                }
                let budget = *self.budgets.last().expect("root budget");
                let budget = budget.checked_div(count).unwrap_or(budget);
                if budget == 0 {
                    return Err(("nested repetition counts multiply past RE2's limit of 1000", repetition.op.span));
                }
                self.budgets.push(budget);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn visit_post(&mut self, node: &Ast) -> Result<(), Found> {
        if let Ast::Repetition(_) = node {
            self.budgets.pop();
        }
        Ok(())
    }

    fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), Found> {
        match item {
            ClassSetItem::Literal(literal) => Self::literal(literal),
            ClassSetItem::Unicode(class) => Self::unicode_class(class),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any input gets an answer, and a reason is one line.
        #[test]
        fn never_panics_and_reasons_stay_one_line(pattern in r"[\\\[\](){}?*+^$|.:&~<=!QEpPux0-9a-c\n-]{0,24}|\PC{0,16}") {
            if let Some(RegexProblem::NotRe2(reason)) = problem(&pattern) {
                prop_assert!(!reason.contains('\n'), "{}", reason);
            }
        }
    }

    fn not_re2(pattern: &str) -> String {
        match problem(pattern) {
            Some(RegexProblem::NotRe2(reason)) => reason,
            other => panic!("{pattern:?}: expected NotRe2, got {other:?}"),
        }
    }

    #[test]
    fn valid_re2_passes() {
        for ok in [
            "",
            "/api/v[0-9]+/.*",
            r"^(.*,)?[ \t]*okteto-divert[ \t]*=[ \t]*cindy[ \t]*([;,].*)?$",
            r"(?i)chrome|firefox",
            r"(?P<version>v\d+)",
            r"(?<version>v\d+)",
            r"\pL\p{Lu}\p{Greek}\p{Old_Italic}\P{Han}\p{Any}",
            r"[[:alpha:]_]+\z",
            r"(?U)a+?",
            r"a{1000}",
            r"(a{100}){10}",
            r"(?:a*)*",
            r"\x{41}\x41\t\v",
        ] {
            assert_eq!(problem(ok), None, "{ok:?}");
        }
    }

    #[test]
    fn re2_syntax_that_regex_syntax_lacks_passes() {
        for ok in [r"\Qa.b*c\E+", r"\Q[literal", r"\0", r"\012x", r"\123", r"\p{^Greek}", r"[a[]", r"[]a]", r"[a&&b~~]"]
        {
            assert_eq!(problem(ok), None, "{ok:?}");
        }
        assert_eq!(rewrite_re2_only_syntax(r"\Qa.b\E"), r"a\.b");
        assert_eq!(rewrite_re2_only_syntax(r"\101"), r"\x{41}");
        assert_eq!(rewrite_re2_only_syntax(r"[\]a[]"), r"[\]a\[]");
    }

    #[test]
    fn what_re2_rejects_is_found_with_where() {
        let cases = [
            ("a(?=b)", "look-around", "\"(?=\""),
            ("a(?<!b)", "look-around", "\"(?<!\""),
            (r"(a)\1", "backreferences", "\"\\\\1\""),
            ("(ab", "unclosed group", "\"(\""),
            ("a**", "repetition right after another", "\"*\""),
            ("a{2}{3}", "repetition right after another", "\"{3}\""),
            ("a++", "repetition right after another", "\"+\""),
            ("a*{2}", "repetition right after another", "\"{2}\""),
            ("a{1001}", "up to 1000", "\"{1001}\""),
            ("(a{100}){11}", "multiply past", "\"{100}\""),
            ("(?x)a b", "flags i, m, s and U", "\"x\""),
            ("(?u:a)", "flags i, m, s and U", "\"u\""),
            (r"\<word\>", "word boundaries", "\"\\\\<\""),
            (r"\b{start}", "word boundaries", "\"\\\\b{start}\""),
            (r"\u0041", "\\u", "\"\\\\u0041\""),
            (r"[\u{41}]", "\\u", "\"\\\\u{41}\""),
            (r"\p{Alphabetic}", "general categories", "\"\\\\p{Alphabetic}\""),
            (r"\p{greek}", "general categories", "\"\\\\p{greek}\""),
            (r"\p{sc=Greek}", "general categories", "\"\\\\p{sc=Greek}\""),
            (r"\p{Nope}", "general categories", "\"\\\\p{Nope}\""),
            ("(?P<a.b>x)", "group names", "\"a.b\""),
            (r"\C", "unrecognized escape", "\"\\\\C\""),
        ];
        for (pattern, reason, at) in cases {
            let got = not_re2(pattern);
            assert!(got.contains(reason) && got.ends_with(&format!("at {at}")), "{pattern:?}: {got}");
            assert!(!got.contains('\n'), "{pattern:?}: one line: {got}");
        }
    }

    #[test]
    fn length_limit_is_1024_bytes() {
        assert_eq!(problem(&"a".repeat(1024)), None);
        assert_eq!(problem(&"a".repeat(1025)), Some(RegexProblem::TooLong(1025)));
        assert_eq!(problem(&"é".repeat(512)), None);
        assert_eq!(problem(&"é".repeat(513)), Some(RegexProblem::TooLong(1026)));
    }

    #[test]
    fn deep_nesting_that_re2_accepts_passes() {
        let deep = format!("{}a{}", "(".repeat(300), ")".repeat(300));
        assert_eq!(problem(&deep), None);
    }
}
