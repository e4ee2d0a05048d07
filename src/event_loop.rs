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

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use crate::cli::Config;
use crate::core::{Action, Event, Supervisor};
use crate::listen::{Addr, Sockets};
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
    let mut settings = config.settings;
    settings.interactive = sys::isatty(libc::STDIN_FILENO);
    let mut launcher = Launcher::new(program, sockets, config.preload, settings.interactive);

    let mut sup = Supervisor::new(settings);
    let mut queue = VecDeque::from([Event::Start]);
    let mut started = false;
    loop {
        while let Some(event) = queue.pop_front() {
            let mut follow = Vec::new();
            for action in sup.handle(event, Instant::now()) {
                match action {
                    Action::Spawn { slot } => match launcher.start(slot) {
                        Ok(pid) => {
                            started = true;
                            follow.push(Event::Spawned { slot, pid });
                        }
                        Err(e) if !started => {
                            return Err(StartError {
                                code: spawn::exec_failure(&e).code(),
                                message: format!("cannot run {:?}: {e}", launcher.program.name),
                            });
                        }
                        Err(e) => {
                            log::warn(&format!(
                                "cannot start worker {slot} ({:?}): {e}",
                                launcher.program.name
                            ));
                            let status = spawn::exec_failure(&e);
                            follow.push(Event::SpawnFailed { slot, status });
                        }
                    },
                    Action::SignalGroup { pgid, signal } => {
                        if let Err(e) = sys::signal_group(pgid, signal) {
                            log::warn(&format!(
                                "cannot send {} to group {pgid}: {e}",
                                parse::signal_name(signal)
                            ));
                        }
                    }
                    Action::SignalStrays { signal, workers } => {
                        for pid in strays(me, &workers) {
                            let _ = sys::kill(pid, signal);
                        }
                    }
                    Action::KillAll { workers } => kill_all(pid1, me, &workers),
                    Action::Steer { slots } => {
                        if let Err(e) = launcher.sockets.steer(&slots) {
                            log::warn(&format!(
                                "cannot steer connections to workers {slots:?}: {e}"
                            ));
                        }
                    }
                    Action::Log(note) => log::note(&note),
                    Action::Exit(code) => return Ok(code),
                }
            }
            // Answers to this event's actions come before later events.
            for e in follow.into_iter().rev() {
                queue.push_front(e);
            }
        }

        let deadline = sup.next_deadline();
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if let Err(e) = sys::wait_readable(sigfd.as_fd(), timeout) {
            log::warn(&format!("poll failed: {e}"));
        }
        queue.extend(
            sys::read_signals(sigfd.as_fd())
                .into_iter()
                .map(Event::Signal),
        );
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
        if deadline.is_some_and(|d| d <= Instant::now()) {
            queue.push_back(Event::Tick);
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
