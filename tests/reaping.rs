//! PID-1 duty: every zombie is reaped, orphans included, as PID 1 of a PID
//! namespace and as a subreaper.

mod common;
use common::*;

#[test]
fn two_hundred_orphans_are_reaped_and_none_is_left_a_zombie() {
    for mode in modes("two_hundred_orphans_are_reaped") {
        let mut run = Run::start(mode, &["-v", "--", python(), &fixture("orphans.py"), "200"]);
        run.expect_out("made 200 orphans");
        // Each orphan exits only after it has been reparented to pminit.
        run.expect_count(
            "saying an orphan was reaped",
            200,
            |l| matches!(l, Line::Err(s) if s.contains("reaped orphan pid")),
        );
        let pminit = run.pminit_pid();
        assert_eq!(
            zombies_below(pminit),
            Vec::<i32>::new(),
            "[{mode:?}] zombies left"
        );
        // Only the worker itself is still below pminit.
        assert_eq!(
            descendants(pminit).len(),
            1,
            "[{mode:?}] {:?}",
            descendants(pminit)
        );
        run.signal(libc::SIGTERM);
        assert_eq!(run.wait_code(), 0, "[{mode:?}]\n{}", run.transcript());
    }
}

#[test]
fn an_orphan_outside_the_worker_group_is_stopped_and_waited_for() {
    // --restart never: the worker exits 5 and leaves an orphan in a session
    // of its own. pminit sends it the stop signal, waits for it, and exits
    // with the worker's code.
    for mode in modes("an_orphan_outside_the_worker_group_is_stopped") {
        let mut run = Run::start(
            mode,
            &[
                "--restart",
                "never",
                "--",
                python(),
                &fixture("leave_orphan.py"),
            ],
        );
        run.expect_out("orphan got SIGINT");
        assert_eq!(run.wait_code(), 5, "[{mode:?}]\n{}", run.transcript());
    }
}
