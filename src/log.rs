//! pminit's own event lines on stderr: `text` for people, `json` (one object
//! per line) for Loki or Elasticsearch. Workers' output is never touched.

use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::core::Note;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

struct Logger {
    format: Format,
    verbose: bool,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Set once at start-up; before that, lines are text and not verbose.
pub fn init(format: Format, verbose: bool) {
    let _ = LOGGER.set(Logger { format, verbose });
}

fn logger() -> &'static Logger {
    LOGGER.get_or_init(|| Logger {
        format: Format::Text,
        verbose: false,
    })
}

/// One line, written with a single `write` so lines from pminit and its
/// workers do not interleave mid-line. A closed stderr is not our problem.
fn emit(line: String) {
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

pub fn note(note: &Note) {
    let l = logger();
    let level = if note.is_debug() { "debug" } else { "info" };
    if note.is_debug() && !l.verbose {
        return;
    }
    match l.format {
        Format::Text => emit(format!("pminit: {}\n", text(note))),
        Format::Json => {
            // serde_json cannot fail on these plain structs; skip the line if it somehow does.
            let Ok(body) = serde_json::to_string(note) else {
                return;
            };
            emit(format!(
                "{{\"ts\":\"{}\",\"level\":\"{level}\",{}\n",
                timestamp(),
                &body[1..]
            ));
        }
    }
}

/// A problem pminit survives (a failed kill, a failed spawn...).
pub fn warn(message: &str) {
    match logger().format {
        Format::Text => emit(format!("pminit: warning: {message}\n")),
        Format::Json => emit(format!(
            "{{\"ts\":\"{}\",\"level\":\"warn\",\"event\":\"warning\",\"message\":{}}}\n",
            timestamp(),
            serde_json::Value::from(message)
        )),
    }
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
        } => format!(
            "worker {slot} (pid {pid}) uses {} MiB, over --max-memory: replacing it",
            rss_bytes >> 20
        ),
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
