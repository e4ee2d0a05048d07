//! The I/O shell around the core: one thread, one blocking wait.
//!
//! - `start.rs`: start-up, until the first worker runs: everything that
//!   may still fail with a one-line error and an exit code (`StartError`).
//! - this file: the loop, which cannot fail. Each turn hands queued events
//!   to the core and carries out its actions (`actions.rs`, one function
//!   per action); then blocks in one poll (`poll.rs`: every fd under a
//!   token) with the nearest deadline as the timeout; then reads what is
//!   ready (signals, workers' IPC and notify datagrams, control and metrics
//!   clients: `inputs.rs`), reaps every child (`waitpid(-1)` until none),
//!   and queues what happened. Periodic healing rounds: `healing.rs`.
//!
//! An idle pminit sleeps in poll with no timeout unless a feature it was
//! asked for has a round (liveness pings, the memory watch, `-i max`).
//!
//! Invariant: once the first worker runs, pminit does not bail. A PID 1 that
//! dies takes the whole container with it, so `serve` returns nothing but
//! the exit code the core chose: every error past start-up is logged and
//! survived.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::control;
use crate::core::{Event, Supervisor};
use crate::ipc::Channel;
use crate::metrics::Metrics;
use crate::notify::NotifySocket;
use crate::spawn::Launcher;
use crate::strays::{kill_all, StraySweep};
use crate::{exit, log, sys};

mod actions;
mod healing;
mod inputs;
mod poll;
mod start;

use poll::{PollSet, Ready, Token};

pub use start::start;

/// A start-up failure: nothing is running yet, so pminit exits with `code`.
#[derive(Debug)]
pub struct StartError {
    pub code: i32,
    pub message: String,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StartError {
    /// A bad configuration, found before anything ran (exit 2).
    fn usage(message: String) -> StartError {
        StartError {
            code: exit::USAGE,
            message,
        }
    }

    /// Something pminit needs could not be set up (exit 1).
    fn setup(message: String) -> StartError {
        StartError {
            code: exit::SETUP,
            message,
        }
    }
}

/// The I/O side: carries out the core's actions and turns what the kernel
/// reports into events.
pub struct Shell {
    me: i32,
    pid1: bool,
    signals: OwnedFd,
    launcher: Launcher,
    /// Node workers' IPC channels by worker pid, closed once it is reaped.
    channels: HashMap<i32, Channel>,
    /// Each worker's slot, for the sockets of its slot (per-worker layout).
    slots: HashMap<i32, usize>,
    notify: Option<NotifySocket>,
    control: Option<control::Server>,
    /// --metrics: the endpoint and the counters it keeps from the notes.
    metrics: Option<Metrics>,
    /// CPU time of each worker at the previous `status`, for its cpu %.
    cpu_seen: HashMap<i32, (u64, Instant)>,
    wait_ready: bool,
    send_shutdown: bool,
    /// Spawns that failed for want of a resource since the last success.
    shortages: u64,
    /// Between the stop signal and the grace's end: the strays' sweep.
    stray_sweep: Option<StraySweep>,
    /// A SIGKILL sweep asked for while handling this turn's events: done
    /// once when they are all handled (each reaped orphan asks for one; a
    /// /proc scan per orphan made 1000 orphans take seconds).
    kill_pending: Option<Vec<i32>>,
    /// Memory and CPU-quota rounds, the workers' heaps (healing.rs).
    healing: healing::Healing,
    /// A worker was spawned or forgotten this turn: the heap has free
    /// chunks to give back before the next wait (sys::release_free_heap).
    trim_heap: bool,
}

/// A run whose first worker has started: from here on nothing bails.
pub struct Running {
    shell: Shell,
    sup: Supervisor,
    /// Events not yet handed to the core.
    queue: VecDeque<Event>,
}

/// Runs until the core exits: start-up errors are returned, and after the
/// first worker runs only the core's exit code.
pub fn run(config: crate::config::Config) -> Result<i32, StartError> {
    Ok(serve(start(config)?))
}

/// The loop. Returns the exit code; it has no error to return.
pub fn serve(mut run: Running) -> i32 {
    loop {
        if let Some(code) = run.handle_queue() {
            return code;
        }
        run.once_per_turn();
        let deadline = run.sup.next_deadline();
        let ready = run.wait(deadline);
        run.gather(&ready);
        let now = Instant::now();
        log::flush(now);
        if deadline.is_some_and(|d| d <= now) {
            run.queue.push_back(Event::Tick);
        }
        run.shell.healing.run_due(&run.sup, now, &mut run.queue);
    }
}

impl Running {
    /// Hands every queued event to the core and carries out its actions;
    /// the answers to an event's actions come before later events.
    /// Some(code): the core exits.
    fn handle_queue(&mut self) -> Option<i32> {
        while let Some(event) = self.queue.pop_front() {
            if let Event::Exited { pid, .. } = event {
                self.shell.forget(pid);
            }
            let mut follow = Vec::new();
            let actions = self.sup.handle(event, Instant::now());
            // New workers' heap budgets follow the count (a scale changes
            // it in this very event).
            self.shell.launcher.workers = self.sup.instances();
            for action in actions {
                if let Some(code) = self.shell.execute(action, &mut follow) {
                    return Some(code);
                }
            }
            for e in follow.into_iter().rev() {
                self.queue.push_front(e);
            }
        }
        None
    }

    /// Work asked for by several events of a turn, done once.
    fn once_per_turn(&mut self) {
        let shell = &mut self.shell;
        if let Some(workers) = shell.kill_pending.take() {
            kill_all(shell.pid1, shell.me, &workers);
        }
        if let Some(sweep) = shell.stray_sweep.as_mut() {
            if sweep.next <= Instant::now() {
                sweep.sweep(shell.me);
            }
        }
        if std::mem::take(&mut shell.trim_heap) {
            sys::release_free_heap();
        }
    }

    /// The one blocking wait: until an fd is ready or the nearest deadline.
    fn wait(&self, deadline: Option<Instant>) -> Ready {
        let shell = &self.shell;
        let wake = [
            deadline,
            shell.healing.next_deadline(),
            shell.control.as_ref().and_then(|c| c.next_deadline()),
            shell
                .metrics
                .as_ref()
                .and_then(|m| m.server.next_deadline()),
            log::next_deadline(),
            shell.stray_sweep.as_ref().map(|s| s.next),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout: Option<Duration> = wake.map(|d| d.saturating_duration_since(Instant::now()));
        let mut set = PollSet::default();
        set.add(Token::Signals, Some(shell.signals.as_fd()), false);
        set.add(Token::Notify, shell.notify.as_ref().map(|n| n.fd()), false);
        if let Some(c) = &shell.control {
            set.add_all(Token::Control, c.poll_set());
        }
        if let Some(m) = &shell.metrics {
            set.add_all(Token::Metrics, m.server.poll_set());
        }
        for (&pid, c) in shell.channels.iter().filter(|(_, c)| !c.closed) {
            set.add(Token::Channel(pid), Some(c.fd()), false);
        }
        set.wait(timeout)
    }

    /// Reads what is ready and reaps; queues the events.
    fn gather(&mut self, ready: &Ready) {
        let (shell, sup, queue) = (&mut self.shell, &self.sup, &mut self.queue);
        if ready.has(Token::Signals) {
            let signals = sys::read_signals(shell.signals.as_fd());
            queue.extend(signals.into_iter().map(Event::Signal));
        }
        shell.messages(ready, sup, queue);
        shell.control_requests(ready, sup, queue);
        if let Some(m) = shell.metrics.as_mut() {
            let n = m.server.poll_set().len();
            m.serve(&ready.of(Token::Metrics, n), sup);
        }
        shell.reap(queue);
    }
}

impl Shell {
    /// Every child that has exited (`waitpid(-1)` until none), and whether
    /// pminit has no child left at all.
    fn reap(&mut self, queue: &mut VecDeque<Event>) {
        loop {
            match sys::reap_one() {
                sys::Reaped::Child(pid, status) => {
                    if let Some(sweep) = self.stray_sweep.as_mut() {
                        sweep.reaped();
                    }
                    queue.push_back(Event::Exited { pid, status })
                }
                sys::Reaped::Running => break,
                sys::Reaped::Empty => {
                    queue.push_back(Event::TreeEmpty);
                    break;
                }
            }
        }
    }

    /// A worker was reaped: its channel (kept open for its whole life),
    /// slot and heap figures go.
    fn forget(&mut self, pid: i32) {
        self.trim_heap = true;
        self.channels.remove(&pid);
        self.slots.remove(&pid);
        self.healing.forget(pid);
    }
}
