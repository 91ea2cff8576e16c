//! Would Envoy accept a VirtualService regex (SPEC §7)? Decided by Google RE2 itself
//! ([`crate::re2`], compiled as Envoy compiles it) and two limits: the program size Envoy
//! allows (`re2.max_program_size.error_level`, `--max-regex-program-size`) and istiod's 1024
//! bytes.

use crate::re2::{self, Refusal};

/// Istio rejects longer regexes (SPEC §7). istiod counts UTF-8 bytes (Go's `len`), and so does
/// this: for ASCII, bytes are characters.
pub const MAX_REGEX_BYTES: usize = 1024;

/// What is wrong with a regex, for a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegexProblem {
    /// Longer than [`MAX_REGEX_BYTES`]; the length in bytes.
    TooLong(usize),
    /// RE2 refuses it.
    Refused(Refusal),
    /// RE2 compiles it to a program larger than Envoy allows.
    ProgramTooLarge { size: usize, limit: usize },
}

/// `None` when Envoy would accept `pattern`: short enough, compiled by RE2, and its program no
/// larger than `max_program_size`.
pub fn problem(pattern: &str, max_program_size: usize) -> Option<RegexProblem> {
    // Before RE2: this also bounds what RE2 is given to compile.
    if pattern.len() > MAX_REGEX_BYTES {
        return Some(RegexProblem::TooLong(pattern.len()));
    }
    match re2::compile(pattern) {
        Err(refusal) => Some(RegexProblem::Refused(refusal)),
        Ok(size) if size > max_program_size => Some(RegexProblem::ProgramTooLarge { size, limit: max_program_size }),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::re2::ErrorKind;

    const LIMIT: usize = 32768;

    #[test]
    fn what_envoy_accepts_passes() {
        for ok in ["", "/api/v[0-9]+/.*", r"(?i)chrome|firefox", r"\p{Greek}+", r"(?P<v>v\d+)", "a{1000}"] {
            assert_eq!(problem(ok, LIMIT), None, "{ok:?}");
        }
    }

    #[test]
    fn refusals_are_re2s() {
        let refused = |p: &str| match problem(p, LIMIT) {
            Some(RegexProblem::Refused(refusal)) => refusal.kind,
            other => panic!("{p:?}: {other:?}"),
        };
        assert_eq!(refused("a(?=b)"), ErrorKind::BadPerlOp);
        assert_eq!(refused(r"(a)\1"), ErrorKind::BadEscape);
        assert_eq!(refused("a{1001}"), ErrorKind::RepeatSize);
        assert_eq!(refused(r"\pL{1000}"), ErrorKind::PatternTooLarge);
    }

    #[test]
    fn program_size_limit_is_the_settings() {
        let unicode_identifier = r"[\pL\pN_-]{1,64}";
        let Some(RegexProblem::ProgramTooLarge { size, limit }) = problem(unicode_identifier, LIMIT) else {
            panic!("{:?}", problem(unicode_identifier, LIMIT));
        };
        assert_eq!(limit, LIMIT);
        assert!(size > 80_000, "{size}");
        assert_eq!(problem(unicode_identifier, size), None);
        assert_eq!(
            problem(unicode_identifier, size - 1),
            Some(RegexProblem::ProgramTooLarge { size, limit: size - 1 })
        );
    }

    #[test]
    fn length_limit_is_1024_bytes() {
        assert_eq!(problem(&"a".repeat(1024), LIMIT), None);
        assert_eq!(problem(&"a".repeat(1025), LIMIT), Some(RegexProblem::TooLong(1025)));
        assert_eq!(problem(&"é".repeat(512), LIMIT), None);
        assert_eq!(problem(&"é".repeat(513), LIMIT), Some(RegexProblem::TooLong(1026)));
    }

    #[test]
    fn deep_nesting_that_re2_accepts_passes() {
        let deep = format!("{}a{}", "(".repeat(300), ")".repeat(300));
        assert_eq!(problem(&deep, LIMIT), None);
    }
}
