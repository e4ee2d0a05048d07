//! Liveness: a worker alive but useless (its event loop stuck in a loop)
//! is found and replaced.
//!
//! A worker takes part once its preload says so (Event::Alive, its hello
//! on the IPC channel): only then is an unanswered ping evidence. While it
//! is ready, a round of pings goes out every `ping_every()`; a worker has
//! at most one ping outstanding, so a stuck one never has its channel
//! filled. The preload answers from the event loop, so a blocked loop
//! cannot. A worker whose oldest unanswered ping is `--hang-timeout` old
//! is hung: its replacement starts first and it is SIGKILLed (its
//! JavaScript cannot run a drain). The time is measured from the ping, so
//! a worker busy for less than the timeout is never taken for hung;
//! detection comes at most `ping_every()` after the timeout.
//!
//! Only the current worker of a slot, once ready, and only while running:
//! a reload's new worker proves itself by saying ready, retirees and a
//! stopping run have their own SIGKILL deadline.

use std::time::{Duration, Instant};

use super::*;

/// The longest gap between two rounds of pings.
pub const PING_MAX: Duration = Duration::from_secs(4);

impl Supervisor {
    /// Time between two rounds of pings: a quarter of the timeout, at
    /// most PING_MAX (a hung worker is found within timeout + 4 s).
    pub(super) fn ping_every(&self) -> Duration {
        (self.settings.hang_timeout / 4)
            .min(PING_MAX)
            .max(Duration::from_millis(10))
    }

    fn liveness_on(&self) -> bool {
        !self.settings.hang_timeout.is_zero() && self.phase == Phase::Running
    }

    /// Ready current workers that answer pings, by slot.
    fn watched(&self) -> impl Iterator<Item = (usize, Worker)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, s.worker()?)))
            .filter(|(_, w)| w.ready && w.answers)
    }

    /// The next ping round (when a watched worker has none outstanding)
    /// and the moment the oldest unanswered ping becomes a hang.
    pub(super) fn liveness_deadline(&self) -> Option<Instant> {
        if !self.liveness_on() {
            return None;
        }
        let timeout = self.settings.hang_timeout;
        let round = self
            .watched()
            .any(|(_, w)| w.asked.is_none())
            .then(|| self.pinged_at.map(|t| t + self.ping_every()))
            .flatten();
        let hangs = self
            .watched()
            .filter_map(|(_, w)| w.asked)
            .map(|a| a + timeout);
        round.into_iter().chain(hangs).min()
    }

    pub(super) fn liveness_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.liveness_on() {
            return;
        }
        let timeout = self.settings.hang_timeout;
        let hung: Vec<(usize, Worker)> = self
            .watched()
            .filter(|(_, w)| w.asked.is_some_and(|a| a + timeout <= now))
            .collect();
        for (slot, w) in hung {
            let silent = now.saturating_duration_since(w.asked.unwrap_or(now));
            out.push(Action::Log(Note::WorkerHung {
                slot,
                pid: w.pid,
                silent_ms: millis(silent),
                hang_timeout_ms: millis(timeout),
            }));
            self.replace_now(slot, now, out);
        }
        let due = self.pinged_at.is_none_or(|t| t + self.ping_every() <= now);
        if !due {
            return;
        }
        let mut any = false;
        for s in &mut self.slots {
            if let SlotState::Up(w) = &mut s.state {
                if w.ready && w.answers && w.asked.is_none() {
                    w.asked = Some(now);
                    out.push(Action::Ping { pid: w.pid });
                    any = true;
                }
            }
        }
        if any {
            self.pinged_at = Some(now);
        }
    }

    /// The worker's event loop answered: nothing outstanding from now.
    pub(super) fn on_alive(&mut self, pid: i32, now: Instant) {
        for w in self.workers_mut() {
            if w.pid == pid {
                w.answers = true;
                if let Some(asked) = w.asked.take() {
                    w.answer_delay = Some(now.saturating_duration_since(asked));
                }
                w.answered = Some(now);
            }
        }
    }

    /// Its channel closed (the app called process.disconnect()): it can no
    /// longer answer, which is no hang.
    pub(super) fn on_unanswerable(&mut self, pid: i32) {
        for w in self.workers_mut() {
            if w.pid == pid {
                w.answers = false;
                w.asked = None;
            }
        }
    }

    fn workers_mut(&mut self) -> impl Iterator<Item = &mut Worker> {
        self.slots.iter_mut().flat_map(|s| {
            let current = match &mut s.state {
                SlotState::Up(w) => Some(w),
                _ => None,
            };
            let incoming = match &mut s.incoming {
                Some(Incoming::Up(w) | Incoming::Proving { worker: w, .. }) => Some(w),
                _ => None,
            };
            current.into_iter().chain(incoming)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::*;

    fn watched(timeout_ms: u64) -> Harness {
        let mut h = Harness::new(Settings {
            instances: 2,
            hang_timeout: Duration::from_millis(timeout_ms),
            ..settings()
        });
        h.start();
        h.feed(Event::Alive { pid: 101 }, 0);
        h.feed(Event::Alive { pid: 102 }, 0);
        h
    }

    #[test]
    fn ready_workers_that_answer_are_pinged_once_per_round() {
        let mut h = watched(2000); // rounds every 500 ms
        assert_eq!(h.sup.next_deadline(), Some(h.at(500)));
        let a = h.feed(Event::Tick, 500);
        assert_eq!(
            effects(&a),
            vec![Action::Ping { pid: 101 }, Action::Ping { pid: 102 }]
        );
        // Outstanding pings: no new round, only their hang deadline.
        assert_eq!(h.sup.next_deadline(), Some(h.at(2500)));
        h.feed(Event::Alive { pid: 101 }, 520);
        assert_eq!(h.sup.next_deadline(), Some(h.at(1000)), "101's next round");
        let a = h.feed(Event::Tick, 1000);
        assert_eq!(effects(&a), vec![Action::Ping { pid: 101 }], "102 has one");
        let view = h.sup.workers();
        assert_eq!(view[0].answered, Some(h.at(520)));
        assert_eq!(view[0].answer_delay, Some(Duration::from_millis(20)));
    }

    #[test]
    fn a_worker_silent_for_the_timeout_is_replaced_first_then_killed() {
        let mut h = watched(2000);
        h.feed(Event::Tick, 500);
        h.feed(Event::Alive { pid: 101 }, 510);
        // 102 never answers the ping sent at 500.
        let a = h.feed(Event::Tick, 2499);
        assert!(!has_note(&a, |n| matches!(n, Note::WorkerHung { .. })));
        let a = h.feed(Event::Tick, 2500);
        assert!(has_note(&a, |n| *n
            == Note::WorkerHung {
                slot: 1,
                pid: 102,
                silent_ms: 2000,
                hang_timeout_ms: 2000
            }));
        let fx = effects(&a);
        let spawn = fx.iter().position(|e| *e == Action::Spawn { slot: 1 });
        let kill = fx.iter().position(|e| {
            *e == Action::SignalGroup {
                pgid: 102,
                signal: KILL,
            }
        });
        assert!(spawn.is_some() && kill.is_some() && spawn < kill, "{fx:?}");
        assert_eq!(h.sup.serving(), vec![101, 103]);
        assert_eq!(h.sup.workers()[1].restarts, 1);
        // Its death by our SIGKILL is no failure: no restart, no code.
        let a = h.feed(
            Event::Exited {
                pid: 102,
                status: Status::Signal(KILL),
            },
            2600,
        );
        assert!(effects(&a).is_empty(), "{a:?}");
        h.feed(Event::Signal(TERM), 2700);
        h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Code(0),
            },
            2800,
        );
        let a = h.feed(
            Event::Exited {
                pid: 103,
                status: Status::Code(0),
            },
            2800,
        );
        let a = [a, h.feed(Event::TreeEmpty, 2800)].concat();
        assert!(effects(&a).contains(&Action::Exit(0)), "{a:?}");
    }

    #[test]
    fn busy_for_less_than_the_timeout_is_left_alone() {
        let mut h = watched(2000);
        h.feed(Event::Tick, 500);
        h.feed(Event::Alive { pid: 101 }, 510);
        // 102's loop was busy 1.9 s (95 % of the timeout) after the ping.
        for t in [1000, 1500, 2000, 2390] {
            let a = h.feed(Event::Tick, t);
            assert!(!has_note(&a, |n| matches!(n, Note::WorkerHung { .. })));
        }
        h.feed(Event::Alive { pid: 102 }, 2400);
        for t in (2500..=8000).step_by(500) {
            let a = h.feed(Event::Tick, t);
            assert!(!has_note(&a, |n| matches!(n, Note::WorkerHung { .. })));
            h.feed(Event::Alive { pid: 101 }, t + 1);
            h.feed(Event::Alive { pid: 102 }, t + 1);
        }
        assert_eq!(h.sup.serving(), vec![101, 102]);
    }

    #[test]
    fn no_pings_without_the_preloads_hello_before_ready_or_when_off() {
        // No hello: never pinged, never hung.
        let mut h = Harness::new(Settings {
            instances: 1,
            hang_timeout: Duration::from_millis(100),
            ..settings()
        });
        h.start();
        assert_eq!(h.sup.next_deadline(), None, "idle: no wake-up");
        // Not ready yet: no ping.
        let mut h = awaiting(Settings {
            instances: 1,
            hang_timeout: Duration::from_millis(100),
            ..settings()
        });
        h.start();
        h.feed(Event::Alive { pid: 101 }, 0);
        let a = h.feed(Event::Tick, 50);
        assert!(!effects(&a).contains(&Action::Ping { pid: 101 }));
        // Off (timeout 0): nothing, even with a hello.
        let mut h = Harness::new(settings());
        h.start();
        h.feed(Event::Alive { pid: 101 }, 0);
        assert_eq!(h.sup.next_deadline(), None);
        // A closed channel ends the watch, an outstanding ping included.
        let mut h = watched(2000);
        h.feed(Event::Tick, 500);
        h.feed(Event::Alive { pid: 101 }, 510);
        h.feed(Event::Unanswerable { pid: 102 }, 600);
        let a = h.feed(Event::Tick, 3000);
        assert!(!has_note(&a, |n| matches!(n, Note::WorkerHung { .. })));
        assert!(!effects(&a).contains(&Action::Ping { pid: 102 }));
    }

    #[test]
    fn a_round_waits_its_interval_after_the_last_one() {
        let mut h = watched(2000); // rounds every 500 ms
        h.feed(Event::Tick, 500);
        h.feed(Event::Alive { pid: 101 }, 510);
        h.feed(Event::Alive { pid: 102 }, 510);
        let a = h.feed(Event::Tick, 999);
        assert!(!effects(&a).iter().any(|e| matches!(e, Action::Ping { .. })));
        assert_eq!(h.sup.next_deadline(), Some(h.at(1000)));
    }

    #[test]
    fn a_reloads_new_worker_that_said_hello_is_watched_once_it_takes_the_slot() {
        let mut h = awaiting(Settings {
            instances: 1,
            hang_timeout: Duration::from_millis(2000),
            min_uptime: Duration::ZERO,
            ..settings()
        });
        h.start();
        h.feed(Event::Alive { pid: 101 }, 0);
        h.feed(Event::Ready { pid: 101 }, 10);
        h.feed(Event::Signal(libc::SIGHUP), 20); // 102 for slot 0
        h.feed(Event::Alive { pid: 102 }, 30); // its hello, while incoming
        h.feed(Event::Ready { pid: 102 }, 40); // takes the slot at once
        assert_eq!(h.sup.serving(), vec![102]);
        let a = h.feed(Event::Tick, 600);
        assert!(effects(&a).contains(&Action::Ping { pid: 102 }), "{a:?}");
    }

    #[test]
    fn a_hang_during_a_stop_is_left_to_the_grace() {
        let mut h = Harness::new(Settings {
            instances: 1,
            hang_timeout: Duration::from_millis(2000),
            stop_delay: Duration::from_secs(10),
            ..settings()
        });
        h.start();
        h.feed(Event::Alive { pid: 101 }, 0);
        h.feed(Event::Tick, 500);
        h.feed(Event::Signal(TERM), 600);
        let a = h.feed(Event::Tick, 5000);
        assert!(!has_note(&a, |n| matches!(n, Note::WorkerHung { .. })));
        assert!(!effects(&a)
            .iter()
            .any(|e| matches!(e, Action::Spawn { .. })));
    }
}
