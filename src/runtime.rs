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

/// The preload as a data: URL, with pminit's settings in its first line.
pub fn preload_url(port: u16, stop_signal: &str) -> String {
    let settings = serde_json::json!({ "port": port, "stopSignal": stop_signal });
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

/// Deno: the command line with the preload, or why it gets none. It goes
/// right after `run` (`deno run -A main.ts`) or after `deno` itself when
/// the script comes first (`deno main.ts`, Deno 2); other subcommands
/// (`deno task`, `deno serve`) are left alone.
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
    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.trim().parse::<u16>().ok())
        .filter(|&p| p > 0);
    let Some(port) = port.filter(|_| preload) else {
        return (None, Vec::new());
    };
    let url = preload_url(port, stop_signal);
    let env = match js {
        Js::Bun => {
            let user = std::env::var("BUN_OPTIONS").ok();
            vec![(
                "BUN_OPTIONS".to_string(),
                bun_options(user.as_deref(), &url),
            )]
        }
        Js::Deno => match deno_argv(&program.args(), &url) {
            Ok(argv) => match program.set_args(&argv) {
                Ok(()) => Vec::new(),
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
        migrate_line(js, &migrate).into_iter().collect(),
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
        let url = preload_url(3000, "SIGINT");
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
