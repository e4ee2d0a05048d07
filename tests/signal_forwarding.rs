//! Catchable signals other than TERM/INT/HUP/CHLD/TTIN/TTOU reach every worker's
//! process group; a burst of signals leaves pminit alive and correct.

mod common;
use common::*;

#[test]
fn usr1_usr2_quit_winch_are_forwarded() {
    for mode in modes("usr1_usr2_quit_winch_are_forwarded") {
        let mut run = Run::start(
            mode,
            &[
                "--",
                python(),
                &fixture("catch.py"),
                "SIGUSR1",
                "SIGUSR2",
                "SIGQUIT",
                "SIGWINCH",
                "SIGINT",
            ],
        );
        run.expect_out("ready");
        for (sig, name) in [
            (libc::SIGUSR1, "SIGUSR1"),
            (libc::SIGUSR2, "SIGUSR2"),
            (libc::SIGQUIT, "SIGQUIT"),
            (libc::SIGWINCH, "SIGWINCH"),
        ] {
            run.signal(sig);
            run.expect_out(&format!("got {name}"));
        }
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "[{mode:?}]\n{}", run.transcript());
    }
}

#[test]
fn a_burst_of_ten_thousand_signals_leaves_pminit_alive_and_correct() {
    for mode in modes("a_burst_of_ten_thousand_signals") {
        let mut run = Run::start(
            mode,
            &[
                "--",
                python(),
                &fixture("catch.py"),
                "--ignore",
                "SIGUSR1",
                "--ignore",
                "SIGURG",
                "SIGUSR2",
                "SIGINT",
            ],
        );
        run.expect_out("ready");
        let pid = run.pminit_pid();
        let burst = [libc::SIGUSR1, libc::SIGWINCH, libc::SIGCHLD, libc::SIGURG];
        for i in 0..10_000 {
            // SAFETY: kill has no memory-safety preconditions.
            let r = unsafe { libc::kill(pid, burst[i % burst.len()]) };
            assert_eq!(r, 0, "pminit died during the burst after {i} signals");
        }
        // Still forwarding, still stopping gracefully.
        run.signal(libc::SIGUSR2);
        run.expect_out("got SIGUSR2");
        run.signal(libc::SIGTERM);
        run.expect_out("got SIGINT");
        assert_eq!(run.wait_code(), 0, "[{mode:?}]\n{}", run.transcript());
    }
}
