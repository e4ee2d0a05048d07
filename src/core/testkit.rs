//! Shared by the core's unit tests: default settings, a harness that plays
//! the shell (answers every Spawn with a new pid), and action filters.

use std::time::{Duration, Instant};

use super::*;

pub(crate) const INT: i32 = libc::SIGINT;
pub(crate) const TERM: i32 = libc::SIGTERM;
pub(crate) const KILL: i32 = libc::SIGKILL;

pub(crate) fn settings() -> Settings {
    Settings {
        instances: 1,
        stop_signal: INT,
        kill_timeout: Duration::from_secs(8),
        stop_delay: Duration::ZERO,
        restart: Restart::OnFailure,
        max_restarts: 16,
        min_uptime: Duration::from_secs(1),
        listen_timeout: Duration::from_secs(3),
        interactive: false,
        hang_timeout: Duration::ZERO,
    }
}

/// A supervisor driven through events at controlled times.
pub(crate) struct Harness {
    pub(crate) sup: Supervisor,
    pub(crate) t0: Instant,
    pub(crate) next_pid: i32,
    /// Spawned workers are ready at once (no readiness awaited).
    pub(crate) ready_on_spawn: bool,
}

impl Harness {
    pub(crate) fn new(settings: Settings) -> Harness {
        Harness {
            sup: Supervisor::new(settings),
            t0: Instant::now(),
            next_pid: 100,
            ready_on_spawn: true,
        }
    }

    pub(crate) fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// Feeds an event; answers every Spawn as the shell would, with a new pid.
    pub(crate) fn feed(&mut self, event: Event, ms: u64) -> Vec<Action> {
        let now = self.at(ms);
        let mut all = Vec::new();
        let mut queue = vec![event];
        while let Some(e) = queue.pop() {
            for a in self.sup.handle(e, now) {
                if let Action::Spawn { slot } = a {
                    self.next_pid += 1;
                    queue.push(Event::Spawned {
                        slot,
                        pid: self.next_pid,
                        ready: self.ready_on_spawn,
                    });
                }
                all.push(a);
            }
        }
        all
    }

    pub(crate) fn start(&mut self) -> Vec<Action> {
        self.feed(Event::Start, 0)
    }
}

pub(crate) fn effects(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .filter(|a| {
            !matches!(
                a,
                Action::Log(_) | Action::Steer { .. } | Action::Answer { .. }
            )
        })
        .cloned()
        .collect()
}

pub(crate) fn notes(actions: &[Action]) -> Vec<Note> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

pub(crate) fn exit_code(actions: &[Action]) -> Option<i32> {
    actions.iter().find_map(|a| match a {
        Action::Exit(c) => Some(*c),
        _ => None,
    })
}

pub(crate) fn steered(actions: &[Action]) -> Option<Vec<usize>> {
    actions.iter().rev().find_map(|a| match a {
        Action::Steer { slots } => Some(slots.clone()),
        _ => None,
    })
}

/// A harness whose workers must say they are ready.
pub(crate) fn awaiting(settings: Settings) -> Harness {
    let mut h = Harness::new(settings);
    h.ready_on_spawn = false;
    h
}

/// Four workers; a new worker takes its slot as soon as it is ready (no
/// --min-uptime probation: the reload tests pin the order of steps, the
/// probation has tests of its own).
pub(crate) fn four() -> Settings {
    Settings {
        instances: 4,
        min_uptime: Duration::ZERO,
        ..settings()
    }
}

/// Four workers (pids 101-104) that said they are ready at 10 ms.
pub(crate) fn four_ready() -> Harness {
    let mut h = awaiting(four());
    h.start();
    for pid in 101..=104 {
        h.feed(Event::Ready { pid }, 10);
    }
    h
}

/// Two ready workers (101, 102); a HUP at 20 ms started slot 0's new one (103).
pub(crate) fn two_ready_reloading() -> Harness {
    let mut h = awaiting(Settings {
        instances: 2,
        min_uptime: Duration::ZERO,
        ..settings()
    });
    h.start();
    h.feed(Event::Ready { pid: 101 }, 10);
    h.feed(Event::Ready { pid: 102 }, 10);
    h.feed(Event::Signal(libc::SIGHUP), 20);
    h
}

pub(crate) fn has_note(actions: &[Action], pred: impl Fn(&Note) -> bool) -> bool {
    notes(actions).iter().any(pred)
}

pub(crate) fn states(h: &Harness) -> Vec<(usize, Option<i32>, u64, WorkerState)> {
    h.sup
        .workers()
        .iter()
        .map(|v| (v.slot, v.pid, v.generation, v.state))
        .collect()
}

/// `pminit prestop`, as the shell hands it to the core.
pub(crate) fn prestop(h: &mut Harness, ms: u64) -> Vec<Action> {
    h.feed(
        Event::Asked {
            id: 1,
            ask: Ask::Prestop,
        },
        ms,
    )
}
