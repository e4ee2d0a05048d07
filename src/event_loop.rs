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
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::cli::Config;
use crate::core::{Action, Event, Note, Supervisor};
use crate::ipc::{Channel, Message};
use crate::listen::{Addr, Sockets};
use crate::notify::NotifySocket;
use crate::spawn::{self, Launcher, Program};
use crate::{log, parse, sys};

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

/// The addresses to bind: `--listen`, else `$PORT` for a Node command.
fn addresses(config: &Config, program: &Program) -> Result<Vec<Addr>, StartError> {
    if !config.listen.is_empty() || !program.is_node {
        return Ok(config.listen.clone());
    }
    let Some(port) = std::env::var("PORT").ok().filter(|p| !p.is_empty()) else {
        return Ok(Vec::new());
    };
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

/// How often --max-memory looks at the workers' memory (only when set).
const MEMORY_CHECK: Duration = Duration::from_secs(1);

/// Warn about the first few dropped IPC lines of a worker, then rarely.
fn worth_a_warning(dropped: u64) -> bool {
    dropped <= 3 || dropped % 1000 == 0
}

/// The I/O side: carries out the core's actions and turns what the kernel
/// reports into events.
struct Shell {
    me: i32,
    pid1: bool,
    launcher: Launcher,
    /// Node workers' IPC channels by worker pid, closed once it is reaped.
    channels: HashMap<i32, Channel>,
    notify: Option<NotifySocket>,
    wait_ready: bool,
    send_shutdown: bool,
    /// A worker has run: from now on pminit never bails.
    started: bool,
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
                    if let Some(c) = w.channel {
                        self.channels.insert(w.pid, c);
                    }
                    follow.push(Event::Spawned {
                        slot,
                        pid: w.pid,
                        ready: !w.awaits_ready,
                    });
                }
                Err(e) if !self.started => {
                    return Err(StartError {
                        code: spawn::exec_failure(&e).code(),
                        message: format!("cannot run {:?}: {e}", self.launcher.program.name),
                    });
                }
                Err(e) => {
                    log::warn(&format!(
                        "cannot start worker {slot} ({:?}): {e}",
                        self.launcher.program.name
                    ));
                    let status = spawn::exec_failure(&e);
                    follow.push(Event::SpawnFailed { slot, status });
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
            Action::SignalStrays { signal, workers } => {
                for pid in strays(self.me, &workers) {
                    let _ = sys::kill(pid, signal);
                }
            }
            Action::KillAll { workers } => kill_all(self.pid1, self.me, &workers),
            Action::Steer { slots } => {
                if let Err(e) = self.launcher.sockets.steer(&slots) {
                    log::warn(&format!(
                        "cannot steer connections to workers {slots:?}: {e}"
                    ));
                }
            }
            Action::Log(note) => log::note(&note),
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

    /// What the workers said on their channels and the notify socket.
    fn messages(&mut self, readable: &[bool], polled: &[i32], queue: &mut VecDeque<Event>) {
        if readable.get(1).copied().unwrap_or(false) {
            if let Some(n) = &self.notify {
                for note in n.recv() {
                    // The worker is the sender's process group leader.
                    let worker = sys::getpgid(note.pid).unwrap_or(note.pid);
                    for line in note.lines {
                        if line == "READY=1" && self.wait_ready {
                            queue.push_back(Event::Ready { pid: worker });
                        }
                        log::note(&Note::Notified {
                            pid: worker,
                            message: line,
                        });
                    }
                }
            }
        }
        for (k, &pid) in polled.iter().enumerate() {
            if !readable.get(2 + k).copied().unwrap_or(false) {
                continue;
            }
            let Some(c) = self.channels.get_mut(&pid) else {
                continue;
            };
            for m in c.read() {
                match m {
                    Ok(Message::Ready) if self.wait_ready => queue.push_back(Event::Ready { pid }),
                    Ok(Message::Listening) if !self.wait_ready => {
                        queue.push_back(Event::Ready { pid })
                    }
                    Ok(_) => {}
                    Err(reason) => {
                        c.dropped += 1;
                        if worth_a_warning(c.dropped) {
                            log::warn(&format!(
                                "worker pid {pid}: dropped {reason} from its IPC channel ({} so far)",
                                c.dropped
                            ));
                        }
                    }
                }
            }
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
    let program = Program::resolve(&config.command).map_err(|e| StartError {
        code: spawn::exec_failure(&e).code(),
        message: format!("cannot run {:?}: {e}", config.command[0]),
    })?;
    let addrs = addresses(&config, &program)?;
    let sockets = Sockets::bind(&addrs, config.layout, config.settings.instances)
        .map_err(|message| StartError { code: 1, message })?;
    // Not fatal either: without it, sd_notify is not available.
    let notify = NotifySocket::bind()
        .map_err(|e| log::warn(&format!("no sd_notify socket: {e}")))
        .ok();
    let mut settings = config.settings;
    settings.interactive = sys::isatty(libc::STDIN_FILENO);
    let options = spawn::Options {
        preload: config.preload,
        wait_ready: config.wait_ready,
        stop_signal: settings.stop_signal,
        notify_socket: notify.as_ref().map(|n| n.address.clone()),
        interactive: settings.interactive,
    };
    let mut shell = Shell {
        me,
        pid1,
        launcher: Launcher::new(program, sockets, options),
        channels: HashMap::new(),
        notify,
        wait_ready: config.wait_ready,
        send_shutdown: config.send_shutdown,
        started: false,
    };
    let max_memory = config.max_memory;
    let mut memory_check = max_memory.map(|_| Instant::now() + MEMORY_CHECK);

    let mut sup = Supervisor::new(settings);
    let mut queue = VecDeque::from([Event::Start]);
    loop {
        while let Some(event) = queue.pop_front() {
            if let Event::Exited { pid, .. } = event {
                // Kept open for the worker's whole life; it is over now.
                shell.channels.remove(&pid);
            }
            let mut follow = Vec::new();
            for action in sup.handle(event, Instant::now()) {
                if let Some(code) = shell.execute(action, &mut follow)? {
                    return Ok(code);
                }
            }
            // Answers to this event's actions come before later events.
            for e in follow.into_iter().rev() {
                queue.push_front(e);
            }
        }

        let deadline = sup.next_deadline();
        let wake = [deadline, memory_check].into_iter().flatten().min();
        let timeout = wake.map(|d| d.saturating_duration_since(Instant::now()));
        let polled: Vec<i32> = shell
            .channels
            .iter()
            .filter(|(_, c)| !c.closed)
            .map(|(&pid, _)| pid)
            .collect();
        let mut fds = vec![Some(sigfd.as_fd()), shell.notify.as_ref().map(|n| n.fd())];
        fds.extend(
            polled
                .iter()
                .map(|pid| shell.channels.get(pid).map(|c| c.fd())),
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
        shell.messages(&readable, &polled, &mut queue);
        loop {
            match sys::reap_one() {
                sys::Reaped::Child(pid, status) => queue.push_back(Event::Exited { pid, status }),
                sys::Reaped::Running => break,
                sys::Reaped::Empty => {
                    queue.push_back(Event::TreeEmpty);
                    break;
                }
            }
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| d <= now) {
            queue.push_back(Event::Tick);
        }
        if let (Some(limit), Some(due)) = (max_memory, memory_check) {
            if due <= now {
                memory_check = Some(now + MEMORY_CHECK);
                let workers = sup.serving();
                for (pid, rss) in sys::group_rss(&workers) {
                    if rss > limit {
                        queue.push_back(Event::OverMemory { pid, rss });
                    }
                }
            }
        }
    }
}

/// Children of pminit outside the worker groups: orphans reparented to us.
fn strays(me: i32, workers: &[i32]) -> Vec<i32> {
    sys::children_of(me)
        .into_iter()
        .filter(|pid| !workers.contains(pid))
        .filter(|&pid| sys::getpgid(pid).is_none_or(|g| !workers.contains(&g)))
        .collect()
}

/// SIGKILL for everything pminit answers for. As PID 1 that is every other
/// process in the namespace, orphans included: kill(-1) reaches exactly them.
fn kill_all(pid1: bool, me: i32, workers: &[i32]) {
    if pid1 {
        let _ = sys::kill(-1, libc::SIGKILL);
        return;
    }
    for &pgid in workers {
        let _ = sys::signal_group(pgid, libc::SIGKILL);
    }
    for pid in sys::children_of(me) {
        let _ = sys::kill(pid, libc::SIGKILL);
        if let Some(g) = sys::getpgid(pid).filter(|&g| g == pid) {
            let _ = sys::signal_group(g, libc::SIGKILL);
        }
    }
}
