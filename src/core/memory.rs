//! A worker over its memory: over --max-memory, its V8 heap near the limit
//! pminit gave it, or its memory near its share of the container's limit.
//! It is replaced as in a one-slot reload, the new worker first, so the
//! slot never stops serving. One about to exhaust the container cannot
//! wait for that: its replacement starts and it is SIGKILLed at once, so
//! the kernel's OOM killer (which on cgroup v2 under Kubernetes kills the
//! whole container) never has to act.

use super::*;

impl Supervisor {
    /// Replaces one worker that grew past --max-memory, as a reload would:
    /// the new one first, the old one drains once it is ready.
    pub(super) fn over_memory(
        &mut self,
        pid: i32,
        rss: u64,
        reason: MemoryReason,
        out: &mut Vec<Action>,
    ) {
        if self.phase != Phase::Running || self.reload.is_some() {
            // A reload in progress replaces it anyway (or the check repeats).
            return;
        }
        let Some(slot) = self
            .slots
            .iter()
            .position(|s| s.worker().is_some_and(|w| w.pid == pid && w.ready))
        else {
            return;
        };
        out.push(Action::Log(Note::MemoryExceeded {
            slot,
            pid,
            rss_bytes: rss,
            reason,
        }));
        self.reload = Some(Reload {
            slot,
            again: false,
            single: true,
            replaced: 0,
        });
        self.slots[slot].incoming = Some(Incoming::Spawning);
        out.push(Action::Spawn { slot });
    }

    /// A worker about to exhaust the container: replaced and killed now.
    /// Any worker of a slot counts (a reload's new one, or a retiree that
    /// keeps growing); one already being killed is left to its SIGKILL.
    pub(super) fn memory_critical(
        &mut self,
        pid: i32,
        rss: u64,
        limit: u64,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if matches!(self.phase, Phase::Killing | Phase::Exited) {
            return;
        }
        let note = |slot| {
            Action::Log(Note::MemoryKilled {
                slot,
                pid,
                rss_bytes: rss,
                limit_bytes: limit,
            })
        };
        if let Some(slot) = self
            .slots
            .iter()
            .position(|s| s.worker().is_some_and(|w| w.pid == pid))
        {
            out.push(note(slot));
            self.replace_now(slot, now, out);
        } else if let Some(d) = self
            .retirees
            .iter_mut()
            .find(|d| d.pid == pid && !d.sigkilled)
        {
            d.kill_at = None;
            d.sigkilled = true;
            out.push(note(d.slot));
            out.push(Action::SignalGroup {
                pgid: pid,
                signal: libc::SIGKILL,
            });
        } else if let Some(slot) = self
            .slots
            .iter()
            .position(|s| s.incoming_worker().is_some_and(|w| w.pid == pid))
        {
            // A new worker that grows this fast is no release to keep: the
            // reload fails and it is killed; the old worker keeps serving.
            let Some(w) = self.slots[slot].incoming_worker() else {
                return;
            };
            self.slots[slot].incoming = None;
            out.push(note(slot));
            self.kill_tracked(slot, w, out);
            if self.phase == Phase::Running {
                let reason = "the new worker was about to exhaust the container's memory";
                self.reload_failed(slot, reason.to_string(), out);
            } else if self.reload.is_some() {
                self.reload = None;
            }
        }
    }

    /// SIGKILLs `w`, tracked as a retiree until it is reaped (its death by
    /// SIGKILL is our doing and changes no exit code).
    pub(super) fn kill_tracked(&mut self, slot: usize, w: Worker, out: &mut Vec<Action>) {
        self.retirees.push(Retiree::of(slot, w, None));
        out.push(Action::SignalGroup {
            pgid: w.pid,
            signal: libc::SIGKILL,
        });
    }

    /// The current worker of `slot` is useless (hung, or about to exhaust
    /// the container): its replacement is started first, then it is
    /// SIGKILLed (its JavaScript cannot run a drain). A ready replacement
    /// on probation takes the slot at once instead. Counted as a restart.
    pub(super) fn replace_now(&mut self, slot: usize, now: Instant, out: &mut Vec<Action>) {
        let SlotState::Up(w) = self.slots[slot].state else {
            return;
        };
        self.slots[slot].go(SlotState::Done);
        if self.phase != Phase::Running {
            // Stopping: nothing new starts; the stop accounts for it.
            self.kill_tracked(slot, w, out);
            return;
        }
        if matches!(self.slots[slot].incoming, Some(Incoming::Proving { .. })) {
            self.promote(slot, now, out);
        } else {
            let s = &mut self.slots[slot];
            s.restarts += 1;
            out.push(Action::Log(Note::WorkerRestarting {
                slot,
                delay_ms: 0,
                restarts: s.restarts,
            }));
            self.spawn(slot, out);
        }
        self.kill_tracked(slot, w, out);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::*;

    fn critical(pid: i32) -> Event {
        Event::MemoryCritical {
            pid,
            rss: 400 << 20,
            limit: 512 << 20,
        }
    }

    #[test]
    fn a_worker_about_to_exhaust_the_container_is_replaced_first_then_killed() {
        let mut h = four_ready();
        let a = h.feed(critical(103), 50);
        assert!(has_note(&a, |n| *n
            == Note::MemoryKilled {
                slot: 2,
                pid: 103,
                rss_bytes: 400 << 20,
                limit_bytes: 512 << 20
            }));
        assert_eq!(
            effects(&a),
            vec![
                Action::Spawn { slot: 2 },
                Action::SignalGroup {
                    pgid: 103,
                    signal: KILL
                }
            ]
        );
        assert_eq!(h.sup.serving(), vec![101, 102, 105, 104]);
        // Its death by our SIGKILL restarts nothing and changes no code.
        let a = h.feed(
            Event::Exited {
                pid: 103,
                status: Status::Signal(KILL),
            },
            60,
        );
        assert!(effects(&a).is_empty(), "{a:?}");
        // Asked again about a pid it no longer has: nothing.
        assert!(h.feed(critical(103), 70).is_empty());
    }

    #[test]
    fn a_retiree_that_keeps_growing_is_killed_once() {
        let mut h = four_ready();
        h.feed(Event::Signal(libc::SIGTTOU), 20); // 104 retires, drains
        let a = h.feed(critical(104), 30);
        assert!(has_note(&a, |n| matches!(
            n,
            Note::MemoryKilled {
                slot: 3,
                pid: 104,
                ..
            }
        )));
        assert_eq!(
            effects(&a),
            vec![Action::SignalGroup {
                pgid: 104,
                signal: KILL
            }]
        );
        assert!(h.feed(critical(104), 40).is_empty(), "already killed");
        // No SIGKILL again at its --kill-timeout.
        let a = h.feed(Event::Tick, 20 + 8000);
        assert!(effects(&a).is_empty(), "{a:?}");
    }

    #[test]
    fn a_reloads_new_worker_that_grows_this_fast_fails_the_reload() {
        let mut h = four_ready();
        h.feed(Event::Signal(libc::SIGHUP), 20); // 105 for slot 0
        let a = h.feed(critical(105), 30);
        assert!(has_note(&a, |n| matches!(
            n,
            Note::MemoryKilled {
                slot: 0,
                pid: 105,
                ..
            }
        )));
        assert!(has_note(&a, |n| matches!(
            n,
            Note::ReloadFailed { slot: 0, .. }
        )));
        assert_eq!(
            effects(&a),
            vec![Action::SignalGroup {
                pgid: 105,
                signal: KILL
            }]
        );
        assert_eq!(
            h.sup.serving(),
            vec![101, 102, 103, 104],
            "the old ones serve"
        );
        assert!(!h.sup.reloading());
    }

    #[test]
    fn nothing_is_killed_for_memory_once_the_final_kill_has_begun() {
        let mut h = four_ready();
        h.feed(Event::Signal(TERM), 20);
        h.feed(Event::Tick, 20 + 8000); // the grace ends: Killing
        assert!(h.feed(critical(101), 8100).is_empty());
    }

    #[test]
    fn a_worker_over_max_memory_is_replaced_new_one_first() {
        let mut h = four_ready();
        let a = h.feed(
            Event::OverMemory {
                pid: 103,
                rss: 600 << 20,
                reason: MemoryReason::MaxMemory,
            },
            50,
        );
        assert!(has_note(&a, |n| matches!(
            n,
            Note::MemoryExceeded {
                slot: 2,
                pid: 103,
                ..
            }
        )));
        assert_eq!(effects(&a), vec![Action::Spawn { slot: 2 }]);
        let a = h.feed(Event::Ready { pid: 105 }, 80);
        assert_eq!(
            effects(&a),
            vec![Action::Stop {
                pid: 103,
                signal: INT
            }]
        );
        assert_eq!(h.sup.serving(), vec![101, 102, 105, 104]);
        assert_eq!(h.sup.reload, None);
        assert_eq!(h.sup.generation, 0, "a replacement, not a new generation");
    }
}
