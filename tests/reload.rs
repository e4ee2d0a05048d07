//! Readiness and zero-downtime rolling reload on SIGHUP: new worker ready
//! before the old one is asked to stop; a broken release never replaces a
//! working one; HUPs during a reload fold into one more; zero failed
//! requests under load, with new connections and with keep-alive.

mod common;
use common::*;
use std::path::Path;

/// pminit running `node SCRIPT` from the test apps on `node`, with PORT and
/// `env`.
fn start_app(
    app: &Path,
    node: &NodeVersion,
    script: &str,
    extra: &[&str],
    mut env: Vec<(String, String)>,
) -> (Run, u16) {
    let port = free_port();
    let mut args: Vec<&str> = extra.to_vec();
    args.extend_from_slice(&["--", "node", script]);
    env.push(("PORT".into(), port.to_string()));
    env.push(node.path_env());
    let options = Options {
        cwd: Some(app.to_path_buf()),
        env,
        ..Options::default()
    };
    (Run::start_with(Mode::Subreaper, &args, options), port)
}

/// Count of stderr lines containing `text` so far.
fn count(run: &Run, text: &str) -> usize {
    run.stderr_lines()
        .iter()
        .filter(|l| l.contains(text))
        .count()
}

/// HUP, then wait for "reload to generation N finished".
fn reload(run: &Run, generation: u64) {
    run.signal(libc::SIGHUP);
    run.expect_err(&format!("reload to generation {generation} finished"));
}

/// 4 workers, 5 reloads back to back, under closed-loop load: no failure.
fn five_reloads_under_load(script: &str, keep_alive: bool, test: &str) {
    let Some(app) = node_app(test) else { return };
    for node in node_versions(test) {
        let (mut run, port) = start_app(&app, &node, script, &["-i", "4"], vec![]);
        run.expect_ready(4);
        let load = Load::start(port, 4, keep_alive);
        for generation in 1..=5 {
            reload(&run, generation);
        }
        let report = load.finish();
        assert_eq!(
            report.failures,
            Vec::<String>::new(),
            "failed requests ({} ok)",
            report.ok
        );
        assert!(
            report.ok > 200,
            "too little load to mean anything: {}",
            report.ok
        );
        // New workers answered (keep-alive clients stick to a worker until it
        // drains, so not every worker of every generation gets one).
        assert!(
            report.pids.len() > 4,
            "{} distinct workers answered",
            report.pids.len()
        );
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
        eprintln!(
            "{test}: {} requests, 0 failed, {} workers answered",
            report.ok,
            report.pids.len()
        );
    }
}

#[test]
fn five_reloads_new_connection_per_request_zero_failed() {
    five_reloads_under_load("plain.js", false, "five_reloads_new_connection_per_request");
}

#[test]
fn five_reloads_keep_alive_with_a_well_behaved_drain_zero_failed() {
    five_reloads_under_load("graceful.js", true, "five_reloads_keep_alive_well_behaved");
}

#[test]
fn five_reloads_keep_alive_app_without_any_signal_handler_zero_failed() {
    // plain.js never heard of signals: the preload drains it.
    five_reloads_under_load("plain.js", true, "five_reloads_keep_alive_no_handler");
}

#[test]
fn a_reload_picks_up_new_code_on_disk() {
    let Some(app) = node_app("a_reload_picks_up_new_code") else {
        return;
    };
    for node in node_versions("a_reload_picks_up_new_code") {
        let release = std::env::temp_dir().join(format!("pminit-release-{}", std::process::id()));
        std::fs::write(&release, "v1").expect("write");
        let (mut run, port) = start_app(
            &app,
            &node,
            "versioned.js",
            &["-i", "2"],
            vec![("RELEASE_FILE".into(), release.display().to_string())],
        );
        run.expect_ready(2);
        assert!(http_get(port).expect("v1").contains("release=v1"));
        std::fs::write(&release, "v2").expect("write");
        reload(&run, 1);
        // An old worker may still take a connection until it handles its stop
        // signal; once both have exited only the new code answers.
        run.expect_count(
            "an old worker's exit",
            2,
            |l| matches!(l, Line::Err(s) if s.contains(") exited")),
        );
        for _ in 0..20 {
            let body = http_get(port).expect("request");
            assert!(
                body.contains("release=v2"),
                "old code still answers: {body}"
            );
        }
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0);
        let _ = std::fs::remove_file(&release);
    }
}

#[test]
fn a_broken_release_never_replaces_a_working_one() {
    let Some(app) = node_app("a_broken_release_never_replaces") else {
        return;
    };
    for node in node_versions("a_broken_release_never_replaces") {
        for (broken, why) in [
            ("crash", "exited with code 1"),
            ("silent", "not ready within 3000 ms"),
        ] {
            let release =
                std::env::temp_dir().join(format!("pminit-broken-{}-{broken}", std::process::id()));
            std::fs::write(&release, "good").expect("write");
            let (mut run, port) = start_app(
                &app,
                &node,
                "versioned.js",
                &["-i", "3", "--listen-timeout", "3s"],
                vec![("RELEASE_FILE".into(), release.display().to_string())],
            );
            run.expect_ready(3);
            let load = Load::start(port, 2, false);
            std::fs::write(&release, broken).expect("write");
            run.signal(libc::SIGHUP);
            let line = run.expect_err("reload to generation 1 failed");
            assert!(line.contains(why), "[{broken}] {line}");
            let report = load.finish();
            assert_eq!(report.failures, Vec::<String>::new(), "[{broken}]");
            // Still the good release, from the three original workers.
            for _ in 0..20 {
                assert!(http_get(port).expect("request").contains("release=good"));
            }
            assert_eq!(
                count(&run, "asked to stop"),
                usize::from(broken == "silent"),
                "only the silent new worker is stopped"
            );
            // Fixed on disk: the next reload goes through.
            std::fs::write(&release, "fixed").expect("write");
            reload(&run, 2);
            // The failed new worker and the three good ones have exited.
            run.expect_count(
                "exits",
                4,
                |l| matches!(l, Line::Err(s) if s.contains(") exited")),
            );
            for _ in 0..20 {
                assert!(http_get(port).expect("request").contains("release=fixed"));
            }
            run.signal(libc::SIGTERM);
            assert_eq!(run.wait_code(), 0, "{}", run.transcript());
            let _ = std::fs::remove_file(&release);
        }
    }
}

#[test]
fn hups_during_a_reload_fold_into_one_more() {
    let Some(app) = node_app("hups_during_a_reload_fold") else {
        return;
    };
    for node in node_versions("hups_during_a_reload_fold") {
        let (mut run, _port) = start_app(
            &app,
            &node,
            "wait_ready.js",
            &["-i", "2", "--wait-ready"],
            vec![("WARM_UP_MS".into(), "300".into())],
        );
        run.expect_ready(2);
        run.signal(libc::SIGHUP);
        run.expect_err("reload to generation 1 started");
        run.signal(libc::SIGHUP);
        run.signal(libc::SIGHUP);
        run.expect_err("reload to generation 2 finished");
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0);
        run.drain();
        assert_eq!(count(&run, "started: "), 0);
        assert_eq!(count(&run, "reload to generation 1 started"), 1);
        assert_eq!(count(&run, "reload to generation 2 started"), 1);
        assert_eq!(
            count(&run, "reload to generation 3"),
            0,
            "{}",
            run.transcript()
        );
    }
}

#[test]
fn wait_ready_waits_for_process_send_ready() {
    let Some(app) = node_app("wait_ready_waits_for_process_send_ready") else {
        return;
    };
    for node in node_versions("wait_ready_waits_for_process_send_ready") {
        let (mut run, _port) = start_app(
            &app,
            &node,
            "wait_ready.js",
            &["-v", "--wait-ready"],
            vec![("READY_ON_USR2".into(), "1".into())],
        );
        // The app listens (the preload has reported it to pminit by now)...
        run.expect_out("listening pid=");
        // ...and once pminit has handled a later wake-up, in which it read
        // everything already on the channel, the worker is still not ready.
        run.signal(libc::SIGUSR1);
        run.expect_out("got SIGUSR1");
        run.expect_count(
            "forwarding SIGUSR1",
            1,
            |l| matches!(l, Line::Err(s) if s.contains("forwarded SIGUSR1")),
        );
        assert_eq!(
            count(&run, "is ready"),
            0,
            "ready before the app said so:\n{}",
            run.transcript()
        );
        // process.send('ready') makes it ready.
        run.signal(libc::SIGUSR2);
        run.expect_ready(1);
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    }
}

#[test]
fn malformed_ipc_lines_are_logged_and_dropped() {
    let Some(app) = node_app("malformed_ipc_lines") else {
        return;
    };
    for node in node_versions("malformed_ipc_lines") {
        let (mut run, port) = start_app(&app, &node, "chatty.js", &["--wait-ready"], vec![]);
        run.expect_err("is ready");
        let drops = count(&run, "dropped");
        assert!(drops >= 3, "{}", run.transcript());
        assert!(run
            .transcript()
            .contains(&format!("a line over {} bytes", 64 * 1024)));
        // pminit and the worker are fine.
        assert!(http_get(port).is_ok());
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    }
}

#[test]
fn send_shutdown_sends_pm2s_message_before_the_stop_signal() {
    let Some(app) = node_app("send_shutdown") else {
        return;
    };
    for node in node_versions("send_shutdown") {
        let (mut run, _port) = start_app(
            &app,
            &node,
            "shutdown_message.js",
            &["--send-shutdown"],
            vec![],
        );
        run.expect_err("is ready");
        run.signal(libc::SIGTERM);
        run.expect_out("got shutdown");
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    }
}

#[test]
fn sd_notify_ready_and_stopping_from_a_python_worker() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut run = Run::start(
        Mode::Subreaper,
        &[
            "-v",
            "--wait-ready",
            "-l",
            &listen,
            "--",
            python(),
            &fixture("notify.py"),
        ],
    );
    run.expect_ready(1);
    // Ready because of READY=1 (pminit logs what it received, in order).
    let err = run.stderr_lines();
    let notified = err
        .iter()
        .position(|l| l.contains("notified READY=1"))
        .expect("READY=1 received");
    let ready = err
        .iter()
        .position(|l| l.contains("is ready"))
        .expect("ready");
    assert!(notified < ready, "{err:?}");
    run.signal(libc::SIGTERM);
    run.expect_err("notified STOPPING=1");
    assert_eq!(run.wait_code(), 0, "{}", run.transcript());
}

#[test]
fn a_worker_over_max_memory_is_replaced_without_failed_requests() {
    let Some(app) = node_app("a_worker_over_max_memory") else {
        return;
    };
    for node in node_versions("a_worker_over_max_memory") {
        let once = std::env::temp_dir().join(format!("pminit-hog-{}", std::process::id()));
        let _ = std::fs::remove_file(&once);
        let (mut run, port) = start_app(
            &app,
            &node,
            "hog.js",
            &["-i", "2", "--max-memory", "150M"],
            vec![("HOG_ONCE_FILE".into(), once.display().to_string())],
        );
        run.expect_ready(2);
        let load = Load::start(port, 2, false);
        let grew = run.expect_out("grew pid=");
        let hog = field(&grew, "pid");
        let line = run.expect_err("over --max-memory");
        assert!(line.contains(&format!("pid {hog}")), "{line}");
        run.expect_err(&format!("(pid {hog}) asked to stop"));
        run.expect_err(&format!("(pid {hog}) exited"));
        let report = load.finish();
        assert_eq!(report.failures, Vec::<String>::new());
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
        let _ = std::fs::remove_file(&once);
    }
}

#[test]
fn ttin_adds_a_worker_and_ttou_drains_one() {
    let Some(app) = node_app("ttin_adds_a_worker") else {
        return;
    };
    for node in node_versions("ttin_adds_a_worker") {
        let (mut run, port) = start_app(&app, &node, "plain.js", &["-i", "2"], vec![]);
        run.expect_ready(2);
        run.signal(libc::SIGTTIN);
        run.expect_err("now 3 workers");
        run.expect_ready(3);
        let mut pids = std::collections::BTreeSet::new();
        for _ in 0..500 {
            pids.insert(field(&http_get(port).expect("request"), "pid"));
            if pids.len() == 3 {
                break;
            }
        }
        assert_eq!(pids.len(), 3);
        let load = Load::start(port, 2, true);
        run.signal(libc::SIGTTOU);
        run.expect_err("now 2 workers");
        let line = run.expect_err("worker 2 (pid");
        assert!(line.contains("asked to stop"), "{line}");
        run.expect_count(
            "an exit",
            1,
            |l| matches!(l, Line::Err(s) if s.contains("exited")),
        );
        let report = load.finish();
        assert_eq!(report.failures, Vec::<String>::new());
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    }
}
