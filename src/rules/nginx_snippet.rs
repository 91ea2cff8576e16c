//! The nginx side of the Ingress rules (SPEC §6): the divert block written into an ingress-nginx
//! `configuration-snippet`, finding it again between its marker lines, and reading the user's own
//! snippet lines as nginx directives (for the wrong-header-form checks of §7).
//!
//! ingress-nginx copies the snippet into every `location` of the Ingress, so the block only uses
//! what a location allows: `set`, `if` with a PCRE match (only `set`/`return` inside, the two
//! things that are safe in a location `if`) and one `proxy_set_header` outside any `if`.

use std::ops::Range;

use super::divert::{BAGGAGE_HEADER, BAGGAGE_MEMBER, LEGACY_HEADER};

pub const BEGIN_MARKER: &str = "# divert-webhook begin";
pub const END_MARKER: &str = "# divert-webhook end";

/// nginx variable holding the client's baggage while its `okteto-divert` members are removed.
const VARIABLE: &str = "$okteto_divert_baggage";

/// How many separate runs of client `okteto-divert` members the block removes (consecutive
/// members form one run). nginx has no loops; beyond this the request is refused (400) rather
/// than routed with a stale key or stripped of other systems' members.
pub const REMOVAL_ROUNDS: usize = 4;

/// The block for divert key `key` (a DNS-1123 label: checked by the caller, so it cannot inject
/// nginx syntax), marker lines included, each line ending in `\n`.
///
/// The client's baggage is held as `,member,member…`, so every member starts with a comma and a
/// `;okteto-divert=…` property can never be taken for a member. Each round cuts one run of
/// `okteto-divert` members out, keeping the other members byte for byte; the result is sent as
/// `okteto-divert=<key>` followed by what is left.
pub fn divert_block(key: &str, legacy_header: bool) -> String {
    let member_pattern = format!(",[ \\t]*{BAGGAGE_MEMBER}[ \\t]*=");
    let mut block = String::new();
    let mut line = |s: &str| {
        block.push_str(s);
        block.push('\n');
    };
    line(BEGIN_MARKER);
    line("# Written by divert-webhook from divert.okteto.com/header; edits between the markers are replaced.");
    line(&format!("set {VARIABLE} \"\";"));
    line(&format!("if ($http_baggage ~ \"[^ \\t]\") {{ set {VARIABLE} \",$http_baggage\"; }}"));
    for _ in 0..REMOVAL_ROUNDS {
        line(&format!("if ({VARIABLE} ~ \"^(.*?)(?:{member_pattern}[^,]*)+(.*)$\") {{ set {VARIABLE} \"$1$2\"; }}"));
    }
    line(&format!(
        "if ({VARIABLE} ~ \"{member_pattern}\") {{ return 400 \"baggage: too many separate {BAGGAGE_MEMBER} members\\n\"; }}"
    ));
    line(&format!("proxy_set_header {BAGGAGE_HEADER} \"{BAGGAGE_MEMBER}={key}{VARIABLE}\";"));
    if legacy_header {
        line(&format!("proxy_set_header {LEGACY_HEADER} \"{key}\";"));
    }
    line(END_MARKER);
    block
}

/// Why the marker lines cannot be read as blocks. Line numbers are 1-based.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MarkerError {
    /// A begin marker with no end marker after it (before the next begin marker).
    UnclosedBegin { line: usize },
    /// An end marker with no begin marker before it.
    StrayEnd { line: usize },
}

impl MarkerError {
    pub fn line(&self) -> usize {
        match self {
            MarkerError::UnclosedBegin { line } | MarkerError::StrayEnd { line } => *line,
        }
    }

    /// What is wrong and the fix, for a denial.
    pub fn explain(&self) -> String {
        let problem = match self {
            MarkerError::UnclosedBegin { .. } => format!("{BEGIN_MARKER:?} has no {END_MARKER:?} after it"),
            MarkerError::StrayEnd { .. } => format!("{END_MARKER:?} has no {BEGIN_MARKER:?} before it"),
        };
        format!(
            "{problem}; restore the missing marker line or delete the divert-webhook lines \
             (the webhook writes the block again from divert.okteto.com/header)"
        )
    }
}

/// The snippet cut into lines, each keeping its own line ending (so the user's lines can be put
/// back byte for byte).
fn lines(snippet: &str) -> Vec<&str> {
    snippet.split_inclusive('\n').collect()
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.trim() == marker
}

/// Line-index ranges (0-based, markers included) of the divert blocks of `snippet`.
fn blocks_in(lines: &[&str]) -> Result<Vec<Range<usize>>, MarkerError> {
    let mut blocks = Vec::new();
    let mut open: Option<usize> = None;
    for (i, line) in lines.iter().enumerate() {
        if is_marker(line, BEGIN_MARKER) {
            if let Some(begin) = open {
                return Err(MarkerError::UnclosedBegin { line: begin + 1 });
            }
            open = Some(i);
        } else if is_marker(line, END_MARKER) {
            match open.take() {
                Some(begin) => blocks.push(begin..i + 1),
                None => return Err(MarkerError::StrayEnd { line: i + 1 }),
            }
        }
    }
    match open {
        Some(begin) => Err(MarkerError::UnclosedBegin { line: begin + 1 }),
        None => Ok(blocks),
    }
}

/// Checks the marker lines of `snippet` without changing anything.
pub fn check_markers(snippet: &str) -> Result<(), MarkerError> {
    blocks_in(&lines(snippet)).map(drop)
}

/// `snippet` with every divert block removed and, if `block` is given, that block in place of
/// the first one (or appended when there was none). The lines outside the blocks are kept byte
/// for byte; several blocks (a copy-paste) collapse into one.
pub fn replace_blocks(snippet: &str, block: Option<&str>) -> Result<String, MarkerError> {
    let lines = lines(snippet);
    let blocks = blocks_in(&lines)?;
    let mut out = String::with_capacity(snippet.len() + block.map_or(0, str::len));
    let mut placed = false;
    let mut next = 0;
    for range in &blocks {
        out.extend(lines[next..range.start].iter().copied());
        if let (Some(block), false) = (block, placed) {
            out.push_str(block);
            placed = true;
        }
        next = range.end;
    }
    out.extend(lines[next..].iter().copied());
    if let (Some(block), false) = (block, placed) {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(block);
    }
    Ok(out)
}

/// One nginx directive of the user's snippet: where it starts (1-based line) and its words with
/// quotes and escapes resolved, as nginx reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    pub line: usize,
    pub words: Vec<String>,
}

/// The directives of the snippet's lines outside divert blocks (when the markers are broken,
/// of every line). Block openers (`if (...) {`) count as directives too; braces end them.
pub fn user_directives(snippet: &str) -> Vec<Directive> {
    let lines = lines(snippet);
    let blocks = blocks_in(&lines).unwrap_or_default();
    // Our block's lines become empty statements: line numbers stay, nothing spans the block.
    let user_text: String = lines
        .iter()
        .enumerate()
        .map(|(i, line)| if blocks.iter().any(|b| b.contains(&i)) { ";\n" } else { line })
        .collect();
    tokenize(&user_text)
}

/// nginx's lexer, simplified: words split by whitespace, `"…"`/`'…'` quoting with backslash
/// escapes (a quoted word may span lines), `#` comments, `;` `{` `}` end a statement.
fn tokenize(text: &str) -> Vec<Directive> {
    let mut directives = Vec::new();
    let mut current = Directive { line: 0, words: Vec::new() };
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    let mut line = 1;
    let mut chars = text.chars();

    fn push_word(word: &mut Option<String>, current: &mut Directive, line: usize) {
        if let Some(w) = word.take() {
            if current.words.is_empty() {
                current.line = line;
            }
            current.words.push(w);
        }
    }
    fn finish(current: &mut Directive, directives: &mut Vec<Directive>) {
        if !current.words.is_empty() {
            directives.push(std::mem::replace(current, Directive { line: 0, words: Vec::new() }));
        }
    }

    // The line a word starts on is the line of its first character.
    let mut word_line = line;
    while let Some(c) = chars.next() {
        if word.is_none() && quote.is_none() {
            word_line = line;
        }
        if c == '\n' {
            line += 1;
        }
        if let Some(q) = quote {
            match c {
                '\\' => unescape(chars.next(), word.get_or_insert_default(), &mut line),
                // An empty quoted word ("") is still a word.
                c if c == q => quote = None,
                c => word.get_or_insert_default().push(c),
            }
            continue;
        }
        match c {
            '"' | '\'' if word.is_none() => {
                quote = Some(c);
                word = Some(String::new());
            }
            '#' if word.is_none() => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '\\' => unescape(chars.next(), word.get_or_insert_default(), &mut line),
            ';' | '{' | '}' => {
                push_word(&mut word, &mut current, word_line);
                finish(&mut current, &mut directives);
            }
            c if c.is_whitespace() => push_word(&mut word, &mut current, word_line),
            c => word.get_or_insert_default().push(c),
        }
    }
    push_word(&mut word, &mut current, word_line);
    finish(&mut current, &mut directives);
    directives
}

/// nginx's escapes, quoted or not: `\"` `\'` `\\` stand for the character, `\t` `\r` `\n` for
/// the control character; any other backslash is kept as written.
fn unescape(next: Option<char>, word: &mut String, line: &mut usize) {
    match next {
        Some(c @ ('"' | '\'' | '\\')) => word.push(c),
        Some('t') => word.push('\t'),
        Some('r') => word.push('\r'),
        Some('n') => word.push('\n'),
        Some(other) => {
            if other == '\n' {
                *line += 1;
            }
            word.push('\\');
            word.push(other);
        }
        None => word.push('\\'),
    }
}

/// A request header the directive sets for the upstream: `proxy_set_header`/`grpc_set_header`
/// NAME VALUE, or each `"Name: value"` of headers-more's `more_set_input_headers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderSetting {
    pub name: String,
    pub value: String,
}

pub fn header_settings(directive: &Directive) -> Vec<HeaderSetting> {
    let Some((name, args)) = directive.words.split_first() else { return Vec::new() };
    match name.as_str() {
        "proxy_set_header" | "grpc_set_header" => match args {
            [name, value, ..] => vec![HeaderSetting { name: name.clone(), value: value.clone() }],
            [name] => vec![HeaderSetting { name: name.clone(), value: String::new() }],
            [] => Vec::new(),
        },
        "more_set_input_headers" => {
            let mut settings = Vec::new();
            let mut args = args.iter();
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "-r" => {}
                    // `-t <content types>` filters by type; its argument is not a header.
                    "-t" => {
                        args.next();
                    }
                    header => {
                        let (name, value) = header.split_once(':').unwrap_or((header, ""));
                        settings.push(HeaderSetting { name: name.trim().to_string(), value: value.trim().to_string() });
                    }
                }
            }
            settings
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_is_framed_by_markers_and_uses_the_key() {
        let block = divert_block("cindy", false);
        assert!(block.starts_with(&format!("{BEGIN_MARKER}\n")));
        assert!(block.ends_with(&format!("{END_MARKER}\n")));
        assert!(block.contains("proxy_set_header baggage \"okteto-divert=cindy$okteto_divert_baggage\";"));
        assert!(!block.contains(LEGACY_HEADER));
        assert!(divert_block("cindy", true).contains("proxy_set_header baggage.okteto-divert \"cindy\";"));
    }

    #[test]
    fn blocks_are_replaced_in_place_and_user_lines_kept() {
        let old = divert_block("bob", false);
        let snippet = format!("more_set_headers \"A: 1\";\r\n{old}  add_header X-User 1;");
        let new = divert_block("cindy", false);
        let replaced = replace_blocks(&snippet, Some(&new)).unwrap();
        assert_eq!(replaced, format!("more_set_headers \"A: 1\";\r\n{new}  add_header X-User 1;"));
        assert_eq!(replace_blocks(&snippet, None).unwrap(), "more_set_headers \"A: 1\";\r\n  add_header X-User 1;");
    }

    #[test]
    fn a_block_is_appended_on_a_line_of_its_own() {
        let block = divert_block("cindy", false);
        assert_eq!(replace_blocks("", Some(&block)).unwrap(), block);
        assert_eq!(replace_blocks("a b;", Some(&block)).unwrap(), format!("a b;\n{block}"));
        assert_eq!(replace_blocks("a b;\n", Some(&block)).unwrap(), format!("a b;\n{block}"));
    }

    #[test]
    fn duplicated_blocks_collapse_into_one() {
        let block = divert_block("cindy", false);
        let snippet = format!("{block}x y;\n{block}");
        assert_eq!(replace_blocks(&snippet, Some(&block)).unwrap(), format!("{block}x y;\n"));
    }

    #[test]
    fn broken_markers_are_reported_with_their_line() {
        let unclosed = format!("a b;\n{BEGIN_MARKER}\nset $x 1;\n");
        assert_eq!(check_markers(&unclosed), Err(MarkerError::UnclosedBegin { line: 2 }));
        let twice = format!("{BEGIN_MARKER}\n{BEGIN_MARKER}\n{END_MARKER}\n");
        assert_eq!(check_markers(&twice), Err(MarkerError::UnclosedBegin { line: 1 }));
        let stray = format!("a b;\n\n{END_MARKER}\n");
        assert_eq!(check_markers(&stray), Err(MarkerError::StrayEnd { line: 3 }));
        assert!(replace_blocks(&stray, None).is_err());
    }

    #[test]
    fn directives_are_read_like_nginx_reads_them() {
        let snippet = "proxy_set_header  okteto-divert cindy; # comment ; here\n\
                       more_set_input_headers -r -t 'text/html' \"baggage: a=1\" 'X-A:  b';\n\
                       if ($http_x) { proxy_set_header X-Q \"a\\\"b\"; }\n\
                       proxy_set_header\n  X-Split\n  \"multi\nline\";\n\
                       a\\tb 'c\\d' \\;;\n";
        let directives = user_directives(snippet);
        let words: Vec<(usize, Vec<&str>)> =
            directives.iter().map(|d| (d.line, d.words.iter().map(String::as_str).collect())).collect();
        assert_eq!(
            words,
            vec![
                (1, vec!["proxy_set_header", "okteto-divert", "cindy"]),
                (2, vec!["more_set_input_headers", "-r", "-t", "text/html", "baggage: a=1", "X-A:  b"]),
                (3, vec!["if", "($http_x)"]),
                (3, vec!["proxy_set_header", "X-Q", "a\"b"]),
                (4, vec!["proxy_set_header", "X-Split", "multi\nline"]),
                (8, vec!["a\tb", "c\\d", "\\;"]),
            ]
        );
        let headers: Vec<HeaderSetting> = directives.iter().flat_map(header_settings).collect();
        let pairs: Vec<(&str, &str)> = headers.iter().map(|h| (h.name.as_str(), h.value.as_str())).collect();
        assert_eq!(
            pairs,
            vec![
                ("okteto-divert", "cindy"),
                ("baggage", "a=1"),
                ("X-A", "b"),
                ("X-Q", "a\"b"),
                ("X-Split", "multi\nline")
            ]
        );
    }

    #[test]
    fn our_own_block_is_not_read_as_user_directives() {
        let snippet = format!("a 1;\n{}b 2;\n", divert_block("cindy", true));
        let lines: Vec<usize> = user_directives(&snippet).iter().map(|d| d.line).collect();
        let total = snippet.lines().count();
        assert_eq!(lines, vec![1, total]);
    }

    #[test]
    fn odd_input_never_panics() {
        for s in ["\"", "'\\", "\\", "{{}};;", "\u{0}\"x", "a \"b\nc", "#", "é\"ü\\"] {
            let _ = user_directives(s);
            let _ = replace_blocks(s, Some("x\n"));
        }
    }
}
