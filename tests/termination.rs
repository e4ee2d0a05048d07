//! Graceful stop: TERM/INT -> stop-delay -> stop signal to every worker group
//! -> kill-timeout for the whole tree -> SIGKILL; and a second TERM.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn term_reaches_the_worker_as_sigint_and_exits_0() {
    for mode in modes("term_reaches_the_worker_as_sigint") {
        for sig in [libc::SIGTERM, libc::SIGINT] {
            let mut run = Run::start(
                mode,
                &["--", python(), &fixture("catch.py"), "SIGINT", "SIGTERM"],
            );
            run.expect_out("ready");
            run.signal(sig);
            run.expect_out("got SIGINT");
            assert_eq!(run.wait_code(), 0, "[{mode:?}]\n{}", run.transcript());
            assert!(!run.transcript().contains("got SIGTERM"));
        }
    }
}

#[test]
fn stop_signal_is_configurable() {
    for mode in modes("stop_signal_is_configurable") {
        let mut run = Run::start(
            mode,
            &[
                "--stop-signal",
                "SIGTERM",
                "--",
                python(),
                &fixture("catch.py"),
                "SIGINT",
                "SIGTERM",
            ],
        );
        run.expect_out("ready");
        run.signal(libc::SIGTERM);
        run.expect_out("got SIGTERM");
        // Exit 0: the handler exits 0.
        assert_eq!(run.wait_code(), 0, "[{mode:?}]\n{}", run.transcript());
    }
}

/// pminit with `--kill-timeout grace` over a worker that ignores SIGINT,
/// once the worker is up.
fn sigint_ignorer(mode: Mode, grace: &str) -> Run {
    let catch = fixture("catch.py");
    let args = [
        "--kill-timeout",
        grace,
        "--",
        python(),
        &catch,
        "--ignore",
        "SIGINT",
    ];
    let run = Run::start(mode, &args);
    run.expect_out("ready");
    run
}

#[test]
fn a_worker_that_ignores_sigint_is_killed_after_the_grace() {
    for mode in modes("a_worker_that_ignores_sigint_is_killed") {
        let mut run = sigint_ignorer(mode, "1s");
        let t = Instant::now();
        run.signal(libc::SIGTERM);
        let code = run.wait_code();
        let took = t.elapsed();
        assert_eq!(
            code,
            137,
            "[{mode:?}] SIGKILL needed: 137\n{}",
            run.transcript()
        );
        // Loose on purpose: not before the grace, and not absurdly after.
        assert!(
            took >= Duration::from_millis(950),
            "[{mode:?}] killed early: {took:?}"
        );
        assert!(
            took < Duration::from_secs(10),
            "[{mode:?}] killed late: {took:?}"
        );
        run.drain();
        assert!(run.transcript().contains("SIGKILL"), "{}", run.transcript());
    }
}

#[test]
fn a_second_term_skips_the_rest_of_the_grace() {
    for mode in modes("a_second_term_skips_the_rest_of_the_grace") {
        let mut run = sigint_ignorer(mode, "1h");
        run.signal(libc::SIGTERM);
        run.expect_err("SIGKILL in 3600000 ms");
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 137, "[{mode:?}]\n{}", run.transcript());
    }
}

#[test]
fn grandchild_cleanup_finishes_before_pminit_exits() {
    // tini #180: the worker dies at once on SIGINT; its grandchild needs
    // 0.5 s to clean up. pminit must wait for it.
    for mode in modes("grandchild_cleanup_finishes") {
        let mut run = Run::start(mode, &["--", python(), &fixture("cleanup_grandchild.py")]);
        let ready = run.expect_out("ready");
        let grandchild = field(&ready, "grandchild");
        run.signal(libc::SIGTERM);
        let code = run.wait_code();
        // When pminit is gone, so is the grandchild: it was waited for. (In
        // PID-1 mode the pid is the namespace's, so look only as subreaper.)
        if mode == Mode::Subreaper {
            let state = stat_fields(grandchild).map(|f| f[0].clone());
            assert!(
                state.is_none(),
                "grandchild {grandchild} outlived pminit: {state:?}"
            );
        }
        run.drain();
        assert!(
            run.transcript().contains("out| cleanup done"),
            "[{mode:?}] cleanup cut short:\n{}",
            run.transcript()
        );
        assert_eq!(code, 0, "[{mode:?}]\n{}", run.transcript());
    }
}

#[test]
fn stop_delay_keeps_serving_before_the_stop_signal() {
    for mode in modes("stop_delay_keeps_serving") {
        let mut run = Run::start(
            mode,
            &[
                "--stop-delay",
                "700ms",
                "--",
                python(),
                &fixture("catch.py"),
                "SIGINT",
                "SIGUSR1",
            ],
        );
        run.expect_out("ready");
        let t = Instant::now();
        run.signal(libc::SIGTERM);
        run.expect_err("still serving for 700 ms");
        // Still serving: a forwarded signal is handled meanwhile.
        run.signal(libc::SIGUSR1);
        run.expect_out("got SIGUSR1");
        run.expect_out("got SIGINT");
        assert!(
            t.elapsed() >= Duration::from_millis(650),
            "stop signal came early"
        );
        assert_eq!(run.wait_code(), 0, "[{mode:?}]\n{}", run.transcript());
    }
}

#[test]
fn an_orphan_reparented_after_the_stop_sweep_gets_the_stop_signal_too() {
    // The orphan reaches pminit only once the worker has died of SIGINT, so
    // after the stop signal went out. With a 1 h grace, only the stop
    // signal (not SIGKILL at the grace's end) can make it print.
    for mode in modes("an_orphan_reparented_after_the_stop_sweep") {
        let mut run = Run::start(
            mode,
            &[
                "--kill-timeout",
                "1h",
                "--",
                python(),
                &fixture("late_orphan.py"),
            ],
        );
        run.expect_out("ready");
        run.signal(libc::SIGTERM);
        run.expect_out("late orphan got SIGINT");
        assert_eq!(run.wait_code(), 0, "[{mode:?}]\n{}", run.transcript());
    }
}

#[test]
fn a_thousand_stubborn_orphans_are_gone_within_grace_plus_one_second() {
    // As subreaper (PID 1 kills with kill(-1) at once): pminit finds and
    // SIGKILLs the orphans itself, scanning /proc once per wake-up, not once
    // per reaped orphan.
    const N: usize = 1000;
    const GRACE: Duration = Duration::from_secs(1);
    let mut run = Run::start(
        Mode::Subreaper,
        &[
            "--kill-timeout",
            "1s",
            "--",
            python(),
            &fixture("stubborn_orphans.py"),
            &N.to_string(),
        ],
    );
    let line = run.expect_out("orphans:");
    let orphans: Vec<i32> = line
        .split_whitespace()
        .skip(1)
        .map(|p| p.parse().expect("pid"))
        .collect();
    assert_eq!(orphans.len(), N);
    let sent = Instant::now();
    run.signal(libc::SIGTERM);
    // The acceptance deadline: grace + 1 s from the stop.
    let status = run.wait_within(GRACE + Duration::from_secs(1));
    let took = sent.elapsed();
    let expired = run
        .stderr_lines()
        .iter()
        .any(|l| l.contains("SIGKILL") || l.contains("grace"));
    assert!(
        status.is_some(),
        "pminit still running {took:?} after the stop with {N} orphans (grace {GRACE:?}); \
         grace expiry logged: {expired}"
    );
    println!(
        "{N} orphans: stop -> exit {took:?} (grace {GRACE:?}, so {:?} after the grace)",
        took.saturating_sub(GRACE)
    );
    let left: Vec<i32> = orphans
        .iter()
        .copied()
        .filter(|&p| stat_fields(p).is_some())
        .collect();
    assert!(left.is_empty(), "{} orphans outlived pminit", left.len());
}
