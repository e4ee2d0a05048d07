//! The log lines the core asks the shell to write. Field names are the JSON
//! log's, so renaming one is a visible change (CHANGELOG).

use serde::Serialize;
use std::time::Duration;

use super::{MemoryReason, Status};
use crate::parse::signal_name;

/// Something worth a log line. The field names are the JSON log's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Note {
    WorkerSpawned {
        slot: usize,
        pid: i32,
    },
    WorkerExited {
        slot: usize,
        pid: i32,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
        uptime_ms: u64,
    },
    WorkerReady {
        slot: usize,
        pid: i32,
        generation: u64,
    },
    /// Not ready within --listen-timeout at start: serving anyway.
    WorkerNotReady {
        slot: usize,
        pid: i32,
        listen_timeout_ms: u64,
    },
    /// An old or removed worker was asked to stop and drains.
    WorkerDraining {
        slot: usize,
        pid: i32,
    },
    /// Over its memory (`reason`): a new worker replaces it, as in a reload.
    MemoryExceeded {
        slot: usize,
        pid: i32,
        rss_bytes: u64,
        reason: MemoryReason,
    },
    /// About to exhaust the container's memory: SIGKILLed now, replaced.
    MemoryKilled {
        slot: usize,
        pid: i32,
        rss_bytes: u64,
        limit_bytes: u64,
    },
    /// Its event loop left a ping unanswered for --hang-timeout: replaced
    /// and SIGKILLed.
    WorkerHung {
        slot: usize,
        pid: i32,
        silent_ms: u64,
        hang_timeout_ms: u64,
    },
    ReloadStarted {
        generation: u64,
    },
    ReloadQueued {
        generation: u64,
    },
    ReloadFinished {
        generation: u64,
        /// Workers this reload replaced.
        replaced: usize,
        /// Slots with no running worker (backoff, exited): they start the
        /// new release when they start again.
        not_running: usize,
    },
    ReloadFailed {
        generation: u64,
        slot: usize,
        reason: String,
    },
    WorkerRestarting {
        slot: usize,
        delay_ms: u64,
        restarts: u32,
    },
    CrashLoop {
        slot: usize,
        quick_deaths: u32,
        min_uptime_ms: u64,
    },
    /// The worker that owns the terminal ended (Ctrl-C): stop the run.
    Interrupted {
        slot: usize,
        /// SIGINT, SIGQUIT, or "exit code 0" when it handled the signal.
        how: String,
    },
    StopRequested {
        signal: String,
        delay_ms: u64,
    },
    Stopping {
        signal: String,
        workers: usize,
        grace_ms: u64,
    },
    GraceExpired {
        grace_ms: u64,
    },
    Scaled {
        instances: usize,
    },
    /// `pminit prestop`: `ready` fails from now on; still serving.
    Prestop,
    Forwarded {
        signal: String,
        workers: usize,
    },
    OrphanReaped {
        pid: i32,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
    },
    /// An sd_notify line from a worker.
    Notified {
        pid: i32,
        message: String,
    },
    Exit {
        code: i32,
    },
}

impl Note {
    /// Debug notes are shown only with `-v`.
    pub fn is_debug(&self) -> bool {
        match self {
            Note::Forwarded { .. } | Note::OrphanReaped { .. } => true,
            // STOPPING=1 is worth a line; READY=1 shows as worker_ready,
            // STATUS= and the rest only with -v.
            Note::Notified { message, .. } => message != "STOPPING=1",
            _ => false,
        }
    }
}

pub(super) fn split_status(status: Status) -> (Option<i32>, Option<String>) {
    match status {
        Status::Code(c) => (Some(c), None),
        Status::Signal(s) => (None, Some(signal_name(s))),
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From mutation testing: which notes only `-v` shows.
    #[test]
    fn debug_notes_are_forwards_orphans_and_quiet_notifications() {
        let notified = |m: &str| Note::Notified {
            pid: 1,
            message: m.into(),
        };
        let table = [
            (
                Note::Forwarded {
                    signal: "SIGUSR1".into(),
                    workers: 2,
                },
                true,
            ),
            (
                Note::OrphanReaped {
                    pid: 9,
                    code: Some(0),
                    signal: None,
                },
                true,
            ),
            (notified("STATUS=warming up"), true),
            (notified("STOPPING=1"), false),
            (Note::Prestop, false),
            (Note::Exit { code: 0 }, false),
        ];
        for (note, debug) in table {
            assert_eq!(note.is_debug(), debug, "{note:?}");
        }
    }

    #[test]
    fn a_status_is_a_code_or_a_signal_name() {
        assert_eq!(split_status(Status::Code(3)), (Some(3), None));
        assert_eq!(
            split_status(Status::Signal(libc::SIGKILL)),
            (None, Some("SIGKILL".into()))
        );
    }
}
