//! `--sticky`: one client address keeps one worker, with no proxy. pminit
//! gives each slot its own SO_REUSEPORT socket and attaches a classic BPF
//! program that hashes the client's source address (src/steer.rs).
//!
//! Clients bind their socket to a chosen loopback source before connecting
//! (all of 127/8 is local; IPv6 loopback has only ::1, so the test of many
//! IPv6 sources runs in a fresh network namespace with fd00::1-8 on lo).
//! The apps answer with their pid and slot, and the tests predict the slot
//! from the same hash the program computes: a match for every address is
//! the proof that the kernel runs the program on the source address.

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

/// src/steer.rs's hash, written again as the test's oracle: murmur3's
/// 32-bit finaliser over the address, a word at a time.
fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

fn address_hash(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(v4) => mix32(u32::from(v4)),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [4, 8, 12].iter().fold(mix32(w(0)), |h, &i| mix32(h ^ w(i)))
        }
    }
}

/// The slot docs/sockets.md ("Sticky sessions") promises `ip`: its own when live,
/// else one of the live ones by the rest of the hash.
fn predicted_slot(ip: IpAddr, group: u32, live: &[u32]) -> u32 {
    let h = address_hash(ip);
    if live.contains(&(h % group)) {
        h % group
    } else {
        live[((h / group) % live.len() as u32) as usize]
    }
}

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// One `GET /` on a new connection from `src` (any port) to `dst`: the
/// answering worker's (pid, slot), or why it failed. Bounded by timeouts.
fn get_from(src: IpAddr, dst: SocketAddr) -> Result<(i32, u32), String> {
    use nix::sys::socket::{
        bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrStorage,
    };
    let family = if src.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| format!("socket: {e}"))?;
    bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(src, 0)),
    )
    .map_err(|e| format!("bind {src}: {e}"))?;
    // On loopback the kernel completes the handshake itself: connect
    // returns at once whether or not a worker accepts.
    connect(fd.as_raw_fd(), &SockaddrStorage::from(dst))
        .map_err(|e| format!("connect {src} -> {dst}: {e}"))?;
    let mut s = std::net::TcpStream::from(fd);
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("read from {src} (no worker answered): {e}"))?;
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or(format!("no header end: {reply:?}"))?;
    Ok((field(body, "pid"), field(body, "slot") as u32))
}

/// `n` connections from `src`: the (pid, slot) of each.
fn answers(src: IpAddr, dst: SocketAddr, n: usize) -> BTreeSet<(i32, u32)> {
    (0..n)
        .map(|_| get_from(src, dst).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// The one (pid, slot) that `n` connections from `src` reached.
fn one_worker(src: IpAddr, dst: SocketAddr, n: usize) -> (i32, u32) {
    let seen = answers(src, dst, n);
    assert_eq!(seen.len(), 1, "{n} connections from {src}: {seen:?}");
    *seen.first().expect("one")
}

/// Waits until pminit has carried out everything it decided so far (the
/// steering included): the control socket answers only between batches.
fn settled(run: &Run) {
    let (code, out, _) = timed_verb(run, &["status"]);
    assert_eq!(code, 0, "{out}");
}

/// `pminit status --json`, parsed.
fn status(run: &Run) -> serde_json::Value {
    let (code, out, _) = timed_verb(run, &["status", "--json"]);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Polls `pminit status` (bounded) until `done` holds.
fn status_until(run: &Run, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let s = status(run);
        if done(&s) {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "no {what} within {DEADLINE:?}: {s}\n{}",
            run.transcript()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Slot -> pid of the ready workers, from `pminit status --json`.
fn ready_pids(s: &serde_json::Value) -> BTreeMap<u32, i32> {
    s["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["state"] == "ready")
        .map(|w| {
            (
                w["slot"].as_u64().unwrap_or(u64::MAX) as u32,
                w["pid"].as_i64().unwrap_or(0) as i32,
            )
        })
        .collect()
}

/// `pminit -i 4 --sticky` of tests/node-app/plain.js on the dual-stack
/// PORT, once all four are ready and steered.
fn four_sticky(app: &Path, node: &NodeVersion, extra: &[&str]) -> (Run, u16) {
    let port = free_port();
    let mut args = vec!["-i", "4", "--sticky", "--listen-timeout", "20s"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "node", "plain.js"]);
    let run = start_node(Mode::Subreaper, app, port, node, &args);
    run.expect_ready(4);
    settled(&run);
    (run, port)
}

#[test]
fn one_client_address_keeps_one_worker() {
    let test = "one_client_address_keeps_one_worker";
    let Some(app) = node_app(test) else { return };
    for node in node_versions(test) {
        let v = node.major;
        let (mut run, port) = four_sticky(&app, &node, &[]);
        let dst4 = SocketAddr::from(([127, 0, 0, 1], port));
        let dst6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        let all = [0, 1, 2, 3];

        // 50 new connections from one address: one worker, the predicted slot.
        let (_, slot) = one_worker(v4(2), dst4, 50);
        assert_eq!(slot, predicted_slot(v4(2), 4, &all), "[node {v}]");

        // 8 addresses: each keeps its worker; together they reach >= 3.
        let mut workers = BTreeSet::new();
        for last in 2..=9 {
            let (pid, slot) = one_worker(v4(last), dst4, 5);
            assert_eq!(
                slot,
                predicted_slot(v4(last), 4, &all),
                "[node {v}] .{last}"
            );
            workers.insert(pid);
        }
        assert!(workers.len() >= 3, "[node {v}] {workers:?}");

        // IPv6 loopback has one address: it, too, keeps its worker.
        let lo6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let (_, slot) = one_worker(lo6, dst6, 50);
        assert_eq!(slot, predicted_slot(lo6, 4, &all), "[node {v}] ::1");

        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "[node {v}]\n{}", run.transcript());
    }
}

/// Addresses 127.0.0.2 to .40 by the slot the hash gives them in a group
/// of 4, each slot with at least one.
fn addresses_by_slot() -> BTreeMap<u32, Vec<IpAddr>> {
    let mut by_slot: BTreeMap<u32, Vec<IpAddr>> = BTreeMap::new();
    for last in 2..=40 {
        by_slot
            .entry(address_hash(v4(last)) % 4)
            .or_default()
            .push(v4(last));
    }
    assert_eq!(by_slot.len(), 4, "{by_slot:?}");
    by_slot
}

#[test]
fn each_address_keeps_its_slot_across_reload_crash_and_scale() {
    let test = "each_address_keeps_its_slot";
    let Some(app) = node_app(test) else { return };
    for node in node_versions(test) {
        let v = node.major;
        let (mut run, port) = four_sticky(&app, &node, &[]);
        let dst = SocketAddr::from(([127, 0, 0, 1], port));
        let by_slot = addresses_by_slot();
        // Every address answers from its slot's current worker.
        let check = |pids: &BTreeMap<u32, i32>, live: &[u32], when: &str| {
            for ips in by_slot.values() {
                for &ip in ips {
                    let slot = predicted_slot(ip, 4, live);
                    assert_eq!(
                        one_worker(ip, dst, 3),
                        (pids[&slot], slot),
                        "[node {v}] {when}: {ip}"
                    );
                }
            }
        };
        let before = ready_pids(&status(&run));
        check(&before, &[0, 1, 2, 3], "at start");

        // A reload: slot k's new worker takes over slot k's socket.
        run.signal(libc::SIGHUP);
        run.expect_err("reload to generation 1 finished");
        settled(&run);
        let reloaded = ready_pids(&status(&run));
        assert!(
            reloaded.iter().all(|(s, p)| before[s] != *p),
            "{before:?} {reloaded:?}"
        );
        check(&reloaded, &[0, 1, 2, 3], "after a reload");

        // A crash: slot 0's replacement gets slot 0's addresses back.
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(reloaded[&0], libc::SIGKILL) };
        status_until(&run, "a new ready worker in slot 0", |s| {
            let p = ready_pids(s);
            p.len() == 4 && p[&0] != reloaded[&0]
        });
        settled(&run);
        let crashed = ready_pids(&status(&run));
        check(&crashed, &[0, 1, 2, 3], "after slot 0 crashed");

        // Scale down: slot 3's addresses spread over 0-2, no other moves.
        let (code, out, _) = timed_verb(&run, &["scale", "3"]);
        assert_eq!(code, 0, "{out}");
        status_until(&run, "3 workers", |s| {
            s["instances"] == 3 && s["workers"].as_array().is_some_and(|w| w.len() == 3)
        });
        settled(&run);
        check(&crashed, &[0, 1, 2], "scaled to 3");
        let moved: BTreeSet<u32> = by_slot[&3]
            .iter()
            .map(|&ip| predicted_slot(ip, 4, &[0, 1, 2]))
            .collect();
        assert!(!moved.contains(&3), "{moved:?}");

        // Scale up: the new slot 3 gets its addresses back.
        let (code, out, _) = timed_verb(&run, &["scale", "4"]);
        assert_eq!(code, 0, "{out}");
        status_until(&run, "4 ready workers", |s| ready_pids(s).len() == 4);
        settled(&run);
        check(&ready_pids(&status(&run)), &[0, 1, 2, 3], "scaled to 4");

        run.signal(libc::SIGTERM);
        run.wait_code();
    }
}

/// socket.io's long-polling transport keeps a session in one worker's
/// memory: every request of the session must reach that worker. Under
/// `-i 4` the default shared socket gives each request to whichever worker
/// accepts first, and the client fails ("Session ID unknown", a 400);
/// with --sticky every session works and stays on one worker.
#[test]
fn socket_io_long_polling_works_with_sticky_and_fails_without() {
    let test = "socket_io_long_polling";
    let Some(app) = node_app(test) else { return };
    for node in node_versions(test) {
        let v = node.major;
        for sticky in [true, false] {
            let port = free_port();
            let mut args = vec!["-i", "4", "--listen-timeout", "20s"];
            if sticky {
                args.push("--sticky");
            }
            args.extend_from_slice(&["--", "node", "sio.js"]);
            let mut run = start_node(Mode::Subreaper, &app, port, &node, &args);
            run.expect_ready(4);
            settled(&run);
            // Three sessions, one after the other, 10 messages each.
            let results: Vec<String> = (0..3)
                .map(|_| {
                    let out = Command::new(node.node())
                        .arg("sio_client.js")
                        .current_dir(&app)
                        .env("PORT", port.to_string())
                        .output()
                        .expect("run sio_client.js");
                    String::from_utf8_lossy(&out.stdout).trim().to_string()
                })
                .collect();
            if sticky {
                for r in &results {
                    assert!(r.starts_with("ok "), "[node {v}] {results:?}");
                    let pids = r.split("pids=").nth(1).unwrap_or("");
                    assert!(!pids.contains(','), "[node {v}] one worker: {r}");
                }
            } else {
                // Three sessions with ~20 requests each: at least one
                // request lands on another worker (in every run so far,
                // every session failed).
                assert!(
                    results
                        .iter()
                        .any(|r| r.starts_with("error ") && r.contains("400")),
                    "[node {v}] without --sticky: {results:?}"
                );
            }
            run.signal(libc::SIGTERM);
            let code = run.wait_code();
            assert_eq!(code, 0, "[node {v}] sticky={sticky}\n{}", run.transcript());
        }
    }
}

/// In a fresh network namespace (root) with fd00::1 to fd00::8 on lo, the
/// Python example server under `-i 4 --sticky` on a dual-stack (`PORT`),
/// an IPv4-only and an IPv6-only listener: every source address, IPv4 or
/// IPv6, reaches the slot the hash predicts (so the program reads the
/// whole IPv6 address, not just a constant), always the same one.
#[test]
fn the_program_steers_by_the_whole_source_address_for_ipv4_and_ipv6() {
    let test = "the_program_steers_by_the_whole_source_address";
    if !require(is_root(), test, "root for a network namespace") {
        return;
    }
    let has_ip = Command::new("ip").arg("-V").output().is_ok();
    if !require(has_ip, test, "ip (iproute2)") {
        return;
    }
    // A network namespace belongs to a thread: this one, and the
    // processes it starts.
    std::thread::spawn(|| {
        // SAFETY: unshare has no memory-safety preconditions; CLONE_NEWNET
        // moves only the calling thread.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare: {}", std::io::Error::last_os_error());
        let mut setup = vec!["link set lo up".to_string()];
        setup.extend((1..=8).map(|i| format!("-6 addr add fd00::{i}/128 dev lo nodad")));
        for cmd in setup {
            let ok = Command::new("ip")
                .args(cmd.split_whitespace())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip {cmd}");
        }
        let server = [env!("CARGO_MANIFEST_DIR"), "examples/python/server.py"].join("/");
        let v6: Vec<IpAddr> = (1..=8)
            .map(|i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i)))
            .chain([IpAddr::V6(Ipv6Addr::LOCALHOST)])
            .collect();
        let v4s: Vec<IpAddr> = (2..=9).map(v4).collect();
        let port = free_port();
        for (listen, clients) in [
            (port.to_string(), [v4s.clone(), v6.clone()].concat()),
            (format!("127.0.0.1:{port}"), v4s.clone()),
            (format!("[fd00::1]:{port}"), v6[..8].to_vec()),
        ] {
            let args = [
                "-i",
                "4",
                "--sticky",
                "-l",
                &listen,
                "--",
                python(),
                &server,
            ];
            let mut run = Run::start(Mode::Subreaper, &args);
            run.expect_count(
                "saying a worker started",
                4,
                |l| matches!(l, Line::Err(s) if s.contains("started (pid")),
            );
            settled(&run);
            let mut slots = BTreeSet::new();
            for &ip in &clients {
                let dst = if ip.is_ipv4() {
                    SocketAddr::from(([127, 0, 0, 1], port))
                } else if ip == IpAddr::V6(Ipv6Addr::LOCALHOST) {
                    SocketAddr::from((Ipv6Addr::LOCALHOST, port))
                } else {
                    SocketAddr::from((Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1), port))
                };
                let (_, slot) = one_worker(ip, dst, 5);
                assert_eq!(
                    slot,
                    predicted_slot(ip, 4, &[0, 1, 2, 3]),
                    "-l {listen}: {ip}"
                );
                slots.insert(slot);
            }
            assert!(slots.len() >= 3, "-l {listen}: {slots:?}");
            run.signal(libc::SIGTERM);
            run.wait_code();
        }
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

/// `--sticky` needs a TCP address to steer and per-worker sockets: without
/// them it is a one-line start-up error, exit 2, before anything starts.
#[test]
fn sticky_without_a_tcp_address_or_with_the_shared_layout_is_refused() {
    let sock = std::env::temp_dir().join(format!("pminit-sticky-{}.sock", std::process::id()));
    let unix = format!("unix:{}", sock.display());
    let port = free_port().to_string();
    for (args, env, want) in [
        (vec!["--sticky", "--", "true"], None, "no TCP address"),
        (
            vec!["--sticky", "-l", &unix, "--", "true"],
            None,
            "no TCP address",
        ),
        (
            vec!["--", "true"],
            Some(("PMINIT_STICKY", "1")),
            "no TCP address",
        ),
        (
            vec![
                "--sticky",
                "--socket-layout",
                "shared",
                "-l",
                &port,
                "--",
                "true",
            ],
            None,
            "--socket-layout shared",
        ),
    ] {
        let mut cmd = Command::new(PMINIT);
        cmd.args(&args).env_remove("PORT");
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run pminit");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("--sticky") && err.contains(want),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    let _ = std::fs::remove_file(&sock);
}
