//! The core's actions, carried out: one function each. None can fail the
//! run: a failed syscall is logged (or becomes an event for the core, as a
//! spawn that could not start does), and only Action::Exit ends the loop.

use super::*;
use crate::control::{Outcome, Reply};
use crate::core::{Action, Answer, Note, Status};
use crate::{ipc, parse, spawn};

impl Shell {
    /// Carries out one action; Some(code) when the run ends with it.
    pub(super) fn execute(&mut self, action: Action, follow: &mut Vec<Event>) -> Option<i32> {
        match action {
            Action::Spawn { slot } => self.spawn(slot, follow),
            Action::Stop { pid, signal } => self.stop(pid, signal),
            Action::SignalGroup { pgid, signal } => self.signal_group(pgid, signal),
            Action::SignalStrays { signal, workers } => self.signal_strays(signal, workers),
            Action::KillAll { workers } => {
                // From now on strays get SIGKILL, not the stop signal; the
                // sweep is done once per turn (once_per_turn).
                self.stray_sweep = None;
                self.kill_pending = Some(workers);
            }
            Action::Steer { slots } => self.steer(&slots),
            Action::Ping { pid } => self.ping(pid, follow),
            Action::Answer { id, answer } => self.answer(id, answer),
            Action::Log(note) => self.note(&note),
            Action::Exit(code) => return Some(code),
        }
        None
    }

    /// Starts the worker of `slot`; a failure is the core's to decide on
    /// (SpawnFailed).
    pub(super) fn spawn(&mut self, slot: usize, follow: &mut Vec<Event>) {
        // A spawn builds the worker's environment (the preload alone is
        // ~20 KB of base64) and frees it: give it back before sleeping.
        self.trim_heap = true;
        match self.launcher.start(slot) {
            Ok(w) => self.started(slot, w, follow),
            Err(e) => self.spawn_failed(slot, &e, follow),
        }
    }

    /// A worker started: its channel and slot are kept until it is reaped.
    pub(super) fn started(&mut self, slot: usize, w: spawn::Started, follow: &mut Vec<Event>) {
        if self.shortages > 0 {
            log::warn(&format!(
                "workers start again, after {} attempt(s) that ran short of resources",
                self.shortages
            ));
            self.shortages = 0;
        }
        if let Some(c) = w.channel {
            self.channels.insert(w.pid, c);
        }
        self.slots.insert(w.pid, slot);
        follow.push(Event::Spawned {
            slot,
            pid: w.pid,
            ready: !w.awaits_ready,
        });
    }

    /// A shortage is reported once until a worker starts again; the core's
    /// restart backoff paces the retries.
    fn spawn_failed(&mut self, slot: usize, e: &std::io::Error, follow: &mut Vec<Event>) {
        let f = self.launcher.program.failure(e);
        if !f.shortage || self.shortages == 0 {
            let retry = if f.shortage {
                "; retrying with the restart backoff (reported once until a worker starts)"
            } else {
                ""
            };
            log::warn(&format!("worker {slot}: {}{retry}", f.message));
        }
        if f.shortage {
            self.shortages += 1;
        }
        follow.push(Event::SpawnFailed {
            slot,
            status: Status::Code(f.code),
        });
    }

    /// Asks a worker to stop: pm2's shutdown message first if configured,
    /// then the stop signal to its process group.
    fn stop(&mut self, pid: i32, signal: i32) {
        if self.send_shutdown {
            if let Some(c) = self.channels.get(&pid) {
                if let Err(e) = c.send(&ipc::ToWorker::shutdown()) {
                    log::warn(&format!(
                        "cannot send the shutdown message to pid {pid}: {e}"
                    ));
                }
            }
        }
        self.signal_group(pid, signal);
    }

    fn signal_group(&self, pgid: i32, signal: i32) {
        if let Err(e) = sys::signal_group(pgid, signal) {
            log::warn(&format!(
                "cannot send {} to group {pgid}: {e}",
                parse::signal_name(signal)
            ));
        }
    }

    fn signal_strays(&mut self, signal: i32, workers: Vec<i32>) {
        let mut sweep = StraySweep::new(signal, workers);
        sweep.sweep(self.me);
        self.stray_sweep = Some(sweep);
    }

    fn steer(&mut self, slots: &[usize]) {
        if let Err(e) = self.launcher.sockets.steer(slots) {
            log::warn(&format!(
                "cannot steer connections to workers {slots:?}: {e}"
            ));
        }
    }

    /// A liveness ping on the worker's IPC channel. A channel that is gone
    /// or closed means the worker can no longer answer: the core hears so.
    fn ping(&mut self, pid: i32, follow: &mut Vec<Event>) {
        match self
            .channels
            .get(&pid)
            .map(|c| c.send(&ipc::ToWorker::ping()))
        {
            Some(Ok(())) => {}
            Some(Err(e)) if e.raw_os_error() != Some(libc::EPIPE) => log::warn_limited(
                log::Kind::IpcDropped,
                pid,
                &format!("cannot ping worker pid {pid}: {e}"),
            ),
            _ => follow.push(Event::Unanswerable { pid }),
        }
    }

    /// The core's answer to a control client.
    fn answer(&mut self, id: u64, answer: Answer) {
        let outcome = match answer {
            Answer::Ready { ready, why } => Outcome::Reply(Reply::Ready { ready, why }),
            Answer::Done { ok, message } => Outcome::Reply(Reply::Done { ok, message }),
            Answer::AfterReload { generation } => Outcome::Wait(generation),
        };
        if let Some(server) = self.control.as_mut() {
            server.answer(id, outcome);
        }
    }

    /// A log line, and what the metrics and waiting clients learn from it.
    fn note(&mut self, note: &Note) {
        if let Note::Exit { .. } = note {
            // What was suppressed is reported before the last line.
            log::flush_all();
        }
        log::note(note);
        if let Some(m) = self.metrics.as_mut() {
            m.counters.observe(note);
        }
        if let Some(c) = self.control.as_mut().filter(|c| c.has_waiters()) {
            c.progress(note, log::text(note));
        }
    }
}
