//! What a worker starts with: its own process group, default signal
//! dispositions, an empty mask, only fds 0-2, its slot in the environment,
//! and the terminal's foreground group when run interactively.

mod common;
use common::*;
use std::process::Command;

/// pminit started with signals blocked and ignored, and with stray fds.
fn messy_parent() -> Options {
    Options {
        pre_exec: Some(Box::new(|| {
            // SAFETY: sigemptyset/sigaddset/sigprocmask/sigaction/dup2 are
            // async-signal-safe and get valid pointers.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                for s in [libc::SIGUSR1, libc::SIGHUP, libc::SIGWINCH, libc::SIGALRM] {
                    libc::sigaddset(&mut set, s);
                }
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                let mut ign: libc::sigaction = std::mem::zeroed();
                ign.sa_sigaction = libc::SIG_IGN;
                for s in [libc::SIGINT, libc::SIGQUIT, libc::SIGUSR2, libc::SIGPIPE] {
                    libc::sigaction(s, &ign, std::ptr::null_mut());
                }
                // Inherited fds without close-on-exec.
                libc::dup2(2, 7);
                libc::dup2(1, 9);
            }
            Ok(())
        })),
        ..Options::default()
    }
}

#[test]
fn worker_signal_mask_and_dispositions_are_clean() {
    for mode in modes("worker_signal_mask_and_dispositions_are_clean") {
        // cat changes no signal state, so its status is what pminit gave it.
        let mut run = Run::start_with(
            mode,
            &["--restart", "never", "--", "cat", "/proc/self/status"],
            messy_parent(),
        );
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
        run.drain();
        let t = run.transcript();
        for field in ["SigBlk", "SigIgn"] {
            let line = t
                .lines()
                .find(|l| l.starts_with(&format!("out| {field}:")))
                .unwrap_or_else(|| panic!("no {field} in\n{t}"));
            let value = line.rsplit(':').next().expect("value").trim();
            assert_eq!(value, "0000000000000000", "[{mode:?}] {field}");
        }
    }
}

#[test]
fn no_stray_fd_reaches_the_worker() {
    for mode in modes("no_stray_fd_reaches_the_worker") {
        let mut run = Run::start_with(
            mode,
            &["--restart", "never", "--", python(), &fixture("fds.py")],
            messy_parent(),
        );
        let line = run.expect_out("fds ");
        assert_eq!(line, "fds 0 1 2", "[{mode:?}]");
        assert_eq!(run.wait_code(), 0);
    }
}

#[test]
fn worker_has_its_own_process_group_and_its_slot() {
    for mode in modes("worker_has_its_own_process_group") {
        let mut run = Run::start(
            mode,
            &[
                "--",
                "sh",
                "-c",
                "echo slot=$PMINIT_WORKER app=$NODE_APP_INSTANCE; exec \"$0\" \"$1\" SIGINT",
                python(),
                &fixture("catch.py"),
            ],
        );
        run.expect_out("slot=0 app=0");
        let ready = run.expect_out("ready");
        assert_eq!(field(&ready, "pid"), field(&ready, "pgid"), "group leader");
        if mode == Mode::Subreaper {
            let pminit_pgid = stat_fields(run.pminit_pid()).expect("pminit")[2].clone();
            assert_ne!(pminit_pgid, field(&ready, "pgid").to_string());
        }
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0);
    }
}

#[test]
fn interactive_run_gives_the_worker_the_terminal_and_ctrl_c_stops_it() {
    // As `docker run -it`: pminit is a session leader with a terminal.
    let mut cmd = Command::new(PMINIT);
    cmd.args(["--", python(), &fixture("tty.py")]);
    let mut pty = OnPty::spawn(cmd);
    let line = pty.wait_for("foreground=", 1);
    assert_eq!(
        field(&line, "pgid"),
        field(&line, "foreground"),
        "worker owns the terminal: {line}"
    );
    // Ctrl-C: the terminal sends SIGINT to the worker's group, not to pminit.
    pty.type_keys(b"\x03");
    let seen = pty.seen.clone();
    let status = pty.wait();
    assert_eq!(
        status.code(),
        Some(130),
        "exit 128+SIGINT, as a shell; saw:\n{seen}"
    );
}
