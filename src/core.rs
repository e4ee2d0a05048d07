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
//!   grandchild's cleanup finishes (tini #180);
//! - a rolling reload (HUP) goes slot by slot: the new worker starts beside
//!   the old one, and only once it is ready is the old one asked to stop
//!   (it drains under --kill-timeout while the next slot proceeds). A new
//!   worker that exits or misses --listen-timeout is stopped, the rest of
//!   the old generation keeps serving, and the reload is reported failed.
//!   One reload at a time; HUPs meanwhile fold into one more after it.

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
    /// Longest wait for a worker to become ready.
    pub listen_timeout: Duration,
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
    /// The shell started the worker of `slot`; `ready` when nothing more
    /// is awaited from it (no --wait-ready, no preload to report a listen).
    Spawned { slot: usize, pid: i32, ready: bool },
    /// A worker said it is ready (process.send('ready'), READY=1, or the
    /// preload reporting that it listens).
    Ready { pid: i32 },
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
    /// The worker's process group uses more memory than --max-memory.
    OverMemory { pid: i32, rss: u64 },
    /// `pminit scale`: change the number of workers.
    Scale(ScaleTo),
    /// `pminit prestop`: the orchestrator is about to stop us. Keep serving,
    /// but `ready` fails from now on, so traffic moves elsewhere.
    Prestop,
}

/// The most workers `scale` (and `-i`) accept.
pub const MAX_INSTANCES: usize = 1024;

/// The argument of `pminit scale N|+K|-K`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleTo {
    To(usize),
    Add(usize),
    Remove(usize),
}

impl ScaleTo {
    /// The number of workers this asks for, starting from `n`.
    pub fn from(self, n: usize) -> usize {
        match self {
            ScaleTo::To(t) => t,
            ScaleTo::Add(k) => n.saturating_add(k),
            ScaleTo::Remove(k) => n.saturating_sub(k),
        }
        .clamp(1, MAX_INSTANCES)
    }
}

/// What a worker is doing, for `pminit status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Started, not ready yet (or the new worker of a reload).
    Starting,
    Ready,
    /// Asked to stop; finishing what it has (replaced, removed, or stopping).
    Draining,
    /// Waiting out the restart backoff.
    Backoff,
    /// Exited and not restarted.
    Stopped,
}

/// One row of `pminit status`, as the core knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerView {
    pub slot: usize,
    pub pid: Option<i32>,
    pub generation: u64,
    pub state: WorkerState,
    pub restarts: u32,
    pub since: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Spawn {
        slot: usize,
    },
    /// Ask the worker `pid` to stop: `signal` to its process group (after
    /// pm2's shutdown message, if configured).
    Stop {
        pid: i32,
        signal: i32,
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
    WorkerReady {
        slot: usize,
        pid: i32,
        generation: u64,
    },
    /// Not ready within --listen-timeout at start: serving anyway.
    WorkerNotReady {
        slot: usize,
        pid: i32,
        listen_timeout_ms: u64,
    },
    /// An old or removed worker was asked to stop and drains.
    WorkerDraining {
        slot: usize,
        pid: i32,
    },
    /// Over --max-memory: a new worker replaces it, as in a reload.
    MemoryExceeded {
        slot: usize,
        pid: i32,
        rss_bytes: u64,
    },
    ReloadStarted {
        generation: u64,
    },
    ReloadQueued {
        generation: u64,
    },
    ReloadFinished {
        generation: u64,
    },
    ReloadFailed {
        generation: u64,
        slot: usize,
        reason: String,
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
    /// The worker that owns the terminal ended (Ctrl-C): stop the run.
    Interrupted {
        slot: usize,
        /// SIGINT, SIGQUIT, or "exit code 0" when it handled the signal.
        how: String,
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
    /// `pminit prestop`: `ready` fails from now on; still serving.
    Prestop,
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
    /// An sd_notify line from a worker.
    Notified {
        pid: i32,
        message: String,
    },
    Exit {
        code: i32,
    },
}

impl Note {
    /// Debug notes are shown only with `-v`.
    pub fn is_debug(&self) -> bool {
        match self {
            Note::Forwarded { .. } | Note::OrphanReaped { .. } => true,
            // STOPPING=1 is worth a line; READY=1 shows as worker_ready,
            // STATUS= and the rest only with -v.
            Note::Notified { message, .. } => message != "STOPPING=1",
            _ => false,
        }
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

/// One worker process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Worker {
    pid: i32,
    since: Instant,
    generation: u64,
    ready: bool,
    /// When --listen-timeout runs out if it is not ready by then.
    ready_by: Instant,
}

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
    Up(Worker),
}

#[derive(Clone, Debug)]
struct Slot {
    state: SlotState,
    incoming: Option<Incoming>,
    quick_deaths: u32,
    restarts: u32,
}

impl Slot {
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
            Some(Incoming::Up(w)) => Some(w),
            _ => None,
        }
    }

    /// Finished for good: nothing runs and nothing will be restarted.
    fn finished(&self) -> bool {
        matches!(self.state, SlotState::Done | SlotState::Retired) && self.incoming.is_none()
    }
}

/// A worker asked to stop (replaced by a reload, or removed by TTOU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Drainer {
    pid: i32,
    slot: usize,
    since: Instant,
    generation: u64,
    /// SIGKILL at this moment; None once sent.
    kill_at: Option<Instant>,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reload {
    /// The slot being replaced, or the next one to look at.
    slot: usize,
    /// A HUP arrived meanwhile: one more reload after this one.
    again: bool,
    /// Only this slot (--max-memory), not a rolling reload of all.
    single: bool,
}

pub struct Supervisor {
    settings: Settings,
    slots: Vec<Slot>,
    drainers: Vec<Drainer>,
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
            drainers: Vec::new(),
            phase: Phase::Running,
            reload: None,
            generation: 0,
            code: None,
            killed: false,
            steered: Vec::new(),
            prestopped: false,
            fully_up: false,
        }
    }

    /// The earliest moment at which `Tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Draining { until } => Some(until),
            Phase::Stopping { kill_at } => Some(kill_at),
            Phase::Running | Phase::Killing | Phase::Exited => None,
        };
        let running = self.phase == Phase::Running;
        let slots = self.slots.iter().flat_map(|s| {
            let backoff = match s.state {
                SlotState::Backoff { until } if running => Some(until),
                _ => None,
            };
            let readiness = [s.worker(), s.incoming_worker()]
                .into_iter()
                .flatten()
                .filter(|w| !w.ready && running)
                .map(|w| w.ready_by);
            backoff.into_iter().chain(readiness)
        });
        let drainers = self.drainers.iter().filter_map(|d| d.kill_at);
        phase.into_iter().chain(slots).chain(drainers).min()
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
                    Phase::Draining { .. } | Phase::Stopping { .. } | Phase::Killing
                );
                if stopping && self.live_workers() == 0 {
                    self.exit(&mut out);
                }
            }
            Event::Tick => self.on_tick(now, &mut out),
            Event::OverMemory { pid, rss } => self.over_memory(pid, rss, &mut out),
            Event::Scale(to) => self.scale(to, now, &mut out),
            Event::Prestop => {
                if !self.prestopped && self.phase == Phase::Running {
                    self.prestopped = true;
                    out.push(Action::Log(Note::Prestop));
                }
            }
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
        slots + self.drainers.len()
    }

    fn worker_pids(&self) -> Vec<i32> {
        let slots = self
            .slots
            .iter()
            .flat_map(|s| [s.worker(), s.incoming_worker()])
            .flatten()
            .map(|w| w.pid);
        slots.chain(self.drainers.iter().map(|d| d.pid)).collect()
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

    fn new_worker(&self, pid: i32, ready: bool, now: Instant) -> Worker {
        Worker {
            pid,
            since: now,
            generation: self.generation,
            ready,
            ready_by: now + self.settings.listen_timeout,
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
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if s.incoming == Some(Incoming::Spawning) {
            s.incoming = Some(Incoming::Up(worker));
            out.push(Action::Log(Note::WorkerSpawned { slot, pid }));
            if ready {
                self.promote(slot, now, out);
            }
        } else if s.state == SlotState::Spawning {
            s.state = SlotState::Up(worker);
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
                    self.promote(slot, now, out);
                    return;
                }
            }
        }
    }

    /// The incoming worker of `slot` is ready: it takes the slot, the old
    /// one drains, the reload moves on.
    fn promote(&mut self, slot: usize, now: Instant, out: &mut Vec<Action>) {
        let Some(new) = self.slots[slot].incoming_worker() else {
            return;
        };
        let old = std::mem::replace(&mut self.slots[slot].state, SlotState::Up(new));
        self.slots[slot].incoming = None;
        self.slots[slot].quick_deaths = 0;
        if let SlotState::Up(old) = old {
            self.drain(slot, old, now, out);
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

    /// Replaces one worker that grew past --max-memory, as a reload would:
    /// the new one first, the old one drains once it is ready.
    fn over_memory(&mut self, pid: i32, rss: u64, out: &mut Vec<Action>) {
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
        });
        self.slots[slot].incoming = Some(Incoming::Spawning);
        out.push(Action::Spawn { slot });
    }

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
            Phase::Draining { .. } => "draining",
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
            Phase::Draining { .. } => return Err("draining: stop requested (--stop-delay)".into()),
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
        let stopping = !matches!(self.phase, Phase::Running | Phase::Draining { .. });
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
        };
        for (slot, s) in self.slots.iter().enumerate() {
            let empty = |state| WorkerView {
                slot,
                pid: None,
                generation: self.generation,
                state,
                restarts: s.restarts,
                since: None,
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
        for d in &self.drainers {
            rows.push(WorkerView {
                slot: d.slot,
                pid: Some(d.pid),
                generation: d.generation,
                state: WorkerState::Draining,
                restarts: self.slots.get(d.slot).map_or(0, |s| s.restarts),
                since: Some(d.since),
            });
        }
        rows
    }

    /// Asks `w` to stop; SIGKILL after --kill-timeout.
    fn drain(&mut self, slot: usize, w: Worker, now: Instant, out: &mut Vec<Action>) {
        self.drainers.push(Drainer {
            pid: w.pid,
            slot,
            since: w.since,
            generation: w.generation,
            kill_at: Some(now + self.settings.kill_timeout),
        });
        out.push(Action::Log(Note::WorkerDraining { slot, pid: w.pid }));
        out.push(Action::Stop {
            pid: w.pid,
            signal: self.settings.stop_signal,
        });
    }

    fn start_reload(&mut self, out: &mut Vec<Action>) {
        self.generation += 1;
        out.push(Action::Log(Note::ReloadStarted {
            generation: self.generation,
        }));
        self.reload = Some(Reload {
            slot: 0,
            again: false,
            single: false,
        });
        self.advance(out);
    }

    /// Starts the new worker of the next slot that has a running one, or
    /// finishes the reload. Slots without a worker (backoff, done, retired)
    /// get the new code by their next start anyway.
    fn advance(&mut self, out: &mut Vec<Action>) {
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
                out.push(Action::Log(Note::ReloadFinished {
                    generation: self.generation,
                }));
                self.reload = None;
                if r.again {
                    self.start_reload(out);
                }
            }
        }
    }

    fn reload_failed(&mut self, slot: usize, reason: String, out: &mut Vec<Action>) {
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

    fn on_signal(&mut self, sig: i32, now: Instant, out: &mut Vec<Action>) {
        match sig {
            libc::SIGTERM | libc::SIGINT => self.request_stop(sig, now, out),
            // The shell reaps on every wake-up; nothing else to do.
            libc::SIGCHLD => {}
            // Only pminit's own write to a closed pipe raises it: the write
            // fails with EPIPE, which is all we need to know.
            libc::SIGPIPE => {}
            libc::SIGHUP => {
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
            libc::SIGTTIN => self.scale_up(now, out),
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
            workers: running.len() + self.drainers.len(),
            grace_ms: millis(grace),
        }));
        for pid in running {
            out.push(Action::Stop { pid, signal });
        }
        for slot in &mut self.slots {
            if let SlotState::Backoff { .. } = slot.state {
                slot.state = SlotState::Done;
            }
        }
        // Drainers already have the stop signal; the global grace covers them.
        for d in &mut self.drainers {
            d.kill_at = None;
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
        for d in &mut self.drainers {
            if d.kill_at.is_some_and(|at| at <= now) {
                d.kill_at = None;
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
            if let Some(w) = self.slots[slot].incoming_worker() {
                if !w.ready && w.ready_by <= now {
                    self.slots[slot].incoming = None;
                    self.drain(slot, w, now, out);
                    let reason = format!("the new worker was not ready within {timeout} ms");
                    self.reload_failed(slot, reason, out);
                }
            }
        }
    }

    fn spawn(&mut self, slot: usize, out: &mut Vec<Action>) {
        self.slots[slot].state = SlotState::Spawning;
        out.push(Action::Spawn { slot });
    }

    fn scale_up(&mut self, now: Instant, out: &mut Vec<Action>) {
        let n = self.settings.instances;
        self.scale(ScaleTo::To(n.saturating_add(1)), now, out);
    }

    fn scale_down(&mut self, now: Instant, out: &mut Vec<Action>) {
        let n = self.settings.instances;
        self.scale(ScaleTo::To(n.saturating_sub(1)), now, out);
    }

    /// TTIN, TTOU and `pminit scale`: to a number of workers between 1 and
    /// MAX_INSTANCES. The note comes first, then the workers it starts or
    /// drains.
    fn scale(&mut self, to: ScaleTo, now: Instant, out: &mut Vec<Action>) {
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
    fn add_worker(&mut self, out: &mut Vec<Action>) {
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
        self.spawn(slot, out);
    }

    /// One worker fewer: the highest slot that still counts drains.
    /// Returns false when there is no slot left to remove.
    fn remove_worker(&mut self, now: Instant, out: &mut Vec<Action>) -> bool {
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
        let s = std::mem::replace(&mut self.slots[slot].state, SlotState::Retired);
        if let SlotState::Up(w) = s {
            self.drain(slot, w, now, out);
        }
        if let Some(w) = self.slots[slot].incoming_worker() {
            self.drain(slot, w, now, out);
        }
        self.slots[slot].incoming = None;
        if self.reload.is_some_and(|r| r.slot == slot) {
            self.advance(out);
        }
        true
    }

    fn on_exit(&mut self, pid: i32, status: Status, now: Instant, out: &mut Vec<Action>) {
        let (code, signal) = split_status(status);
        let exited = |slot: usize, since: Instant| Note::WorkerExited {
            slot,
            pid,
            code,
            signal: signal.clone(),
            uptime_ms: millis(now.saturating_duration_since(since)),
        };
        if let Some(i) = self.drainers.iter().position(|d| d.pid == pid) {
            let d = self.drainers.remove(i);
            out.push(Action::Log(exited(d.slot, d.since)));
            self.after_planned_exit(status, out);
            return;
        }
        if let Some(slot) = self
            .slots
            .iter()
            .position(|s| s.incoming_worker().is_some_and(|w| w.pid == pid))
        {
            let since = self.slots[slot].incoming_worker().map_or(now, |w| w.since);
            self.slots[slot].incoming = None;
            out.push(Action::Log(exited(slot, since)));
            if self.phase == Phase::Running {
                let reason = format!(
                    "the new worker exited {} before it was ready",
                    match status {
                        Status::Code(c) => format!("with code {c}"),
                        Status::Signal(s) => format!("by {}", signal_name(s)),
                    }
                );
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

    /// A worker we asked to stop has exited.
    fn after_planned_exit(&mut self, status: Status, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Stopping { .. } | Phase::Killing => self.record_stop_status(status, out),
            _ => {}
        }
    }

    /// After the stop signal: was this exit clean? And sweep again if killing.
    fn record_stop_status(&mut self, status: Status, out: &mut Vec<Action>) {
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

    /// The current worker of `slot` is gone (exited, or never started).
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
            Phase::Stopping { .. } | Phase::Killing => self.record_stop_status(status, out),
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
            listen_timeout: Duration::from_secs(3),
            interactive: false,
        }
    }

    /// A supervisor driven through events at controlled times.
    struct Harness {
        sup: Supervisor,
        t0: Instant,
        next_pid: i32,
        /// Spawned workers are ready at once (no readiness awaited).
        ready_on_spawn: bool,
    }

    impl Harness {
        fn new(settings: Settings) -> Harness {
            Harness {
                sup: Supervisor::new(settings),
                t0: Instant::now(),
                next_pid: 100,
                ready_on_spawn: true,
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
                            ready: self.ready_on_spawn,
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

    /// A harness whose workers must say they are ready.
    fn awaiting(settings: Settings) -> Harness {
        let mut h = Harness::new(settings);
        h.ready_on_spawn = false;
        h
    }

    fn four() -> Settings {
        Settings {
            instances: 4,
            ..settings()
        }
    }

    /// Four workers (pids 101-104) that said they are ready at 10 ms.
    fn four_ready() -> Harness {
        let mut h = awaiting(four());
        h.start();
        for pid in 101..=104 {
            h.feed(Event::Ready { pid }, 10);
        }
        h
    }

    /// Two ready workers (101, 102); a HUP at 20 ms started slot 0's new one (103).
    fn two_ready_reloading() -> Harness {
        let mut h = awaiting(Settings {
            instances: 2,
            ..settings()
        });
        h.start();
        h.feed(Event::Ready { pid: 101 }, 10);
        h.feed(Event::Ready { pid: 102 }, 10);
        h.feed(Event::Signal(libc::SIGHUP), 20);
        h
    }

    fn has_note(actions: &[Action], pred: impl Fn(&Note) -> bool) -> bool {
        notes(actions).iter().any(pred)
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
            ..settings()
        });
        h.start();
        // Ready on spawn (no readiness awaited): the reload runs through at once.
        let a = h.feed(Event::Signal(libc::SIGHUP), 10);
        assert!(has_note(&a, |n| *n == Note::ReloadFinished { generation: 1 }));
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
        let mut h = two_ready_reloading();
        // Old worker of slot 0 crashes quickly while 103 is starting: backoff.
        h.feed(
            Event::Exited {
                pid: 101,
                status: Status::Code(1),
            },
            30,
        );
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

    fn states(h: &Harness) -> Vec<(usize, Option<i32>, u64, WorkerState)> {
        h.sup
            .workers()
            .iter()
            .map(|v| (v.slot, v.pid, v.generation, v.state))
            .collect()
    }

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
        let a = h.feed(Event::Prestop, 20);
        assert_eq!(notes(&a), vec![Note::Prestop]);
        assert!(effects(&a).is_empty(), "nothing is stopped: {a:?}");
        assert!(h.sup.readiness().is_err_and(|e| e.contains("prestop")));
        assert_eq!(h.sup.phase_name(), "draining");
        assert!(h.feed(Event::Prestop, 21).is_empty(), "once is enough");
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
}
