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
/// nginx variable holding the same while a wide pass has work to do, else empty.
const REST_VARIABLE: &str = "$okteto_divert_rest";

/// Pieces of the client's baggage one wide pass keeps: the text between runs of `okteto-divert`
/// members (consecutive members form one run), one named capture each. nginx has no loops and
/// a regex gives back at most as many pieces as it has captures, so a pass removes up to this
/// many runs less one; the last capture keeps the rest for the next pass. nginx refuses a
/// configuration word of 4096 bytes or more, which bounds a pass's regex (171 pieces: 3.3 KB).
const PIECES_PER_WIDE_PASS: usize = 171;

/// Wide passes after the first, narrow one (which removes one run, what clients send): together
/// they remove the most runs (511) a `baggage` line holds that nginx accepts with its default
/// header buffers, which ingress-nginx keeps (`large_client_header_buffers 4 8k`: a header line
/// of at most 8 KiB). A client with more (several `baggage` lines, which nginx ≥ 1.23 joins, or
/// an operator's larger buffers) is refused (400) rather than routed with a stale key or
/// stripped of other systems' members.
const WIDE_PASSES: usize = 3;

/// Optional whitespace and the key of an `okteto-divert` member, after its comma.
fn member_key() -> String {
    format!("[ \\t]*{BAGGAGE_MEMBER}[ \\t]*=")
}

/// The first pass over the client's value held as `,member,member…`: the other members before
/// the first run of `okteto-divert` members (`$1`) and everything after that run (`$2`). Every
/// repetition is possessive and goes member by member (a member either is an `okteto-divert`
/// one or is not), so nothing is tried twice, and with two captures PCRE's work per member is
/// small: this is the pass every request with baggage meets.
fn first_pass_regex() -> String {
    let key = member_key();
    format!("^((?:,(?!{key})[^,]*+)*+)(?:,{key}[^,]*+)++(.*)")
}

/// A wide pass: group 1 matches a run of other members, group 2 a run of `okteto-divert`
/// members (possessive, as in the first pass); `od1`… capture the runs of other members in
/// turn, the last one everything after them. It only runs on [`REST_VARIABLE`], which holds
/// the value only when an `okteto-divert` member is left (so never for ordinary requests,
/// whatever the size of their baggage: PCRE's work per member grows with the number of
/// captures); `(?=,)` fails at once on the empty value.
fn wide_pass_regex() -> String {
    let key = member_key();
    let mut regex = format!("^(?=,)(?(DEFINE)((?:,(?!{key})[^,]*+)*+)((?:,{key}[^,]*+)*+))");
    for piece in 1..PIECES_PER_WIDE_PASS {
        regex.push_str(&format!("(?<od{piece}>(?1))(?2)"));
    }
    regex.push_str(&format!("(?<od{PIECES_PER_WIDE_PASS}>.*)"));
    regex
}

/// The block for divert key `key` (a DNS-1123 label: checked by the caller, so it cannot inject
/// nginx syntax), marker lines included, each line ending in `\n`.
///
/// The client's baggage is held as `,member,member…`, so every member starts with a comma and a
/// `;okteto-divert=…` property can never be taken for a member. Each pass keeps the text
/// between runs of `okteto-divert` members (the other members, byte for byte); the result is
/// sent as `okteto-divert=<key>` followed by what is left.
pub fn divert_block(key: &str, legacy_header: bool) -> String {
    let mut block = String::new();
    let mut line = |s: &str| {
        block.push_str(s);
        block.push('\n');
    };
    let member = member_key();
    line(BEGIN_MARKER);
    line("# Written by divert-webhook from divert.okteto.com/header; edits between the markers are replaced.");
    line(&format!("set {VARIABLE} \"\";"));
    line(&format!("if ($http_baggage ~ \"[^ \\t]\") {{ set {VARIABLE} \",$http_baggage\"; }}"));
    line(&format!("if ({VARIABLE} ~ \"{}\") {{ set {VARIABLE} \"$1$2\"; }}", first_pass_regex()));
    let pieces: String = (1..=PIECES_PER_WIDE_PASS).map(|piece| format!("$od{piece}")).collect();
    for _ in 0..WIDE_PASSES {
        line(&format!("set {REST_VARIABLE} \"\";"));
        line(&format!("if ({VARIABLE} ~ \",{member}\") {{ set {REST_VARIABLE} {VARIABLE}; }}"));
        line(&format!("if ({REST_VARIABLE} ~ \"{}\") {{ set {VARIABLE} \"{pieces}\"; }}", wide_pass_regex()));
    }
    line(&format!(
        "if ({VARIABLE} ~ \",{member}\") {{ return 400 \"baggage: too many separate {BAGGAGE_MEMBER} members\\n\"; }}"
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
/// the first one, or in front of the user's lines when there was none. The lines outside the
/// blocks are kept byte for byte; several blocks (a copy-paste) collapse into one.
///
/// A new block goes first so that the user's text follows the block's end-marker line as it
/// was, whatever its line endings and whether or not it ends in a newline: taking the block
/// out again gives the user's snippet back exactly (see docs/ingress.md, "Place of the block").
pub fn replace_blocks(snippet: &str, block: Option<&str>) -> Result<String, MarkerError> {
    let lines = lines(snippet);
    let blocks = blocks_in(&lines)?;
    let mut out = String::with_capacity(snippet.len() + block.map_or(0, str::len));
    if blocks.is_empty() {
        out.push_str(block.unwrap_or(""));
        out.push_str(snippet);
        return Ok(out);
    }
    let mut next = 0;
    for (i, range) in blocks.iter().enumerate() {
        out.extend(lines[next..range.start].iter().copied());
        if i == 0 {
            out.push_str(block.unwrap_or(""));
        }
        next = range.end;
    }
    out.extend(lines[next..].iter().copied());
    Ok(out)
}

/// One nginx directive of the user's snippet: where it starts (1-based line) and its words with
/// quotes and escapes resolved, as nginx reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    pub line: usize,
    /// The same line counted without the divert blocks' lines: its number in the snippet as the
    /// user wrote it, before the webhook put its block in front.
    pub own_line: usize,
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
    let mut directives = tokenize(&user_text);
    for directive in &mut directives {
        // A directive starts on a user's line (the block's lines hold no words).
        let index = directive.line - 1;
        let block_lines_before: usize = blocks.iter().map(|b| b.end.min(index).saturating_sub(b.start)).sum();
        directive.own_line = directive.line - block_lines_before;
    }
    directives
}

/// nginx's lexer, simplified: words split by whitespace, `"…"`/`'…'` quoting with backslash
/// escapes (a quoted word may span lines), `#` comments, `;` `{` `}` end a statement.
fn tokenize(text: &str) -> Vec<Directive> {
    let mut directives = Vec::new();
    let mut current = Directive { line: 0, own_line: 0, words: Vec::new() };
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    let mut line = 1;
    let mut chars = text.chars();

    fn push_word(word: &mut Option<String>, current: &mut Directive, line: usize) {
        if let Some(w) = word.take() {
            if current.words.is_empty() {
                current.line = line;
                current.own_line = line;
            }
            current.words.push(w);
        }
    }
    fn finish(current: &mut Directive, directives: &mut Vec<Directive>) {
        if !current.words.is_empty() {
            directives.push(std::mem::replace(current, Directive { line: 0, own_line: 0, words: Vec::new() }));
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
            // As nginx reads them: `${name}` is a variable inside the word, and a `}` that does
            // not start a word is part of it; only at a word's start does a brace end a block.
            '{' if word.as_deref().is_some_and(|w| w.ends_with('$')) => word.get_or_insert_default().push(c),
            '}' if word.is_some() => word.get_or_insert_default().push(c),
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

/// How a directive of the user's snippet uses a header (SPEC §2: wrong header names are
/// rejected wherever they appear in configuration, so every use is found, not only setters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderUse {
    /// Sets a request header sent upstream: `proxy_set_header`, `grpc_set_header`,
    /// `more_set_input_headers`.
    SetsRequest,
    /// Clears a request header: `more_clear_input_headers`.
    ClearsRequest,
    /// Sets a response header: `add_header`, `add_trailer`, `more_set_headers`.
    SetsResponse,
    /// Clears a response header: `more_clear_headers`.
    ClearsResponse,
    /// Hides an upstream's response header: `proxy_hide_header` (and grpc/fastcgi/uwsgi/scgi).
    Hides,
    /// Passes an upstream's response header: `proxy_pass_header` (and grpc/fastcgi/uwsgi/scgi).
    Passes,
    /// Reads a header through a variable: `$http_NAME`, `$sent_http_NAME`, `$upstream_http_NAME`
    /// (and the `_trailer_` ones).
    Reads,
}

impl HeaderUse {
    /// The verb for a message: "proxy_hide_header hides header …".
    pub fn verb(self) -> &'static str {
        match self {
            HeaderUse::SetsRequest | HeaderUse::SetsResponse => "sets",
            HeaderUse::ClearsRequest | HeaderUse::ClearsResponse => "clears",
            HeaderUse::Hides => "hides",
            HeaderUse::Passes => "passes",
            HeaderUse::Reads => "reads",
        }
    }
}

/// One header a directive names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMention {
    /// As written; for a variable, the header it reads (`$http_x_okteto_divert`: `x-okteto-divert`).
    pub name: String,
    /// The value a setter gives it (`None` for the other uses).
    pub value: Option<String>,
    pub used: HeaderUse,
    /// The directive's name, or the variable as written (`$http_x_okteto_divert`).
    pub by: String,
}

/// Response-header directives of the upstream modules that take one header name.
fn hide_or_pass(directive: &str) -> Option<HeaderUse> {
    let (module, rest) = directive.split_once('_')?;
    if !matches!(module, "proxy" | "grpc" | "fastcgi" | "uwsgi" | "scgi") {
        return None;
    }
    match rest {
        "hide_header" => Some(HeaderUse::Hides),
        "pass_header" => Some(HeaderUse::Passes),
        _ => None,
    }
}

/// The headers `directive` names: as the argument of a header directive, or as an nginx
/// variable that reads one, in any of its words.
pub fn header_mentions(directive: &Directive) -> Vec<HeaderMention> {
    let Some((command, args)) = directive.words.split_first() else { return Vec::new() };
    let mention = |name: &str, value: Option<&str>, used| HeaderMention {
        name: name.to_string(),
        value: value.map(str::to_string),
        used,
        by: command.clone(),
    };
    let mut mentions = Vec::new();
    match command.as_str() {
        "proxy_set_header" | "grpc_set_header" => {
            if let Some((name, value)) = args.split_first() {
                let value = value.first().map_or("", String::as_str);
                mentions.push(mention(name, Some(value), HeaderUse::SetsRequest));
            }
        }
        "add_header" | "add_trailer" => {
            if let Some((name, value)) = args.split_first() {
                let value = value.first().map_or("", String::as_str);
                mentions.push(mention(name, Some(value), HeaderUse::SetsResponse));
            }
        }
        "more_set_input_headers" | "more_set_headers" | "more_clear_input_headers" | "more_clear_headers" => {
            let used = match command.as_str() {
                "more_set_input_headers" => HeaderUse::SetsRequest,
                "more_set_headers" => HeaderUse::SetsResponse,
                "more_clear_input_headers" => HeaderUse::ClearsRequest,
                _ => HeaderUse::ClearsResponse,
            };
            let sets = matches!(used, HeaderUse::SetsRequest | HeaderUse::SetsResponse);
            let mut args = args.iter();
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    // Flags: replace only (-r), append (-a).
                    "-r" | "-a" => {}
                    // Filters by status (-s) or content type (-t); their argument is not a header.
                    "-s" | "-t" => {
                        args.next();
                    }
                    header => {
                        let (name, value) = header.split_once(':').unwrap_or((header, ""));
                        mentions.push(mention(name.trim(), sets.then_some(value.trim()), used));
                    }
                }
            }
        }
        other => {
            if let (Some(used), Some(name)) = (hide_or_pass(other), args.first()) {
                mentions.push(mention(name, None, used));
            }
        }
    }
    for word in &directive.words {
        for (variable, name) in header_variables(word) {
            if !mentions.iter().any(|m| m.used == HeaderUse::Reads && m.by == variable) {
                mentions.push(HeaderMention { name, value: None, used: HeaderUse::Reads, by: variable });
            }
        }
    }
    mentions
}

/// nginx variables in `word` that read a header: (the variable as written, the header name).
/// nginx variable names are case-insensitive; `_` in the name stands for `-` in the header.
fn header_variables(word: &str) -> Vec<(String, String)> {
    const PREFIXES: [&str; 5] = ["http_", "sent_http_", "upstream_http_", "sent_trailer_", "upstream_trailer_"];
    let mut found = Vec::new();
    let mut rest = word;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let (name, written_len) = match rest.strip_prefix('{') {
            Some(inner) => match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => continue,
            },
            None => {
                let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
                (&rest[..end], end)
            }
        };
        let lower = name.to_ascii_lowercase();
        if let Some(header) = PREFIXES.iter().find_map(|p| lower.strip_prefix(p)).filter(|h| !h.is_empty()) {
            found.push((format!("${}", &rest[..written_len]), header.replace('_', "-")));
        }
        rest = &rest[written_len..];
    }
    found
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

    /// The longest request header line nginx (and ingress-nginx) accepts by default.
    const MAX_HEADER_LINE: usize = 8192;
    /// nginx refuses a configuration word of this many bytes or more ("too long parameter").
    const MAX_CONFIG_WORD: usize = 4096;

    #[test]
    fn the_passes_cover_a_header_line_of_the_largest_size_nginx_accepts() {
        // The shortest run and separator: `,okteto-divert=` then an empty member `,`. The held
        // value is a comma and the header's value, which is the line less `baggage:` and CRLF.
        let held = 1 + MAX_HEADER_LINE - "baggage:".len() - 2;
        let most_runs = (held + 1) / ",okteto-divert=,".len();
        assert_eq!(most_runs, 511);
        let runs = |wide_passes: usize, pieces: usize| 1 + wide_passes * (pieces - 1);
        assert!(runs(WIDE_PASSES, PIECES_PER_WIDE_PASS) >= most_runs);
        // One pass or one piece fewer would not do: the block is no bigger than it must be.
        assert!(runs(WIDE_PASSES - 1, PIECES_PER_WIDE_PASS) < most_runs);
        assert!(runs(WIDE_PASSES, PIECES_PER_WIDE_PASS - 1) < most_runs);
        // Every word nginx reads stays under its limit (the regex is the longest).
        let block = divert_block("a".repeat(63).as_str(), true);
        for directive in tokenize(&block) {
            for word in &directive.words {
                assert!(word.len() < MAX_CONFIG_WORD, "{} bytes: {}…", word.len(), &word[..40]);
            }
        }
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
    fn a_new_block_goes_in_front_of_the_users_lines_and_comes_out_exactly() {
        let block = divert_block("cindy", false);
        for user in ["", "a b;", "a b;\n", "a;\r\nb;", "a;\r\nb;\r\n", "  ", "\n", "\r", "x;\n  \t", "# c"] {
            let added = replace_blocks(user, Some(&block)).unwrap();
            assert_eq!(added, format!("{block}{user}"), "{user:?}");
            assert_eq!(replace_blocks(&added, Some(&block)).unwrap(), added, "{user:?}");
            assert_eq!(replace_blocks(&added, None).unwrap(), user, "{user:?}");
        }
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
                       a\\tb 'c\\d' \\;;\n\
                       set $x ${http_a}b}c;}\n";
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
                (9, vec!["set", "$x", "${http_a}b}c"]),
            ]
        );
        let headers: Vec<HeaderMention> = directives.iter().flat_map(header_mentions).collect();
        let setters: Vec<(&str, &str)> = headers
            .iter()
            .filter(|h| h.used == HeaderUse::SetsRequest)
            .map(|h| (h.name.as_str(), h.value.as_deref().unwrap()))
            .collect();
        assert_eq!(
            setters,
            vec![
                ("okteto-divert", "cindy"),
                ("baggage", "a=1"),
                ("X-A", "b"),
                ("X-Q", "a\"b"),
                ("X-Split", "multi\nline")
            ]
        );
        let reads: Vec<(&str, &str)> =
            headers.iter().filter(|h| h.used == HeaderUse::Reads).map(|h| (h.by.as_str(), h.name.as_str())).collect();
        assert_eq!(reads, vec![("$http_x", "x"), ("${http_a}", "a")]);
    }

    /// (directive name or variable, use, header name, value) of every header `snippet` names.
    fn mentions(snippet: &str) -> Vec<(String, HeaderUse, String, Option<String>)> {
        user_directives(snippet).iter().flat_map(header_mentions).map(|m| (m.by, m.used, m.name, m.value)).collect()
    }

    #[test]
    fn every_header_directive_is_read() {
        use HeaderUse::*;
        let s = |v: &str| Some(v.to_string());
        let snippet = "add_header X-A \"1\" always;\n\
                       add_trailer X-T 2;\n\
                       more_set_headers -s '404 500' -t text/html -a 'X-B: 2' \"X-C:\";\n\
                       more_clear_headers -s 404 X-D 'X-E*';\n\
                       more_clear_input_headers -t text/plain X-F;\n\
                       proxy_hide_header X-G;\nproxy_pass_header X-H;\ngrpc_hide_header X-I;\n\
                       fastcgi_pass_header X-J;\nproxy_pass http://x;\nproxy_set_header X-K;\n";
        assert_eq!(
            mentions(snippet),
            vec![
                ("add_header".into(), SetsResponse, "X-A".into(), s("1")),
                ("add_trailer".into(), SetsResponse, "X-T".into(), s("2")),
                ("more_set_headers".into(), SetsResponse, "X-B".into(), s("2")),
                ("more_set_headers".into(), SetsResponse, "X-C".into(), s("")),
                ("more_clear_headers".into(), ClearsResponse, "X-D".into(), None),
                ("more_clear_headers".into(), ClearsResponse, "X-E*".into(), None),
                ("more_clear_input_headers".into(), ClearsRequest, "X-F".into(), None),
                ("proxy_hide_header".into(), Hides, "X-G".into(), None),
                ("proxy_pass_header".into(), Passes, "X-H".into(), None),
                ("grpc_hide_header".into(), Hides, "X-I".into(), None),
                ("fastcgi_pass_header".into(), Passes, "X-J".into(), None),
                ("proxy_set_header".into(), SetsRequest, "X-K".into(), s("")),
            ]
        );
    }

    #[test]
    fn header_variables_are_found_in_every_word() {
        let snippet = "if ($HTTP_X_OKTETO_DIVERT = \"a\") { return 403; }\n\
                       proxy_set_header baggage \"okteto-divert=${http_okteto_divert},k=$sent_http_x_y$upstream_http_z\";\n\
                       set $x \"$http_a $http_a $http_ $http_okteto_divert_2 $arg_http_x $1 ${http_unclosed\";\n\
                       # comment $http_okteto_divert\n";
        let reads: Vec<(String, String)> = user_directives(snippet)
            .iter()
            .flat_map(header_mentions)
            .filter(|m| m.used == HeaderUse::Reads)
            .map(|m| (m.by, m.name))
            .collect();
        let pairs: Vec<(&str, &str)> = reads.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(
            pairs,
            vec![
                ("$HTTP_X_OKTETO_DIVERT", "x-okteto-divert"),
                ("${http_okteto_divert}", "okteto-divert"),
                ("$sent_http_x_y", "x-y"),
                ("$upstream_http_z", "z"),
                ("$http_a", "a"),
                ("$http_okteto_divert_2", "okteto-divert-2"),
            ]
        );
    }

    #[test]
    fn our_own_block_is_not_read_as_user_directives() {
        let snippet = format!("a 1;\n{}b 2;\n", divert_block("cindy", true));
        let lines: Vec<(usize, usize)> = user_directives(&snippet).iter().map(|d| (d.line, d.own_line)).collect();
        let total = snippet.lines().count();
        assert_eq!(lines, vec![(1, 1), (total, 2)]);
        // Line numbers without the blocks are the lines the user wrote, wherever the blocks are.
        let block = divert_block("cindy", false);
        let snippet = format!("{block}a 1;\r\n\nb 2; c 3;\n{block}\nd \"4\n\";\n{block}e 5;");
        let lines: Vec<(usize, usize)> = user_directives(&snippet).iter().map(|d| (d.line, d.own_line)).collect();
        let n = block.lines().count();
        assert_eq!(lines, vec![(n + 1, 1), (n + 3, 3), (n + 3, 3), (2 * n + 5, 5), (3 * n + 7, 7)]);
    }

    #[test]
    fn odd_input_never_panics() {
        for s in
            ["\"", "'\\", "\\", "{{}};;", "\u{0}\"x", "a \"b\nc", "#", "é\"ü\\", "$", "${", "$é{x}", "${}", "$http_é"]
        {
            for directive in user_directives(s) {
                let _ = header_mentions(&directive);
            }
            let _ = replace_blocks(s, Some("x\n"));
        }
    }
}
