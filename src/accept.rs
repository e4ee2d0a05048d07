//! accept(2) failing for lack of a resource (EMFILE, ENFILE, ENOBUFS,
//! ENOMEM): the connection stays queued, so waking for it again at once
//! would spin. The listening socket leaves the poll set for a back-off
//! (`ACCEPT_BACKOFF_MIN` doubling to `ACCEPT_BACKOFF_MAX`, reset by the next
//! accept), the shortage is logged rate-limited, and the pause's end feeds
//! the loop's poll timeout. Shared by the control and metrics servers.

use nix::errno::Errno;
use std::time::{Duration, Instant};

use crate::limits::{ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN};
use crate::log;

pub struct AcceptPause {
    until: Option<Instant>,
    backoff: Duration,
}

impl AcceptPause {
    pub fn new() -> AcceptPause {
        AcceptPause {
            until: None,
            backoff: ACCEPT_BACKOFF_MIN,
        }
    }

    /// The listening socket belongs in the poll set.
    pub fn polling(&self) -> bool {
        self.until.is_none()
    }

    /// When the pause ends, for the poll timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.until
    }

    /// Accept now? When the pause is over (the listener is then back in
    /// the poll set, and a queued connection makes it readable), or when the
    /// listener polled readable.
    pub fn due(&mut self, now: Instant, readable: bool) -> bool {
        if self.until.is_some_and(|t| t <= now) {
            self.until = None;
            return true;
        }
        readable
    }

    /// The errors that are a shortage, not the client's doing.
    pub fn is_shortage(e: Errno) -> bool {
        matches!(
            e,
            Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM
        )
    }

    /// A shortage: pause, say so (rate-limited), and double the next pause.
    pub fn shortage(&mut self, now: Instant, e: Errno, kind: log::Kind, who: i32, what: &str) {
        self.until = Some(now + self.backoff);
        log::warn_limited(
            kind,
            who,
            &format!(
                "{what}: {}; retrying in {} ms",
                e.desc(),
                self.backoff.as_millis()
            ),
        );
        self.backoff = (self.backoff * 2).min(ACCEPT_BACKOFF_MAX);
    }

    /// A connection was accepted: the next shortage starts short again.
    pub fn accepted(&mut self) {
        self.backoff = ACCEPT_BACKOFF_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortages_pause_accepting_doubling_to_the_cap() {
        let t0 = Instant::now();
        let mut p = AcceptPause::new();
        assert!(p.polling() && p.deadline().is_none());
        for ms in [100, 200, 400, 800, 1000, 1000] {
            p.shortage(t0, Errno::EMFILE, log::Kind::Accept, 0, "test");
            assert_eq!(p.deadline(), Some(t0 + Duration::from_millis(ms)));
            assert!(!p.polling());
        }
        assert!(!p.due(t0, false), "not before the pause ends");
        assert!(p.due(t0 + Duration::from_secs(1), false));
        assert!(p.polling());
        p.accepted();
        p.shortage(t0, Errno::ENFILE, log::Kind::Accept, 0, "test");
        assert_eq!(p.deadline(), Some(t0 + Duration::from_millis(100)));
        assert!(AcceptPause::is_shortage(Errno::ENOMEM));
        assert!(!AcceptPause::is_shortage(Errno::EAGAIN));
    }
}
