//! Google RE2 itself (linked statically by build.rs, through csrc/re2_shim.cc): does it compile
//! a pattern as Envoy compiles route regexes (`re2::RE2(pattern, re2::RE2::Quiet)`), and what
//! is the program size Envoy compares with `re2.max_program_size.error_level` (SPEC §7)?
//!
//! Safe to call from any thread: every call builds and drops its own `re2::RE2` inside the
//! shim, which copies out plain data and catches every C++ exception.

use std::ffi::{c_char, c_int, c_long};

/// What the shim fills in; the layout of `struct divert_re2_verdict` in csrc/re2_shim.cc.
#[repr(C)]
struct RawVerdict {
    code: c_int,
    program_size: c_long,
    reason: [c_char; 128],
    reason_len: usize,
    argument: [c_char; 256],
    argument_len: usize,
    argument_full_len: usize,
}

unsafe extern "C" {
    fn divert_re2_compile(pattern: *const c_char, pattern_len: usize, out: *mut RawVerdict);
    fn divert_re2_match(
        pattern: *const c_char,
        pattern_len: usize,
        text: *const c_char,
        text_len: usize,
        whole: c_int,
    ) -> c_int;
}

/// Where a match may lie in the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchoring {
    /// The whole text (`RE2::FullMatch`): how Envoy matches header and path regexes.
    Whole,
    /// Anywhere in it (`RE2::PartialMatch`): an unanchored search, as a data plane that does
    /// not anchor patterns by itself does.
    Anywhere,
}

/// Does `text` match `pattern` as RE2 matches it? `None` when RE2 does not compile `pattern`.
pub fn is_match(pattern: &str, text: &str, anchoring: Anchoring) -> Option<bool> {
    let whole = c_int::from(anchoring == Anchoring::Whole);
    // SAFETY: the shim reads `pattern_len` and `text_len` bytes of two valid &str (neither
    // needs a NUL), keeps no pointer after returning, and lets no exception out.
    let answer =
        unsafe { divert_re2_match(pattern.as_ptr().cast(), pattern.len(), text.as_ptr().cast(), text.len(), whole) };
    match answer {
        1 => Some(true),
        0 => Some(false),
        _ => None,
    }
}

/// Why RE2 refused a pattern: `re2::RE2::ErrorCode`, named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// RE2 could not be asked (a C++ exception, such as out of memory), or `ErrorInternal`.
    Internal,
    BadEscape,
    BadCharClass,
    BadCharRange,
    MissingBracket,
    MissingParen,
    UnexpectedParen,
    TrailingBackslash,
    RepeatArgument,
    RepeatSize,
    RepeatOp,
    BadPerlOp,
    BadUtf8,
    BadNamedCapture,
    /// The program would need more memory than RE2 allows itself (8 MiB by default).
    PatternTooLarge,
    /// A code this build does not know (a newer RE2).
    Other(i32),
}

impl ErrorKind {
    fn from_code(code: c_int) -> ErrorKind {
        use ErrorKind::*;
        const KINDS: [ErrorKind; 15] = [
            Internal,
            BadEscape,
            BadCharClass,
            BadCharRange,
            MissingBracket,
            MissingParen,
            UnexpectedParen,
            TrailingBackslash,
            RepeatArgument,
            RepeatSize,
            RepeatOp,
            BadPerlOp,
            BadUtf8,
            BadNamedCapture,
            PatternTooLarge,
        ];
        match code {
            -1 => Internal,
            1..=15 => KINDS[code as usize - 1],
            other => Other(other),
        }
    }
}

/// RE2's refusal: its error text, split as RE2 builds it (`<reason>: <argument>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: ErrorKind,
    /// RE2's words, without the argument: "invalid escape sequence".
    pub reason: String,
    /// The part of the pattern RE2 names ("\\e"), possibly empty; cut after 256 bytes (then
    /// `argument_cut` is set; a character cut in two becomes U+FFFD).
    pub argument: String,
    pub argument_cut: bool,
}

/// Compiles `pattern` with RE2 as Envoy does: `Ok(program size)` or RE2's refusal.
pub fn compile(pattern: &str) -> Result<usize, Refusal> {
    let mut raw = RawVerdict {
        code: -1,
        program_size: -1,
        reason: [0; 128],
        reason_len: 0,
        argument: [0; 256],
        argument_len: 0,
        argument_full_len: 0,
    };
    // SAFETY: the shim reads `pattern_len` bytes of `pattern` (a valid &str, which need not end
    // in NUL), writes only into `raw` within its fixed arrays, keeps no pointer after returning,
    // and lets no exception out.
    unsafe { divert_re2_compile(pattern.as_ptr().cast(), pattern.len(), &mut raw) };
    if raw.code == 0 {
        return Ok(usize::try_from(raw.program_size).unwrap_or(0));
    }
    let text = |bytes: &[c_char], len: usize| {
        let bytes: Vec<u8> = bytes[..len.min(bytes.len())].iter().map(|&b| b as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let reason = match raw.code {
        -1 => "RE2 could not compile it (out of memory)".to_string(),
        _ => text(&raw.reason, raw.reason_len),
    };
    Err(Refusal {
        kind: ErrorKind::from_code(raw.code),
        reason,
        argument: text(&raw.argument, raw.argument_len),
        argument_cut: raw.argument_full_len > raw.argument_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_is_re2s_whole_or_anywhere() {
        assert_eq!(is_match("b+", "abbc", Anchoring::Anywhere), Some(true));
        assert_eq!(is_match("b+", "abbc", Anchoring::Whole), Some(false));
        assert_eq!(is_match("a.c", "abc", Anchoring::Whole), Some(true));
        assert_eq!(is_match("^b", "ab", Anchoring::Anywhere), Some(false));
        assert_eq!(is_match("a(?=b)", "ab", Anchoring::Anywhere), None, "RE2 refuses look-ahead");
    }

    #[test]
    fn compiles_and_measures() {
        assert!(compile("a").is_ok_and(|size| size > 0));
        assert!(compile("").is_ok());
        let small = compile("[a-z]{1,8}").unwrap();
        let large = compile("[a-z]{1,64}").unwrap();
        assert!(large > 4 * small, "{small} {large}");
    }

    #[test]
    fn refusals_carry_the_code_reason_and_argument() {
        let refusal = compile(r"a\e").unwrap_err();
        assert_eq!(refusal.kind, ErrorKind::BadEscape);
        assert_eq!(refusal.reason, "invalid escape sequence");
        assert_eq!(refusal.argument, r"\e");
        assert!(!refusal.argument_cut);

        let refusal = compile(r"\pL{1000}").unwrap_err();
        assert_eq!(refusal.kind, ErrorKind::PatternTooLarge);
        assert_eq!(refusal.reason, "pattern too large - compile failed");
        assert_eq!(refusal.argument, "");
    }

    #[test]
    fn long_arguments_are_cut_and_say_so() {
        let pattern = format!("({}", "é".repeat(300));
        let refusal = compile(&pattern).unwrap_err();
        assert_eq!(refusal.kind, ErrorKind::MissingParen);
        assert!(refusal.argument_cut);
        assert!(refusal.argument.starts_with("(éé"), "{}", refusal.argument);
        assert!(refusal.argument.len() <= 256 + 2, "{}", refusal.argument.len());
    }

    #[test]
    fn nul_and_non_ascii_bytes_reach_re2_whole() {
        // The pattern is passed with its length: a NUL does not end it early.
        assert_eq!(compile("a\0(").unwrap_err().kind, ErrorKind::MissingParen);
        assert!(compile("\u{10FFFF}\0").is_ok());
    }

    #[test]
    fn concurrent_calls_agree() {
        let patterns = [r"[\pL_-]{1,8}", r"\p{Greek}+", "(a", r"x{2,1}", "/api/v[0-9]+/.*"];
        let expected: Vec<_> = patterns.iter().map(|p| compile(p)).collect();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..25 {
                        let got: Vec<_> = patterns.iter().map(|p| compile(p)).collect();
                        assert_eq!(got, expected);
                    }
                });
            }
        });
    }
}
