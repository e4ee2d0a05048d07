//! Start-up: everything that may still fail before the first worker runs,
//! with a one-line error and an exit code (`StartError`): signal handling,
//! the command, --user, the sockets, the metrics address; then the core's
//! first spawns. The first worker that starts ends start-up: what `start`
//! returns (`Running`) can only be served, not failed.

use super::*;
use crate::core::Action;
use crate::listen::{Addr, Layout, Sockets};
use crate::memory::{self, Budget};
use crate::spawn::{self, Program};

/// The addresses to bind: `--listen`, else `$PORT` for a Node command
/// with the preload.
fn addresses(config: &crate::config::Config, program: &Program) -> Result<Vec<Addr>, StartError> {
    // --no-preload: nothing would make the app's listen(PORT) take pminit's
    // socket, and an app listening with reusePort itself would join its
    // SO_REUSEPORT group and get half the connections, the other half
    // waiting in a queue nobody accepts from. So PORT stays the app's.
    if !config.listen.is_empty() || !program.is_node || !config.preload {
        return Ok(config.listen.clone());
    }
    let why = "expected a port 1-65535 (pminit binds $PORT for a Node command when --listen is not given)";
    let port = match std::env::var("PORT") {
        Ok(p) => p,
        Err(std::env::VarError::NotPresent) => String::new(),
        Err(std::env::VarError::NotUnicode(raw)) => {
            return Err(StartError::usage(format!(
                "PORT: invalid value {raw:?}: not valid UTF-8; {why}"
            )))
        }
    };
    if port.is_empty() {
        return Ok(Vec::new());
    }
    match port.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(vec![Addr::AnyPort(p)]),
        _ => Err(StartError::usage(format!(
            "PORT: invalid value {port:?}: {why}"
        ))),
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

/// pminit's own process: signals, subreaper, inherited fds.
fn take_over() -> Result<OwnedFd, StartError> {
    sys::reset_dispositions();
    let signals = sys::signalfd()
        .map_err(|e| StartError::setup(format!("cannot set up signal handling: {e}")))?;
    if std::process::id() != 1 {
        // Not fatal: without it, orphans go to the real init instead of us.
        if let Err(e) = sys::set_child_subreaper() {
            log::warn(&format!("cannot become a child subreaper: {e}"));
        }
    }
    sys::cloexec_inherited_fds();
    Ok(signals)
}

/// The listening sockets, bound before any worker starts.
fn bind(
    config: &crate::config::Config,
    program: &Program,
    unprivileged_workers: bool,
) -> Result<Sockets, StartError> {
    let addrs = addresses(config, program)?;
    if config.layout == Layout::Sticky && addrs.iter().all(|a| matches!(a, Addr::Unix(_))) {
        return Err(StartError::usage("--sticky: no TCP address to steer by client address; give --listen PORT (or set PORT for a Node command)".to_string()));
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
    .map_err(StartError::setup)?;
    sockets.set_unprivileged_workers(unprivileged_workers);
    Ok(sockets)
}

/// Liveness off under a debugger; the memory limit Node workers are
/// watched against (and budgeted from, unless the user sized the heap).
fn healing_setup(
    config: &crate::config::Config,
    program: &Program,
    settings: &mut crate::core::Settings,
) -> (Option<memory::Limit>, bool) {
    let node_options = std::env::var("NODE_OPTIONS").ok();
    if !settings.hang_timeout.is_zero() && under_debugger(node_options.as_deref(), &config.command)
    {
        settings.hang_timeout = Duration::ZERO;
        log::warn("liveness is off: the workers run under a debugger (--inspect), where a breakpoint stops the event loop; give --hang-timeout to keep it on");
    }
    let watched = program.is_node && config.memory_watch;
    let limit = watched.then(memory::container_limit).flatten();
    let user_heap = memory::user_sized_heap(node_options.as_deref(), &config.command);
    if let Some(l) = &limit {
        let budget = Budget::new(l.bytes, settings.instances);
        log::info(
            "memory_budget",
            &healing::budget_line(l, &budget, user_heap),
        );
    }
    (limit, user_heap)
}

/// Sets pminit up and starts the workers. Err: nothing runs (the caller
/// prints the line and exits with its code).
pub fn start(config: crate::config::Config) -> Result<Running, StartError> {
    let signals = take_over()?;
    let program = Program::resolve(&config.command).map_err(|e| {
        let f = spawn::resolve_failure(&config.command[0], &e);
        StartError {
            code: f.code,
            message: f.message,
        }
    })?;
    let user = match &config.user {
        None => None,
        Some(spec) => Some(crate::user::lookup(spec).map_err(|why| {
            let name = if config.user_from_env {
                "PMINIT_USER (for --user)"
            } else {
                "--user"
            };
            StartError::usage(format!("{name}: {why}"))
        })?),
    };
    let sockets = bind(&config, &program, user.as_ref().is_some_and(|u| u.uid != 0))?;
    // Not fatal: without it, sd_notify is not available.
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
        Some(text) => Some(Metrics::bind(text).map_err(StartError::setup)?),
    };
    let mut settings = config.settings.clone();
    settings.interactive = sys::isatty(libc::STDIN_FILENO);
    let (limit, user_heap) = healing_setup(&config, &program, &mut settings);
    let share_mark = limit
        .as_ref()
        .map(|l| Budget::new(l.bytes, settings.instances).share / 10 * 8);
    let options = spawn::Options {
        preload: config.preload,
        wait_ready: config.wait_ready,
        stop_signal: settings.stop_signal,
        notify_socket: notify.as_ref().map(|n| n.address.clone()),
        interactive: settings.interactive,
        instance_var: config.instance_var.clone(),
        // Switching needs root; lookup() already refused a non-root pminit
        // any identity but its own, which needs no switch.
        user: user.filter(|_| {
            // SAFETY: geteuid has no preconditions and cannot fail.
            unsafe { libc::geteuid() == 0 }
        }),
        memory_limit: limit.as_ref().filter(|_| !user_heap).map(|l| l.bytes),
        memory_report: [config.max_memory, share_mark].into_iter().flatten().min(),
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
    for line in launcher.prepare_runtime() {
        line.log();
    }
    let me = std::process::id() as i32;
    let shell = Shell {
        me,
        pid1: me == 1,
        signals,
        launcher,
        channels: HashMap::new(),
        slots: HashMap::new(),
        notify,
        control,
        metrics,
        cpu_seen: HashMap::new(),
        wait_ready: config.wait_ready,
        send_shutdown: config.send_shutdown,
        shortages: 0,
        stray_sweep: None,
        kill_pending: None,
        trim_heap: true,
        healing,
    };
    first_workers(shell, Supervisor::new(settings))
}

/// The core's first spawns. Until one worker has started, a worker that
/// cannot start is a start-up error (the command is broken: exit 126 or
/// 127 with its reason); from the first success on, failures are the
/// core's to handle, as in the loop.
fn first_workers(mut shell: Shell, mut sup: Supervisor) -> Result<Running, StartError> {
    let mut follow = Vec::new();
    let mut started = false;
    let actions = sup.handle(Event::Start, Instant::now());
    // The heap budget splits the limit among this many workers.
    shell.launcher.workers = sup.instances();
    for action in actions {
        match action {
            Action::Spawn { slot } if !started => {
                if let Err(e) = shell.launcher.start(slot).map(|w| {
                    shell.started(slot, w, &mut follow);
                }) {
                    let f = shell.launcher.program.failure(&e);
                    return Err(StartError {
                        code: f.code,
                        message: f.message,
                    });
                }
                started = true;
            }
            action => {
                // No Exit among the Start event's actions: it only spawns.
                let _ = shell.execute(action, &mut follow);
            }
        }
    }
    Ok(Running {
        shell,
        sup,
        queue: follow.into(),
    })
}
