//! Would RE2 (what Envoy compiles VirtualService regexes with; istiod checks them with Go's
//! `regexp`, the same syntax) accept a pattern?
//!
//! `regex-syntax` parses nearly the same language as RE2. Where the two differ, this module
//! leans towards RE2 so that a regex the mesh accepts is never denied:
//! - RE2 syntax that `regex-syntax` lacks or reads differently is rewritten before parsing:
//!   `\Q...\E` quoting, octal escapes (`\0`, `\012`), escaped punctuation (`\<` is a literal `<`
//!   in RE2), `\b{2}`, a `{` that starts no counted repetition (a literal in RE2), group names
//!   starting with a digit, `(?)`, and surrogate code points (`\x{D800}`, a literal in RE2).
//! - Unicode classes (`\pL`, `\p{Greek}`, `\P{^Greek}`) are checked while rewriting against the
//!   exact names RE2 knows, and character classes are parsed as RE2 parses them, item by item,
//!   and written anew: `[`, `&`, `~` and a `-` after a class (`[\d-z]`) are literals in RE2
//!   (nested classes, set operators and errors in `regex-syntax`); ranges and POSIX class names
//!   are checked here.
//! - `regex-syntax` syntax that RE2 lacks is rejected after parsing: the flags `x`, `u`, `R`,
//!   `\u` escapes, repetition counts above 1000 (also nested ones multiplied), stacked repetition
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
fn rewrite_re2_only_syntax(pattern: &str) -> Result<String, Re2Error> {
    let chars: Vec<char> = pattern.chars().collect();
    let text = |from: usize, to: usize| text(&chars, from, to);
    let mut out = String::with_capacity(pattern.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\\' if next == Some('Q') => {
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
                if let Some((value, len)) = octal_escape(&chars, i) {
                    out.push_str(&format!("\\x{{{value:X}}}"));
                    i += len;
                    continue;
                }
                out.push('\\');
            }
            '\\' if matches!(next, Some('p' | 'P')) => {
                let (class, len) = unicode_class(&chars, i)?;
                out.push_str(&class);
                i += len;
                continue;
            }
            '\\' if matches!(next, Some('b' | 'B')) && chars.get(i + 2) == Some(&'{') => {
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
            '\\' if next == Some('x') && hex_escape(&chars, i).is_some_and(|(value, _)| is_surrogate(value)) => {
                // RE2 takes a surrogate code point (`\x{D800}`) as a literal, `regex-syntax` has
                // no `char` for it; any other literal stands in.
                out.push_str(SURROGATE_STAND_IN);
                i += hex_escape(&chars, i).map_or(2, |(_, len)| len);
                continue;
            }
            '\\' => {
                // Any other escape is copied whole (with its braces: `\x{41}`), so its `{` does not
                // look like a repetition.
                let braced = next == Some('x') && chars.get(i + 2) == Some(&'{');
                let len = if braced {
                    chars[i..].iter().position(|&c| c == '}').map_or(chars.len() - i, |e| e + 1)
                } else {
                    2
                };
                out.push_str(&text(i, i + len));
                i += len;
                continue;
            }
            '[' => {
                let (class, len) = char_class(&chars, i)?;
                out.push_str(&class);
                i += len;
                continue;
            }
            '(' if text(i, i + 3) == "(?)" => {
                // RE2: an empty flag group, which changes nothing.
                i += 3;
                continue;
            }
            '{' if !is_counted_repetition(&chars[i..]) => {
                // RE2: a `{` that does not start `{n}`, `{n,}` or `{n,m}` is a literal.
                out.push_str("\\{");
            }
            '(' if group_name_starts_with_digit(&chars[i..]) => {
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

/// An RE2 error found while rewriting: (reason, the offending text).
type Re2Error = (&'static str, String);

/// `chars[from..to]`, both ends clamped to the length.
fn text(chars: &[char], from: usize, to: usize) -> String {
    chars[from.min(chars.len())..to.min(chars.len())].iter().collect()
}

/// Stands in for a surrogate code point (`\x{D800}`), which RE2 accepts as a literal and
/// `regex-syntax` cannot represent. Only validity is checked, so any literal does.
const SURROGATE_STAND_IN: &str = "\\x{FFFD}";

fn is_surrogate(value: u32) -> bool {
    (0xD800..=0xDFFF).contains(&value)
}

/// RE2's octal escape at `chars[i]` (a `\`): `\0`, `\012`, `\12`; a digit 1-7 alone is not one.
/// (value, length in chars).
fn octal_escape(chars: &[char], i: usize) -> Option<(u32, usize)> {
    let is_octal_digit = |k: usize| matches!(chars.get(k), Some('0'..='7'));
    if chars.get(i + 1) != Some(&'0') && !(is_octal_digit(i + 1) && is_octal_digit(i + 2)) {
        return None;
    }
    let digits = (i + 1..i + 4).take_while(|&k| is_octal_digit(k)).count();
    let value = u32::from_str_radix(&text(chars, i + 1, i + 1 + digits), 8).expect("octal digits");
    Some((value, 1 + digits))
}

/// RE2's hex escape at `chars[i]` (a `\`): `\x41` or `\x{41}` (one or more hex digits, at most
/// `\x{10FFFF}`). (value, length in chars), `None` if RE2 rejects it.
fn hex_escape(chars: &[char], i: usize) -> Option<(u32, usize)> {
    let hex = |k: usize| chars.get(k).and_then(|c| c.to_digit(16));
    match chars.get(i + 2) {
        Some('{') => {
            let digits = chars[i + 3..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
            let mut value = 0u32;
            for k in i + 3..i + 3 + digits {
                value = value * 16 + hex(k)?;
                if value > 0x10FFFF {
                    return None;
                }
            }
            (digits > 0 && chars.get(i + 3 + digits) == Some(&'}')).then_some((value, 4 + digits))
        }
        _ => Some((hex(i + 2)? * 16 + hex(i + 3)?, 4)),
    }
}

/// RE2's `\p{Greek}`, `\pL`, `\P{Greek}`, `\p{^Greek}` at `chars[i]` (a `\`): the class in
/// `regex-syntax` syntax and its length in chars. RE2 looks the name up exactly as written
/// (case-sensitive, no spaces, no `Is` prefix, no script short names).
fn unicode_class(chars: &[char], i: usize) -> Result<(String, usize), Re2Error> {
    let unknown = "RE2 knows only general categories (\\p{Lu}), scripts by their long names (\\p{Greek}) and Any \
                   as Unicode classes";
    let (name, len) = match chars.get(i + 2) {
        Some('{') => match chars[i + 3..].iter().position(|&c| c == '}') {
            Some(end) => (text(chars, i + 3, i + 3 + end), end + 4),
            None => return Err(("unclosed Unicode class (no })", text(chars, i, chars.len()))),
        },
        Some(&one) => (one.to_string(), 3),
        None => return Err((unknown, text(chars, i, i + 2))),
    };
    let mut negated = chars[i + 1] == 'P';
    let name = match name.strip_prefix('^') {
        Some(name) => {
            negated = !negated;
            name
        }
        None => &name,
    };
    if !(name == "Any" || GENERAL_CATEGORIES.contains(&name) || RE2_SCRIPTS.binary_search(&name).is_ok()) {
        return Err((unknown, text(chars, i, i + len)));
    }
    let p = if negated { "\\P" } else { "\\p" };
    let class = if len == 3 { format!("{p}{name}") } else { format!("{p}{{{name}}}") };
    // A class RE2 knows and `regex-syntax` cannot build (`\p{Cs}`, surrogates; a script newer than
    // `regex-syntax`'s Unicode tables) is valid: a class it can build stands in.
    let builds = regex_syntax::Parser::new().parse(&class).is_ok();
    Ok((if builds { class } else { format!("{p}{{Any}}") }, len))
}

/// RE2's character class at `chars[start]` (a `[`), parsed as RE2 does (`ParseCharClass`): the
/// class in `regex-syntax` syntax and its length in chars. Each item is written so that
/// `regex-syntax` reads it as RE2 does: a `[`, `&`, `~` or `-` is a literal in RE2 (escaped
/// here; nested classes and set operators in `regex-syntax`), a `-` after a class (`[\d-z]`)
/// is a literal, and ranges are checked here, so surrogates (`\x{D800}`) can be replaced.
fn char_class(chars: &[char], start: usize) -> Result<(String, usize), Re2Error> {
    let mut out = String::from("[");
    let mut i = start + 1;
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    // `]` right after `[` or `[^` is a literal.
    let mut first = true;
    loop {
        let rest = &chars[i.min(chars.len())..];
        match rest {
            [] => return Err(("missing ] to close the character class", text(chars, start, chars.len()))),
            [']', ..] if !first => {
                out.push(']');
                return Ok((out, i + 1 - start));
            }
            ['[', ':', _, ..] => {
                // `[:alpha:]`: RE2 looks for the `:]` as far as it takes, then wants a name it knows.
                if let Some(end) = rest.windows(2).skip(2).position(|w| w == [':', ']']) {
                    let class = text(chars, i, i + end + 4);
                    let name = &class[2..class.len() - 2];
                    if !POSIX_CLASSES.contains(&name.strip_prefix('^').unwrap_or(name)) {
                        return Err(("RE2 has no such POSIX class", class));
                    }
                    out.push_str(&class);
                    i += end + 4;
                    first = false;
                    continue;
                }
            }
            ['\\', 'p' | 'P', _, ..] => {
                let (class, len) = unicode_class(chars, i)?;
                out.push_str(&class);
                i += len;
                first = false;
                continue;
            }
            ['\\', 'd' | 'D' | 's' | 'S' | 'w' | 'W', ..] => {
                out.push_str(&text(chars, i, i + 2));
                i += 2;
                first = false;
                continue;
            }
            _ => {}
        }
        first = false;
        // A character, or a range `lo-hi` (a `-` before `]` is a literal).
        let (lo, lo_len) = class_char(chars, i)?;
        let dash = i + lo_len;
        if chars.get(dash) == Some(&'-') && chars.get(dash + 1).is_some_and(|&c| c != ']') {
            let (hi, hi_len) = class_char(chars, dash + 1)?;
            let end = dash + 1 + hi_len;
            if hi < lo {
                return Err(("invalid character class range", text(chars, i, end)));
            }
            // Without the surrogates; a range of surrogates only becomes one stand-in literal.
            let lo_text = if is_surrogate(lo) { "\\x{E000}".to_string() } else { class_text(chars, i, lo_len) };
            let hi_text = if is_surrogate(hi) { "\\x{D7FF}".to_string() } else { class_text(chars, dash + 1, hi_len) };
            if is_surrogate(lo) && is_surrogate(hi) {
                out.push_str(SURROGATE_STAND_IN);
            } else {
                out.push_str(&format!("{lo_text}-{hi_text}"));
            }
            i = end;
        } else {
            out.push_str(&if is_surrogate(lo) { SURROGATE_STAND_IN.to_string() } else { class_text(chars, i, lo_len) });
            i = dash;
        }
    }
}

/// The class character [`class_char`] read at `chars[i..i + len]` (not a surrogate), written so
/// that `regex-syntax` reads the same character.
fn class_text(chars: &[char], i: usize, len: usize) -> String {
    match (chars[i], chars.get(i + 1)) {
        ('\\', Some('0'..='7')) => format!("\\x{{{:X}}}", octal_escape(chars, i).map_or(0, |(value, _)| value)),
        ('\\', Some(&c)) if c.is_ascii() && !c.is_ascii_alphanumeric() => regex_syntax::escape(&c.to_string()),
        ('\\', _) => text(chars, i, i + len),
        (c, _) => regex_syntax::escape(&c.to_string()),
    }
}

/// A character in a class at `chars[i]`, as RE2's `ParseCCCharacter`: itself, or an escape
/// (`\n`, `\x41`, `\x{41}`, `\012`, `\-`). (code point, length in chars).
fn class_char(chars: &[char], i: usize) -> Result<(u32, usize), Re2Error> {
    let Some(&c) = chars.get(i) else {
        return Err(("missing ] to close the character class", text(chars, i, i)));
    };
    if c != '\\' {
        return Ok((c as u32, 1));
    }
    let bad = |reason| Err((reason, text(chars, i, i + 2)));
    match chars.get(i + 1) {
        None => bad("trailing backslash at end of expression"),
        Some(&e) if e.is_ascii() && !e.is_ascii_alphanumeric() => Ok((e as u32, 2)),
        Some('0'..='7') => octal_escape(chars, i).map_or_else(|| bad("invalid escape sequence"), Ok),
        Some('x') => hex_escape(chars, i).ok_or_else(|| {
            let braced = chars.get(i + 2) == Some(&'{');
            let len =
                if braced { chars[i..].iter().position(|&c| c == '}').map_or(chars.len() - i, |e| e + 1) } else { 4 };
            ("invalid escape sequence", text(chars, i, i + len))
        }),
        Some('n') => Ok(('\n' as u32, 2)),
        Some('r') => Ok(('\r' as u32, 2)),
        Some('t') => Ok(('\t' as u32, 2)),
        Some('a') => Ok((0x07, 2)),
        Some('f') => Ok((0x0C, 2)),
        Some('v') => Ok((0x0B, 2)),
        Some('u' | 'U') => {
            let braced = chars.get(i + 2) == Some(&'{');
            let len = if braced {
                chars[i..].iter().position(|&c| c == '}').map_or(chars.len() - i, |e| e + 1)
            } else {
                2 + chars[i + 2..].iter().take(8).take_while(|c| c.is_ascii_hexdigit()).count()
            };
            Err(("RE2 has no \\u or \\U escapes (write \\x{...})", text(chars, i, i + len)))
        }
        Some(_) => bad("invalid escape sequence"),
    }
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

/// General categories RE2 knows by their one- and two-letter names (`\pL`, `\p{L}`, `\p{Lu}`):
/// no `Cn`, `LC`, `L&`, and no long names (`Letter`).
const GENERAL_CATEGORIES: &[&str] = &[
    "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn", "N", "Nd", "Nl", "No", "P",
    "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm", "So", "Z", "Zl", "Zp", "Zs",
];

/// The scripts RE2 knows, exactly as RE2 spells them (it compares case-sensitively; no short
/// names like `Grek`, no `Is` prefix), sorted for `binary_search`. Produced by compiling
/// `\p{Name}` with Google's RE2 (Python `google-re2` 1.1.20251105) for every candidate name: the
/// scripts of `regex-syntax` 0.8.12's `unicode_tables/script.rs` (Unicode 16.0), every name-like
/// string in that RE2 build's library, and every one- and two-letter name; the ones RE2 compiles
/// and that are not general categories are listed. The Unicode 16 scripts (`Garay`, `Todhri`,
/// ...) are missing: that RE2 does not know them yet.
#[rustfmt::skip]
const RE2_SCRIPTS: &[&str] = &[
    "Adlam", "Ahom", "Anatolian_Hieroglyphs", "Arabic", "Armenian", "Avestan", "Balinese", "Bamum", "Bassa_Vah",
    "Batak", "Bengali", "Bhaiksuki", "Bopomofo", "Brahmi", "Braille", "Buginese", "Buhid", "Canadian_Aboriginal",
    "Carian", "Caucasian_Albanian", "Chakma", "Cham", "Cherokee", "Chorasmian", "Common", "Coptic", "Cuneiform",
    "Cypriot", "Cypro_Minoan", "Cyrillic", "Deseret", "Devanagari", "Dives_Akuru", "Dogra", "Duployan",
    "Egyptian_Hieroglyphs", "Elbasan", "Elymaic", "Ethiopic", "Georgian", "Glagolitic", "Gothic", "Grantha", "Greek",
    "Gujarati", "Gunjala_Gondi", "Gurmukhi", "Han", "Hangul", "Hanifi_Rohingya", "Hanunoo", "Hatran", "Hebrew",
    "Hiragana", "Imperial_Aramaic", "Inherited", "Inscriptional_Pahlavi", "Inscriptional_Parthian", "Javanese",
    "Kaithi", "Kannada", "Katakana", "Kawi", "Kayah_Li", "Kharoshthi", "Khitan_Small_Script", "Khmer", "Khojki",
    "Khudawadi", "Lao", "Latin", "Lepcha", "Limbu", "Linear_A", "Linear_B", "Lisu", "Lycian", "Lydian", "Mahajani",
    "Makasar", "Malayalam", "Mandaic", "Manichaean", "Marchen", "Masaram_Gondi", "Medefaidrin", "Meetei_Mayek",
    "Mende_Kikakui", "Meroitic_Cursive", "Meroitic_Hieroglyphs", "Miao", "Modi", "Mongolian", "Mro", "Multani",
    "Myanmar", "Nabataean", "Nag_Mundari", "Nandinagari", "New_Tai_Lue", "Newa", "Nko", "Nushu",
    "Nyiakeng_Puachue_Hmong", "Ogham", "Ol_Chiki", "Old_Hungarian", "Old_Italic", "Old_North_Arabian", "Old_Permic",
    "Old_Persian", "Old_Sogdian", "Old_South_Arabian", "Old_Turkic", "Old_Uyghur", "Oriya", "Osage", "Osmanya",
    "Pahawh_Hmong", "Palmyrene", "Pau_Cin_Hau", "Phags_Pa", "Phoenician", "Psalter_Pahlavi", "Rejang", "Runic",
    "Samaritan", "Saurashtra", "Sharada", "Shavian", "Siddham", "SignWriting", "Sinhala", "Sogdian", "Sora_Sompeng",
    "Soyombo", "Sundanese", "Syloti_Nagri", "Syriac", "Tagalog", "Tagbanwa", "Tai_Le", "Tai_Tham", "Tai_Viet", "Takri",
    "Tamil", "Tangsa", "Tangut", "Telugu", "Thaana", "Thai", "Tibetan", "Tifinagh", "Tirhuta", "Toto", "Ugaritic",
    "Vai", "Vithkuqi", "Wancho", "Warang_Citi", "Yezidi", "Yi", "Zanabazar_Square",
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

    /// Every `\p` has been checked and written anew by [`unicode_class`]; this only makes sure
    /// no other kind (`\p{sc=Greek}`) gets through.
    fn unicode_class(class: &ast::ClassUnicode) -> Result<(), Found> {
        let known = match &class.kind {
            ast::ClassUnicodeKind::OneLetter(letter) => GENERAL_CATEGORIES.contains(&letter.to_string().as_str()),
            ast::ClassUnicodeKind::Named(name) => {
                name == "Any"
                    || GENERAL_CATEGORIES.contains(&name.as_str())
                    || RE2_SCRIPTS.binary_search(&&**name).is_ok()
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
        // Every one-letter category RE2 has, scripts by their long names, also inside classes.
        r"\pC\pL\pM\pN\pP\pS\pZ\PL\p{Common}\p{Inherited}\p{Braille}\p{Vithkuqi}\p{Yi}\p{Nag_Mundari}",
        r"[\p{Greek}][^\P{Greek}\pN]",
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
        // Negated by `^` inside the braces, also twice and inside a class.
        r"\P{^Greek}[\p{^Greek}][^\P{^Lu}]",
        // A `-` after a class is a literal in RE2, or starts a range of its own.
        r"[\d-z]",
        r"[\w-\d]",
        r"[\d--/]",
        r"[[:alpha:]-z]",
        r"[\pL-z]",
        // Surrogates: RE2 takes them as code points, `regex-syntax` has no `char` for them.
        r"\x{D800}",
        r"[\x{D800}-\x{DFFF}]",
        r"[\x{D7FF}-\x{D800}]",
        r"[\x{DFFF}-\x{E000}]",
        r"\p{Cs}",
        r"[\P{Cs}]",
        r"[ \t\x41\x{42}\101-\132\]\-]",
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
        ("[a--b]", "invalid character class range", "\"a--\""),
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
        // Unicode classes: RE2 compares names exactly; no `Is` prefix, no short script names,
        // no one-letter category it lacks; also negated and inside classes.
        (r"\p{IsGreek}", "general categories", "\"\\\\p{IsGreek}\""),
        (r"\p{GREEK}", "general categories", "\"\\\\p{GREEK}\""),
        (r"\p{Is_Greek}", "general categories", "\"\\\\p{Is_Greek}\""),
        (r"\p{Grek}", "general categories", "\"\\\\p{Grek}\""),
        (r"\p{Latn}", "general categories", "\"\\\\p{Latn}\""),
        (r"\p{Hani}", "general categories", "\"\\\\p{Hani}\""),
        (r"\p{Zyyy}", "general categories", "\"\\\\p{Zyyy}\""),
        (r"\p{Zinh}", "general categories", "\"\\\\p{Zinh}\""),
        (r"\p{Brai}", "general categories", "\"\\\\p{Brai}\""),
        (r"\p{Vith}", "general categories", "\"\\\\p{Vith}\""),
        (r"\pl", "general categories", "\"\\\\pl\""),
        (r"\pX", "general categories", "\"\\\\pX\""),
        (r"\p{Greek }", "general categories", "\"\\\\p{Greek }\""),
        (r"\p{Cn}", "general categories", "\"\\\\p{Cn}\""),
        (r"\p{LC}", "general categories", "\"\\\\p{LC}\""),
        (r"\p{Letter}", "general categories", "\"\\\\p{Letter}\""),
        (r"\p{Garay}", "general categories", "\"\\\\p{Garay}\""),
        (r"\P{Grek}", "general categories", "\"\\\\P{Grek}\""),
        (r"\p{^Latn}", "general categories", "\"\\\\p{^Latn}\""),
        (r"[\p{Grek}]", "general categories", "\"\\\\p{Grek}\""),
        (r"[^\P{IsGreek}]", "general categories", "\"\\\\P{IsGreek}\""),
        (r"\p{Greek", "unclosed Unicode class", "\"\\\\p{Greek\""),
        (r"[\p{Gr]eek}]", "general categories", "\"\\\\p{Gr]eek}\""),
        // Class edges: a class is no range end; reversed surrogate ranges; past U+10FFFF.
        (r"[a-\d]", "invalid escape", "\"\\\\d\""),
        (r"[\x{DA00}-\x{D900}]", "invalid character class range", "\"\\\\x{DA00}-\\\\x{D900}\""),
        (r"[\x{D800}-\x{D7FF}]", "invalid character class range", "\"\\\\x{D800}-\\\\x{D7FF}\""),
        (r"\x{110000}", "not a Unicode scalar value", "\"110000\""),
        (r"[\b]", "invalid escape", "\"\\\\b\""),
        ("[]", "missing ]", "\"[]\""),
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
        assert_eq!(rewritten(r"\<a{,3}\b{2}(?P<1st>[!--])"), r"<a\{,3}(?:\b){2}(?P<_1st>[!-\-])");
        assert_eq!(rewritten(r"[\d-z\101\p{^Greek}]\P{^Lu}"), r"[\d\-z\x{41}\P{Greek}]\p{Lu}");
        assert_eq!(
            rewritten(r"\x{D800}[\x{D800}\x{D7FF}-\x{DFFF}\x{D800}-\x{DFFF}]"),
            r"\x{FFFD}[\x{FFFD}\x{D7FF}-\x{D7FF}\x{FFFD}]"
        );
        assert_eq!(rewritten(r"\p{Cs}[\P{Cs}]"), r"\p{Any}[\P{Any}]");
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
            "\\p{Grek}",
            "\\P{^Greek}",
            "\\pl",
            "\\p{Cs}",
            "\\w",
            "\\x{D800}",
            "\\x{DFFF}",
            "\\x{E000}",
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

    /// Asks RE2 about every pattern and fails on any verdict that differs from [`problem`]'s
    /// (nothing is asked when RE2 is not installed; see [`re2_compiles`]).
    fn assert_verdicts_agree_with_re2(patterns: &[String]) {
        let Some(compiles) = re2_compiles(patterns) else { return };
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
    fn verdicts_agree_with_re2_itself() {
        let mut patterns: Vec<String> = VALID.iter().chain(VALID_AFTER_REWRITE).map(|p| p.to_string()).collect();
        patterns.extend(INVALID.iter().map(|(p, _, _)| p.to_string()));
        patterns.extend(generated_patterns(3000).into_iter().filter(|p| !repeats_a_flag_group(p)));
        assert_verdicts_agree_with_re2(&patterns);
    }

    #[test]
    fn script_names_are_sorted_for_binary_search() {
        assert!(RE2_SCRIPTS.windows(2).all(|w| w[0] < w[1]));
    }

    /// Every Unicode class name RE2 knows, and near misses (other spellings, short script
    /// names, newer scripts, categories RE2 lacks), in every form: RE2's verdict for each.
    #[test]
    fn unicode_class_verdicts_agree_with_re2_itself() {
        const NEAR_MISSES: &[&str] = &[
            "Grek",
            "Latn",
            "Hani",
            "Zyyy",
            "Zinh",
            "Zzzz",
            "Brai",
            "Vith",
            "Unknown",
            "Garay",
            "Todhri",
            "Sunuwar",
            "Cn",
            "LC",
            "L&",
            "Letter",
            "Uppercase_Letter",
            "Alphabetic",
            "sc=Greek",
            "Script=Latin",
            "",
            "^",
            " ",
        ];
        let names = RE2_SCRIPTS.iter().chain(GENERAL_CATEGORIES).chain(&["Any"]).chain(NEAR_MISSES);
        let spellings = names.flat_map(|&n| {
            [n.to_string(), n.to_lowercase(), n.to_uppercase(), format!("Is{n}"), format!("Is_{n}"), format!("{n} ")]
        });
        let forms =
            [r"\p{N}", r"\P{N}", r"\p{^N}", r"\P{^N}", r"[\p{N}]", r"[^\P{^N}a-z]", r"[\p{N}-z]", r"(?i)\p{N}+"];
        let mut patterns: Vec<String> = spellings.flat_map(|name| forms.map(|form| form.replace('N', &name))).collect();
        patterns.extend((b'!'..=b'~').flat_map(|c| [format!("\\p{}", c as char), format!("[\\P{}]", c as char)]));
        patterns.extend(["\\pé", "\\p", "\\p{", "[\\p]", r"\p{Greek", r"[\p{Gr]eek}]"].map(String::from));
        assert_verdicts_agree_with_re2(&patterns);
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
