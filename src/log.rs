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

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::core::Note;
use crate::limits::{LOG_BURST, LOG_MAX_KEYS, LOG_MAX_LINE, LOG_RETRY, LOG_WINDOW};

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

/// How pminit's lines reach stderr without blocking.
enum Sink {
    /// A non-blocking description of its own (pipe, tty), or a regular file.
    Direct(RawFd),
    /// A socket, or what /proc could not reopen: poll for POLLOUT first.
    PollFirst { fd: RawFd, socket: bool },
    /// fd 2 is not open.
    Nowhere,
}

pub struct Output {
    sink: Sink,
    /// Keeps the reopened description open.
    _own: Option<OwnedFd>,
    /// Lines dropped since the last report.
    dropped: u64,
    last_drop: Option<Instant>,
}

impl Output {
    /// The way to write to `fd` (stderr) without blocking.
    pub fn open(fd: BorrowedFd<'_>) -> Output {
        let raw = fd.as_raw_fd();
        // SAFETY: fstat writes into the zeroed struct we pass.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above; a closed fd gives -1.
        let (sink, own) = if unsafe { libc::fstat(raw, &mut st) } != 0 {
            (Sink::Nowhere, None)
        } else {
            match st.st_mode & libc::S_IFMT {
                libc::S_IFREG => (Sink::Direct(raw), None),
                libc::S_IFIFO | libc::S_IFCHR => match reopen_nonblocking(raw) {
                    Some(own) => (Sink::Direct(own.as_raw_fd()), Some(own)),
                    None => (
                        Sink::PollFirst {
                            fd: raw,
                            socket: false,
                        },
                        None,
                    ),
                },
                libc::S_IFSOCK => (
                    Sink::PollFirst {
                        fd: raw,
                        socket: true,
                    },
                    None,
                ),
                _ => (
                    Sink::PollFirst {
                        fd: raw,
                        socket: false,
                    },
                    None,
                ),
            }
        };
        Output {
            sink,
            _own: own,
            dropped: 0,
            last_drop: None,
        }
    }

    /// Writes one line (ending in a newline) whole, or drops and counts it.
    /// The "dropped" report goes first once writing works again.
    pub fn line(&mut self, line: &[u8], report: impl FnOnce(u64) -> String) {
        if self.dropped > 0 {
            let r = report(self.dropped);
            if self.try_write(r.as_bytes()) {
                self.dropped = 0;
                self.last_drop = None;
            } else {
                self.drop_one();
                return;
            }
        }
        if !self.try_write(line) {
            self.drop_one();
        }
    }

    fn drop_one(&mut self) {
        self.dropped += 1;
        self.last_drop = Some(Instant::now());
    }

    /// Lines dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn try_write(&self, line: &[u8]) -> bool {
        let (fd, socket) = match self.sink {
            Sink::Nowhere => return true,
            Sink::Direct(fd) => (fd, false),
            Sink::PollFirst { fd, socket } => {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, zero timeout.
                let r = unsafe { libc::poll(&mut p, 1, 0) };
                if r != 1 || p.revents & libc::POLLOUT == 0 {
                    return false;
                }
                (fd, socket)
            }
        };
        for _ in 0..2 {
            // SAFETY: writing from a buffer of the length we pass.
            let n = unsafe {
                if socket {
                    libc::send(
                        fd,
                        line.as_ptr().cast(),
                        line.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                } else {
                    libc::write(fd, line.as_ptr().cast(), line.len())
                }
            };
            if n >= 0 {
                // Whole: a pipe takes <= PIPE_BUF bytes atomically; a tty or
                // socket may take part, and the rest of one line is not worth
                // blocking for.
                return true;
            }
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return false;
            }
        }
        false
    }
}

/// `/proc/self/fd/N` opened again, write-only and non-blocking: a new open
/// file description of the same pipe or device.
fn reopen_nonblocking(fd: RawFd) -> Option<OwnedFd> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).ok()?;
    // SAFETY: a valid C string; the returned fd is new and ours.
    let new = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    };
    // SAFETY: open returned a new fd that nothing else owns.
    (new >= 0).then(|| unsafe { OwnedFd::from_raw_fd(new) })
}

/// What a rate-limited line is about: one key per kind and worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A malformed or overlong line on a worker's IPC channel.
    IpcDropped,
    /// A worker's sd_notify message (STOPPING=1 ...).
    Notified,
    /// A notify datagram from a process that is not one of our workers.
    NotifyRefused,
    /// A control connection refused or closed (outsider, idle, busy).
    Control,
    /// accept(2) on the control socket failed for lack of a resource.
    Accept,
    /// A worker's listen request refused (bad port or host, bind error).
    Listen,
}

/// The rate limiter: per key, `LOG_BURST` lines per `LOG_WINDOW`.
#[derive(Default)]
pub struct Limiter {
    keys: HashMap<(Kind, i32), Window>,
}

struct Window {
    start: Instant,
    written: u32,
    suppressed: u64,
    /// The last line suppressed, for the report.
    last: String,
}

/// Shared by every key of a kind once `LOG_MAX_KEYS` are tracked.
const SHARED: i32 = i32::MIN;

impl Limiter {
    /// Whether a line of `kind` about `who` may be written now; first, the
    /// report of an earlier window of this key that ended with lines
    /// suppressed, if there is one.
    pub fn check(
        &mut self,
        kind: Kind,
        who: i32,
        line: &str,
        now: Instant,
    ) -> (Option<String>, bool) {
        let who = if self.keys.len() >= LOG_MAX_KEYS && !self.keys.contains_key(&(kind, who)) {
            SHARED
        } else {
            who
        };
        let w = self.keys.entry((kind, who)).or_insert(Window {
            start: now,
            written: 0,
            suppressed: 0,
            last: String::new(),
        });
        let mut report = None;
        if now >= w.start + LOG_WINDOW {
            report = Window::report(w);
            w.start = now;
            w.written = 0;
            w.suppressed = 0;
        }
        if w.written < LOG_BURST {
            w.written += 1;
            (report, true)
        } else {
            w.suppressed += 1;
            w.last.clear();
            w.last.push_str(line);
            (report, false)
        }
    }

    /// Reports of windows that ended by `now`; forgets them.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        self.keys.retain(|_, w| {
            if now < w.start + LOG_WINDOW {
                return true;
            }
            out.extend(Window::report(w));
            false
        });
        out
    }

    /// When the next "suppressed" report is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.keys
            .values()
            .filter(|w| w.suppressed > 0)
            .map(|w| w.start + LOG_WINDOW)
            .min()
    }
}

impl Window {
    fn report(w: &Window) -> Option<String> {
        (w.suppressed > 0).then(|| {
            format!(
                "suppressed {} more line(s) like this in {} s: {}",
                w.suppressed,
                LOG_WINDOW.as_secs(),
                w.last
            )
        })
    }
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
    match format {
        Format::Text => format!("pminit: warning: {message}\n"),
        Format::Json => format!(
            "{{\"ts\":\"{}\",\"level\":\"warn\",\"event\":\"warning\",\"message\":{}}}\n",
            timestamp(),
            serde_json::Value::from(message)
        ),
    }
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
    fn repeated_lines_are_limited_per_kind_and_worker_and_counted() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let mut written = 0;
        for i in 0..1000 {
            let (report, ok) = l.check(Kind::Notified, 7, &format!("line {i}"), t0);
            assert!(report.is_none());
            written += u32::from(ok);
        }
        assert_eq!(written, LOG_BURST);
        // Another worker, another kind: their own budgets.
        assert!(l.check(Kind::Notified, 8, "x", t0).1);
        assert!(l.check(Kind::IpcDropped, 7, "x", t0).1);
        assert_eq!(l.next_deadline(), Some(t0 + LOG_WINDOW));
        assert!(l.expire(t0 + LOG_WINDOW / 2).is_empty());
        let reports = l.expire(t0 + LOG_WINDOW);
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert!(
            reports[0].starts_with("suppressed 995 more line(s)")
                && reports[0].ends_with("line 999"),
            "{}",
            reports[0]
        );
        assert_eq!(l.next_deadline(), None);
        // A new window starts clean.
        assert!(l.check(Kind::Notified, 7, "again", t0 + LOG_WINDOW).1);
    }

    #[test]
    fn the_limiters_keys_are_bounded() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        for who in 0..10_000 {
            l.check(Kind::NotifyRefused, who, "x", t0);
        }
        assert!(l.keys.len() <= LOG_MAX_KEYS + 1);
    }

    use std::os::fd::AsFd;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two-element array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both fds are new and ours.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn read_all(fd: &OwnedFd) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            // SAFETY: reading into a buffer of the length we pass.
            let n = unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            let n = if n < 0 {
                // Not a socket: a non-blocking read of the pipe.
                // SAFETY: as above.
                unsafe {
                    let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
                    libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
                    libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                }
            } else {
                n
            };
            if n <= 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
    }

    #[test]
    fn a_full_pipe_drops_whole_lines_and_the_original_fd_still_blocks() {
        let (r, w) = pipe();
        let mut out = Output::open(w.as_fd());
        assert!(matches!(out.sink, Sink::Direct(fd) if fd != w.as_raw_fd()));
        // The original description is untouched: still blocking.
        // SAFETY: F_GETFL on an fd we own.
        let fl = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(fl & libc::O_NONBLOCK, 0);
        let line = format!("{}\n", "x".repeat(99));
        let report = |n| format!("dropped {n}\n");
        // Far more than a pipe holds (64 KiB): never blocks.
        for _ in 0..2000 {
            out.line(line.as_bytes(), report);
        }
        assert!(out.dropped() > 0);
        // Whole lines only: the flood's, and the reports of what was dropped
        // (a short report may fit where a long line did not).
        let got = String::from_utf8(read_all(&r)).expect("text");
        let mut accounted = out.dropped();
        for l in got.lines() {
            match l.strip_prefix("dropped ") {
                Some(n) => accounted += n.parse::<u64>().expect("a count"),
                None => {
                    assert_eq!(l.len(), 99, "a torn line: {l:?}");
                    accounted += 1;
                }
            }
        }
        assert_eq!(accounted, 2000);
        let dropped = out.dropped();
        out.line(b"next\n", report);
        assert_eq!(out.dropped(), 0);
        assert_eq!(
            read_all(&r),
            format!("dropped {dropped}\nnext\n").as_bytes()
        );
    }

    #[test]
    fn a_socket_is_written_only_when_it_has_room() {
        use std::os::unix::net::UnixStream;
        let (a, b) = UnixStream::pair().expect("socketpair");
        let (a, b) = (OwnedFd::from(a), OwnedFd::from(b));
        let mut out = Output::open(a.as_fd());
        assert!(matches!(out.sink, Sink::PollFirst { socket: true, .. }));
        let line = format!("{}\n", "y".repeat(499));
        for _ in 0..5000 {
            out.line(line.as_bytes(), |n| format!("dropped {n}\n"));
        }
        assert!(out.dropped() > 0);
        let got = read_all(&b);
        assert!(got.len() >= 500 && got.len() % 500 == 0, "{}", got.len());
    }

    #[test]
    fn long_lines_are_capped_to_one_atomic_write() {
        let l = capped(format!("{}\n", "é".repeat(5000)));
        assert!(
            l.len() <= LOG_MAX_LINE && l.ends_with("...\n"),
            "{}",
            l.len()
        );
    }

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
