//! What the writer tells the rest of the service about the database: whether it takes writes
//! and, while it does not, what failed, since when and how many attempts ago (for `/ready`,
//! the log and the metrics).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::store::StoreError;
use crate::telemetry::metrics as m;

/// A database fault the writer is waiting out.
#[derive(Debug, Clone)]
pub struct Fault {
    /// `full`, `locked`, `io`, `read_only` or `other` ([`StoreError::fault_kind`]).
    pub kind: &'static str,
    /// The last error, as SQLite or the OS worded it.
    pub error: String,
    pub since: Instant,
    /// Failed attempts at the batch so far.
    pub attempts: u64,
}

impl Fault {
    /// `/ready`'s reason: the kind, the error, for how long.
    pub fn reason(&self) -> String {
        format!(
            "the database is not taking writes ({}: {}) for {} s, {} attempts; retrying",
            self.kind,
            self.error,
            self.since.elapsed().as_secs(),
            self.attempts
        )
    }
}

/// Shared between the writer (which sets it) and the API (which reads it).
#[derive(Debug)]
pub struct WriterState {
    ready: AtomicBool,
    fault: Mutex<Option<Fault>>,
}

impl Default for WriterState {
    fn default() -> Self {
        WriterState {
            ready: AtomicBool::new(true),
            fault: Mutex::new(None),
        }
    }
}

impl WriterState {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The fault being waited out, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A write failed with `err`: not ready until one succeeds. Counted by kind.
    pub fn failed(&self, err: &StoreError) -> Fault {
        let kind = err.fault_kind();
        metrics::counter!(m::WRITER_ERRORS, "kind" => kind).increment(1);
        let mut fault = self.fault.lock().unwrap_or_else(PoisonError::into_inner);
        let next = match fault.take() {
            Some(f) => Fault {
                kind,
                error: err.to_string(),
                since: f.since,
                attempts: f.attempts + 1,
            },
            None => Fault {
                kind,
                error: err.to_string(),
                since: Instant::now(),
                attempts: 1,
            },
        };
        *fault = Some(next.clone());
        self.ready.store(false, Ordering::Release);
        next
    }

    /// A write succeeded: ready again. Returns how long the fault lasted and its attempts, when
    /// there was one (worth a log line).
    pub fn succeeded(&self) -> Option<(Duration, u64)> {
        self.ready.store(true, Ordering::Release);
        let mut fault = self.fault.lock().unwrap_or_else(PoisonError::into_inner);
        fault.take().map(|f| (f.since.elapsed(), f.attempts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_keeps_its_start_counts_attempts_and_clears_on_success() {
        let state = WriterState::default();
        assert!(state.is_ready() && state.fault().is_none());
        let io = StoreError::Sqlx(sqlx::Error::Io(std::io::Error::other("disk")));
        let first = state.failed(&io);
        let second = state.failed(&io);
        assert!(!state.is_ready());
        assert_eq!((first.attempts, second.attempts), (1, 2));
        assert_eq!(first.since, second.since);
        assert_eq!(second.kind, "io");
        assert!(
            second.reason().contains("(io: database error:"),
            "{}",
            second.reason()
        );
        assert_eq!(state.succeeded().map(|(_, n)| n), Some(2));
        assert!(state.is_ready() && state.fault().is_none());
        assert_eq!(state.succeeded(), None);
    }
}
