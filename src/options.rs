//! The one table of pminit's options. Each row is an option's flag, its
//! `PMINIT_<NAME>` variable, the pm2 ecosystem field(s) that feed it, its
//! default (as text, for `--help`), its help line, and how its value lands
//! in a [`Config`]. The command line, the variables, `--config` and `--help`
//! all read this table (src/cli.rs layers them; src/ecosystem/ keys its
//! values by [`Id`]); nothing else names an option.
//!
//! What it must never do: I/O, or know where a value came from beyond the
//! [`Source`] that names it in an error.

use std::time::Duration;

use crate::config::Config;
use crate::core::Restart;
use crate::listen::{self, Layout};
use crate::log::Format;
use crate::{parse, user};

/// An option, by name: the ecosystem reader keys its values by this, so a
/// misspelt option does not compile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Id {
    Instances,
    Listen,
    Sticky,
    SocketLayout,
    NoPreload,
    WaitReady,
    ListenTimeout,
    SendShutdown,
    MaxMemory,
    KillTimeout,
    HangTimeout,
    NoMemoryWatch,
    StopSignal,
    StopDelay,
    Restart,
    MaxRestarts,
    MinUptime,
    User,
    LogFormat,
    Config,
    Env,
    Only,
    Metrics,
    Verbose,
}

/// A one-line message for stderr; the process exits `exit::USAGE`.
#[derive(Debug, PartialEq, Eq)]
pub struct CliError(pub String);

/// What the machine says, for values that count CPUs.
pub struct Machine {
    pub cpus: usize,
}

/// Where a value came from, for the error message.
pub enum Origin {
    Flag,
    Env,
    /// From the --config file: "FILE: FIELD".
    File(String),
}

pub struct Source {
    pub opt: &'static Opt,
    pub origin: Origin,
}

impl Source {
    /// `--kill-timeout`, `PMINIT_KILL_TIMEOUT (for --kill-timeout)` or
    /// `FILE: FIELD (for --kill-timeout)`.
    pub fn name(&self) -> String {
        match &self.origin {
            Origin::Flag => self.opt.long.to_string(),
            Origin::Env => format!("{} (for {})", self.opt.env, self.opt.long),
            Origin::File(field) => format!("{field} (for {})", self.opt.long),
        }
    }

    /// The flag, the variable or the field alone.
    pub fn short_name(&self) -> &str {
        match &self.origin {
            Origin::Flag => self.opt.long,
            Origin::Env => self.opt.env,
            Origin::File(field) => field,
        }
    }
}

/// A value as the ecosystem file gives it (src/ecosystem/fields.rs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileValue {
    Text(String),
    Switch(bool),
}

type Apply = fn(&mut Config, &str, &Source, &Machine) -> Result<(), CliError>;
type ApplyList = fn(&mut Config, &[String], &Source) -> Result<(), CliError>;

pub enum Kind {
    /// `--name`; in `PMINIT_NAME` or a file: 1, true, yes, on or 0, false,
    /// no, off.
    Switch(fn(&mut Config, bool)),
    /// `--name VALUE` or `--name=VALUE`.
    Value(&'static str, Apply),
    /// `--name VALUE`, repeatable; `PMINIT_NAME` holds a comma- or
    /// space-separated list.
    Repeat(&'static str, ApplyList),
    /// `--name VALUE`, read by the parser before the others: which
    /// `--config` file, and how to read it.
    Early(&'static str),
}

/// The pm2 ecosystem fields that feed an option.
pub enum Pm2 {
    None,
    /// One field, read as the option's kind (a switch: true or false; a
    /// value: a number or a string in pminit's syntax).
    Field(&'static str),
    /// Read with pm2's own semantics by src/ecosystem/.
    Mapped(&'static [&'static str]),
}

pub struct Opt {
    pub id: Id,
    /// `--kill-timeout`.
    pub long: &'static str,
    /// `-i`.
    pub short: Option<&'static str>,
    /// `PMINIT_KILL_TIMEOUT`: always `PMINIT_` and the long name.
    pub env: &'static str,
    pub kind: Kind,
    pub pm2: Pm2,
    /// The default as `--help` shows it; `Config::default()` holds it.
    pub default: Option<&'static str>,
    pub help: &'static str,
}

/// The option with this id.
pub fn opt(id: Id) -> &'static Opt {
    // The table holds every id (a unit test checks it), so the fallback is
    // never taken; it keeps this total without a panic.
    OPTIONS.iter().find(|o| o.id == id).unwrap_or(&OPTIONS[0])
}

/// The options, in `--help` order (also the order values are applied in:
/// `--sticky` before `--socket-layout`).
pub static OPTIONS: &[Opt] = &[
    Opt {
        id: Id::Instances,
        long: "--instances",
        short: Some("-i"),
        env: "PMINIT_INSTANCES",
        kind: Kind::Value("N", instances),
        pm2: Pm2::Mapped(&["instances", "exec_mode"]),
        default: Some("1"),
        help: "workers: N, max or 0 (the CPUs this container may use), -K (that minus K)",
    },
    Opt {
        id: Id::Listen,
        long: "--listen",
        short: Some("-l"),
        env: "PMINIT_LISTEN",
        kind: Kind::Repeat("ADDR", listen),
        pm2: Pm2::None,
        default: None,
        help: "listen on PORT, HOST:PORT, [V6]:PORT or unix:PATH and hand the socket to every worker (repeatable)",
    },
    Opt {
        id: Id::Sticky,
        long: "--sticky",
        short: None,
        env: "PMINIT_STICKY",
        kind: Kind::Switch(|c, on| {
            if on {
                c.layout = Layout::Sticky;
            }
        }),
        pm2: Pm2::None,
        default: None,
        help: "one client keeps one worker: per-worker sockets steered by a hash of the client's address (kernel BPF)",
    },
    Opt {
        id: Id::SocketLayout,
        long: "--socket-layout",
        short: None,
        env: "PMINIT_SOCKET_LAYOUT",
        kind: Kind::Value("LAYOUT", socket_layout),
        pm2: Pm2::None,
        default: Some("shared"),
        help: "shared (one socket, one accept queue) or per-worker (one SO_REUSEPORT socket per worker)",
    },
    Opt {
        id: Id::NoPreload,
        long: "--no-preload",
        short: None,
        env: "PMINIT_NO_PRELOAD",
        kind: Kind::Switch(|c, on| c.preload = !on),
        pm2: Pm2::None,
        default: None,
        help: "do not inject the preload that makes Node's listen(PORT) use pminit's socket",
    },
    Opt {
        id: Id::WaitReady,
        long: "--wait-ready",
        short: None,
        env: "PMINIT_WAIT_READY",
        kind: Kind::Switch(|c, on| c.wait_ready = on),
        pm2: Pm2::Field("wait_ready"),
        default: None,
        help: "a worker is ready only when it says so: process.send('ready') or sd_notify READY=1",
    },
    Opt {
        id: Id::ListenTimeout,
        long: "--listen-timeout",
        short: None,
        env: "PMINIT_LISTEN_TIMEOUT",
        kind: Kind::Value("DURATION", |c, v, s, _| {
            c.settings.listen_timeout = duration(v, s)?;
            Ok(())
        }),
        pm2: Pm2::Field("listen_timeout"),
        default: Some("3s"),
        help: "longest wait for a worker to become ready",
    },
    Opt {
        id: Id::SendShutdown,
        long: "--send-shutdown",
        short: None,
        env: "PMINIT_SEND_SHUTDOWN",
        kind: Kind::Switch(|c, on| c.send_shutdown = on),
        pm2: Pm2::Field("shutdown_with_message"),
        default: None,
        help: "send pm2's 'shutdown' message over the IPC channel before the stop signal",
    },
    Opt {
        id: Id::MaxMemory,
        long: "--max-memory",
        short: None,
        env: "PMINIT_MAX_MEMORY",
        kind: Kind::Value("SIZE", |c, v, s, _| {
            c.max_memory = Some(parse::size(v).ok_or_else(|| bad(s, v, parse::SIZE_FORMS))?);
            Ok(())
        }),
        pm2: Pm2::Field("max_memory_restart"),
        default: None,
        help: "gracefully replace a worker whose memory (RSS of its process group) exceeds SIZE: 512M, 1G",
    },
    Opt {
        id: Id::KillTimeout,
        long: "--kill-timeout",
        short: None,
        env: "PMINIT_KILL_TIMEOUT",
        kind: Kind::Value("DURATION", |c, v, s, _| {
            c.settings.kill_timeout = duration(v, s)?;
            Ok(())
        }),
        pm2: Pm2::Mapped(&["kill_timeout"]),
        default: Some("8s"),
        help: "grace between the stop signal and SIGKILL: 1600 (ms), 1600ms, 8s, 1m",
    },
    Opt {
        id: Id::HangTimeout,
        long: "--hang-timeout",
        short: None,
        env: "PMINIT_HANG_TIMEOUT",
        kind: Kind::Value("DURATION", |c, v, s, _| {
            c.settings.hang_timeout = duration(v, s)?;
            Ok(())
        }),
        pm2: Pm2::None,
        default: Some("30s"),
        help: "a ready Node worker whose event loop leaves pminit's ping unanswered this long is hung: replaced, then killed; 0 turns it off",
    },
    Opt {
        id: Id::NoMemoryWatch,
        long: "--no-memory-watch",
        short: None,
        env: "PMINIT_NO_MEMORY_WATCH",
        kind: Kind::Switch(|c, on| c.memory_watch = !on),
        pm2: Pm2::None,
        default: None,
        help: "ignore the container's memory limit: no heap budget for Node workers, no replacing or killing them near it (--max-memory still applies)",
    },
    Opt {
        id: Id::StopSignal,
        long: "--stop-signal",
        short: None,
        env: "PMINIT_STOP_SIGNAL",
        kind: Kind::Value("SIG", stop_signal),
        pm2: Pm2::None,
        default: Some("SIGINT"),
        help: "signal that asks a worker to stop: INT, SIGINT or 2",
    },
    Opt {
        id: Id::StopDelay,
        long: "--stop-delay",
        short: None,
        env: "PMINIT_STOP_DELAY",
        kind: Kind::Value("DURATION", |c, v, s, _| {
            c.settings.stop_delay = duration(v, s)?;
            Ok(())
        }),
        pm2: Pm2::None,
        default: Some("0"),
        help: "on SIGTERM keep serving this long before stopping workers",
    },
    Opt {
        id: Id::Restart,
        long: "--restart",
        short: None,
        env: "PMINIT_RESTART",
        kind: Kind::Value("WHEN", restart),
        pm2: Pm2::Mapped(&["autorestart", "stop_exit_codes"]),
        default: Some("on-failure"),
        help: "when a worker exits on its own: always, on-failure or never",
    },
    Opt {
        id: Id::MaxRestarts,
        long: "--max-restarts",
        short: None,
        env: "PMINIT_MAX_RESTARTS",
        kind: Kind::Value("N", |c, v, s, _| {
            c.settings.max_restarts = match v.trim().parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => return Err(bad(s, v, "a whole number of at least 1")),
            };
            Ok(())
        }),
        pm2: Pm2::Mapped(&["max_restarts"]),
        default: Some("16"),
        help: "this many quick deaths in a row is a crash loop: stop and exit non-zero",
    },
    Opt {
        id: Id::MinUptime,
        long: "--min-uptime",
        short: None,
        env: "PMINIT_MIN_UPTIME",
        kind: Kind::Value("DURATION", |c, v, s, _| {
            c.settings.min_uptime = duration(v, s)?;
            Ok(())
        }),
        pm2: Pm2::Field("min_uptime"),
        default: Some("1s"),
        help: "a worker that lived this long is healthy: its next restart is immediate",
    },
    Opt {
        id: Id::User,
        long: "--user",
        short: None,
        env: "PMINIT_USER",
        kind: Kind::Value("USER[:GROUP]", |c, v, s, _| {
            let spec = user::parse_spec(v).map_err(|why| CliError(format!("{}: {why}", s.name())))?;
            c.user = Some(spec);
            c.user_from_env = matches!(s.origin, Origin::Env);
            Ok(())
        }),
        pm2: Pm2::Mapped(&["uid", "user", "gid"]),
        default: None,
        help: "bind sockets as root, then run workers as USER or USER:GROUP (names from /etc/passwd and /etc/group, or numbers)",
    },
    Opt {
        id: Id::LogFormat,
        long: "--log-format",
        short: None,
        env: "PMINIT_LOG_FORMAT",
        kind: Kind::Value("FORMAT", |c, v, s, _| {
            c.log_format = match v {
                "text" => Format::Text,
                "json" => Format::Json,
                _ => return Err(bad(s, v, "text or json")),
            };
            Ok(())
        }),
        pm2: Pm2::None,
        default: Some("text"),
        help: "pminit's own event lines on stderr: text or json",
    },
    Opt {
        id: Id::Config,
        long: "--config",
        short: None,
        env: "PMINIT_CONFIG",
        kind: Kind::Early("FILE"),
        pm2: Pm2::None,
        default: None,
        help: "run the app of this pm2 ecosystem file (.js, .cjs, .mjs, .json); flags win over it",
    },
    Opt {
        id: Id::Env,
        long: "--env",
        short: None,
        env: "PMINIT_ENV",
        kind: Kind::Early("NAME"),
        pm2: Pm2::None,
        default: None,
        help: "with --config: merge the app's env_NAME over its env, as pm2 start --env NAME",
    },
    Opt {
        id: Id::Only,
        long: "--only",
        short: None,
        env: "PMINIT_ONLY",
        kind: Kind::Early("NAME"),
        pm2: Pm2::None,
        default: None,
        help: "with --config: the app of a multi-app file to run, by name",
    },
    Opt {
        id: Id::Metrics,
        long: "--metrics",
        short: None,
        env: "PMINIT_METRICS",
        kind: Kind::Value("ADDR", |c, v, s, _| {
            parse::tcp_addr(v)
                .map_err(|why| CliError(format!("{}: invalid value {v:?}: {why}", s.name())))?;
            c.metrics = Some(v.to_string());
            Ok(())
        }),
        pm2: Pm2::None,
        default: None,
        help: "serve Prometheus metrics at http://ADDR/metrics: PORT or HOST:PORT",
    },
    Opt {
        id: Id::Verbose,
        long: "--verbose",
        short: Some("-v"),
        env: "PMINIT_VERBOSE",
        kind: Kind::Switch(|c, on| c.verbose = on),
        pm2: Pm2::None,
        default: None,
        help: "also log forwarded signals and reaped orphans",
    },
];

fn bad(source: &Source, value: &str, accepted: &str) -> CliError {
    CliError(format!(
        "{}: invalid value {value:?}: expected {accepted}",
        source.name()
    ))
}

fn duration(v: &str, s: &Source) -> Result<Duration, CliError> {
    parse::duration(v).ok_or_else(|| bad(s, v, parse::DURATION_FORMS))
}

/// A switch's value in `PMINIT_*` or a file.
pub fn switch(v: &str, s: &Source) -> Result<bool, CliError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(CliError(format!(
            "{}: invalid value {v:?}: expected 1, true, yes, 0, false or no",
            s.name()
        ))),
    }
}

fn instances(c: &mut Config, v: &str, s: &Source, m: &Machine) -> Result<(), CliError> {
    c.settings.instances =
        parse::instances(v, m.cpus).ok_or_else(|| bad(s, v, parse::INSTANCES_FORMS))?;
    if parse::cpu_relative(v) {
        c.cpu_relative = Some(v.to_string());
    }
    Ok(())
}

fn listen(c: &mut Config, values: &[String], s: &Source) -> Result<(), CliError> {
    for v in values {
        let addr = listen::parse_addr(v)
            .map_err(|why| CliError(format!("{}: invalid value {v:?}: {why}", s.name())))?;
        c.listen.push(addr);
    }
    listen::check_overlaps(&c.listen).map_err(|why| CliError(format!("{}: {why}", s.short_name())))
}

/// Runs after `--sticky` (the table's order): `shared` contradicts it,
/// `per-worker` is what it already is.
fn socket_layout(c: &mut Config, v: &str, s: &Source, _: &Machine) -> Result<(), CliError> {
    let layout = match v {
        "shared" => Layout::Shared,
        "per-worker" => Layout::PerWorker,
        _ => return Err(bad(s, v, "shared or per-worker")),
    };
    match (c.layout, layout) {
        (Layout::Sticky, Layout::Shared) => Err(CliError(
            "--sticky needs one socket per worker: it cannot be used with --socket-layout shared"
                .to_string(),
        )),
        (Layout::Sticky, _) => Ok(()),
        (_, layout) => {
            c.layout = layout;
            Ok(())
        }
    }
}

fn stop_signal(c: &mut Config, v: &str, s: &Source, _: &Machine) -> Result<(), CliError> {
    c.settings.stop_signal = match parse::signal(v) {
        Some(libc::SIGKILL) | Some(libc::SIGSTOP) | None => {
            return Err(bad(
                s,
                v,
                &format!(
                    "{} (not KILL or STOP: the stop signal must be catchable)",
                    parse::SIGNAL_FORMS
                ),
            ))
        }
        Some(n) => n,
    };
    Ok(())
}

fn restart(c: &mut Config, v: &str, s: &Source, _: &Machine) -> Result<(), CliError> {
    c.settings.restart = match v {
        "always" => Restart::Always,
        "on-failure" => Restart::OnFailure,
        "never" | "no" => Restart::Never,
        _ => return Err(bad(s, v, "always, on-failure or never")),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_has_one_row_and_names_follow_the_rule() {
        for o in OPTIONS {
            assert_eq!(OPTIONS.iter().filter(|x| x.id == o.id).count(), 1);
            assert!(std::ptr::eq(opt(o.id), o));
            let want = format!(
                "PMINIT_{}",
                o.long
                    .trim_start_matches("--")
                    .replace('-', "_")
                    .to_uppercase()
            );
            assert_eq!(o.env, want);
        }
        assert_eq!(OPTIONS.len(), 24, "one row per Id variant");
    }

    /// The default texts `--help` shows are what `Config::default()` holds.
    #[test]
    fn default_texts_are_the_defaults() {
        let machine = Machine { cpus: 2 };
        let want = format!("{:?}", Config::default());
        for o in OPTIONS {
            let (Some(text), Kind::Value(_, apply)) = (o.default, &o.kind) else {
                continue;
            };
            let mut c = Config::default();
            let s = Source {
                opt: o,
                origin: Origin::Flag,
            };
            apply(&mut c, text, &s, &machine).expect(o.long);
            assert_eq!(format!("{c:?}"), want, "{}", o.long);
        }
    }
}
