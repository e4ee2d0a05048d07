//! A worker that exits on its own: the `--restart` policy, the backoff
//! between quick deaths, and the crash loop that ends the run. Also the
//! orphans reaped while running (logged, nothing else).

use std::time::{Duration, Instant};

use super::*;

pub const BACKOFF_START: Duration = Duration::from_millis(100);

pub const BACKOFF_MAX: Duration = Duration::from_secs(15);

/// Restart delay after the `n`-th quick death in a row (n >= 1).
pub fn backoff(n: u32) -> Duration {
    let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
    BACKOFF_START
        .checked_mul(factor)
        .map_or(BACKOFF_MAX, |d| d.min(BACKOFF_MAX))
}

impl Supervisor {
    pub(super) fn spawn(&mut self, slot: usize, out: &mut Vec<Action>) {
        self.slots[slot].go(SlotState::Spawning);
        out.push(Action::Spawn { slot });
    }

    pub(super) fn on_exit(
        &mut self,
        pid: i32,
        status: Status,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let (code, signal) = split_status(status);
        let exited = |slot: usize, since: Instant| Note::WorkerExited {
            slot,
            pid,
            code,
            signal: signal.clone(),
            uptime_ms: millis(now.saturating_duration_since(since)),
        };
        if let Some(i) = self.retirees.iter().position(|d| d.pid == pid) {
            let d = self.retirees.remove(i);
            out.push(Action::Log(exited(d.slot, d.since)));
            if !(d.sigkilled && status == Status::Signal(libc::SIGKILL)) {
                self.after_planned_exit(status, out);
            } else if self.phase == Phase::Killing {
                self.record_stop_status(status, out);
            }
            return;
        }
        if let Some(slot) = self
            .slots
            .iter()
            .position(|s| s.incoming_worker().is_some_and(|w| w.pid == pid))
        {
            let since = self.slots[slot].incoming_worker().map_or(now, |w| w.since);
            let proving = match self.slots[slot].incoming {
                Some(Incoming::Proving { until, .. }) => Some(until),
                _ => None,
            };
            self.slots[slot].incoming = None;
            out.push(Action::Log(exited(slot, since)));
            if self.phase == Phase::Running {
                let how = match status {
                    Status::Code(c) => format!("with code {c}"),
                    Status::Signal(s) => format!("by {}", signal_name(s)),
                };
                let probation = millis(self.settings.min_uptime);
                let reason = match proving {
                    Some(until) => format!(
                        "the new worker exited {how} {} ms after it said ready (it must live --min-uptime {probation} ms after that)",
                        probation.saturating_sub(millis(until.saturating_duration_since(now)))
                    ),
                    None => format!("the new worker exited {how} before it was ready"),
                };
                self.reload_failed(slot, reason, out);
            } else {
                self.after_planned_exit(status, out);
            }
            return;
        }
        let found = self
            .slots
            .iter()
            .position(|s| s.worker().is_some_and(|w| w.pid == pid));
        let Some(slot) = found else {
            out.push(Action::Log(Note::OrphanReaped { pid, code, signal }));
            if self.phase == Phase::Killing {
                // A stray may have been reparented to us since the last sweep.
                out.push(Action::KillAll {
                    workers: self.worker_pids(),
                });
            }
            return;
        };
        let since = self.slots[slot].worker().map_or(now, |w| w.since);
        out.push(Action::Log(exited(slot, since)));
        self.worker_gone(slot, status, now.saturating_duration_since(since), now, out);
    }

    /// The current worker of `slot` is gone (exited, or never started).
    pub(super) fn worker_gone(
        &mut self,
        slot: usize,
        status: Status,
        uptime: Duration,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.slots[slot].go(SlotState::Done);
        if self.phase == Phase::Running
            && matches!(self.slots[slot].incoming, Some(Incoming::Proving { .. }))
        {
            // Its ready replacement, on probation, covers the slot now.
            self.promote(slot, now, out);
            return;
        }
        match self.phase {
            Phase::Running => self.unplanned_exit(slot, status, uptime, now, out),
            Phase::StopDelay { .. } => {
                if status != Status::Code(0) {
                    self.set_code(status.code());
                }
            }
            Phase::Stopping { .. } | Phase::Killing => self.record_stop_status(status, out),
            Phase::Exited => {}
        }
    }

    pub(super) fn unplanned_exit(
        &mut self,
        slot: usize,
        status: Status,
        uptime: Duration,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let s = &self.settings;
        if s.interactive && slot == 0 {
            // Ctrl-C at the terminal reaches only this worker (it owns the
            // terminal). Whether it died of it or handled it and exited 0,
            // the user wants the whole run stopped, as a shell would.
            let ended = match status {
                Status::Signal(sig @ (libc::SIGINT | libc::SIGQUIT)) => Some(signal_name(sig)),
                Status::Code(0) => Some("exit code 0".to_string()),
                _ => None,
            };
            if let Some(how) = ended {
                out.push(Action::Log(Note::Interrupted { slot, how }));
                self.set_code(status.code());
                self.stop_now(now, out);
                return;
            }
        }
        let restart = match s.restart {
            Restart::Always => true,
            Restart::OnFailure => status != Status::Code(0),
            Restart::Never => false,
        };
        if !restart {
            if status != Status::Code(0) {
                self.set_code(status.code());
            }
            if self.slots.iter().all(Slot::finished) {
                // Nothing left to run: stop the strays, then exit.
                self.stop_now(now, out);
            }
            return;
        }
        let min_uptime = s.min_uptime;
        let max_restarts = s.max_restarts;
        let info = &mut self.slots[slot];
        info.quick_deaths = if uptime >= min_uptime {
            0
        } else {
            info.quick_deaths + 1
        };
        if info.quick_deaths >= max_restarts {
            out.push(Action::Log(Note::CrashLoop {
                slot,
                quick_deaths: info.quick_deaths,
                min_uptime_ms: millis(min_uptime),
            }));
            self.set_code(match status.code() {
                0 => 1,
                c => c,
            });
            self.stop_now(now, out);
            return;
        }
        let delay = if info.quick_deaths == 0 {
            Duration::ZERO
        } else {
            backoff(info.quick_deaths)
        };
        info.restarts += 1;
        out.push(Action::Log(Note::WorkerRestarting {
            slot,
            delay_ms: millis(delay),
            restarts: info.restarts,
        }));
        if delay.is_zero() {
            self.spawn(slot, out);
        } else {
            info.go(SlotState::Backoff { until: now + delay });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::*;
    use super::*;

    #[test]
    fn restart_policy_table() {
        // (policy, status, restarted?)
        let table = [
            (Restart::OnFailure, Status::Code(0), false),
            (Restart::OnFailure, Status::Code(1), true),
            (Restart::OnFailure, Status::Signal(KILL), true),
            (Restart::Always, Status::Code(0), true),
            (Restart::Always, Status::Signal(libc::SIGSEGV), true),
            (Restart::Never, Status::Code(3), false),
            (Restart::Never, Status::Signal(KILL), false),
        ];
        for (restart, status, restarted) in table {
            let mut h = Harness::new(Settings {
                restart,
                ..settings()
            });
            h.start();
            // Lived longer than min-uptime: an immediate restart if any.
            let a = h.feed(Event::Exited { pid: 101, status }, 5000);
            let spawned = effects(&a).contains(&Action::Spawn { slot: 0 });
            assert_eq!(spawned, restarted, "{restart:?} {status:?}");
        }
    }

    #[test]
    fn not_restarted_single_worker_exits_with_its_code_after_strays() {
        let table = [
            (Status::Code(0), 0),
            (Status::Code(3), 3),
            (Status::Code(255), 255),
            (Status::Signal(libc::SIGSEGV), 139),
            (Status::Signal(KILL), 137),
        ];
        for (status, code) in table {
            let mut h = Harness::new(Settings {
                restart: Restart::Never,
                ..settings()
            });
            h.start();
            let a = h.feed(Event::Exited { pid: 101, status }, 10);
            // Strays get the stop signal; exit waits for the tree.
            assert!(effects(&a).contains(&Action::SignalStrays {
                signal: INT,
                workers: vec![]
            }));
            assert_eq!(exit_code(&a), None);
            let a = h.feed(Event::TreeEmpty, 10);
            assert_eq!(exit_code(&a), Some(code), "{status:?}");
        }
    }

    #[test]
    fn backoff_doubles_from_100ms_to_15s() {
        let table = [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (8, 12_800),
            (9, 15_000),
            (16, 15_000),
            (40, 15_000),
        ];
        for (n, ms) in table {
            assert_eq!(backoff(n), Duration::from_millis(ms), "n={n}");
        }
    }

    #[test]
    fn quick_deaths_back_off_then_respawn_at_the_deadline() {
        let mut h = Harness::new(settings());
        h.start();
        let a = h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Code(1),
            },
            50,
        );
        assert!(!effects(&a).contains(&Action::Spawn { slot: 0 }));
        assert!(notes(&a).contains(&Note::WorkerRestarting {
            slot: 0,
            delay_ms: 100,
            restarts: 1
        }));
        assert_eq!(h.sup.next_deadline(), Some(h.at(150)));
        assert!(effects(&h.feed(Event::Tick, 149)).is_empty());
        let a = h.feed(Event::Tick, 150);
        assert_eq!(effects(&a), vec![Action::Spawn { slot: 0 }]);
        assert_eq!(h.sup.next_deadline(), None);
        // Second quick death: 200 ms.
        h.feed(
            Event::Exited {
                pid: 102,
                status: Status::Code(1),
            },
            160,
        );
        assert_eq!(h.sup.next_deadline(), Some(h.at(360)));
    }

    #[test]
    fn living_min_uptime_resets_the_count() {
        let mut h = Harness::new(settings());
        h.start();
        h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Code(1),
            },
            10,
        );
        h.feed(Event::Tick, 110);
        // pid 102 lives 2 s: restarted at once, count reset.
        let a = h.feed(
            Event::Exited {
                pid: 102,
                status: Status::Code(1),
            },
            2110,
        );
        assert!(effects(&a).contains(&Action::Spawn { slot: 0 }));
        assert!(notes(&a).contains(&Note::WorkerRestarting {
            slot: 0,
            delay_ms: 0,
            restarts: 2
        }));
    }

    #[test]
    fn max_restarts_quick_deaths_is_a_crash_loop() {
        let mut h = Harness::new(Settings {
            max_restarts: 3,
            ..settings()
        });
        h.start();
        let mut t = 0;
        let mut pid = 101;
        for death in 1..=3 {
            t += 10;
            let a = h.feed(
                Event::Exited {
                    pid,
                    status: Status::Code(2),
                },
                t,
            );
            if death < 3 {
                assert!(notes(&a)
                    .iter()
                    .all(|n| !matches!(n, Note::CrashLoop { .. })));
                t = h
                    .sup
                    .next_deadline()
                    .expect("backoff")
                    .duration_since(h.t0)
                    .as_millis() as u64;
                h.feed(Event::Tick, t);
                pid += 1;
            } else {
                assert!(notes(&a).contains(&Note::CrashLoop {
                    slot: 0,
                    quick_deaths: 3,
                    min_uptime_ms: 1000
                }));
                assert!(!effects(&a).contains(&Action::Spawn { slot: 0 }));
            }
        }
        let a = h.feed(Event::TreeEmpty, t);
        assert_eq!(exit_code(&a), Some(2));
    }

    #[test]
    fn crash_loop_of_clean_exits_is_still_non_zero() {
        let mut h = Harness::new(Settings {
            max_restarts: 1,
            restart: Restart::Always,
            ..settings()
        });
        h.start();
        h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Code(0),
            },
            5,
        );
        let a = h.feed(Event::TreeEmpty, 5);
        assert_eq!(exit_code(&a), Some(1));
    }

    #[test]
    fn ctrl_c_on_the_interactive_worker_ends_the_run() {
        let mut h = Harness::new(Settings {
            interactive: true,
            ..settings()
        });
        h.start();
        let a = h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Signal(INT),
            },
            5000,
        );
        assert!(!effects(&a).contains(&Action::Spawn { slot: 0 }));
        assert_eq!(exit_code(&h.feed(Event::TreeEmpty, 5000)), Some(130));
        // An app that handles SIGINT and exits 0 ends the run too, with 0.
        let mut h = Harness::new(Settings {
            instances: 2,
            interactive: true,
            ..settings()
        });
        h.start();
        let a = h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Code(0),
            },
            5000,
        );
        assert!(effects(&a).contains(&Action::Stop {
            pid: 102,
            signal: INT
        }));
        h.feed(
            Event::Exited {
                pid: 102,
                status: Status::Code(0),
            },
            5001,
        );
        assert_eq!(exit_code(&h.feed(Event::TreeEmpty, 5001)), Some(0));
        // A crash of the terminal's worker is restarted as usual.
        let mut h = Harness::new(Settings {
            interactive: true,
            ..settings()
        });
        h.start();
        let a = h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Code(3),
            },
            5000,
        );
        assert!(effects(&a).contains(&Action::Spawn { slot: 0 }));
        // Without a terminal, the same death is a crash and is restarted.
        let mut h = Harness::new(settings());
        h.start();
        let a = h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Signal(INT),
            },
            5000,
        );
        assert!(effects(&a).contains(&Action::Spawn { slot: 0 }));
    }

    #[test]
    fn spawn_failure_counts_as_a_quick_death() {
        let mut h = Harness::new(Settings {
            max_restarts: 2,
            ..settings()
        });
        h.start();
        // A restart whose exec fails (binary removed): 127, backoff.
        h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Code(1),
            },
            10,
        );
        let now = h.at(110);
        let a = h.sup.handle(Event::Tick, now);
        assert_eq!(effects(&a), vec![Action::Spawn { slot: 0 }]);
        let a = h.sup.handle(
            Event::SpawnFailed {
                slot: 0,
                status: Status::Code(127),
            },
            now,
        );
        assert!(notes(&a)
            .iter()
            .any(|n| matches!(n, Note::CrashLoop { .. })));
        assert_eq!(exit_code(&h.feed(Event::TreeEmpty, 110)), Some(127));
    }

    #[test]
    fn orphans_are_reaped_quietly() {
        let mut h = Harness::new(settings());
        h.start();
        let a = h.feed(
            Event::Exited {
                pid: 4242,
                status: Status::Code(0),
            },
            10,
        );
        assert!(effects(&a).is_empty());
        assert!(notes(&a)[0].is_debug());
        // Running with children gone but a worker restarting: no exit.
        assert_eq!(exit_code(&h.feed(Event::TreeEmpty, 10)), None);
    }
}
