//! Every TCP port a Node worker listens on is shared the way PORT is, at
//! the host the app names: a second fixed port (admin, metrics) under
//! `-i 2` through reloads and a crash; a 127.0.0.1-bound app reachable on
//! no other address; Node behind a `#!/usr/bin/env node` script;
//! `--no-preload` with an app that uses reusePort itself; the preload's
//! short name in stack traces; and junk or floods of listen requests.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::Path;

/// pminit in `app` with PORT=`port` and `env`.
/// pminit in `app` with `node` first in PATH (the suites run on every
/// supported Node: 22 and 24).
fn start(
    node: &NodeVersion,
    app: &Path,
    port: u16,
    args: &[&str],
    mut env: Vec<(String, String)>,
) -> Run {
    env.push(("PORT".into(), port.to_string()));
    env.push(node.path_env());
    Run::start_with(
        Mode::Subreaper,
        args,
        Options {
            cwd: Some(app.to_path_buf()),
            env,
            ..Options::default()
        },
    )
}

/// New connections to 127.0.0.1:`port` until `want` distinct pids answered.
fn distinct_pids(port: u16, want: usize) -> BTreeSet<i32> {
    let mut pids = BTreeSet::new();
    for _ in 0..2000 {
        let body = http_get(port).unwrap_or_else(|e| panic!("request to {port} failed: {e}"));
        pids.insert(field(&body, "pid"));
        if pids.len() == want {
            break;
        }
    }
    pids
}

/// Lines on stdout containing `text`, so far.
fn out_lines(run: &Run, text: &str) -> Vec<String> {
    run.transcript()
        .lines()
        .filter_map(|l| l.strip_prefix("out| "))
        .filter(|l| l.contains(text))
        .map(String::from)
        .collect()
}

fn count_err(run: &Run, text: &str) -> usize {
    run.stderr_lines()
        .iter()
        .filter(|l| l.contains(text))
        .count()
}

/// The local addresses listening on TCP `port`, from /proc/net/tcp{,6}:
/// ("127.0.0.1", ...) in the kernel's hex, decoded.
fn listeners_on(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is f[1] ("0100007F:0BB8"), st is f[3] (0A = LISTEN).
            let (Some(local), Some(st)) = (f.get(1), f.get(3)) else {
                continue;
            };
            let Some((ip, p)) = local.split_once(':') else {
                continue;
            };
            if *st != "0A" || u16::from_str_radix(p, 16).ok() != Some(port) {
                continue;
            }
            out.push(decode_ip(ip, v6));
        }
    }
    out.sort();
    out
}

/// /proc/net/tcp's address: 32-bit words in host (little-endian) order.
fn decode_ip(hex: &str, v6: bool) -> String {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).unwrap_or(0))
        .collect();
    let bytes: Vec<u8> = words
        .iter()
        .flat_map(|w| w.swap_bytes().to_be_bytes())
        .collect();
    if v6 {
        let mut b = [0u8; 16];
        b.copy_from_slice(&bytes);
        std::net::Ipv6Addr::from(b).to_string()
    } else {
        std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()
    }
}

/// This machine's own addresses that are not loopback (may be none).
fn non_loopback_addresses() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut ifs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below; we only read it.
    unsafe {
        if libc::getifaddrs(&mut ifs) != 0 {
            return out;
        }
        let mut p = ifs;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() && i32::from((*a).sa_family) == libc::AF_INET {
                let sin = &*(a as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() {
                    out.push(ip.into());
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(ifs);
    }
    out
}

fn refused(addr: std::net::SocketAddr) -> bool {
    match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5)) {
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

/// `-i 2` of admin_port.js (PORT and a second, ADMIN_PORT), once both
/// workers listen on both and are ready: (run, port, admin port).
fn start_admin_app(node: &NodeVersion, app: &Path) -> (Run, u16, u16) {
    let port = free_port();
    let admin = free_port();
    let run = start(
        node,
        app,
        port,
        &["-i", "2", "--", "node", "admin_port.js"],
        vec![("ADMIN_PORT".into(), admin.to_string())],
    );
    run.expect_count(
        "saying both workers listen on the admin port",
        2,
        |l| matches!(l, Line::Out(s) if s.starts_with("admin pid=")),
    );
    run.expect_ready(2);
    (run, port, admin)
}

#[test]
fn an_admin_port_is_shared_by_both_workers_through_reloads_and_a_crash() {
    let Some(app) = node_app("an_admin_port_is_shared") else {
        return;
    };
    for node in node_versions("an_admin_port_is_shared") {
        let (mut run, port, admin) = start_admin_app(&node, &app);
        assert_eq!(
            distinct_pids(admin, 2).len(),
            2,
            "both workers serve the admin port"
        );
        let main_load = Load::start(port, 2, false);
        let admin_load = Load::start(admin, 2, false);
        for generation in 1..=3 {
            run.signal(libc::SIGHUP);
            run.expect_err(&format!("reload to generation {generation} finished"));
        }
        let main_report = main_load.finish();
        let admin_report = admin_load.finish();
        for (name, r) in [("main", &main_report), ("admin", &admin_report)] {
            assert_eq!(r.failures, Vec::<String>::new(), "{name}: {} ok", r.ok);
            assert!(r.ok > 100, "{name}: too little load: {}", r.ok);
            assert!(
                r.pids.len() > 2,
                "{name}: new workers answered: {:?}",
                r.pids
            );
        }
        // One socket for the admin port, bound once for the whole run: the
        // reloads reused it.
        assert_eq!(
            count_err(&run, &format!("sharing [::]:{admin}")),
            1,
            "{}",
            run.transcript()
        );
        // A worker killed outright: both ports keep answering.
        let victim = field(&http_get(admin).expect("admin"), "pid");
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
        run.expect_err(&format!("(pid {victim}) exited by SIGKILL"));
        for _ in 0..20 {
            http_get(port).expect("main port after the crash");
            http_get(admin).expect("admin port after the crash");
        }
        // Its replacement takes the admin port too.
        run.expect_count(
            "saying the replacement listens on the admin port",
            2 * 4 + 1,
            |l| matches!(l, Line::Out(s) if s.starts_with("admin pid=")),
        );
        // pminit's own messages never reached the app's 'message' listener.
        assert_eq!(out_lines(&run, "app got message"), Vec::<String>::new());
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
        eprintln!(
            "admin port: {} + {} requests over 3 reloads, 0 failed",
            main_report.ok, admin_report.ok
        );
    }
}

/// `loopback.js` bound to `host` under `-i 2`: (run, port) once both listen.
fn loopback_app(node: &NodeVersion, app: &Path, host: &str) -> (Run, u16) {
    let port = free_port();
    let run = start(
        node,
        app,
        port,
        &["-i", "2", "--", "node", "loopback.js"],
        vec![("BIND_HOST".into(), host.into())],
    );
    run.expect_count(
        "saying both workers listen",
        2,
        |l| matches!(l, Line::Out(s) if s.starts_with("listening pid=")),
    );
    run.expect_ready(2);
    (run, port)
}

#[test]
fn an_app_bound_to_127_0_0_1_is_reachable_on_no_other_address() {
    let Some(app) = node_app("an_app_bound_to_127_0_0_1") else {
        return;
    };
    for node in node_versions("an_app_bound_to_127_0_0_1") {
        let (mut run, port) = loopback_app(&node, &app, "127.0.0.1");
        assert_eq!(listeners_on(port), vec!["127.0.0.1".to_string()]);
        assert_eq!(distinct_pids(port, 2).len(), 2, "both workers serve it");
        assert!(refused(([127, 0, 0, 2], port).into()), "127.0.0.2");
        assert!(refused((std::net::Ipv6Addr::LOCALHOST, port).into()), "::1");
        for ip in non_loopback_addresses() {
            assert!(refused((ip, port).into()), "{ip}");
        }
        // Reloads and restarts keep it there.
        run.signal(libc::SIGHUP);
        run.expect_err("reload to generation 1 finished");
        assert_eq!(listeners_on(port), vec!["127.0.0.1".to_string()]);
        assert!(refused(([127, 0, 0, 2], port).into()));
        http_get(port).expect("still served");
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    }
}

#[test]
fn localhost_means_the_address_node_resolves_it_to() {
    let Some(app) = node_app("localhost_means") else {
        return;
    };
    for node in node_versions("localhost_means") {
        let out = std::process::Command::new(node.node())
            .args([
                "-e",
                "require('dns').lookup('localhost', (e, a) => console.log(a))",
            ])
            .output()
            .expect("node");
        let want = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let (mut run, port) = loopback_app(&node, &app, "localhost");
        assert_eq!(listeners_on(port), vec![want.clone()]);
        for line in out_lines(&run, "listening pid=") {
            assert!(line.ends_with(&format!("address={want}")), "{line}");
        }
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    }
}

#[test]
fn a_start_script_with_a_node_shebang_gets_both_workers_serving() {
    let Some(app) = node_app("a_start_script_with_a_node_shebang") else {
        return;
    };
    for node in node_versions("a_start_script_with_a_node_shebang") {
        let port = free_port();
        let mut run = start(
            &node,
            &app,
            port,
            &["-i", "2", "--", "./bin/serve.js"],
            vec![],
        );
        // Ready means the preload reported the listen: it was injected.
        run.expect_ready(2);
        assert_eq!(distinct_pids(port, 2).len(), 2);
        assert_eq!(count_err(&run, "EADDRINUSE"), 0, "{}", run.transcript());
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    }
}

#[test]
fn no_preload_leaves_port_to_an_app_that_uses_reuse_port_itself() {
    let Some(app) = node_app("no_preload_leaves_port") else {
        return;
    };
    for node in node_versions("no_preload_leaves_port") {
        // listen({reusePort}) needs Node >= 22.12: both supported ones have it.
        let node_bin = node.node().display().to_string();
        let port = free_port();
        let mut run = start(
            &node,
            &app,
            port,
            &["-i", "2", "--no-preload", "--", &node_bin, "reuse_port.js"],
            vec![],
        );
        run.expect_count(
            "saying both workers listen",
            2,
            |l| matches!(l, Line::Out(s) if s.starts_with("listening pid=")),
        );
        // Two listeners, the workers' own: pminit holds none on PORT, so no
        // connection waits in a queue nobody accepts from.
        assert_eq!(listeners_on(port).len(), 2, "{:?}", listeners_on(port));
        let mut pids = BTreeSet::new();
        for i in 0..60 {
            let body = http_get(port).unwrap_or_else(|e| panic!("request {i}: {e}"));
            pids.insert(field(&body, "pid"));
        }
        assert_eq!(
            pids.len(),
            2,
            "the kernel spreads over both workers: {pids:?}"
        );
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    }
}

#[test]
fn a_stack_trace_through_the_preload_names_it_briefly() {
    let Some(app) = node_app("a_stack_trace_through_the_preload") else {
        return;
    };
    for node in node_versions("a_stack_trace_through_the_preload") {
        let port = free_port();
        let mut run = start(
            &node,
            &app,
            port,
            &["--restart", "never", "--", "node", "listen_twice.js"],
            vec![],
        );
        let code = run.wait_code();
        run.drain();
        assert_ne!(code, 0, "the app threw");
        let t = run.transcript();
        assert!(t.contains("ERR_SERVER_ALREADY_LISTEN"), "{t}");
        assert!(t.contains("pminit:preload"), "{t}");
        for l in t.lines() {
            if let Some(i) = l.find("data:text/javascript;base64,") {
                let run_len = l[i..]
                    .split(|c: char| c == ')' || c.is_whitespace())
                    .next()
                    .map_or(0, str::len);
                assert!(run_len <= 100, "a {run_len}-byte data: URL in {:.200}", l);
            }
        }
    }
}

#[test]
fn junk_and_floods_of_listen_requests_get_errors_and_pminit_carries_on() {
    let Some(app) = node_app("junk_and_floods_of_listen_requests") else {
        return;
    };
    for node in node_versions("junk_and_floods_of_listen_requests") {
        if !require(
            is_root(),
            "junk_and_floods_of_listen_requests",
            "root (--user)",
        ) {
            return;
        }
        let mut free = Vec::new();
        while free.len() < 20 {
            let p = free_port();
            if !free.contains(&p) {
                free.push(p);
            }
        }
        let list = free
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let port = free_port();
        let mut run = start(
            &node,
            &app,
            port,
            &["--user", "65534", "--", "node", "listen_junk.js"],
            vec![("FREE_PORTS".into(), list)],
        );
        run.expect_out("done");
        let one = |text: &str| out_lines(&run, text).first().cloned().unwrap_or_default();
        let (junk, flood, ports) = (one("junk "), one("flood answered="), one("ports "));
        assert_eq!(
            junk,
            "junk 1=EINVAL 2=EINVAL 3=EINVAL 4=EINVAL 5=EINVAL 6=EACCES",
            "{}",
            run.transcript()
        );
        // Answered with errors only: EINVAL for the first ones of a wake-up,
        // EAGAIN past LISTEN_REQUESTS_PER_WAKE (answers that do not fit in the
        // channel are dropped: pminit never blocks on a worker).
        let answered: usize = flood
            .split_whitespace()
            .find_map(|w| w.strip_prefix("answered="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(answered > 0, "{flood}");
        assert!(
            flood.ends_with(" codes=EAGAIN,EINVAL") || flood.ends_with(" codes=EINVAL"),
            "{flood}"
        );
        let want = format!(
            "ports {}{}",
            "fd ".repeat(16),
            "EMFILE EMFILE EMFILE EMFILE"
        );
        assert_eq!(ports, want);
        // The 16 are bound at 127.0.0.1 and held by pminit.
        assert_eq!(listeners_on(free[0]), vec!["127.0.0.1".to_string()]);
        // The refusals were logged, rate-limited: not 1000+ lines.
        let logged = count_err(&run, "listen refused");
        assert!((1..=20).contains(&logged), "{logged} lines");
        // pminit still answers: a status verb works and it stops cleanly.
        let (code, text, _) = timed_verb(&run, &["status"]);
        assert_eq!(code, 0, "{text}");
        run.signal(libc::SIGTERM);
        let code = run.wait_code();
        assert!(code == 0 || code == 130, "{code}: {}", run.transcript());
    }
}

/// The listening sockets a Node worker holds, `(port, O_NONBLOCK set)`:
/// the TCP listeners in /proc/PID/net/tcp{,6} matched to its fds by inode.
fn listening_sockets(pid: i32) -> Vec<(u16, bool)> {
    let mut ports = std::collections::HashMap::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // st 0A: LISTEN; the local address ends in :PORT (hex).
            if f.len() > 9 && f[3] == "0A" {
                let port = u16::from_str_radix(f[1].rsplit(':').next().unwrap_or(""), 16);
                if let Ok(port) = port {
                    ports.insert(f[9].to_string(), port);
                }
            }
        }
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .flatten()
    {
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let link = link.to_string_lossy().into_owned();
        let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
        else {
            continue;
        };
        let Some(&port) = ports.get(inode) else {
            continue;
        };
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))
        .expect("fdinfo");
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            .expect("flags");
        out.push((port, flags & libc::O_NONBLOCK as u32 != 0));
    }
    out
}

/// Every listening socket a worker gets from pminit is non-blocking, the
/// ones sent over IPC (an extra port the app asked for) included: Node
/// takes a received socket as it is, and a blocking listener shared by two
/// workers froze the one whose accept() lost the race for a connection
/// (it then ignored SIGINT until SIGKILL: a CI run caught it).
#[test]
fn the_sockets_workers_get_are_non_blocking() {
    let Some(app) = node_app("the_sockets_workers_get_are_non_blocking") else {
        return;
    };
    for node in node_versions("the_sockets_workers_get_are_non_blocking") {
        let (mut run, port, admin) = start_admin_app(&node, &app);
        for pid in distinct_pids(admin, 2) {
            let sockets = listening_sockets(pid);
            for want in [port, admin] {
                assert!(
                    sockets.iter().any(|&(p, _)| p == want),
                    "worker {pid} holds no listener on {want}: {sockets:?}"
                );
            }
            assert!(
                sockets.iter().all(|&(_, nonblocking)| nonblocking),
                "worker {pid}: a blocking listener: {sockets:?}"
            );
        }
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    }
}
