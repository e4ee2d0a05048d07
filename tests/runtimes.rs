//! Bun and Deno workers on the real binaries (scripts/test.sh installs
//! them pinned from npm into target/bun and target/deno): N workers answer
//! on one port, a rolling reload under load, TERM ends in exit 0.
//!
//! Each test runs in a fresh network namespace of its own thread (root),
//! with `net.ipv4.tcp_migrate_req` at the kernel's default 0: the workers
//! bind `$PORT` themselves with SO_REUSEPORT, so pminit turns it on
//! (docs/runtimes.md), or, where /proc/sys is read-only as in a container,
//! says how to.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

fn binary(test: &str, rel: &[&str], what: &str) -> Option<PathBuf> {
    let mut p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "target"].iter().collect();
    p.extend(rel);
    require(p.is_file(), test, what).then_some(p)
}

fn bun(test: &str) -> Option<PathBuf> {
    binary(
        test,
        &[
            "bun",
            "node_modules",
            "@oven",
            "bun-linux-x64",
            "bin",
            "bun",
        ],
        "Bun in target/bun (scripts/test.sh installs @oven/bun-linux-x64)",
    )
}

fn deno(test: &str) -> Option<PathBuf> {
    binary(
        test,
        &["deno", "node_modules", "@deno", "linux-x64-glibc", "deno"],
        "Deno in target/deno (scripts/test.sh installs @deno/linux-x64-glibc)",
    )
}

fn app_dir() -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "tests", "runtime-app"]
        .iter()
        .collect()
}

const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// `tcp_migrate_req` in the calling thread's network namespace.
fn migrate_req() -> String {
    std::fs::read_to_string(MIGRATE_REQ)
        .expect("read tcp_migrate_req")
        .trim()
        .to_string()
}

/// /proc/sys as pminit finds it.
#[derive(Clone, Copy)]
enum ProcSys {
    /// Writable, as for root on a host or in a privileged container.
    Writable,
    /// Read-only, as Docker and Kubernetes mount it in a container.
    ReadOnly,
}

/// Runs `body` in a thread with a fresh network namespace (loopback up,
/// `tcp_migrate_req` at the kernel's default 0) and, for `ReadOnly`, a
/// mount namespace where /proc/sys is read-only: pminit, its workers and
/// the load all start from that thread. False when not root (a loud skip).
fn in_netns(test: &str, proc_sys: ProcSys, body: impl FnOnce() + Send + 'static) -> bool {
    if !require(is_root(), test, "root for a network namespace") {
        return false;
    }
    let done = std::thread::spawn(move || {
        // SAFETY: unshare has no memory-safety preconditions; CLONE_NEWNET
        // moves only the calling thread.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare: {}", std::io::Error::last_os_error());
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(up, "ip link set lo up");
        // /proc/sys/net is the opening thread's namespace. A new namespace
        // starts at 0; written anyway so the test does not rest on that.
        std::fs::write(MIGRATE_REQ, "0").expect("write tcp_migrate_req");
        if let ProcSys::ReadOnly = proc_sys {
            proc_sys_read_only();
        }
        body();
    })
    .join();
    if let Err(e) = done {
        std::panic::resume_unwind(e);
    }
    true
}

/// Gives the calling thread a mount namespace of its own where /proc/sys
/// is read-only (what a container gets), nothing propagating out.
fn proc_sys_read_only() {
    let mount = |src: Option<&std::ffi::CStr>, dst: &std::ffi::CStr, flags: libc::c_ulong| {
        // SAFETY: the strings are NUL-terminated and outlive the call; a
        // null source, type and data are what a remount and a propagation
        // change take.
        let r = unsafe {
            libc::mount(
                src.map_or(std::ptr::null(), |s| s.as_ptr()),
                dst.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "mount {dst:?}: {}", std::io::Error::last_os_error());
    };
    // SAFETY: unshare has no memory-safety preconditions; CLONE_NEWNS
    // (with the CLONE_FS it implies) moves only the calling thread.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    assert_eq!(r, 0, "unshare: {}", std::io::Error::last_os_error());
    mount(None, c"/", libc::MS_REC | libc::MS_PRIVATE);
    mount(Some(c"/proc/sys"), c"/proc/sys", libc::MS_BIND);
    mount(
        None,
        c"/proc/sys",
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
    );
    let write = std::fs::write(MIGRATE_REQ, "1").expect_err("/proc/sys is read-only");
    assert_eq!(write.raw_os_error(), Some(libc::EROFS), "{write}");
}

fn start(port: u16, command: &[String], extra: &[&str]) -> Run {
    let mut args: Vec<&str> = extra.to_vec();
    args.push("--");
    args.extend(command.iter().map(String::as_str));
    Run::start_with(
        Mode::Subreaper,
        &args,
        Options {
            cwd: Some(app_dir()),
            env: vec![("PORT".into(), port.to_string())],
            ..Options::default()
        },
    )
}

/// The pids that answered `n` requests, each on a new connection.
fn answering_pids(port: u16, n: usize) -> std::collections::BTreeSet<i32> {
    (0..n)
        .map(|_| http_get(port).expect("a worker answers"))
        .filter_map(|body| body.trim().strip_prefix("pid=")?.parse().ok())
        .collect()
}

/// `-i 2`: both workers answer on the one port; 3 reloads under
/// closed-loop load (a new connection per request, or keep-alive); TERM:
/// exit 0. Returns the load's report.
fn two_workers_reload_and_stop(
    command: impl FnOnce(u16) -> Vec<String>,
    keep_alive: bool,
) -> LoadReport {
    let port = free_port();
    let mut run = start(port, &command(port), &["-i", "2"]);
    // Logged before the first worker starts.
    run.expect_err("set net.ipv4.tcp_migrate_req=1 (was 0)");
    run.expect_ready(2);
    assert_eq!(migrate_req(), "1", "pminit turned it on");
    let pids = answering_pids(port, 100);
    assert_eq!(pids.len(), 2, "both workers answer: {pids:?}");
    let load = Load::start(port, 4, keep_alive);
    for generation in 1..=3 {
        run.signal(libc::SIGHUP);
        run.expect_err(&format!("reload to generation {generation} finished"));
    }
    // The old workers' drains end under the load (keep-alive clients move
    // to new workers on the way), each with exit 0.
    run.expect_count(
        "an old worker exited",
        6,
        |l| matches!(l, Line::Err(s) if s.contains(") exited ")),
    );
    let report = load.finish();
    let exits: Vec<String> = run
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains(") exited "))
        .collect();
    assert!(
        exits.iter().all(|l| l.contains("exited with code 0")),
        "{exits:#?}"
    );
    assert!(report.ok > 200, "too little load: {}", report.ok);
    assert!(
        report.pids.len() > 2,
        "new workers answered: {:?}",
        report.pids
    );
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    assert!(
        !run.transcript().contains("SIGKILL to"),
        "{}",
        run.transcript()
    );
    report
}

fn zero_failed(test: &'static str, command: Vec<String>, keep_alive: bool) {
    zero_failed_on(test, move |_| command, keep_alive);
}

/// zero_failed for a command that names the port itself.
fn zero_failed_on(
    test: &'static str,
    command: impl FnOnce(u16) -> Vec<String> + Send + 'static,
    keep_alive: bool,
) {
    in_netns(test, ProcSys::Writable, move || {
        let report = two_workers_reload_and_stop(command, keep_alive);
        assert_eq!(report.failures, Vec::<String>::new(), "{} ok", report.ok);
        eprintln!(
            "{test}: {} requests ({}), 0 failed, {} workers answered",
            report.ok,
            if keep_alive {
                "keep-alive"
            } else {
                "a new connection each"
            },
            report.pids.len()
        );
    });
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn bun_serve_two_workers_one_port_reload_zero_failed_stop_exits_0() {
    let test = "bun_serve_two_workers";
    let Some(bun) = bun(test) else { return };
    zero_failed(test, s(&[&bun.to_string_lossy(), "bun_serve.js"]), false);
}

/// `export default { fetch }` in a TypeScript file, which Bun serves by
/// itself: the same reloads, on new connections and on keep-alive.
#[test]
fn bun_default_export_two_workers_reload_zero_failed_stop_exits_0() {
    let test = "bun_default_export";
    let Some(bun) = bun(test) else { return };
    for keep_alive in [false, true] {
        zero_failed(
            test,
            s(&[&bun.to_string_lossy(), "bun_export.ts"]),
            keep_alive,
        );
    }
}

#[test]
fn bun_node_http_two_workers_one_port_reload_zero_failed_stop_exits_0() {
    let test = "bun_node_http_two_workers";
    let Some(bun) = bun(test) else { return };
    zero_failed(test, s(&[&bun.to_string_lossy(), "node_http.mjs"]), false);
}

#[test]
fn bun_serve_keep_alive_reload_zero_failed_stop_exits_0() {
    let test = "bun_serve_keep_alive";
    let Some(bun) = bun(test) else { return };
    zero_failed(test, s(&[&bun.to_string_lossy(), "bun_serve.js"]), true);
}

#[test]
fn bun_node_http_keep_alive_reload_zero_failed_stop_exits_0() {
    let test = "bun_node_http_keep_alive";
    let Some(bun) = bun(test) else { return };
    zero_failed(test, s(&[&bun.to_string_lossy(), "node_http.mjs"]), true);
}

#[test]
fn deno_node_http_keep_alive_reload_zero_failed_stop_exits_0() {
    let test = "deno_node_http_keep_alive";
    let Some(deno) = deno(test) else { return };
    zero_failed(
        test,
        s(&[&deno.to_string_lossy(), "run", "-A", "node_http.mjs"]),
        true,
    );
}

#[test]
fn deno_node_http_two_workers_one_port_reload_zero_failed_stop_exits_0() {
    let test = "deno_node_http_two_workers";
    let Some(deno) = deno(test) else { return };
    zero_failed(
        test,
        s(&[&deno.to_string_lossy(), "run", "-A", "node_http.mjs"]),
        false,
    );
}

/// Deno.serve: the preload serves each connection itself
/// (src/runtime_preload.mjs), because Deno.serve's own shutdown closes the
/// connections it has accepted but not read a request from yet.
#[test]
fn deno_serve_two_workers_one_port_reload_zero_failed_stop_exits_0() {
    let test = "deno_serve_two_workers";
    let Some(deno) = deno(test) else { return };
    zero_failed(
        test,
        s(&[&deno.to_string_lossy(), "run", "-A", "deno_serve.ts"]),
        false,
    );
}

/// Keep-alive clients through the same reloads: while a worker drains,
/// its answers carry `Connection: close`, and a connection is ended only
/// once it is quiet. (An async handler that reads the request.)
#[test]
fn deno_serve_keep_alive_reload_zero_failed_stop_exits_0() {
    let test = "deno_serve_keep_alive";
    let Some(deno) = deno(test) else { return };
    zero_failed(
        test,
        s(&[&deno.to_string_lossy(), "run", "-A", "deno_serve_async.ts"]),
        true,
    );
}

/// `deno serve --port N` (which runs no preload): pminit runs the script
/// with `deno run` and DENO_AUTO_SERVE, with only the network permission
/// `deno serve` grants; the same reloads on new connections and on
/// keep-alive fail nothing.
#[test]
fn deno_serve_command_two_workers_reload_zero_failed_stop_exits_0() {
    let test = "deno_serve_command";
    let Some(deno) = deno(test) else { return };
    for keep_alive in [false, true] {
        let deno = deno.clone();
        zero_failed_on(
            test,
            move |port| {
                s(&[
                    &deno.to_string_lossy(),
                    "serve",
                    "--port",
                    &port.to_string(),
                    "deno_serve_export.ts",
                ])
            },
            keep_alive,
        );
    }
}

/// `deno serve --host 127.0.0.1`: the workers listen there, and pminit
/// says once how it runs them.
#[test]
fn deno_serve_command_keeps_its_host() {
    let test = "deno_serve_host";
    let Some(deno) = deno(test) else { return };
    in_netns(test, ProcSys::Writable, move || {
        let port = free_port();
        let command = s(&[
            &deno.to_string_lossy(),
            "serve",
            &format!("--port={port}"),
            "--host",
            "127.0.0.1",
            "--parallel",
            "deno_serve_export.ts",
        ]);
        let mut run = start(port, &command, &["-i", "2"]);
        let line = run.expect_err("deno serve runs no preload");
        assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
        assert!(line.contains("--parallel dropped"), "{line}");
        run.expect_ready(2);
        assert_eq!(answering_pids(port, 100).len(), 2, "both workers answer");
        let listening = std::fs::read_to_string("/proc/thread-self/net/tcp").expect("tcp table");
        let on = format!("0100007F:{port:04X} 00000000:0000 0A");
        assert_eq!(
            listening.matches(&on).count(),
            2,
            "two listeners on 127.0.0.1"
        );
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    });
}

/// Where pminit cannot set `tcp_migrate_req` (a container's read-only
/// /proc/sys), one warning names the fix, and the workers run, reload and
/// stop as before.
#[test]
fn where_tcp_migrate_req_cannot_be_set_pminit_says_how_and_runs() {
    let test = "tcp_migrate_req_read_only";
    let Some(bun) = bun(test) else { return };
    in_netns(test, ProcSys::ReadOnly, move || {
        let port = free_port();
        let command = s(&[&bun.to_string_lossy(), "bun_serve.js"]);
        let mut run = start(port, &command, &["-i", "2"]);
        let warning = run.expect_err("docker run --sysctl net.ipv4.tcp_migrate_req=1");
        assert!(warning.contains("Read-only file system"), "{warning}");
        assert!(warning.contains("securityContext.sysctls"), "{warning}");
        run.expect_ready(2);
        assert_eq!(migrate_req(), "0");
        assert_eq!(answering_pids(port, 100).len(), 2, "both workers answer");
        run.signal(libc::SIGHUP);
        run.expect_err("reload to generation 1 finished");
        assert!(http_get(port).is_ok(), "a new worker answers");
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
        let lines = run.stderr_lines();
        let warnings = lines
            .iter()
            .filter(|l| l.contains("tcp_migrate_req"))
            .count();
        assert_eq!(warnings, 1, "one line:\n{}", run.transcript());
    });
}

#[test]
fn deno_wait_ready_hears_process_send_ready() {
    let test = "deno_wait_ready";
    let Some(deno) = deno(test) else { return };
    let dir = std::env::temp_dir().join(format!("pminit-deno-ready-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let app = dir.join("ready.mjs");
    std::fs::write(
        &app,
        "import process from 'node:process';\nsetTimeout(() => process.send('ready'), 50);\nsetInterval(() => {}, 1000);\n",
    )
    .expect("write");
    let mut run = Run::start(
        Mode::Subreaper,
        &[
            "--wait-ready",
            "--",
            &deno.to_string_lossy(),
            "run",
            &app.to_string_lossy(),
        ],
    );
    run.expect_ready(1);
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    let _ = std::fs::remove_dir_all(&dir);
}
