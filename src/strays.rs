//! Orphans reparented to pminit ("strays") while it stops: the stop signal
//! to each one, also to those that arrive after the first sweep, and the
//! SIGKILL sweep at the grace's end. Work is bounded by pminit's children:
//! /proc is scanned once per loop turn at most, and not at all when pminit
//! has no child left.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::sys;

/// While stopping, how often pminit looks again for orphans reparented to it
/// since the stop sweep (a grandchild's parent can exit without pminit
/// hearing of it), and the least time between two looks when reaps prompt
/// one. Only between the stop signal and the grace's end: an idle pminit
/// has no timer.
const STRAY_RESWEEP: Duration = Duration::from_millis(100);
const STRAY_RESWEEP_MIN: Duration = Duration::from_millis(10);

/// The stop signal's sweep over the strays, kept up until the grace ends:
/// an orphan reparented later gets the stop signal too, once.
pub struct StraySweep {
    signal: i32,
    workers: Vec<i32>,
    asked: HashSet<i32>,
    last: Instant,
    /// When the next look is due (feeds the poll timeout while stopping).
    pub next: Instant,
}

impl StraySweep {
    pub fn new(signal: i32, workers: Vec<i32>) -> StraySweep {
        let now = Instant::now();
        StraySweep {
            signal,
            workers,
            asked: HashSet::new(),
            last: now,
            next: now,
        }
    }

    /// One look at pminit's children: the stop signal to each new stray.
    pub fn sweep(&mut self, me: i32) {
        let now = Instant::now();
        self.last = now;
        self.next = now + STRAY_RESWEEP;
        // No child at all (the common end of a run): no /proc scan.
        if !sys::has_children() {
            return;
        }
        for pid in strays(me, &self.workers) {
            if self.asked.insert(pid) {
                let _ = sys::kill(pid, self.signal);
            }
        }
    }

    /// Something was reaped: its children, if any, are ours now; look soon.
    pub fn reaped(&mut self) {
        self.next = self.next.min(self.last + STRAY_RESWEEP_MIN);
    }
}

/// Children of pminit outside the worker groups: orphans reparented to us.
fn strays(me: i32, workers: &[i32]) -> Vec<i32> {
    sys::children_of(me)
        .into_iter()
        .filter(|pid| !workers.contains(pid))
        .filter(|&pid| sys::getpgid(pid).is_none_or(|g| !workers.contains(&g)))
        .collect()
}

/// SIGKILL for everything pminit answers for. As PID 1 that is every other
/// process in the namespace, orphans included: kill(-1) reaches exactly them.
pub fn kill_all(pid1: bool, me: i32, workers: &[i32]) {
    if pid1 {
        let _ = sys::kill(-1, libc::SIGKILL);
        return;
    }
    for &pgid in workers {
        let _ = sys::signal_group(pgid, libc::SIGKILL);
    }
    // No child at all (the common end of a run): no /proc scan.
    if !sys::has_children() {
        return;
    }
    for pid in sys::children_of(me) {
        let _ = sys::kill(pid, libc::SIGKILL);
        if let Some(g) = sys::getpgid(pid).filter(|&g| g == pid) {
            let _ = sys::signal_group(g, libc::SIGKILL);
        }
    }
}
