//! TTIN, TTOU and `pminit scale`: the number of workers between 1 and
//! MAX_INSTANCES. A removal drains the highest slot; slots stay 0..N-1.

use std::time::Instant;

use super::*;

impl Supervisor {
    pub(super) fn scale_up(&mut self, now: Instant, out: &mut Vec<Action>) {
        let n = self.settings.instances;
        self.scale(ScaleTo::To(n.saturating_add(1)), now, out);
    }

    pub(super) fn scale_down(&mut self, now: Instant, out: &mut Vec<Action>) {
        let n = self.settings.instances;
        self.scale(ScaleTo::To(n.saturating_sub(1)), now, out);
    }

    /// TTIN, TTOU and `pminit scale`: to a number of workers between 1 and
    /// MAX_INSTANCES. The note comes first, then the workers it starts or
    /// drains.
    pub(super) fn scale(&mut self, to: ScaleTo, now: Instant, out: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            return;
        }
        let n = self.settings.instances;
        let target = to.from(n);
        if target == n {
            return;
        }
        out.push(Action::Log(Note::Scaled { instances: target }));
        while self.settings.instances < target {
            self.add_worker(out);
        }
        while self.settings.instances > target {
            if !self.remove_worker(now, out) {
                break;
            }
        }
    }

    /// One more worker, in the first slot a removal left empty, so slots
    /// stay 0..N-1.
    pub(super) fn add_worker(&mut self, out: &mut Vec<Action>) {
        let slot = match self
            .slots
            .iter()
            .position(|s| s.state == SlotState::Retired)
        {
            Some(i) => {
                self.slots[i] = Slot::new();
                i
            }
            None => {
                self.slots.push(Slot::new());
                self.slots.len() - 1
            }
        };
        self.settings.instances += 1;
        // A new slot is born spawning (a retired one is replaced whole).
        out.push(Action::Spawn { slot });
    }

    /// One worker fewer: the highest slot that still counts drains.
    /// Returns false when there is no slot left to remove.
    pub(super) fn remove_worker(&mut self, now: Instant, out: &mut Vec<Action>) -> bool {
        // A finished slot first (nothing to stop), else the highest one that
        // runs or will; the count of slots not retired stays the number of
        // workers.
        let done = self.slots.iter().rposition(|s| s.state == SlotState::Done);
        let live = || {
            self.slots.iter().rposition(|s| {
                matches!(
                    s.state,
                    SlotState::Spawning | SlotState::Up(_) | SlotState::Backoff { .. }
                )
            })
        };
        let Some(slot) = done.or_else(live) else {
            return false;
        };
        self.settings.instances -= 1;
        let s = self.slots[slot].state;
        self.slots[slot].go(SlotState::Retired);
        if let SlotState::Up(w) = s {
            self.retire(slot, w, now, out);
        }
        if let Some(w) = self.slots[slot].incoming_worker() {
            self.retire(slot, w, now, out);
        }
        self.slots[slot].incoming = None;
        if self.reload.is_some_and(|r| r.slot == slot) {
            self.slot_left_reload(out);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::*;

    #[test]
    fn ttin_adds_and_ttou_retires_the_highest_slot() {
        let mut h = Harness::new(Settings {
            instances: 2,
            kill_timeout: Duration::from_secs(1),
            ..settings()
        });
        h.start();
        let a = h.feed(Event::Signal(libc::SIGTTIN), 10);
        assert_eq!(effects(&a), vec![Action::Spawn { slot: 2 }]);
        assert!(notes(&a).contains(&Note::Scaled { instances: 3 }));
        let a = h.feed(Event::Signal(libc::SIGTTOU), 20);
        assert_eq!(
            effects(&a),
            vec![Action::Stop {
                pid: 103,
                signal: INT
            }]
        );
        // It ignores the stop signal: SIGKILL after the grace.
        let a = h.feed(Event::Tick, 1020);
        assert_eq!(
            effects(&a),
            vec![Action::SignalGroup {
                pgid: 103,
                signal: KILL
            }]
        );
        let a = h.feed(
            Event::Exited {
                pid: 103,
                status: Status::Signal(KILL),
            },
            1030,
        );
        assert!(effects(&a).is_empty(), "a retired worker is not restarted");
        // Never below one worker.
        h.feed(Event::Signal(libc::SIGTTOU), 1040);
        let a = h.feed(Event::Signal(libc::SIGTTOU), 1050);
        assert!(effects(&a).is_empty());
        // TTIN reuses the lowest freed slot number rather than growing the table.
        let a = h.feed(Event::Signal(libc::SIGTTIN), 1060);
        assert_eq!(effects(&a), vec![Action::Spawn { slot: 1 }]);
        assert_eq!(h.sup.slots.len(), 3);
    }

    #[test]
    fn scale_to_add_and_remove() {
        let mut h = four_ready();
        let a = h.feed(Event::Scale(ScaleTo::Remove(2)), 20);
        assert_eq!(notes(&a).first(), Some(&Note::Scaled { instances: 2 }));
        let stopped: Vec<i32> = effects(&a)
            .iter()
            .filter_map(|x| match x {
                Action::Stop { pid, .. } => Some(*pid),
                _ => None,
            })
            .collect();
        assert_eq!(stopped, vec![104, 103], "the highest slots go first");
        let a = h.feed(Event::Scale(ScaleTo::To(5)), 30);
        let spawned: Vec<usize> = effects(&a)
            .iter()
            .filter_map(|x| match x {
                Action::Spawn { slot } => Some(*slot),
                _ => None,
            })
            .collect();
        assert_eq!(spawned, vec![2, 3, 4], "retired slots come back first");
        assert_eq!(h.sup.instances(), 5);
        // Never below one, never above the cap; no change, no note.
        h.feed(Event::Scale(ScaleTo::Remove(100)), 40);
        assert_eq!(h.sup.instances(), 1);
        assert!(h.feed(Event::Scale(ScaleTo::To(1)), 50).is_empty());
        assert_eq!(ScaleTo::Add(5000).from(1), MAX_INSTANCES);
        assert_eq!(ScaleTo::To(0).from(3), 1);
    }

    #[test]
    fn scaling_down_past_finished_workers_terminates() {
        let mut h = Harness::new(Settings {
            instances: 3,
            restart: Restart::Never,
            ..settings()
        });
        h.start();
        // Slot 2 finished for good; slots 0 and 1 still run.
        h.feed(
            Event::Exited {
                pid: 103,
                status: Status::Code(0),
            },
            10,
        );
        let a = h.feed(Event::Scale(ScaleTo::To(1)), 20);
        assert_eq!(h.sup.instances(), 1);
        let stopped: Vec<Action> = effects(&a);
        assert_eq!(
            stopped,
            vec![Action::Stop {
                pid: 102,
                signal: INT
            }]
        );
    }

    /// Found by the model: removing the slot of a --max-memory replacement
    /// turned it into a rolling reload of the other slots.
    #[test]
    fn removing_the_slot_of_a_memory_replacement_ends_it_without_touching_the_others() {
        let mut h = awaiting(four());
        h.start();
        for pid in 101..=104 {
            h.feed(Event::Ready { pid }, 10);
        }
        h.feed(
            Event::OverMemory {
                pid: 104,
                rss: 1 << 30,
                reason: MemoryReason::MaxMemory,
            },
            20,
        ); // 105 for slot 3
        let a = h.feed(Event::Scale(ScaleTo::Remove(1)), 30);
        assert_eq!(
            effects(&a),
            vec![
                Action::Stop {
                    pid: 104,
                    signal: INT
                },
                Action::Stop {
                    pid: 105,
                    signal: INT
                }
            ]
        );
        assert!(!h.sup.reloading());
        assert!(!has_note(&a, |n| matches!(n, Note::ReloadFinished { .. })));
    }
}
