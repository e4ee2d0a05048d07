//! The documented static build (scripts/build-static.sh) produces a binary
//! that `file` calls statically linked, and that binary works.

mod common;
use common::*;
use std::process::Command;

#[test]
fn build_static_gives_a_statically_linked_binary_that_runs() {
    let has_file = Command::new("file").arg("--version").output().is_ok();
    if !require(
        has_file,
        "build_static_gives_a_statically_linked_binary",
        "the `file` command",
    ) {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-static.sh");
    let out = Command::new("bash")
        .arg(script)
        .output()
        .expect("run build-static.sh");
    assert!(
        out.status.success(),
        "build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let file = Command::new("file").arg(&path).output().expect("file");
    let what = String::from_utf8_lossy(&file.stdout);
    assert!(
        what.contains("statically linked") || what.contains("static-pie linked"),
        "not static: {what}"
    );
    let size = std::fs::metadata(&path).expect("binary").len();
    eprintln!("static binary: {path}: {size} bytes");

    let version = Command::new(&path).arg("--version").output().expect("run");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("pminit "));
    let run = Command::new(&path)
        .args(["--restart", "never", "--", "sh", "-c", "exit 3"])
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(3));
}
