//! Read-only views of the state for the control verbs: `pminit status`
//! (one row per worker process), `pminit ready` (the readiness probe), and
//! the shell's questions (who is serving, which generation is next).

use super::*;

impl Supervisor {
    /// Workers that are up (ready or not): what --max-memory watches.
    pub fn serving(&self) -> Vec<i32> {
        self.slots
            .iter()
            .filter_map(|s| s.worker())
            .map(|w| w.pid)
            .collect()
    }

    /// The generation of the newest workers; a reload makes the next one.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn instances(&self) -> usize {
        self.settings.instances
    }

    pub fn reloading(&self) -> bool {
        self.reload.is_some()
    }

    /// Each slot's quick deaths in a row (a crash loop at --max-restarts),
    /// for the metrics endpoint.
    pub fn quick_deaths(&self) -> Vec<u32> {
        self.slots.iter().map(|s| s.quick_deaths).collect()
    }

    pub fn max_restarts(&self) -> u32 {
        self.settings.max_restarts
    }

    /// The generation whose `reload_finished` (or `reload_failed`) answers
    /// a reload requested now; None when a reload would be ignored
    /// (stopping). A request during a reload folds into one more after it.
    pub fn reload_target(&self) -> Option<u64> {
        (self.phase == Phase::Running).then_some(self.generation + 1)
    }

    /// `running`, `draining` (prestop or --stop-delay: still serving, not
    /// ready) or `stopping`.
    pub fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::Running if self.prestopped => "draining",
            Phase::Running => "running",
            Phase::StopDelay { .. } => "draining",
            Phase::Stopping { .. } | Phase::Killing | Phase::Exited => "stopping",
        }
    }

    /// Ok when serving: running, not draining, and workers ready: all of
    /// them until they have first all been ready, at least one afterwards.
    /// Err says why not, for the probe's output.
    pub fn readiness(&self) -> Result<(), String> {
        match self.phase {
            Phase::Running if self.prestopped => return Err("draining: prestop was called".into()),
            Phase::Running => {}
            Phase::StopDelay { .. } => return Err("draining: stop requested (--stop-delay)".into()),
            _ => return Err("stopping".into()),
        }
        let ready = self.steerable().len();
        let n = self.settings.instances;
        if self.fully_up && ready > 0 {
            Ok(())
        } else if self.fully_up {
            Err(format!("no worker is ready (0 of {n})"))
        } else {
            Err(format!("starting: {ready} of {n} workers ready"))
        }
    }

    /// Every worker process and every slot, for `pminit status`: the current
    /// worker of each slot (or the slot's state), its incoming replacement
    /// during a reload, and the workers draining.
    pub fn workers(&self) -> Vec<WorkerView> {
        let mut rows = Vec::new();
        let stopping = !matches!(self.phase, Phase::Running | Phase::StopDelay { .. });
        let row = |slot: usize, s: &Slot, w: Worker, incoming: bool| WorkerView {
            slot,
            pid: Some(w.pid),
            generation: w.generation,
            state: if stopping {
                WorkerState::Draining
            } else if w.ready && !incoming {
                WorkerState::Ready
            } else {
                WorkerState::Starting
            },
            restarts: s.restarts,
            since: Some(w.since),
            answered: w.answered,
            answer_delay: w.answer_delay,
        };
        for (slot, s) in self.slots.iter().enumerate() {
            let empty = |state| WorkerView {
                slot,
                pid: None,
                generation: self.generation,
                state,
                restarts: s.restarts,
                since: None,
                answered: None,
                answer_delay: None,
            };
            match s.state {
                SlotState::Up(w) => rows.push(row(slot, s, w, false)),
                SlotState::Spawning => rows.push(empty(WorkerState::Starting)),
                SlotState::Backoff { .. } => rows.push(empty(WorkerState::Backoff)),
                SlotState::Done => rows.push(empty(WorkerState::Stopped)),
                SlotState::Retired => {}
            }
            if let Some(w) = s.incoming_worker() {
                rows.push(row(slot, s, w, true));
            }
        }
        for d in &self.retirees {
            rows.push(WorkerView {
                slot: d.slot,
                pid: Some(d.pid),
                generation: d.generation,
                state: WorkerState::Draining,
                restarts: self.slots.get(d.slot).map_or(0, |s| s.restarts),
                since: Some(d.since),
                answered: None,
                answer_delay: None,
            });
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::*;

    #[test]
    fn ready_waits_for_every_worker_once_then_one_is_enough() {
        let mut h = awaiting(Settings {
            instances: 2,
            ..settings()
        });
        h.start();
        assert!(h.sup.readiness().is_err_and(|e| e.contains("0 of 2")));
        h.feed(Event::Ready { pid: 101 }, 10);
        assert!(h.sup.readiness().is_err_and(|e| e.contains("1 of 2")));
        h.feed(Event::Ready { pid: 102 }, 10);
        assert_eq!(h.sup.readiness(), Ok(()));
        // One crash later the other still serves: still ready.
        h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Code(1),
            },
            5000,
        );
        assert_eq!(h.sup.readiness(), Ok(()));
        h.feed(
            Event::Exited {
                pid: 102,
                status: Status::Code(1),
            },
            5000,
        );
        assert!(h
            .sup
            .readiness()
            .is_err_and(|e| e.contains("no worker is ready")));
    }

    #[test]
    fn prestop_fails_ready_but_keeps_serving_and_reloading() {
        let mut h = four_ready();
        let a = prestop(&mut h, 20);
        assert_eq!(notes(&a), vec![Note::Prestop]);
        assert!(effects(&a).is_empty(), "nothing is stopped: {a:?}");
        assert!(h.sup.readiness().is_err_and(|e| e.contains("prestop")));
        assert_eq!(h.sup.phase_name(), "draining");
        assert!(notes(&prestop(&mut h, 21)).is_empty(), "once is enough");
        assert_eq!(h.sup.reload_target(), Some(1));
        // TERM then stops as usual.
        let a = h.feed(Event::Signal(TERM), 30);
        assert_eq!(
            effects(&a)
                .iter()
                .filter(|x| matches!(x, Action::Stop { .. }))
                .count(),
            4
        );
        assert_eq!(h.sup.phase_name(), "stopping");
        assert_eq!(h.sup.reload_target(), None);
    }

    #[test]
    fn status_rows_show_incoming_and_draining_workers() {
        let mut h = two_ready_reloading();
        assert!(h.sup.reloading());
        assert_eq!(
            states(&h),
            vec![
                (0, Some(101), 0, WorkerState::Ready),
                (0, Some(103), 1, WorkerState::Starting),
                (1, Some(102), 0, WorkerState::Ready),
            ]
        );
        // A reload asked for now is folded into the one after this.
        assert_eq!(h.sup.reload_target(), Some(2));
        h.feed(Event::Ready { pid: 103 }, 30);
        assert_eq!(
            states(&h),
            vec![
                (0, Some(103), 1, WorkerState::Ready),
                (1, Some(102), 0, WorkerState::Ready),
                (1, Some(104), 1, WorkerState::Starting),
                (0, Some(101), 0, WorkerState::Draining),
            ]
        );
        assert_eq!(h.sup.workers()[0].since, Some(h.at(20)));
    }

    #[test]
    fn workers_that_must_say_ready_get_connections_only_once_ready() {
        let mut h = awaiting(Settings {
            instances: 2,
            ..settings()
        });
        let a = h.start();
        assert_eq!(steered(&a), None, "nobody ready yet");
        assert_eq!(h.sup.next_deadline(), Some(h.at(3000)), "listen-timeout");
        let a = h.feed(Event::Ready { pid: 101 }, 50);
        assert_eq!(steered(&a), Some(vec![0]));
        assert!(has_note(&a, |n| matches!(
            n,
            Note::WorkerReady {
                slot: 0,
                pid: 101,
                ..
            }
        )));
        // At start there is nothing to keep: past the timeout it serves anyway.
        let a = h.feed(Event::Tick, 3000);
        assert!(has_note(&a, |n| matches!(
            n,
            Note::WorkerNotReady { slot: 1, .. }
        )));
        assert_eq!(steered(&a), Some(vec![0, 1]));
        assert_eq!(h.sup.next_deadline(), None);
    }

    #[test]
    fn connections_are_steered_away_from_a_slot_while_its_worker_is_down() {
        let mut h = Harness::new(Settings {
            instances: 3,
            ..settings()
        });
        assert_eq!(steered(&h.start()), Some(vec![0, 1, 2]));
        // Slot 1 dies quickly: out until its replacement is spawned.
        let a = h.feed(
            Event::Exited {
                pid: 102,
                status: Status::Signal(KILL),
            },
            10,
        );
        assert_eq!(steered(&a), Some(vec![0, 2]));
        assert_eq!(steered(&h.feed(Event::Tick, 110)), Some(vec![0, 1, 2]));
        // Nothing changed: no new program.
        assert_eq!(steered(&h.feed(Event::Signal(libc::SIGUSR1), 120)), None);
        // A retiring slot gets no new connections.
        assert_eq!(
            steered(&h.feed(Event::Signal(libc::SIGTTOU), 130)),
            Some(vec![0, 1])
        );
    }

    /// From mutation testing: a new worker on probation is ready but does
    /// not hold its slot yet: it shows as starting; the generation and the
    /// phase's name follow what happened.
    #[test]
    fn status_shows_probation_generations_and_phases() {
        let mut h = awaiting(Settings {
            instances: 1,
            ..settings() // --min-uptime 1 s
        });
        h.start();
        h.feed(Event::Ready { pid: 101 }, 10);
        assert_eq!((h.sup.generation(), h.sup.phase_name()), (0, "running"));
        h.feed(Event::Signal(libc::SIGHUP), 20);
        h.feed(Event::Ready { pid: 102 }, 30);
        assert_eq!(
            states(&h),
            vec![
                (0, Some(101), 0, WorkerState::Ready),
                (0, Some(102), 1, WorkerState::Starting),
            ]
        );
        h.feed(Event::Tick, 1030);
        assert_eq!(h.sup.generation(), 1);
        h.feed(Event::Signal(libc::SIGHUP), 1040);
        assert_eq!(h.sup.generation(), 2);
        prestop(&mut h, 1050);
        assert_eq!(h.sup.phase_name(), "draining");
    }

    /// From mutation testing: what the metrics page reads of the crash-loop
    /// state.
    #[test]
    fn quick_deaths_per_slot_and_the_limit_they_count_to() {
        let mut h = Harness::new(Settings {
            instances: 2,
            max_restarts: 5,
            ..settings()
        });
        h.start();
        assert_eq!(h.sup.quick_deaths(), vec![0, 0]);
        h.feed(
            Event::Exited {
                pid: 102,
                status: Status::Code(1),
            },
            10,
        );
        assert_eq!(h.sup.quick_deaths(), vec![0, 1]);
        assert_eq!(h.sup.max_restarts(), 5);
    }
}
