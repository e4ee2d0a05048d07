//! The command line: `pminit [OPTIONS] -- COMMAND [ARG...]`.
//!
//! Every option can also come from `PMINIT_<NAME>` (the flag wins), because a
//! Kubernetes manifest sets env more easily than it rewrites an ENTRYPOINT.
//! Bad input gets one line naming the flag (or variable), the value and the
//! accepted forms; the caller exits 2 before anything starts.

use argh::FromArgs;
use std::time::Duration;

use crate::core::{Restart, Settings};
use crate::listen::{self, Addr, Layout};
use crate::log::Format;
use crate::parse;
use crate::user;

/// pminit: a PID 1 for containers. Reaps zombies, forwards signals, stops
/// gracefully (stop signal, grace, SIGKILL) and restarts workers that crash.
#[derive(FromArgs, Debug, Default)]
struct Args {
    /// workers: N, max or 0 (the CPUs this container may use), -K (that minus K) (default 1)
    #[argh(option, short = 'i')]
    instances: Option<String>,

    /// listen on PORT, HOST:PORT, [V6]:PORT or unix:PATH and hand the socket to every worker (repeatable)
    #[argh(option, short = 'l')]
    listen: Vec<String>,

    /// shared (one socket, one accept queue) or per-worker (one SO_REUSEPORT socket per worker) (default shared)
    #[argh(option)]
    socket_layout: Option<String>,

    /// one client keeps one worker: per-worker sockets steered by a hash of the client's address (kernel BPF)
    #[argh(switch)]
    sticky: bool,

    /// do not inject the preload that makes Node's listen(PORT) use pminit's socket
    #[argh(switch)]
    no_preload: bool,

    /// a worker is ready only when it says so: process.send('ready') or sd_notify READY=1
    #[argh(switch)]
    wait_ready: bool,

    /// longest wait for a worker to become ready (default 3s)
    #[argh(option)]
    listen_timeout: Option<String>,

    /// send pm2's 'shutdown' message over the IPC channel before the stop signal
    #[argh(switch)]
    send_shutdown: bool,

    /// gracefully replace a worker whose memory (RSS of its process group) exceeds SIZE: 512M, 1G
    #[argh(option)]
    max_memory: Option<String>,

    /// grace between the stop signal and SIGKILL: 1600 (ms), 1600ms, 8s, 1m (default 8s)
    #[argh(option)]
    kill_timeout: Option<String>,

    /// a ready Node worker whose event loop leaves pminit's ping unanswered this long is hung: replaced, then killed; 0 turns it off (default 30s)
    #[argh(option)]
    hang_timeout: Option<String>,

    /// signal that asks a worker to stop: INT, SIGINT or 2 (default SIGINT)
    #[argh(option)]
    stop_signal: Option<String>,

    /// on SIGTERM keep serving this long before stopping workers (default 0)
    #[argh(option)]
    stop_delay: Option<String>,

    /// when a worker exits on its own: always, on-failure or never (default on-failure)
    #[argh(option)]
    restart: Option<String>,

    /// this many quick deaths in a row is a crash loop: stop and exit non-zero (default 16)
    #[argh(option)]
    max_restarts: Option<String>,

    /// a worker that lived this long is healthy: its next restart is immediate (default 1s)
    #[argh(option)]
    min_uptime: Option<String>,

    /// bind sockets as root, then run workers as USER or USER:GROUP (names from /etc/passwd and /etc/group, or numbers)
    #[argh(option)]
    user: Option<String>,

    /// pminit's own event lines on stderr: text or json (default text)
    #[argh(option)]
    log_format: Option<String>,

    /// run the app of this pm2 ecosystem file (.js, .cjs, .mjs, .json); flags win over it
    #[argh(option)]
    config: Option<String>,

    /// with --config: merge the app's env_NAME over its env, as pm2 start --env NAME
    #[argh(option)]
    env: Option<String>,

    /// with --config: the app of a multi-app file to run, by name
    #[argh(option)]
    only: Option<String>,

    /// serve Prometheus metrics at http://ADDR/metrics: PORT or HOST:PORT
    #[argh(option)]
    metrics: Option<String>,

    /// also log forwarded signals and reaped orphans
    #[argh(switch, short = 'v')]
    verbose: bool,

    /// print the version and exit
    #[argh(switch)]
    version: bool,

    /// the command to run, after `--`
    #[argh(positional, greedy)]
    command: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub settings: Settings,
    pub listen: Vec<Addr>,
    pub layout: Layout,
    pub preload: bool,
    pub wait_ready: bool,
    pub send_shutdown: bool,
    pub max_memory: Option<u64>,
    /// -i max, 0 or -K: the count follows the CPU quota (the spec as given).
    pub cpu_relative: Option<String>,
    pub command: Vec<String>,
    pub user: Option<user::Spec>,
    /// --user came from PMINIT_USER: messages name the variable.
    pub user_from_env: bool,
    pub log_format: Format,
    pub verbose: bool,
    /// --metrics: the address to serve /metrics on, as given (checked).
    pub metrics: Option<String>,
    /// --config: variables for the workers (env, env_NAME, port), set in
    /// pminit's environment before anything starts.
    pub env: Vec<(String, String)>,
    /// --config: the app's cwd and the field it came from.
    pub cwd: Option<(String, String)>,
    /// --config: instance_var, set to the slot like NODE_APP_INSTANCE.
    pub instance_var: Option<String>,
    /// --config: one line each, logged before anything starts.
    pub warnings: Vec<String>,
}

#[derive(Debug)]
pub enum Parsed {
    Run(Box<Config>),
    /// --help or --version: print this on stdout and exit 0.
    Print(String),
}

/// A one-line message for stderr; the process exits 2.
#[derive(Debug, PartialEq, Eq)]
pub struct CliError(pub String);

pub const USAGE: &str =
    "usage: pminit [OPTIONS] -- COMMAND [ARG...]  (pminit --help lists the options)";

/// Where a value came from, for the error message.
struct Source {
    flag: &'static str,
    env: &'static str,
    from_env: bool,
    /// From the --config file: "FILE: FIELD".
    from_file: Option<String>,
}

impl Source {
    fn name(&self) -> String {
        if let Some(field) = &self.from_file {
            format!("{field} (for {})", self.flag)
        } else if self.from_env {
            format!("{} (for {})", self.env, self.flag)
        } else {
            self.flag.to_string()
        }
    }
}

/// The values of a --config file, by flag: the layer under the command
/// line and the environment.
#[derive(Default)]
struct FileValues {
    values: Vec<(&'static str, String, String)>,
}

impl FileValues {
    fn get(&self, flag: &str) -> Option<(String, String)> {
        self.values
            .iter()
            .find(|(f, _, _)| *f == flag)
            .map(|(_, v, field)| (v.clone(), field.clone()))
    }
}

/// The flag's value, else the variable's (an empty variable counts as
/// unset), else the config file's.
fn pick(
    flag_value: Option<String>,
    flag: &'static str,
    env: &'static str,
    getenv: &dyn Fn(&str) -> Option<String>,
    file: &FileValues,
) -> Option<(String, Source)> {
    let mut source = Source {
        flag,
        env,
        from_env: false,
        from_file: None,
    };
    if let Some(v) = flag_value {
        return Some((v, source));
    }
    source.from_env = true;
    if let Some(v) = getenv(env).filter(|v| !v.is_empty()) {
        return Some((v, source));
    }
    let (v, field) = file.get(flag)?;
    source.from_env = false;
    source.from_file = Some(field);
    Some((v, source))
}

fn bad(source: &Source, value: &str, accepted: &str) -> CliError {
    CliError(format!(
        "{}: invalid value {value:?}: expected {accepted}",
        source.name()
    ))
}

fn duration_opt(
    flag_value: Option<String>,
    flag: &'static str,
    env: &'static str,
    default: Duration,
    getenv: &dyn Fn(&str) -> Option<String>,
    file: &FileValues,
) -> Result<Duration, CliError> {
    match pick(flag_value, flag, env, getenv, file) {
        None => Ok(default),
        Some((v, src)) => parse::duration(&v).ok_or_else(|| bad(&src, &v, parse::DURATION_FORMS)),
    }
}

fn bool_env(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn bool_opt(
    flag: bool,
    name: &'static str,
    env: &'static str,
    getenv: &dyn Fn(&str) -> Option<String>,
    file: &FileValues,
) -> Result<bool, CliError> {
    if flag {
        return Ok(true);
    }
    match pick(None, name, env, getenv, file) {
        None => Ok(false),
        Some((v, src)) => bool_env(&v).ok_or_else(|| {
            CliError(format!(
                "{}: invalid value {v:?}: expected 1, true, yes, 0, false or no",
                src.name()
            ))
        }),
    }
}

/// The CPUs this process may use: affinity and cgroup (v1 and v2) quota,
/// as std computes them.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Parses `args` (without argv[0]) with `getenv` for the `PMINIT_*` fallbacks.
pub fn parse(args: &[String], getenv: &dyn Fn(&str) -> Option<String>) -> Result<Parsed, CliError> {
    parse_with_cpus(args, getenv, cpus())
}

fn parse_with_cpus(
    args: &[String],
    getenv: &dyn Fn(&str) -> Option<String>,
    cpus: usize,
) -> Result<Parsed, CliError> {
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = match Args::from_args(&["pminit"], &strs) {
        Ok(a) => a,
        Err(early) => {
            return match early.status {
                Ok(()) => Ok(Parsed::Print(early.output)),
                Err(()) => Err(CliError(format!("{} ({USAGE})", early.output.trim_end()))),
            }
        }
    };
    if a.version {
        return Ok(Parsed::Print(format!(
            "pminit {}\n",
            env!("CARGO_PKG_VERSION")
        )));
    }

    let empty = FileValues::default();
    let app = match pick(a.config, "--config", "PMINIT_CONFIG", getenv, &empty) {
        None => {
            for (flag, var, value) in [
                ("--env", "PMINIT_ENV", &a.env),
                ("--only", "PMINIT_ONLY", &a.only),
            ] {
                if value.is_some() || getenv(var).is_some_and(|v| !v.is_empty()) {
                    return Err(CliError(format!("{flag} ({var}) needs --config FILE")));
                }
            }
            None
        }
        Some((path, _)) => {
            let env_name = pick(a.env, "--env", "PMINIT_ENV", getenv, &empty).map(|(v, _)| v);
            let only = pick(a.only, "--only", "PMINIT_ONLY", getenv, &empty).map(|(v, _)| v);
            Some(
                crate::ecosystem::load(&path, env_name.as_deref(), only.as_deref())
                    .map_err(CliError)?,
            )
        }
    };
    let file = FileValues {
        values: app
            .as_ref()
            .map(|a| {
                a.options
                    .iter()
                    .map(|(flag, v, field)| (*flag, v.clone(), format!("{}: {field}", a.file)))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let file = &file;
    let kill_timeout = duration_opt(
        a.kill_timeout,
        "--kill-timeout",
        "PMINIT_KILL_TIMEOUT",
        Duration::from_secs(8),
        getenv,
        file,
    )?;
    let stop_delay = duration_opt(
        a.stop_delay,
        "--stop-delay",
        "PMINIT_STOP_DELAY",
        Duration::ZERO,
        getenv,
        file,
    )?;
    let hang_timeout = duration_opt(
        a.hang_timeout,
        "--hang-timeout",
        "PMINIT_HANG_TIMEOUT",
        Duration::from_secs(30),
        getenv,
        file,
    )?;
    let min_uptime = duration_opt(
        a.min_uptime,
        "--min-uptime",
        "PMINIT_MIN_UPTIME",
        Duration::from_secs(1),
        getenv,
        file,
    )?;
    let stop_signal = match pick(
        a.stop_signal,
        "--stop-signal",
        "PMINIT_STOP_SIGNAL",
        getenv,
        file,
    ) {
        None => libc::SIGINT,
        Some((v, src)) => match parse::signal(&v) {
            Some(libc::SIGKILL) | Some(libc::SIGSTOP) | None => {
                return Err(bad(
                    &src,
                    &v,
                    &format!(
                        "{} (not KILL or STOP: the stop signal must be catchable)",
                        parse::SIGNAL_FORMS
                    ),
                ))
            }
            Some(n) => n,
        },
    };
    let restart = match pick(a.restart, "--restart", "PMINIT_RESTART", getenv, file) {
        None => Restart::OnFailure,
        Some((v, src)) => match v.as_str() {
            "always" => Restart::Always,
            "on-failure" => Restart::OnFailure,
            "never" | "no" => Restart::Never,
            _ => return Err(bad(&src, &v, "always, on-failure or never")),
        },
    };
    let max_restarts = match pick(
        a.max_restarts,
        "--max-restarts",
        "PMINIT_MAX_RESTARTS",
        getenv,
        file,
    ) {
        None => 16,
        Some((v, src)) => match v.trim().parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => return Err(bad(&src, &v, "a whole number of at least 1")),
        },
    };
    let log_format = match pick(
        a.log_format,
        "--log-format",
        "PMINIT_LOG_FORMAT",
        getenv,
        file,
    ) {
        None => Format::Text,
        Some((v, src)) => match v.as_str() {
            "text" => Format::Text,
            "json" => Format::Json,
            _ => return Err(bad(&src, &v, "text or json")),
        },
    };
    let (user, user_from_env) = match pick(a.user, "--user", "PMINIT_USER", getenv, file) {
        None => (None, false),
        Some((v, src)) => (
            Some(user::parse_spec(&v).map_err(|why| CliError(format!("{}: {why}", src.name())))?),
            src.from_env,
        ),
    };
    let verbose = bool_opt(a.verbose, "--verbose", "PMINIT_VERBOSE", getenv, file)?;
    let preload = !bool_opt(
        a.no_preload,
        "--no-preload",
        "PMINIT_NO_PRELOAD",
        getenv,
        file,
    )?;
    let wait_ready = bool_opt(
        a.wait_ready,
        "--wait-ready",
        "PMINIT_WAIT_READY",
        getenv,
        file,
    )?;
    let send_shutdown = bool_opt(
        a.send_shutdown,
        "--send-shutdown",
        "PMINIT_SEND_SHUTDOWN",
        getenv,
        file,
    )?;
    let listen_timeout = duration_opt(
        a.listen_timeout,
        "--listen-timeout",
        "PMINIT_LISTEN_TIMEOUT",
        Duration::from_secs(3),
        getenv,
        file,
    )?;
    let max_memory = match pick(
        a.max_memory,
        "--max-memory",
        "PMINIT_MAX_MEMORY",
        getenv,
        file,
    ) {
        None => None,
        Some((v, src)) => Some(parse::size(&v).ok_or_else(|| bad(&src, &v, parse::SIZE_FORMS))?),
    };
    let mut cpu_relative = None;
    let instances = match pick(a.instances, "--instances", "PMINIT_INSTANCES", getenv, file) {
        None => 1,
        Some((v, src)) => {
            let n =
                parse::instances(&v, cpus).ok_or_else(|| bad(&src, &v, parse::INSTANCES_FORMS))?;
            if parse::cpu_relative(&v) {
                cpu_relative = Some(v);
            }
            n
        }
    };
    // The default is the measured one: see bench/LAYOUTS.md.
    let layout = match pick(
        a.socket_layout,
        "--socket-layout",
        "PMINIT_SOCKET_LAYOUT",
        getenv,
        file,
    ) {
        None => None,
        Some((v, src)) => Some(match v.as_str() {
            "shared" => Layout::Shared,
            "per-worker" => Layout::PerWorker,
            _ => return Err(bad(&src, &v, "shared or per-worker")),
        }),
    };
    // --sticky is the per-worker layout with another steering program.
    let layout = match (
        bool_opt(a.sticky, "--sticky", "PMINIT_STICKY", getenv, file)?,
        layout,
    ) {
        (false, layout) => layout.unwrap_or(Layout::Shared),
        (true, Some(Layout::Shared)) => return Err(CliError(
            "--sticky needs one socket per worker: it cannot be used with --socket-layout shared"
                .to_string(),
        )),
        (true, _) => Layout::Sticky,
    };
    // Repeated flags, or one variable with a comma- or space-separated list.
    let (values, from_env) = if a.listen.is_empty() {
        let v = getenv("PMINIT_LISTEN").unwrap_or_default();
        let list: Vec<String> = v
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        (list, true)
    } else {
        (a.listen, false)
    };
    let mut listen_addrs = Vec::new();
    for v in values {
        let addr = listen::parse_addr(&v).map_err(|why| {
            let name = if from_env {
                "PMINIT_LISTEN (for --listen)"
            } else {
                "--listen"
            };
            CliError(format!("{name}: invalid value {v:?}: {why}"))
        })?;
        listen_addrs.push(addr);
    }
    listen::check_overlaps(&listen_addrs).map_err(|why| {
        let name = if from_env {
            "PMINIT_LISTEN"
        } else {
            "--listen"
        };
        CliError(format!("{name}: {why}"))
    })?;
    let metrics = match pick(a.metrics, "--metrics", "PMINIT_METRICS", getenv, file) {
        None => None,
        Some((v, src)) => {
            crate::metrics::parse_addr(&v)
                .map_err(|why| CliError(format!("{}: invalid value {v:?}: {why}", src.name())))?;
            Some(v)
        }
    };
    // A command after `--` wins over the file's script.
    let command = match (&app, a.command.is_empty()) {
        (Some(app), true) => app.command.clone(),
        _ => a.command,
    };
    if command.is_empty() {
        return Err(CliError(format!("no command given; {USAGE}")));
    }
    let (env, cwd, instance_var, warnings) = match app {
        Some(app) => (
            app.env,
            app.cwd
                .map(|(dir, field)| (dir, format!("{}: {field}", app.file))),
            app.instance_var,
            app.warnings,
        ),
        None => Default::default(),
    };
    Ok(Parsed::Run(Box::new(Config {
        listen: listen_addrs,
        layout,
        preload,
        wait_ready,
        send_shutdown,
        max_memory,
        cpu_relative,
        settings: Settings {
            instances,
            stop_signal,
            kill_timeout,
            stop_delay,
            restart,
            max_restarts,
            min_uptime,
            listen_timeout,
            interactive: false,
            hang_timeout,
        },
        command,
        user,
        user_from_env,
        log_format,
        verbose,
        metrics,
        env,
        cwd,
        instance_var,
        warnings,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let getenv = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match parse_with_cpus(&args, &getenv, 2) {
            Ok(Parsed::Run(c)) => Ok(*c),
            Ok(Parsed::Print(p)) => Err(format!("PRINT {p}")),
            Err(CliError(m)) => Err(m),
        }
    }

    /// (args, env, substrings the one-line message must contain)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);

    /// Each case is refused with one line holding every wanted substring.
    fn assert_rejected(table: &[Case]) {
        for (args, env, wants) in table {
            let msg = run(args, env).expect_err(args);
            assert!(!msg.trim_end().contains('\n'), "one line: {msg:?}");
            for want in *wants {
                assert!(msg.contains(want), "{args:?}: {msg:?} lacks {want:?}");
            }
        }
    }

    #[test]
    fn defaults() {
        let c = run("-- node index.js", &[]).expect("valid");
        assert_eq!(c.command, ["node", "index.js"]);
        let s = c.settings;
        assert_eq!(s.kill_timeout, Duration::from_secs(8));
        assert_eq!(s.stop_signal, libc::SIGINT);
        assert_eq!(s.stop_delay, Duration::ZERO);
        assert_eq!(s.restart, Restart::OnFailure);
        assert_eq!(s.max_restarts, 16);
        assert_eq!(s.min_uptime, Duration::from_secs(1));
        assert_eq!(c.log_format, Format::Text);
        assert!(!c.verbose);
        assert_eq!(c.user, None);
        let c = run("--user node:web -- x", &[]).expect("valid");
        let spec = c.user.expect("user");
        assert_eq!(
            (spec.user.as_str(), spec.group.as_deref()),
            ("node", Some("web"))
        );
        let c = run("-- x", &[("PMINIT_USER", "1000")]).expect("valid");
        assert_eq!(c.user.map(|u| u.user), Some("1000".to_string()));
    }

    #[test]
    fn flags_and_env() {
        let c = run(
            "--kill-timeout 1600 --stop-signal TERM --stop-delay 5s --restart always --max-restarts 3 --min-uptime 1m --log-format json -v -- app --flag",
            &[],
        )
        .expect("valid");
        assert_eq!(c.settings.kill_timeout, Duration::from_millis(1600));
        assert_eq!(c.settings.stop_signal, libc::SIGTERM);
        assert_eq!(c.settings.stop_delay, Duration::from_secs(5));
        assert_eq!(c.settings.restart, Restart::Always);
        assert_eq!(c.settings.max_restarts, 3);
        assert_eq!(c.settings.min_uptime, Duration::from_secs(60));
        assert_eq!(c.log_format, Format::Json);
        assert!(c.verbose);
        assert_eq!(c.command, ["app", "--flag"]);

        let env = [
            ("PMINIT_KILL_TIMEOUT", "2s"),
            ("PMINIT_STOP_SIGNAL", "QUIT"),
            ("PMINIT_STOP_DELAY", "300ms"),
            ("PMINIT_RESTART", "never"),
            ("PMINIT_MAX_RESTARTS", "4"),
            ("PMINIT_MIN_UPTIME", "2s"),
            ("PMINIT_LOG_FORMAT", "json"),
            ("PMINIT_VERBOSE", "yes"),
        ];
        let c = run("-- app", &env).expect("valid");
        assert_eq!(c.settings.kill_timeout, Duration::from_secs(2));
        assert_eq!(c.settings.stop_signal, libc::SIGQUIT);
        assert_eq!(c.settings.stop_delay, Duration::from_millis(300));
        assert_eq!(c.settings.restart, Restart::Never);
        assert_eq!(c.settings.max_restarts, 4);
        assert_eq!(c.settings.min_uptime, Duration::from_secs(2));
        assert_eq!(c.log_format, Format::Json);
        assert!(c.verbose);

        // The flag wins over the variable; an empty variable is unset.
        let c = run(
            "--kill-timeout 3s -- app",
            &[("PMINIT_KILL_TIMEOUT", "bogus"), ("PMINIT_RESTART", "")],
        )
        .expect("flag wins");
        assert_eq!(c.settings.kill_timeout, Duration::from_secs(3));
        assert_eq!(c.settings.restart, Restart::OnFailure);
    }

    #[test]
    fn bad_values_name_the_flag_the_value_and_the_forms() {
        // (args, env, substrings the one-line message must contain)
        let table: &[Case] = &[
            (
                "--kill-timeout abc -- x",
                &[],
                &["--kill-timeout", "\"abc\"", "8s"],
            ),
            (
                "--kill-timeout -5s -- x",
                &[],
                &["--kill-timeout", "\"-5s\""],
            ),
            (
                "--stop-delay 5d -- x",
                &[],
                &["--stop-delay", "\"5d\"", "1m"],
            ),
            ("--min-uptime x -- x", &[], &["--min-uptime", "duration"]),
            (
                "--stop-signal FOO -- x",
                &[],
                &["--stop-signal", "\"FOO\"", "SIGINT"],
            ),
            (
                "--stop-signal KILL -- x",
                &[],
                &["--stop-signal", "catchable"],
            ),
            ("--stop-signal 0 -- x", &[], &["--stop-signal", "\"0\""]),
            (
                "--restart sometimes -- x",
                &[],
                &["--restart", "\"sometimes\"", "on-failure"],
            ),
            (
                "--max-restarts 0 -- x",
                &[],
                &["--max-restarts", "\"0\"", "at least 1"],
            ),
            ("--max-restarts -1 -- x", &[], &["--max-restarts", "\"-1\""]),
            (
                "--log-format xml -- x",
                &[],
                &["--log-format", "\"xml\"", "text or json"],
            ),
            ("--bogus -- x", &[], &["--bogus"]),
            (
                "--user a:b:c -- x",
                &[],
                &["--user", "\"a:b:c\"", "USER:GROUP"],
            ),
            (
                "-- x",
                &[("PMINIT_USER", "node:")],
                &["PMINIT_USER", "\"node:\""],
            ),
            ("--kill-timeout", &[], &["--kill-timeout"]),
            ("--", &[], &["no command"]),
            ("", &[], &["no command", "usage"]),
            (
                "-- x",
                &[("PMINIT_KILL_TIMEOUT", "soon")],
                &["PMINIT_KILL_TIMEOUT", "--kill-timeout", "\"soon\""],
            ),
            (
                "-- x",
                &[("PMINIT_RESTART", "maybe")],
                &["PMINIT_RESTART", "\"maybe\""],
            ),
            (
                "-- x",
                &[("PMINIT_VERBOSE", "loud")],
                &["PMINIT_VERBOSE", "\"loud\""],
            ),
        ];
        assert_rejected(table);
    }

    #[test]
    fn cluster_options() {
        let c = run(
            "-i max -l 3000 -l 127.0.0.1:3001 --listen unix:/tmp/a.sock --socket-layout shared --no-preload -- node index.js",
            &[],
        )
        .expect("valid");
        assert_eq!(c.settings.instances, 2);
        assert_eq!(
            c.listen,
            vec![
                Addr::AnyPort(3000),
                Addr::Tcp("127.0.0.1:3001".parse().expect("addr")),
                Addr::Unix("/tmp/a.sock".into())
            ]
        );
        assert_eq!(c.layout, Layout::Shared);
        assert!(!c.preload);

        let c = run("-i -1 --socket-layout per-worker -- node index.js", &[]).expect("valid");
        assert_eq!(c.settings.instances, 1);
        assert_eq!(c.layout, Layout::PerWorker);
        let c = run("-- node index.js", &[]).expect("valid");
        assert_eq!(c.layout, Layout::Shared, "the measured default");
        assert!(c.preload);

        let env = [
            ("PMINIT_INSTANCES", "4"),
            ("PMINIT_LISTEN", "3000, [::1]:3001"),
            ("PMINIT_SOCKET_LAYOUT", "shared"),
            ("PMINIT_NO_PRELOAD", "1"),
        ];
        let c = run("-- node index.js", &env).expect("valid");
        assert_eq!(c.settings.instances, 4);
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.layout, Layout::Shared);
        assert!(!c.preload);
        // Flags win over the list in the environment.
        let c = run("-l 80 -- node index.js", &env).expect("valid");
        assert_eq!(c.listen, vec![Addr::AnyPort(80)]);

        // --sticky: per-worker sockets steered by client address.
        for (args, env) in [
            ("--sticky -- node a.js", &[][..]),
            ("--sticky --socket-layout per-worker -- node a.js", &[]),
            ("-- node a.js", &[("PMINIT_STICKY", "1")]),
            ("--sticky -- node a.js", &[("PMINIT_STICKY", "0")]),
        ] {
            let c = run(args, env).expect("valid");
            assert_eq!(c.layout, Layout::Sticky, "{args} {env:?}");
        }
        let c = run("-- node a.js", &[("PMINIT_STICKY", "no")]).expect("valid");
        assert_eq!(c.layout, Layout::Shared);
    }

    #[test]
    fn readiness_options() {
        let c = run("-- node a.js", &[]).expect("valid");
        assert!(!c.wait_ready && !c.send_shutdown);
        assert_eq!(c.settings.listen_timeout, Duration::from_secs(3));
        assert_eq!(c.max_memory, None);
        let c = run(
            "--wait-ready --listen-timeout 10s --send-shutdown --max-memory 512M -- node a.js",
            &[],
        )
        .expect("valid");
        assert!(c.wait_ready && c.send_shutdown);
        assert_eq!(c.settings.listen_timeout, Duration::from_secs(10));
        assert_eq!(c.max_memory, Some(512 << 20));
        let env = [
            ("PMINIT_WAIT_READY", "true"),
            ("PMINIT_LISTEN_TIMEOUT", "1500"),
            ("PMINIT_MAX_MEMORY", "1G"),
        ];
        let c = run("-- node a.js", &env).expect("valid");
        assert!(c.wait_ready);
        assert_eq!(c.settings.listen_timeout, Duration::from_millis(1500));
        assert_eq!(c.max_memory, Some(1 << 30));
        for (args, want) in [
            ("--max-memory lots -- x", "--max-memory"),
            ("--max-memory 0 -- x", "--max-memory"),
            ("--listen-timeout 3d -- x", "--listen-timeout"),
        ] {
            let msg = run(args, &[]).expect_err(args);
            assert!(msg.contains(want), "{msg}");
        }
    }

    #[test]
    fn bad_cluster_values() {
        let table: &[Case] = &[
            ("-i lots -- x", &[], &["--instances", "\"lots\"", "max"]),
            ("-i 0.5 -- x", &[], &["--instances", "\"0.5\""]),
            (
                "-l 70000 -- x",
                &[],
                &["--listen", "\"70000\"", "out of range"],
            ),
            ("-l abc -- x", &[], &["--listen", "\"abc\"", "HOST:PORT"]),
            ("-l example.com:80 -- x", &[], &["--listen", "host names"]),
            (
                "-l 3000 -l 127.0.0.1:3000 -- x",
                &[],
                &["--listen", "3000 and 127.0.0.1:3000", "overlap"],
            ),
            (
                "-- x",
                &[("PMINIT_LISTEN", "8080,8080")],
                &["PMINIT_LISTEN", "8080 and 8080"],
            ),
            (
                "--sticky --socket-layout shared -- x",
                &[],
                &["--sticky", "--socket-layout shared"],
            ),
            (
                "-- x",
                &[("PMINIT_STICKY", "1"), ("PMINIT_SOCKET_LAYOUT", "shared")],
                &["--sticky", "--socket-layout shared"],
            ),
            (
                "-- x",
                &[("PMINIT_STICKY", "maybe")],
                &["PMINIT_STICKY", "\"maybe\""],
            ),
            (
                "--socket-layout both -- x",
                &[],
                &["--socket-layout", "shared or per-worker"],
            ),
            (
                "-- x",
                &[("PMINIT_LISTEN", "3000,nope")],
                &["PMINIT_LISTEN", "\"nope\""],
            ),
            (
                "-- x",
                &[("PMINIT_INSTANCES", "-x")],
                &["PMINIT_INSTANCES", "\"-x\""],
            ),
        ];
        assert_rejected(table);
    }

    #[test]
    fn flags_and_variables_win_over_the_config_file_which_wins_over_defaults() {
        let dir = std::env::temp_dir().join(format!("pminit-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("eco.json");
        std::fs::write(
            &file,
            r#"{"apps": [{"script": "app.js", "instances": 3, "kill_timeout": 2500,
                "wait_ready": true, "min_uptime": "2s", "env": {"A": "1"}}]}"#,
        )
        .expect("write");
        let f = file.to_string_lossy();
        let c = run(&format!("--config {f}"), &[]).expect("valid");
        assert_eq!(c.command, ["node", "app.js"]);
        assert_eq!(c.settings.instances, 3);
        assert_eq!(c.settings.kill_timeout, Duration::from_millis(2500));
        assert_eq!(c.settings.min_uptime, Duration::from_secs(2));
        assert_eq!(c.settings.restart, Restart::Always, "pm2's autorestart");
        assert!(c.wait_ready);
        assert_eq!(c.env, [("A".to_string(), "1".to_string())]);
        let c = run(
            &format!("--config {f} -i 1 --min-uptime 5s -- node other.js"),
            &[("PMINIT_KILL_TIMEOUT", "4s")],
        )
        .expect("valid");
        assert_eq!(c.settings.instances, 1);
        assert_eq!(c.settings.min_uptime, Duration::from_secs(5));
        assert_eq!(c.settings.kill_timeout, Duration::from_secs(4));
        assert_eq!(c.command, ["node", "other.js"]);
        let c = run("", &[("PMINIT_CONFIG", &f)]).expect("valid");
        assert_eq!(c.settings.instances, 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn help_and_version_print() {
        let help = run("--help", &[]).expect_err("prints");
        assert!(help.starts_with("PRINT Usage: pminit"), "{help}");
        assert!(help.contains("--kill-timeout"));
        let version = run("--version", &[]).expect_err("prints");
        assert_eq!(
            version,
            format!("PRINT pminit {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}
