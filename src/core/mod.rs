//! The supervisor's decisions, as a pure state machine.
//!
//! `Supervisor::handle(event, now)` returns the actions the I/O shell must
//! carry out (spawn, signal, exit) and the notes it must log. Nothing here
//! touches a process, a clock or a file, so every rule is unit-tested, and
//! model-tested against generated event sequences (`model.rs`), without
//! starting anything. `event_loop.rs` is the only caller that does I/O.
//!
//! Where each behaviour lives:
//! - `types.rs`: the settings, events, actions and views (the vocabulary);
//! - `mod.rs`: the state (slots, retirees, phase),
//!   `handle` (dispatch), timers (`next_deadline`, `on_tick`), readiness
//!   reports and signals;
//! - `restart.rs`: a worker that exits on its own: restart policy, backoff
//!   (100 ms doubling to 15 s; a worker that lived `--min-uptime` restarts at
//!   once and resets the count), crash loop after `--max-restarts`;
//! - `reload.rs`: rolling reload (HUP): generations, promote, drain, failure;
//! - `memory.rs`: a worker over its memory (--max-memory, its heap or its
//!   share of the container): a one-slot reload; one about to exhaust the
//!   container: killed now, its replacement started first;
//! - `liveness.rs`: pings to ready workers, and a hung one (no answer
//!   within --hang-timeout) replaced and killed;
//! - `stop.rs`: stop delay, stop signal, grace, SIGKILL sweep, exit code;
//! - `signals.rs`: what each signal to pminit does, and forwarding the
//!   others to every worker's process group;
//! - `scale.rs`: TTIN, TTOU and `pminit scale`;
//! - `status.rs`: what `pminit status` and `pminit ready` see;
//! - `requests.rs`: the control verbs that ask the core (reload, scale,
//!   prestop, ready), answered before their effects;
//! - `notes.rs`: the log lines the core asks for;
//! - tests only: `testkit.rs` (a harness that plays the shell),
//!   `invariants.rs` (the invariants below as code), `model.rs` (generated
//!   event sequences, checked after every step).
//!
//! Invariants. `check_invariants` (invariants.rs) checks those that the
//! state alone shows; the model (model.rs) checks the others on each step's
//! actions, and the end-state ones after a final TERM:
//! 1. Surge: at most one incoming worker, only during a reload; never more
//!    than N + 1 workers that are not draining.
//! 2. A reload never stops an old worker before a ready worker of a newer
//!    generation has its slot (or the slot was removed, or everything
//!    stops). A new worker takes its slot only after --min-uptime of
//!    probation once ready, unless nothing older serves there.
//! 3. After a failed reload every slot that was serving still serves.
//! 4. Every spawned pid is tracked once until it is reaped, a worker whose
//!    slot stopped waiting for it included; once a stop has begun (stop
//!    delay included) nothing is spawned and nothing waits for a restart.
//! 5. pminit exits only when no worker and no other process remains, and a
//!    TERM followed by enough time always ends in an exit.
//! 6. The exit code follows the README's table: a worker's own code or
//!    128 + signal; non-zero for a crash loop or a worker SIGKILLed at the
//!    end of the grace; 0 when every worker ended cleanly; stray orphans,
//!    and retirees that we SIGKILLed earlier, never change it.
//! 7. `ready` holds only while running, not draining, with every slot
//!    served by a ready worker once (then at least one).
//! 8. `next_deadline` is at or before every pending timer, and a Tick at
//!    that moment does something or leaves no timer due (no busy loop, no
//!    lost timer).

use std::time::{Duration, Instant};

use crate::parse::signal_name;

mod liveness;
mod memory;
mod notes;
mod reload;
mod requests;
mod restart;
mod scale;
mod signals;
mod status;
mod stop;
mod types;

pub use notes::Note;
use notes::{millis, split_status};
pub use types::*;

/// One worker process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Worker {
    pid: i32,
    since: Instant,
    generation: u64,
    ready: bool,
    /// When --listen-timeout runs out if it is not ready by then.
    ready_by: Instant,
    /// Liveness (liveness.rs): it answers pings (its preload said so).
    answers: bool,
    /// When the oldest ping it has not answered yet was sent.
    asked: Option<Instant>,
    /// When it last answered, and how long that answer took.
    answered: Option<Instant>,
    answer_delay: Option<Duration>,
}

/// Every change of a slot's state the core makes, in one table (as
/// Horust's ALLOWED_TRANSITIONS): `Slot::go` is the only way to change it,
/// and checks it in every debug build, so the unit and model tests
/// (thousands of generated event sequences) assert it at each step. A
/// worker's replacement (promote) is Up -> Up.
const TRANSITIONS: &[(&str, &str)] = &[
    ("spawning", "up"),      // started
    ("spawning", "done"),    // could not start
    ("spawning", "retired"), // removed by a scale down
    ("up", "up"),            // replaced by its ready successor
    ("up", "done"),          // exited, or retired as hung or out of memory
    ("up", "retired"),       // removed by a scale down
    ("backoff", "spawning"), // the backoff is over
    ("backoff", "up"),       // a reload's new worker took the slot
    ("backoff", "done"),     // a stop cancels the restart
    ("backoff", "retired"),  // removed by a scale down
    ("done", "spawning"),    // restarted at once
    ("done", "backoff"),     // restarted after a delay
    ("done", "up"),          // its ready successor took the slot
    ("done", "retired"),     // removed by a scale down
];
// A slot is born spawning; a scale up that reuses a retired slot replaces
// it with a new one (restarts and quick deaths start over).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    /// Spawn requested; the shell answers with Spawned or SpawnFailed.
    Spawning,
    Up(Worker),
    /// Waiting out the restart backoff.
    Backoff {
        until: Instant,
    },
    /// Exited and not restarted.
    Done,
    /// Removed by TTOU; TTIN may bring it back.
    Retired,
}

/// The new worker of a slot during a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Incoming {
    Spawning,
    /// Started, not ready yet.
    Up(Worker),
    /// Ready; it takes the slot at `until` (--min-uptime after it said so)
    /// if it is still alive. A release that dies right after saying ready
    /// fails the reload instead of replacing a working one.
    Proving {
        worker: Worker,
        until: Instant,
    },
}

#[derive(Clone, Debug)]
struct Slot {
    state: SlotState,
    incoming: Option<Incoming>,
    quick_deaths: u32,
    restarts: u32,
}

impl SlotState {
    fn name(&self) -> &'static str {
        match self {
            SlotState::Spawning => "spawning",
            SlotState::Up(_) => "up",
            SlotState::Backoff { .. } => "backoff",
            SlotState::Done => "done",
            SlotState::Retired => "retired",
        }
    }
}

impl Slot {
    /// The one way to change the slot's state (see TRANSITIONS).
    fn go(&mut self, to: SlotState) {
        debug_assert!(
            TRANSITIONS.contains(&(self.state.name(), to.name())),
            "slot state {:?} -> {:?} is not in TRANSITIONS",
            self.state,
            to
        );
        self.state = to;
    }

    fn new() -> Slot {
        Slot {
            state: SlotState::Spawning,
            incoming: None,
            quick_deaths: 0,
            restarts: 0,
        }
    }

    fn worker(&self) -> Option<Worker> {
        match self.state {
            SlotState::Up(w) => Some(w),
            _ => None,
        }
    }

    fn incoming_worker(&self) -> Option<Worker> {
        match self.incoming {
            Some(Incoming::Up(w) | Incoming::Proving { worker: w, .. }) => Some(w),
            _ => None,
        }
    }

    /// Finished for good: nothing runs and nothing will be restarted.
    fn finished(&self) -> bool {
        matches!(self.state, SlotState::Done | SlotState::Retired) && self.incoming.is_none()
    }
}

/// A worker retired from its slot and asked to stop (replaced by a reload
/// or a memory replacement, removed by a scale down, or killed as hung or
/// out of memory), tracked until it is reaped. Not the preload's drain of
/// connections, nor the `draining` state `pminit status` shows for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Retiree {
    pid: i32,
    slot: usize,
    since: Instant,
    generation: u64,
    /// SIGKILL at this moment; None once sent.
    kill_at: Option<Instant>,
    /// Its --kill-timeout ran out and we sent SIGKILL: its death by SIGKILL
    /// is our doing, not the app's failure.
    sigkilled: bool,
}

impl Retiree {
    /// `w` leaving `slot`: asked to stop with SIGKILL at `kill_at`, or
    /// (None) SIGKILLed already, so its death by SIGKILL is ours.
    fn of(slot: usize, w: Worker, kill_at: Option<Instant>) -> Retiree {
        Retiree {
            pid: w.pid,
            slot,
            since: w.since,
            generation: w.generation,
            kill_at,
            sigkilled: kill_at.is_none(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// TERM received; still serving until `until` (--stop-delay). Shown
    /// as `draining` in `pminit status`, like a prestop.
    StopDelay {
        until: Instant,
    },
    /// Stop signal sent; SIGKILL at `kill_at`.
    Stopping {
        kill_at: Instant,
    },
    /// SIGKILL sent; waiting for the tree to be reaped.
    Killing,
    Exited,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reload {
    /// The slot being replaced, or the next one to look at.
    slot: usize,
    /// A HUP arrived meanwhile: one more reload after this one.
    again: bool,
    /// Only this slot (--max-memory), not a rolling reload of all.
    single: bool,
    /// Slots whose worker this reload has replaced so far.
    replaced: usize,
}

pub struct Supervisor {
    settings: Settings,
    slots: Vec<Slot>,
    retirees: Vec<Retiree>,
    phase: Phase,
    reload: Option<Reload>,
    /// Bumped by every reload; workers carry the one they were started in.
    generation: u64,
    /// The first exit code that explains the end of the run, if any.
    code: Option<i32>,
    killed: bool,
    /// The slots last reported with Action::Steer.
    steered: Vec<usize>,
    /// `pminit prestop` was called: not ready, still serving.
    prestopped: bool,
    /// Every slot has had a ready worker at once: from then on one ready
    /// worker is enough for `ready` (a single restart does not unready us).
    fully_up: bool,
    /// When the last round of liveness pings went out.
    pinged_at: Option<Instant>,
}

impl Supervisor {
    pub fn new(settings: Settings) -> Supervisor {
        Supervisor {
            settings,
            slots: Vec::new(),
            retirees: Vec::new(),
            phase: Phase::Running,
            reload: None,
            generation: 0,
            code: None,
            killed: false,
            steered: Vec::new(),
            prestopped: false,
            fully_up: false,
            pinged_at: None,
        }
    }

    /// The earliest moment at which `Tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::StopDelay { until } => Some(until),
            Phase::Stopping { kill_at } => Some(kill_at),
            Phase::Running | Phase::Killing | Phase::Exited => None,
        };
        let running = self.phase == Phase::Running;
        let slots = self.slots.iter().flat_map(|s| {
            let backoff = match s.state {
                // Only while running: a stop cancels every backoff.
                SlotState::Backoff { until } => Some(until),
                _ => None,
            };
            let readiness = [s.worker(), s.incoming_worker()]
                .into_iter()
                .flatten()
                .filter(|w| !w.ready && running)
                .map(|w| w.ready_by);
            let proving = match s.incoming {
                Some(Incoming::Proving { until, .. }) if running => Some(until),
                _ => None,
            };
            backoff.into_iter().chain(readiness).chain(proving)
        });
        let retirees = self.retirees.iter().filter_map(|d| d.kill_at);
        let liveness = self.liveness_deadline();
        phase
            .into_iter()
            .chain(slots)
            .chain(retirees)
            .chain(liveness)
            .min()
    }

    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Exited {
            return out;
        }
        match event {
            Event::Start => {
                self.pinged_at = Some(now);
                for slot in 0..self.settings.instances {
                    self.slots.push(Slot::new());
                    out.push(Action::Spawn { slot });
                }
            }
            Event::Spawned { slot, pid, ready } => self.on_spawned(slot, pid, ready, now, &mut out),
            Event::SpawnFailed { slot, status } => {
                let Some(s) = self.slots.get_mut(slot) else {
                    return out;
                };
                if s.incoming == Some(Incoming::Spawning) {
                    s.incoming = None;
                    let reason = format!("the new worker could not start (code {})", status.code());
                    self.reload_failed(slot, reason, &mut out);
                } else if s.state == SlotState::Spawning {
                    self.worker_gone(slot, status, Duration::ZERO, now, &mut out);
                }
            }
            Event::Ready { pid } => self.on_ready(pid, now, &mut out),
            Event::Signal(sig) => self.on_signal(sig, now, &mut out),
            Event::Exited { pid, status } => self.on_exit(pid, status, now, &mut out),
            Event::TreeEmpty => {
                let stopping = matches!(
                    self.phase,
                    Phase::StopDelay { .. } | Phase::Stopping { .. } | Phase::Killing
                );
                if stopping && self.live_workers() == 0 {
                    self.exit(&mut out);
                }
            }
            Event::Tick => self.on_tick(now, &mut out),
            Event::OverMemory { pid, rss, reason } => self.over_memory(pid, rss, reason, &mut out),
            Event::MemoryCritical { pid, rss, limit } => {
                self.memory_critical(pid, rss, limit, now, &mut out)
            }
            Event::Alive { pid } => self.on_alive(pid, now),
            Event::Unanswerable { pid } => self.on_unanswerable(pid),
            Event::Scale(to) => self.scale(to, now, &mut out),
            Event::Asked { id, ask } => self.on_ask(id, ask, now, &mut out),
        }
        let live = self.steerable();
        if !self.fully_up && !live.is_empty() && live.len() == self.settings.instances {
            self.fully_up = true;
        }
        if live != self.steered && self.phase != Phase::Exited {
            self.steered = live.clone();
            out.push(Action::Steer { slots: live });
        }
        out
    }

    /// Slots whose current worker is ready: where new connections may go.
    fn steerable(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].worker().is_some_and(|w| w.ready))
            .collect()
    }

    /// Worker processes that exist or are being created.
    fn live_workers(&self) -> usize {
        let slots: usize = self
            .slots
            .iter()
            .map(|s| {
                usize::from(matches!(s.state, SlotState::Spawning | SlotState::Up(_)))
                    + usize::from(s.incoming.is_some())
            })
            .sum();
        slots + self.retirees.len()
    }

    fn worker_pids(&self) -> Vec<i32> {
        let slots = self
            .slots
            .iter()
            .flat_map(|s| [s.worker(), s.incoming_worker()])
            .flatten()
            .map(|w| w.pid);
        slots.chain(self.retirees.iter().map(|d| d.pid)).collect()
    }

    fn set_code(&mut self, code: i32) {
        self.code.get_or_insert(code);
    }

    fn new_worker(&self, pid: i32, ready: bool, now: Instant) -> Worker {
        Worker {
            pid,
            since: now,
            generation: self.generation,
            ready,
            ready_by: now + self.settings.listen_timeout,
            answers: false,
            asked: None,
            answered: None,
            answer_delay: None,
        }
    }

    fn on_spawned(
        &mut self,
        slot: usize,
        pid: i32,
        ready: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let worker = self.new_worker(pid, ready, now);
        let Some(s) = self
            .slots
            .get_mut(slot)
            .filter(|s| s.incoming == Some(Incoming::Spawning) || s.state == SlotState::Spawning)
        else {
            // Its slot stopped waiting for it between the spawn and this
            // answer (removed, or its reload ended): a process nobody
            // tracked would outlive the run, so it is stopped at once.
            out.push(Action::Log(Note::WorkerSpawned { slot, pid }));
            self.retire(slot, worker, now, out);
            return;
        };
        if s.incoming == Some(Incoming::Spawning) {
            s.incoming = Some(Incoming::Up(worker));
            out.push(Action::Log(Note::WorkerSpawned { slot, pid }));
            if ready {
                self.incoming_ready(slot, now, out);
            }
        } else if s.state == SlotState::Spawning {
            s.go(SlotState::Up(worker));
            out.push(Action::Log(Note::WorkerSpawned { slot, pid }));
        }
    }

    fn on_ready(&mut self, pid: i32, now: Instant, out: &mut Vec<Action>) {
        let generation = self.generation;
        for slot in 0..self.slots.len() {
            let s = &mut self.slots[slot];
            if let SlotState::Up(w) = &mut s.state {
                if w.pid == pid && !w.ready {
                    w.ready = true;
                    let generation = w.generation;
                    out.push(Action::Log(Note::WorkerReady {
                        slot,
                        pid,
                        generation,
                    }));
                    return;
                }
            }
            if let Some(Incoming::Up(w)) = &mut s.incoming {
                if w.pid == pid && !w.ready {
                    w.ready = true;
                    out.push(Action::Log(Note::WorkerReady {
                        slot,
                        pid,
                        generation,
                    }));
                    self.incoming_ready(slot, now, out);
                    return;
                }
            }
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.phase {
            Phase::StopDelay { until } if until <= now => self.stop_now(now, out),
            Phase::Stopping { kill_at } if kill_at <= now => self.kill_now(out),
            _ => {}
        }
        for d in &mut self.retirees {
            if d.kill_at.is_some_and(|at| at <= now) {
                d.kill_at = None;
                d.sigkilled = true;
                out.push(Action::SignalGroup {
                    pgid: d.pid,
                    signal: libc::SIGKILL,
                });
            }
        }
        if self.phase != Phase::Running {
            return;
        }
        let timeout = millis(self.settings.listen_timeout);
        for slot in 0..self.slots.len() {
            match &mut self.slots[slot].state {
                SlotState::Backoff { until } if *until <= now => self.spawn(slot, out),
                SlotState::Up(w) if !w.ready && w.ready_by <= now => {
                    // At start there is no old worker to keep: serve anyway.
                    w.ready = true;
                    out.push(Action::Log(Note::WorkerNotReady {
                        slot,
                        pid: w.pid,
                        listen_timeout_ms: timeout,
                    }));
                }
                _ => {}
            }
            match self.slots[slot].incoming {
                Some(Incoming::Up(w)) if !w.ready && w.ready_by <= now => {
                    self.slots[slot].incoming = None;
                    self.retire(slot, w, now, out);
                    let reason = format!("the new worker was not ready within {timeout} ms");
                    self.reload_failed(slot, reason, out);
                }
                Some(Incoming::Proving { until, .. }) if until <= now => {
                    self.promote(slot, now, out);
                }
                _ => {}
            }
        }
        self.liveness_tick(now, out);
    }
}

#[cfg(test)]
mod invariants;
#[cfg(test)]
mod model;
#[cfg(test)]
mod testkit;

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;

    #[test]
    fn start_spawns_every_slot() {
        let mut h = Harness::new(Settings {
            instances: 3,
            ..settings()
        });
        let a = h.start();
        assert_eq!(
            effects(&a),
            vec![
                Action::Spawn { slot: 0 },
                Action::Spawn { slot: 1 },
                Action::Spawn { slot: 2 }
            ]
        );
        assert_eq!(h.sup.worker_pids().len(), 3);
        assert_eq!(h.sup.next_deadline(), None, "idle: no deadline, no wake-up");
    }

    #[test]
    fn other_signals_are_forwarded_to_every_worker_group() {
        for sig in [
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGQUIT,
            libc::SIGWINCH,
            libc::SIGRTMIN() + 1,
        ] {
            let mut h = Harness::new(Settings {
                instances: 2,
                ..settings()
            });
            h.start();
            let a = h.feed(Event::Signal(sig), 10);
            assert_eq!(
                effects(&a),
                vec![
                    Action::SignalGroup {
                        pgid: 101,
                        signal: sig
                    },
                    Action::SignalGroup {
                        pgid: 102,
                        signal: sig
                    }
                ],
                "{}",
                signal_name(sig)
            );
        }
        let mut h = Harness::new(settings());
        h.start();
        assert!(effects(&h.feed(Event::Signal(libc::SIGCHLD), 10)).is_empty());
        assert!(effects(&h.feed(Event::Signal(libc::SIGPIPE), 10)).is_empty());
    }

    /// Found by the model: a slot removed between a spawn and its answer
    /// left the new process untracked; it would have outlived the run.
    #[test]
    fn a_worker_whose_slot_was_removed_before_its_spawn_was_answered_is_stopped() {
        let t0 = Instant::now();
        let mut sup = Supervisor::new(Settings {
            instances: 2,
            ..settings()
        });
        let a = sup.handle(Event::Start, t0);
        assert_eq!(
            effects(&a),
            vec![Action::Spawn { slot: 0 }, Action::Spawn { slot: 1 }]
        );
        sup.handle(
            Event::Spawned {
                slot: 0,
                pid: 101,
                ready: true,
            },
            t0,
        );
        // Before slot 1's answer arrives, a scale-down retires it.
        sup.handle(Event::Scale(ScaleTo::To(1)), t0);
        let a = sup.handle(
            Event::Spawned {
                slot: 1,
                pid: 102,
                ready: true,
            },
            t0,
        );
        assert_eq!(
            effects(&a),
            vec![Action::Stop {
                pid: 102,
                signal: INT
            }]
        );
        assert!(sup.worker_pids().contains(&102), "tracked until reaped");
    }

    /// From mutation testing: readiness is per pid, and a second report
    /// changes nothing.
    #[test]
    fn ready_marks_only_the_worker_that_said_so_and_only_once() {
        let mut h = awaiting(Settings {
            instances: 2,
            ..settings()
        });
        h.start();
        let a = h.feed(Event::Ready { pid: 102 }, 10);
        assert_eq!(
            notes(&a),
            vec![Note::WorkerReady {
                slot: 1,
                pid: 102,
                generation: 0
            }]
        );
        assert!(h.feed(Event::Ready { pid: 102 }, 20).is_empty());
        assert_eq!(
            h.sup.readiness(),
            Err("starting: 1 of 2 workers ready".into())
        );
        // During a reload: the new worker's report promotes only it.
        h.feed(Event::Ready { pid: 101 }, 30);
        h.feed(Event::Signal(libc::SIGHUP), 40); // 103 for slot 0
        let a = h.feed(Event::Ready { pid: 101 }, 50);
        assert!(a.is_empty(), "the old worker's report is no new worker's");
        assert!(h.sup.reloading());
    }

    /// From mutation testing: a timer of one kind does not fire the others
    /// early.
    #[test]
    fn a_tick_for_one_timer_leaves_the_others_alone() {
        // A backoff tick at 110 ms before slot 1's listen-timeout (3 s).
        let mut h = awaiting(Settings {
            instances: 2,
            ..settings()
        });
        h.start();
        h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Code(1),
            },
            10,
        );
        let a = h.feed(Event::Tick, 110);
        assert_eq!(effects(&a), vec![Action::Spawn { slot: 0 }]);
        assert!(
            !has_note(&a, |n| matches!(n, Note::WorkerNotReady { .. })),
            "slot 1 still has until 3 s to say it is ready"
        );
        // A retiree's kill during --stop-delay does not end the delay.
        let mut h = Harness::new(Settings {
            instances: 2,
            stop_delay: Duration::from_secs(5),
            kill_timeout: Duration::from_millis(500),
            ..settings()
        });
        h.start();
        h.feed(Event::Signal(libc::SIGTTOU), 10); // 102 drains, SIGKILL at 510
        h.feed(Event::Signal(TERM), 20); // serving until 5020
        let a = h.feed(Event::Tick, 510);
        assert_eq!(
            effects(&a),
            vec![Action::SignalGroup {
                pgid: 102,
                signal: KILL
            }]
        );
        assert_eq!(h.sup.phase_name(), "draining");
    }
}
