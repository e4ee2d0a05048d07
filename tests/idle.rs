//! An idle pminit costs nothing: one blocking poll with no timeout, so its
//! CPU ticks and context switches do not move while the worker runs.

mod common;
use common::*;
use std::time::Duration;

/// (utime + stime ticks, voluntary + involuntary context switches)
fn cost(pid: i32) -> (u64, u64) {
    let f = stat_fields(pid).expect("pminit is alive");
    // After the command name: state is [0], utime [11], stime [12].
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    let switches: u64 = ["voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"]
        .iter()
        .map(|k| {
            status_field(pid, k)
                .expect(k)
                .parse::<u64>()
                .expect("number")
        })
        .sum();
    (ticks, switches)
}

#[test]
fn idle_pminit_has_no_cpu_ticks_and_no_wake_ups_over_3s() {
    for mode in modes("idle_pminit_has_no_cpu_ticks") {
        let mut run = Run::start(mode, &["--", python(), &fixture("catch.py"), "SIGINT"]);
        run.expect_out("ready");
        let pid = run.pminit_pid();
        let before = cost(pid);
        // The measurement window itself, not a synchronisation.
        std::thread::sleep(Duration::from_secs(3));
        let after = cost(pid);
        assert_eq!(
            before, after,
            "[{mode:?}] (cpu ticks, context switches) moved while idle"
        );
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0);
    }
}
