//! `--max-memory`: a worker over the limit is replaced as in a one-slot
//! reload, the new worker first, so the slot never stops serving.

use super::*;

impl Supervisor {
    /// Replaces one worker that grew past --max-memory, as a reload would:
    /// the new one first, the old one drains once it is ready.
    pub(super) fn over_memory(&mut self, pid: i32, rss: u64, out: &mut Vec<Action>) {
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
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::*;

    #[test]
    fn a_worker_over_max_memory_is_replaced_new_one_first() {
        let mut h = four_ready();
        let a = h.feed(
            Event::OverMemory {
                pid: 103,
                rss: 600 << 20,
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
