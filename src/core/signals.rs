//! Signals to pminit: TERM and INT stop, HUP reloads, TTIN/TTOU scale,
//! CHLD and PIPE need nothing here (the shell reaps every turn; a write to
//! a closed pipe fails with EPIPE), and every other catchable signal is
//! forwarded to every worker's process group. The fault signals never
//! arrive here: the shell leaves them unblocked, as the kernel sends them
//! only when pminit itself is broken.

use std::time::Instant;

use super::*;

impl Supervisor {
    pub(super) fn on_signal(&mut self, sig: i32, now: Instant, out: &mut Vec<Action>) {
        match sig {
            libc::SIGTERM | libc::SIGINT => self.request_stop(sig, now, out),
            // The shell reaps on every wake-up; nothing else to do.
            libc::SIGCHLD => {}
            // Only pminit's own write to a closed pipe raises it: the write
            // fails with EPIPE, which is all we need to know.
            libc::SIGPIPE => {}
            libc::SIGHUP => self.on_hup(out),
            libc::SIGTTIN => self.scale_up(now, out),
            libc::SIGTTOU => self.scale_down(now, out),
            _ => {
                let pids = self.worker_pids();
                out.push(Action::Log(Note::Forwarded {
                    signal: signal_name(sig),
                    workers: pids.len(),
                }));
                for pgid in pids {
                    out.push(Action::SignalGroup { pgid, signal: sig });
                }
            }
        }
    }
}
