//! The proxy's log lines, written by a thread of their own: `eprintln!` from a request's task
//! blocks that tokio worker (and every task queued on it) for as long as stderr is stalled, e.g.
//! behind a full pipe whose reader is slow. Requests only queue their line here.

use std::{
    io::Write,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{sync_channel, Receiver, SyncSender},
        Arc, OnceLock,
    },
    thread,
};

use serde_json::json;

/// Lines queued at most; past that new lines are dropped (and counted) rather than waited for.
const CAPACITY: usize = 4096;

/// A bounded queue in front of a writer thread.
pub(crate) struct LogQueue {
    /// `None` when the thread could not be started: every line is then counted as dropped.
    sender: Option<SyncSender<String>>,
    dropped: Arc<AtomicU64>,
}

impl LogQueue {
    /// Starts the thread that writes the queued lines to `out`, one per line.
    pub(crate) fn start(out: impl Write + Send + 'static, capacity: usize) -> LogQueue {
        let (sender, lines) = sync_channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let started = thread::Builder::new()
            .name("proxy-log".into())
            .spawn(move || write_lines(&lines, out, &counter));
        LogQueue {
            sender: started.ok().map(|_| sender),
            dropped,
        }
    }

    /// Queues `line` without ever waiting: when the queue is full (or the thread gone), the
    /// line is dropped and counted, and the count is logged before the next line written.
    pub(crate) fn push(&self, line: String) {
        let queued = self
            .sender
            .as_ref()
            .is_some_and(|sender| sender.try_send(line).is_ok());
        if !queued {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn write_lines(lines: &Receiver<String>, mut out: impl Write, dropped: &AtomicU64) {
    for line in lines {
        let lost = dropped.swap(0, Ordering::Relaxed);
        // A failed write has nowhere to be reported: the line is lost, like a dropped one.
        if lost > 0 {
            let note = json!({"event": "proxy_log_dropped", "lines": lost});
            let _ = writeln!(out, "{note}");
        }
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Queues one line for stderr.
pub(crate) fn log_line(line: String) {
    static STDERR: OnceLock<LogQueue> = OnceLock::new();
    STDERR
        .get_or_init(|| LogQueue::start(std::io::stderr(), CAPACITY))
        .push(line);
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{atomic::AtomicBool, Mutex},
        time::{Duration, Instant},
    };

    use super::*;

    /// A writer stalled until `open` is set, like stderr behind a pipe nobody reads.
    #[derive(Clone, Default)]
    struct Stalled {
        entered: Arc<AtomicBool>,
        open: Arc<AtomicBool>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.entered.store(true, Ordering::Release);
            while !self.open.load(Ordering::Acquire) {
                thread::sleep(Duration::from_millis(5));
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Stalled {
        fn lines(&self) -> Vec<String> {
            let written = self.written.lock().unwrap();
            String::from_utf8_lossy(&written)
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_stalled_writer_never_blocks_the_caller_and_drops_are_counted() {
        let out = Stalled::default();
        let queue = LogQueue::start(out.clone(), 2);
        // The thread takes a first line and stalls writing it; then the queue holds two more.
        queue.push(json!({"event": "proxy", "n": "first"}).to_string());
        wait_for("the writer to stall", || {
            out.entered.load(Ordering::Acquire)
        });
        let started = Instant::now();
        for n in 0..10 {
            queue.push(json!({"event": "proxy", "n": n}).to_string());
        }
        assert!(started.elapsed() < Duration::from_secs(1), "push waited");
        let dropped = queue.dropped.load(Ordering::Relaxed);
        assert_eq!(dropped, 8);

        out.open.store(true, Ordering::Release);
        // The kept lines and, before the first one written after the drops, one note of them.
        let kept = 3;
        wait_for("the queued lines", || out.lines().len() == kept + 1);
        queue.push(json!({"event": "proxy", "n": "last"}).to_string());
        wait_for("the last line", || out.lines().len() == kept + 2);
        let parsed: Vec<serde_json::Value> = out
            .lines()
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let notes: Vec<_> = parsed
            .iter()
            .filter(|line| line["event"] == "proxy_log_dropped")
            .collect();
        assert_eq!(
            notes,
            [&json!({"event": "proxy_log_dropped", "lines": dropped})]
        );
        assert_eq!(parsed.last(), Some(&json!({"event": "proxy", "n": "last"})));
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 0);
    }
}
