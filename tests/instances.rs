//! `-i N|max|0|-K`: max is the CPUs this container may use, affinity and
//! cgroup quota both counted.

mod common;
use common::*;
use std::ffi::CString;
use std::process::Command;

/// How many workers pminit started: each prints its slot once and exits.
fn workers_started(prefix: &[&str], args: &[&str], opts: Options) -> usize {
    let mut cmd_args: Vec<&str> = prefix.to_vec();
    cmd_args.push(PMINIT);
    cmd_args.extend_from_slice(args);
    cmd_args.extend_from_slice(&[
        "--restart",
        "never",
        "--",
        "sh",
        "-c",
        "echo slot=$PMINIT_WORKER",
    ]);
    let mut cmd = Command::new(cmd_args[0]);
    cmd.args(&cmd_args[1..]);
    if let Some(f) = opts.pre_exec {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure only calls open/write/close.
        unsafe { cmd.pre_exec(f) };
    }
    let out = cmd.output().expect("run pminit");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let slots: std::collections::BTreeSet<&str> =
        stdout.lines().filter(|l| l.starts_with("slot=")).collect();
    assert_eq!(
        slots.len(),
        stdout.lines().count(),
        "each slot once: {stdout}"
    );
    slots.len()
}

fn nproc() -> usize {
    let out = Command::new("nproc").output().expect("nproc");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn fixed_counts_and_max_follow_the_cpus() {
    let cpus = nproc();
    assert_eq!(workers_started(&[], &["-i", "3"], Options::default()), 3);
    assert_eq!(
        workers_started(&[], &["-i", "max"], Options::default()),
        cpus
    );
    assert_eq!(workers_started(&[], &["-i", "0"], Options::default()), cpus);
    assert_eq!(
        workers_started(&[], &["-i", "-1"], Options::default()),
        (cpus - 1).max(1)
    );
    assert_eq!(workers_started(&[], &["-i", "-99"], Options::default()), 1);
}

#[test]
fn max_counts_only_the_cpus_in_the_affinity_mask() {
    if !require(
        nproc() >= 2,
        "max_counts_only_the_cpus_in_the_affinity_mask",
        "2 or more CPUs",
    ) {
        return;
    }
    assert_eq!(
        workers_started(&["taskset", "-c", "0"], &["-i", "max"], Options::default()),
        1
    );
    assert_eq!(
        workers_started(
            &["taskset", "-c", "0,1"],
            &["-i", "max"],
            Options::default()
        ),
        2
    );
    assert_eq!(
        workers_started(&["taskset", "-c", "0,1"], &["-i", "-1"], Options::default()),
        1
    );
}

#[test]
fn max_counts_the_cgroup_cpu_quota() {
    let test = "max_counts_the_cgroup_cpu_quota";
    if !require(is_root(), test, "root to create a cgroup")
        || !require(nproc() >= 2, test, "2 or more CPUs")
    {
        return;
    }
    let name = format!("pminit-test-{}", std::process::id());
    // cgroup v2 (unified) or v1 (cpu controller).
    let (dir, files): (String, Vec<(&str, &str)>) =
        if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            (
                format!("/sys/fs/cgroup/{name}"),
                vec![("cpu.max", "100000 100000")],
            )
        } else {
            (
                format!("/sys/fs/cgroup/cpu/{name}"),
                vec![
                    ("cpu.cfs_period_us", "100000"),
                    ("cpu.cfs_quota_us", "100000"),
                ],
            )
        };
    let made = std::fs::create_dir(&dir).is_ok()
        && files
            .iter()
            .all(|(f, v)| std::fs::write(format!("{dir}/{f}"), v).is_ok());
    if !require(made, test, "a writable cgroup cpu controller") {
        let _ = std::fs::remove_dir(&dir);
        return;
    }
    let procs = CString::new(format!("{dir}/cgroup.procs")).expect("path");
    let opts = Options {
        pre_exec: Some(Box::new(move || {
            // SAFETY: open/write/close with a valid path and buffer.
            unsafe {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            Ok(())
        })),
        ..Options::default()
    };
    // A quota of one CPU's worth on a machine with more: max is 1.
    let n = workers_started(&[], &["-i", "max"], opts);
    let _ = std::fs::remove_dir(&dir);
    assert_eq!(n, 1, "one CPU of quota");
}
