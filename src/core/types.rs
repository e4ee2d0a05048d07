//! The vocabulary between the core and the I/O shell: the settings it
//! runs with, the events the shell feeds it, the actions it asks for, and
//! the views the control verbs read. Data only; the rules are elsewhere.

use serde::Serialize;
use std::time::{Duration, Instant};

use super::Note;

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
    /// --hang-timeout: a ready worker that takes part in liveness (its
    /// preload said so) and leaves a ping unanswered this long is hung.
    /// Zero turns the check off.
    pub hang_timeout: Duration,
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
    /// The worker uses too much memory: replace it, the new one first.
    OverMemory {
        pid: i32,
        rss: u64,
        reason: MemoryReason,
    },
    /// The worker is about to exhaust the container's memory: start its
    /// replacement and SIGKILL it now, before the kernel's OOM killer acts.
    MemoryCritical { pid: i32, rss: u64, limit: u64 },
    /// The worker's event loop answered (the preload's hello or its answer
    /// to a ping): it takes part in liveness from now on.
    Alive { pid: i32 },
    /// The worker's IPC channel closed: it can no longer answer pings.
    Unanswerable { pid: i32 },
    /// `pminit scale`: change the number of workers.
    Scale(ScaleTo),
    /// A control client asks something of the run (`pminit reload`,
    /// `scale`, `prestop`, `ready`); the core answers with Action::Answer.
    Asked { id: u64, ask: Ask },
}

/// What a control client may ask of the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    Ready,
    Reload,
    Scale(ScaleTo),
    /// `pminit prestop`: the orchestrator is about to stop us. Keep
    /// serving, but `ready` fails from now on, so traffic moves elsewhere.
    Prestop,
}

/// The core's answer to an `Ask`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `pminit ready`: serving or not, and why not.
    Ready { ready: bool, why: Option<String> },
    /// Done at once, or refused (`ok` false), with a line for the user.
    Done { ok: bool, message: String },
    /// A reload started or queued: done when this generation finishes.
    AfterReload { generation: u64 },
}

/// Why a worker is replaced for its memory (the metrics' `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryReason {
    /// Its process group is over --max-memory.
    MaxMemory,
    /// Its V8 heap is near the heap limit pminit gave it.
    Heap,
    /// Its memory is near its share of the container's limit.
    Share,
}

impl MemoryReason {
    pub fn name(self) -> &'static str {
        match self {
            MemoryReason::MaxMemory => "max_memory",
            MemoryReason::Heap => "heap",
            MemoryReason::Share => "share",
        }
    }
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
    /// When its event loop last answered a ping (liveness).
    pub answered: Option<Instant>,
    /// How long it took to answer the last ping: its event loop's delay.
    pub answer_delay: Option<Duration>,
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
    /// Ask the worker's event loop whether it runs (liveness): the answer
    /// comes back as Event::Alive.
    Ping {
        pid: i32,
    },
    /// Answer control client `id`; comes before the effects of what it asked.
    Answer {
        id: u64,
        answer: Answer,
    },
    Log(Note),
    Exit(i32),
}
