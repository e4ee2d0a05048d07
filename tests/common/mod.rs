//! Shared harness for the integration tests: runs the real pminit binary as
//! PID 1 of a fresh PID namespace (`unshare --pid --fork --mount-proc`, needs
//! root) or as a plain child of the test (where it is a subreaper), reads its
//! output line by line, and waits for observable events with deadlines.
//!
//! A test that needs something missing says so loudly on stderr; with
//! `PMINIT_TEST_STRICT=1` (set by .ci/run) it fails instead of skipping.

// Every test file compiles this harness as its own module and uses a
// different part of it, so what one file leaves unused is not dead: the
// allowance is here once, for the whole harness (its submodules inherit it).
#![allow(dead_code, unused_imports)]

mod cgroup;
mod net;
mod node;
mod procfs;
mod pty;
mod run;

pub use cgroup::*;
pub use net::*;
pub use node::*;
pub use procfs::*;
pub use pty::*;
pub use run::*;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub const PMINIT: &str = env!("CARGO_BIN_EXE_pminit");
/// Generous: the machine may be busy with other tests. Nothing waits this
/// long unless something is broken.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn fixture(name: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", name]
        .iter()
        .collect();
    p.to_string_lossy().into_owned()
}

/// The real python3 (pyenv's shim would add a process and a second of start-up).
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is needed for the test fixtures");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

fn strict() -> bool {
    std::env::var("PMINIT_TEST_STRICT").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Skips (loudly) or, under PMINIT_TEST_STRICT, fails when `ok` is false.
pub fn require(ok: bool, test: &str, what: &str) -> bool {
    if ok {
        return true;
    }
    if strict() {
        panic!("{test}: needs {what}; PMINIT_TEST_STRICT forbids skipping");
    }
    eprintln!(
        "\n*** SKIPPED {test}: needs {what} (set PMINIT_TEST_STRICT=1 to fail instead) ***\n"
    );
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// PID 1 of a new PID namespace.
    Pid1,
    /// A plain child of the test process: pminit makes itself a subreaper.
    Subreaper,
}

/// Both modes when we are root; the subreaper mode alone (loudly) otherwise.
pub fn modes(test: &str) -> Vec<Mode> {
    if require(is_root(), test, "root for unshare --pid (PID-1 mode)") {
        vec![Mode::Subreaper, Mode::Pid1]
    } else {
        vec![Mode::Subreaper]
    }
}
