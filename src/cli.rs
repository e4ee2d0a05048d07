//! The command line: `pminit [OPTIONS] -- COMMAND [ARG...]`, or a control
//! verb (`pminit status ...`, run by src/control/client.rs).
//!
//! Every option can also come from `PMINIT_<NAME>` (the flag wins), because a
//! Kubernetes manifest sets env more easily than it rewrites an ENTRYPOINT,
//! and from a `--config` pm2 ecosystem file (under both). The options are
//! one table (src/options.rs); this file reads argv against it, layers flag
//! over variable over file over default, and writes `--help` from it.
//! Bad input gets one line naming the flag (or variable, or field), the
//! value and the accepted forms; the caller exits 2 before anything starts.

use crate::config::Config;
use crate::ecosystem::{self, App};
use crate::options::{self, FileValue, Id, Kind, Machine, Opt, Origin, Source, OPTIONS};

pub use crate::options::CliError;

/// The first words that make pminit a control client, not an init.
pub const VERBS: &[&str] = &["status", "reload", "scale", "ready", "prestop"];

#[derive(Debug)]
pub enum Parsed {
    Run(Box<Config>),
    /// --help or --version: print this on stdout and exit 0.
    Print(String),
}

/// What this pminit process is asked to do.
#[derive(Debug)]
pub enum Invocation {
    Run(Box<Config>),
    Print(String),
    /// `pminit VERB ARGS...`: for src/control/client.rs.
    Verb(String, Vec<String>),
}

pub const USAGE: &str =
    "usage: pminit [OPTIONS] -- COMMAND [ARG...]  (pminit --help lists the options)";

const ABOUT: &str = "pminit: a PID 1 for containers. Reaps zombies, forwards signals, stops
gracefully (stop signal, grace, SIGKILL) and restarts workers that crash.";

/// The CPUs this process may use: affinity and cgroup (v1 and v2) quota,
/// as std computes them.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// pminit's own arguments and environment. A variable pminit reads that is
/// not UTF-8 is an error naming it, not silently unset.
pub fn parse_process() -> Result<Invocation, CliError> {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect::<Result<_, _>>()
        .map_err(|bad| CliError(format!("argument {bad:?} is not valid UTF-8")))?;
    if let Some(verb) = args.first().filter(|a| VERBS.contains(&a.as_str())) {
        return Ok(Invocation::Verb(verb.clone(), args[1..].to_vec()));
    }
    let not_utf8 = std::cell::RefCell::new(None);
    let getenv = |name: &str| match std::env::var(name) {
        Ok(v) => Some(v),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(raw)) => {
            not_utf8.borrow_mut().get_or_insert((name.to_string(), raw));
            None
        }
    };
    let parsed = parse(&args, &getenv);
    if let Some((name, raw)) = not_utf8.take() {
        return Err(CliError(format!(
            "{name}: invalid value {raw:?}: not valid UTF-8"
        )));
    }
    Ok(match parsed? {
        Parsed::Run(config) => Invocation::Run(config),
        Parsed::Print(text) => Invocation::Print(text),
    })
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
    let argv = Argv::read(args).map_err(|why| CliError(format!("{why} ({USAGE})")))?;
    if argv.help {
        return Ok(Parsed::Print(help()));
    }
    if argv.version {
        return Ok(Parsed::Print(format!(
            "pminit {}\n",
            env!("CARGO_PKG_VERSION")
        )));
    }
    let app = load_app(&argv, getenv)?;
    let layers = Layers {
        argv: &argv,
        getenv,
        app: app.as_ref(),
    };
    let mut config = Config::default();
    let machine = Machine { cpus };
    for (i, opt) in OPTIONS.iter().enumerate() {
        layers.apply(i, opt, &mut config, &machine)?;
    }
    // A command after `--` wins over the file's script.
    config.command = match (&app, argv.command.is_empty()) {
        (Some(app), true) => app.command.clone(),
        _ => argv.command,
    };
    if config.command.is_empty() {
        return Err(CliError(format!("no command given; {USAGE}")));
    }
    if let Some(app) = app {
        config.env = app.env;
        config.cwd = app
            .cwd
            .map(|(dir, field)| (dir, format!("{}: {field}", app.file)));
        config.instance_var = app.instance_var;
        config.warnings = app.warnings;
    }
    Ok(Parsed::Run(Box::new(config)))
}

/// What argv says, by the table's rows.
struct Argv {
    /// The values given for `OPTIONS[i]` (a switch: one empty string each
    /// time it is given).
    given: Vec<Vec<String>>,
    command: Vec<String>,
    help: bool,
    version: bool,
}

impl Argv {
    /// `--name VALUE`, `--name=VALUE`, `-i N`, switches, `--` then the
    /// command; the first word that is not an option starts the command too.
    /// Err is the message (argh's wording, which scripts may match).
    fn read(args: &[String]) -> Result<Argv, String> {
        let mut argv = Argv {
            given: vec![Vec::new(); OPTIONS.len()],
            command: Vec::new(),
            help: false,
            version: false,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--help" | "help" => argv.help = true,
                "--" => {
                    argv.command = it.cloned().collect();
                    break;
                }
                a if !a.starts_with('-') => {
                    argv.command = std::iter::once(arg).chain(it).cloned().collect();
                    break;
                }
                _ if argv.help => {
                    return Err("Trailing arguments are not allowed after `help`.".into())
                }
                "--version" => argv.version = true,
                a => argv.option(a, &mut it)?,
            }
        }
        Ok(argv)
    }

    fn option(&mut self, arg: &str, rest: &mut std::slice::Iter<String>) -> Result<(), String> {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if arg.starts_with("--") => (name, Some(value)),
            _ => (arg, None),
        };
        let Some(i) = OPTIONS
            .iter()
            .position(|o| o.long == name || o.short == Some(name))
        else {
            return Err(format!("Unrecognized argument: {arg}"));
        };
        let given = &mut self.given[i];
        if let Kind::Switch(_) = OPTIONS[i].kind {
            if inline.is_some() {
                return Err(format!("Option '{name}' takes no value: {arg}"));
            }
            given.push(String::new());
            return Ok(());
        }
        let value = match inline {
            Some(v) => v.to_string(),
            None => rest
                .next()
                .cloned()
                .ok_or_else(|| format!("No value provided for option '{name}'."))?,
        };
        if !given.is_empty() && !matches!(OPTIONS[i].kind, Kind::Repeat(..)) {
            return Err(format!(
                "Error parsing option '{name}' with value '{value}': duplicate values provided"
            ));
        }
        given.push(value);
        Ok(())
    }
}

/// The value of an early option (`--config`, `--env`, `--only`): the flag's,
/// else the variable's.
fn early(argv: &Argv, id: Id, getenv: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let i = OPTIONS.iter().position(|o| o.id == id)?;
    argv.given[i]
        .last()
        .cloned()
        .or_else(|| getenv(OPTIONS[i].env).filter(|v| !v.is_empty()))
}

/// `--config FILE` read (with `--env`, `--only`), or None.
fn load_app(argv: &Argv, getenv: &dyn Fn(&str) -> Option<String>) -> Result<Option<App>, CliError> {
    let env_name = early(argv, Id::Env, getenv);
    let only = early(argv, Id::Only, getenv);
    let Some(path) = early(argv, Id::Config, getenv) else {
        for (id, value) in [(Id::Env, &env_name), (Id::Only, &only)] {
            if value.is_some() {
                let o = options::opt(id);
                return Err(CliError(format!(
                    "{} ({}) needs --config FILE",
                    o.long, o.env
                )));
            }
        }
        return Ok(None);
    };
    ecosystem::load(&path, env_name.as_deref(), only.as_deref())
        .map(Some)
        .map_err(CliError)
}

/// The three layers under the defaults: argv, `PMINIT_*`, the file.
struct Layers<'a> {
    argv: &'a Argv,
    getenv: &'a dyn Fn(&str) -> Option<String>,
    app: Option<&'a App>,
}

impl Layers<'_> {
    /// The variable's value (an empty variable counts as unset), else the
    /// file's.
    fn under_argv(&self, opt: &'static Opt) -> Option<(FileValue, Source)> {
        let source = |origin| Source { opt, origin };
        if let Some(v) = (self.getenv)(opt.env).filter(|v| !v.is_empty()) {
            return Some((FileValue::Text(v), source(Origin::Env)));
        }
        let app = self.app?;
        let (_, value, field) = app.options.iter().find(|(id, _, _)| *id == opt.id)?;
        let origin = Origin::File(format!("{}: {field}", app.file));
        Some((value.clone(), source(origin)))
    }

    /// Applies the winning layer's value of `OPTIONS[i]`, if any.
    fn apply(
        &self,
        i: usize,
        opt: &'static Opt,
        config: &mut Config,
        machine: &Machine,
    ) -> Result<(), CliError> {
        let flag = &self.argv.given[i];
        let from_flag = Source {
            opt,
            origin: Origin::Flag,
        };
        match opt.kind {
            Kind::Early(_) => {}
            Kind::Switch(set) if !flag.is_empty() => set(config, true),
            Kind::Switch(set) => match self.under_argv(opt) {
                Some((FileValue::Switch(on), _)) => set(config, on),
                Some((FileValue::Text(v), source)) => set(config, options::switch(&v, &source)?),
                None => {}
            },
            Kind::Value(_, apply) => match (flag.last(), self.under_argv(opt)) {
                (Some(v), _) => apply(config, v, &from_flag, machine)?,
                (None, Some((FileValue::Text(v), source))) => apply(config, &v, &source, machine)?,
                (None, Some((FileValue::Switch(on), source))) => {
                    apply(config, &on.to_string(), &source, machine)?
                }
                (None, None) => {}
            },
            Kind::Repeat(_, apply) if !flag.is_empty() => apply(config, flag, &from_flag)?,
            // One variable (or field) with a comma- or space-separated list.
            Kind::Repeat(_, apply) => {
                if let Some((FileValue::Text(v), source)) = self.under_argv(opt) {
                    let list: Vec<String> = v
                        .split(|c: char| c == ',' || c.is_whitespace())
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                    apply(config, &list, &source)?;
                }
            }
        }
        Ok(())
    }
}

/// `--help`, from the table.
fn help() -> String {
    let mut out = format!(
        "Usage: pminit [OPTIONS] -- COMMAND [ARG...]\n       pminit status|reload|scale|ready|prestop ...  (pminit VERB --help)\n\n{ABOUT}\n\nOptions (each also PMINIT_<NAME>, as PMINIT_KILL_TIMEOUT; a flag wins over its\nvariable, a variable over a --config file):\n"
    );
    for opt in OPTIONS {
        let names = match opt.short {
            Some(short) => format!("{short}, {}", opt.long),
            None => format!("    {}", opt.long),
        };
        let left = match opt.kind {
            Kind::Switch(_) => names,
            Kind::Value(meta, _) | Kind::Repeat(meta, _) | Kind::Early(meta) => {
                format!("{names} {meta}")
            }
        };
        let text = match opt.default {
            Some(d) => format!("{} (default {d})", opt.help),
            None => opt.help.to_string(),
        };
        item(&mut out, &left, &text);
    }
    item(&mut out, "    --version", "print the version and exit");
    item(&mut out, "    --help, help", "display usage information");
    out
}

/// One option of `--help`: the names, then the text wrapped at 80 columns.
fn item(out: &mut String, left: &str, text: &str) {
    const INDENT: usize = 28;
    let mut line = format!("  {left}");
    if line.len() + 2 > INDENT {
        out.push_str(&line);
        out.push('\n');
        line.clear();
    }
    for word in text.split(' ') {
        if line.len() > INDENT && line.len() + 1 + word.len() > 80 {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if line.len() < INDENT {
            line.push_str(&" ".repeat(INDENT - line.len()));
        } else if line.len() > INDENT {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Restart;
    use crate::listen::{Addr, Layout};
    use crate::log::Format;
    use std::time::Duration;

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

    #[test]
    fn argv_forms() {
        // --name=VALUE, short options, a command without `--` (greedy).
        let c = run("--kill-timeout=2s -i 3 -l=80 node app.js -v --x", &[]);
        assert_eq!(
            c.expect_err("-l=80 is not an option"),
            format!("Unrecognized argument: -l=80 ({USAGE})")
        );
        let c = run(
            "--kill-timeout=2s -i 3 --listen=80 -l 81 node app.js -v --x",
            &[],
        )
        .expect("valid");
        assert_eq!(c.settings.kill_timeout, Duration::from_secs(2));
        assert_eq!(c.settings.instances, 3);
        assert_eq!(c.listen, vec![Addr::AnyPort(80), Addr::AnyPort(81)]);
        assert_eq!(c.command, ["node", "app.js", "-v", "--x"]);
        assert!(!c.verbose, "-v after the command is the command's");
        let c = run("-i -1 -- -x", &[]).expect("valid");
        assert_eq!(
            (c.settings.instances, c.command),
            (1, vec!["-x".to_string()])
        );
        // argh's wording, kept.
        let table: &[Case] = &[
            (
                "--kill-timeout 1 --kill-timeout 2 -- x",
                &[],
                &["'--kill-timeout'", "duplicate values"],
            ),
            (
                "--help -i 2",
                &[],
                &["Trailing arguments are not allowed after `help`"],
            ),
            ("--verbose=yes -- x", &[], &["'--verbose' takes no value"]),
            ("-x -- x", &[], &["Unrecognized argument: -x", "usage"]),
            (
                "-- x",
                &[("PMINIT_ENV", "prod")],
                &["--env (PMINIT_ENV) needs --config FILE"],
            ),
        ];
        assert_rejected(table);
        assert!(run("-i 2 help", &[])
            .expect_err("prints")
            .starts_with("PRINT Usage"));
    }

    /// --help lists every option of the table with its help and default.
    #[test]
    fn help_lists_the_table() {
        let help = super::help();
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for o in OPTIONS {
            assert!(help.contains(o.long), "{}", o.long);
            let text = match o.default {
                Some(d) => format!("{} (default {d})", o.help),
                None => o.help.to_string(),
            };
            assert!(flat.contains(&text), "{}: {text}", o.long);
        }
        assert!(help.lines().all(|l| l.len() <= 80), "{help}");
    }
}
