//! Healing (issue 19) in a real Docker container, where the limits come
//! from the engine: `--memory 512m` with 4 workers (their V8 heaps fit the
//! container together; a user's own `--max-old-space-size` wins; one
//! worker leaking ~24 MiB per request causes no kernel OOM kill), and
//! `--cpus` changed in place by `docker update` (`-i max` follows it, an
//! explicit count does not).
//!
//! The images are the project's own (docker/make-test-images.sh, as in
//! tests/docker.rs); the Node fixtures are mounted from tests/node-app.
//! The container's node is this machine's (the test images copy it).
//! Containers use `--network host` or `none` and are removed however the
//! test ends.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const EXAMPLE: &str = "pminit-example:test";
const MIB: u64 = 1 << 20;
const LIMIT: u64 = 512 * MIB;

/// Docker up and the test images built (once per test binary), or why not.
fn docker(test: &str) -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let up = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !up {
            return Err("a running Docker engine (dockerd)".into());
        }
        let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "docker", "make-test-images.sh"]
            .iter()
            .collect();
        let out = Command::new(script)
            .output()
            .expect("run make-test-images.sh");
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "the test images (docker/make-test-images.sh failed: {})",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    match ready {
        Ok(()) => true,
        Err(what) => require(false, test, what),
    }
}

fn node_app_mount() -> String {
    format!("{}/tests/node-app:/t:ro", env!("CARGO_MANIFEST_DIR"))
}

/// `docker rm -f NAME` when dropped: however the test ends.
struct Removal(String);

impl Drop for Removal {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A container run attached (`docker run --rm --name NAME ARGS`): its
/// output and exit are the Run's. Removed when dropped.
struct Container {
    name: String,
    run: Run,
    _removal: Removal,
}

fn container(args: &[&str]) -> Container {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "pminit-heal-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut cmd = Command::new("docker");
    cmd.args(["run", "--rm", "--name", &name]).args(args);
    let run = Run::spawn(Mode::Pid1, cmd, Options::default());
    Container {
        _removal: Removal(name.clone()),
        name,
        run,
    }
}

impl Container {
    /// `docker exec NAME ARGS`: (exit code, stdout, stderr).
    fn exec(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new("docker")
            .arg("exec")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("docker exec");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `docker VERB ARGS NAME`, which must succeed.
    fn docker(&self, verb: &str, args: &[&str]) {
        let out = Command::new("docker")
            .arg(verb)
            .args(args)
            .arg(&self.name)
            .output()
            .expect("docker");
        assert!(
            out.status.success(),
            "docker {verb} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn inspect(&self, format: &str) -> String {
        let out = Command::new("docker")
            .args(["inspect", "--format", format, &self.name])
            .output()
            .expect("inspect");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn status(&self) -> serde_json::Value {
        let (code, out, err) = self.exec(&["/pminit", "status", "--json"]);
        assert_eq!(code, 0, "status: {out} {err}\n{}", self.run.transcript());
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// Polls `pminit status --json` (a docker exec each: that is the wait)
    /// until `pred` holds, within `limit`.
    fn status_until(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let end = Instant::now() + limit;
        loop {
            let s = self.status();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "[{}] status never showed {what} within {limit:?}: {s}\n{}",
                self.name,
                self.run.transcript()
            );
        }
    }

    /// `node ARGS -e <print heap_size_limit>` run in the container (its
    /// env, its cgroup) without pminit.
    fn plain_node_limit(&self, args: &[&str]) -> u64 {
        let mut all = vec!["node"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[
            "-e",
            "console.log(require('node:v8').getHeapStatistics().heap_size_limit)",
        ]);
        let (code, out, err) = self.exec(&all);
        assert_eq!(code, 0, "{out} {err}");
        out.trim().parse().expect("a number")
    }

    /// Kernel OOM kills in the container's memory cgroup so far: cgroup v1
    /// `memory.oom_control`, or v2 `memory.events`.
    fn oom_kills(&self) -> Option<u64> {
        let id = self.inspect("{{.Id}}");
        [
            format!("/sys/fs/cgroup/memory/docker/{id}/memory.oom_control"),
            format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.events"),
            format!("/sys/fs/cgroup/docker/{id}/memory.events"),
        ]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    fn running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }
}

fn rows(s: &serde_json::Value) -> Vec<serde_json::Value> {
    s["workers"].as_array().cloned().unwrap_or_default()
}

fn ready(s: &serde_json::Value, n: usize) -> bool {
    let r = rows(s);
    r.len() == n && r.iter().all(|w| w["state"] == "ready")
}

/// `docker run --memory 512m --network host` of pminit `-i 4 ARGS -- node
/// NODE_ARGS /t/leak.js`, with `env` (NAME=VALUE) and PORT=`port`.
fn leak_container(port: u16, env: &[String], args: &[&str], node_args: &[&str]) -> Container {
    let mount = node_app_mount();
    let port_env = format!("PORT={port}");
    let mut all = vec![
        "--network",
        "host",
        "--memory",
        "512m",
        "-v",
        &mount,
        "-e",
        &port_env,
    ];
    for e in env {
        all.extend_from_slice(&["-e", e]);
    }
    all.extend_from_slice(&[
        "--entrypoint",
        "/pminit",
        EXAMPLE,
        "-i",
        "4",
        "--listen-timeout",
        "20s",
    ]);
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", "node"]);
    all.extend_from_slice(node_args);
    all.push("/t/leak.js");
    container(&all)
}

/// Issue 19 point 2: in `--memory 512m` with `-i 4`, 4 x the largest
/// worker heap_size_limit fits 512 MiB (plain node there claims more);
/// with `--max-old-space-size=200` in NODE_OPTIONS or on node's command
/// line, each worker's limit is what plain node says with it there.
#[test]
fn worker_heaps_fit_a_512m_container_and_a_users_own_size_wins() {
    let test = "worker_heaps_fit_a_512m_container";
    if !docker(test) {
        return;
    }
    let cases: [(&str, Vec<String>, &[&str]); 3] = [
        ("budget", vec![], &[]),
        (
            "NODE_OPTIONS",
            vec!["NODE_OPTIONS=--max-old-space-size=200".into()],
            &[],
        ),
        ("command line", vec![], &["--max-old-space-size=200"]),
    ];
    for (what, env, node_args) in cases {
        let port = free_port();
        let mut c = leak_container(port, &env, &[], node_args);
        c.run.expect_ready(4);
        let limits = heap_limits(port, 4);
        assert_eq!(limits.len(), 4, "[{what}] {limits:?}");
        let largest = *limits.values().max().expect("4");
        let plain = c.plain_node_limit(node_args);
        println!(
            "[{what}] heap_size_limit per worker {} MiB; plain node in the container {} MiB",
            largest / MIB,
            plain / MIB
        );
        if what == "budget" {
            assert!(
                4 * plain > LIMIT,
                "the premise: unbudgeted, 4 workers could claim more than 512 MiB ({} MiB each)",
                plain / MIB
            );
            assert!(
                4 * largest <= LIMIT,
                "4 x {} MiB > 512 MiB: {limits:?}\n{}",
                largest / MIB,
                c.run.transcript()
            );
            c.run.expect_seen_within(
                "with the memory budget",
                DEADLINE,
                |l| matches!(l, Line::Err(s) if s.contains("memory budget")),
            );
        } else {
            for (pid, limit) in &limits {
                assert_eq!(
                    *limit,
                    plain,
                    "[{what}] worker {pid}: the user's own size wins\n{}",
                    c.run.transcript()
                );
            }
        }
        c.docker("stop", &["-t", "10"]);
        c.run.wait_code();
    }
}

/// Issue 19 point 3: `--memory 512m -i 4`, the worker of slot 0 leaking
/// ~24 MiB per /leak (V8 heap, then external Buffers) for 300 requests
/// while 2 clients send plain requests: no kernel OOM kill in the
/// container's cgroup, the container still runs, 4 workers answer, at
/// most 1 % of the plain requests failed.
#[test]
fn a_leaking_worker_in_a_512m_container_causes_no_kernel_oom_kill() {
    let test = "a_leaking_worker_in_a_512m_container";
    if !docker(test) {
        return;
    }
    for kind in ["heap", "external"] {
        let port = free_port();
        let mport = free_port();
        let metrics = format!("127.0.0.1:{mport}");
        let mut c = leak_container(
            port,
            &[format!("LEAK_KIND={kind}")],
            &["--metrics", &metrics],
            &[],
        );
        c.run.expect_ready(4);
        let before = c.oom_kills();
        if !require(
            before.is_some(),
            test,
            "the container's memory cgroup (oom_kill in memory.oom_control or memory.events)",
        ) {
            return;
        }
        assert_eq!(before, Some(0), "[{kind}]");

        let load = Load::start(port, 2, false);
        let (mut ok, mut failed) = (0, 0);
        for _ in 0..300 {
            match http_get_path(port, "/leak") {
                Ok(_) => ok += 1,
                Err(_) => failed += 1,
            }
        }
        let plain = load.finish();
        let kills = c.oom_kills();
        let page = scrape_metrics(mport).unwrap_or_default();
        let healing: Vec<&str> = page
            .lines()
            .filter(|l| l.starts_with("pminit_memory_") || l.starts_with("pminit_restarts_total"))
            .collect();
        println!(
            "[{kind}] /leak {ok} ok {failed} failed; plain {} ok {} failed; oom_kill {kills:?}; {}",
            plain.ok,
            plain.failures.len(),
            healing.join("; ")
        );
        assert_eq!(
            kills,
            Some(0),
            "[{kind}] kernel OOM kills in the container\n{}",
            c.run.transcript()
        );
        assert!(
            c.running() && c.run.wait_within(Duration::ZERO).is_none(),
            "[{kind}] the container ended\n{}",
            c.run.transcript()
        );
        let total = plain.ok + plain.failures.len() as u64;
        assert!(plain.ok >= 50, "[{kind}] too little load: {}", plain.ok);
        assert!(
            plain.failures.len() as u64 * 100 <= total,
            "[{kind}] {} of {total} plain requests failed: {:?}",
            plain.failures.len(),
            plain.failures.iter().take(10).collect::<Vec<_>>()
        );
        let s = c.status_until("4 ready workers", DEADLINE, |s| ready(s, 4));
        let want: BTreeSet<i64> = rows(&s).iter().filter_map(|w| w["pid"].as_i64()).collect();
        assert_eq!(
            distinct_pids(port, 4),
            want,
            "[{kind}] the 4 workers answer"
        );
        c.docker("stop", &["-t", "10"]);
        c.run.wait_code();
    }
}

/// Issue 19 point 4: `--cpus 1 ... -i max` runs 1 worker; after `docker
/// update --cpus 2` it runs 2 (and back to 1 after `--cpus 1`), logged
/// with `CPU`. An explicit `-i 1` under the same change stays at 1.
#[test]
fn instances_max_follows_docker_update_cpus_and_an_explicit_count_does_not() {
    let test = "instances_max_follows_docker_update_cpus";
    if !docker(test) {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !require(cpus >= 2, test, "2 CPUs (docker update --cpus 2)") {
        return;
    }
    let run = |count: &str| {
        container(&[
            "--network",
            "none",
            "--cpus",
            "1",
            "--entrypoint",
            "/pminit",
            EXAMPLE,
            "-i",
            count,
            "--",
            "node",
            "index.js",
        ])
    };
    let mut max = run("max");
    let mut fixed = run("1");
    max.run.expect_ready(1);
    fixed.run.expect_ready(1);
    for c in [&max, &fixed] {
        let s = c.status_until("1 ready worker", DEADLINE, |s| ready(s, 1));
        assert_eq!(s["instances"], 1, "{s}");
    }
    let cpu_lines = |c: &Container| {
        c.run
            .stderr_lines()
            .iter()
            .filter(|l| l.contains("CPU"))
            .count()
    };
    let fixed_before = cpu_lines(&fixed);

    let t0 = Instant::now();
    max.docker("update", &["--cpus", "2"]);
    fixed.docker("update", &["--cpus", "2"]);
    let s = max.status_until("2 ready workers", Duration::from_secs(25), |s| {
        s["instances"] == 2 && ready(s, 2)
    });
    println!(
        "-i max: 2 workers {:?} after docker update: {s}",
        t0.elapsed()
    );
    max.run.expect_seen_within(
        "about the CPU change",
        DEADLINE,
        |l| matches!(l, Line::Err(s) if s.contains("CPU")),
    );

    // The explicit count: two re-reads (5 s each) and more later, still 1.
    assert!(
        fixed.run.wait_within(Duration::from_secs(11)).is_none(),
        "{}",
        fixed.run.transcript()
    );
    let s = fixed.status();
    assert!(s["instances"] == 1 && ready(&s, 1), "-i 1 stays at 1: {s}");
    assert_eq!(
        cpu_lines(&fixed),
        fixed_before,
        "no CPU change for an explicit count:\n{}",
        fixed.run.transcript()
    );

    // And back down.
    max.docker("update", &["--cpus", "1"]);
    max.status_until("1 worker", Duration::from_secs(25), |s| {
        s["instances"] == 1 && ready(s, 1)
    });
    for c in [&max, &fixed] {
        c.docker("stop", &["-t", "10"]);
    }
    for c in [&mut max, &mut fixed] {
        c.run.wait_code();
    }
}
