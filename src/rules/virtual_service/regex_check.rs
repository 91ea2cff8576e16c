//! Would RE2 (what Envoy compiles VirtualService regexes with; istiod checks them with Go's
//! `regexp`, the same syntax) accept a pattern?
//!
//! `regex-syntax` parses nearly the same language as RE2. Where the two differ, this module
//! leans towards RE2 so that a regex the mesh accepts is never denied:
//! - RE2 syntax that `regex-syntax` lacks or reads differently is rewritten before parsing:
//!   `\Q...\E` quoting, octal escapes (`\0`, `\012`), `\p{^Greek}`, escaped punctuation (`\<` is
//!   a literal `<` in RE2), `\b{2}`, a `{` that starts no counted repetition (a literal in RE2),
//!   group names starting with a digit, `(?)`, and inside a class `[`, `&`, `~` and a second `-`
//!   (literals or a range end in RE2, nested classes and set operators in `regex-syntax`).
//! - `regex-syntax` syntax that RE2 lacks is rejected after parsing: the flags `x`, `u`, `R`,
//!   `\u` escapes, Unicode properties other than general categories and scripts, unknown POSIX
//!   classes, repetition counts above 1000 (also nested ones multiplied), stacked repetition
//!   operators (`a**`), and `.[]` in group names.
//!
//! Look-around and back-references are rejected by `regex-syntax` itself, as by RE2. The unit
//! tests compare the verdicts with Google's RE2 itself on tables and generated patterns.

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
    let rewritten = match rewrite_re2_only_syntax(pattern) {
        Ok(rewritten) => rewritten,
        Err((reason, found)) => return Some(RegexProblem::NotRe2(format!("{reason} at {}", excerpt(&found)))),
    };
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

/// RE2's POSIX class names (`[[:alpha:]]`, negated `[[:^alpha:]]`).
const POSIX_CLASSES: &[&str] = &[
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct", "space", "upper", "word",
    "xdigit",
];

/// Rewrites RE2 syntax that `regex-syntax` does not parse, or parses as something else, into
/// `regex-syntax` that RE2 would read the same way. `Err` is an RE2 error found on the way:
/// (reason, the offending text).
fn rewrite_re2_only_syntax(pattern: &str) -> Result<String, (&'static str, String)> {
    let chars: Vec<char> = pattern.chars().collect();
    let text = |from: usize, to: usize| chars[from.min(chars.len())..to.min(chars.len())].iter().collect::<String>();
    let mut out = String::with_capacity(pattern.len());
    let mut in_class = false;
    // Right after `[` or `[^`, where `]` is a literal.
    let mut class_start = false;
    // Right after a `-` inside a class: a second `-` is a range end in RE2, never `regex-syntax`'s `--`.
    let mut after_dash = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let at_class_start = std::mem::take(&mut class_start);
        let dash_before = std::mem::take(&mut after_dash);
        match c {
            '\\' if next == Some('Q') && !in_class => {
                // RE2 (like Go): everything up to `\E` or the end is literal.
                let rest = text(i + 2, chars.len());
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
                    let value = u32::from_str_radix(&text(i + 1, i + 1 + digits), 8).expect("octal digits");
                    out.push_str(&format!("\\x{{{value:X}}}"));
                    i += 1 + digits;
                    continue;
                }
                out.push('\\');
            }
            '\\' if matches!(next, Some('p' | 'P')) && text(i + 2, i + 4) == "{^" => {
                // `\p{^Greek}` is RE2 for `\P{Greek}`.
                out.push_str(if next == Some('p') { "\\P{" } else { "\\p{" });
                i += 4;
                continue;
            }
            '\\' if matches!(next, Some('b' | 'B')) && chars.get(i + 2) == Some(&'{') && !in_class => {
                // RE2 reads `\b{2}` as a repeated `\b`, `regex-syntax` as its `\b{start}` syntax.
                out.push_str(&format!("(?:\\{})", next.unwrap_or('b')));
                i += 2;
                continue;
            }
            '\\' if next.is_some_and(|n| n.is_ascii() && !n.is_ascii_alphanumeric()) => {
                // RE2: an escaped ASCII non-word character is that character (`\<`, `\_`, `\ `).
                out.push_str(&regex_syntax::escape(&next.unwrap_or_default().to_string()));
                i += 2;
                continue;
            }
            '\\' => {
                // Any other escape is copied whole (with its braces: `\x{41}`, `\p{Greek}`), so an
                // escaped `[` or `]` does not open or close, nor its `{` look like a repetition.
                let braced = matches!(next, Some('x' | 'p' | 'P')) && chars.get(i + 2) == Some(&'{');
                let len = if braced {
                    chars[i..].iter().position(|&c| c == '}').map_or(chars.len() - i, |e| e + 1)
                } else {
                    2
                };
                out.push_str(&text(i, i + len));
                i += len;
                continue;
            }
            '[' if in_class && next == Some(':') && text(i + 2, chars.len()).contains(":]") => {
                // `[:alpha:]` inside a class (RE2 looks for the `:]` as far as it takes).
                let rest = text(i, chars.len());
                let name_end = rest[2..].find(":]").unwrap_or_default() + 2;
                let name = &rest[2..name_end];
                let class = &rest[..name_end + 2];
                if !POSIX_CLASSES.contains(&name.strip_prefix('^').unwrap_or(name)) {
                    return Err(("RE2 has no such POSIX class", class.to_string()));
                }
                out.push_str(class);
                i += class.chars().count();
                continue;
            }
            '[' | '&' | '~' if in_class => out.push_str(&format!("\\{c}")),
            '-' if in_class && dash_before => out.push_str("\\-"),
            '-' if in_class => {
                out.push('-');
                after_dash = true;
            }
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
            '(' if !in_class && text(i, i + 3) == "(?)" => {
                // RE2: an empty flag group, which changes nothing.
                i += 3;
                continue;
            }
            '{' if !in_class && !is_counted_repetition(&chars[i..]) => {
                // RE2: a `{` that does not start `{n}`, `{n,}` or `{n,m}` is a literal.
                out.push_str("\\{");
            }
            '(' if !in_class && group_name_starts_with_digit(&chars[i..]) => {
                // RE2 allows `(?P<1st>`, `regex-syntax` wants a letter or `_` first.
                let prefix = if chars.get(i + 2) == Some(&'P') { 4 } else { 3 };
                out.push_str(&text(i, i + prefix));
                out.push('_');
                i += prefix;
                continue;
            }
            _ => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

/// Does `rest` start with an RE2 counted repetition: `{n}`, `{n,}` or `{n,m}`, decimal numbers
/// without leading zeros (RE2 reads `{01}` as literal text)?
fn is_counted_repetition(rest: &[char]) -> bool {
    fn number(s: &[char]) -> usize {
        let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits > 1 && s[0] == '0' { 0 } else { digits }
    }
    let mut k = 1;
    let first = number(&rest[k..]);
    if first == 0 {
        return false;
    }
    k += first;
    if rest.get(k) == Some(&',') {
        k += 1;
        k += number(&rest[k..]);
    }
    rest.get(k) == Some(&'}')
}

/// Does `rest` start with `(?P<` or `(?<` and a name whose first character is a digit?
fn group_name_starts_with_digit(rest: &[char]) -> bool {
    let name_start = match rest {
        ['(', '?', 'P', '<', ..] => 4,
        ['(', '?', '<', ..] => 3,
        _ => return false,
    };
    rest.get(name_start).is_some_and(char::is_ascii_digit)
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

    /// Valid RE2 that `regex-syntax` parses as it is.
    const VALID: &[&str] = &[
        "",
        "/api/v[0-9]+/.*",
        r"^(.*,)?[ \t]*okteto-divert[ \t]*=[ \t]*cindy[ \t]*([;,].*)?$",
        r"(?i)chrome|firefox",
        r"(?P<version>v\d+)",
        r"(?<version>v\d+)",
        r"\pL\p{Lu}\p{Greek}\p{Old_Italic}\P{Han}\p{Any}[\p{Latin}\d]",
        r"[[:alpha:]_]+\z",
        r"[[:^space:][:word:]]",
        r"(?U)a+?",
        r"a{1000}",
        r"(a{100}){10}",
        r"(?:a*)*",
        r"\x{41}\x41\t\v",
        r"^*",
    ];

    /// Valid RE2 that `regex-syntax` parses only after the rewrite.
    const VALID_AFTER_REWRITE: &[&str] = &[
        r"\Qa.b*c\E+",
        r"\Q[literal",
        r"\0",
        r"\012x",
        r"\123",
        r"\p{^Greek}",
        r"[a[]",
        r"[]a]",
        r"[a&&b~~]",
        r"\<word\>",
        r"\b{start}",
        r"\b{2}",
        r"\_\%\ ",
        "a{,3}",
        "x{2}{",
        "a{01}",
        "(?P<1st>x)",
        "[a-b-c]",
        "[!--]",
        "[[:]",
    ];

    /// What RE2 rejects: (pattern, part of the reason, the excerpt the reason ends with).
    const INVALID: &[(&str, &str, &str)] = &[
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
        ("((((a{10}){10}){10}){2})", "multiply past", "\"{10}\""),
        ("(?x)a b", "flags i, m, s and U", "\"x\""),
        ("(?u:a)", "flags i, m, s and U", "\"u\""),
        ("[[:foo:]]", "no such POSIX class", "\"[:foo:]\""),
        ("[a--b]", "invalid character class range", "\"a-\\\\-\""),
        (r"\u0041", "\\u", "\"\\\\u0041\""),
        (r"[\u{41}]", "\\u", "\"\\\\u{41}\""),
        (r"\p{Alphabetic}", "general categories", "\"\\\\p{Alphabetic}\""),
        (r"\p{greek}", "general categories", "\"\\\\p{greek}\""),
        (r"\p{sc=Greek}", "general categories", "\"\\\\p{sc=Greek}\""),
        (r"\p{Nope}", "general categories", "\"\\\\p{Nope}\""),
        ("(?P<a.b>x)", "group names", "\"a.b\""),
        (r"\e", "unrecognized escape", "\"\\\\e\""),
        ("x{2,1}", "invalid repetition count range", "\"{2,1}\""),
        ("[z-a]", "invalid character class range", "\"z-a\""),
    ];

    /// Where this check knowingly differs from RE2 (see docs/validation.md): `\C` is valid RE2
    /// but not Go, which istiod validates with; duplicate group names likewise.
    const REJECTED_LIKE_GO: &[&str] = &[r"\C", "(?P<n>a)(?P<n>b)"];

    /// Also a known difference: RE2 lets a repetition follow a flag group and applies it to
    /// what precedes the group (`a(?i)+`); nobody writes that, and it is denied here.
    fn repeats_a_flag_group(pattern: &str) -> bool {
        regex::Regex::new(r"\(\?[a-zA-Z-]*\)[*+?{]").unwrap().is_match(pattern)
    }

    #[test]
    fn valid_re2_passes() {
        for ok in VALID.iter().chain(VALID_AFTER_REWRITE) {
            assert_eq!(problem(ok), None, "{ok:?}");
        }
        let rewritten = |p: &str| rewrite_re2_only_syntax(p).unwrap();
        assert_eq!(rewritten(r"\Qa.b\E"), r"a\.b");
        assert_eq!(rewritten(r"\101"), r"\x{41}");
        assert_eq!(rewritten(r"[\]a[]"), r"[\]a\[]");
        assert_eq!(rewritten(r"\<a{,3}\b{2}(?P<1st>[a--])"), r"<a\{,3}(?:\b){2}(?P<_1st>[a-\-])");
        for same in VALID {
            assert_eq!(&rewritten(same), same);
        }
    }

    #[test]
    fn what_re2_rejects_is_found_with_where() {
        for (pattern, reason, at) in INVALID {
            let got = not_re2(pattern);
            assert!(got.contains(reason) && got.ends_with(&format!("at {at}")), "{pattern:?}: {got}");
        }
        for pattern in REJECTED_LIKE_GO.iter().chain(&["a(?i)+"]) {
            not_re2(pattern);
        }
    }

    /// Patterns built from pieces that exercise every rewrite and check, from a fixed seed.
    fn generated_patterns(count: usize) -> Vec<String> {
        const PIECES: &[&str] = &[
            "a",
            "b",
            "0",
            "1",
            "7",
            "(",
            ")",
            "(?:",
            "(?i)",
            "(?x)",
            "(?P<",
            "(?<",
            ">",
            "[",
            "]",
            "[^",
            "[:alpha:]",
            "[:foo:]",
            "{",
            "}",
            "{2}",
            "{1,3}",
            "{,3}",
            "{1001}",
            ",",
            "*",
            "+",
            "?",
            "|",
            "^",
            "$",
            ".",
            "-",
            "&",
            "~",
            "<",
            "=",
            "!",
            ":",
            "\\",
            "\\Q",
            "\\E",
            "\\b",
            "\\d",
            "\\p{Greek}",
            "\\pL",
            "\\x{41}",
            "\\u",
            "_",
            "(?)",
            "(?P<1",
            "\\8",
            "\\0",
            "\\12",
            "[[:",
            ":]",
            "\\p{^Greek}",
            "\\b{",
            "(?s:",
            "{0}",
            "{01}",
            "\\z",
            "\\A",
            "\\Z",
            "#",
            " ",
            "\\ ",
            "é",
            "\\é",
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        (0..count).map(|_| (0..1 + next(8)).map(|_| PIECES[next(PIECES.len())]).collect()).collect()
    }

    /// Which `patterns` Google's RE2 compiles, asked of RE2 itself through Python `google-re2`
    /// (`pip install google-re2`). `None` when that is not installed, unless
    /// `DIVERT_REQUIRE_RE2=1` says it must be.
    fn re2_compiles(patterns: &[String]) -> Option<Vec<bool>> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        const SCRIPT: &str = "import json, sys, re2\n\
            out = []\n\
            for p in json.load(sys.stdin):\n\
            \x20   try:\n\
            \x20       re2.compile(p); out.append(True)\n\
            \x20   except re2.error:\n\
            \x20       out.append(False)\n\
            print(json.dumps(out))";
        let required = std::env::var("DIVERT_REQUIRE_RE2").is_ok_and(|v| v == "1");
        let probe = Command::new("python3").args(["-c", "import re2"]).output();
        if !probe.as_ref().is_ok_and(|o| o.status.success()) {
            assert!(!required, "python3 with google-re2 is required (DIVERT_REQUIRE_RE2=1)");
            eprintln!("skipped: python3 with google-re2 is not installed");
            return None;
        }
        let mut child = Command::new("python3")
            .args(["-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()) // RE2 logs every parse error
            .spawn()
            .expect("python3 starts");
        child.stdin.take().expect("stdin").write_all(&serde_json::to_vec(patterns).unwrap()).unwrap();
        let output = child.wait_with_output().expect("python3 answers");
        assert!(output.status.success(), "the RE2 script failed");
        Some(serde_json::from_slice(&output.stdout).expect("a JSON list of booleans"))
    }

    #[test]
    fn verdicts_agree_with_re2_itself() {
        let mut patterns: Vec<String> = VALID.iter().chain(VALID_AFTER_REWRITE).map(|p| p.to_string()).collect();
        patterns.extend(INVALID.iter().map(|(p, _, _)| p.to_string()));
        patterns.extend(generated_patterns(3000).into_iter().filter(|p| !repeats_a_flag_group(p)));
        let Some(compiles) = re2_compiles(&patterns) else { return };
        let disagreements: Vec<String> = patterns
            .iter()
            .zip(compiles)
            .filter(|(p, re2_ok)| problem(p).is_none() != *re2_ok)
            .map(|(p, re2_ok)| {
                format!("{p:?}: RE2 {}, here {:?}", if re2_ok { "accepts" } else { "rejects" }, problem(p))
            })
            .collect();
        assert!(disagreements.is_empty(), "{} disagreements:\n{}", disagreements.len(), disagreements.join("\n"));
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
