//! The supervisor's decisions, as a pure state machine.
//!
//! `Supervisor::handle(event, now)` returns the actions the I/O shell must
//! carry out (spawn, signal, exit) and the notes it must log. Nothing here
//! touches a process, a clock or a file, so every rule below is unit-tested
//! without starting anything.
//!
//! Rules enforced here:
//! - a worker that dies on its own is restarted per `--restart`, after a
//!   backoff that starts at 100 ms and doubles to 15 s; a worker that lived
//!   `--min-uptime` is restarted at once and resets the count;
//! - `--max-restarts` quick deaths in a row is a crash loop: stop everything,
//!   exit non-zero;
//! - a stop (TERM/INT) goes: stop-delay (still serving) -> stop signal to
//!   every worker group and stray -> kill-timeout -> SIGKILL; each further
//!   TERM/INT skips to the next step;
//! - pminit exits only when the shell reports that no child is left, so a
//!   grandchild's cleanup finishes (tini #180).

use serde::Serialize;
use std::time::{Duration, Instant};

use crate::parse::signal_name;

pub const BACKOFF_START: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// Exit code when the grace ran out and something had to be SIGKILLed.
pub const EXIT_KILLED: i32 = 128 + libc::SIGKILL;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    Always,
    OnFailure,
    Never,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub instances: usize,
    pub stop_signal: i32,
    pub kill_timeout: Duration,
    pub stop_delay: Duration,
    pub restart: Restart,
    pub max_restarts: u32,
    pub min_uptime: Duration,
    /// stdin is a terminal: worker 0 takes the foreground process group, and
    /// its death by SIGINT/SIGQUIT (Ctrl-C, Ctrl-\) ends the run.
    pub interactive: bool,
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Code(i32),
    Signal(i32),
}

impl Status {
    /// The shell convention (and tini's): the code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            Status::Code(c) => c,
            Status::Signal(s) => 128 + s,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// pminit is set up: start the workers.
    Start,
    /// The shell started the worker of `slot`.
    Spawned { slot: usize, pid: i32 },
    /// The shell could not start the worker of `slot` (exec failed).
    SpawnFailed { slot: usize, status: Status },
    /// A signal was delivered to pminit.
    Signal(i32),
    /// A child was reaped.
    Exited { pid: i32, status: Status },
    /// After reaping: pminit has no child left at all.
    TreeEmpty,
    /// The deadline from `next_deadline` has passed.
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Spawn {
        slot: usize,
    },
    /// Send `signal` to the process group led by `pgid`.
    SignalGroup {
        pgid: i32,
        signal: i32,
    },
    /// Send `signal` to every child of pminit outside the worker groups
    /// (orphans reparented to pminit).
    SignalStrays {
        signal: i32,
        workers: Vec<i32>,
    },
    /// SIGKILL everything pminit is responsible for: every process of the
    /// namespace when PID 1, else the worker groups and the strays.
    KillAll {
        workers: Vec<i32>,
    },
    /// The slots whose worker now exists changed: steer new connections to
    /// these (per-worker socket layout).
    Steer {
        slots: Vec<usize>,
    },
    Log(Note),
    Exit(i32),
}

/// Something worth a log line. The field names are the JSON log's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Note {
    WorkerSpawned {
        slot: usize,
        pid: i32,
    },
    WorkerExited {
        slot: usize,
        pid: i32,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
        uptime_ms: u64,
    },
    WorkerRestarting {
        slot: usize,
        delay_ms: u64,
        restarts: u32,
    },
    CrashLoop {
        slot: usize,
        quick_deaths: u32,
        min_uptime_ms: u64,
    },
    Interrupted {
        slot: usize,
        signal: String,
    },
    StopRequested {
        signal: String,
        delay_ms: u64,
    },
    Stopping {
        signal: String,
        workers: usize,
        grace_ms: u64,
    },
    GraceExpired {
        grace_ms: u64,
    },
    Scaled {
        instances: usize,
    },
    Forwarded {
        signal: String,
        workers: usize,
    },
    OrphanReaped {
        pid: i32,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
    },
    Exit {
        code: i32,
    },
}

impl Note {
    /// Debug notes are shown only with `-v`.
    pub fn is_debug(&self) -> bool {
        matches!(self, Note::Forwarded { .. } | Note::OrphanReaped { .. })
    }
}

fn split_status(status: Status) -> (Option<i32>, Option<String>) {
    match status {
        Status::Code(c) => (Some(c), None),
        Status::Signal(s) => (None, Some(signal_name(s))),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    /// Spawn requested; the shell answers with Spawned or SpawnFailed.
    Starting,
    Running {
        pid: i32,
        since: Instant,
    },
    /// Waiting out the restart backoff.
    Backoff {
        until: Instant,
    },
    /// Removed by TTOU: asked to stop; SIGKILL at `kill_at` (None once sent).
    Retiring {
        pid: i32,
        kill_at: Option<Instant>,
    },
    /// Exited and not restarted.
    Done,
}

#[derive(Clone, Debug)]
struct Slot {
    state: SlotState,
    quick_deaths: u32,
    restarts: u32,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: SlotState::Starting,
            quick_deaths: 0,
            restarts: 0,
        }
    }

    fn pid(&self) -> Option<i32> {
        match self.state {
            SlotState::Running { pid, .. } | SlotState::Retiring { pid, .. } => Some(pid),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// TERM received; still serving until `until` (--stop-delay).
    Draining {
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

pub struct Supervisor {
    settings: Settings,
    slots: Vec<Slot>,
    phase: Phase,
    /// The first exit code that explains the end of the run, if any.
    code: Option<i32>,
    killed: bool,
    /// The slots last reported with Action::Steer.
    steered: Vec<usize>,
}

/// Restart delay after the `n`-th quick death in a row (n >= 1).
pub fn backoff(n: u32) -> Duration {
    let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
    BACKOFF_START
        .checked_mul(factor)
        .map_or(BACKOFF_MAX, |d| d.min(BACKOFF_MAX))
}

impl Supervisor {
    pub fn new(settings: Settings) -> Supervisor {
        Supervisor {
            settings,
            slots: Vec::new(),
            phase: Phase::Running,
            code: None,
            killed: false,
            steered: Vec::new(),
        }
    }

    /// The earliest moment at which `Tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Draining { until } => Some(until),
            Phase::Stopping { kill_at } => Some(kill_at),
            Phase::Running | Phase::Killing | Phase::Exited => None,
        };
        let slots = self.slots.iter().filter_map(|s| match s.state {
            SlotState::Backoff { until } if self.phase == Phase::Running => Some(until),
            SlotState::Retiring { kill_at, .. } => kill_at,
            _ => None,
        });
        phase.into_iter().chain(slots).min()
    }

    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Exited {
            return out;
        }
        match event {
            Event::Start => {
                for slot in 0..self.settings.instances {
                    self.slots.push(Slot::new());
                    out.push(Action::Spawn { slot });
                }
            }
            Event::Spawned { slot, pid } => {
                if let Some(s) = self.slots.get_mut(slot) {
                    if s.state == SlotState::Starting {
                        s.state = SlotState::Running { pid, since: now };
                        out.push(Action::Log(Note::WorkerSpawned { slot, pid }));
                    }
                }
            }
            Event::SpawnFailed { slot, status } => {
                if self.slots.get(slot).map(|s| s.state) == Some(SlotState::Starting) {
                    self.worker_gone(slot, status, Duration::ZERO, now, &mut out);
                }
            }
            Event::Signal(sig) => self.on_signal(sig, now, &mut out),
            Event::Exited { pid, status } => self.on_exit(pid, status, now, &mut out),
            Event::TreeEmpty => {
                let stopping = matches!(
                    self.phase,
                    Phase::Draining { .. } | Phase::Stopping { .. } | Phase::Killing
                );
                if stopping && self.live_workers() == 0 {
                    self.exit(&mut out);
                }
            }
            Event::Tick => self.on_tick(now, &mut out),
        }
        let live = self.steerable();
        if live != self.steered && self.phase != Phase::Exited {
            self.steered = live.clone();
            out.push(Action::Steer { slots: live });
        }
        out
    }

    /// Slots whose worker exists and is not being retired.
    fn steerable(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| {
                matches!(
                    self.slots[i].state,
                    SlotState::Starting | SlotState::Running { .. }
                )
            })
            .collect()
    }

    /// Workers whose process exists (or is being created).
    fn live_workers(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| {
                matches!(
                    s.state,
                    SlotState::Starting | SlotState::Running { .. } | SlotState::Retiring { .. }
                )
            })
            .count()
    }

    fn worker_pids(&self) -> Vec<i32> {
        self.slots.iter().filter_map(Slot::pid).collect()
    }

    fn set_code(&mut self, code: i32) {
        self.code.get_or_insert(code);
    }

    fn exit(&mut self, out: &mut Vec<Action>) {
        let code = match self.code {
            Some(c) => c,
            None if self.killed => EXIT_KILLED,
            None => 0,
        };
        self.phase = Phase::Exited;
        out.push(Action::Log(Note::Exit { code }));
        out.push(Action::Exit(code));
    }

    fn on_signal(&mut self, sig: i32, now: Instant, out: &mut Vec<Action>) {
        match sig {
            libc::SIGTERM | libc::SIGINT => self.request_stop(sig, now, out),
            // The shell reaps on every wake-up; nothing else to do.
            libc::SIGCHLD => {}
            // Only pminit's own write to a closed pipe raises it: the write
            // fails with EPIPE, which is all we need to know.
            libc::SIGPIPE => {}
            libc::SIGTTIN => self.scale_up(out),
            libc::SIGTTOU => self.scale_down(now, out),
            _ => {
                let pids = self.worker_pids();
                out.push(Action::Log(Note::Forwarded {
                    signal: signal_name(sig),
                    workers: pids.len(),
                }));
                for pgid in pids {
                    out.push(Action::SignalGroup { pgid, signal: sig });
                }
            }
        }
    }

    fn request_stop(&mut self, sig: i32, now: Instant, out: &mut Vec<Action>) {
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
                    self.phase = Phase::Draining { until: now + delay };
                }
            }
            // A second TERM/INT skips what is left of the current step.
            Phase::Draining { .. } => self.stop_now(now, out),
            Phase::Stopping { .. } => self.kill_now(out),
            Phase::Killing | Phase::Exited => {}
        }
    }

    /// Stop signal to every worker group and stray; SIGKILL after the grace.
    fn stop_now(&mut self, now: Instant, out: &mut Vec<Action>) {
        let grace = self.settings.kill_timeout;
        let signal = self.settings.stop_signal;
        self.phase = Phase::Stopping {
            kill_at: now + grace,
        };
        out.push(Action::Log(Note::Stopping {
            signal: signal_name(signal),
            workers: self
                .slots
                .iter()
                .filter(|s| matches!(s.state, SlotState::Running { .. }))
                .count(),
            grace_ms: millis(grace),
        }));
        for slot in &mut self.slots {
            match slot.state {
                SlotState::Running { pid, .. } => {
                    out.push(Action::SignalGroup { pgid: pid, signal })
                }
                SlotState::Backoff { .. } => slot.state = SlotState::Done,
                _ => {}
            }
        }
        out.push(Action::SignalStrays {
            signal,
            workers: self.worker_pids(),
        });
    }

    fn kill_now(&mut self, out: &mut Vec<Action>) {
        self.phase = Phase::Killing;
        self.killed = true;
        out.push(Action::Log(Note::GraceExpired {
            grace_ms: millis(self.settings.kill_timeout),
        }));
        out.push(Action::KillAll {
            workers: self.worker_pids(),
        });
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Draining { until } if until <= now => self.stop_now(now, out),
            Phase::Stopping { kill_at } if kill_at <= now => self.kill_now(out),
            _ => {}
        }
        for slot in 0..self.slots.len() {
            match self.slots[slot].state {
                SlotState::Backoff { until } if until <= now && self.phase == Phase::Running => {
                    self.spawn(slot, out)
                }
                SlotState::Retiring {
                    pid,
                    kill_at: Some(at),
                } if at <= now => {
                    self.slots[slot].state = SlotState::Retiring { pid, kill_at: None };
                    out.push(Action::SignalGroup {
                        pgid: pid,
                        signal: libc::SIGKILL,
                    });
                }
                _ => {}
            }
        }
    }

    fn spawn(&mut self, slot: usize, out: &mut Vec<Action>) {
        self.slots[slot].state = SlotState::Starting;
        out.push(Action::Spawn { slot });
    }

    fn scale_up(&mut self, out: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            return;
        }
        // Reuse the first slot TTOU retired, so slots stay 0..N-1.
        let slot = match self.slots.iter().position(|s| s.state == SlotState::Done) {
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
        out.push(Action::Log(Note::Scaled {
            instances: self.settings.instances,
        }));
        self.spawn(slot, out);
    }

    fn scale_down(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.phase != Phase::Running || self.settings.instances <= 1 {
            return;
        }
        // The highest slot that still counts as a worker goes.
        let Some(slot) = self.slots.iter().rposition(|s| {
            matches!(
                s.state,
                SlotState::Starting | SlotState::Running { .. } | SlotState::Backoff { .. }
            )
        }) else {
            return;
        };
        self.settings.instances -= 1;
        out.push(Action::Log(Note::Scaled {
            instances: self.settings.instances,
        }));
        match self.slots[slot].state {
            SlotState::Running { pid, .. } => {
                self.slots[slot].state = SlotState::Retiring {
                    pid,
                    kill_at: Some(now + self.settings.kill_timeout),
                };
                out.push(Action::SignalGroup {
                    pgid: pid,
                    signal: self.settings.stop_signal,
                });
            }
            // Starting cannot be seen here: the shell answers a Spawn before
            // the next event. Backoff has no process to stop.
            _ => self.slots[slot].state = SlotState::Done,
        }
    }

    fn on_exit(&mut self, pid: i32, status: Status, now: Instant, out: &mut Vec<Action>) {
        let found = self.slots.iter().position(|s| s.pid() == Some(pid));
        let Some(slot) = found else {
            let (code, signal) = split_status(status);
            out.push(Action::Log(Note::OrphanReaped { pid, code, signal }));
            if self.phase == Phase::Killing {
                // A stray may have been reparented to us since the last sweep.
                out.push(Action::KillAll {
                    workers: self.worker_pids(),
                });
            }
            return;
        };
        let uptime = match self.slots[slot].state {
            SlotState::Running { since, .. } => now.saturating_duration_since(since),
            _ => Duration::ZERO,
        };
        let (code, signal) = split_status(status);
        out.push(Action::Log(Note::WorkerExited {
            slot,
            pid,
            code,
            signal,
            uptime_ms: millis(uptime),
        }));
        if let SlotState::Retiring { .. } = self.slots[slot].state {
            self.slots[slot].state = SlotState::Done;
            return;
        }
        self.worker_gone(slot, status, uptime, now, out);
    }

    /// The worker of `slot` is gone (exited, or never started).
    fn worker_gone(
        &mut self,
        slot: usize,
        status: Status,
        uptime: Duration,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.slots[slot].state = SlotState::Done;
        match self.phase {
            Phase::Running => self.unplanned_exit(slot, status, uptime, now, out),
            Phase::Draining { .. } => {
                if status != Status::Code(0) {
                    self.set_code(status.code());
                }
            }
            Phase::Stopping { .. } | Phase::Killing => {
                let stop = self.settings.stop_signal;
                let clean = status == Status::Code(0)
                    || status == Status::Signal(stop)
                    || status == Status::Code(128 + stop);
                if !clean {
                    self.set_code(status.code());
                }
                if self.phase == Phase::Killing {
                    out.push(Action::KillAll {
                        workers: self.worker_pids(),
                    });
                }
            }
            Phase::Exited => {}
        }
    }

    fn unplanned_exit(
        &mut self,
        slot: usize,
        status: Status,
        uptime: Duration,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let s = &self.settings;
        if s.interactive && slot == 0 {
            if let Status::Signal(sig @ (libc::SIGINT | libc::SIGQUIT)) = status {
                // Ctrl-C at the terminal: the user wants it stopped, as a shell would.
                out.push(Action::Log(Note::Interrupted {
                    slot,
                    signal: signal_name(sig),
                }));
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
            if self.slots.iter().all(|s| s.state == SlotState::Done) {
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
            info.state = SlotState::Backoff { until: now + delay };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INT: i32 = libc::SIGINT;
    const TERM: i32 = libc::SIGTERM;
    const KILL: i32 = libc::SIGKILL;

    fn settings() -> Settings {
        Settings {
            instances: 1,
            stop_signal: INT,
            kill_timeout: Duration::from_secs(8),
            stop_delay: Duration::ZERO,
            restart: Restart::OnFailure,
            max_restarts: 16,
            min_uptime: Duration::from_secs(1),
            interactive: false,
        }
    }

    /// A supervisor driven through events at controlled times.
    struct Harness {
        sup: Supervisor,
        t0: Instant,
        next_pid: i32,
    }

    impl Harness {
        fn new(settings: Settings) -> Harness {
            Harness {
                sup: Supervisor::new(settings),
                t0: Instant::now(),
                next_pid: 100,
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        /// Feeds an event; answers every Spawn as the shell would, with a new pid.
        fn feed(&mut self, event: Event, ms: u64) -> Vec<Action> {
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
                        });
                    }
                    all.push(a);
                }
            }
            all
        }

        fn start(&mut self) -> Vec<Action> {
            self.feed(Event::Start, 0)
        }
    }

    fn effects(actions: &[Action]) -> Vec<Action> {
        actions
            .iter()
            .filter(|a| !matches!(a, Action::Log(_) | Action::Steer { .. }))
            .cloned()
            .collect()
    }

    fn notes(actions: &[Action]) -> Vec<Note> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Log(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    fn exit_code(actions: &[Action]) -> Option<i32> {
        actions.iter().find_map(|a| match a {
            Action::Exit(c) => Some(*c),
            _ => None,
        })
    }

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
                Action::SignalGroup {
                    pgid: 101,
                    signal: INT
                },
                Action::SignalGroup {
                    pgid: 102,
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
        assert!(effects(&a).contains(&Action::SignalGroup {
            pgid: 101,
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
        assert!(effects(&a).contains(&Action::SignalGroup {
            pgid: 101,
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
    fn other_signals_are_forwarded_to_every_worker_group() {
        for sig in [
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGQUIT,
            libc::SIGWINCH,
            libc::SIGHUP,
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
            vec![Action::SignalGroup {
                pgid: 103,
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
        // TTIN reuses a freed slot number rather than growing the table.
        let a = h.feed(Event::Signal(libc::SIGTTIN), 1060);
        assert_eq!(effects(&a), vec![Action::Spawn { slot: 2 }]);
        assert_eq!(h.sup.slots.len(), 3);
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

    fn steered(actions: &[Action]) -> Option<Vec<usize>> {
        actions.iter().rev().find_map(|a| match a {
            Action::Steer { slots } => Some(slots.clone()),
            _ => None,
        })
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
}
