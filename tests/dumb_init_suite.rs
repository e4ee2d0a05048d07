//! dumb-init's own test suite, run against pminit through a dumb-init-shaped
//! shim (scripts/dumb-init-suite.sh; the reason for each test it deselects
//! is written there). Needs the source fetched first
//! (`scripts/dumb-init-suite.sh fetch`, done by the test setup), root, and
//! Debian's python3-pytest, python3-py and python3-pytest-timeout.

mod common;
use common::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

/// Tests of dumb-init 1.2.5's suite that pminit runs (the rest are
/// deselected with a reason); a change in this number is a change in what
/// is checked.
const EXPECTED_PASSED: &str = "54 passed";

fn root() -> String {
    env!("CARGO_MANIFEST_DIR").to_string()
}

#[test]
fn dumb_init_own_suite_passes_through_the_shim() {
    let test = "dumb_init_own_suite_passes_through_the_shim";
    let src = std::env::var("DUMB_INIT_SRC")
        .unwrap_or_else(|_| format!("{}/target/dumb-init-src", root()));
    let fetched = std::path::Path::new(&src)
        .join("dumb-init-1.2.5/tests/exit_status_test.py")
        .is_file();
    if !require(
        fetched,
        test,
        "dumb-init's source (scripts/dumb-init-suite.sh fetch)",
    ) {
        return;
    }
    let pytest = Command::new("/usr/bin/python3")
        .args(["-c", "import pytest, py, pytest_timeout"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !require(
        pytest,
        test,
        "python3-pytest, python3-py, python3-pytest-timeout",
    ) || !require(is_root(), test, "root (test-zombies runs as PID 1)")
    {
        return;
    }
    let mut child = Command::new(format!("{}/scripts/dumb-init-suite.sh", root()))
        .arg("run")
        .env("PMINIT_BIN", PMINIT)
        .env("DUMB_INIT_SRC", &src)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/dumb-init-suite.sh");
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut o = String::new();
        let mut e = String::new();
        let _ = out.read_to_string(&mut o);
        let _ = err.read_to_string(&mut e);
        let _ = tx.send(o + &e);
    });
    // Each of its tests has pytest-timeout's 5 s; the whole run takes ~10 s.
    let Ok(output) = rx.recv_timeout(Duration::from_secs(180)) else {
        let _ = child.kill();
        panic!("dumb-init's suite still running after 180 s");
    };
    let status = child.wait().expect("wait");
    assert!(status.success(), "dumb-init's suite failed:\n{output}");
    for want in [
        EXPECTED_PASSED,
        "test-zombies passed",
        "orphan case passed",
        "dumb-init-suite: all passed",
    ] {
        assert!(output.contains(want), "no {want:?} in:\n{output}");
    }
    println!(
        "{}",
        output
            .lines()
            .filter(|l| l.contains("passed"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
