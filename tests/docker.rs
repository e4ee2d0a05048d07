//! End to end on a real Docker engine, with the images the project's own
//! Dockerfiles make (docker/Dockerfile, docker/example/Dockerfile), built on
//! local base images by docker/make-test-images.sh (no registry here).
//!
//! Needs a running dockerd (`dockerd --bridge=none --iptables=false`, as
//! .ci/run starts it); containers use `--network host` or `none`.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

const EXAMPLE: &str = "pminit-example:test";

/// Docker is up and the test images exist (made once per test binary).
fn docker(test: &str) -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let up = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !up {
            return Err("a running Docker engine (dockerd)".into());
        }
        let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "docker", "make-test-images.sh"]
            .iter()
            .collect();
        let out = Command::new(script)
            .output()
            .expect("run make-test-images.sh");
        if !out.status.success() {
            return Err(format!(
                "the test images (docker/make-test-images.sh failed: {})",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    });
    match ready {
        Ok(()) => true,
        Err(what) => require(false, test, what),
    }
}

fn node_app_dir() -> String {
    format!("{}/tests/node-app", env!("CARGO_MANIFEST_DIR"))
}

/// A container run attached (`docker run --rm --name NAME ARGS`): its
/// output is the Run's, its exit code the Run's. Removed when dropped.
struct Container {
    name: String,
    run: Run,
    /// `docker rm -f` when the test ends, however it ends.
    _removal: Removal,
}

fn container(args: &[&str]) -> Container {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "pminit-e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut cmd = Command::new("docker");
    cmd.args(["run", "--rm", "--name", &name]).args(args);
    let run = Run::spawn(Mode::Pid1, cmd, Options::default());
    Container {
        _removal: Removal(name.clone()),
        name,
        run,
    }
}

impl Container {
    /// `docker exec [EXEC_ARGS] NAME ARGS`: (exit code, stdout, stderr).
    fn exec(&self, exec_args: &[&str], args: &[&str]) -> (i32, String, String) {
        let out = Command::new("docker")
            .arg("exec")
            .args(exec_args)
            .arg(&self.name)
            .args(args)
            .output()
            .expect("docker exec");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `docker VERB [ARGS] NAME`, which must succeed.
    fn docker(&self, verb: &str, args: &[&str]) {
        let out = Command::new("docker")
            .arg(verb)
            .args(args)
            .arg(&self.name)
            .output()
            .expect("docker");
        assert!(
            out.status.success(),
            "docker {verb} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The container's PID 1 as the host sees it.
    fn host_pid(&self) -> i32 {
        let out = Command::new("docker")
            .args(["inspect", "--format", "{{.State.Pid}}", &self.name])
            .output()
            .expect("docker inspect");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a pid")
    }

    fn status(&self) -> serde_json::Value {
        let (code, out, err) = self.exec(&[], &["/pminit", "status", "--json"]);
        assert_eq!(code, 0, "status: {out} {err}");
        serde_json::from_str(out.trim()).expect("status json")
    }

    fn ready_workers(&self, n: usize) {
        self.run.expect_ready(n);
    }

    /// A process of the container with pid `pid` in the container's view,
    /// as the host sees it.
    fn host_pid_of(&self, pid: i64) -> i32 {
        host_pid_of(self.host_pid(), pid)
            .unwrap_or_else(|| panic!("no process {pid} in {}", self.name))
    }
}

/// Orphans reparented to pminit are reaped: as PID 1, and as PID 2 under
/// `docker run --init` (Docker's tini), where pminit is a subreaper.
#[test]
fn orphans_are_reaped_as_pid_1_and_under_docker_init() {
    if !docker("orphans_are_reaped") {
        return;
    }
    let mount = format!("{}:/t:ro", node_app_dir());
    for init in [false, true] {
        let mut args = vec!["--network", "none", "-v", &mount, "--entrypoint", "/pminit"];
        if init {
            args.insert(0, "--init");
        }
        args.extend([EXAMPLE, "-v", "--", "node", "/t/orphans.js"]);
        let mut c = container(&args);
        c.run.expect_out("orphans made");
        c.run.expect_count(
            "reaping an orphan",
            3,
            |l| matches!(l, Line::Err(s) if s.contains("reaped orphan")),
        );
        assert_eq!(
            zombies_below(c.host_pid()),
            Vec::<i32>::new(),
            "init={init}"
        );
        let s = c.status();
        if init {
            assert_ne!(s["pid"], 1, "under --init pminit is not PID 1: {s}");
        } else {
            assert_eq!(s["pid"], 1, "{s}");
        }
        c.docker("stop", &["-t", "10"]);
        assert_eq!(c.run.wait_code(), 0, "init={init}: {}", c.run.transcript());
    }
}

/// `docker stop`: SIGTERM to pminit, SIGINT to every worker, each drains
/// and exits; the container exits 0, so Docker never had to SIGKILL it.
#[test]
fn docker_stop_sends_sigint_to_every_worker_and_the_container_exits_0() {
    if !docker("docker_stop_sends_sigint") {
        return;
    }
    let mut c = container(&["--network", "none", EXAMPLE]);
    c.ready_workers(4);
    c.docker("stop", &["-t", "10"]);
    assert_eq!(c.run.wait_code(), 0, "{}", c.run.transcript());
    c.run.expect_count(
        "a worker draining on SIGINT",
        4,
        |l| matches!(l, Line::Out(s) if s.contains("SIGINT, draining")),
    );
    c.run.expect_err("exiting with code 0");
}

/// `docker kill -s HUP`: a rolling reload, three times, under load with
/// new connections and keep-alive: no request fails.
#[test]
fn docker_kill_hup_reloads_with_zero_failed_requests_under_load() {
    if !docker("docker_kill_hup_reloads") {
        return;
    }
    let port = free_port();
    let env = format!("PORT={port}");
    let mut c = container(&["--network", "host", "-e", &env, EXAMPLE]);
    c.ready_workers(4);
    let fresh = Load::start(port, 2, false);
    let kept = Load::start(port, 2, true);
    for generation in 1..=3 {
        c.docker("kill", &["-s", "HUP"]);
        c.run
            .expect_err(&format!("reload to generation {generation} finished"));
    }
    for (what, report) in [
        ("new connections", fresh.finish()),
        ("keep-alive", kept.finish()),
    ] {
        assert_eq!(
            report.failures,
            Vec::<String>::new(),
            "{what}: {} ok",
            report.ok
        );
        assert!(report.ok > 50, "{what}: too little load: {}", report.ok);
    }
    assert_eq!(c.status()["generation"], 3);
    c.docker("stop", &["-t", "10"]);
    assert_eq!(c.run.wait_code(), 0, "{}", c.run.transcript());
}

/// The image's own user (uid 1000) on a read-only root filesystem: it
/// serves, and `docker exec` (same uid) may look and reload.
#[test]
fn read_only_root_and_a_non_root_user() {
    if !docker("read_only_root_and_a_non_root_user") {
        return;
    }
    let port = free_port();
    let env = format!("PORT={port}");
    let mut c = container(&["--network", "host", "--read-only", "-e", &env, EXAMPLE]);
    c.ready_workers(4);
    let body = http_get(port).expect("served");
    assert!(body.contains("hello from worker"), "{body}");
    let s = c.status();
    assert_eq!(s["workers"].as_array().map(Vec::len), Some(4));
    let pminit = c.host_pid();
    assert_eq!(
        status_field(pminit, "Uid").map(|u| u.split_whitespace().all(|x| x == "1000")),
        Some(true)
    );
    let (code, out, err) = c.exec(&[], &["/pminit", "reload"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("reload to generation 1 finished"), "{out}");
    c.docker("stop", &["-t", "10"]);
    assert_eq!(c.run.wait_code(), 0, "{}", c.run.transcript());
}

/// pminit as root binds port 80 and runs the workers as `node` (--user);
/// node may look at them but not reload; root may.
#[test]
fn root_pminit_binds_port_80_and_runs_workers_as_a_user() {
    if !docker("root_pminit_binds_port_80") {
        return;
    }
    let mut c = container(&[
        "--network",
        "none",
        "--read-only",
        "--user",
        "0:0",
        "-e",
        "PORT=80",
        "--entrypoint",
        "/pminit",
        EXAMPLE,
        "-i",
        "2",
        "--user",
        "node",
        "--",
        "node",
        "index.js",
    ]);
    c.ready_workers(2);
    let get = "require('http').get('http://127.0.0.1:80/', r => r.pipe(process.stdout))";
    let (code, body, err) = c.exec(&[], &["node", "-e", get]);
    assert_eq!(code, 0, "{err}");
    assert!(body.contains("hello from worker"), "{body}");
    let pid: i64 = field(&body, "pid").into();
    let worker = c.host_pid_of(pid);
    for (key, want) in [("Uid", "1000"), ("Gid", "1000")] {
        let got = status_field(worker, key).expect(key);
        assert!(got.split_whitespace().all(|x| x == want), "{key} {got}");
    }
    let (code, out, err) = c.exec(&["-u", "1000"], &["/pminit", "status"]);
    assert_eq!(code, 0, "{out} {err}");
    let (code, _, err) = c.exec(&["-u", "1000"], &["/pminit", "reload"]);
    assert_eq!(code, 1);
    assert!(err.contains("refused: only root or uid 0"), "{err}");
    let (code, out, err) = c.exec(&[], &["/pminit", "reload"]);
    assert_eq!(code, 0, "{out} {err}");
    c.docker("stop", &["-t", "10"]);
    assert_eq!(c.run.wait_code(), 0, "{}", c.run.transcript());
}

/// `docker run -it`, driven through a pseudo-terminal: the first worker
/// owns the terminal, Ctrl-C reaches it, and the whole run stops.
#[test]
fn an_interactive_tty_run_stops_on_ctrl_c() {
    if !docker("an_interactive_tty_run") {
        return;
    }
    let name = format!("pminit-e2e-{}-tty", std::process::id());
    let mut cmd = Command::new("docker");
    cmd.args([
        "run",
        "-it",
        "--rm",
        "--name",
        &name,
        "--network",
        "none",
        EXAMPLE,
    ]);
    let mut pty = OnPty::spawn(cmd);
    let _cleanup = Removal(name);
    pty.wait_for("is ready", 4);
    pty.type_keys(b"\x03");
    pty.wait_for("owns the terminal, ended", 1);
    let seen = pty.seen.clone();
    let status = pty.wait();
    // The example app handles SIGINT and exits 0: so does the run.
    assert_eq!(status.code(), Some(0), "saw:\n{seen}");
}

struct Removal(String);

impl Drop for Removal {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The kubelet's termination, simulated: under load, the preStop hook
/// (`/pminit prestop --delay`) by `docker exec` (ready fails, serving goes
/// on), the load moves away (the endpoint is removed), then `docker stop`
/// with the grace; a request in flight at SIGTERM completes. No request
/// fails and the exit code is 0.
#[test]
fn kubelet_termination_prestop_then_docker_stop_loses_nothing() {
    if !docker("kubelet_termination") {
        return;
    }
    let port = free_port();
    let env = format!("PORT={port}");
    let mut c = container(&["--network", "host", "--read-only", "-e", &env, EXAMPLE]);
    c.ready_workers(4);
    let (code, out, _) = c.exec(&[], &["/pminit", "ready"]);
    assert_eq!((code, out.trim()), (0, "ready"));
    let fresh = Load::start(port, 2, false);
    let kept = Load::start(port, 2, true);
    let name = c.name.clone();
    let hook = std::thread::spawn(move || {
        Command::new("docker")
            .args(["exec", &name, "/pminit", "prestop", "--delay", "3s"])
            .output()
            .expect("docker exec prestop")
    });
    // The readiness probe fails while the hook waits; the pod still serves.
    let end = Instant::now() + DEADLINE;
    loop {
        let (code, out, _) = c.exec(&[], &["/pminit", "ready"]);
        if code == 1 {
            assert!(out.contains("prestop"), "{out}");
            break;
        }
        assert!(Instant::now() < end, "ready never failed after prestop");
    }
    let hook = hook.join().expect("hook thread");
    assert!(
        hook.status.success(),
        "{}",
        String::from_utf8_lossy(&hook.stderr)
    );
    // The endpoint is gone from every proxy by now: the load moves away.
    let reports = [fresh.finish(), kept.finish()];
    // One request is still in flight when the kubelet sends SIGTERM.
    let slow = std::thread::spawn(move || http_get_path(port, "/?delay=1500"));
    c.run.expect_out("a request for 1500 ms");
    c.docker("stop", &["-t", "20"]);
    let slow = slow.join().expect("slow request thread");
    assert!(slow.as_ref().is_ok_and(|b| b.contains("hello")), "{slow:?}");
    for r in &reports {
        assert_eq!(r.failures, Vec::<String>::new(), "{} ok", r.ok);
        assert!(r.ok > 20, "too little load: {}", r.ok);
    }
    assert_eq!(c.run.wait_code(), 0, "{}", c.run.transcript());
}
