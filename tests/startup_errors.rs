//! Start-up errors that must name their real cause: sockets pminit does not
//! own, overlapping --listen addresses, spawn failures from resource
//! shortages, bad --user ids, missing #! interpreters, non-UTF-8 variables.
//! Each asserts the exit code and the message.

mod common;
use common::*;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;

fn pminit_with(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> (i32, String) {
    let mut cmd = Command::new(PMINIT);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run pminit");
    (
        out.status.code().expect("pminit exits, it is not killed"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn pminit_code(args: &[&str]) -> (i32, String) {
    pminit_with(args, &[])
}

/// A listening TCP socket on 127.0.0.1 with SO_REUSEADDR and SO_REUSEPORT,
/// as a second pminit or a careless app would hold it; and its port.
fn reuseport_listener() -> (OwnedFd, u16) {
    // SAFETY: plain socket calls on a socket we own; every pointer passed
    // points to a live local of the size given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            let r = libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            assert_eq!(r, 0, "setsockopt");
        }
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                len
            ),
            0,
            "bind"
        );
        assert_eq!(libc::listen(fd.as_raw_fd(), 16), 0, "listen");
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut glen = len;
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut got as *mut libc::sockaddr_in).cast(),
            &mut glen,
        );
        (fd, u16::from_be(got.sin_port))
    }
}

#[test]
fn a_port_held_by_a_stranger_with_reuseport_is_a_startup_error() {
    let (_held, port) = reuseport_listener();
    for (listen, layout) in [
        (format!("127.0.0.1:{port}"), "shared"),
        (format!("127.0.0.1:{port}"), "per-worker"),
        // A plain PORT binds [::] dual-stack: that takes 127.0.0.1 too.
        (port.to_string(), "shared"),
    ] {
        let (code, err) = pminit_code(&[
            "-i",
            "2",
            "--socket-layout",
            layout,
            "-l",
            &listen,
            "--",
            "true",
        ]);
        assert_eq!(code, 1, "{listen} ({layout}): {err}");
        assert!(
            err.contains(&format!("--listen {listen}: cannot bind")) && err.contains("EADDRINUSE"),
            "{listen} ({layout}): {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn a_port_held_by_another_pminit_is_a_startup_error() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let first = Run::start(
        Mode::Subreaper,
        &[
            "-l",
            &listen,
            "--",
            python(),
            &fixture("catch.py"),
            "SIGINT",
        ],
    );
    first.expect_out("ready");
    let (code, err) = pminit_code(&["-l", &listen, "--", "true"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("--listen {listen}: cannot bind")) && err.contains("EADDRINUSE"),
        "{err}"
    );
    // The first one still serves alone.
    first.signal(libc::SIGTERM);
    let mut first = first;
    assert_eq!(first.wait_code(), 0, "{}", first.transcript());
}

#[test]
fn port_auto_bind_names_port_when_a_stranger_holds_it() {
    let (_held, port) = reuseport_listener();
    let (code, err) = pminit_with(
        &["--", "node", "-e", "0"],
        &[("PORT", std::ffi::OsStr::new(&port.to_string()))],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("$PORT {port}: cannot bind")) && err.contains("EADDRINUSE"),
        "{err}"
    );
}

/// Local ports on 127.0.0.1 with a TCP connection in TIME_WAIT.
fn time_wait_ports() -> Vec<u16> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local "0100007F:1F90", state 06 = TIME_WAIT
            let (ip, port) = f.get(1)?.split_once(':')?;
            (ip == "0100007F" && f.get(3) == Some(&"06"))
                .then(|| u16::from_str_radix(port, 16).ok())
                .flatten()
        })
        .collect()
}

#[test]
fn a_port_with_connections_in_time_wait_still_binds() {
    use std::io::Read;
    // A server that closes first leaves its side in TIME_WAIT on the port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (served, _) = listener.accept().expect("accept");
    drop(served);
    let mut buf = [0u8; 1];
    assert_eq!(client.read(&mut buf).expect("EOF"), 0);
    drop(client);
    drop(listener);
    assert!(
        time_wait_ports().contains(&port),
        "no TIME_WAIT on port {port}: the test's premise"
    );
    for layout in ["shared", "per-worker"] {
        let (code, err) = pminit_code(&[
            "--socket-layout",
            layout,
            "--restart",
            "never",
            "-l",
            &format!("127.0.0.1:{port}"),
            "--",
            "true",
        ]);
        assert_eq!(code, 0, "{layout}: {err}");
    }
}

#[test]
fn overlapping_listen_addresses_are_a_startup_error_naming_both() {
    let p = free_port();
    for (a, b) in [
        (p.to_string(), p.to_string()),
        (p.to_string(), format!("127.0.0.1:{p}")),
        (format!("0.0.0.0:{p}"), format!("127.0.0.1:{p}")),
        (format!("[::]:{p}"), format!("0.0.0.0:{p}")),
        (format!("[::]:{p}"), format!("[::1]:{p}")),
    ] {
        let (code, err) = pminit_code(&["-l", &a, "-l", &b, "--", "true"]);
        assert_eq!(code, 2, "{a} + {b}: {err}");
        assert!(
            err.contains("--listen") && err.contains(&format!("{a} and {b} overlap")),
            "{a} + {b}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    // Two loopback addresses on one port do not overlap.
    let (code, err) = pminit_code(&[
        "--restart",
        "never",
        "-l",
        &format!("127.0.0.1:{p}"),
        "-l",
        &format!("127.0.0.2:{p}"),
        "--",
        "true",
    ]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn user_id_out_of_range_is_refused_at_parse_time() {
    for (args, env, name) in [
        (vec!["--user", "4294967295", "--", "true"], vec![], "--user"),
        (
            vec!["--user", "1000:4294967295", "--", "true"],
            vec![],
            "--user",
        ),
        (
            vec!["--", "true"],
            vec![("PMINIT_USER", std::ffi::OsStr::new("4294967295"))],
            "PMINIT_USER",
        ),
    ] {
        let (code, err) = pminit_with(&args, &env);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.starts_with(&format!("pminit: {name}"))
                && err.contains("out of range")
                && err.contains("0-4294967294"),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn pminit_user_errors_name_the_variable() {
    let (code, err) = pminit_with(
        &["--", "true"],
        &[("PMINIT_USER", std::ffi::OsStr::new("no-such-user-here"))],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("pminit: PMINIT_USER") && err.contains("no-such-user-here"),
        "{err}"
    );
    let (code, err) = pminit_code(&["--user", "no-such-user-here", "--", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("pminit: --user:"), "{err}");
}

#[test]
fn a_script_whose_interpreter_is_missing_exits_127_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("pminit-shebang-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let script = dir.join("app.sh");
    std::fs::write(&script, "#!/usr/bin/nonexistent -x\necho hi\n").expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = Command::new(PMINIT)
        .args(["--", "./app.sh"])
        .current_dir(&dir)
        .output()
        .expect("run pminit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "{err}");
    assert!(
        err.contains("\"./app.sh\": interpreter /usr/bin/nonexistent (from its #! line) not found"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn variables_that_are_not_utf8_are_an_error_naming_them() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"3\xffs");
    for (name, cmd) in [
        ("PMINIT_KILL_TIMEOUT", "true"),
        ("PMINIT_LISTEN", "true"),
        ("PMINIT_USER", "true"),
        // $PORT is read only for a Node command without --listen.
        ("PORT", "node"),
    ] {
        let (code, err) = pminit_with(&["--", cmd, "-e", "0"], &[(name, bad)]);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(
            err.starts_with(&format!("pminit: {name}")) && err.contains("not valid UTF-8"),
            "{name}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn out_of_file_descriptors_at_the_first_spawn_exits_1_naming_it() {
    // Six fds: 0-2, the signalfd, the notify and control sockets; the
    // spawn's own pipe cannot be made.
    let out = Command::new("prlimit")
        .args(["--nofile=6", PMINIT, "--", "true"])
        .output()
        .expect("run prlimit (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("cannot start \"true\": out of file descriptors (EMFILE)"),
        "{err}"
    );
}

/// A pids cgroup (v1) limited to `max` processes, removed on drop.
struct PidsCgroup {
    dir: std::path::PathBuf,
}

impl PidsCgroup {
    fn new(test: &str, max: u32) -> Option<PidsCgroup> {
        let root = std::path::Path::new("/sys/fs/cgroup/pids");
        if !require(
            is_root() && root.join("cgroup.procs").is_file(),
            test,
            "root and a cgroup v1 pids controller at /sys/fs/cgroup/pids",
        ) {
            return None;
        }
        let dir = root.join(format!("pminit-test-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir pids cgroup");
        std::fs::write(dir.join("pids.max"), max.to_string()).expect("pids.max");
        Some(PidsCgroup { dir })
    }

    /// `sh -c` that moves itself into the cgroup, then execs pminit.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
            .arg(&self.dir)
            .arg(PMINIT)
            .args(args);
        cmd
    }

    /// How many forks the limit refused so far (pids.events "max N").
    fn refused(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("pids.events"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn fork_eagain_at_the_first_spawn_exits_1_naming_the_process_limit() {
    let test = "fork_eagain_at_the_first_spawn";
    let Some(cg) = PidsCgroup::new(test, 1) else {
        return;
    };
    let out = cg.command(&["--", "true"]).output().expect("run pminit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "not 126: {err}");
    assert!(
        err.contains("cannot start \"true\": out of processes (EAGAIN)")
            && err.contains("pids limit"),
        "{err}"
    );
    assert!(cg.refused() >= 1, "the limit refused no fork");
}

#[test]
fn a_spawn_shortage_after_start_is_reported_once_and_retried_with_backoff() {
    let test = "a_spawn_shortage_after_start";
    // pminit and one worker fit; the second worker's fork is refused.
    let Some(cg) = PidsCgroup::new(test, 2) else {
        return;
    };
    let mut run = Run::spawn(
        Mode::Subreaper,
        cg.command(&["-i", "2", "--", python(), &fixture("catch.py"), "SIGINT"]),
        Options::default(),
    );
    run.expect_out("ready");
    run.expect_count(
        "reporting the shortage",
        1,
        |l| matches!(l, Line::Err(s) if s.contains("out of processes (EAGAIN)")),
    );
    // Wait (bounded) until the limit has refused a few retries.
    let end = std::time::Instant::now() + DEADLINE;
    while cg.refused() < 4 {
        assert!(
            std::time::Instant::now() < end,
            "only {} refused forks within {DEADLINE:?}:\n{}",
            cg.refused(),
            run.transcript()
        );
        let _ = run.wait_within(std::time::Duration::from_millis(50));
    }
    let refused = cg.refused();
    run.signal(libc::SIGTERM);
    run.wait_code();
    let reports = run
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("out of processes"))
        .count();
    println!("{refused} refused forks, {reports} report(s)");
    assert_eq!(reports, 1, "{}", run.transcript());
    // The restart backoff (100 ms, doubling) paces the retries: a spin
    // would have made thousands by the time four were seen.
    assert!(refused < 50, "{refused} retries: spinning");
}
