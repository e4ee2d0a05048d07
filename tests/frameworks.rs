//! Real frameworks and protocols under pminit, on every supported Node
//! (tests/node-app, pinned in its lockfile): the drain is pminit's whoever
//! handles the stop signal. Apps with a shutdown of their own
//! (examples/node, NestJS with enableShutdownHooks(), Next.js `next start`)
//! lose no keep-alive request over reloads under load; WebSocket clients
//! get a close frame (1001) and HTTP/2 clients a GOAWAY, so the old worker
//! exits by itself, long before --kill-timeout; a stop with clients
//! connected exits 0.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Longer than the harness' DEADLINE: a worker that waited for it would
/// fail the test's wait, so "exits long before kill-timeout" is checked
/// without timing anything.
const KILL_TIMEOUT: &str = "60s";

/// pminit in `dir` with PORT=`port`, `node` first in PATH.
fn start(dir: &Path, node: &NodeVersion, port: u16, args: &[&str]) -> Run {
    Run::start_with(
        Mode::Subreaper,
        args,
        Options {
            cwd: Some(dir.to_path_buf()),
            env: vec![
                ("PORT".into(), port.to_string()),
                node.path_env(),
                ("NEXT_TELEMETRY_DISABLED".into(), "1".into()),
            ],
            ..Options::default()
        },
    )
}

/// A client script of tests/node-app run by `node`, its output read as
/// pminit's is.
fn client(app: &Path, node: &NodeVersion, port: u16, script: &str, args: &[&str]) -> Run {
    let mut cmd = Command::new(node.node());
    cmd.arg(script)
        .args(args)
        .current_dir(app)
        .env("PORT", port.to_string());
    Run::spawn(Mode::Subreaper, cmd, Options::default())
}

fn out_lines(run: &Run, text: &str) -> Vec<String> {
    run.transcript()
        .lines()
        .filter_map(|l| l.strip_prefix("out| "))
        .filter(|l| l.contains(text))
        .map(String::from)
        .collect()
}

/// `command` under `-i 2` with 4 keep-alive clients on `path` through
/// three reloads: no failed request; a stop afterwards exits 0. Returns
/// the run for more checks.
fn three_reloads_keep_alive(
    test: &str,
    dir: &Path,
    node: &NodeVersion,
    command: &[&str],
    path: &str,
) -> Run {
    let port = free_port();
    let mut args = vec!["-i", "2", "--listen-timeout", "20s", "--"];
    args.extend_from_slice(command);
    let mut run = start(dir, node, port, &args);
    run.expect_ready(2);
    let load = Load::start_path(port, 4, true, path);
    for generation in 1..=3 {
        run.signal(libc::SIGHUP);
        run.expect_err(&format!("reload to generation {generation} finished"));
    }
    let report = load.finish();
    let v = node.major;
    assert_eq!(
        report.failures,
        Vec::<String>::new(),
        "[{test} node {v}] failed requests ({} ok)\n{}",
        report.ok,
        run.transcript()
    );
    assert!(
        report.ok > 100,
        "[{test} node {v}] too little load: {}",
        report.ok
    );
    assert!(
        report.pids.len() > 2,
        "[{test} node {v}] new workers answered: {:?}",
        report.pids
    );
    run.signal(libc::SIGTERM);
    assert_eq!(
        run.wait_code(),
        0,
        "[{test} node {v}]\n{}",
        run.transcript()
    );
    run.drain();
    assert!(
        !run.transcript().contains("exited by SIGKILL"),
        "[{test} node {v}] a worker waited for the kill-timeout\n{}",
        run.transcript()
    );
    eprintln!(
        "{test} node {v}: {} keep-alive requests, 0 failed, {} workers answered",
        report.ok,
        report.pids.len()
    );
    run
}

#[test]
fn examples_node_with_its_own_server_close_loses_no_keep_alive_request() {
    let test = "examples_node_with_its_own_server_close";
    let Some(_) = node_app(test) else { return };
    let example: PathBuf = [env!("CARGO_MANIFEST_DIR"), "examples", "node"]
        .iter()
        .collect();
    for node in node_versions(test) {
        three_reloads_keep_alive(test, &example, &node, &["node", "index.js"], "/");
    }
}

#[test]
fn nestjs_with_enable_shutdown_hooks_loses_no_keep_alive_request() {
    let test = "nestjs_with_enable_shutdown_hooks";
    let Some(app) = node_app(test) else { return };
    for node in node_versions(test) {
        let run = three_reloads_keep_alive(test, &app, &node, &["node", "nest.mjs"], "/");
        // Nest's own shutdown ran in every worker that was stopped: 2 per
        // reload, and the last 2 at the stop.
        let hooks = out_lines(&run, "shutdown hook pid=");
        assert_eq!(hooks.len(), 8, "{}", run.transcript());
        assert!(
            hooks.iter().all(|l| l.ends_with("signal=SIGINT")),
            "{hooks:?}"
        );
    }
}

#[test]
fn next_start_loses_no_keep_alive_request() {
    let test = "next_start";
    let Some(app) = node_app(test) else { return };
    let built = app.join("next-app/.next/BUILD_ID").is_file();
    if !require(
        built,
        test,
        "next build of tests/node-app/next-app (scripts/test.sh)",
    ) {
        return;
    }
    for node in node_versions(test) {
        // `next start` handles SIGINT itself: server.close(), then exit 130.
        let command = [
            "node",
            "node_modules/next/dist/bin/next",
            "start",
            "next-app",
        ];
        let run = three_reloads_keep_alive(test, &app, &node, &command, "/api/pid");
        assert!(run.transcript().contains("Next.js"), "{}", run.transcript());
    }
}

/// `-i 2` of `script` with four WebSocket clients: a reload closes every
/// client with 1001 and both old workers exit by themselves; then a stop
/// with four new clients connected exits 0, the clients closed with 1001.
fn websockets_are_closed_with_1001(test: &str, script: &str) {
    let Some(app) = node_app(test) else { return };
    for node in node_versions(test) {
        let v = node.major;
        let port = free_port();
        let mut run = start(
            &app,
            &node,
            port,
            &[
                "-i",
                "2",
                "--kill-timeout",
                KILL_TIMEOUT,
                "--",
                "node",
                script,
            ],
        );
        run.expect_ready(2);
        let mut clients = client(&app, &node, port, "ws_clients.js", &["4"]);
        clients.expect_count(
            "open",
            4,
            |l| matches!(l, Line::Out(s) if s.starts_with("open ")),
        );
        run.signal(libc::SIGHUP);
        run.expect_err("reload to generation 1 finished");
        assert_eq!(
            clients.wait_code(),
            0,
            "[node {v}] {}",
            clients.transcript()
        );
        clients.drain();
        let closes = out_lines(&clients, "close client=");
        assert_eq!(closes.len(), 4, "[node {v}] {}", clients.transcript());
        assert!(
            closes.iter().all(|l| l.contains("code=1001")),
            "[node {v}] {closes:?}"
        );
        // Both old workers exited on their own (the kill-timeout is longer
        // than this wait).
        run.expect_count(
            "both old workers' exits",
            2,
            |l| matches!(l, Line::Err(s) if s.contains(") exited")),
        );
        let mut clients = client(&app, &node, port, "ws_clients.js", &["4"]);
        clients.expect_count(
            "open",
            4,
            |l| matches!(l, Line::Out(s) if s.starts_with("open ")),
        );
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "[node {v}]\n{}", run.transcript());
        assert_eq!(
            clients.wait_code(),
            0,
            "[node {v}] {}",
            clients.transcript()
        );
        clients.drain();
        let closes = out_lines(&clients, "close client=");
        assert!(
            closes.len() == 4 && closes.iter().all(|l| l.contains("code=1001")),
            "[node {v}] {closes:?}"
        );
        run.drain();
        assert!(
            !run.transcript().contains("exited by SIGKILL"),
            "{}",
            run.transcript()
        );
    }
}

#[test]
fn ws_library_clients_get_1001_and_old_workers_exit_by_themselves() {
    websockets_are_closed_with_1001("ws_library_clients_get_1001", "ws.js");
}

#[test]
fn raw_upgraded_sockets_get_a_1001_close_frame() {
    // No WebSocket library: the preload writes the close frame itself.
    websockets_are_closed_with_1001("raw_upgraded_sockets_get_1001", "ws_raw.js");
}

#[test]
fn http2_sessions_get_goaway_and_old_workers_exit_by_themselves() {
    let test = "http2_sessions_get_goaway";
    let Some(app) = node_app(test) else { return };
    for node in node_versions(test) {
        let v = node.major;
        let port = free_port();
        let mut run = start(
            &app,
            &node,
            port,
            &[
                "-i",
                "2",
                "--kill-timeout",
                KILL_TIMEOUT,
                "--",
                "node",
                "h2.js",
            ],
        );
        run.expect_ready(2);
        let mut h2 = client(&app, &node, port, "h2_client.js", &[]);
        h2.expect_out("answered pid=");
        run.signal(libc::SIGHUP);
        run.expect_err("reload to generation 1 finished");
        h2.expect_out("goaway code=0");
        h2.expect_out("closed");
        assert_eq!(h2.wait_code(), 0, "[node {v}] {}", h2.transcript());
        run.expect_count(
            "both old workers' exits",
            2,
            |l| matches!(l, Line::Err(s) if s.contains(") exited")),
        );
        // A stop with a session open.
        let mut h2 = client(&app, &node, port, "h2_client.js", &[]);
        h2.expect_out("answered pid=");
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "[node {v}]\n{}", run.transcript());
        h2.expect_out("goaway code=0");
        assert_eq!(h2.wait_code(), 0, "[node {v}] {}", h2.transcript());
    }
}
