//! Stopping the run: `--stop-delay` (still serving), the stop signal to
//! every worker group and stray, the grace, the SIGKILL sweep, and the exit
//! code. Never spawns anything: once a stop has begun, workers only leave.

use std::time::Instant;

use super::*;

/// Exit code when the grace ran out and something had to be SIGKILLed.
pub const EXIT_KILLED: i32 = 128 + libc::SIGKILL;

impl Supervisor {
    pub(super) fn exit(&mut self, out: &mut Vec<Action>) {
        let code = match self.code {
            Some(c) => c,
            None if self.killed => EXIT_KILLED,
            None => 0,
        };
        self.phase = Phase::Exited;
        out.push(Action::Log(Note::Exit { code }));
        out.push(Action::Exit(code));
    }

    pub(super) fn request_stop(&mut self, sig: i32, now: Instant, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Running => {
                let delay = self.settings.stop_delay;
                out.push(Action::Log(Note::StopRequested {
                    signal: signal_name(sig),
                    delay_ms: millis(delay),
                }));
                if delay.is_zero() {
                    self.stop_now(now, out);
                } else {
                    self.phase = Phase::StopDelay { until: now + delay };
                    self.cancel_restarts();
                    self.abort_reload(now, out);
                }
            }
            // A second TERM/INT skips what is left of the current step.
            Phase::StopDelay { .. } => self.stop_now(now, out),
            Phase::Stopping { .. } => self.kill_now(out),
            Phase::Killing | Phase::Exited => {}
        }
    }

    /// Stop signal to every worker group and stray; SIGKILL after the grace.
    pub(super) fn stop_now(&mut self, now: Instant, out: &mut Vec<Action>) {
        let grace = self.settings.kill_timeout;
        let signal = self.settings.stop_signal;
        self.phase = Phase::Stopping {
            kill_at: now + grace,
        };
        self.reload = None;
        let running: Vec<i32> = self
            .slots
            .iter()
            .flat_map(|s| [s.worker(), s.incoming_worker()])
            .flatten()
            .map(|w| w.pid)
            .collect();
        out.push(Action::Log(Note::Stopping {
            signal: signal_name(signal),
            workers: running.len() + self.retirees.len(),
            grace_ms: millis(grace),
        }));
        for pid in running {
            out.push(Action::Stop { pid, signal });
        }
        self.cancel_restarts();
        // Drainers already have the stop signal; the global grace covers them.
        for d in &mut self.retirees {
            d.kill_at = None;
        }
        out.push(Action::SignalStrays {
            signal,
            workers: self.worker_pids(),
        });
    }

    /// Once a stop is requested nothing is restarted: slots waiting out a
    /// backoff are done.
    fn cancel_restarts(&mut self) {
        for slot in &mut self.slots {
            if let SlotState::Backoff { .. } = slot.state {
                slot.go(SlotState::Done);
            }
        }
    }

    pub(super) fn kill_now(&mut self, out: &mut Vec<Action>) {
        self.phase = Phase::Killing;
        // The exit code follows the workers: a worker that had to be
        // SIGKILLed makes it 137; strays that had to be are only logged.
        self.killed = self.live_workers() > 0;
        out.push(Action::Log(Note::GraceExpired {
            grace_ms: millis(self.settings.kill_timeout),
        }));
        out.push(Action::KillAll {
            workers: self.worker_pids(),
        });
    }

    /// A worker we asked to stop has exited.
    pub(super) fn after_planned_exit(&mut self, status: Status, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Stopping { .. } | Phase::Killing => self.record_stop_status(status, out),
            _ => {}
        }
    }

    /// After the stop signal: was this exit clean? And sweep again if killing.
    pub(super) fn record_stop_status(&mut self, status: Status, out: &mut Vec<Action>) {
        let stop = self.settings.stop_signal;
        let clean = status == Status::Code(0)
            || status == Status::Signal(stop)
            || status == Status::Code(128 + stop);
        // A SIGKILL we sent is not the worker's own doing.
        let ours = self.phase == Phase::Killing && status == Status::Signal(libc::SIGKILL);
        if !(clean || ours) {
            self.set_code(status.code());
        }
        if self.phase == Phase::Killing {
            out.push(Action::KillAll {
                workers: self.worker_pids(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::*;

    #[test]
    fn term_sends_stop_signal_to_every_group_and_strays() {
        let mut h = Harness::new(Settings {
            instances: 2,
            ..settings()
        });
        h.start();
        let a = h.feed(Event::Signal(TERM), 1000);
        assert_eq!(
            effects(&a),
            vec![
                Action::Stop {
                    pid: 101,
                    signal: INT
                },
                Action::Stop {
                    pid: 102,
                    signal: INT
                },
                Action::SignalStrays {
                    signal: INT,
                    workers: vec![101, 102]
                },
            ]
        );
        assert_eq!(h.sup.next_deadline(), Some(h.at(9000)));
        // Workers exit of the stop signal: clean. No restart while stopping.
        for pid in [101, 102] {
            let a = h.feed(
                Event::Exited {
                    pid,
                    status: Status::Signal(INT),
                },
                1200,
            );
            assert!(effects(&a).is_empty());
        }
        let a = h.feed(Event::TreeEmpty, 1200);
        assert_eq!(exit_code(&a), Some(0));
    }

    #[test]
    fn graceful_stop_exit_codes() {
        // How workers end after the stop signal -> pminit's exit code.
        let table = [
            (Status::Code(0), 0),
            (Status::Signal(INT), 0),
            (Status::Code(130), 0),
            (Status::Code(1), 1),
            (Status::Signal(libc::SIGSEGV), 139),
        ];
        for (status, code) in table {
            let mut h = Harness::new(settings());
            h.start();
            h.feed(Event::Signal(TERM), 10);
            h.feed(Event::Exited { pid: 101, status }, 20);
            assert_eq!(
                exit_code(&h.feed(Event::TreeEmpty, 20)),
                Some(code),
                "{status:?}"
            );
        }
    }

    #[test]
    fn tree_must_be_empty_before_exit() {
        // tini #180: the worker is gone but a grandchild is still cleaning up.
        let mut h = Harness::new(settings());
        h.start();
        h.feed(Event::Signal(TERM), 10);
        let a = h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Signal(INT),
            },
            20,
        );
        assert_eq!(exit_code(&a), None);
        // The grandchild is reaped later, then the tree is empty.
        let a = h.feed(
            Event::Exited {
                pid: 555,
                status: Status::Code(0),
            },
            520,
        );
        assert_eq!(exit_code(&a), None);
        assert_eq!(exit_code(&h.feed(Event::TreeEmpty, 520)), Some(0));
    }

    #[test]
    fn grace_expiry_kills_everything_and_exits_137() {
        let mut h = Harness::new(Settings {
            kill_timeout: Duration::from_millis(500),
            ..settings()
        });
        h.start();
        h.feed(Event::Signal(TERM), 100);
        assert!(effects(&h.feed(Event::Tick, 599)).is_empty());
        let a = h.feed(Event::Tick, 600);
        assert_eq!(effects(&a), vec![Action::KillAll { workers: vec![101] }]);
        let a = h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Signal(KILL),
            },
            601,
        );
        // A SIGKILL we sent does not count as the worker's own code.
        assert_eq!(exit_code(&a), None);
        assert_eq!(exit_code(&h.feed(Event::TreeEmpty, 601)), Some(137));
    }

    #[test]
    fn second_term_skips_the_rest_of_each_step() {
        let mut h = Harness::new(Settings {
            stop_delay: Duration::from_secs(5),
            ..settings()
        });
        h.start();
        let a = h.feed(Event::Signal(TERM), 0);
        assert!(effects(&a).is_empty(), "stop-delay: still serving");
        assert_eq!(h.sup.next_deadline(), Some(h.at(5000)));
        let a = h.feed(Event::Signal(INT), 100);
        assert!(effects(&a).contains(&Action::Stop {
            pid: 101,
            signal: INT
        }));
        let a = h.feed(Event::Signal(TERM), 200);
        assert_eq!(effects(&a), vec![Action::KillAll { workers: vec![101] }]);
        assert!(effects(&h.feed(Event::Signal(TERM), 300)).is_empty());
    }

    #[test]
    fn stop_delay_expires_into_stop_signal() {
        let mut h = Harness::new(Settings {
            stop_delay: Duration::from_secs(2),
            stop_signal: libc::SIGQUIT,
            ..settings()
        });
        h.start();
        h.feed(Event::Signal(TERM), 0);
        let a = h.feed(Event::Tick, 2000);
        assert!(effects(&a).contains(&Action::Stop {
            pid: 101,
            signal: libc::SIGQUIT
        }));
        assert_eq!(h.sup.next_deadline(), Some(h.at(10_000)));
    }

    #[test]
    fn stop_during_backoff_cancels_the_restart() {
        let mut h = Harness::new(settings());
        h.start();
        h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Code(1),
            },
            10,
        );
        h.feed(Event::Signal(TERM), 20);
        assert!(effects(&h.feed(Event::Tick, 200)).is_empty());
        assert_eq!(exit_code(&h.feed(Event::TreeEmpty, 200)), Some(0));
    }

    #[test]
    fn killing_phase_sweeps_again_when_something_is_reaped() {
        let mut h = Harness::new(Settings {
            kill_timeout: Duration::ZERO,
            ..settings()
        });
        h.start();
        h.feed(Event::Signal(TERM), 0);
        h.feed(Event::Tick, 0);
        let a = h.feed(
            Event::Exited {
                pid: 999,
                status: Status::Signal(KILL),
            },
            1,
        );
        assert!(effects(&a).contains(&Action::KillAll { workers: vec![101] }));
    }

    #[test]
    fn nothing_happens_after_exit() {
        let mut h = Harness::new(Settings {
            restart: Restart::Never,
            ..settings()
        });
        h.start();
        h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Code(0),
            },
            1,
        );
        assert_eq!(exit_code(&h.feed(Event::TreeEmpty, 1)), Some(0));
        assert!(h.feed(Event::Signal(TERM), 2).is_empty());
        assert!(h.feed(Event::TreeEmpty, 2).is_empty());
    }

    #[test]
    fn stop_delay_fails_ready_while_serving() {
        let mut h = Harness::new(Settings {
            stop_delay: Duration::from_secs(2),
            ..settings()
        });
        h.start();
        assert_eq!(h.sup.readiness(), Ok(()));
        assert!(effects(&h.feed(Event::Signal(TERM), 10)).is_empty());
        assert!(h.sup.readiness().is_err_and(|e| e.contains("--stop-delay")));
        assert_eq!(states(&h), vec![(0, Some(101), 0, WorkerState::Ready)]);
    }

    /// Issue 12 point 7: the exit code follows the workers. A stray orphan
    /// that ignored the stop signal and had to be SIGKILLed is logged, not
    /// reported as the app's failure (dumb-init's setsid case).
    #[test]
    fn a_stray_that_had_to_be_killed_does_not_change_a_clean_exit() {
        let mut h = Harness::new(Settings {
            kill_timeout: Duration::from_millis(500),
            ..settings()
        });
        h.start();
        h.feed(Event::Signal(TERM), 100);
        h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Code(0),
            },
            150,
        );
        // The orphan 555 ignores SIGINT: the grace runs out.
        let a = h.feed(Event::Tick, 600);
        assert_eq!(effects(&a), vec![Action::KillAll { workers: vec![] }]);
        h.feed(
            Event::Exited {
                pid: 555,
                status: Status::Signal(KILL),
            },
            601,
        );
        assert_eq!(exit_code(&h.feed(Event::TreeEmpty, 601)), Some(0));
    }

    /// Found by the model: a retiree SIGKILLed by its own --kill-timeout
    /// while running, reaped after the stop began, made the exit 137.
    #[test]
    fn a_retiree_we_sigkilled_before_the_stop_does_not_change_the_exit_code() {
        let mut h = Harness::new(Settings {
            instances: 2,
            kill_timeout: Duration::from_millis(500),
            ..settings()
        });
        h.start();
        h.feed(Event::Signal(libc::SIGTTOU), 10); // 102 drains
        let a = h.feed(Event::Tick, 510);
        assert_eq!(
            effects(&a),
            vec![Action::SignalGroup {
                pgid: 102,
                signal: KILL
            }]
        );
        h.feed(Event::Signal(TERM), 520);
        for (pid, status) in [(101, Status::Code(0)), (102, Status::Signal(KILL))] {
            h.feed(Event::Exited { pid, status }, 530);
        }
        assert_eq!(exit_code(&h.feed(Event::TreeEmpty, 530)), Some(0));
    }

    /// Found by the model: with --stop-delay, a reload in progress went on
    /// spawning workers after the stop was requested.
    #[test]
    fn a_stop_with_stop_delay_ends_the_reload_and_spawns_nothing() {
        let mut h = awaiting(Settings {
            instances: 2,
            stop_delay: Duration::from_millis(1000),
            ..settings()
        });
        h.start();
        h.feed(Event::Ready { pid: 101 }, 10);
        h.feed(Event::Ready { pid: 102 }, 10);
        h.feed(Event::Signal(libc::SIGHUP), 20); // 103 replaces 101
        let a = h.feed(Event::Signal(TERM), 30);
        assert_eq!(
            effects(&a),
            vec![Action::Stop {
                pid: 103,
                signal: INT
            }]
        );
        assert!(has_note(&a, |n| matches!(n, Note::ReloadFailed { .. })));
        assert!(!h.sup.reloading());
        // The old workers keep serving through the delay.
        assert_eq!(h.sup.serving(), vec![101, 102]);
    }

    /// From mutation testing: a worker's own code during --stop-delay is
    /// the exit code; a clean exit then is not.
    #[test]
    fn a_worker_exit_during_the_stop_delay_sets_the_code_only_if_not_clean() {
        for (status, code) in [(Status::Code(3), 3), (Status::Code(0), 0)] {
            let mut h = Harness::new(Settings {
                stop_delay: Duration::from_millis(1000),
                ..settings()
            });
            h.start();
            h.feed(Event::Signal(TERM), 10);
            h.feed(Event::Exited { pid: 101, status }, 20);
            // Nothing left to wait for: the run ends without the delay.
            let a = h.feed(Event::TreeEmpty, 20);
            assert_eq!(exit_code(&a), Some(code), "{status:?}");
        }
    }

    /// From mutation testing: only a SIGKILL we sent a retiree is ours; a
    /// retiree killed by someone else during the stop, or one that exits
    /// with a code of its own after our SIGKILL went out, is the app's.
    #[test]
    fn a_retirees_death_counts_unless_it_is_our_sigkill() {
        for (kill_first, status, code) in [
            (false, Status::Signal(KILL), 137),
            (true, Status::Code(3), 3),
            (true, Status::Signal(KILL), 0),
        ] {
            let mut h = Harness::new(Settings {
                instances: 2,
                kill_timeout: Duration::from_millis(500),
                ..settings()
            });
            h.start();
            h.feed(Event::Signal(libc::SIGTTOU), 10); // 102 drains
            if kill_first {
                h.feed(Event::Tick, 510); // our SIGKILL
            }
            h.feed(Event::Signal(TERM), 520);
            h.feed(
                Event::Exited {
                    pid: 101,
                    status: Status::Code(0),
                },
                530,
            );
            h.feed(Event::Exited { pid: 102, status }, 530);
            let a = h.feed(Event::TreeEmpty, 530);
            assert_eq!(exit_code(&a), Some(code), "{kill_first} {status:?}");
        }
    }

    /// From mutation testing: the stop note counts every worker it stops,
    /// retirees included, and after the grace a worker's own exit code
    /// still counts.
    #[test]
    fn the_stop_counts_retirees_and_a_code_after_the_grace_still_counts() {
        let mut h = Harness::new(Settings {
            instances: 3,
            kill_timeout: Duration::from_millis(500),
            ..settings()
        });
        h.start();
        h.feed(Event::Signal(libc::SIGTTOU), 10); // 103 drains
        let a = h.feed(Event::Signal(TERM), 20);
        assert!(has_note(&a, |n| matches!(
            n,
            Note::Stopping { workers: 3, .. }
        )));
        h.feed(Event::Tick, 520); // grace over: SIGKILL
        h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Code(3),
            },
            521,
        );
        for pid in [102, 103] {
            h.feed(
                Event::Exited {
                    pid,
                    status: Status::Signal(KILL),
                },
                521,
            );
        }
        assert_eq!(exit_code(&h.feed(Event::TreeEmpty, 521)), Some(3));
    }
}
