//! --max-memory counts pages shared between a worker and its forked
//! children once (PSS), so a pre-forking worker is not replaced for memory
//! it does not use; a worker that really is over the limit is.

mod common;
use common::*;

#[test]
fn shared_cow_pages_count_once_and_a_real_excess_is_replaced() {
    const SHARED_MIB: u64 = 150;
    const CHILDREN: u64 = 8;
    let dir = std::env::temp_dir().join(format!("pminit-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let fifo = dir.join("go");
    let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).expect("path");
    // SAFETY: mkfifo reads the NUL-terminated path only.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let fifo = fifo.to_string_lossy().into_owned();
    // Worker 0: 150 MiB shared with 8 children (an RSS sum says ~1.3 GiB).
    // Worker 1, once worker 0 is set up: 450 MiB of its own.
    let mut run = Run::start(
        Mode::Subreaper,
        &[
            "-i",
            "2",
            "--max-memory",
            "400M",
            "--",
            python(),
            &fixture("memory.py"),
            &fifo,
            &SHARED_MIB.to_string(),
            &CHILDREN.to_string(),
            "450",
        ],
    );
    let shared = run.expect_out("shared ready");
    let worker0 = field(&shared, "pid");
    let rss_sum: u64 = std::iter::once(worker0)
        .chain(children(worker0))
        .filter_map(|p| status_field(p, "VmRSS"))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    println!(
        "worker 0 and its {CHILDREN} children: RSS sum {} MiB",
        rss_sum >> 10
    );
    assert!(
        rss_sum >> 10 > 400,
        "the premise: an RSS sum over the limit ({} MiB)",
        rss_sum >> 10
    );
    run.expect_out("big ready");
    // The check that finds worker 1 over the limit looks at worker 0 first
    // (slot order) in the same pass, when it is already fully set up.
    // (Counted over every line seen: stdout and stderr are read by two
    // threads, so this line may arrive before "big ready".)
    run.expect_count(
        "replacing a worker over --max-memory",
        1,
        |l| matches!(l, Line::Err(s) if s.contains("over --max-memory")),
    );
    let over = run
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("over --max-memory"))
        .expect("counted above");
    assert!(
        over.contains("worker 1 "),
        "worker 0 shares its pages, it is not over: {over}\n{}",
        run.transcript()
    );
    println!("{over}");
    run.signal(libc::SIGTERM);
    run.wait_code();
    assert!(
        !run.stderr_lines()
            .iter()
            .any(|l| l.contains("worker 0 ") && l.contains("over --max-memory")),
        "{}",
        run.transcript()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
