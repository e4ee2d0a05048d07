//! Restarts: on-failure by default with backoff, a crash loop ends the run
//! non-zero, `--restart never` behaves as tini.

mod common;
use common::*;

#[test]
fn a_crashing_worker_is_restarted_with_backoff() {
    for mode in modes("a_crashing_worker_is_restarted") {
        // Crashes twice (a counter file), then runs.
        let dir =
            std::env::temp_dir().join(format!("pminit-restart-{}-{mode:?}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("tmp");
        let script = format!(
            "n=$(ls {d} | wc -l); touch {d}/run$n; echo run $n; [ $n -ge 2 ] && exec \"$0\" \"$1\" SIGINT; exit 3",
            d = dir.display()
        );
        let mut run = Run::start(
            mode,
            &["--", "sh", "-c", &script, python(), &fixture("catch.py")],
        );
        run.expect_err("restarts in 100 ms (restart #1)");
        run.expect_err("restarts in 200 ms (restart #2)");
        run.expect_out("run 2");
        run.expect_out("ready");
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "[{mode:?}]\n{}", run.transcript());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_crash_loop_stops_the_run_with_the_workers_code() {
    for mode in modes("a_crash_loop_stops_the_run") {
        let mut run = Run::start(
            mode,
            &[
                "--max-restarts",
                "3",
                "--min-uptime",
                "10s",
                "--",
                "sh",
                "-c",
                "exit 7",
            ],
        );
        assert_eq!(run.wait_code(), 7, "[{mode:?}]\n{}", run.transcript());
        run.drain();
        let err = run.stderr_lines().join("\n");
        assert!(err.contains("crash loop"), "{err}");
        assert_eq!(err.matches("worker 0 started").count(), 3, "{err}");
    }
}

#[test]
fn clean_exit_is_not_restarted_on_failure_but_is_with_always() {
    let mut run = Run::start(Mode::Subreaper, &["--", "sh", "-c", "echo once"]);
    assert_eq!(run.wait_code(), 0);
    run.drain();
    assert_eq!(run.transcript().matches("out| once").count(), 1);

    let mut run = Run::start(
        Mode::Subreaper,
        &[
            "--restart",
            "always",
            "--max-restarts",
            "2",
            "--min-uptime",
            "10s",
            "--",
            "sh",
            "-c",
            "echo again",
        ],
    );
    // Two quick clean exits under `always` are a crash loop too: exit 1.
    assert_eq!(run.wait_code(), 1, "{}", run.transcript());
    run.drain();
    assert_eq!(run.transcript().matches("out| again").count(), 2);
}

#[test]
fn json_log_lines_are_one_object_each_with_stable_fields() {
    let mut run = Run::start(
        Mode::Subreaper,
        &[
            "--log-format",
            "json",
            "--restart",
            "never",
            "--",
            "sh",
            "-c",
            "exit 4",
        ],
    );
    assert_eq!(run.wait_code(), 4);
    run.drain();
    let lines = run.stderr_lines();
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    for e in &events {
        assert!(e["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
        assert!(e["level"].is_string() && e["event"].is_string(), "{e}");
    }
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        names,
        ["worker_spawned", "worker_exited", "stopping", "exit"],
        "{lines:?}"
    );
    assert_eq!(events[1]["code"], 4);
    assert_eq!(events[3]["code"], 4);
}
