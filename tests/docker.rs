//! End to end on real container engines, Docker and podman, with the
//! images the project's own Dockerfiles make (docker/Dockerfile,
//! docker/example/Dockerfile), built on local base images by
//! docker/make-test-images.sh (no registry here); podman gets the same
//! images from Docker (`docker save | podman load`, the script's
//! `--podman`).
//!
//! Needs a running dockerd (`dockerd --bridge=none --iptables=false`, as
//! scripts/test.sh starts it) and Debian's podman, rootful (it needs no
//! daemon); containers use `--network host` or `none`. Every test runs on
//! both engines with the same command lines: podman's CLI takes Docker's
//! for everything used here. Where they differ, it is the point of the run:
//! `--init` is Docker's tini on one and catatonit on the other.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

const EXAMPLE: &str = "pminit-example:test";

/// The engines, each with why it cannot run (made ready once per test
/// binary: Docker up, podman up, the test images built and copied).
fn setup() -> &'static [(&'static str, Result<(), String>)] {
    static READY: OnceLock<Vec<(&'static str, Result<(), String>)>> = OnceLock::new();
    READY.get_or_init(|| {
        let up = |engine: &str, format: &str| {
            Command::new(engine)
                .args(["info", "--format", format])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let docker_up = up("docker", "{{.ServerVersion}}");
        let podman_up = up("podman", "{{.Host.OCIRuntime.Name}}");
        if !docker_up {
            let why = "a running Docker engine (dockerd): the test images are built with it";
            return vec![("docker", Err(why.into())), ("podman", Err(why.into()))];
        }
        let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "docker", "make-test-images.sh"]
            .iter()
            .collect();
        let mut cmd = Command::new(script);
        if podman_up {
            cmd.arg("--podman");
        }
        let out = cmd.output().expect("run make-test-images.sh");
        let images = if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "the test images (docker/make-test-images.sh failed: {})",
                String::from_utf8_lossy(&out.stderr)
            ))
        };
        let podman = if podman_up {
            images.clone()
        } else {
            Err("podman (Debian's podman, run as root)".into())
        };
        vec![("docker", images), ("podman", podman)]
    })
}

/// The engines `test` runs on: each that is not ready is a loud skip (a
/// failure under PMINIT_TEST_STRICT).
fn engines(test: &str) -> Vec<&'static str> {
    setup()
        .iter()
        .filter(|(engine, ready)| match ready {
            Ok(()) => true,
            Err(what) => require(false, &format!("{test} on {engine}"), what),
        })
        .map(|(engine, _)| *engine)
        .collect()
}

fn node_app_dir() -> String {
    format!("{}/tests/node-app", env!("CARGO_MANIFEST_DIR"))
}

/// A container run attached (`ENGINE run --rm --name NAME ARGS`): its
/// output is the Run's, its exit code the Run's. Removed when dropped.
struct Container {
    engine: &'static str,
    name: String,
    run: Run,
    /// `ENGINE rm -f` when the test ends, however it ends.
    _removal: Removal,
}

/// What `ENGINE run` needs besides the test's own arguments. podman 4.3
/// sets RLIMIT_NOFILE and RLIMIT_NPROC in every container (to 1048576
/// unless told, even with `--ulimit host`), and raising a limit needs
/// CAP_SYS_RESOURCE, which this CI's sandbox does not give even to root:
/// runc then fails ("error setting rlimit type 7"). So podman gets limits
/// it may set: our own hard limit on open files (what a Docker container
/// inherits) and 4096 processes (conmon itself runs with 32768, the most
/// runc may then set). Nothing a test checks depends on them.
fn run_args(engine: &str) -> Vec<String> {
    if engine != "podman" {
        return Vec::new();
    }
    let mut nofile = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) } == 0;
    let files = if ok {
        nofile.rlim_max.min(1 << 20)
    } else {
        1024
    };
    vec![
        format!("--ulimit=nofile={files}:{files}"),
        "--ulimit=nproc=4096:4096".to_string(),
    ]
}

fn container(engine: &'static str, args: &[&str]) -> Container {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "pminit-e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut cmd = Command::new(engine);
    cmd.args(["run", "--rm", "--name", &name])
        .args(run_args(engine))
        .args(args);
    let run = Run::spawn(Mode::Pid1, cmd, Options::default());
    Container {
        engine,
        _removal: Removal(engine, name.clone()),
        name,
        run,
    }
}

impl Container {
    /// `ENGINE exec [EXEC_ARGS] NAME ARGS`: (exit code, stdout, stderr).
    fn exec(&self, exec_args: &[&str], args: &[&str]) -> (i32, String, String) {
        let out = Command::new(self.engine)
            .arg("exec")
            .args(exec_args)
            .arg(&self.name)
            .args(args)
            .output()
            .expect("exec");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `ENGINE VERB [ARGS] NAME`, which must succeed.
    fn verb(&self, verb: &str, args: &[&str]) {
        let out = Command::new(self.engine)
            .arg(verb)
            .args(args)
            .arg(&self.name)
            .output()
            .expect("engine command");
        assert!(
            out.status.success(),
            "{} {verb} {args:?}: {}",
            self.engine,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The container's PID 1 as the host sees it.
    fn host_pid(&self) -> i32 {
        let out = Command::new(self.engine)
            .args(["inspect", "--format", "{{.State.Pid}}", &self.name])
            .output()
            .expect("inspect");
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
/// `run --init` (Docker's tini, podman's catatonit), where pminit is a
/// subreaper.
#[test]
fn orphans_are_reaped_as_pid_1_and_under_docker_init() {
    for engine in engines("orphans_are_reaped") {
        let mount = format!("{}:/t:ro", node_app_dir());
        for init in [false, true] {
            let mut args = vec!["--network", "none", "-v", &mount, "--entrypoint", "/pminit"];
            if init {
                args.insert(0, "--init");
            }
            args.extend([EXAMPLE, "-v", "--", "node", "/t/orphans.js"]);
            let mut c = container(engine, &args);
            c.run.expect_out("orphans made");
            c.run.expect_count(
                "reaping an orphan",
                3,
                |l| matches!(l, Line::Err(s) if s.contains("reaped orphan")),
            );
            assert_eq!(
                zombies_below(c.host_pid()),
                Vec::<i32>::new(),
                "[{engine}] init={init}"
            );
            let s = c.status();
            if init {
                assert_ne!(s["pid"], 1, "under --init pminit is not PID 1: {s}");
            } else {
                assert_eq!(s["pid"], 1, "{s}");
            }
            c.verb("stop", &["-t", "10"]);
            assert_eq!(
                c.run.wait_code(),
                0,
                "[{engine}] init={init}: {}",
                c.run.transcript()
            );
        }
    }
}

/// `docker stop`: SIGTERM to pminit, SIGINT to every worker, each drains
/// and exits; the container exits 0, so Docker never had to SIGKILL it.
#[test]
fn docker_stop_sends_sigint_to_every_worker_and_the_container_exits_0() {
    for engine in engines("docker_stop_sends_sigint") {
        let mut c = container(engine, &["--network", "none", EXAMPLE]);
        c.ready_workers(4);
        c.verb("stop", &["-t", "10"]);
        assert_eq!(c.run.wait_code(), 0, "[{engine}] {}", c.run.transcript());
        c.run.expect_count(
            "a worker draining on SIGINT",
            4,
            |l| matches!(l, Line::Out(s) if s.contains("SIGINT, draining")),
        );
        c.run.expect_err("exiting with code 0");
    }
}

/// `docker kill -s HUP`: a rolling reload, three times, under load with
/// new connections and keep-alive: no request fails.
#[test]
fn docker_kill_hup_reloads_with_zero_failed_requests_under_load() {
    for engine in engines("docker_kill_hup_reloads") {
        let port = free_port();
        let env = format!("PORT={port}");
        let mut c = container(engine, &["--network", "host", "-e", &env, EXAMPLE]);
        c.ready_workers(4);
        let fresh = Load::start(port, 2, false);
        let kept = Load::start(port, 2, true);
        for generation in 1..=3 {
            c.verb("kill", &["-s", "HUP"]);
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
        c.verb("stop", &["-t", "10"]);
        assert_eq!(c.run.wait_code(), 0, "[{engine}] {}", c.run.transcript());
    }
}

/// The image's own user (uid 1000) on a read-only root filesystem: it
/// serves, and `docker exec` (same uid) may look and reload.
#[test]
fn read_only_root_and_a_non_root_user() {
    for engine in engines("read_only_root_and_a_non_root_user") {
        let port = free_port();
        let env = format!("PORT={port}");
        let mut c = container(
            engine,
            &["--network", "host", "--read-only", "-e", &env, EXAMPLE],
        );
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
        c.verb("stop", &["-t", "10"]);
        assert_eq!(c.run.wait_code(), 0, "[{engine}] {}", c.run.transcript());
    }
}

/// pminit as root binds port 80 and runs the workers as `node` (--user);
/// node may look at them but not reload; root may.
#[test]
fn root_pminit_binds_port_80_and_runs_workers_as_a_user() {
    for engine in engines("root_pminit_binds_port_80") {
        let mut c = container(
            engine,
            &[
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
            ],
        );
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
        c.verb("stop", &["-t", "10"]);
        assert_eq!(c.run.wait_code(), 0, "[{engine}] {}", c.run.transcript());
    }
}

/// `docker run -it`, driven through a pseudo-terminal: the first worker
/// owns the terminal, Ctrl-C reaches it, and the whole run stops.
#[test]
fn an_interactive_tty_run_stops_on_ctrl_c() {
    for engine in engines("an_interactive_tty_run") {
        let name = format!("pminit-e2e-{}-tty", std::process::id());
        let mut cmd = Command::new(engine);
        cmd.args(["run", "-it", "--rm", "--name", &name])
            .args(run_args(engine))
            .args(["--network", "none", EXAMPLE]);
        let mut pty = OnPty::spawn(cmd);
        let _cleanup = Removal(engine, name);
        pty.wait_for("is ready", 4);
        pty.type_keys(b"\x03");
        pty.wait_for("owns the terminal, ended", 1);
        let seen = pty.seen.clone();
        let status = pty.wait();
        // The example app handles SIGINT and exits 0: so does the run.
        assert_eq!(status.code(), Some(0), "saw:\n{seen}");
    }
}

struct Removal(&'static str, String);

impl Drop for Removal {
    fn drop(&mut self) {
        let _ = Command::new(self.0)
            .args(["rm", "-f", &self.1])
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
    for engine in engines("kubelet_termination") {
        let port = free_port();
        let env = format!("PORT={port}");
        let mut c = container(
            engine,
            &["--network", "host", "--read-only", "-e", &env, EXAMPLE],
        );
        c.ready_workers(4);
        let (code, out, _) = c.exec(&[], &["/pminit", "ready"]);
        assert_eq!((code, out.trim()), (0, "ready"));
        let fresh = Load::start(port, 2, false);
        let kept = Load::start(port, 2, true);
        let name = c.name.clone();
        let hook = std::thread::spawn(move || {
            Command::new(engine)
                .args(["exec", &name, "/pminit", "prestop", "--delay", "3s"])
                .output()
                .expect("exec prestop")
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
        c.verb("stop", &["-t", "20"]);
        let slow = slow.join().expect("slow request thread");
        assert!(slow.as_ref().is_ok_and(|b| b.contains("hello")), "{slow:?}");
        for r in &reports {
            assert_eq!(r.failures, Vec::<String>::new(), "{} ok", r.ok);
            assert!(r.ok > 20, "too little load: {}", r.ok);
        }
        assert_eq!(c.run.wait_code(), 0, "[{engine}] {}", c.run.transcript());
    }
}
