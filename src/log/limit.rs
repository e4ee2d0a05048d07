//! Rate limiting of repeated log lines: `LOG_BURST` lines per key per
//! `LOG_WINDOW`, then one "suppressed N" line; at most `LOG_MAX_KEYS` keys.

use super::*;

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
    /// The metrics endpoint: accept failures, clients evicted or timed out.
    Metrics,
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
}
