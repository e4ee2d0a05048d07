//! Healing (issue 19), run directly: a Node worker whose event loop is
//! stuck longer than `--hang-timeout` is replaced and killed, logged and
//! counted; a busy one, one still starting, one under `--hang-timeout 0`
//! and one that never runs the preload (python, `--no-preload`) are left
//! alone. `pminit status --json` shows the liveness and V8 heap each
//! worker reports. Under a cgroup memory limit (a v1 group made here) the
//! workers' heaps are budgeted to fit it together, a user's own
//! `--max-old-space-size` wins, and a worker leaking memory is replaced or
//! killed by pminit before the kernel has to.
//!
//! Every Node case runs on Node 22 and 24 (`node_versions()`).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn marker(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("pminit-hang-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// pminit `args` in the Node app directory with `node` first in PATH,
/// PORT=`port` and `env`.
fn start(
    mode: Mode,
    app: &Path,
    node: &NodeVersion,
    port: u16,
    env: &[(&str, String)],
    args: &[&str],
) -> Run {
    let mut all = vec![("PORT".to_string(), port.to_string()), node.path_env()];
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    Run::start_with(
        mode,
        args,
        Options {
            cwd: Some(app.to_path_buf()),
            env: all,
            ..Options::default()
        },
    )
}

fn status(run: &Run) -> serde_json::Value {
    let (code, out, err) = verb_output(run, &["status", "--json"]);
    assert_eq!(code, 0, "status: {out} {err}\n{}", run.transcript());
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Polls `pminit status --json` until `pred` holds; each status is a round
/// trip to pminit (that is the wait), bounded by DEADLINE.
fn status_until(
    run: &Run,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let end = Instant::now() + DEADLINE;
    loop {
        let s = status(run);
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < end,
            "[{:?}] status never showed {what}: {s}\n{}",
            run.mode,
            run.transcript()
        );
    }
}

fn rows(s: &serde_json::Value) -> Vec<serde_json::Value> {
    s["workers"].as_array().cloned().unwrap_or_default()
}

fn row_of(s: &serde_json::Value, pid: i64) -> Option<serde_json::Value> {
    rows(s).into_iter().find(|w| w["pid"].as_i64() == Some(pid))
}

fn is_err_with(l: &Line, words: &[&str]) -> bool {
    matches!(l, Line::Err(s) if words.iter().all(|w| s.contains(w)))
}

/// `text` names `pid {pid}` (not a longer number that starts the same).
fn mentions_pid(text: &str, pid: i64) -> bool {
    let p = format!("pid {pid}");
    text.match_indices(&p).any(|(i, _)| {
        !text[i + p.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// A stderr line saying worker `pid` is hung (text log).
fn hung_line(pid: i64) -> impl Fn(&Line) -> bool {
    move |l| matches!(l, Line::Err(s) if s.contains("hung") && mentions_pid(s, pid))
}

/// pminit's JSON log events so far.
fn json_events(run: &Run) -> Vec<serde_json::Value> {
    run.stderr_lines()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn any_hung(l: &Line) -> bool {
    matches!(l, Line::Err(s) if s.contains("hung"))
}

/// The host's view of `pid` (pminit's view): the same in subreaper mode.
fn host_pid(run: &Run, pid: i64) -> i32 {
    match run.mode {
        Mode::Subreaper => pid as i32,
        Mode::Pid1 => host_pid_of(run.outer_pid, pid)
            .unwrap_or_else(|| panic!("no process {pid}:\n{}", run.transcript())),
    }
}

/// GET / until `pid` answers (bounded attempts): the shared socket
/// spreads connections unevenly, but every ready worker gets some.
fn answers(port: u16, pid: i64) -> bool {
    let want = format!("pid={pid} ");
    (0..500).any(|_| http_get(port).is_ok_and(|b| b.contains(&want)))
}

/// Issue 19 point 1: the hung worker is gone within timeout + 5 s,
/// replaced (a new pid answers), logged and counted, while requests to
/// the other workers meanwhile all succeed.
#[test]
fn a_hung_worker_is_replaced_killed_logged_and_counted_with_no_failed_request() {
    let test = "a_hung_worker_is_replaced";
    let Some(app) = node_app(test) else { return };
    const TIMEOUT: Duration = Duration::from_secs(2);
    for node in node_versions(test) {
        for mode in modes(test) {
            let tag = format!("{}-{mode:?}", node.major);
            let mark = marker(&tag);
            let port = free_port();
            let mport = free_port();
            let metrics = format!("127.0.0.1:{mport}");
            let mut run = start(
                mode,
                &app,
                &node,
                port,
                &[("HANG_MARKER", mark.display().to_string())],
                &[
                    "-i",
                    "2",
                    "--hang-timeout",
                    "2s",
                    "--listen-timeout",
                    "20s",
                    "--metrics",
                    &metrics,
                    "--",
                    "node",
                    "hang.js",
                ],
            );
            run.expect_ready(2);
            // Both answer pings before anything hangs.
            let before = status_until(&run, "both workers answering pings", |s| {
                let r = rows(s);
                r.len() == 2 && r.iter().all(|w| w["answered_ms_ago"].is_u64())
            });
            let page = scrape_metrics(mport).expect("scrape");
            assert_eq!(
                metric_sample(&page, "pminit_worker_hangs_total"),
                Some(0.0),
                "[{tag}] {page}"
            );

            let load = Load::start(port, 2, false);
            let t0 = Instant::now();
            let body = http_get_answer(port, "/hang").expect("GET /hang");
            assert!(body.starts_with("hanging "), "[{tag}] {body}");
            let hung: i64 = field(&body, "pid").into();
            let hung_host = host_pid(&run, hung);
            let slot = row_of(&before, hung).expect("the hung worker in status")["slot"].clone();

            // Logged, then gone, within timeout + 5 s of the hang.
            let by = TIMEOUT + Duration::from_secs(5);
            let line = run.expect_seen_within("saying the worker is hung", by, hung_line(hung));
            let exited = format!("(pid {hung}) exited");
            let left = by.saturating_sub(t0.elapsed());
            run.expect_seen_within("saying the hung worker exited", left, |l| {
                is_err_with(l, &[&exited])
            });
            println!(
                "[{tag}] hung pid {hung} gone {:?} after the hang: {line:?}",
                t0.elapsed()
            );
            assert!(
                stat_fields(hung_host).is_none(),
                "[{tag}] pid {hung} (host {hung_host}) still exists\n{}",
                run.transcript()
            );
            // Its replacement, started before the kill, is ready.
            run.expect_ready(3);
            let report = load.finish();
            assert_eq!(
                report.failures,
                Vec::<String>::new(),
                "[{tag}] requests to the other workers failed ({} ok)\n{}",
                report.ok,
                run.transcript()
            );
            assert!(report.ok > 20, "[{tag}] too little load: {}", report.ok);

            // A new pid serves the slot and answers.
            let after = status_until(&run, "two ready workers, the hung one gone", |s| {
                let r = rows(s);
                r.len() == 2 && r.iter().all(|w| w["state"] == "ready") && row_of(s, hung).is_none()
            });
            let new = rows(&after)
                .into_iter()
                .find(|w| w["slot"] == slot)
                .and_then(|w| w["pid"].as_i64())
                .unwrap_or_else(|| panic!("[{tag}] slot {slot} in {after}"));
            assert!(
                answers(port, new),
                "[{tag}] the replacement {new} never answered"
            );

            let page = scrape_metrics(mport).expect("scrape");
            assert_eq!(
                metric_sample(&page, "pminit_worker_hangs_total"),
                Some(1.0),
                "[{tag}] {page}"
            );
            run.signal(libc::SIGTERM);
            run.wait_code();
            run.drain();
            let log = run.stderr_lines();
            let hung_lines = log
                .iter()
                .filter(|l| hung_line(hung)(&Line::Err(l.to_string())))
                .count();
            let others_hung = rows(&before)
                .iter()
                .filter_map(|w| w["pid"].as_i64())
                .filter(|&p| p != hung)
                .any(|p| log.iter().any(|l| hung_line(p)(&Line::Err(l.clone()))));
            assert!(!others_hung, "[{tag}] only one hung:\n{}", run.transcript());
            assert_eq!(hung_lines, 1, "[{tag}] one line:\n{}", run.transcript());
            let _ = std::fs::remove_file(&mark);
        }
    }
}

/// `worker_hung` under `--log-format json` carries slot, pid and
/// silent_ms; the timeout comes from PMINIT_HANG_TIMEOUT, in bare
/// milliseconds as pm2 writes durations.
#[test]
fn a_hang_is_one_json_event_with_slot_pid_and_silent_ms_and_the_env_sets_the_timeout() {
    let test = "a_hang_is_one_json_event";
    let Some(app) = node_app(test) else { return };
    for node in node_versions(test) {
        let mark = marker(&format!("json-{}", node.major));
        let port = free_port();
        let mut run = start(
            Mode::Subreaper,
            &app,
            &node,
            port,
            &[
                ("HANG_MARKER", mark.display().to_string()),
                ("PMINIT_HANG_TIMEOUT", "1500".into()),
            ],
            &[
                "--log-format",
                "json",
                "--listen-timeout",
                "20s",
                "--",
                "node",
                "hang.js",
            ],
        );
        run.expect_err("\"worker_ready\"");
        let t0 = Instant::now();
        let body = http_get_answer(port, "/hang").expect("GET /hang");
        let pid: i64 = field(&body, "pid").into();
        let line = match run.expect_seen_within(
            "with the worker_hung event",
            Duration::from_millis(1500) + Duration::from_secs(5),
            |l| matches!(l, Line::Err(s) if s.contains("\"worker_hung\"")),
        ) {
            Line::Err(s) | Line::Out(s) => s,
        };
        let e: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line}"));
        assert_eq!(e["event"], "worker_hung", "{e}");
        assert_eq!(e["slot"], 0, "{e}");
        assert_eq!(e["pid"].as_i64(), Some(pid), "{e}");
        let silent = e["silent_ms"].as_u64().unwrap_or_else(|| panic!("{e}"));
        assert!(
            // (A ping sent just before the hang may be the oldest: a ping
            // period of slack.)
            (1500..=t0.elapsed().as_millis() as u64 + 375).contains(&silent),
            "silent_ms {silent} (hung {:?} ago): {e}",
            t0.elapsed()
        );
        // Killed by pminit, after its replacement was started.
        let is_exit =
            |e: &serde_json::Value| e["event"] == "worker_exited" && e["pid"].as_i64() == Some(pid);
        run.expect_seen_within(
            "with the hung worker's exit",
            DEADLINE,
            |l| matches!(l, Line::Err(s) if serde_json::from_str(s).is_ok_and(|e| is_exit(&e))),
        );
        let events = json_events(&run);
        let exit = events.iter().find(|e| is_exit(e)).expect("seen");
        assert_eq!(exit["signal"], "SIGKILL", "{exit}");
        let spawned_after = events
            .iter()
            .skip_while(|e| e["event"] != "worker_hung")
            .take_while(|e| !is_exit(e))
            .any(|e| e["event"] == "worker_spawned");
        assert!(
            spawned_after,
            "the replacement starts before the kill:\n{}",
            run.transcript()
        );
        run.signal(libc::SIGTERM);
        run.wait_code();
        let _ = std::fs::remove_file(&mark);
    }
}

/// A worker busy for 60 % of the timeout is slow, not hung: same pid
/// afterwards, no `hung` line. Status rows carry liveness and V8 heap.
#[test]
fn a_busy_worker_is_left_alone_and_status_shows_liveness_and_heap() {
    let test = "a_busy_worker_is_left_alone";
    let Some(app) = node_app(test) else { return };
    for node in node_versions(test) {
        for mode in modes(test) {
            let tag = format!("{}-{mode:?}", node.major);
            let port = free_port();
            let mut run = start(
                mode,
                &app,
                &node,
                port,
                &[],
                &[
                    "--hang-timeout",
                    "2s",
                    "--listen-timeout",
                    "20s",
                    "--",
                    "node",
                    "hang.js",
                ],
            );
            run.expect_ready(1);
            let heap: serde_json::Value =
                serde_json::from_str(&http_get_path(port, "/heap").expect("GET /heap"))
                    .expect("json");
            let pid = heap["pid"].as_i64().expect("pid");
            // The hello at start may carry the heap already; the loop delay
            // comes with the first answer to a ping.
            let s = status_until(&run, "the worker's V8 heap and loop delay", |s| {
                row_of(s, pid).is_some_and(|w| {
                    w["answered_ms_ago"].is_u64()
                        && w["heap_limit_bytes"].is_u64()
                        && w["loop_delay_ms"].is_u64()
                })
            });
            let w = row_of(&s, pid).expect("row");
            assert_eq!(
                w["heap_limit_bytes"], heap["heap_size_limit"],
                "[{tag}] the limit V8 reports: {w}"
            );
            let used = w["heap_used_bytes"].as_u64().unwrap_or(0);
            assert!(
                used > MIB && used < w["heap_limit_bytes"].as_u64().unwrap_or(0),
                "[{tag}] {w}"
            );
            assert!(w["loop_delay_ms"].is_number(), "[{tag}] {w}");
            assert!(
                w["answered_ms_ago"].as_u64().unwrap_or(u64::MAX) <= 2000,
                "[{tag}] answers at least every timeout: {w}"
            );

            for _ in 0..2 {
                let body = http_get_path(port, "/busy?ms=1200").expect("GET /busy");
                assert_eq!(field(&body, "pid") as i64, pid, "[{tag}] {body}");
                let done = Instant::now();
                // It answers pminit again after the busy spell: the spell
                // is over, and pminit saw it live through it.
                status_until(&run, "an answer after the busy spell", |s| {
                    row_of(s, pid).is_some_and(|w| {
                        w["answered_ms_ago"]
                            .as_u64()
                            .is_some_and(|ago| (ago as u128) < done.elapsed().as_millis())
                    })
                });
            }
            let s = status(&run);
            assert_eq!(rows(&s).len(), 1, "[{tag}] {s}");
            assert!(row_of(&s, pid).is_some(), "[{tag}] same worker: {s}");
            assert!(
                !run.stderr_lines().iter().any(|l| l.contains("hung")),
                "[{tag}] {}",
                run.transcript()
            );
            run.signal(libc::SIGTERM);
            assert_eq!(run.wait_code(), 0, "[{tag}] {}", run.transcript());
            run.drain();
            assert!(
                !run.stderr_lines().iter().any(|l| l.contains("hung")),
                "[{tag}] {}",
                run.transcript()
            );
        }
    }
}

/// Liveness starts at ready: a start-up that blocks the event loop for
/// three timeouts is not a hang. After ready the worker is pinged.
#[test]
fn a_slow_start_up_is_not_a_hang() {
    let test = "a_slow_start_up_is_not_a_hang";
    let Some(app) = node_app(test) else { return };
    for node in node_versions(test) {
        let port = free_port();
        let mut run = start(
            Mode::Subreaper,
            &app,
            &node,
            port,
            &[("STARTUP_SPIN_MS", "3000".into())],
            &[
                "--hang-timeout",
                "1s",
                "--listen-timeout",
                "20s",
                "--",
                "node",
                "hang.js",
            ],
        );
        let started = run.expect_err("started (pid");
        let pid: i64 = started
            .split("(pid ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{started}"));
        run.expect_seen_within(
            "saying it spins before listening",
            DEADLINE,
            |l| matches!(l, Line::Out(s) if s.contains("spinning 3000 ms")),
        );
        run.expect_ready(1);
        status_until(&run, "the worker answering pings", |s| {
            row_of(s, pid).is_some_and(|w| w["answered_ms_ago"].is_u64())
        });
        let body = http_get(port).expect("served");
        assert_eq!(field(&body, "pid") as i64, pid, "{body}");
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
        run.drain();
        assert!(
            !run.stderr_lines().iter().any(|l| l.contains("hung")),
            "[{}] {}",
            node.major,
            run.transcript()
        );
    }
}

/// `--hang-timeout 0`: a hung worker stays, past when 2 s would have
/// caught it.
#[test]
fn hang_timeout_0_turns_the_check_off() {
    let test = "hang_timeout_0_turns_the_check_off";
    let Some(app) = node_app(test) else { return };
    for node in node_versions(test) {
        let mark = marker(&format!("off-{}", node.major));
        let port = free_port();
        let mut run = start(
            Mode::Subreaper,
            &app,
            &node,
            port,
            &[("HANG_MARKER", mark.display().to_string())],
            &[
                "--hang-timeout",
                "0",
                "--kill-timeout",
                "500ms",
                "--listen-timeout",
                "20s",
                "--",
                "node",
                "hang.js",
            ],
        );
        run.expect_ready(1);
        let body = http_get_answer(port, "/hang").expect("GET /hang");
        let pid: i64 = field(&body, "pid").into();
        // The window in which a 2 s timeout would have acted (2 s + a
        // ping period + 5 s), then the same worker, still there.
        run.expect_none_within("saying a worker is hung", Duration::from_secs(7), any_hung);
        let s = status(&run);
        let w = row_of(&s, pid).unwrap_or_else(|| panic!("pid {pid} gone: {s}"));
        assert_eq!(rows(&s).len(), 1, "{s}");
        assert!(
            stat_fields(pid as i32).is_some_and(|f| f[0] == "R"),
            "still spinning: {w}"
        );
        run.signal(libc::SIGTERM);
        run.wait_code();
        let _ = std::fs::remove_file(&mark);
    }
}

/// Workers that do not run the preload cannot answer: a python worker and
/// a Node worker under `--no-preload` are never pinged, never killed.
#[test]
fn workers_without_the_preload_are_never_pinged_or_killed() {
    let test = "workers_without_the_preload";
    let nodes = node_versions(test);
    // (what, pminit's arguments from the command on, environment)
    type Case = (String, Vec<String>, Vec<(String, String)>);
    let mut cases: Vec<Case> = vec![(
        "python".into(),
        vec![
            "--".into(),
            python().into(),
            "-c".into(),
            "import time; time.sleep(600)".into(),
        ],
        vec![],
    )];
    for node in &nodes {
        cases.push((
            format!("node {} --no-preload", node.major),
            vec![
                "--no-preload".into(),
                "--".into(),
                "node".into(),
                "-e".into(),
                "setInterval(() => {}, 1000)".into(),
            ],
            vec![node.path_env()],
        ));
    }
    for (what, tail, env) in cases {
        let mut args = vec!["--hang-timeout", "1s"];
        args.extend(tail.iter().map(String::as_str));
        let mut run = Run::start_with(
            Mode::Subreaper,
            &args,
            Options {
                env,
                ..Options::default()
            },
        );
        let started = run.expect_err("started (pid");
        // 1 s timeout + a ping period + 5 s.
        run.expect_none_within("saying a worker is hung", Duration::from_secs(6), any_hung);
        let s = status(&run);
        let r = rows(&s);
        assert_eq!(r.len(), 1, "[{what}] {s}");
        assert!(
            started.contains(&format!("(pid {})", r[0]["pid"])),
            "[{what}] the same worker: {started} / {s}"
        );
        assert!(
            r[0]["answered_ms_ago"].is_null(),
            "[{what}] never answered a ping: {s}"
        );
        assert!(r[0]["heap_limit_bytes"].is_null(), "[{what}] {s}");
        run.signal(libc::SIGTERM);
        run.wait_code();
    }
}

#[test]
fn a_bad_hang_timeout_is_a_start_up_error_naming_it() {
    for (args, env, wants) in [
        (
            vec!["--hang-timeout", "nope", "--", "true"],
            vec![],
            ["--hang-timeout", "\"nope\""],
        ),
        (
            vec!["--", "true"],
            vec![("PMINIT_HANG_TIMEOUT".to_string(), "-3s".to_string())],
            ["PMINIT_HANG_TIMEOUT", "\"-3s\""],
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
        assert_eq!(run.wait_code(), 2, "{args:?}\n{}", run.transcript());
        run.drain();
        let log = run.stderr_lines();
        assert_eq!(log.len(), 1, "{log:?}");
        for w in wants {
            assert!(log[0].contains(w), "{log:?} lacks {w}");
        }
    }
}

// ---- memory: a v1 cgroup with a limit, made here ------------------------

const LIMIT: u64 = 512 * MIB;

fn cgroup(test: &str, tag: &str) -> Option<MemoryCgroup> {
    if !require(is_root(), test, "root (to make a memory cgroup)") {
        return None;
    }
    let g = MemoryCgroup::create(tag, LIMIT);
    if require(g.is_some(), test, "a writable cgroup v1 memory controller") {
        g
    } else {
        None
    }
}

/// pminit (a subreaper) in `group`.
fn start_in_group(
    group: &MemoryCgroup,
    app: &Path,
    node: &NodeVersion,
    port: u16,
    env: &[(&str, String)],
    args: &[&str],
) -> Run {
    let procs = group.procs();
    let mut all = vec![("PORT".to_string(), port.to_string()), node.path_env()];
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    Run::start_with(
        Mode::Subreaper,
        args,
        Options {
            cwd: Some(app.to_path_buf()),
            env: all,
            pre_exec: Some(Box::new(move || MemoryCgroup::join(&procs))),
        },
    )
}

/// `heap_size_limit` of a plain `node ARGS -e ...` in `group` with `env`.
fn plain_node_limit(
    group: &MemoryCgroup,
    node: &NodeVersion,
    args: &[&str],
    env: &[(&str, &str)],
) -> u64 {
    let procs = group.procs();
    let mut cmd = Command::new(node.node());
    cmd.args(args)
        .args([
            "-e",
            "console.log(require('node:v8').getHeapStatistics().heap_size_limit)",
        ])
        .env_remove("NODE_OPTIONS")
        .envs(env.iter().copied());
    // SAFETY: join is async-signal-safe (open, write, close).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || MemoryCgroup::join(&procs))
    };
    let out = cmd.output().expect("run node");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a number")
}

/// Issue 19 point 2, on Node 22 and 24 in a 512 MiB group: 4 workers'
/// heap limits fit it together; a user's --max-old-space-size (in
/// NODE_OPTIONS or on node's command line) is passed through unchanged.
#[test]
fn worker_heaps_are_budgeted_to_the_cgroup_limit_and_a_users_own_size_wins() {
    let test = "worker_heaps_are_budgeted";
    let Some(app) = node_app(test) else { return };
    for node in node_versions(test) {
        let Some(group) = cgroup(test, &format!("budget-{}", node.major)) else {
            return;
        };
        let tag = node.major;
        let unconstrained = plain_node_limit(&group, &node, &[], &[]);
        let user = plain_node_limit(
            &group,
            &node,
            &[],
            &[("NODE_OPTIONS", "--max-old-space-size=200")],
        );
        let user_cli = plain_node_limit(&group, &node, &["--max-old-space-size=200"], &[]);
        // (what, NODE_OPTIONS, node's own arguments, the limit it must have)
        type Case<'a> = (&'a str, Option<&'a str>, &'a [&'a str], Option<u64>);
        let cases: [Case; 3] = [
            ("budget", None, &[], None),
            (
                "NODE_OPTIONS",
                Some("--max-old-space-size=200"),
                &[],
                Some(user),
            ),
            (
                "command line",
                None,
                &["--max-old-space-size=200"],
                Some(user_cli),
            ),
        ];
        for (what, options, node_args, want) in cases {
            let port = free_port();
            let mut env = vec![];
            if let Some(o) = options {
                env.push(("NODE_OPTIONS", o.to_string()));
            }
            let mut args = vec!["-i", "4", "--listen-timeout", "20s", "--", "node"];
            args.extend_from_slice(node_args);
            args.push("leak.js");
            let mut run = start_in_group(&group, &app, &node, port, &env, &args);
            run.expect_ready(4);
            let limits = heap_limits(port, 4);
            assert_eq!(limits.len(), 4, "[{tag} {what}] {limits:?}");
            let largest = *limits.values().max().expect("4");
            println!(
                "[{tag} {what}] heap_size_limit {} MiB per worker (plain node here: {} MiB)",
                largest / MIB,
                unconstrained / MIB
            );
            match want {
                None => {
                    assert!(
                        4 * unconstrained > LIMIT,
                        "[{tag}] the premise: unbudgeted, 4 workers could claim more ({} MiB each)",
                        unconstrained / MIB
                    );
                    assert!(
                        4 * largest <= LIMIT,
                        "[{tag}] 4 x {} MiB > 512 MiB: {limits:?}\n{}",
                        largest / MIB,
                        run.transcript()
                    );
                    run.expect_seen_within("with the memory budget", DEADLINE, |l| {
                        is_err_with(l, &["memory budget"])
                    });
                }
                Some(w) => {
                    for (pid, limit) in &limits {
                        assert_eq!(
                            *limit,
                            w,
                            "[{tag} {what}] worker {pid}: the user's size wins\n{}",
                            run.transcript()
                        );
                    }
                }
            }
            run.signal(libc::SIGTERM);
            run.wait_code();
        }
    }
}

/// The budget is recomputed on scale: workers started after `scale 4`
/// fit four to the limit.
#[test]
fn the_heap_budget_is_recomputed_on_scale() {
    let test = "the_heap_budget_is_recomputed_on_scale";
    let Some(app) = node_app(test) else { return };
    for node in node_versions(test) {
        let Some(group) = cgroup(test, &format!("scale-{}", node.major)) else {
            return;
        };
        let port = free_port();
        let mut run = start_in_group(
            &group,
            &app,
            &node,
            port,
            &[],
            &[
                "-i",
                "2",
                "--listen-timeout",
                "20s",
                "--",
                "node",
                "leak.js",
            ],
        );
        run.expect_ready(2);
        let (code, out, err) = verb_output(&run, &["scale", "4"]);
        assert_eq!(code, 0, "{out} {err}");
        let s = status_until(&run, "4 ready workers with known heaps", |s| {
            let r = rows(s);
            r.len() == 4
                && r.iter()
                    .all(|w| w["state"] == "ready" && w["heap_limit_bytes"].is_u64())
        });
        for w in rows(&s).iter().filter(|w| w["slot"].as_u64() >= Some(2)) {
            let limit = w["heap_limit_bytes"].as_u64().expect("known");
            assert!(
                4 * limit <= LIMIT,
                "[{}] a worker started at 4: {w}\n{}",
                node.major,
                run.transcript()
            );
        }
        run.signal(libc::SIGTERM);
        run.wait_code();
    }
}

/// Issue 19 point 3 on Node 22 and 24, in a 512 MiB group with 4
/// workers: the worker of slot 0 leaks ~24 MiB per /leak (V8 heap, then
/// external Buffers) for 300 requests. The kernel kills nothing, pminit
/// keeps running, 4 workers answer afterwards, and plain requests
/// meanwhile fail at most 1 %.
#[test]
fn a_leaking_worker_is_healed_before_the_kernel_kills_anything() {
    let test = "a_leaking_worker_is_healed";
    let Some(app) = node_app(test) else { return };
    for node in node_versions(test) {
        for kind in ["heap", "external"] {
            let tag = format!("{} {kind}", node.major);
            let Some(group) = cgroup(test, &format!("leak-{}-{kind}", node.major)) else {
                return;
            };
            let port = free_port();
            let mport = free_port();
            let metrics = format!("127.0.0.1:{mport}");
            let mut run = start_in_group(
                &group,
                &app,
                &node,
                port,
                &[("LEAK_KIND", kind.to_string())],
                &[
                    "-i",
                    "4",
                    "--listen-timeout",
                    "20s",
                    "--metrics",
                    &metrics,
                    "--",
                    "node",
                    "leak.js",
                ],
            );
            run.expect_ready(4);
            assert_eq!(group.oom_kills(), Some(0), "[{tag}]");
            let (ok, failed, plain) = leak_under_load(port, 300);
            println!(
                "[{tag}] /leak: {ok} ok, {failed} failed; plain: {} ok, {} failed",
                plain.ok,
                plain.failures.len()
            );
            assert_eq!(
                group.oom_kills(),
                Some(0),
                "[{tag}] kernel OOM kills\n{}",
                run.transcript()
            );
            assert!(
                run.wait_within(Duration::ZERO).is_none(),
                "[{tag}] pminit ended\n{}",
                run.transcript()
            );
            assert_plain_requests_mostly_served(&tag, &plain);
            let s = status_until(&run, "4 ready workers", |s| {
                let r = rows(s);
                r.len() == 4 && r.iter().all(|w| w["state"] == "ready")
            });
            let want: std::collections::BTreeSet<i64> =
                rows(&s).iter().filter_map(|w| w["pid"].as_i64()).collect();
            let got = distinct_pids(port, 4);
            assert_eq!(got, want, "[{tag}] the 4 workers answer");
            let page = scrape_metrics(mport).expect("scrape");
            println!(
                "[{tag}] {}",
                page.lines()
                    .filter(|l| l.starts_with("pminit_memory_")
                        || l.starts_with("pminit_restarts_total"))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            run.signal(libc::SIGTERM);
            run.wait_code();
        }
    }
}

/// `n` sequential GET /leak while 2 clients send plain GET /: (leak ok,
/// leak failed, the plain load's report).
fn leak_under_load(port: u16, n: usize) -> (usize, usize, LoadReport) {
    let load = Load::start(port, 2, false);
    let mut ok = 0;
    let mut failed = 0;
    for _ in 0..n {
        match http_get_path(port, "/leak") {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    (ok, failed, load.finish())
}

fn assert_plain_requests_mostly_served(tag: &str, plain: &LoadReport) {
    let total = plain.ok + plain.failures.len() as u64;
    assert!(plain.ok >= 50, "[{tag}] too little load: {plain:?}");
    assert!(
        plain.failures.len() as u64 * 100 <= total,
        "[{tag}] {} of {total} plain requests failed: {:?}",
        plain.failures.len(),
        plain.failures.iter().take(10).collect::<Vec<_>>()
    );
}

/// `--no-memory-watch` (and `PMINIT_NO_MEMORY_WATCH=1`): pminit ignores the
/// container's limit, so the workers get what plain node gets there and no
/// budget is logged.
#[test]
fn no_memory_watch_leaves_the_heaps_to_node() {
    let test = "no_memory_watch";
    let Some(app) = node_app(test) else { return };
    let Some(node) = node_versions(test).into_iter().next() else {
        return;
    };
    let Some(group) = cgroup(test, "no-watch") else {
        return;
    };
    let plain = plain_node_limit(&group, &node, &[], &[]);
    // (flags, environment)
    type Way<'a> = (&'a [&'a str], &'a [(&'a str, String)]);
    let ways: [Way; 2] = [
        (&["--no-memory-watch"], &[]),
        (&[], &[("PMINIT_NO_MEMORY_WATCH", "1".to_string())]),
    ];
    for (flags, env) in ways {
        let port = free_port();
        let mut args: Vec<&str> = flags.to_vec();
        args.extend([
            "-i",
            "2",
            "--listen-timeout",
            "20s",
            "--",
            "node",
            "leak.js",
        ]);
        let mut run = start_in_group(&group, &app, &node, port, env, &args);
        run.expect_ready(2);
        let limits = heap_limits(port, 2);
        assert_eq!(limits.len(), 2, "{limits:?}");
        assert!(
            limits.values().all(|&l| l == plain),
            "{flags:?} {env:?}: {limits:?}, plain node: {plain}\n{}",
            run.transcript()
        );
        assert!(
            !run.transcript().contains("memory budget"),
            "{}",
            run.transcript()
        );
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "{}", run.transcript());
    }
}
