//! Model-based tests: proptest generates settings and sequences of events
//! (spawns that succeed or fail, readiness, exits with random statuses,
//! orphans, signals, control requests, memory reports, time passing), a
//! simulated shell answers the core's actions the way `event_loop.rs` does,
//! and the invariants are checked after every event. Every sequence then
//! ends with a TERM and enough time: it must end in an exit, with the code
//! the README's table gives. A failure shrinks to the shortest sequence;
//! each bug found this way has a named regression test beside the code it
//! fixed. More cases: `PROPTEST_CASES=20000 cargo test --bin pminit model`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::invariants::check_invariants;
use super::*;

const KILL: i32 = libc::SIGKILL;

/// A process as the simulated shell sees it.
#[derive(Clone, Copy, Debug)]
struct Proc {
    worker: bool,
    /// Got the stop signal (a worker) or the strays' signal.
    asked: bool,
    /// Got SIGKILL: its next exit is by SIGKILL.
    killed: bool,
}

#[derive(Clone, Debug)]
enum Op {
    /// The n-th live worker says it is ready.
    Ready(usize),
    /// The n-th live process exits with this status (SIGKILL if killed).
    Exit(usize, Status),
    /// A grandchild is reparented to pminit.
    Orphan,
    Signal(i32),
    Scale(ScaleTo),
    Prestop,
    /// The n-th serving worker is over --max-memory.
    OverMemory(usize),
    /// The n-th live process is about to exhaust the container's memory.
    Critical(usize),
    /// The n-th live process answers a liveness ping (or says hello).
    Alive(usize),
    /// The n-th live process closes its IPC channel.
    Unanswerable(usize),
    /// Time passes, and the loop ticks when a deadline is due.
    Wait(u64),
    /// Straight to the next deadline.
    ToDeadline,
}

fn op() -> impl Strategy<Value = Op> {
    let status = prop_oneof![
        Just(Status::Code(0)),
        Just(Status::Code(1)),
        Just(Status::Code(130)),
        Just(Status::Signal(libc::SIGINT)),
        Just(Status::Signal(libc::SIGTERM)),
        Just(Status::Signal(libc::SIGSEGV)),
        Just(Status::Signal(KILL)),
    ];
    let signal = prop_oneof![
        Just(libc::SIGHUP),
        Just(libc::SIGHUP),
        Just(libc::SIGTERM),
        Just(libc::SIGINT),
        Just(libc::SIGTTIN),
        Just(libc::SIGTTOU),
        Just(libc::SIGUSR1),
        Just(libc::SIGCHLD),
    ];
    prop_oneof![
        6 => (0..8usize).prop_map(Op::Ready),
        5 => (0..8usize, status).prop_map(|(i, s)| Op::Exit(i, s)),
        1 => Just(Op::Orphan),
        3 => signal.prop_map(Op::Signal),
        1 => prop_oneof![
            (1..6usize).prop_map(ScaleTo::To),
            (1..3usize).prop_map(ScaleTo::Add),
            (1..3usize).prop_map(ScaleTo::Remove),
        ]
        .prop_map(Op::Scale),
        1 => Just(Op::Prestop),
        1 => (0..8usize).prop_map(Op::OverMemory),
        1 => (0..8usize).prop_map(Op::Critical),
        4 => (0..8usize).prop_map(Op::Alive),
        1 => (0..8usize).prop_map(Op::Unanswerable),
        4 => prop_oneof![
            Just(0u64),
            10..200u64,
            200..2_000u64,
            2_000..20_000u64,
        ]
        .prop_map(Op::Wait),
        2 => Just(Op::ToDeadline),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    settings: Settings,
    /// Spawned workers are ready at once (no --wait-ready, no preload).
    ready_on_spawn: bool,
    /// Every k-th spawn fails (0: none).
    fail_every: u32,
    ops: Vec<Op>,
}

fn case() -> impl Strategy<Value = Case> {
    let restart = prop_oneof![
        Just(Restart::OnFailure),
        Just(Restart::Always),
        Just(Restart::Never)
    ];
    let settings = (
        1..5usize,
        prop_oneof![Just(libc::SIGINT), Just(libc::SIGTERM)],
        prop_oneof![Just(0u64), 500..10_000u64],
        prop_oneof![3 => Just(0u64), 1 => 100..3_000u64],
        restart,
        1..6u32,
        prop_oneof![Just(0u64), 100..3_000u64],
        100..5_000u64,
        prop::bool::weighted(0.1),
        prop_oneof![Just(0u64), 200..5_000u64],
    )
        .prop_map(
            |(
                instances,
                stop_signal,
                kill,
                delay,
                restart,
                max_restarts,
                up,
                listen,
                tty,
                hang,
            )| {
                Settings {
                    instances,
                    stop_signal,
                    kill_timeout: Duration::from_millis(kill),
                    stop_delay: Duration::from_millis(delay),
                    restart,
                    max_restarts,
                    min_uptime: Duration::from_millis(up),
                    listen_timeout: Duration::from_millis(listen),
                    interactive: tty,
                    hang_timeout: Duration::from_millis(hang),
                }
            },
        );
    (
        settings,
        any::<bool>(),
        prop_oneof![3 => Just(0u32), 1 => 2..6u32],
        prop::collection::vec(op(), 0..60),
    )
        .prop_map(|(settings, ready_on_spawn, fail_every, ops)| Case {
            settings,
            ready_on_spawn,
            fail_every,
            ops,
        })
}

/// What the run did, for the end-state properties.
#[derive(Default)]
struct Record {
    /// A worker ended in a way that is the app's failure.
    worker_failed: bool,
    /// A crash loop was declared.
    crash_loop: bool,
    /// A worker (not a stray) was still alive when SIGKILL was sent.
    worker_killed: bool,
    /// Interactive Ctrl-C ended the run.
    interrupted: bool,
    exit: Option<i32>,
}

/// The simulated shell plus the core under test.
struct Sim {
    sup: Supervisor,
    t0: Instant,
    now: Instant,
    procs: BTreeMap<i32, Proc>,
    next_pid: i32,
    spawns: u32,
    ready_on_spawn: bool,
    fail_every: u32,
    record: Record,
    /// Kept for a failure message: the last few events and actions.
    trace: Vec<String>,
}

impl Sim {
    fn new(c: &Case) -> Sim {
        let t0 = Instant::now();
        Sim {
            sup: Supervisor::new(c.settings.clone()),
            t0,
            now: t0,
            procs: BTreeMap::new(),
            next_pid: 100,
            spawns: 0,
            ready_on_spawn: c.ready_on_spawn,
            fail_every: c.fail_every,
            record: Record::default(),
            trace: Vec::new(),
        }
    }

    fn fail(&self, why: String) -> TestCaseError {
        let from = self.trace.len().saturating_sub(80);
        TestCaseError::fail(format!(
            "{why}\nlast steps:\n{}",
            self.trace[from..].join("\n")
        ))
    }

    fn workers(&self) -> Vec<i32> {
        self.procs
            .iter()
            .filter(|(_, p)| p.worker)
            .map(|(&pid, _)| pid)
            .collect()
    }

    /// Feeds one event, answers the actions as the shell does (Spawn at
    /// once), checks the invariants after each event it feeds.
    fn feed(&mut self, event: Event) -> Result<(), TestCaseError> {
        let mut queue = vec![event];
        while let Some(e) = queue.pop() {
            let before = self.sup.workers();
            let phase_before = self.sup.phase;
            let ms = self.now.duration_since(self.t0).as_millis();
            self.trace.push(format!("{ms:>7} ms  {e:?}"));
            let actions = self.sup.handle(e, self.now);
            for a in &actions {
                self.trace.push(format!("            -> {a:?}"));
            }
            self.check_step(&e, &before, phase_before, &actions)?;
            for a in actions {
                self.act(a, &mut queue)?;
            }
            check_invariants(&self.sup, self.now).map_err(|w| self.fail(w))?;
            // The shell reports an empty tree once per wake-up.
            let tree_empty = self.procs.is_empty() && queue.is_empty();
            if tree_empty && e != Event::TreeEmpty && self.sup.phase != Phase::Exited {
                queue.push(Event::TreeEmpty);
            }
        }
        Ok(())
    }

    fn act(&mut self, a: Action, queue: &mut Vec<Event>) -> Result<(), TestCaseError> {
        match a {
            Action::Spawn { slot } => {
                self.spawns += 1;
                if self.fail_every > 0 && self.spawns % self.fail_every == 0 {
                    // A command that cannot start is the app's failure.
                    self.record.worker_failed = true;
                    queue.push(Event::SpawnFailed {
                        slot,
                        status: Status::Code(126),
                    });
                } else {
                    self.next_pid += 1;
                    let pid = self.next_pid;
                    self.procs.insert(
                        pid,
                        Proc {
                            worker: true,
                            asked: false,
                            killed: false,
                        },
                    );
                    queue.push(Event::Spawned {
                        slot,
                        pid,
                        ready: self.ready_on_spawn,
                    });
                }
            }
            Action::Stop { pid, .. } => {
                let p = self
                    .procs
                    .get_mut(&pid)
                    .ok_or_else(|| TestCaseError::fail(format!("stop of unknown pid {pid}")))?;
                p.asked = true;
            }
            Action::SignalGroup { pgid, signal } => {
                if let Some(p) = self.procs.get_mut(&pgid) {
                    if signal == KILL {
                        p.killed = true;
                    }
                }
            }
            Action::SignalStrays { .. } => {
                for p in self.procs.values_mut().filter(|p| !p.worker) {
                    p.asked = true;
                }
            }
            Action::KillAll { .. } => {
                for p in self.procs.values_mut() {
                    if p.worker {
                        self.record.worker_killed = true;
                    }
                    p.killed = true;
                }
            }
            Action::Steer { .. } | Action::Answer { .. } => {}
            Action::Ping { pid } => {
                if !self.procs.get(&pid).is_some_and(|p| p.worker) {
                    return Err(self.fail(format!("ping to pid {pid}, no live worker")));
                }
            }
            Action::Log(note) => match note {
                Note::CrashLoop { .. } => self.record.crash_loop = true,
                Note::Interrupted { .. } => self.record.interrupted = true,
                _ => {}
            },
            Action::Exit(code) => {
                if !self.procs.is_empty() {
                    return Err(self.fail(format!(
                        "exit while {} processes remain: {:?}",
                        self.procs.len(),
                        self.procs
                    )));
                }
                if self.record.exit.is_some() {
                    return Err(self.fail("exited twice".into()));
                }
                self.record.exit = Some(code);
            }
        }
        Ok(())
    }

    /// Invariants that need the step's actions, not only the state.
    fn check_step(
        &self,
        event: &Event,
        before: &[WorkerView],
        phase_before: Phase,
        actions: &[Action],
    ) -> Result<(), TestCaseError> {
        // 4. Once the stop began, nothing new is started.
        if phase_before != Phase::Running
            && actions.iter().any(|a| matches!(a, Action::Spawn { .. }))
        {
            return Err(self.fail("a worker was spawned after the stop began".into()));
        }
        let after = self.sup.workers();
        let exited = match event {
            Event::Exited { pid, .. } => Some(*pid),
            _ => None,
        };
        let still_stopping = self.sup.phase == Phase::Running;
        for a in actions {
            let Action::Stop { pid, .. } = a else {
                continue;
            };
            if !still_stopping {
                continue; // the stop of everything
            }
            let Some(old) = before.iter().find(|v| v.pid == Some(*pid)) else {
                // A worker whose slot stopped waiting for it is stopped as
                // soon as its spawn is answered.
                if matches!(event, Event::Spawned { pid: p, .. } if p == pid) {
                    continue;
                }
                return Err(self.fail(format!("stop of pid {pid}, which was no worker")));
            };
            // 2. An old worker stops only once a ready worker of a newer
            //    generation has its slot, or its slot was removed; a new
            //    worker that failed its reload may be stopped any time.
            let replaced = after.iter().any(|v| {
                v.slot == old.slot
                    && v.state == WorkerState::Ready
                    && v.generation >= old.generation
                    && v.pid != Some(*pid)
            });
            let removed = !after
                .iter()
                .any(|v| v.slot == old.slot && v.state != WorkerState::Draining);
            let was_incoming = old.state == WorkerState::Starting;
            if !(replaced || removed || was_incoming) {
                return Err(self.fail(format!(
                    "worker {pid} of slot {} was stopped before a ready replacement took its slot",
                    old.slot
                )));
            }
        }
        // 3. After a failed reload, every slot that served still serves.
        let failed = actions
            .iter()
            .any(|a| matches!(a, Action::Log(Note::ReloadFailed { .. })));
        if failed && still_stopping {
            for v in before.iter().filter(|v| v.state == WorkerState::Ready) {
                if Some(v.pid) == Some(exited) {
                    continue;
                }
                let serves = after
                    .iter()
                    .any(|a| a.slot == v.slot && a.state == WorkerState::Ready);
                if !serves {
                    return Err(self.fail(format!(
                        "slot {} served before the failed reload and does not after",
                        v.slot
                    )));
                }
            }
        }
        Ok(())
    }

    /// Time passes; the loop ticks whenever the deadline is due. A tick that
    /// does nothing and leaves its deadline due is a busy loop.
    fn wait(&mut self, ms: u64) -> Result<(), TestCaseError> {
        let until = self.now + Duration::from_millis(ms);
        for _ in 0..200 {
            match self.sup.next_deadline() {
                Some(d) if d <= until => {
                    self.now = self.now.max(d);
                    let steps = self.trace.len();
                    self.feed(Event::Tick)?;
                    let idle = self.trace.len() == steps + 1;
                    if idle && self.sup.next_deadline().is_some_and(|n| n <= self.now) {
                        return Err(self.fail(
                            "a tick did nothing and left its deadline due: a busy loop".into(),
                        ));
                    }
                }
                _ => {
                    self.now = until;
                    return Ok(());
                }
            }
        }
        Err(self.fail("200 ticks within one wait".into()))
    }

    fn run(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let pick = |pids: Vec<i32>, i: usize| (!pids.is_empty()).then(|| pids[i % pids.len()]);
        match *op {
            Op::Ready(i) => {
                if let Some(pid) = pick(self.workers(), i) {
                    self.feed(Event::Ready { pid })?;
                }
            }
            Op::Exit(i, status) => {
                let pids: Vec<i32> = self.procs.keys().copied().collect();
                if let Some(pid) = pick(pids, i) {
                    self.exit(pid, status)?;
                }
            }
            Op::Orphan => {
                self.next_pid += 1;
                self.procs.insert(
                    self.next_pid,
                    Proc {
                        worker: false,
                        asked: false,
                        killed: false,
                    },
                );
            }
            Op::Signal(sig) => self.feed(Event::Signal(sig))?,
            Op::Scale(to) => self.feed(Event::Scale(to))?,
            Op::Prestop => self.feed(Event::Asked {
                id: 1,
                ask: Ask::Prestop,
            })?,
            Op::OverMemory(i) => {
                if let Some(pid) = pick(self.sup.serving(), i) {
                    self.feed(Event::OverMemory {
                        pid,
                        rss: 1 << 30,
                        reason: MemoryReason::MaxMemory,
                    })?;
                }
            }
            Op::Critical(i) => {
                if let Some(pid) = pick(self.workers(), i) {
                    self.feed(Event::MemoryCritical {
                        pid,
                        rss: 1 << 30,
                        limit: 1 << 30,
                    })?;
                }
            }
            Op::Alive(i) => {
                if let Some(pid) = pick(self.workers(), i) {
                    self.feed(Event::Alive { pid })?;
                }
            }
            Op::Unanswerable(i) => {
                if let Some(pid) = pick(self.workers(), i) {
                    self.feed(Event::Unanswerable { pid })?;
                }
            }
            Op::Wait(ms) => self.wait(ms)?,
            Op::ToDeadline => {
                if let Some(d) = self.sup.next_deadline() {
                    let ms = d.saturating_duration_since(self.now).as_millis();
                    self.wait(u64::try_from(ms).unwrap_or(u64::MAX))?;
                }
            }
        }
        Ok(())
    }

    fn exit(&mut self, pid: i32, status: Status) -> Result<(), TestCaseError> {
        let Some(p) = self.procs.remove(&pid) else {
            return Ok(());
        };
        let status = if p.killed {
            Status::Signal(KILL)
        } else {
            status
        };
        if p.worker && !p.killed {
            let stop = self.sup.settings.stop_signal;
            let clean = status == Status::Code(0)
                || (p.asked
                    && (status == Status::Signal(stop) || status == Status::Code(128 + stop)));
            if !clean {
                self.record.worker_failed = true;
            }
        }
        self.feed(Event::Exited { pid, status })
    }

    /// TERM, then every process asked to stop does so, except those that
    /// ignore it until SIGKILL; time passes to each deadline.
    fn finish(&mut self, obey: bool) -> Result<(), TestCaseError> {
        self.feed(Event::Signal(libc::SIGTERM))?;
        for _ in 0..500 {
            if self.record.exit.is_some() {
                return Ok(());
            }
            let next = self
                .procs
                .iter()
                .find(|(_, p)| p.killed || (obey && p.asked))
                .map(|(&pid, _)| pid);
            match next {
                Some(pid) => self.exit(pid, Status::Code(0))?,
                None => match self.sup.next_deadline() {
                    Some(d) => {
                        let ms = d.saturating_duration_since(self.now).as_millis();
                        self.wait(u64::try_from(ms).unwrap_or(u64::MAX))?;
                    }
                    None if self.procs.is_empty() => self.feed(Event::TreeEmpty)?,
                    None => {
                        return Err(self.fail(format!(
                            "stopping, no deadline, and processes left: {:?}",
                            self.procs
                        )))
                    }
                },
            }
        }
        Err(self.fail("no exit after TERM and enough time".into()))
    }
}

fn play(c: &Case, obey: bool) -> Result<(), TestCaseError> {
    let mut sim = Sim::new(c);
    sim.feed(Event::Start)?;
    for op in &c.ops {
        if sim.record.exit.is_some() {
            break;
        }
        sim.run(op)?;
    }
    sim.finish(obey)?;
    let code = sim.record.exit.unwrap_or(-1);
    let r = &sim.record;
    // 6. The exit code follows the table.
    if r.crash_loop && code == 0 {
        return Err(sim.fail("a crash loop exited 0".into()));
    }
    if r.worker_killed && !r.interrupted && code == 0 {
        return Err(sim.fail("a worker was SIGKILLed and the exit code is 0".into()));
    }
    if !r.worker_failed && !r.worker_killed && !r.crash_loop && code != 0 {
        return Err(sim.fail(format!(
            "every worker ended cleanly, nothing of ours was SIGKILLed, and the exit code is {code}"
        )));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES overrides, as with proptest's default config.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Workers that obey the stop signal.
    #[test]
    fn model_invariants_hold_and_term_always_ends_in_an_exit(c in case()) {
        play(&c, true)?;
    }

    /// Workers and strays that ignore it until SIGKILL.
    #[test]
    fn model_with_workers_that_ignore_the_stop_signal(c in case()) {
        play(&c, false)?;
    }
}
