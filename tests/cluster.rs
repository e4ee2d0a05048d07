//! Cluster mode: N workers on listening sockets pminit owns; unmodified Node
//! apps (plain http, express, through npm start) just work; LISTEN_FDS for
//! everything else; a SIGKILLed worker is replaced without failed requests.

mod common;
use common::*;
use std::collections::BTreeSet;

const LAYOUTS: [&str; 2] = ["per-worker", "shared"];

/// Waits for `n` "listening pid=" lines and returns the pids.
fn listening(run: &Run, n: usize) -> BTreeSet<i32> {
    run.expect_count(
        "saying a worker listens",
        n,
        |l| matches!(l, Line::Out(s) if s.starts_with("listening pid=")),
    );
    let t = run.transcript();
    t.lines()
        .filter_map(|l| l.strip_prefix("out| listening "))
        .map(|l| field(l, "pid"))
        .collect()
}

/// New connections until `want` distinct worker pids answered (bounded).
fn distinct_pids(port: u16, want: usize) -> BTreeSet<i32> {
    let mut pids = BTreeSet::new();
    for _ in 0..2000 {
        let body = http_get(port).unwrap_or_else(|e| panic!("request failed: {e}"));
        pids.insert(field(&body, "pid"));
        if pids.len() == want {
            break;
        }
    }
    pids
}

/// `-i 4` of tests/node-app/plain.js on 127.0.0.1 in `layout`, once all
/// four listen: (run, port, their pids).
fn four_plain_workers(
    app: &std::path::Path,
    node: &NodeVersion,
    layout: &str,
) -> (Run, u16, BTreeSet<i32>) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "-i",
        "4",
        "-l",
        &listen,
        "--socket-layout",
        layout,
        "--",
        "node",
        "plain.js",
    ];
    let run = start_node(Mode::Subreaper, app, port, node, &args);
    let started = listening(&run, 4);
    (run, port, started)
}

#[test]
fn four_workers_answer_from_four_distinct_pids_through_one_port() {
    let Some(app) = node_app("four_workers_answer") else {
        return;
    };
    for node in node_versions("four_workers_answer") {
        for layout in LAYOUTS {
            let (mut run, port, started) = four_plain_workers(&app, &node, layout);
            assert_eq!(started.len(), 4);
            let answered = distinct_pids(port, 4);
            assert_eq!(answered, started, "[{layout}] every worker answers");
            run.signal(libc::SIGTERM);
            assert_eq!(run.wait_code(), 0, "[{layout}]\n{}", run.transcript());
        }
    }
}

#[test]
fn the_entrypoint_line_works_unchanged_with_port_from_the_environment() {
    // ENTRYPOINT ["/pminit","-i","4","--","node","index.js"] with PORT set:
    // pminit binds PORT itself, as PID 1. The app is examples/node.
    let example: std::path::PathBuf = [env!("CARGO_MANIFEST_DIR"), "examples", "node"]
        .iter()
        .collect();
    for node in node_versions("the_entrypoint_line_works") {
        for mode in modes("the_entrypoint_line_works") {
            let port = free_port();
            let args = ["-i", "4", "--", "node", "index.js"];
            let mut run = start_node(mode, &example, port, &node, &args);
            let started = listening(&run, 4);
            assert_eq!(distinct_pids(port, 4).len(), 4, "[{mode:?}] {started:?}");
            run.signal(libc::SIGTERM);
            assert_eq!(run.wait_code(), 0, "[{mode:?}]\n{}", run.transcript());
        }
    }
}

#[test]
fn an_unmodified_express_app_runs_as_a_cluster() {
    let Some(app) = node_app("an_unmodified_express_app") else {
        return;
    };
    for node in node_versions("an_unmodified_express_app") {
        let port = free_port();
        let mut run = start_node(
            Mode::Subreaper,
            &app,
            port,
            &node,
            &["-i", "2", "--", "node", "express.js"],
        );
        let started = listening(&run, 2);
        assert_eq!(distinct_pids(port, 2), started);
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    }
}

#[test]
fn npm_start_passes_the_preload_to_the_app_not_just_to_npm() {
    let Some(app) = node_app("npm_start_passes_the_preload") else {
        return;
    };
    for node in node_versions("npm_start_passes_the_preload") {
        let port = free_port();
        let mut run = start_node(
            Mode::Subreaper,
            &app,
            port,
            &node,
            &["-i", "2", "--kill-timeout", "3s", "--", "npm", "start"],
        );
        let started = listening(&run, 2);
        assert_eq!(distinct_pids(port, 2), started);
        run.signal(libc::SIGTERM);
        let code = run.wait_code();
        assert!(code == 0 || code == 137, "{code}\n{}", run.transcript());
    }
}

#[test]
fn without_the_preload_the_same_app_fails_with_eaddrinuse() {
    // --no-preload binds PORT only when --listen asks for it (else PORT is
    // the app's own: tests/sockets.rs); then the app's listen(PORT) fails.
    let Some(app) = node_app("without_the_preload") else {
        return;
    };
    for node in node_versions("without_the_preload") {
        // --no-preload binds PORT only when --listen asks for it.
        let port = free_port();
        let listen = port.to_string();
        let mut run = start_node(
            Mode::Subreaper,
            &app,
            port,
            &node,
            &[
                "--no-preload",
                "-l",
                &listen,
                "--restart",
                "never",
                "--",
                "node",
                "plain.js",
            ],
        );
        assert_eq!(run.wait_code(), 1, "{}", run.transcript());
        run.drain();
        assert!(
            run.transcript().contains("EADDRINUSE"),
            "{}",
            run.transcript()
        );
    }
}

#[test]
fn listen_fds_contract_from_a_python_worker() {
    // The example server, and the raw variables, checked from non-Node code.
    for layout in LAYOUTS {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut run = Run::start(
            Mode::Subreaper,
            &[
                "-i",
                "2",
                "-l",
                &listen,
                "--socket-layout",
                layout,
                "--",
                python(),
                concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/server.py"),
            ],
        );
        let started = listening(&run, 2);
        assert_eq!(distinct_pids(port, 2), started, "[{layout}]");
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "[{layout}]\n{}", run.transcript());
    }
    let (a, b) = (free_port(), free_port());
    let sock = std::env::temp_dir().join(format!("pminit-fds-{}.sock", std::process::id()));
    let (la, lb, lu) = (
        format!("127.0.0.1:{a}"),
        format!("[::1]:{b}"),
        format!("unix:{}", sock.display()),
    );
    let mut run = Run::start(
        Mode::Subreaper,
        &[
            "--restart",
            "never",
            "-l",
            &la,
            "-l",
            &lb,
            "-l",
            &lu,
            "--",
            python(),
            &fixture("listen_fds.py"),
        ],
    );
    let line = run.expect_out("LISTEN_FDS");
    assert_eq!(
        line,
        format!("LISTEN_FDS=3 pid-matches fds=3:{a}:listening,4:{b}:listening,5:unix:listening names={a}:{b}:{}", sock.display())
    );
    assert_eq!(run.wait_code(), 0, "{}", run.transcript());
}

#[test]
fn a_busy_port_or_a_bad_address_stops_start_up_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let listen = format!("127.0.0.1:{port}");
    let mut run = Run::start(
        Mode::Subreaper,
        &["-l", &listen, "--", "sh", "-c", "echo started"],
    );
    assert_eq!(run.wait_code(), 1);
    run.drain();
    let t = run.transcript();
    assert!(
        t.contains(&format!("--listen {listen}: cannot bind")) && t.contains("EADDRINUSE"),
        "{t}"
    );
    assert!(!t.contains("started"), "a worker ran: {t}");
    for bad in ["0", "65536", "host:80", "::1:80", "unix:"] {
        let mut run = Run::start(Mode::Subreaper, &["-l", bad, "--", "true"]);
        assert_eq!(run.wait_code(), 2, "{bad}");
        run.drain();
        assert!(
            run.transcript()
                .contains(&format!("--listen: invalid value {bad:?}")),
            "{}",
            run.transcript()
        );
    }
}

/// Waits until `pid` has died (a zombie or gone), within the deadline.
fn wait_dead(pid: i32) {
    let end = std::time::Instant::now() + DEADLINE;
    while stat_fields(pid).is_some_and(|f| f[0] != "Z") {
        assert!(std::time::Instant::now() < end, "{pid} did not die");
        std::thread::yield_now();
    }
}

#[test]
fn a_worker_sigkilled_under_load_is_replaced_and_no_request_fails() {
    // As the OOM killer would: SIGKILL, no chance to drain. Requests the
    // worker had already accepted die with it, whatever the init; this pins
    // that no other request does: the ones queued on its socket and the
    // ones arriving while it is down are served by the others or by its
    // replacement. The client is a closed loop (one request at a time, new
    // connection each), so the kill lands between two of its requests.
    let Some(app) = node_app("a_worker_sigkilled_under_load") else {
        return;
    };
    for node in node_versions("a_worker_sigkilled_under_load") {
        for layout in LAYOUTS {
            let (mut run, port, started) = four_plain_workers(&app, &node, layout);
            let victim = *started.iter().next().expect("a worker");
            let mut failures = Vec::new();
            let mut answered_by = BTreeSet::new();
            let mut replacement = None;
            let end = std::time::Instant::now() + DEADLINE;
            for i in 0..5000 {
                match http_get(port) {
                    Ok(body) => {
                        let pid = field(&body, "pid");
                        answered_by.insert(pid);
                        if !started.contains(&pid) {
                            replacement = Some(pid);
                        }
                    }
                    Err(e) => failures.push(format!("request {i}: {e}")),
                }
                if i == 200 {
                    // SAFETY: kill has no memory-safety preconditions.
                    assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
                    wait_dead(victim);
                }
                if i > 200 && replacement.is_some() && i >= 1000 {
                    break;
                }
                if std::time::Instant::now() > end {
                    break;
                }
            }
            assert_eq!(failures, Vec::<String>::new(), "[{layout}] failed requests");
            assert!(
                replacement.is_some(),
                "[{layout}] the replacement answered: {answered_by:?}\n{}",
                run.transcript()
            );
            run.expect_err("worker 0 started");
            run.signal(libc::SIGTERM);
            assert_eq!(run.wait_code(), 0, "[{layout}]\n{}", run.transcript());
        }
    }
}

#[test]
fn the_users_node_options_are_kept_before_the_preload() {
    let port = free_port();
    let mut run = Run::start_with(
        Mode::Subreaper,
        &[
            "--restart", "never", "--",
            "node", "-e", "console.log('title=' + process.title + ' opts=' + process.env.NODE_OPTIONS.split(' ')[0])",
        ],
        Options {
            env: vec![
                ("PORT".into(), port.to_string()),
                ("NODE_OPTIONS".into(), "--title=from-user".into()),
            ],
            ..Options::default()
        },
    );
    run.expect_out("title=from-user opts=--title=from-user");
    assert_eq!(run.wait_code(), 0, "{}", run.transcript());
}
