//! The I/O shell around the core: one thread, one blocking wait.
//!
//! Each turn: hand queued events to the core and carry out its actions; then
//! block in poll(2) on the signalfd with the core's nearest deadline as the
//! timeout; then read the signals, reap every child (`waitpid(-1)` until
//! none), and queue what happened. An idle pminit sleeps in poll with no
//! timeout: no timer, no wake-up.
//!
//! Invariant: once the first worker runs, pminit does not bail. A PID 1 that
//! dies takes the whole container with it, so every error past that point is
//! logged and survived.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::control::{self, Outcome, Reply, Request};
use crate::core::{Action, Event, Note, Supervisor};
use crate::ipc::{Channel, Message};
use crate::limits::LISTEN_REQUESTS_PER_WAKE;
use crate::listen::{Addr, ShareError, Sockets};
use crate::metrics::Metrics;
use crate::notify::{self, NotifySocket};
use crate::spawn::{self, Launcher, Program};
use crate::strays::{kill_all, StraySweep};
use crate::{log, node, parse, sys};

mod healing;
mod inputs;

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
    fn setup(what: &str, err: io::Error) -> StartError {
        StartError {
            code: 1,
            message: format!("cannot {what}: {err}"),
        }
    }
}

/// The addresses to bind: `--listen`, else `$PORT` for a Node command
/// with the preload.
fn addresses(config: &Config, program: &Program) -> Result<Vec<Addr>, StartError> {
    // --no-preload: nothing would make the app's listen(PORT) take pminit's
    // socket, and an app listening with reusePort itself would join its
    // SO_REUSEPORT group and get half the connections, the other half
    // waiting in a queue nobody accepts from. So PORT stays the app's.
    if !config.listen.is_empty() || !program.is_node || !config.preload {
        return Ok(config.listen.clone());
    }
    let port = match std::env::var("PORT") {
        Ok(p) => p,
        Err(std::env::VarError::NotPresent) => String::new(),
        Err(std::env::VarError::NotUnicode(raw)) => {
            return Err(StartError {
                code: 2,
                message: format!(
                    "PORT: invalid value {raw:?}: not valid UTF-8; expected a port 1-65535 (pminit binds $PORT for a Node command when --listen is not given)"
                ),
            })
        }
    };
    if port.is_empty() {
        return Ok(Vec::new());
    }
    match port.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(vec![Addr::AnyPort(p)]),
        _ => Err(StartError {
            code: 2,
            message: format!(
                "PORT: invalid value {port:?}: expected a port 1-65535 (pminit binds $PORT for a Node command when --listen is not given)"
            ),
        }),
    }
}

/// The I/O side: carries out the core's actions and turns what the kernel
/// reports into events.
struct Shell {
    me: i32,
    pid1: bool,
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
    /// A worker has run: from now on pminit never bails.
    started: bool,
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
}

impl Shell {
    /// Carries out one action. Ok(Some(code)): exit with it.
    fn execute(
        &mut self,
        action: Action,
        follow: &mut Vec<Event>,
    ) -> Result<Option<i32>, StartError> {
        match action {
            Action::Spawn { slot } => match self.launcher.start(slot) {
                Ok(w) => {
                    self.started = true;
                    if self.shortages > 0 {
                        log::warn(&format!(
                            "workers start again, after {} attempt(s) that ran short of resources",
                            self.shortages
                        ));
                        self.shortages = 0;
                    }
                    if let Some(c) = w.channel {
                        self.channels.insert(w.pid, c);
                    }
                    self.slots.insert(w.pid, slot);
                    follow.push(Event::Spawned {
                        slot,
                        pid: w.pid,
                        ready: !w.awaits_ready,
                    });
                }
                Err(e) if !self.started => {
                    let f = self.launcher.program.failure(&e);
                    return Err(StartError {
                        code: f.code,
                        message: f.message,
                    });
                }
                Err(e) => {
                    let f = self.launcher.program.failure(&e);
                    // A shortage is reported once until a worker starts
                    // again; the core's restart backoff paces the retries.
                    if !f.shortage || self.shortages == 0 {
                        log::warn(&format!(
                            "worker {slot}: {}{}",
                            f.message,
                            if f.shortage {
                                "; retrying with the restart backoff (reported once until a worker starts)"
                            } else {
                                ""
                            }
                        ));
                    }
                    if f.shortage {
                        self.shortages += 1;
                    }
                    follow.push(Event::SpawnFailed {
                        slot,
                        status: crate::core::Status::Code(f.code),
                    });
                }
            },
            Action::Stop { pid, signal } => {
                if self.send_shutdown {
                    if let Some(c) = self.channels.get(&pid) {
                        if let Err(e) = c.send(&serde_json::json!("shutdown")) {
                            log::warn(&format!(
                                "cannot send the shutdown message to pid {pid}: {e}"
                            ));
                        }
                    }
                }
                self.signal_group(pid, signal);
            }
            Action::SignalGroup { pgid, signal } => self.signal_group(pgid, signal),
            Action::Ping { pid } => {
                let ping = serde_json::json!({ "cmd": crate::ipc::PING });
                let sent = self.channels.get(&pid).map(|c| c.send(&ping));
                match sent {
                    Some(Ok(())) => {}
                    // Its end is closed (or gone): it can no longer answer.
                    Some(Err(e)) if e.raw_os_error() == Some(libc::EPIPE) => {
                        follow.push(Event::Unanswerable { pid })
                    }
                    None => follow.push(Event::Unanswerable { pid }),
                    Some(Err(e)) => log::warn_limited(
                        log::Kind::IpcDropped,
                        pid,
                        &format!("cannot ping worker pid {pid}: {e}"),
                    ),
                }
            }
            Action::SignalStrays { signal, workers } => {
                let mut sweep = StraySweep::new(signal, workers);
                sweep.sweep(self.me);
                self.stray_sweep = Some(sweep);
            }
            Action::KillAll { workers } => {
                // From now on strays get SIGKILL, not the stop signal.
                self.stray_sweep = None;
                self.kill_pending = Some(workers);
            }
            Action::Steer { slots } => {
                if let Err(e) = self.launcher.sockets.steer(&slots) {
                    log::warn(&format!(
                        "cannot steer connections to workers {slots:?}: {e}"
                    ));
                }
            }
            Action::Log(note) => {
                if let Note::Exit { .. } = note {
                    // What was suppressed is reported before the last line.
                    log::flush_all();
                }
                log::note(&note);
                if let Some(m) = self.metrics.as_mut() {
                    m.counters.observe(&note);
                }
                if let Some(c) = self.control.as_mut().filter(|c| c.has_waiters()) {
                    c.progress(&note, log::text(&note));
                }
            }
            Action::Exit(code) => return Ok(Some(code)),
        }
        Ok(None)
    }

    fn signal_group(&self, pgid: i32, signal: i32) {
        if let Err(e) = sys::signal_group(pgid, signal) {
            log::warn(&format!(
                "cannot send {} to group {pgid}: {e}",
                parse::signal_name(signal)
            ));
        }
    }
}

pub fn run(config: Config) -> Result<i32, StartError> {
    sys::reset_dispositions();
    let sigfd = sys::signalfd().map_err(|e| StartError::setup("set up signal handling", e))?;
    let me = std::process::id() as i32;
    let pid1 = me == 1;
    if !pid1 {
        // Not fatal: without it, orphans go to the real init instead of us.
        if let Err(e) = sys::set_child_subreaper() {
            log::warn(&format!("cannot become a child subreaper: {e}"));
        }
    }
    sys::cloexec_inherited_fds();
    let program = Program::resolve(&config.command).map_err(|e| {
        let f = spawn::resolve_failure(&config.command[0], &e);
        StartError {
            code: f.code,
            message: f.message,
        }
    })?;
    let user = match &config.user {
        None => None,
        Some(spec) => Some(crate::user::lookup(spec).map_err(|why| StartError {
            code: 2,
            message: if config.user_from_env {
                format!("PMINIT_USER (for --user): {why}")
            } else {
                format!("--user: {why}")
            },
        })?),
    };
    let addrs = addresses(&config, &program)?;
    if config.layout == crate::listen::Layout::Sticky
        && addrs.iter().all(|a| matches!(a, Addr::Unix(_)))
    {
        return Err(StartError {
            code: 2,
            message: "--sticky: no TCP address to steer by client address; give --listen PORT (or set PORT for a Node command)".to_string(),
        });
    }
    let source = if config.listen.is_empty() {
        "$PORT"
    } else {
        "--listen"
    };
    let mut sockets = Sockets::bind(
        &addrs,
        config.layout,
        config.settings.instances,
        source,
        config.listen.is_empty(),
    )
    .map_err(|message| StartError { code: 1, message })?;
    sockets.set_unprivileged_workers(user.as_ref().is_some_and(|u| u.uid != 0));
    // Not fatal either: without it, sd_notify is not available.
    let notify = NotifySocket::bind()
        .map_err(|e| log::warn(&format!("no sd_notify socket: {e}")))
        .ok();
    // Nor this: without it, the control verbs are not available.
    let control = control::Server::bind()
        .map_err(|e| {
            log::warn(&format!(
                "no control socket (pminit status, reload, ...): {e}"
            ))
        })
        .ok();
    // Bound before any worker starts: a failure is a start-up error.
    let metrics = match &config.metrics {
        None => None,
        Some(text) => Some(Metrics::bind(text).map_err(|message| StartError { code: 1, message })?),
    };
    let mut settings = config.settings;
    settings.interactive = sys::isatty(libc::STDIN_FILENO);
    let user_node_options = std::env::var("NODE_OPTIONS").ok();
    if !settings.hang_timeout.is_zero()
        && under_debugger(user_node_options.as_deref(), &config.command)
    {
        settings.hang_timeout = Duration::ZERO;
        log::warn("liveness is off: the workers run under a debugger (--inspect), where a breakpoint stops the event loop; give --hang-timeout to keep it on");
    }
    // Node workers are watched against the container's memory limit, and
    // get a heap budget from it unless the user sized the heap.
    let limit = program
        .is_node
        .then(crate::memory::container_limit)
        .flatten();
    let user_heap = crate::memory::user_sized_heap(user_node_options.as_deref(), &config.command);
    if let Some(l) = &limit {
        let budget = crate::memory::Budget::new(l.bytes, settings.instances);
        log::info(
            "memory_budget",
            &healing::budget_line(l, &budget, user_heap),
        );
    }
    let memory_report = [
        config.max_memory,
        limit
            .as_ref()
            .map(|l| crate::memory::Budget::new(l.bytes, settings.instances).share / 10 * 8),
    ]
    .into_iter()
    .flatten()
    .min();
    let options = spawn::Options {
        preload: config.preload,
        wait_ready: config.wait_ready,
        stop_signal: settings.stop_signal,
        notify_socket: notify.as_ref().map(|n| n.address.clone()),
        interactive: settings.interactive,
        // Switching needs root; lookup() already refused a non-root pminit
        // any identity but its own, which needs no switch.
        instance_var: config.instance_var.clone(),
        user: user.filter(|_| {
            // SAFETY: geteuid has no preconditions and cannot fail.
            unsafe { libc::geteuid() == 0 }
        }),
        memory_limit: limit.as_ref().filter(|_| !user_heap).map(|l| l.bytes),
        memory_report,
    };
    let healing = healing::Healing::new(
        limit,
        config.max_memory,
        config.cpu_relative.clone(),
        settings.instances,
        Instant::now(),
    );
    let mut launcher = Launcher::new(program, sockets, options);
    // Bun and Deno (src/runtime.rs): their preload, and what to know.
    for note in launcher.prepare_runtime() {
        log::warn(&note);
    }
    let mut shell = Shell {
        me,
        pid1,
        launcher,
        channels: HashMap::new(),
        slots: HashMap::new(),
        notify,
        control,
        metrics,
        cpu_seen: HashMap::new(),
        wait_ready: config.wait_ready,
        send_shutdown: config.send_shutdown,
        started: false,
        shortages: 0,
        stray_sweep: None,
        kill_pending: None,
        healing,
    };

    let mut sup = Supervisor::new(settings);
    let mut queue = VecDeque::from([Event::Start]);
    loop {
        while let Some(event) = queue.pop_front() {
            if let Event::Exited { pid, .. } = event {
                // Kept open for the worker's whole life; it is over now.
                shell.channels.remove(&pid);
                shell.slots.remove(&pid);
                shell.healing.forget(pid);
            }
            let mut follow = Vec::new();
            let actions = sup.handle(event, Instant::now());
            // New workers' heap budgets follow the count (a scale changes
            // it in this very event).
            shell.launcher.workers = sup.instances();
            for action in actions {
                if let Some(code) = shell.execute(action, &mut follow)? {
                    return Ok(code);
                }
            }
            // Answers to this event's actions come before later events.
            for e in follow.into_iter().rev() {
                queue.push_front(e);
            }
        }

        // Once per turn, however many events asked for it.
        if let Some(workers) = shell.kill_pending.take() {
            kill_all(shell.pid1, shell.me, &workers);
        }
        if let Some(sweep) = shell.stray_sweep.as_mut() {
            if sweep.next <= Instant::now() {
                sweep.sweep(shell.me);
            }
        }

        let deadline = sup.next_deadline();
        let control_deadline = shell.control.as_ref().and_then(|c| c.next_deadline());
        let metrics_deadline = shell
            .metrics
            .as_ref()
            .and_then(|m| m.server.next_deadline());
        let resweep = shell.stray_sweep.as_ref().map(|s| s.next);
        let wake = [
            deadline,
            shell.healing.next_deadline(),
            control_deadline,
            metrics_deadline,
            log::next_deadline(),
            resweep,
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = wake.map(|d| d.saturating_duration_since(Instant::now()));
        let polled: Vec<i32> = shell
            .channels
            .iter()
            .filter(|(_, c)| !c.closed)
            .map(|(&pid, _)| pid)
            .collect();
        let mut fds = vec![
            (Some(sigfd.as_fd()), false),
            (shell.notify.as_ref().map(|n| n.fd()), false),
        ];
        if let Some(c) = &shell.control {
            fds.extend(c.poll_set());
        }
        let first_metrics = fds.len();
        if let Some(m) = &shell.metrics {
            fds.extend(m.server.poll_set());
        }
        let first_channel = fds.len();
        fds.extend(
            polled
                .iter()
                .map(|pid| (shell.channels.get(pid).map(|c| c.fd()), false)),
        );
        let readable = match sys::poll(&fds, timeout) {
            Ok(r) => r,
            Err(e) => {
                log::warn(&format!("poll failed: {e}"));
                vec![true; fds.len()]
            }
        };
        drop(fds);
        queue.extend(
            sys::read_signals(sigfd.as_fd())
                .into_iter()
                .map(Event::Signal),
        );
        shell.messages(&readable, &polled, first_channel, &sup, &mut queue);
        shell.control_requests(&readable[2..first_metrics], &sup, &mut queue);
        if let Some(m) = shell.metrics.as_mut() {
            m.serve(&readable[first_metrics..first_channel], &sup);
        }
        loop {
            match sys::reap_one() {
                sys::Reaped::Child(pid, status) => {
                    if let Some(sweep) = shell.stray_sweep.as_mut() {
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
        let now = Instant::now();
        log::flush(now);
        if deadline.is_some_and(|d| d <= now) {
            queue.push_back(Event::Tick);
        }
        shell.healing.run_due(&sup, now, &mut queue);
    }
}

/// The workers run under Node's inspector (`--inspect`, `--inspect-brk`,
/// ... in NODE_OPTIONS or before the script): a breakpoint would look
/// like a hang.
fn under_debugger(node_options: Option<&str>, command: &[String]) -> bool {
    let inspect = |w: &str| w.starts_with("--inspect");
    node_options.is_some_and(|o| o.split_whitespace().any(inspect))
        || command
            .iter()
            .skip(1)
            .take_while(|a| a.starts_with('-'))
            .any(|a| inspect(a))
}
