//! Where the log's lines go: appended to a buffer in memory, and written to stderr in batches by
//! one thread.
//!
//! A review pays for formatting its line and a short lock, never for a system call or for waking
//! another thread. The writer thread sleeps until a line comes, then gathers lines for up to
//! [`FLUSH_INTERVAL`] (or until [`FLUSH_BYTES`] are waiting) and writes them out at once. It
//! replaced tracing-appender's queue, which woke its thread for every line: at 2,000 reviews a
//! second that was 2,000 wake-ups and writes, a fifth of the server's CPU per review (BENCHMARKS.md,
//! "The log writer").
//!
//! Nothing is dropped: when [`MAX_BUFFERED_BYTES`] are waiting (stderr blocked), a caller waits
//! for the writer. Lines logged after the [`FlushGuard`] is dropped are written at once.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a line may wait in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Lines waiting that make the writer write at once, without waiting out the interval (about
/// 16 review lines). With 32 KiB, the server and its client used 10% more CPU per review on
/// the largest answers when they shared the CPUs (BENCHMARKS.md, "The log writer").
pub const FLUSH_BYTES: usize = 4 * 1024;
/// Lines waiting beyond which a caller waits for the writer (about 2,500 review lines).
pub const MAX_BUFFERED_BYTES: usize = 512 * 1024;

struct State {
    lines: Vec<u8>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Where the lines go: the writer thread's, and the callers' once it has stopped.
    out: Mutex<Box<dyn Write + Send>>,
    /// Signalled when the first line comes into an empty buffer, when [`FLUSH_BYTES`] are
    /// reached, and on close.
    lines_waiting: Condvar,
    /// Signalled when the writer took the lines, and on close.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The tracing-subscriber writer (`fmt().with_writer(...)`).
#[derive(Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

/// Writes out what is waiting, and stops the writer thread, when dropped.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer batching into `out` from a thread of its own.
pub fn batched(out: impl Write + Send + 'static) -> std::io::Result<(BatchedWriter, FlushGuard)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { lines: Vec::new(), closed: false }),
        out: Mutex::new(Box::new(out)),
        lines_waiting: Condvar::new(),
        room: Condvar::new(),
    });
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new().name("divert-webhook-log".into()).spawn(move || write_batches(&shared))?
    };
    Ok((BatchedWriter { shared: shared.clone() }, FlushGuard { shared, thread: Some(thread) }))
}

fn write_batches(shared: &Shared) {
    let mut batch = Vec::new();
    loop {
        let closed = {
            let mut state = shared.lock();
            while state.lines.is_empty() && !state.closed {
                state = shared.lines_waiting.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            let until = Instant::now() + FLUSH_INTERVAL;
            while state.lines.len() < FLUSH_BYTES && !state.closed {
                let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else { break };
                state = shared.lines_waiting.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
            }
            std::mem::swap(&mut state.lines, &mut batch);
            state.closed
        };
        shared.room.notify_all();
        // A failed write (stderr closed) has nowhere to be reported; the lines are gone either way.
        let mut out = shared.out.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        drop(out);
        batch.clear();
        if closed {
            return;
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.lines_waiting.notify_all();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One event's line, written by tracing-subscriber in a single `write_all`.
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        while state.lines.len() >= MAX_BUFFERED_BYTES && !state.closed {
            state = self.shared.room.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        if state.closed {
            drop(state);
            return self.shared.out.lock().unwrap_or_else(PoisonError::into_inner).write(bytes);
        }
        let before = state.lines.len();
        state.lines.extend_from_slice(bytes);
        let after = state.lines.len();
        drop(state);
        // Wake the writer only when it may be waiting for this: a first line, or enough lines.
        if before == 0 || (before < FLUSH_BYTES && after >= FLUSH_BYTES) {
            self.shared.lines_waiting.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter { shared: &self.shared }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter as _;

    /// A sink that records each write it is given.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().concat()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    #[test]
    fn lines_come_out_whole_in_order_and_batched() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone()).unwrap();
        for i in 0..100 {
            writer.make_writer().write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(sink.text(), expected);
        // 100 lines within far less than the interval: one write, or a few if this thread was
        // descheduled for an interval between lines; never one per line.
        assert!(sink.writes() <= 10, "{} writes", sink.writes());
    }

    #[test]
    fn a_lone_line_is_written_without_more_lines_or_a_close() {
        let sink = Sink::default();
        let (writer, _guard) = batched(sink.clone()).unwrap();
        writer.make_writer().write_all(b"alone\n").unwrap();
        let waited = Instant::now();
        while sink.text().is_empty() {
            assert!(waited.elapsed() < Duration::from_secs(10), "the line was never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.text(), "alone\n");
    }

    #[test]
    fn a_line_after_the_guard_is_dropped_still_reaches_the_output() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone()).unwrap();
        writer.make_writer().write_all(b"before\n").unwrap();
        drop(guard);
        writer.make_writer().write_all(b"after\n").unwrap();
        assert_eq!(sink.text(), "before\nafter\n");
    }

    #[test]
    fn many_threads_lose_nothing_even_past_the_limit() {
        // A sink slower than the writers: callers wait at the limit instead of dropping lines.
        #[derive(Clone, Default)]
        struct Slow(Sink);
        impl Write for Slow {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_millis(2));
                self.0.write(bytes)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Slow::default();
        let (writer, guard) = batched(sink.clone()).unwrap();
        let line = format!("{}\n", "x".repeat(999));
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        writer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                });
            }
        });
        drop(guard);
        let text = sink.0.text();
        assert_eq!(text.len(), 4000 * 1000);
        assert!(text.lines().all(|l| l.len() == 999), "a line was split or interleaved");
        // The 4 MB went out in batches of at most the limit and a line.
        assert!(sink.0.0.lock().unwrap().iter().all(|w| w.len() <= MAX_BUFFERED_BYTES + 1000));
    }
}
