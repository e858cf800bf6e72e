//! The server's log output: lines are gathered in memory and written to stderr in batches.
//!
//! Writing each line with its own `write(2)` from the async worker threads cost a system
//! call per logged request (about a tenth of the client-credentials throughput when every
//! token response logged its audit line at info, measured). Here info and debug lines are
//! written when the buffer fills or at the latest [`FLUSH_INTERVAL`] later; a warning or an
//! error is written at once, together with everything before it, so the lines stay in
//! order and the ones an operator acts on are never held back. What the lines record
//! durably (the audit trail) is in the store, committed before the response; a process
//! killed with SIGKILL can lose at most the last interval of log lines, never a stored
//! event.

use std::io::{self, BufWriter, Write};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long an info line may wait in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Lines held at most before they are written (a full buffer is written at once).
const BUFFER_BYTES: usize = 64 * 1024;

/// Batches log lines in front of `W` (stderr for the server).
pub struct BatchedLog<W: Write> {
    out: Mutex<BufWriter<W>>,
}

impl<W: Write> BatchedLog<W> {
    pub fn new(out: W) -> BatchedLog<W> {
        BatchedLog {
            out: Mutex::new(BufWriter::with_capacity(BUFFER_BYTES, out)),
        }
    }

    /// Each line written as it comes (when no thread can write held lines).
    fn new_unbuffered(out: W) -> BatchedLog<W> {
        BatchedLog {
            out: Mutex::new(BufWriter::with_capacity(0, out)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BufWriter<W>> {
        // A panic while holding the lock leaves at worst a partly written line.
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes what is held. Errors are dropped: there is nowhere left to report them.
    pub fn flush(&self) {
        let _ = self.lock().flush();
    }
}

/// One event's writer: the formatter hands it the whole line in one `write_all`.
pub struct LineWriter<'a, W: Write> {
    log: &'a BatchedLog<W>,
    urgent: bool,
}

impl<W: Write> Write for LineWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut out = self.log.lock();
        out.write_all(buf)?;
        if self.urgent {
            out.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.urgent {
            self.log.lock().flush()?;
        }
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for BatchedLog<W> {
    type Writer = LineWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            log: self,
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            log: self,
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

/// The process's stderr log, for `with_writer`.
#[derive(Clone, Copy)]
pub struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = LineWriter<'static, io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        stderr_log().make_writer()
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        stderr_log().make_writer_for(meta)
    }
}

/// The process's stderr log, with a thread that writes held lines every
/// [`FLUSH_INTERVAL`]. Started on first use.
fn stderr_log() -> &'static BatchedLog<io::Stderr> {
    STDERR.get_or_init(|| {
        let started = std::thread::Builder::new()
            .name("tessera-log".into())
            .spawn(|| loop {
                std::thread::sleep(FLUSH_INTERVAL);
                flush();
            });
        if let Err(e) = started {
            // Without the thread, lines would wait for a full buffer: write each at once.
            eprintln!("warning: cannot start the log writer thread ({e}); logging unbuffered");
            return BatchedLog::new_unbuffered(io::stderr());
        }
        BatchedLog::new(io::stderr())
    })
}

static STDERR: OnceLock<BatchedLog<io::Stderr>> = OnceLock::new();

/// Writes whatever log lines are still held (before the process exits).
pub fn flush() {
    if let Some(log) = STDERR.get() {
        log.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// An output the test can read while the log owns it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn subscriber(
        log: Arc<BatchedLog<Shared>>,
    ) -> impl tracing::Subscriber + Send + Sync + 'static {
        struct Make(Arc<BatchedLog<Shared>>);
        impl<'a> MakeWriter<'a> for Make {
            type Writer = LineWriter<'a, Shared>;
            fn make_writer(&'a self) -> Self::Writer {
                self.0.make_writer()
            }
            fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
                self.0.make_writer_for(meta)
            }
        }
        tracing_subscriber::fmt()
            .with_writer(Make(log))
            .with_ansi(false)
            .with_max_level(Level::INFO)
            .finish()
    }

    #[test]
    fn info_lines_wait_for_a_flush_and_a_warning_writes_everything_in_order() {
        let out = Shared::default();
        let log = Arc::new(BatchedLog::new(out.clone()));
        tracing::subscriber::with_default(subscriber(log.clone()), || {
            tracing::info!("first info");
            tracing::info!("second info");
            assert_eq!(out.text(), "", "info lines are held in memory");
            tracing::warn!("a warning");
            let text = out.text();
            let (a, b, w) = (
                text.find("first info").expect("first line written"),
                text.find("second info").expect("second line written"),
                text.find("a warning").expect("the warning written at once"),
            );
            assert!(a < b && b < w, "lines keep their order: {text}");
            tracing::info!("third info");
            assert!(!out.text().contains("third info"));
        });
        log.flush();
        assert!(
            out.text().contains("third info"),
            "a flush writes held lines"
        );
    }

    #[test]
    fn a_full_buffer_is_written_without_waiting_for_the_flush() {
        let out = Shared::default();
        let log = Arc::new(BatchedLog::new(out.clone()));
        tracing::subscriber::with_default(subscriber(log), || {
            let line = "x".repeat(1000);
            for _ in 0..(2 * BUFFER_BYTES / 1000) {
                tracing::info!("{line}");
            }
        });
        assert!(
            out.text().len() >= BUFFER_BYTES,
            "{} bytes written before any flush",
            out.text().len()
        );
    }
}
