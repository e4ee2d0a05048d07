//! `--metrics ADDR`: the Prometheus endpoint pminit serves itself. As PID 1
//! of a fresh PID namespace with real Node workers: 100 idle connections
//! (some sending half a request) do not lock a scraper out and are all
//! closed by pminit; the page passes `promtool check metrics`; a `kill -9`
//! of a worker counts as a restart and a `kill -HUP 1` as a reload. Bad
//! addresses and taken ports are start-up errors naming the address.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One GET of `path` on 127.0.0.1:`port`: (status line, body).
fn get(port: u16, path: &str) -> Result<(String, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or(format!("no header end: {reply:?}"))?;
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

fn scrape(run: &Run, port: u16) -> String {
    match get(port, "/metrics") {
        Ok((status, body)) if status.contains(" 200 ") => body,
        other => panic!("scrape: {other:?}\n{}", run.transcript()),
    }
}

/// The value of the sample whose name and labels are exactly `series`.
fn value(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{page}"))
}

/// The sum over every sample of the family `name`.
fn sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn start(test: &str, metrics_port: u16, extra: &[&str]) -> Option<(Run, u16)> {
    if !require(is_root(), test, "root for unshare --pid (PID 1)") {
        return None;
    }
    let app = node_app(test)?;
    let port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let mut args = vec!["--metrics", &metrics, "-i", "2", "--listen-timeout", "20s"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "node", "plain.js"]);
    let run = start_in(Mode::Pid1, &app, port, &args);
    run.expect_ready(2);
    Some((run, port))
}

#[test]
fn idle_connections_do_not_lock_out_a_scrape_and_are_all_closed() {
    let mport = free_port();
    let Some((mut run, _)) = start("metrics_slowloris", mport, &[]) else {
        return;
    };
    // 100 connections that send nothing, or half a request, and hang on.
    let addr = SocketAddr::from(([127, 0, 0, 1], mport));
    let mut held: Vec<TcpStream> = (0..100)
        .map(|i| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("connection {i}: {e}\n{}", run.transcript()));
            if i % 2 == 1 {
                s.write_all(b"GET /metr").expect("half a request");
            }
            s
        })
        .collect();
    // A scrape gets through while they hang.
    let page = scrape(&run, mport);
    assert_eq!(value(&page, "pminit_workers{state=\"ready\"}"), 2.0);
    // pminit closes every one of them (evicted, or at its deadline): each
    // reads end of stream (or a reset), none is held forever.
    let end = Instant::now() + DEADLINE;
    for (i, s) in held.iter_mut().enumerate() {
        let left = end.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                // A half request may get its 400 first; idle ones nothing.
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!(
                    "connection {i} still open after {DEADLINE:?}: {e}\n{}",
                    run.transcript()
                ),
            }
        }
    }
    let page = scrape(&run, mport);
    let dropped = value(&page, "pminit_metrics_connections_dropped_total");
    assert!(dropped >= 100.0, "dropped {dropped}\n{page}");
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    // Their log lines are rate-limited: a few, not one per connection (3
    // kinds of line, each at most LOG_BURST = 5 plus its "suppressed" count).
    let lines = run
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("metrics:"))
        .count();
    assert!((1..=18).contains(&lines), "{lines}\n{}", run.transcript());
    println!("metrics slowloris: 100 held, {dropped} dropped, {lines} log lines");
}

/// Pipes `page` into `promtool check metrics`; its verdict and output.
fn promtool(page: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(page.as_bytes())
        .expect("write the page");
    let out = child.wait_with_output().expect("promtool");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn has_promtool() -> bool {
    Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_page_passes_promtool_and_counts_a_kill_9_and_a_hup() {
    if !require(
        has_promtool(),
        "metrics_promtool",
        "promtool (Debian package prometheus)",
    ) {
        return;
    }
    let mport = free_port();
    let Some((mut run, port)) = start("metrics_promtool", mport, &[]) else {
        return;
    };
    let before = scrape(&run, mport);
    let (ok, out) = promtool(&before);
    assert!(ok, "promtool: {out}\n{before}");
    assert!(out.trim().is_empty(), "promtool lint: {out}\n{before}");
    assert_eq!(sum(&before, "pminit_restarts_total"), 0.0, "{before}");
    assert_eq!(value(&before, "pminit_workers{state=\"ready\"}"), 2.0);
    let rows = before
        .lines()
        .filter(|l| l.starts_with("pminit_worker_memory_bytes{"))
        .count();
    assert_eq!(rows, 2, "one memory row per worker:\n{before}");
    assert!(sum(&before, "pminit_worker_memory_bytes") > 1e6, "{before}");

    // kill -9 one worker (a host pid: pminit's child).
    let workers = children(run.pminit_pid());
    assert_eq!(workers.len(), 2, "{}", run.transcript());
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(workers[0], libc::SIGKILL) }, 0);
    run.expect_err("restarts in");
    run.expect_ready(3);
    let after = scrape(&run, mport);
    assert_eq!(sum(&after, "pminit_restarts_total"), 1.0, "{after}");
    let slot_signal = after
        .lines()
        .filter(|l| l.starts_with("pminit_slot_last_exit_signal{"))
        .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
        .collect::<Vec<_>>();
    assert_eq!(slot_signal, ["9"], "{after}");
    assert_eq!(sum(&after, "pminit_slot_last_exit_code"), 137.0, "{after}");

    // kill -HUP 1: one rolling reload, succeeded.
    assert_eq!(
        value(&after, "pminit_reloads_total{outcome=\"succeeded\"}"),
        0.0
    );
    run.signal(libc::SIGHUP);
    run.expect_err("reload to generation 1 finished");
    let reloaded = scrape(&run, mport);
    assert_eq!(value(&reloaded, "pminit_reloads_started_total"), 1.0);
    assert_eq!(
        value(&reloaded, "pminit_reloads_total{outcome=\"succeeded\"}"),
        1.0,
        "{reloaded}"
    );
    assert_eq!(
        value(&reloaded, "pminit_reloads_total{outcome=\"failed\"}"),
        0.0
    );
    assert_eq!(value(&reloaded, "pminit_generation"), 1.0);
    // A reload is not a restart.
    assert_eq!(sum(&reloaded, "pminit_restarts_total"), 1.0, "{reloaded}");
    let (ok, out) = promtool(&reloaded);
    assert!(ok && out.trim().is_empty(), "promtool: {out}\n{reloaded}");
    // The app still serves, and other paths and methods are refused.
    http_get(port).expect("the app serves");
    let (status, _) = get(mport, "/").expect("GET /");
    assert!(status.contains(" 404 "), "{status}");
    run.signal(libc::SIGTERM);
    run.wait_code();
    println!(
        "metrics promtool: page of {} bytes before, {} after the reload",
        before.len(),
        reloaded.len()
    );
}

#[test]
fn bad_or_taken_metrics_addresses_are_start_up_errors_naming_them() {
    for (args, env, code, wants) in [
        (
            vec!["--metrics", "nope", "--", "true"],
            vec![],
            2,
            vec!["--metrics", "\"nope\""],
        ),
        (
            vec!["--metrics", "unix:/tmp/m.sock", "--", "true"],
            vec![],
            2,
            vec!["--metrics", "TCP"],
        ),
        (
            vec!["--", "true"],
            vec![("PMINIT_METRICS".to_string(), "70000".to_string())],
            2,
            vec!["PMINIT_METRICS", "\"70000\""],
        ),
    ] {
        let mut run = Run::start_with(
            Mode::Subreaper,
            &args,
            Options {
                env,
                ..Options::default()
            },
        );
        assert_eq!(run.wait_code(), code, "{args:?}\n{}", run.transcript());
        run.drain();
        let log = run.stderr_lines();
        assert_eq!(log.len(), 1, "{log:?}");
        for w in wants {
            assert!(log[0].contains(w), "{log:?} lacks {w}");
        }
    }
    // A port someone else holds: named, with the errno, and nothing started.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let mut run = Run::start(
        Mode::Subreaper,
        &["--metrics", &addr, "--", "sh", "-c", "echo started"],
    );
    assert_eq!(run.wait_code(), 1, "{}", run.transcript());
    run.drain();
    let t = run.transcript();
    assert!(t.contains(&addr) && t.contains("EADDRINUSE"), "{t}");
    assert!(!t.contains("started"), "{t}");
}
