//! The control verbs (`pminit status|reload|scale|ready|prestop`), run as a
//! second pminit process against a running one, the control socket's
//! checks, `--stop-delay`, `--user` and the JSON log.
//!
//! In PID-1 mode the verb runs inside pminit's namespaces through
//! `nsenter`, as `docker exec` or `kubectl exec` would put it.

mod common;
use common::*;
use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// What a verb printed and its exit code.
struct Answer {
    code: i32,
    out: String,
    err: String,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\nstdout: {}\nstderr: {}",
            self.code, self.out, self.err
        )
    }
}

/// Runs `pminit ARGS` against `run`'s pminit, as `uid` if given.
fn verb(run: &Run, args: &[&str], uid: Option<u32>) -> Answer {
    let pid = run.pminit_pid().to_string();
    let mut cmd = match run.mode {
        Mode::Pid1 => {
            let mut c = Command::new("nsenter");
            c.args(["-t", &pid, "-p", "-m"]);
            if let Some(u) = uid {
                let u = u.to_string();
                c.args(["-S", &u, "-G", &u]);
            }
            c.arg(PMINIT).args(args);
            c
        }
        Mode::Subreaper => {
            let mut c = Command::new(PMINIT);
            c.args(args).args(["--pid", &pid]);
            if let Some(u) = uid {
                c.uid(u).gid(u);
            }
            c
        }
    };
    let out = cmd.output().expect("run the verb");
    Answer {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn status_json(run: &Run) -> serde_json::Value {
    let a = verb(run, &["status", "--json"], None);
    assert_eq!(a.code, 0, "{a:?}");
    serde_json::from_str(a.out.trim()).unwrap_or_else(|e| panic!("{e}: {a:?}"))
}

/// Polls `pminit status --json` until `pred` holds (or the deadline).
fn status_until(
    run: &Run,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let s = status_json(run);
        if pred(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < end,
            "[{:?}] status never showed {what}: {s}\n{}",
            run.mode,
            run.transcript()
        );
        // Each status is a round trip to pminit: that is the wait.
    }
}

fn ready_workers(s: &serde_json::Value) -> usize {
    s["workers"]
        .as_array()
        .map_or(0, |w| w.iter().filter(|w| w["state"] == "ready").count())
}

fn start_plain(mode: Mode, app: &std::path::Path, n: &str, extra: &[&str]) -> (Run, u16) {
    let port = free_port();
    let mut args = vec!["-i", n];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "node", "plain.js"]);
    let run = start_in(mode, app, port, &args);
    (run, port)
}

#[test]
fn status_ready_reload_scale_and_prestop_from_a_second_pminit() {
    let Some(app) = node_app("status_ready_reload_scale_and_prestop") else {
        return;
    };
    for mode in modes("status_ready_reload_scale_and_prestop") {
        let (mut run, port) = start_plain(mode, &app, "2", &[]);
        run.expect_ready(2);
        let a = verb(&run, &["ready"], None);
        assert_eq!((a.code, a.out.trim()), (0, "ready"), "{a:?}");

        let s = status_json(&run);
        assert_eq!(s["phase"], "running");
        assert_eq!(s["ready"], true);
        assert_eq!(s["instances"], 2);
        assert_eq!(s["generation"], 0);
        let workers = s["workers"].as_array().expect("workers");
        assert_eq!(workers.len(), 2, "{s}");
        for (slot, w) in workers.iter().enumerate() {
            assert_eq!(w["slot"], slot);
            assert_eq!(w["state"], "ready");
            assert_eq!(w["restarts"], 0);
            assert!(w["rss_bytes"].as_u64().unwrap_or(0) > 1 << 20, "{w}");
            assert!(w["uptime_ms"].is_u64() && w["cpu_ms"].is_u64(), "{w}");
            assert!(w["cpu_percent"].is_number(), "{w}");
            let pid = w["pid"].as_i64().expect("pid");
            let started = format!("worker {slot} started (pid {pid})");
            assert!(
                run.stderr_lines().iter().any(|l| l.contains(&started)),
                "{started}: {}",
                run.transcript()
            );
        }
        // The table a person reads.
        let a = verb(&run, &["status"], None);
        assert_eq!(a.code, 0, "{a:?}");
        let lines: Vec<&str> = a.out.lines().collect();
        assert_eq!(lines.len(), 4, "{a:?}");
        assert!(
            lines[1].starts_with("slot") && lines[2].contains("ready"),
            "{a:?}"
        );

        // reload waits and shows progress.
        let a = verb(&run, &["reload"], None);
        assert_eq!(a.code, 0, "{a:?}");
        assert!(a.out.contains("reload to generation 1 started"), "{a:?}");
        assert!(a.out.contains("reload to generation 1 finished"), "{a:?}");
        let s = status_json(&run);
        assert_eq!(s["generation"], 1);
        assert_eq!(s["reloading"], false);
        assert!(
            s["workers"]
                .as_array()
                .expect("workers")
                .iter()
                .any(|w| w["generation"] == 1 && w["state"] == "ready"),
            "{s}"
        );

        let a = verb(&run, &["scale", "+1"], None);
        assert_eq!(a.code, 0, "{a:?}");
        assert!(a.out.contains("scaling from 2 to 3 workers"), "{a:?}");
        status_until(&run, "3 ready workers", |s| {
            s["instances"] == 3 && ready_workers(s) == 3
        });
        let a = verb(&run, &["scale", "-2"], None);
        assert_eq!(a.code, 0, "{a:?}");
        status_until(&run, "1 worker left", |s| {
            s["instances"] == 1 && s["workers"].as_array().is_some_and(|w| w.len() == 1)
        });

        let a = verb(&run, &["prestop", "--delay", "0"], None);
        assert_eq!(a.code, 0, "{a:?}");
        let a = verb(&run, &["ready"], None);
        assert_eq!(a.code, 1, "{a:?}");
        assert!(a.out.contains("prestop"), "{a:?}");
        // Still serving.
        http_get(port).unwrap_or_else(|e| panic!("[{mode:?}] after prestop: {e}"));
        assert_eq!(status_json(&run)["phase"], "draining");

        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    }
}

#[test]
fn a_reload_that_fails_exits_1_and_the_old_workers_keep_serving() {
    let Some(app) = node_app("a_reload_that_fails_exits_1") else {
        return;
    };
    for mode in modes("a_reload_that_fails_exits_1") {
        let release = std::env::temp_dir().join(format!(
            "pminit-control-release-{}-{mode:?}",
            std::process::id()
        ));
        std::fs::write(&release, "v1").expect("write");
        let port = free_port();
        let mut run = Run::start_with(
            mode,
            &[
                "-i",
                "2",
                // Long enough for a loaded machine to start node, short
                // enough for the silent release to fail the reload soon.
                "--listen-timeout",
                "3s",
                "--",
                "node",
                "versioned.js",
            ],
            Options {
                cwd: Some(app.clone()),
                env: vec![
                    ("PORT".into(), port.to_string()),
                    ("RELEASE_FILE".into(), release.display().to_string()),
                ],
                ..Options::default()
            },
        );
        run.expect_ready(2);
        for (broken, why) in [
            ("crash", "exited with code 1"),
            ("silent", "not ready within"),
            // Issue 12 point 6: ready, then dead within --min-uptime.
            ("dies-after-ready", "after it said ready"),
        ] {
            std::fs::write(&release, broken).expect("write");
            let a = verb(&run, &["reload"], None);
            assert_eq!(a.code, 1, "[{mode:?} {broken}] {a:?}");
            assert!(a.out.contains(why), "[{mode:?} {broken}] {a:?}");
            assert!(a.err.contains("failed"), "[{mode:?} {broken}] {a:?}");
            let body = http_get(port).unwrap_or_else(|e| panic!("[{mode:?}] {e}"));
            assert!(body.contains("release=v1"), "[{mode:?}] {body}");
        }
        std::fs::write(&release, "v2").expect("write");
        let a = verb(&run, &["reload"], None);
        assert_eq!(a.code, 0, "[{mode:?}] {a:?}");
        // Progress says what happened, no more.
        assert!(a.out.contains("2 workers replaced"), "[{mode:?}] {a:?}");
        // A finished reload has asked the old workers to stop; until they
        // have drained and exited, one may still take a connection.
        status_until(&run, "only the newest generation's workers", |s| {
            s["workers"].as_array().is_some_and(|w| {
                w.iter()
                    .all(|w| w["generation"] == s["generation"] && w["state"] == "ready")
            })
        });
        let body = http_get(port).expect("served");
        assert!(body.contains("release=v2"), "[{mode:?}] {body}");
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
        let _ = std::fs::remove_file(&release);
    }
}

#[test]
fn only_root_or_pminits_uid_may_change_state_anyone_may_look() {
    if !require(
        is_root(),
        "only_root_or_pminits_uid",
        "root (to run a client as another uid)",
    ) {
        return;
    }
    for mode in modes("only_root_or_pminits_uid") {
        let mut run = Run::start(mode, &["-i", "2", "--", "sleep", "1000"]);
        run.expect_count(
            "saying a worker started",
            2,
            |l| matches!(l, Line::Err(s) if s.contains("started")),
        );
        let nobody = Some(65534);
        let a = verb(&run, &["status"], nobody);
        assert_eq!(a.code, 0, "[{mode:?}] {a:?}");
        let a = verb(&run, &["ready"], nobody);
        assert_eq!(a.code, 0, "[{mode:?}] {a:?}");
        for args in [
            &["reload"][..],
            &["scale", "+1"],
            &["prestop", "--delay", "0"],
        ] {
            let a = verb(&run, args, nobody);
            assert_eq!(a.code, 1, "[{mode:?}] {args:?} {a:?}");
            assert!(
                a.err.contains("refused: only root or uid 0") && a.err.contains("65534"),
                "[{mode:?}] {args:?} {a:?}"
            );
        }
        let s = status_json(&run);
        assert_eq!(
            (s["generation"].as_u64(), s["instances"].as_u64()),
            (Some(0), Some(2))
        );
        assert_eq!(s["phase"], "running");
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
        run.drain();
        assert!(
            !run.stderr_lines().iter().any(|l| l.contains("reload")),
            "{}",
            run.transcript()
        );
    }
}

/// Sends `request` on a fresh connection to `name` and reads the reply.
fn raw_request(name: &str, request: &[u8]) -> String {
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
    let mut s = UnixStream::connect_addr(&addr).expect("connect to the control socket");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    // A peer may close after its reply before taking all of a long request.
    let _ = s.write_all(request);
    let _ = s.shutdown(std::net::Shutdown::Write);
    // pminit closes once it has answered; with part of an oversized
    // request still unread, the close shows here as a reset after the reply.
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&reply).into_owned()
}

fn control_name(run: &Run) -> String {
    let host_pid = run.pminit_pid();
    let ns = std::fs::metadata(format!("/proc/{host_pid}/ns/pid"))
        .expect("pminit's pid namespace")
        .ino();
    let pid = match run.mode {
        Mode::Pid1 => 1,
        Mode::Subreaper => host_pid,
    };
    format!("pminit/control/{ns}/{pid}")
}

#[test]
fn a_client_outside_the_containers_pid_namespace_is_refused() {
    if !require(
        is_root(),
        "a_client_outside_the_pid_namespace",
        "root for unshare --pid",
    ) {
        return;
    }
    let mut run = Run::start(Mode::Pid1, &["--", "sleep", "1000"]);
    run.expect_err("started");
    // This test process shares the network namespace (so it can reach the
    // abstract name) but not the PID namespace.
    let reply = raw_request(&control_name(&run), b"{\"verb\":\"status\"}\n");
    assert!(
        reply.contains("\"reply\":\"error\"")
            && reply.contains("outside this container's PID namespace"),
        "{reply}"
    );
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_code(), 0, "{}", run.transcript());
}

#[test]
fn malformed_and_oversized_requests_get_an_error_and_pminit_carries_on() {
    let mut run = Run::start(Mode::Subreaper, &["--", "sleep", "1000"]);
    run.expect_err("started");
    let name = control_name(&run);
    let big = vec![b'x'; 100_000];
    for bad in [
        b"garbage\n".as_slice(),
        b"{\"verb\":\"format-disk\"}\n",
        b"\x00\xff\xfe\n",
        b"{\"verb\":\"status\"",
        &big,
    ] {
        let reply = raw_request(&name, bad);
        let v: serde_json::Value =
            serde_json::from_str(reply.trim()).unwrap_or_else(|e| panic!("{e}: {reply:?}"));
        assert_eq!(v["reply"], "error", "{reply}");
        let m = v["message"].as_str().unwrap_or_default();
        assert!(
            m.contains("malformed request") || m.contains("over 4096 bytes"),
            "{m}"
        );
    }
    // A client that connects and says nothing does not block others.
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
    let _silent = UnixStream::connect_addr(&addr).expect("connect");
    let a = verb(&run, &["ready"], None);
    assert_eq!(a.code, 0, "{a:?}");
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_code(), 0, "{}", run.transcript());
}

#[test]
fn stop_delay_keeps_serving_while_ready_fails() {
    let Some(app) = node_app("stop_delay_keeps_serving") else {
        return;
    };
    for mode in modes("stop_delay_keeps_serving") {
        let (mut run, port) = start_plain(mode, &app, "1", &["--stop-delay", "60s"]);
        run.expect_err("is ready");
        assert_eq!(verb(&run, &["ready"], None).code, 0);
        run.signal(libc::SIGTERM);
        run.expect_err("still serving for 60000 ms (--stop-delay)");
        let a = verb(&run, &["ready"], None);
        assert_eq!(a.code, 1, "{a:?}");
        assert!(a.out.contains("--stop-delay"), "{a:?}");
        for _ in 0..5 {
            http_get(port).unwrap_or_else(|e| panic!("[{mode:?}] during stop-delay: {e}"));
        }
        // A reload asked for now is refused at once, not left hanging.
        let a = verb(&run, &["reload"], None);
        assert_eq!(a.code, 1, "{a:?}");
        assert!(a.err.contains("stopping"), "{a:?}");
        // A second TERM skips the rest of the delay.
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    }
}

/// A privileged port nobody is using on 127.0.0.1.
fn free_privileged_port() -> Option<u16> {
    (80..1024).find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
}

#[test]
fn user_binds_a_privileged_port_as_root_and_runs_workers_as_the_user() {
    if !require(
        is_root(),
        "user_binds_a_privileged_port",
        "root (to bind port <1024 and switch user)",
    ) {
        return;
    }
    let Some(app) = node_app("user_binds_a_privileged_port") else {
        return;
    };
    for mode in modes("user_binds_a_privileged_port") {
        let port = free_privileged_port().expect("a free port below 1024");
        let listen = format!("127.0.0.1:{port}");
        let mut run = start_in(
            mode,
            &app,
            port,
            &[
                "-i", "2", "--user", "nobody", "-l", &listen, "--", "node", "plain.js",
            ],
        );
        run.expect_ready(2);
        let body = http_get(port).unwrap_or_else(|e| panic!("[{mode:?}] {e}"));
        let s = status_json(&run);
        for w in s["workers"].as_array().expect("workers") {
            // Status pids are pminit's view; /proc here is the test's.
            let logged = w["pid"].as_i64().expect("pid");
            assert!(logged > 0);
        }
        let served_by: i32 = field(&body, "pid");
        let host_pid = match mode {
            Mode::Subreaper => served_by,
            Mode::Pid1 => host_pid_of(run.outer_pid, served_by.into())
                .expect("the worker in the test's /proc"),
        };
        let uid = status_field(host_pid, "Uid").expect("Uid");
        let gid = status_field(host_pid, "Gid").expect("Gid");
        assert!(
            uid.split_whitespace().all(|u| u == "65534"),
            "[{mode:?}] Uid {uid}"
        );
        assert!(
            gid.split_whitespace().all(|g| g == "65534"),
            "[{mode:?}] Gid {gid}"
        );
        // The user can look at its workers.
        let a = verb(&run, &["status"], Some(65534));
        assert_eq!(a.code, 0, "{a:?}");
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    }
}

#[test]
fn json_log_lines_have_stable_fields_for_each_event() {
    let Some(app) = node_app("json_log_lines") else {
        return;
    };
    let (mut run, _port) = start_plain(Mode::Subreaper, &app, "1", &["--log-format", "json"]);
    run.expect_err("\"worker_ready\"");
    let a = verb(&run, &["reload"], None);
    assert_eq!(a.code, 0, "{a:?}");
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_code(), 0);
    // The last lines may still be in the pipe when the exit is seen.
    run.drain();
    let events: Vec<serde_json::Value> = run
        .stderr_lines()
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let find = |name: &str| {
        events
            .iter()
            .find(|e| e["event"] == name)
            .unwrap_or_else(|| panic!("no {name} event in {}", run.transcript()))
            .clone()
    };
    for e in &events {
        let ts = e["ts"].as_str().expect("ts");
        assert!(ts.len() == 24 && ts.ends_with('Z'), "{e}");
        assert!(e["level"] == "info" || e["level"] == "debug", "{e}");
    }
    let keys = |e: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = e.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    let table: &[(&str, &[&str])] = &[
        ("worker_spawned", &["event", "level", "pid", "slot", "ts"]),
        (
            "worker_ready",
            &["event", "generation", "level", "pid", "slot", "ts"],
        ),
        ("reload_started", &["event", "generation", "level", "ts"]),
        ("worker_draining", &["event", "level", "pid", "slot", "ts"]),
        (
            "reload_finished",
            &[
                "event",
                "generation",
                "level",
                "not_running",
                "replaced",
                "ts",
            ],
        ),
        (
            "stop_requested",
            &["delay_ms", "event", "level", "signal", "ts"],
        ),
        (
            "stopping",
            &["event", "grace_ms", "level", "signal", "ts", "workers"],
        ),
        // Either "code" or "signal", whichever ended it.
        (
            "worker_exited",
            &["event", "level", "pid", "slot", "ts", "uptime_ms"],
        ),
        ("exit", &["code", "event", "level", "ts"]),
    ];
    for (event, fields) in table {
        let mut got = keys(&find(event));
        if *event == "worker_exited" {
            let before = got.len();
            got.retain(|k| k != "code" && k != "signal");
            assert_eq!(before, got.len() + 1, "code or signal: {got:?}");
        }
        assert_eq!(got, *fields, "{event}");
    }
    assert_eq!(find("reload_finished")["generation"], 1);
    assert_eq!(find("reload_finished")["not_running"], 0);
    assert_eq!(find("exit")["code"], 0);
}
