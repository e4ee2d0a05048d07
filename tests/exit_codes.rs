//! Exit codes: the worker's own code or 128+signal (as tini), 2 for bad
//! input, 127 for a missing command, 126 for one that cannot be executed.

mod common;
use common::*;
use std::process::Command;

fn pminit_code(args: &[&str]) -> (i32, String) {
    let out = Command::new(PMINIT)
        .args(args)
        .output()
        .expect("run pminit");
    (
        out.status.code().expect("pminit exits, it is not killed"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_exit_code_0_to_255_passes_through() {
    for code in 0..=255 {
        let script = format!("exit {code}");
        let (got, err) = pminit_code(&["--restart", "never", "--", "sh", "-c", &script]);
        assert_eq!(got, code, "{err}");
    }
}

#[test]
fn death_by_signal_gives_128_plus_n() {
    for mode in modes("death_by_signal_gives_128_plus_n") {
        for (sig, code) in [
            ("TERM", 143),
            ("KILL", 137),
            ("USR1", 138),
            ("SEGV", 139),
            ("ABRT", 134),
        ] {
            let script = format!("kill -{sig} $$");
            let mut run = Run::start(mode, &["--restart", "never", "--", "sh", "-c", &script]);
            assert_eq!(
                run.wait_code(),
                code,
                "[{mode:?}] SIG{sig}\n{}",
                run.transcript()
            );
        }
    }
}

#[test]
fn codes_pass_through_as_pid_1() {
    for mode in modes("codes_pass_through_as_pid_1") {
        for code in [0, 1, 2, 3, 42, 126, 127, 128, 200, 255] {
            let script = format!("exit {code}");
            let mut run = Run::start(mode, &["--restart", "never", "--", "sh", "-c", &script]);
            assert_eq!(run.wait_code(), code, "[{mode:?}]\n{}", run.transcript());
        }
    }
}

#[test]
fn missing_command_is_127_and_not_executable_is_126() {
    let (code, err) = pminit_code(&["--", "/no/such/program"]);
    assert_eq!(code, 127);
    assert!(
        err.contains("/no/such/program") && err.contains("No such file"),
        "{err}"
    );
    let (code, err) = pminit_code(&["--", "no-such-program-on-path-xyz"]);
    assert_eq!(code, 127, "{err}");
    let plain = std::env::temp_dir().join(format!("pminit-not-executable-{}", std::process::id()));
    std::fs::write(&plain, "#!/bin/sh\necho should not run\n").expect("write");
    std::fs::set_permissions(&plain, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let plain_str = plain.to_string_lossy().into_owned();
    let (code, err) = pminit_code(&["--", &plain_str]);
    let _ = std::fs::remove_file(&plain);
    assert_eq!(code, 126, "{err}");
    assert!(
        err.contains(&plain_str) && err.contains("Permission denied"),
        "{err}"
    );
    let (code, err) = pminit_code(&["--", "/tmp"]);
    assert_eq!(code, 126, "{err}");
}

#[test]
fn bad_flags_exit_2_with_one_line_naming_the_flag() {
    let table: &[(&[&str], &[&str])] = &[
        (
            &["--kill-timeout", "abc", "--", "true"],
            &["--kill-timeout", "\"abc\"", "1600ms"],
        ),
        (
            &["--stop-signal", "BOGUS", "--", "true"],
            &["--stop-signal", "\"BOGUS\"", "SIGINT"],
        ),
        (
            &["--stop-delay", "1d", "--", "true"],
            &["--stop-delay", "\"1d\""],
        ),
        (
            &["--restart", "sometimes", "--", "true"],
            &["--restart", "always, on-failure or never"],
        ),
        (
            &["--max-restarts", "many", "--", "true"],
            &["--max-restarts", "\"many\""],
        ),
        (
            &["--min-uptime", "1x", "--", "true"],
            &["--min-uptime", "\"1x\""],
        ),
        (
            &["--log-format", "yaml", "--", "true"],
            &["--log-format", "text or json"],
        ),
        (&["--no-such-flag", "--", "true"], &["--no-such-flag"]),
        (&["--"], &["no command"]),
        (&[], &["no command"]),
    ];
    for (args, wants) in table {
        let (code, err) = pminit_code(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err:?}");
        for want in *wants {
            assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
        }
    }
    // The same from the environment names the variable.
    let out = Command::new(PMINIT)
        .args(["--", "true"])
        .env("PMINIT_KILL_TIMEOUT", "forever")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("PMINIT_KILL_TIMEOUT") && err.contains("\"forever\""),
        "{err}"
    );
}

#[test]
fn help_and_version_exit_0() {
    let out = Command::new(PMINIT).arg("--help").output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--kill-timeout",
        "--stop-signal",
        "--stop-delay",
        "--restart",
        "--max-restarts",
        "--min-uptime",
        "--log-format",
        "--verbose",
        "--version",
    ] {
        assert!(help.contains(flag), "help lacks {flag}:\n{help}");
    }
    let out = Command::new(PMINIT).arg("--version").output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pminit "));
}
