//! pminit's own event lines on stderr: `text` for people, `json` (one object
//! per line) for Loki or Elasticsearch. Workers' output is never touched.
//!
//! A write never blocks: a PID 1 stuck in write(2) on a full pipe reaps
//! nothing and acts on no signal. The workers share fd 2's open file
//! description (blocking, as they expect), so pminit writes through its own:
//!
//! - a pipe or a character device (tty, /dev/null): `/proc/self/fd/2` opened
//!   again with O_NONBLOCK, which gives a new description of the same pipe
//!   (checked: the new fd gets EAGAIN when the pipe is full, fd 2 still
//!   blocks). A line of at most PIPE_BUF bytes is written whole or not at
//!   all, so lines are capped at `LOG_MAX_LINE` (= PIPE_BUF) and never torn.
//! - a regular file: fd 2 itself. A file does not fill up like a pipe, and
//!   a second open would need O_APPEND (without it, it writes at offset 0
//!   over what is there, checked) and would still not share fd 2's offset
//!   when fd 2 was opened without O_APPEND (`> file`).
//! - a socket (or anything /proc cannot reopen: a socket gives ENXIO):
//!   poll(2) for POLLOUT with a zero timeout before each line, then
//!   send(MSG_DONTWAIT).
//!
//! A line that does not fit is dropped and counted; once writing works again
//! "N log lines dropped" is written first. Repeated lines of one kind (per
//! worker) are rate-limited: `LOG_BURST` per `LOG_WINDOW`, then one
//! "suppressed N" line when the window ends. `next_deadline` and `flush`
//! let the event loop wake for those reports without a timer.
//!
//! Files: `output.rs` (the non-blocking writer), `limit.rs` (the rate
//! limiter); this file formats the lines and holds the one logger.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::core::{MemoryReason, Note};
use crate::limits::{LOG_BURST, LOG_MAX_KEYS, LOG_MAX_LINE, LOG_RETRY, LOG_WINDOW};

mod limit;
mod output;

pub use limit::Kind;
use limit::Limiter;
use output::Output;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

struct Logger {
    format: Format,
    verbose: bool,
    out: Output,
    limiter: Limiter,
}

static LOGGER: Mutex<Option<Logger>> = Mutex::new(None);

/// Set once at start-up; before that, lines are text and not verbose.
pub fn init(format: Format, verbose: bool) {
    let mut l = lock();
    *l = Some(Logger {
        format,
        verbose,
        out: Output::open(stderr_fd()),
        limiter: Limiter::default(),
    });
}

fn stderr_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 2 stays open for pminit's whole life (nothing closes it;
    // when it was never open, every use below fails harmlessly with EBADF).
    unsafe { BorrowedFd::borrow_raw(libc::STDERR_FILENO) }
}

/// The logger; one thread, so the lock is never contended. A poisoned lock
/// (a panic while logging) still holds a usable logger.
fn with<R>(f: impl FnOnce(&mut Logger) -> R) -> R {
    let mut guard = lock();
    let l = guard.get_or_insert_with(|| Logger {
        format: Format::Text,
        verbose: false,
        out: Output::open(stderr_fd()),
        limiter: Limiter::default(),
    });
    f(l)
}

fn lock() -> std::sync::MutexGuard<'static, Option<Logger>> {
    LOGGER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Caps `line` (which ends in a newline) at LOG_MAX_LINE bytes, on a
/// character boundary.
fn capped(mut line: String) -> String {
    if line.len() > LOG_MAX_LINE {
        let mut cut = LOG_MAX_LINE - 4;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...\n");
    }
    line
}

fn warn_line(format: Format, message: &str) -> String {
    message_line(format, "warn", "warning", "warning: ", message)
}

fn message_line(format: Format, level: &str, event: &str, prefix: &str, message: &str) -> String {
    match format {
        Format::Text => format!("pminit: {prefix}{message}\n"),
        Format::Json => format!(
            "{{\"ts\":\"{}\",\"level\":\"{level}\",\"event\":\"{event}\",\"message\":{}}}\n",
            timestamp(),
            serde_json::Value::from(message)
        ),
    }
}

/// A fact about the run worth one line (`event` names it in the JSON log),
/// such as the memory budget at start.
pub fn info(event: &str, message: &str) {
    with(|l| {
        let line = message_line(l.format, "info", event, "", message);
        emit(l, line);
    });
}

/// One line, written with a single non-blocking `write` so lines from
/// pminit and its workers do not interleave mid-line. A closed stderr is not
/// our problem.
fn emit(l: &mut Logger, line: String) {
    let format = l.format;
    l.out.line(capped(line).as_bytes(), |n| {
        warn_line(
            format,
            &format!("{n} log line(s) dropped: stderr was not writable"),
        )
    });
}

fn note_line(l: &Logger, note: &Note) -> Option<String> {
    let level = if note.is_debug() { "debug" } else { "info" };
    if note.is_debug() && !l.verbose {
        return None;
    }
    match l.format {
        Format::Text => Some(format!("pminit: {}\n", text(note))),
        Format::Json => {
            // serde_json cannot fail on these plain structs; skip the line if it somehow does.
            let body = serde_json::to_string(note).ok()?;
            Some(format!(
                "{{\"ts\":\"{}\",\"level\":\"{level}\",{}\n",
                timestamp(),
                &body[1..]
            ))
        }
    }
}

pub fn note(note: &Note) {
    with(|l| {
        if let Some(line) = note_line(l, note) {
            emit(l, line);
        }
    });
}

/// A problem pminit survives (a failed kill, a failed spawn...).
pub fn warn(message: &str) {
    with(|l| {
        let line = warn_line(l.format, message);
        emit(l, line);
    });
}

/// `note`, rate-limited per `kind` and `who` (a worker's pid).
pub fn note_limited(kind: Kind, who: i32, note: &Note) {
    with(|l| {
        let Some(line) = note_line(l, note) else {
            return;
        };
        limited(l, kind, who, &text(note), line);
    });
}

/// `warn`, rate-limited per `kind` and `who` (a worker's pid, or 0).
pub fn warn_limited(kind: Kind, who: i32, message: &str) {
    with(|l| {
        let line = warn_line(l.format, message);
        limited(l, kind, who, message, line);
    });
}

fn limited(l: &mut Logger, kind: Kind, who: i32, text: &str, line: String) {
    let (report, allowed) = l.limiter.check(kind, who, text, Instant::now());
    if let Some(r) = report {
        let r = warn_line(l.format, &r);
        emit(l, r);
    }
    if allowed {
        emit(l, line);
    }
}

/// When the log wants a wake-up: a "suppressed" report is due, or lines
/// were dropped and the report of that should be retried.
pub fn next_deadline() -> Option<Instant> {
    with(|l| {
        let retry = l.out.last_drop.filter(|_| l.out.dropped() > 0);
        [l.limiter.next_deadline(), retry.map(|t| t + LOG_RETRY)]
            .into_iter()
            .flatten()
            .min()
    })
}

/// Before exiting: every "suppressed" count now, due or not.
pub fn flush_all() {
    with(|l| {
        let never = Instant::now() + LOG_WINDOW * 2;
        for r in l.limiter.expire(never) {
            let r = warn_line(l.format, &r);
            emit(l, r);
        }
    });
}

/// Writes the reports that are due at `now`.
pub fn flush(now: Instant) {
    with(|l| {
        for r in l.limiter.expire(now) {
            let r = warn_line(l.format, &r);
            emit(l, r);
        }
        if l.out.dropped() > 0 && l.out.last_drop.is_some_and(|t| t + LOG_RETRY <= now) {
            let format = l.format;
            let n = l.out.dropped();
            let report = warn_line(
                format,
                &format!("{n} log line(s) dropped: stderr was not writable"),
            );
            if l.out.try_write(report.as_bytes()) {
                l.out.dropped = 0;
                l.out.last_drop = None;
            } else {
                l.out.last_drop = Some(now);
            }
        }
    });
}

fn how(code: &Option<i32>, signal: &Option<String>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("with code {c}"),
        (None, Some(s)) => format!("by {s}"),
        (None, None) => "for an unknown reason".to_string(),
    }
}

pub fn text(note: &Note) -> String {
    match note {
        Note::WorkerSpawned { .. }
        | Note::WorkerExited { .. }
        | Note::WorkerReady { .. }
        | Note::WorkerNotReady { .. }
        | Note::WorkerDraining { .. }
        | Note::MemoryExceeded { .. }
        | Note::MemoryKilled { .. }
        | Note::WorkerHung { .. }
        | Note::WorkerRestarting { .. }
        | Note::CrashLoop { .. } => worker_text(note),
        _ => run_text(note),
    }
}

/// What happened to one worker.
fn worker_text(note: &Note) -> String {
    match note {
        Note::WorkerSpawned { slot, pid } => format!("worker {slot} started (pid {pid})"),
        Note::WorkerExited {
            slot,
            pid,
            code,
            signal,
            uptime_ms,
        } => format!(
            "worker {slot} (pid {pid}) exited {} after {uptime_ms} ms",
            how(code, signal)
        ),
        Note::WorkerReady {
            slot,
            pid,
            generation,
        } => format!("worker {slot} (pid {pid}, generation {generation}) is ready"),
        Note::WorkerNotReady {
            slot,
            pid,
            listen_timeout_ms,
        } => format!(
            "worker {slot} (pid {pid}) did not say it was ready within {listen_timeout_ms} ms (--listen-timeout): serving anyway"
        ),
        Note::WorkerDraining { slot, pid } => {
            format!("worker {slot} (pid {pid}) asked to stop; it drains")
        }
        Note::MemoryExceeded {
            slot,
            pid,
            rss_bytes,
            reason,
        } => format!(
            "worker {slot} (pid {pid}) uses {} MiB, {}: replacing it, the new worker first",
            rss_bytes >> 20,
            match reason {
                MemoryReason::MaxMemory => "over --max-memory",
                MemoryReason::Heap => "its V8 heap near the heap limit pminit gave it",
                MemoryReason::Share => "near its share of the container's memory limit",
            }
        ),
        Note::MemoryKilled {
            slot,
            pid,
            rss_bytes,
            limit_bytes,
        } => format!(
            "worker {slot} (pid {pid}) uses {} MiB and the container is near its {} MiB limit: killing it (SIGKILL) before the kernel's OOM killer does, its replacement first",
            rss_bytes >> 20,
            limit_bytes >> 20
        ),
        Note::WorkerHung {
            slot,
            pid,
            silent_ms,
            hang_timeout_ms,
        } => format!(
            "worker {slot} (pid {pid}) hung: its event loop has not answered for {silent_ms} ms (--hang-timeout {hang_timeout_ms} ms); starting its replacement and killing it (SIGKILL)"
        ),
        Note::WorkerRestarting {
            slot,
            delay_ms,
            restarts,
        } => format!("worker {slot} restarts in {delay_ms} ms (restart #{restarts})"),
        Note::CrashLoop {
            slot,
            quick_deaths,
            min_uptime_ms,
        } => format!(
            "worker {slot} died {quick_deaths} times in a row within {min_uptime_ms} ms of starting: crash loop, stopping"
        ),
        // Not a worker's note: text() sends those to run_text.
        _ => format!("{note:?}"),
    }
}

/// What happened to the run: reloads, the stop, scaling, signals, exit.
fn run_text(note: &Note) -> String {
    match note {
        Note::ReloadStarted { generation } => format!("reload to generation {generation} started"),
        Note::ReloadQueued { generation } => {
            format!("reload to generation {generation} queued after the current one")
        }
        Note::ReloadFinished {
            generation,
            replaced,
            not_running,
        } => {
            let mut line = format!(
                "reload to generation {generation} finished: {replaced} worker{} replaced",
                if *replaced == 1 { "" } else { "s" }
            );
            if *not_running > 0 {
                line += &format!(
                    "; {not_running} slot{} had no running worker and will start the new release when restarted",
                    if *not_running == 1 { "" } else { "s" }
                );
            }
            line
        }
        Note::ReloadFailed {
            generation,
            slot,
            reason,
        } => format!(
            "reload to generation {generation} failed at worker {slot}: {reason}; the workers not yet replaced keep serving"
        ),
        Note::Interrupted { slot, how } => {
            format!("worker {slot}, which owns the terminal, ended ({how}): stopping")
        }
        Note::StopRequested { signal, delay_ms } if *delay_ms > 0 => {
            format!("{signal} received: still serving for {delay_ms} ms (--stop-delay)")
        }
        Note::StopRequested { signal, .. } => format!("{signal} received: stopping"),
        Note::Stopping {
            signal,
            workers,
            grace_ms,
        } => format!(
            "stopping: {signal} to {workers} worker group(s) and any orphans; SIGKILL in {grace_ms} ms"
        ),
        Note::GraceExpired { grace_ms } => {
            format!("grace of {grace_ms} ms over: sending SIGKILL to what is left")
        }
        Note::Scaled { instances } => format!("now {instances} workers"),
        Note::Prestop => {
            "prestop: draining, `pminit ready` fails from now on; still serving".to_string()
        }
        Note::Forwarded { signal, workers } => {
            format!("forwarded {signal} to {workers} worker group(s)")
        }
        Note::OrphanReaped { pid, code, signal } => {
            format!("reaped orphan pid {pid} (exited {})", how(code, signal))
        }
        Note::Notified { pid, message } => format!("worker pid {pid} notified {message}"),
        Note::Exit { code } => format!("exiting with code {code}"),
        // A worker's note: text() sends those to worker_text.
        _ => format!("{note:?}"),
    }
}

/// RFC 3339 UTC with milliseconds, without a date crate.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_utc(now.as_secs() as i64, now.subsec_millis())
}

fn format_utc(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        let table = [
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (951_782_400, 5, "2000-02-29T00:00:00.005Z"),
            (1_795_174_062, 123, "2026-11-20T11:27:42.123Z"),
            (4_107_542_399, 999, "2100-02-28T23:59:59.999Z"),
        ];
        for (secs, ms, want) in table {
            assert_eq!(format_utc(secs, ms), want);
        }
    }

    #[test]
    fn json_notes_carry_stable_field_names() {
        let n = Note::WorkerExited {
            slot: 1,
            pid: 42,
            code: None,
            signal: Some("SIGKILL".into()),
            uptime_ms: 7,
        };
        let v: serde_json::Value = serde_json::to_value(&n).expect("plain struct");
        assert_eq!(
            v,
            serde_json::json!({"event":"worker_exited","slot":1,"pid":42,"signal":"SIGKILL","uptime_ms":7})
        );
        assert_eq!(text(&n), "worker 1 (pid 42) exited by SIGKILL after 7 ms");
    }
}
