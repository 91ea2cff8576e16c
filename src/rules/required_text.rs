//! Reading a regex (RE2 syntax; nginx's PCRE reads the same way for what is used here) as the
//! characters it requires one after the other, for the wrong-form checks of SPEC §2: does a
//! `baggage` regex look for `okteto-divert:<key>` or `baggage.okteto-divert=<key>`, however it
//! spells them (`okteto-divert[:]cindy`, `okteto\-divert\s*\x3a`, `okteto-divert(?::)`)?
//!
//! Only what a pattern *requires* counts, that is what every string it matches contains: a
//! piece that may be absent (`:?`, `(?:…)?`), an alternation inside a group (`(?::|=)`) or a
//! class that also accepts the right character (`[:=]`) accepts the right form too, and is not
//! a wrong form; a pattern of several alternatives (`a|b`) requires what each of them requires.
//! So P(key), the pattern the webhook itself writes, and any pattern tolerant of both spellings
//! read as right. Where the reading cannot tell (a construct it does not follow), it stops
//! there and finds nothing: it never reads a requirement the pattern does not have.

/// One position of the pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Atom {
    /// Exactly one of these characters: a literal, an escape, a small class.
    OneOf(Vec<char>),
    /// One of many characters: `.`, `\w`, a negated or large class.
    Wide,
    /// Optional whitespace (`\s*`, `[ \t]+`, ` ?`), or one whitespace character: a value's
    /// optional whitespace around `=`/`:`, skipped when looking for the forms.
    Space,
    /// Something the forms are not looked for across: `|`, an optional or counted piece.
    Break,
    /// Group brackets, kept until a quantifier after `)` has been seen.
    Open,
    Close,
    /// `|`, turned into a break of the whole group (or of the pattern's top level).
    Alt,
}

/// Whitespace a `baggage` value may hold around its separators (and `\s`'s other members).
const WHITESPACE: [char; 6] = [' ', '\t', '\n', '\r', '\u{b}', '\u{c}'];
/// A class of more members than this is read as [`Atom::Wide`].
const SMALL_CLASS: usize = 32;

/// Does every match of `pattern` contain `okteto-divert`, optional whitespace and `:`?
pub fn requires_colon_form(pattern: &str) -> bool {
    requires(pattern, colon_form_at)
}

/// Does every match of `pattern` contain `baggage`, any character (the `.`), `okteto-divert`,
/// optional whitespace and `=`?
pub fn requires_legacy_form(pattern: &str) -> bool {
    requires(pattern, legacy_form_at)
}

fn requires(pattern: &str, form_at: fn(&[Atom], usize, bool) -> bool) -> bool {
    let nocase = case_insensitive(pattern);
    alternatives(pattern)
        .iter()
        .all(|segments| segments.iter().any(|atoms| (0..atoms.len()).any(|i| form_at(atoms, i, nocase))))
}

fn case_insensitive(pattern: &str) -> bool {
    // `(?i)` or `(?i:` anywhere (also `(?si)`): letters then match in either case, so the
    // pattern requires the form in some spelling of its case; read as requiring it.
    pattern.match_indices("(?").any(|(at, _)| {
        pattern[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphabetic() || *c == '-')
            .take_while(|c| *c != '-')
            .any(|c| c == 'i')
    })
}

fn colon_form_at(atoms: &[Atom], start: usize, nocase: bool) -> bool {
    let Some(after) = word_at(atoms, start, "okteto-divert", nocase) else { return false };
    let next = atoms[after..].iter().find(|a| **a != Atom::Space);
    matches!(next, Some(Atom::OneOf(set)) if set.contains(&':') && !set.contains(&'='))
}

fn legacy_form_at(atoms: &[Atom], start: usize, nocase: bool) -> bool {
    let Some(after) = word_at(atoms, start, "baggage", nocase) else { return false };
    let dot = match atoms.get(after) {
        Some(Atom::Wide) => true,
        Some(Atom::OneOf(set)) => set.contains(&'.'),
        _ => false,
    };
    let Some(after) = dot.then(|| word_at(atoms, after + 1, "okteto-divert", nocase)).flatten() else { return false };
    let next = atoms[after..].iter().find(|a| **a != Atom::Space);
    matches!(next, Some(Atom::OneOf(set)) if set.contains(&'='))
}

/// The index after `word` if the atoms from `start` spell it (each atom a set holding the
/// letter; `-` may also be a wide atom).
fn word_at(atoms: &[Atom], start: usize, word: &str, nocase: bool) -> Option<usize> {
    let mut i = start;
    for c in word.chars() {
        let fits = match atoms.get(i)? {
            Atom::OneOf(set) => set.iter().any(|s| *s == c || (nocase && s.eq_ignore_ascii_case(&c))),
            Atom::Wide => c == '-',
            _ => false,
        };
        if !fits {
            return None;
        }
        i += 1;
    }
    Some(i)
}

/// The pattern's top-level alternatives, each as its runs of atoms between breaks; groups
/// resolved: brackets dropped, a group holding an alternation made one break.
fn alternatives(pattern: &str) -> Vec<Vec<Vec<Atom>>> {
    let mut resolved: Vec<Atom> = Vec::new();
    // Per open group: where it starts in `resolved`, and whether it holds a `|`.
    let mut open: Vec<(usize, bool)> = Vec::new();
    for atom in atoms(pattern) {
        match atom {
            Atom::Open => open.push((resolved.len(), false)),
            Atom::Close => {
                if let Some((start, true)) = open.pop() {
                    resolved.truncate(start);
                    resolved.push(Atom::Break);
                }
            }
            Atom::Alt => match open.last_mut() {
                Some((_, has_alt)) => *has_alt = true,
                None => resolved.push(Atom::Alt),
            },
            atom => resolved.push(atom),
        }
    }
    // A group left open holding a `|`: malformed; nothing in it counts.
    if let Some(&(start, _)) = open.iter().find(|(_, has_alt)| *has_alt) {
        resolved.truncate(start);
    }
    let mut alternatives = vec![vec![Vec::new()]];
    for atom in resolved {
        match atom {
            Atom::Alt => alternatives.push(vec![Vec::new()]),
            Atom::Break => alternatives.last_mut().expect("one alternative").push(Vec::new()),
            atom => alternatives.last_mut().expect("one alternative").last_mut().expect("one run").push(atom),
        }
    }
    alternatives
}

/// The atoms of `pattern`. Malformed input gives some atoms, never a panic: the syntax itself
/// is judged elsewhere (the regex checks of SPEC §7).
fn atoms(pattern: &str) -> Vec<Atom> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out: Vec<Atom> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '\\' if chars.get(i) == Some(&'Q') => {
                // `\Q…\E`: literal text.
                i += 1;
                while i < chars.len() && !(chars[i] == '\\' && chars.get(i + 1) == Some(&'E')) {
                    out.push(Atom::OneOf(vec![chars[i]]));
                    i += 1;
                }
                i += 2;
            }
            '\\' => {
                let (atom, next) = escape(&chars, i, false);
                i = next;
                if let Some(atom) = atom {
                    out.push(atom);
                }
            }
            '[' => {
                let (atom, next) = class(&chars, i);
                i = next;
                out.push(atom);
            }
            '.' => out.push(Atom::Wide),
            '^' | '$' => {}
            '|' => out.push(Atom::Alt),
            '(' => {
                // `(?flags)` alone changes no position; other groups open.
                if chars.get(i) == Some(&'?') {
                    let flags_end = chars[i + 1..].iter().position(|c| !(c.is_ascii_alphabetic() || *c == '-'));
                    if let Some(end) = flags_end
                        && chars.get(i + 1 + end) == Some(&')')
                    {
                        i += end + 2;
                        continue;
                    }
                }
                // Skip `?:`, `?P<name>`, `?<name>`, `?flags:`.
                if chars.get(i) == Some(&'?') {
                    match chars[i..].iter().position(|c| matches!(c, ':' | '>')) {
                        Some(end) => i += end + 1,
                        None => i = chars.len(),
                    }
                }
                out.push(Atom::Open);
            }
            ')' => out.push(Atom::Close),
            '*' | '+' | '?' => {
                let min = usize::from(c == '+');
                let max = if c == '?' { Some(1) } else { None };
                i = skip_lazy_or_possessive(&chars, i);
                quantify(&mut out, min, max);
            }
            '{' => match counted(&chars, i) {
                Some((min, max, next)) => {
                    i = skip_lazy_or_possessive(&chars, next);
                    quantify(&mut out, min, max);
                }
                None => out.push(Atom::OneOf(vec!['{'])),
            },
            c if WHITESPACE.contains(&c) => out.push(Atom::Space),
            c => out.push(Atom::OneOf(vec![c])),
        }
    }
    out
}

fn skip_lazy_or_possessive(chars: &[char], i: usize) -> usize {
    if matches!(chars.get(i), Some('?' | '+')) { i + 1 } else { i }
}

/// `{n}`, `{n,}`, `{n,m}` starting after the `{` at `i`: (min, max, index after `}`).
fn counted(chars: &[char], i: usize) -> Option<(usize, Option<usize>, usize)> {
    let end = i + chars[i..].iter().position(|c| *c == '}')?;
    let inner: String = chars[i..end].iter().collect();
    let (min, max) = match inner.split_once(',') {
        None => {
            let n = inner.parse().ok()?;
            (n, Some(n))
        }
        Some((min, "")) => (min.parse().ok()?, None),
        Some((min, max)) => (min.parse().ok()?, Some(max.parse().ok()?)),
    };
    Some((min, max, end + 1))
}

/// Applies a quantifier to the last atom (or group) of `out`.
fn quantify(out: &mut Vec<Atom>, min: usize, max: Option<usize>) {
    let start = match out.last() {
        Some(Atom::Close) => {
            // The matching `Open`.
            let mut depth = 0;
            let mut at = None;
            for (k, atom) in out.iter().enumerate().rev() {
                match atom {
                    Atom::Close => depth += 1,
                    Atom::Open => {
                        depth -= 1;
                        if depth == 0 {
                            at = Some(k);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            match at {
                Some(at) => at,
                None => return out.push(Atom::Break),
            }
        }
        Some(_) => out.len() - 1,
        None => return,
    };
    let piece: Vec<Atom> = out.drain(start..).collect();
    let is_space = |a: &Atom| match a {
        Atom::Space | Atom::Open | Atom::Close => true,
        Atom::OneOf(set) => set.iter().all(|c| WHITESPACE.contains(c)),
        _ => false,
    };
    if piece.iter().all(is_space) {
        out.push(Atom::Space);
    } else if min == 1 && max == Some(1) {
        out.extend(piece);
    } else if min >= 1 && max.is_none() && piece.len() == 1 {
        // `:+`: at least one, so the character is required right there.
        out.extend(piece);
    } else {
        out.push(Atom::Break);
    }
}

/// The atom of the escape whose letter is at `i` (after the backslash), and the index after it.
/// `None` for zero-width escapes (`\b`, `\A`, …).
fn escape(chars: &[char], i: usize, in_class: bool) -> (Option<Atom>, usize) {
    let Some(&c) = chars.get(i) else { return (Some(Atom::OneOf(vec!['\\'])), i) };
    let one = |c: char| Some(Atom::OneOf(vec![c]));
    match c {
        c if c.is_ascii_punctuation() => (one(c), i + 1),
        't' => (one('\t'), i + 1),
        'n' => (one('\n'), i + 1),
        'r' => (one('\r'), i + 1),
        'f' => (one('\u{c}'), i + 1),
        'v' => (one('\u{b}'), i + 1),
        'a' => (one('\u{7}'), i + 1),
        's' => (Some(Atom::OneOf(WHITESPACE.to_vec())), i + 1),
        'x' => {
            let (digits, next) = match chars.get(i + 1) {
                Some('{') => match chars[i + 2..].iter().position(|c| *c == '}') {
                    Some(len) => (chars[i + 2..i + 2 + len].iter().collect::<String>(), i + 3 + len),
                    None => (String::new(), chars.len()),
                },
                _ => (chars[i + 1..chars.len().min(i + 3)].iter().collect::<String>(), (i + 3).min(chars.len())),
            };
            match u32::from_str_radix(&digits, 16).ok().and_then(char::from_u32) {
                Some(c) => (one(c), next),
                None => (Some(Atom::Wide), next),
            }
        }
        '0'..='7' => {
            let len = chars[i..].iter().take(3).take_while(|c| ('0'..='7').contains(*c)).count();
            let digits: String = chars[i..i + len].iter().collect();
            match u32::from_str_radix(&digits, 8).ok().and_then(char::from_u32) {
                Some(c) => (one(c), i + len),
                None => (Some(Atom::Wide), i + len),
            }
        }
        'p' | 'P' => {
            let next = if chars.get(i + 1) == Some(&'{') {
                chars[i..].iter().position(|c| *c == '}').map_or(chars.len(), |len| i + len + 1)
            } else {
                i + 2
            };
            (Some(Atom::Wide), next.min(chars.len()))
        }
        'b' | 'B' | 'A' | 'z' | 'E' if !in_class => (None, i + 1),
        _ => (Some(Atom::Wide), i + 1),
    }
}

/// The class whose first character is at `i` (after the `[`), and the index after its `]`.
fn class(chars: &[char], mut i: usize) -> (Atom, usize) {
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut members: Vec<char> = Vec::new();
    let mut wide = negated;
    let mut first = true;
    let mut previous: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        if c == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        // A range: the previous single character, `-`, and a next one that is not `]`.
        if c == '-'
            && let Some(low) = previous
            && let Some(&high_char) = chars.get(i + 1)
            && high_char != ']'
        {
            let (high, next) = if high_char == '\\' {
                match escape(chars, i + 2, true) {
                    (Some(Atom::OneOf(set)), next) if set.len() == 1 => (Some(set[0]), next),
                    (_, next) => (None, next),
                }
            } else {
                (Some(high_char), i + 2)
            };
            i = next;
            previous = None;
            match high {
                Some(high) if high >= low && (high as u32 - low as u32) as usize <= SMALL_CLASS => {
                    members.extend((low..=high).skip(1));
                }
                _ => wide = true,
            }
            continue;
        }
        if c == '[' && chars.get(i + 1) == Some(&':') {
            // `[:alpha:]`
            match chars[i + 2..].windows(2).position(|w| w == [':', ']']) {
                Some(len) => i += len + 4,
                None => i += 1,
            }
            wide = true;
            previous = None;
            continue;
        }
        if c == '\\' {
            let (atom, next) = escape(chars, i + 1, true);
            i = next;
            match atom {
                Some(Atom::OneOf(set)) => {
                    previous = (set.len() == 1).then(|| set[0]);
                    members.extend(set);
                }
                _ => {
                    wide = true;
                    previous = None;
                }
            }
            continue;
        }
        members.push(c);
        previous = Some(c);
        i += 1;
    }
    if wide || members.len() > SMALL_CLASS {
        return (Atom::Wide, i);
    }
    members.sort_unstable();
    members.dedup();
    (Atom::OneOf(members), i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_that_require_the_colon_form() {
        for pattern in [
            "okteto-divert:cindy",
            ".*okteto-divert\\s*:cindy",
            "okteto\\-divert\\:\\s+cindy",
            "okteto-divert[:]cindy",
            "okteto-divert :cindy",
            "okteto-divert[ ]*[:]cindy",
            "okteto-divert[ \\t]*(?::)[ \\t]*cindy",
            "okteto-divert\\x3acindy",
            "okteto-divert\\x{3A}cindy",
            "okteto-divert\\072cindy",
            "(?:.*,)?okteto-divert:+cindy",
            "^okteto-divert(:)cindy$",
            "(?i)OKTETO-DIVERT:cindy",
            "okteto[-]divert[:]",
            "okteto-divert:a|okteto-divert:b",
            "\\Qokteto-divert:\\E.*",
            "(?:x|y)okteto-divert:",
        ] {
            assert!(requires_colon_form(pattern), "{pattern}");
        }
    }

    #[test]
    fn patterns_that_do_not() {
        for pattern in [
            "(?:.*,)?[ \\t]*okteto-divert[ \\t]*=[ \\t]*cindy[ \\t]*(?:[;,].*)?",
            ".*okteto-divert=cindy.*",
            "okteto-divert[:=]cindy",
            "okteto-divert(?::|=)cindy",
            "okteto-divert:?cindy",
            "okteto-divert(?::)?cindy",
            "okteto-divert.cindy",
            "okteto-divert[^=]cindy",
            "OKTETO-DIVERT:cindy",
            "a=1|okteto-divert:x",
            "(?:okteto-divert:x|y)",
            "\\Qokteto-divert\\E=:",
            "okteto-diver:t",
            "a:b",
            "okteto-divert=a:b",
            "",
            "[",
            "\\",
            "(?",
            "x{2,",
        ] {
            assert!(!requires_colon_form(pattern), "{pattern}");
        }
    }

    #[test]
    fn patterns_that_require_the_legacy_form() {
        for pattern in [
            ".*baggage\\.okteto-divert=cindy.*",
            "baggage.okteto-divert=cindy",
            "baggage[.]okteto-divert\\s*=cindy",
            "baggage\\x2eokteto-divert[=]cindy",
        ] {
            assert!(requires_legacy_form(pattern), "{pattern}");
        }
        for pattern in
            ["okteto-divert=cindy", "baggage=okteto-divert", "baggage.okteto-divert:?=x|y", "baggage,okteto-divert=x"]
        {
            assert!(!requires_legacy_form(pattern), "{pattern}");
        }
    }

    #[test]
    fn odd_patterns_never_panic() {
        for pattern in [
            "\\x",
            "\\x{",
            "\\x{zz}",
            "\\p",
            "\\p{",
            "[\\",
            "[a-",
            "[a-\\",
            "[[:",
            "(?P<",
            "{}",
            "a{1,2",
            "\\0",
            "\\777",
            ")(*",
            "é\\é[é-ü]",
        ] {
            let _ = requires_colon_form(pattern);
            let _ = requires_legacy_form(pattern);
        }
    }
}
