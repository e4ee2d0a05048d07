//! Rolling reload (HUP, `pminit reload`): one generation at a time, slot by
//! slot; a new worker takes its slot only once ready, and only then is the
//! old one asked to stop (it drains under --kill-timeout). A new worker that
//! exits or misses --listen-timeout fails the reload and the old generation
//! keeps serving. HUPs during a reload fold into one more after it.

use std::time::Instant;

use super::*;

impl Supervisor {
    /// HUP or `pminit reload`: start a reload, or fold into one more after
    /// the one in progress. Ignored once stopping.
    pub(super) fn on_hup(&mut self, out: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            return;
        }
        match &mut self.reload {
            Some(r) => {
                r.again = true;
                out.push(Action::Log(Note::ReloadQueued {
                    generation: self.generation + 1,
                }));
            }
            None => self.start_reload(out),
        }
    }

    /// The incoming worker of `slot` said it is ready. It serves beside the
    /// old one for --min-uptime (its probation), then takes the slot: a
    /// release that dies right after saying ready fails the reload while
    /// the old worker still serves. With no old worker left to keep (it
    /// died meanwhile), it takes the slot at once.
    pub(super) fn incoming_ready(&mut self, slot: usize, now: Instant, out: &mut Vec<Action>) {
        let Some(Incoming::Up(worker)) = self.slots[slot].incoming else {
            return;
        };
        let probation = self.settings.min_uptime;
        let old_serves = matches!(self.slots[slot].state, SlotState::Up(_));
        if probation.is_zero() || !old_serves {
            self.promote(slot, now, out);
        } else {
            self.slots[slot].incoming = Some(Incoming::Proving {
                worker,
                until: now + probation,
            });
        }
    }

    /// The incoming worker of `slot` has proved itself: it takes the slot,
    /// the old one drains, the reload moves on.
    pub(super) fn promote(&mut self, slot: usize, now: Instant, out: &mut Vec<Action>) {
        let Some(new) = self.slots[slot].incoming_worker() else {
            return;
        };
        let old = self.slots[slot].state;
        self.slots[slot].go(SlotState::Up(new));
        self.slots[slot].incoming = None;
        self.slots[slot].quick_deaths = 0;
        if let SlotState::Up(old) = old {
            self.retire(slot, old, now, out);
        }
        if let Some(r) = &mut self.reload {
            r.replaced += 1;
        }
        match self.reload {
            Some(r) if r.single => {
                self.reload = None;
                if r.again {
                    self.start_reload(out);
                }
            }
            Some(r) => {
                self.reload = Some(Reload {
                    slot: slot + 1,
                    ..r
                });
                self.advance(out);
            }
            None => {}
        }
    }

    /// Asks `w` to stop; SIGKILL after --kill-timeout.
    pub(super) fn retire(&mut self, slot: usize, w: Worker, now: Instant, out: &mut Vec<Action>) {
        let kill_at = now + self.settings.kill_timeout;
        self.retirees.push(Retiree::of(slot, w, Some(kill_at)));
        out.push(Action::Log(Note::WorkerDraining { slot, pid: w.pid }));
        out.push(Action::Stop {
            pid: w.pid,
            signal: self.settings.stop_signal,
        });
    }

    pub(super) fn start_reload(&mut self, out: &mut Vec<Action>) {
        self.generation += 1;
        out.push(Action::Log(Note::ReloadStarted {
            generation: self.generation,
        }));
        self.reload = Some(Reload {
            slot: 0,
            again: false,
            single: false,
            replaced: 0,
        });
        self.advance(out);
    }

    /// Starts the new worker of the next slot that has a running one, or
    /// finishes the reload. Slots without a worker (backoff, done, retired)
    /// get the new code by their next start anyway.
    pub(super) fn advance(&mut self, out: &mut Vec<Action>) {
        let Some(r) = self.reload else {
            return;
        };
        let next = (r.slot..self.slots.len()).find(|&i| {
            matches!(self.slots[i].state, SlotState::Up(_)) && self.slots[i].incoming.is_none()
        });
        match next {
            Some(slot) => {
                self.reload = Some(Reload { slot, ..r });
                self.slots[slot].incoming = Some(Incoming::Spawning);
                out.push(Action::Spawn { slot });
            }
            None => {
                // Slots with no running worker (backoff, done) start the new
                // release when they start again: say so, claim nothing.
                let not_running = self
                    .slots
                    .iter()
                    .filter(|s| !matches!(s.state, SlotState::Up(_) | SlotState::Retired))
                    .count();
                out.push(Action::Log(Note::ReloadFinished {
                    generation: self.generation,
                    replaced: r.replaced,
                    not_running,
                }));
                self.reload = None;
                if r.again {
                    self.start_reload(out);
                }
            }
        }
    }

    /// The slot being replaced was removed (scale-down): a rolling reload
    /// moves on to the next slot; a one-slot replacement (--max-memory) has
    /// nothing left to do.
    pub(super) fn slot_left_reload(&mut self, out: &mut Vec<Action>) {
        match self.reload {
            Some(r) if r.single => {
                self.reload = None;
                if r.again {
                    self.start_reload(out);
                }
            }
            Some(_) => self.advance(out),
            None => {}
        }
    }

    /// A stop was requested during a reload (--stop-delay keeps serving):
    /// the reload ends here, failed, and its new worker is stopped; nothing
    /// new is started once a stop has begun.
    pub(super) fn abort_reload(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(r) = self.reload else {
            return;
        };
        if let Some(w) = self.slots.get(r.slot).and_then(Slot::incoming_worker) {
            self.slots[r.slot].incoming = None;
            self.retire(r.slot, w, now, out);
        }
        if r.single {
            self.reload = None;
        } else {
            self.reload_failed(r.slot, "pminit is stopping".into(), out);
        }
    }

    pub(super) fn reload_failed(&mut self, slot: usize, reason: String, out: &mut Vec<Action>) {
        out.push(Action::Log(Note::ReloadFailed {
            generation: self.generation,
            slot,
            reason,
        }));
        let again = self.reload.is_some_and(|r| r.again);
        self.reload = None;
        if again && self.phase == Phase::Running {
            self.start_reload(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::*;

    #[test]
    fn rolling_reload_starts_each_new_worker_before_stopping_its_old_one() {
        let mut h = four_ready();
        let a = h.feed(Event::Signal(libc::SIGHUP), 100);
        assert!(has_note(&a, |n| *n == Note::ReloadStarted { generation: 1 }));
        assert_eq!(
            effects(&a),
            vec![Action::Spawn { slot: 0 }],
            "one at a time"
        );
        // Each slot: the old one is stopped only when the new one is ready.
        let mut t = 100;
        for (slot, old) in (0..4).zip(101..=104) {
            let new = 105 + slot as i32;
            t += 10;
            assert!(
                effects(&h.feed(Event::Tick, t)).is_empty(),
                "waiting for {new}"
            );
            let a = h.feed(Event::Ready { pid: new }, t);
            let mut want = vec![Action::Stop {
                pid: old,
                signal: INT,
            }];
            if slot < 3 {
                want.push(Action::Spawn { slot: slot + 1 });
            }
            assert_eq!(effects(&a), want, "slot {slot}");
            // N + 1 at most: N current workers plus one incoming.
            assert!(h.sup.slots.iter().filter(|s| s.incoming.is_some()).count() <= 1);
        }
        let a = notes(&h.feed(Event::Tick, t));
        assert!(a.is_empty() || !a.iter().any(|n| matches!(n, Note::ReloadFailed { .. })));
        assert_eq!(h.sup.reload, None);
        assert_eq!(h.sup.serving(), vec![105, 106, 107, 108]);
        // The old ones drain; SIGKILL after kill-timeout for one that does not exit.
        for old in 101..=103 {
            let a = h.feed(
                Event::Exited {
                    pid: old,
                    status: Status::Code(0),
                },
                t + 5,
            );
            assert!(
                effects(&a)
                    .iter()
                    .all(|e| !matches!(e, Action::Spawn { .. })),
                "not restarted"
            );
        }
        let a = h.feed(Event::Tick, 140 + 8000);
        assert_eq!(
            effects(&a),
            vec![Action::SignalGroup {
                pgid: 104,
                signal: KILL
            }]
        );
    }

    #[test]
    fn reload_finished_note_ends_a_successful_reload() {
        let mut h = Harness::new(Settings {
            instances: 2,
            min_uptime: Duration::ZERO,
            ..settings()
        });
        h.start();
        // Ready on spawn (no readiness awaited): the reload runs through at once.
        let a = h.feed(Event::Signal(libc::SIGHUP), 10);
        assert!(has_note(&a, |n| *n
            == Note::ReloadFinished {
                generation: 1,
                replaced: 2,
                not_running: 0
            }));
        assert_eq!(
            effects(&a),
            vec![
                Action::Spawn { slot: 0 },
                Action::Stop {
                    pid: 101,
                    signal: INT
                },
                Action::Spawn { slot: 1 },
                Action::Stop {
                    pid: 102,
                    signal: INT
                },
            ]
        );
    }

    #[test]
    fn a_new_worker_that_exits_fails_the_reload_and_the_old_ones_keep_serving() {
        let mut h = four_ready();
        h.feed(Event::Signal(libc::SIGHUP), 100);
        h.feed(Event::Ready { pid: 105 }, 120); // slot 0 replaced
                                                // The new worker of slot 1 (pid 106) crashes before it is ready.
        let a = h.feed(
            Event::Exited {
                pid: 106,
                status: Status::Code(1),
            },
            150,
        );
        assert!(has_note(
            &a,
            |n| matches!(n, Note::ReloadFailed { generation: 1, slot: 1, reason } if reason.contains("exited with code 1"))
        ));
        assert!(
            effects(&a).is_empty(),
            "no old worker stopped, nothing restarted: {a:?}"
        );
        assert_eq!(h.sup.serving(), vec![105, 102, 103, 104]);
        assert_eq!(h.sup.reload, None);
    }

    #[test]
    fn a_new_worker_that_misses_listen_timeout_is_stopped_and_the_reload_fails() {
        let mut h = four_ready();
        h.feed(Event::Signal(libc::SIGHUP), 100);
        assert_eq!(h.sup.next_deadline(), Some(h.at(3100)));
        let a = h.feed(Event::Tick, 3100);
        assert!(has_note(
            &a,
            |n| matches!(n, Note::ReloadFailed { slot: 0, reason, .. } if reason.contains("not ready within 3000 ms"))
        ));
        assert_eq!(
            effects(&a),
            vec![Action::Stop {
                pid: 105,
                signal: INT
            }]
        );
        assert_eq!(h.sup.serving(), vec![101, 102, 103, 104]);
        // Its exit later is a drained worker's: no restart, no failure.
        let a = h.feed(
            Event::Exited {
                pid: 105,
                status: Status::Signal(INT),
            },
            3200,
        );
        assert!(effects(&a).is_empty());
    }

    #[test]
    fn hups_during_a_reload_fold_into_one_more_after_it() {
        let mut h = four_ready();
        h.feed(Event::Signal(libc::SIGHUP), 100);
        for t in [101, 102, 103] {
            let a = h.feed(Event::Signal(libc::SIGHUP), t);
            assert!(effects(&a).is_empty(), "queued, not started");
        }
        let mut started = 1;
        for (pid, t) in (105..113).zip((110..).step_by(10)) {
            let a = h.feed(Event::Ready { pid }, t);
            started += notes(&a)
                .iter()
                .filter(|n| matches!(n, Note::ReloadStarted { .. }))
                .count();
        }
        assert_eq!(
            started, 2,
            "three HUPs during the first make one more reload"
        );
        assert_eq!(h.sup.reload, None);
        assert_eq!(h.sup.generation, 2);
        assert_eq!(h.sup.serving(), vec![109, 110, 111, 112]);
    }

    #[test]
    fn a_stop_during_a_reload_stops_the_new_worker_too() {
        let mut h = two_ready_reloading();
        let a = h.feed(Event::Signal(TERM), 30);
        assert_eq!(
            effects(&a)
                .into_iter()
                .filter(|e| matches!(e, Action::Stop { .. }))
                .collect::<Vec<_>>(),
            vec![
                Action::Stop {
                    pid: 101,
                    signal: INT
                },
                Action::Stop {
                    pid: 103,
                    signal: INT
                },
                Action::Stop {
                    pid: 102,
                    signal: INT
                },
            ]
        );
        for pid in 101..=103 {
            h.feed(
                Event::Exited {
                    pid,
                    status: Status::Signal(INT),
                },
                40,
            );
        }
        assert_eq!(exit_code(&h.feed(Event::TreeEmpty, 40)), Some(0));
    }

    #[test]
    fn a_crash_of_the_old_worker_during_its_replacement_is_covered_by_the_new_one() {
        // --min-uptime 1 s: a quick death backs off.
        let mut h = awaiting(Settings {
            instances: 2,
            ..settings()
        });
        h.start();
        h.feed(Event::Ready { pid: 101 }, 10);
        h.feed(Event::Ready { pid: 102 }, 10);
        h.feed(Event::Signal(libc::SIGHUP), 20);
        // Old worker of slot 0 crashes quickly while 103 is starting: backoff.
        h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Code(1),
            },
            30,
        );
        // Nothing old to keep serving: it takes the slot without probation.
        let a = h.feed(Event::Ready { pid: 103 }, 40);
        assert_eq!(
            effects(&a),
            vec![Action::Spawn { slot: 1 }],
            "nothing old to stop in slot 0"
        );
        // The backoff of slot 0 is gone: its new worker serves.
        assert!(effects(&h.feed(Event::Tick, 5000))
            .iter()
            .all(|e| !matches!(e, Action::Spawn { slot: 0 })));
        assert_eq!(h.sup.serving()[0], 103);
    }

    /// Issue 12 point 6: a release that dies right after saying ready
    /// fails the reload; the old worker was never asked to stop.
    #[test]
    fn a_release_that_dies_right_after_ready_fails_the_reload_and_the_old_worker_serves() {
        let mut h = awaiting(Settings {
            instances: 2,
            ..settings() // --min-uptime 1 s
        });
        h.start();
        h.feed(Event::Ready { pid: 101 }, 10);
        h.feed(Event::Ready { pid: 102 }, 10);
        h.feed(Event::Signal(libc::SIGHUP), 20); // 103 for slot 0
        let a = h.feed(Event::Ready { pid: 103 }, 100);
        assert!(
            effects(&a).is_empty(),
            "on probation: the old one serves on"
        );
        assert_eq!(h.sup.next_deadline(), Some(h.at(1100)));
        let a = h.feed(
            Event::Exited {
                pid: 103,
                status: Status::Code(1),
            },
            400,
        );
        assert!(has_note(&a, |n| matches!(
            n,
            Note::ReloadFailed { slot: 0, reason, .. } if reason.contains("300 ms after it said ready")
        )));
        assert!(effects(&a).is_empty(), "nothing stopped, nothing spawned");
        assert_eq!(h.sup.serving(), vec![101, 102]);
        assert!(!h.sup.reloading());
    }

    #[test]
    fn a_new_worker_takes_its_slot_once_it_has_lived_min_uptime_after_ready() {
        let mut h = awaiting(Settings {
            instances: 1,
            ..settings()
        });
        h.start();
        h.feed(Event::Ready { pid: 101 }, 10);
        h.feed(Event::Signal(libc::SIGHUP), 20); // 102
        h.feed(Event::Ready { pid: 102 }, 100);
        assert!(effects(&h.feed(Event::Tick, 1099)).is_empty());
        let a = h.feed(Event::Tick, 1100);
        assert_eq!(
            effects(&a),
            vec![Action::Stop {
                pid: 101,
                signal: INT
            }]
        );
        assert!(has_note(&a, |n| *n
            == Note::ReloadFinished {
                generation: 1,
                replaced: 1,
                not_running: 0
            }));
    }

    /// Issue 12 point 6: "every worker replaced" was claimed when slots in
    /// backoff were replaced by nothing.
    #[test]
    fn reload_finished_says_how_many_workers_it_replaced() {
        let mut h = Harness::new(Settings {
            instances: 2,
            min_uptime: Duration::ZERO,
            restart: Restart::Never,
            ..settings()
        });
        h.start();
        h.feed(
            Event::Exited {
                pid: 102,
                status: Status::Code(0),
            },
            10,
        );
        let a = h.feed(Event::Signal(libc::SIGHUP), 20);
        assert!(has_note(&a, |n| *n
            == Note::ReloadFinished {
                generation: 1,
                replaced: 1,
                not_running: 1
            }));
    }

    /// From mutation testing: the queued reload is announced with the
    /// generation it will make.
    #[test]
    fn a_queued_reload_names_the_generation_it_will_make() {
        let mut h = four_ready();
        h.feed(Event::Signal(libc::SIGHUP), 100); // generation 1
        let a = h.feed(Event::Signal(libc::SIGHUP), 101);
        assert_eq!(notes(&a), vec![Note::ReloadQueued { generation: 2 }]);
    }

    /// From mutation testing: a HUP queued during a reload that fails
    /// still gets its reload.
    #[test]
    fn a_reload_queued_behind_a_failed_one_still_runs() {
        let mut h = four_ready();
        h.feed(Event::Signal(libc::SIGHUP), 100); // 105 for slot 0
        h.feed(Event::Signal(libc::SIGHUP), 101); // queued
        let a = h.feed(
            Event::Exited {
                pid: 105,
                status: Status::Code(1),
            },
            120,
        );
        assert!(has_note(&a, |n| matches!(
            n,
            Note::ReloadFailed { generation: 1, .. }
        )));
        assert!(has_note(&a, |n| *n == Note::ReloadStarted { generation: 2 }));
        assert_eq!(effects(&a), vec![Action::Spawn { slot: 0 }]);
    }

    /// From mutation testing: removing the slot a rolling reload is at
    /// moves the reload on (here: to its end).
    #[test]
    fn removing_the_slot_a_rolling_reload_is_at_moves_it_on() {
        let mut h = awaiting(Settings {
            instances: 2,
            min_uptime: Duration::ZERO,
            ..settings()
        });
        h.start();
        h.feed(Event::Ready { pid: 101 }, 10);
        h.feed(Event::Ready { pid: 102 }, 10);
        h.feed(Event::Signal(libc::SIGHUP), 20); // 103 for slot 0
        h.feed(Event::Ready { pid: 103 }, 30); // slot 0 done; 104 for slot 1
        let a = h.feed(Event::Signal(libc::SIGTTOU), 40); // slot 1 goes
        assert!(has_note(&a, |n| matches!(
            n,
            Note::ReloadFinished {
                generation: 1,
                replaced: 1,
                ..
            }
        )));
        assert!(!h.sup.reloading());
    }

    /// The old worker dies while its replacement is on probation: the new
    /// one takes the slot at once, nothing backs off.
    #[test]
    fn an_old_worker_dying_during_probation_hands_its_slot_over_at_once() {
        let mut h = awaiting(Settings {
            instances: 1,
            ..settings() // --min-uptime 1 s
        });
        h.start();
        h.feed(Event::Ready { pid: 101 }, 10);
        h.feed(Event::Signal(libc::SIGHUP), 20); // 102
        h.feed(Event::Ready { pid: 102 }, 30); // on probation until 1030
        let a = h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Code(1),
            },
            40,
        );
        assert!(effects(&a).is_empty(), "no restart, no stop: {a:?}");
        assert_eq!(h.sup.serving(), vec![102]);
        assert!(!h.sup.reloading());
    }
}
