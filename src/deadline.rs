//! The review's deadline (SPEC §8: no request is worked on past its `?timeout=`).
//!
//! Reviews run synchronously, so nothing can cancel them from outside: the rules and the diff
//! check the deadline themselves, between units of work (a route, a clone, an array element),
//! and stop when it has passed. The check is one clock read (vDSO, tens of nanoseconds).

use std::time::{Duration, Instant};

/// When the work on one review must stop. `Deadline::NONE` never passes (offline commands,
/// tests, benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    pub const NONE: Deadline = Deadline(None);

    pub fn at(instant: Instant) -> Deadline {
        Deadline(Some(instant))
    }

    pub fn after(duration: Duration) -> Deadline {
        Deadline(Instant::now().checked_add(duration))
    }

    /// The instant, for libraries that take one (`None`: no deadline).
    pub fn instant(&self) -> Option<Instant> {
        self.0
    }

    /// Has the deadline passed? Callers stop their work when it has.
    pub fn passed(&self) -> bool {
        self.0.is_some_and(|at| Instant::now() >= at)
    }

    pub fn check(&self) -> Result<(), Expired> {
        if self.passed() { Err(Expired) } else { Ok(()) }
    }
}

/// The deadline passed before the work was done; whatever was computed is thrown away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expired;

impl std::fmt::Display for Expired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the review's deadline passed before it was finished")
    }
}

impl std::error::Error for Expired {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_never_passes_and_a_past_instant_has() {
        assert!(!Deadline::NONE.passed());
        assert!(Deadline::NONE.check().is_ok());
        assert!(Deadline::at(Instant::now()).passed());
        assert_eq!(Deadline::after(Duration::ZERO).check(), Err(Expired));
        assert!(!Deadline::after(Duration::from_secs(3600)).passed());
    }
}
