//! Bun and Deno workers: recognising them, and the preload that lets N of
//! them serve one port (src/runtime_preload.mjs).
//!
//! Neither runtime's own server takes a listening fd (`Bun.serve` and
//! `Deno.serve` bind their own socket; Bun's `node:http` is `Bun.serve`),
//! and Bun cannot receive a handle over IPC, so pminit does not bind
//! `$PORT` for them: each worker binds it with `SO_REUSEPORT` (the preload
//! adds `reusePort: true`), and pminit holds no socket in that group, so
//! no connection ever waits in a queue nobody accepts from. The cost: a
//! worker's socket closes with it, and the connections queued on it are
//! reset unless the kernel migrates them (`net.ipv4.tcp_migrate_req=1`,
//! per network namespace), so pminit turns that on at start when it is off
//! (one line says so), or says once how to (read-only /proc/sys in a
//! container, not root). Never for Node workers: they share pminit's
//! sockets, whose queues outlive any worker.
//!
//! Bun gets the preload through `BUN_OPTIONS` (the user's own kept first),
//! Deno through `--preload` (and `--unstable-net`, which `Deno.serve`'s
//! `reusePort` needs) inserted after `deno run`. Both open Node's IPC
//! channel from `NODE_CHANNEL_FD`, so readiness and `process.send('ready')`
//! work as for Node.

use std::path::Path;

/// A JavaScript runtime other than Node that pminit knows how to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Js {
    Bun,
    Deno,
}

impl Js {
    pub fn name(self) -> &'static str {
        match self {
            Js::Bun => "Bun",
            Js::Deno => "Deno",
        }
    }
}

const PRELOAD: &str = include_str!(concat!(env!("OUT_DIR"), "/runtime_preload.mjs"));
/// The preload's name in stack traces.
const PRELOAD_NAME: &str = "pminit:runtime-preload";
/// Where the kernel's switch for migrating a closed listener's queue lives.
const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// The runtime of a command by its name: `bun`, `deno`.
pub fn by_name(argv0: &str) -> Option<Js> {
    match argv0.rsplit('/').next().unwrap_or(argv0) {
        "bun" => Some(Js::Bun),
        "deno" => Some(Js::Deno),
        _ => None,
    }
}

/// The runtime of a script by its `#!` line (`#!/usr/bin/env bun`,
/// `#!/usr/bin/env -S deno run -A`).
pub fn by_shebang(head: &[u8]) -> Option<Js> {
    crate::node::shebang_interpreter(head).and_then(|name| by_name(&name))
}

/// The runtime of the command `argv0` resolved to `path`.
pub fn detect(argv0: &str, path: &Path) -> Option<Js> {
    by_name(argv0).or_else(|| by_shebang(&crate::spawn::script_head(path)))
}

/// The preload as a data: URL, with pminit's settings in its first line;
/// `serve`: the workers run `deno serve`, on this host (`--host`), whose
/// `Deno.serve` call names no port or host (the preload fills them in).
pub fn preload_url(port: u16, stop_signal: &str, serve: Option<&DenoServe>) -> String {
    let mut settings = serde_json::json!({ "port": port, "stopSignal": stop_signal });
    if let Some(s) = serve {
        settings["serve"] = true.into();
        settings["host"] = s.host.clone().into();
    }
    let source = format!("const PMINIT = {settings};\n{PRELOAD}\n//# sourceURL={PRELOAD_NAME}\n");
    format!(
        "data:text/javascript;base64,{}",
        crate::node::base64(source.as_bytes())
    )
}

/// Bun: the `BUN_OPTIONS` a worker gets, the user's own first.
pub fn bun_options(existing: Option<&str>, url: &str) -> String {
    let preload = format!("--preload={url}");
    match existing.map(str::trim).filter(|s| !s.is_empty()) {
        Some(user) => format!("{user} {preload}"),
        None => preload,
    }
}

/// `deno serve [OPTIONS] SCRIPT [ARGS]` as pminit runs it.
///
/// `deno serve` runs no `--preload` (checked on Deno 2.9.6: the module is
/// never evaluated), so pminit runs the same script with `deno run` and
/// `DENO_AUTO_SERVE=1` in its environment, which makes Deno serve the
/// module's `export default { fetch }` exactly as `deno serve` does (the
/// declarative server of `ext/http/00_serve.ts`, the same `Deno.serve`
/// call, the same SIGTERM/SIGINT shutdown), and the preload applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenoServe {
    /// `--port`, else 8000 (`deno serve`'s default; it ignores `$PORT`).
    pub port: u16,
    /// `--host`, else 0.0.0.0.
    pub host: String,
    /// The `deno run` command line, without `--port`, `--host`,
    /// `--parallel` and `--open`, with the network permission `deno serve`
    /// grants by itself.
    pub argv: Vec<String>,
    /// Options dropped, for the log.
    pub dropped: Vec<String>,
}

/// The options of `deno serve` (and `deno run`) that take their value as
/// the next argument; every other one is a switch or takes `=value`
/// (Deno's `libs/cli_parser/src/defs.rs`).
const DENO_VALUE_OPTIONS: &[&str] = &[
    "--port",
    "--host",
    "-c",
    "--config",
    "--import-map",
    "--location",
    "--seed",
    "--cert",
    "--ext",
    "--preload",
    "--import",
    "--require",
    "--conditions",
    "--cpu-prof-dir",
    "--cpu-prof-interval",
    "--cpu-prof-name",
    "-L",
    "--log-level",
    "--min-dep-age",
];

/// `deno serve ...` read: None when `argv` is not `deno serve`, an error
/// for a port that is not one.
pub fn deno_serve(argv: &[String]) -> Option<Result<DenoServe, String>> {
    if argv.get(1).map(String::as_str) != Some("serve") {
        return None;
    }
    let (mut port, mut host) = (None, None);
    let (mut kept, mut dropped) = (vec![argv[0].clone(), "run".to_string()], Vec::new());
    let mut net = None::<usize>;
    let mut i = 2;
    while i < argv.len() && argv[i].starts_with('-') && argv[i] != "-" {
        let a = &argv[i];
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let takes_next = inline.is_none() && DENO_VALUE_OPTIONS.contains(&name);
        let value = inline.or_else(|| takes_next.then(|| argv.get(i + 1).cloned()).flatten());
        i += if takes_next { 2 } else { 1 };
        match name {
            "--port" => port = value,
            "--host" => host = value,
            "--parallel" | "--open" => dropped.push(name.to_string()),
            _ => {
                if matches!(name, "-A" | "--allow-all" | "-N" | "--allow-net") {
                    net = Some(if value.is_some() {
                        kept.len()
                    } else {
                        usize::MAX
                    });
                }
                kept.push(a.clone());
                if takes_next {
                    kept.extend(value);
                }
            }
        }
    }
    let port = match port {
        None => 8000,
        Some(p) => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) => return Some(Err(format!("deno serve --port {p}: not a port (0-65535)"))),
        },
    };
    let host = host.unwrap_or_else(|| "0.0.0.0".to_string());
    // What `deno serve` grants by itself: the address it listens on.
    let address = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    match net {
        Some(usize::MAX) => {}
        Some(at) => kept[at] = format!("{},{address}", kept[at]),
        None => kept.push(format!("--allow-net={address}")),
    }
    kept.extend_from_slice(&argv[i..]);
    Some(Ok(DenoServe {
        port,
        host,
        argv: kept,
        dropped,
    }))
}

/// Deno: the command line with the preload, or why it gets none. It goes
/// right after `run` (`deno run -A main.ts`) or after `deno` itself when
/// the script comes first (`deno main.ts`, Deno 2); other subcommands
/// (`deno task`) are left alone; `deno serve` is made `deno run` first
/// (deno_serve).
pub fn deno_argv(argv: &[String], url: &str) -> Result<Vec<String>, String> {
    let at = match argv.get(1).map(String::as_str) {
        Some("run") => 2,
        Some(w) if w.starts_with('-') || w.contains('.') || w.contains('/') => 1,
        Some(other) => {
            return Err(format!(
                "deno {other}: only `deno run` (or `deno SCRIPT`) gets pminit's preload; the workers bind $PORT themselves"
            ))
        }
        None => return Err("deno without a script".into()),
    };
    let mut out = argv[..at].to_vec();
    out.push(format!("--preload={url}"));
    if !argv
        .iter()
        .any(|a| a == "--unstable-net" || a == "--unstable")
    {
        out.push("--unstable-net".into());
    }
    out.extend_from_slice(&argv[at..]);
    Ok(out)
}

/// What pminit found and did about `net.ipv4.tcp_migrate_req` at start.
#[derive(Debug)]
pub enum Migrate {
    /// It was 1 already: nothing written.
    AlreadyOn,
    /// It was `was`; pminit wrote 1.
    TurnedOn { was: String },
    /// This kernel has no such switch (Linux before 5.14).
    Missing,
    /// It is off (or unreadable) and pminit could not write it.
    Failed(std::io::Error),
}

/// Turns the kernel's migration of a closed listener's queue on in this
/// network namespace (a per-namespace switch: in a container, the
/// container's own) when it is off. Left on at exit: see `migrate_line`.
pub fn turn_on_migrate(path: &Path) -> Migrate {
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == "1" => Migrate::AlreadyOn,
        Ok(v) => match std::fs::write(path, "1") {
            Ok(()) => Migrate::TurnedOn {
                was: v.trim().to_string(),
            },
            Err(e) => Migrate::Failed(e),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Migrate::Missing,
        Err(e) => Migrate::Failed(e),
    }
}

/// The one line for the log about `migrate`, if any.
pub fn migrate_line(js: Js, migrate: &Migrate) -> Option<Line> {
    let who = format!(
        "{} workers bind $PORT themselves (SO_REUSEPORT), and a worker that stops closes its socket",
        js.name()
    );
    match migrate {
        Migrate::AlreadyOn => None,
        Migrate::TurnedOn { was } => Some(Line::Info {
            event: "tcp_migrate_req_set",
            message: format!(
                "set net.ipv4.tcp_migrate_req=1 (was {was}) in this network namespace: {who}; with 1 the kernel moves the connections queued on it to another worker's socket instead of resetting them (left at 1 at exit)"
            ),
        }),
        Migrate::Missing => Some(Line::Warn(format!(
            "this kernel has no net.ipv4.tcp_migrate_req (Linux < 5.14): {who}, which resets the connections queued on it"
        ))),
        Migrate::Failed(e) => Some(Line::Warn(format!(
            "net.ipv4.tcp_migrate_req is not 1 and pminit cannot set it ({e}): {who}, which resets the connections queued on it; set it for the container: docker run --sysctl net.ipv4.tcp_migrate_req=1, Kubernetes: the pod's securityContext.sysctls (the kubelet must allow it: --allowed-unsafe-sysctls=net.ipv4.tcp_migrate_req)"
        ))),
    }
}

/// A line for pminit's log from setting the workers up.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A fact (`event` names it in the JSON log).
    Info {
        event: &'static str,
        message: String,
    },
    /// Something that will cost the user, and how to fix it.
    Warn(String),
}

impl Line {
    pub fn log(&self) {
        match self {
            Line::Info { event, message } => crate::log::info(event, message),
            Line::Warn(message) => crate::log::warn(message),
        }
    }
}

/// What Bun and Deno workers get besides the command (src/spawn.rs).
pub struct Workers {
    /// Set in each worker's environment (Bun: `BUN_OPTIONS`).
    pub env: Vec<(String, String)>,
    /// The preload tells pminit when a server listens on `$PORT`.
    pub reports_listening: bool,
}

/// Sets Bun or Deno workers up for `$PORT`, once at start: the preload
/// (Deno's in `program`'s arguments) when `preload` (the preload is on and
/// no `--listen` was given) and `$PORT` is a port, and then
/// `tcp_migrate_req` on. Also returns lines for the log.
pub fn prepare(
    js: Js,
    program: &mut crate::spawn::Program,
    preload: bool,
    stop_signal: &str,
) -> (Option<Workers>, Vec<Line>) {
    if !preload {
        return (None, Vec::new());
    }
    let serve = match (js == Js::Deno)
        .then(|| deno_serve(&program.args()))
        .flatten()
    {
        Some(Ok(s)) => Some(s),
        Some(Err(why)) => return (None, vec![Line::Warn(why)]),
        None => None,
    };
    let port = match &serve {
        Some(s) => Some(s.port),
        None => std::env::var("PORT")
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok()),
    };
    let Some(port) = port.filter(|&p| p > 0) else {
        return (None, Vec::new());
    };
    let url = preload_url(port, stop_signal, serve.as_ref());
    let mut lines = Vec::new();
    let env = match js {
        Js::Bun => {
            let user = std::env::var("BUN_OPTIONS").ok();
            vec![(
                "BUN_OPTIONS".to_string(),
                bun_options(user.as_deref(), &url),
            )]
        }
        Js::Deno => match deno_argv(serve.as_ref().map_or(&program.args(), |s| &s.argv), &url) {
            Ok(argv) => match program.set_args(&argv) {
                Ok(()) => match &serve {
                    Some(s) => {
                        lines.push(Line::Info {
                            event: "deno_serve",
                            message: format!(
                                "deno serve runs no preload: each worker runs `deno run` with DENO_AUTO_SERVE=1, which serves the module's default export on {}:{} as deno serve does{}",
                                s.host,
                                s.port,
                                if s.dropped.is_empty() {
                                    String::new()
                                } else {
                                    format!(" ({} dropped: pminit runs the workers)", s.dropped.join(" "))
                                }
                            ),
                        });
                        vec![("DENO_AUTO_SERVE".to_string(), "1".to_string())]
                    }
                    None => Vec::new(),
                },
                Err(e) => return (None, vec![Line::Warn(format!("no preload for Deno: {e}"))]),
            },
            Err(why) => return (None, vec![Line::Warn(why)]),
        },
    };
    let migrate = turn_on_migrate(Path::new(MIGRATE_REQ));
    (
        Some(Workers {
            env,
            reports_listening: true,
        }),
        lines
            .into_iter()
            .chain(migrate_line(js, &migrate))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn runtimes_by_name_and_shebang() {
        assert_eq!(by_name("bun"), Some(Js::Bun));
        assert_eq!(by_name("/root/.bun/bin/bun"), Some(Js::Bun));
        assert_eq!(by_name("deno"), Some(Js::Deno));
        for no in ["node", "bunx", "denon", "sh", ""] {
            assert_eq!(by_name(no), None, "{no}");
        }
        assert_eq!(by_shebang(b"#!/usr/bin/env bun\n"), Some(Js::Bun));
        assert_eq!(
            by_shebang(b"#!/usr/bin/env -S deno run -A\n"),
            Some(Js::Deno)
        );
        assert_eq!(by_shebang(b"#!/usr/local/bin/deno run\n"), Some(Js::Deno));
        assert_eq!(by_shebang(b"#!/usr/bin/env node\n"), None);
        assert_eq!(by_shebang(b"\x7fELF"), None);
    }

    #[test]
    fn deno_gets_the_preload_after_run() {
        let url = "data:x";
        assert_eq!(
            deno_argv(&strings(&["deno", "run", "-A", "main.ts"]), url).expect("run"),
            strings(&[
                "deno",
                "run",
                "--preload=data:x",
                "--unstable-net",
                "-A",
                "main.ts"
            ])
        );
        assert_eq!(
            deno_argv(&strings(&["deno", "main.ts"]), url).expect("bare script"),
            strings(&["deno", "--preload=data:x", "--unstable-net", "main.ts"])
        );
        assert_eq!(
            deno_argv(
                &strings(&["deno", "run", "--unstable-net", "-A", "m.ts"]),
                url
            )
            .expect("flag once"),
            strings(&[
                "deno",
                "run",
                "--preload=data:x",
                "--unstable-net",
                "-A",
                "m.ts"
            ])
        );
        assert!(deno_argv(&strings(&["deno", "task", "start"]), url).is_err());
        assert!(deno_argv(&strings(&["deno"]), url).is_err());
    }

    #[test]
    fn deno_serve_becomes_deno_run_with_its_address_and_permission() {
        let serve = |v: &[&str]| deno_serve(&strings(v)).expect("serve").expect("valid");
        assert_eq!(deno_serve(&strings(&["deno", "run", "main.ts"])), None);
        assert_eq!(deno_serve(&strings(&["deno", "main.ts"])), None);
        // Defaults: 0.0.0.0:8000, and the permission deno serve grants.
        let s = serve(&["deno", "serve", "main.ts"]);
        assert_eq!((s.port, s.host.as_str()), (8000, "0.0.0.0"));
        assert_eq!(
            s.argv,
            strings(&["deno", "run", "--allow-net=0.0.0.0:8000", "main.ts"])
        );
        // --port and --host in both forms; their values never taken for
        // the script; the app's own arguments after the script kept as
        // they are, --port included.
        let s = serve(&[
            "/usr/bin/deno",
            "serve",
            "--port",
            "3000",
            "--host=127.0.0.1",
            "-c",
            "deno.json",
            "--parallel",
            "--env-file=.env",
            "main.ts",
            "--port",
            "9",
            "x",
        ]);
        assert_eq!((s.port, s.host.as_str()), (3000, "127.0.0.1"));
        assert_eq!(
            s.argv,
            strings(&[
                "/usr/bin/deno",
                "run",
                "-c",
                "deno.json",
                "--env-file=.env",
                "--allow-net=127.0.0.1:3000",
                "main.ts",
                "--port",
                "9",
                "x"
            ])
        );
        assert_eq!(s.dropped, strings(&["--parallel"]));
        // Every network permission already given: nothing added; a list:
        // the address joins it.
        for all in ["-A", "--allow-all", "-N", "--allow-net"] {
            let s = serve(&["deno", "serve", all, "--port=80", "m.ts"]);
            assert_eq!(s.argv, strings(&["deno", "run", all, "m.ts"]), "{all}");
        }
        let s = serve(&[
            "deno",
            "serve",
            "--allow-net=db:5432",
            "--host",
            "::1",
            "m.ts",
        ]);
        assert_eq!(
            s.argv,
            strings(&["deno", "run", "--allow-net=db:5432,[::1]:8000", "m.ts"])
        );
        // And then the preload goes after `run`, as for any deno run.
        assert_eq!(
            deno_argv(&s.argv, "data:x").expect("run"),
            strings(&[
                "deno",
                "run",
                "--preload=data:x",
                "--unstable-net",
                "--allow-net=db:5432,[::1]:8000",
                "m.ts"
            ])
        );
        let bad = deno_serve(&strings(&["deno", "serve", "--port", "http", "m.ts"]));
        assert!(bad.expect("serve").unwrap_err().contains("--port http"));
    }

    #[test]
    fn bun_options_keep_the_users_own() {
        assert_eq!(bun_options(None, "data:x"), "--preload=data:x");
        assert_eq!(bun_options(Some(" "), "data:x"), "--preload=data:x");
        assert_eq!(
            bun_options(Some("--smol"), "data:x"),
            "--smol --preload=data:x"
        );
    }

    #[test]
    fn the_preload_carries_the_settings_in_its_first_line() {
        let url = preload_url(3000, "SIGINT", None);
        let b64 = url
            .strip_prefix("data:text/javascript;base64,")
            .expect("data url");
        assert!(!b64.contains(' ') && !b64.contains('\n'));
        let source = format!(
            "const PMINIT = {};\n{PRELOAD}\n//# sourceURL={PRELOAD_NAME}\n",
            serde_json::json!({"port": 3000, "stopSignal": "SIGINT"})
        );
        assert_eq!(crate::node::base64(source.as_bytes()), b64);
        assert!(source.starts_with("const PMINIT = {\"port\":3000,\"stopSignal\":\"SIGINT\"};\n"));
    }

    #[test]
    fn tcp_migrate_req_is_turned_on_when_off_and_left_alone_when_on() {
        let dir = std::env::temp_dir().join(format!("pminit-migrate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("tcp_migrate_req");
        std::fs::write(&path, "0\n").expect("write");
        let turned = turn_on_migrate(&path);
        assert!(
            matches!(&turned, Migrate::TurnedOn { was } if was == "0"),
            "{turned:?}"
        );
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "1");
        let Some(Line::Info { event, message }) = migrate_line(Js::Bun, &turned) else {
            panic!("an info line");
        };
        assert_eq!(event, "tcp_migrate_req_set");
        assert!(message.starts_with("set net.ipv4.tcp_migrate_req=1 (was 0)"));
        let again = turn_on_migrate(&path);
        assert!(matches!(again, Migrate::AlreadyOn), "{again:?}");
        assert_eq!(migrate_line(Js::Deno, &again), None);
        let missing = turn_on_migrate(&dir.join("absent"));
        assert!(matches!(missing, Migrate::Missing), "{missing:?}");
        assert!(
            matches!(migrate_line(Js::Deno, &missing), Some(Line::Warn(w)) if w.contains("Linux < 5.14"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_write_names_the_fix() {
        let failed = Migrate::Failed(std::io::Error::from_raw_os_error(libc::EROFS));
        let Some(Line::Warn(w)) = migrate_line(Js::Bun, &failed) else {
            panic!("a warning");
        };
        assert!(
            w.contains("docker run --sysctl net.ipv4.tcp_migrate_req=1"),
            "{w}"
        );
        assert!(w.contains("securityContext.sysctls"), "{w}");
        assert!(w.contains("Read-only file system"), "{w}");
    }
}
