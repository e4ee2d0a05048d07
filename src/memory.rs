//! The container's memory: its limit, each Node worker's heap budget, and
//! the watch that replaces a worker before the kernel's OOM killer acts.
//!
//! Why: Node sizes V8's heap from the whole container (libuv's constrained
//! memory), so N workers together may claim N times the container, and a
//! leak ends in a kernel OOM kill, which on cgroup v2 under Kubernetes
//! (`memory.oom.group=1`) takes every process of the container at once.
//!
//! - `container_limit` reads the limit as libuv's `uv_get_constrained_memory`
//!   does: the cgroup named in /proc/self/cgroup (v2 `memory.max`, v1
//!   `memory.limit_in_bytes`), at the root of the mount when that path is
//!   not there (inside a cgroup namespace, or Docker's v1 mount).
//! - `Budget` splits the limit: a reserve for pminit, then an equal share
//!   per worker, of which the V8 heap gets all but the worker's non-heap
//!   memory. It is recomputed for every spawn, so a scale changes it.
//! - `Watch` samples the workers' memory (PSS of each process group) once
//!   per housekeeping round while nothing grows, and faster while
//!   something does, so that a leak is seen before it reaches the limit.
//!   Its verdicts are pure (`judge`), the sampling is in the shell.
//!
//! Nothing here trusts a worker: the preload's heap figures only pick
//! the `heap` reason, and a worker's "look at me" report only brings the
//! next sample forward; the numbers that kill come from /proc.

use std::time::{Duration, Instant};

use crate::core::MemoryReason;

const MIB: u64 = 1 << 20;

/// A limit of 2^60 bytes or more is "no limit" (cgroup v1 writes
/// 9223372036854771712 for none).
const UNLIMITED: u64 = 1 << 60;

/// Kept out of the workers' shares: pminit itself and the slack around it.
pub const RESERVE: u64 = 16 * MIB;

/// What a Node worker uses besides its V8 heap (code, the isolate, libuv,
/// buffers of a quiet server): measured 35-45 MiB RSS on Node 20-24.
pub const NON_HEAP: u64 = 40 * MIB;

/// The smallest heap a worker is given, whatever the share.
pub const MIN_HEAP: u64 = 16 * MIB;

/// The container's memory limit and where it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    pub bytes: u64,
    /// `cgroup v1` or `cgroup v2`.
    pub source: &'static str,
    /// The file, for the start-up line.
    pub file: String,
}

/// The memory limit of pminit's cgroup, if any.
pub fn container_limit() -> Option<Limit> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    limit_from(&own, &|path| std::fs::read_to_string(path).ok())
}

/// `container_limit` with the files given: `read(path)` is a file's text.
pub fn limit_from(proc_self_cgroup: &str, read: &dyn Fn(&str) -> Option<String>) -> Option<Limit> {
    let mut found = None;
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (source, mount, file) = if controllers.is_empty() {
            ("cgroup v2", "/sys/fs/cgroup", "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                "cgroup v1",
                "/sys/fs/cgroup/memory",
                "memory.limit_in_bytes",
            )
        } else {
            continue;
        };
        // The cgroup's own directory, else the mount's root (a cgroup
        // namespace or a container's mount shows its own group there).
        let path = path.trim_end_matches('/');
        let candidates = [format!("{mount}{path}/{file}"), format!("{mount}/{file}")];
        for candidate in candidates {
            let Some(text) = read(&candidate) else {
                continue;
            };
            let bytes = match text.trim() {
                "max" => None,
                t => t.parse::<u64>().ok().filter(|&b| b > 0 && b < UNLIMITED),
            };
            if let Some(bytes) = bytes {
                let smaller = found.as_ref().is_none_or(|f: &Limit| bytes < f.bytes);
                if smaller {
                    found = Some(Limit {
                        bytes,
                        source,
                        file: candidate,
                    });
                }
            }
            break;
        }
    }
    found
}

/// How the limit is split among `workers` Node workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub limit: u64,
    pub workers: usize,
    /// Each worker's share of the limit, after pminit's reserve.
    pub share: u64,
    /// The `heap_size_limit` each worker should get (old + young space).
    pub heap: u64,
    /// The `--max-old-space-size` (MiB) that gives about that.
    pub old_space_mib: u64,
}

impl Budget {
    pub fn new(limit: u64, workers: usize) -> Budget {
        let workers = workers.max(1);
        let share = limit.saturating_sub(RESERVE) / workers as u64;
        let heap = share.saturating_sub(NON_HEAP).max(MIN_HEAP);
        let old = heap
            .saturating_sub(young_generation(heap))
            .max(MIN_HEAP / 2);
        Budget {
            limit,
            workers,
            share,
            heap,
            old_space_mib: (old / MIB).max(8),
        }
    }

    /// The workers' heaps do not fit: the share is smaller than a worker
    /// needs besides its heap.
    pub fn tight(&self) -> bool {
        self.share < NON_HEAP + MIN_HEAP
    }

    /// The NODE_OPTIONS flag.
    pub fn flag(&self) -> String {
        format!("--max-old-space-size={}", self.old_space_mib)
    }
}

/// V8's young generation for a heap of about `heap` bytes, rounded up so
/// that old + young stays within `heap`: three semi-spaces (two plus the
/// new large-object space), a semi-space being 1/128 of the old
/// generation, a power of two between 1 and 32 MiB (V8 12-13).
fn young_generation(heap: u64) -> u64 {
    let semi = (heap / 128).next_power_of_two().clamp(MIB, 32 * MIB);
    3 * semi
}

/// Whether the user already chose a heap size: a V8 heap flag in
/// NODE_OPTIONS or in the command's own arguments (before the script).
pub fn user_sized_heap(node_options: Option<&str>, argv: &[String]) -> bool {
    let is_heap_flag = |w: &str| {
        let w = w.trim_start_matches('-').replace('_', "-");
        w.starts_with("max-old-space-size") || w.starts_with("max-heap-size")
    };
    node_options.is_some_and(|o| o.split_whitespace().any(is_heap_flag))
        || argv
            .iter()
            .skip(1)
            .take_while(|a| a.starts_with('-'))
            .any(|a| is_heap_flag(a))
}

/// The share of its budget a worker may reach before it is replaced (new
/// first, old drained): 90 % of its share, or 85 % of its V8 heap limit.
const SHARE_SOFT: (u64, u64) = (9, 10);
const HEAP_SOFT: (u64, u64) = (85, 100);
/// The whole container at this part of its limit: the largest worker over
/// its share is killed at once, its replacement first.
const CONTAINER_HARD: (u64, u64) = (9, 10);
/// A worker at this multiple of its share grows past any heap limit (its
/// memory is outside V8's heap): killed at once, its replacement first.
const SHARE_HARD: (u64, u64) = (3, 2);

fn part(x: u64, (num, den): (u64, u64)) -> u64 {
    x / den * num + x % den * num / den
}

/// One worker as a sample sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub pid: i32,
    /// PSS of its process group.
    pub memory: u64,
    /// Its V8 heap (used, limit) from the preload's last answer.
    pub heap: Option<(u64, u64)>,
    /// A current, ready worker (only those are replaced gently; the others
    /// can only be killed).
    pub serving: bool,
}

/// What a sample says to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Replace {
        pid: i32,
        memory: u64,
        reason: MemoryReason,
    },
    Kill {
        pid: i32,
        memory: u64,
    },
}

/// The verdicts on one sample, given the budget (None: no container
/// limit, only --max-memory applies) and --max-memory.
///
/// - The container at 90 % of its limit: the largest worker past 90 % of
///   its share is killed now (its replacement first); when none is, no
///   single worker is to blame and the kernel decides. A worker at 1.5
///   times its share is killed too, however full the container: no heap
///   limit holds what it allocates.
/// - Else a serving worker past 90 % of its share, or with its V8 heap
///   past 85 % of its limit, is replaced gently (new first), if a new
///   worker fits beside it; when it does not, the rule above takes it
///   as it grows.
/// - --max-memory: replaced gently past it, with or without a limit.
pub fn judge(samples: &[Sample], budget: Option<&Budget>, max_memory: Option<u64>) -> Vec<Verdict> {
    let mut out = Vec::new();
    let total: u64 = samples.iter().map(|s| s.memory).sum::<u64>() + RESERVE;
    let mut killed = None;
    if let Some(b) = budget {
        let soft = part(b.share, SHARE_SOFT);
        let full = total >= part(b.limit, CONTAINER_HARD);
        let runaway = |s: &&Sample| s.memory > part(b.share, SHARE_HARD);
        if full || samples.iter().any(|s| runaway(&s)) {
            if let Some(s) = samples
                .iter()
                .filter(|s| s.memory > soft && (full || runaway(s)))
                .max_by_key(|s| s.memory)
            {
                killed = Some(s.pid);
                out.push(Verdict::Kill {
                    pid: s.pid,
                    memory: s.memory,
                });
            }
        }
    }
    let room_for_one = budget.is_none_or(|b| total + NON_HEAP < part(b.limit, CONTAINER_HARD));
    for s in samples
        .iter()
        .filter(|s| s.serving && Some(s.pid) != killed)
    {
        let reason = if max_memory.is_some_and(|m| s.memory > m) {
            Some(MemoryReason::MaxMemory)
        } else if !room_for_one {
            None
        } else if budget.is_some_and(|b| s.memory > part(b.share, SHARE_SOFT)) {
            Some(MemoryReason::Share)
        } else if budget.is_some()
            && s.heap
                .is_some_and(|(used, limit)| used > part(limit, HEAP_SOFT))
        {
            Some(MemoryReason::Heap)
        } else {
            None
        };
        if let Some(reason) = reason {
            out.push(Verdict::Replace {
                pid: s.pid,
                memory: s.memory,
                reason,
            });
        }
    }
    out
}

/// Fastest sampling, while memory grows quickly.
pub const FASTEST: Duration = Duration::from_millis(25);

/// When to sample next: at the housekeeping rate while nothing grows;
/// while something does, early enough to sample twice before the fastest
/// grower could cross its nearest threshold at its current rate.
#[derive(Debug, Default)]
pub struct Watch {
    /// Each worker's memory at the previous sample.
    last: Vec<(i32, u64)>,
    at: Option<Instant>,
    pub next: Option<Instant>,
}

impl Watch {
    /// Records a sample taken `now`; returns the delay to the next one.
    pub fn sampled(
        &mut self,
        samples: &[Sample],
        budget: Option<&Budget>,
        max_memory: Option<u64>,
        now: Instant,
        idle: Duration,
    ) -> Duration {
        let elapsed = self.at.map(|t| now.saturating_duration_since(t));
        let mut soonest = idle;
        if let Some(dt) = elapsed.filter(|d| !d.is_zero()) {
            let total: u64 = samples.iter().map(|s| s.memory).sum::<u64>() + RESERVE;
            for s in samples {
                let Some(&(_, before)) = self.last.iter().find(|(p, _)| *p == s.pid) else {
                    continue;
                };
                let grew = s.memory.saturating_sub(before);
                if grew < MIB {
                    continue;
                }
                let rate = grew as f64 / dt.as_secs_f64();
                // The nearest threshold this worker could cross.
                let mut room = u64::MAX;
                if let Some(b) = budget {
                    room = room
                        .min(part(b.share, SHARE_SOFT).saturating_sub(s.memory))
                        .min(part(b.limit, CONTAINER_HARD).saturating_sub(total));
                }
                if let Some(m) = max_memory {
                    room = room.min(m.saturating_sub(s.memory));
                }
                if room == u64::MAX {
                    continue;
                }
                let eta = Duration::from_secs_f64((room as f64 / rate / 2.0).min(3600.0));
                soonest = soonest.min(eta);
            }
        }
        self.last = samples.iter().map(|s| (s.pid, s.memory)).collect();
        self.at = Some(now);
        let delay = soonest.clamp(FASTEST, idle.max(FASTEST));
        self.next = Some(now + delay);
        delay
    }

    /// A worker says its memory grew (the preload's report): sample soon.
    pub fn hurry(&mut self, now: Instant) {
        let soon = now + FASTEST;
        if self.next.is_none_or(|n| n > soon) {
            self.next = Some(soon);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files<'a>(entries: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |path: &str| {
            entries
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, t)| t.to_string())
        }
    }

    #[test]
    fn the_limit_is_read_as_libuv_reads_it() {
        // cgroup v2 inside a cgroup namespace: "0::/".
        let read = files(&[("/sys/fs/cgroup/memory.max", "536870912\n")]);
        let l = limit_from("0::/\n", &read).expect("v2");
        assert_eq!((l.bytes, l.source), (512 * MIB, "cgroup v2"));
        // v2 with a path, and "max" for none.
        let read = files(&[("/sys/fs/cgroup/kubepods/pod1/c1/memory.max", "max\n")]);
        assert_eq!(limit_from("0::/kubepods/pod1/c1\n", &read), None);
        let read = files(&[("/sys/fs/cgroup/kubepods/pod1/c1/memory.max", "268435456")]);
        assert_eq!(
            limit_from("0::/kubepods/pod1/c1\n", &read).map(|l| l.bytes),
            Some(256 * MIB)
        );
        // v1, Docker without a cgroup namespace: /proc/self/cgroup names
        // the host's path, the mount shows the container's group at root.
        let v1 = "12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n";
        let read = files(&[("/sys/fs/cgroup/memory/memory.limit_in_bytes", "536870912\n")]);
        let l = limit_from(v1, &read).expect("v1");
        assert_eq!((l.bytes, l.source), (512 * MIB, "cgroup v1"));
        // The group's own file, when it is there, comes first.
        let read = files(&[
            (
                "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes",
                "268435456",
            ),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712",
            ),
        ]);
        assert_eq!(limit_from(v1, &read).map(|l| l.bytes), Some(256 * MIB));
        // v1's "no limit", junk, and nothing at all.
        let read = files(&[(
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        )]);
        assert_eq!(limit_from(v1, &read), None);
        let read = files(&[("/sys/fs/cgroup/memory/memory.limit_in_bytes", "lots")]);
        assert_eq!(limit_from(v1, &read), None);
        assert_eq!(limit_from("", &files(&[])), None);
        assert_eq!(limit_from("garbage\n::\n", &files(&[])), None);
    }

    #[test]
    fn the_smaller_limit_wins_and_zero_or_other_controllers_are_none() {
        // v2 and v1 both present (a hybrid host): the smaller one.
        let both = "0::/a\n4:memory:/b\n";
        let read = files(&[
            ("/sys/fs/cgroup/a/memory.max", "536870912"),
            ("/sys/fs/cgroup/memory/b/memory.limit_in_bytes", "268435456"),
        ]);
        assert_eq!(limit_from(both, &read).map(|l| l.bytes), Some(256 * MIB));
        let read = files(&[
            ("/sys/fs/cgroup/a/memory.max", "268435456"),
            ("/sys/fs/cgroup/memory/b/memory.limit_in_bytes", "536870912"),
        ]);
        let l = limit_from(both, &read).expect("v2");
        assert_eq!((l.bytes, l.source), (256 * MIB, "cgroup v2"));
        // A v1 controller that is not memory is no limit, whatever it holds.
        let read = files(&[("/sys/fs/cgroup/memory/docker/x/memory.limit_in_bytes", "1")]);
        assert_eq!(limit_from("3:cpu,cpuacct:/docker/x\n", &read), None);
        // Zero is no limit either.
        let read = files(&[("/sys/fs/cgroup/memory.max", "0")]);
        assert_eq!(limit_from("0::/\n", &read), None);
    }

    #[test]
    fn parts_of_a_whole_are_exact() {
        assert_eq!(part(1000, (9, 10)), 900);
        assert_eq!(part(1001, (9, 10)), 900);
        assert_eq!(part(1009, (9, 10)), 908);
        assert_eq!(part(10, (3, 2)), 15);
        assert_eq!(part(u64::MAX, (9, 10)), u64::MAX / 10 * 9 + 4);
    }

    #[test]
    fn a_large_heap_gets_a_young_generation_of_three_capped_semi_spaces() {
        assert_eq!(young_generation(84 * MIB), 3 * MIB);
        assert_eq!(young_generation(1024 * MIB), 3 * 8 * MIB);
        assert_eq!(young_generation(16 * 1024 * MIB), 3 * 32 * MIB);
        let b = Budget::new(16 * 1024 * MIB, 1);
        assert_eq!(b.heap, 16 * 1024 * MIB - RESERVE - NON_HEAP);
        assert_eq!(b.old_space_mib, (b.heap - 96 * MIB) / MIB);
    }

    #[test]
    fn thresholds_are_exclusive() {
        let b = Budget::new(512 * MIB, 4); // share 124 MiB: soft 111.6 MiB
        let soft = part(b.share, SHARE_SOFT);
        let at = |m: u64| Sample {
            pid: 1,
            memory: m,
            heap: None,
            serving: true,
        };
        assert!(judge(&[at(soft)], Some(&b), None).is_empty());
        assert_eq!(judge(&[at(soft + 1)], Some(&b), None).len(), 1);
        // The heap mark: past 85 % of the limit, not at it.
        let heap = |used: u64| Sample {
            heap: Some((used, 100 * MIB)),
            ..at(50 * MIB)
        };
        assert!(judge(&[heap(85 * MIB)], Some(&b), None).is_empty());
        assert_eq!(
            judge(&[heap(85 * MIB + 1)], Some(&b), None),
            vec![Verdict::Replace {
                pid: 1,
                memory: 50 * MIB,
                reason: MemoryReason::Heap
            }]
        );
        // Without a container limit the heap mark does not apply.
        assert!(judge(&[heap(99 * MIB)], None, None).is_empty());
        // --max-memory: past it, not at it.
        assert!(judge(&[at(200 * MIB)], None, Some(200 * MIB)).is_empty());
        // A drainer near its share is not replaced (only killed, when full).
        let draining = Sample {
            serving: false,
            ..at(soft + 1)
        };
        assert!(judge(&[draining], Some(&b), None).is_empty());
    }

    #[test]
    fn n_heaps_fit_in_the_limit_with_room_for_the_rest() {
        for (limit, workers) in [
            (512 * MIB, 4),
            (2048 * MIB, 4),
            (256 * MIB, 1),
            (1024 * MIB, 16),
        ] {
            let b = Budget::new(limit, workers);
            assert!(
                b.heap * workers as u64 + RESERVE <= limit || b.tight(),
                "{b:?}"
            );
            // The flag gives a heap_size_limit (old + young) within heap.
            let old = b.old_space_mib * MIB;
            assert!(old + young_generation(old) <= b.heap || b.tight(), "{b:?}");
        }
        let b = Budget::new(512 * MIB, 4);
        assert_eq!(b.share, 124 * MIB);
        assert_eq!(b.heap, 84 * MIB);
        assert_eq!(b.flag(), "--max-old-space-size=81");
        assert!(!b.tight());
        let tight = Budget::new(256 * MIB, 8); // 30 MiB each
        assert!(tight.tight());
        assert_eq!(tight.heap, MIN_HEAP, "never below the smallest heap");
        // A share of exactly what a worker needs besides its heap plus the
        // smallest heap is not tight.
        let just = Budget::new(RESERVE + NON_HEAP + MIN_HEAP, 1);
        assert_eq!(just.share, NON_HEAP + MIN_HEAP);
        assert!(!just.tight());
    }

    #[test]
    fn a_users_own_heap_size_wins() {
        let argv = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert!(user_sized_heap(
            Some("--max-old-space-size=200"),
            &argv("node a.js")
        ));
        assert!(user_sized_heap(
            Some("--inspect --max_old_space_size=200"),
            &[]
        ));
        assert!(user_sized_heap(
            None,
            &argv("node --max-old-space-size=300 a.js")
        ));
        assert!(user_sized_heap(
            None,
            &argv("node --max-heap-size=300 a.js")
        ));
        assert!(!user_sized_heap(
            Some("--enable-source-maps"),
            &argv("node a.js")
        ));
        // After the script, it is the app's argument, not Node's.
        assert!(!user_sized_heap(
            None,
            &argv("node a.js --max-old-space-size=1")
        ));
    }

    fn serving(pid: i32, mib: u64) -> Sample {
        Sample {
            pid,
            memory: mib * MIB,
            heap: None,
            serving: true,
        }
    }

    #[test]
    fn verdicts() {
        let b = Budget::new(512 * MIB, 4); // share 124 MiB
                                           // Quiet workers: nothing.
        let quiet = [
            serving(1, 50),
            serving(2, 50),
            serving(3, 50),
            serving(4, 50),
        ];
        assert!(judge(&quiet, Some(&b), None).is_empty());
        // Near its share: replaced gently.
        let near = [serving(1, 115), serving(2, 50)];
        assert_eq!(
            judge(&near, Some(&b), None),
            vec![Verdict::Replace {
                pid: 1,
                memory: 115 * MIB,
                reason: MemoryReason::Share
            }]
        );
        // Its heap near the limit pminit gave it.
        let heap = [Sample {
            heap: Some((80 * MIB, 84 * MIB)),
            ..serving(1, 100)
        }];
        assert_eq!(
            judge(&heap, Some(&b), None),
            vec![Verdict::Replace {
                pid: 1,
                memory: 100 * MIB,
                reason: MemoryReason::Heap
            }]
        );
        // --max-memory first, with or without a container limit.
        assert_eq!(
            judge(&[serving(1, 300)], None, Some(200 * MIB)),
            vec![Verdict::Replace {
                pid: 1,
                memory: 300 * MIB,
                reason: MemoryReason::MaxMemory
            }]
        );
        assert!(judge(&[serving(1, 300)], None, None).is_empty());
        // The container near its limit: the largest worker over its share
        // is killed, whether it serves or drains; nobody else.
        let full = [
            serving(1, 60),
            Sample {
                serving: false,
                ..serving(2, 340)
            },
            serving(3, 60),
        ];
        assert_eq!(
            judge(&full, Some(&b), None),
            vec![Verdict::Kill {
                pid: 2,
                memory: 340 * MIB
            }]
        );
        // Full and even: the largest past 90 % of its share goes first.
        let even = [
            serving(1, 118),
            serving(2, 119),
            serving(3, 118),
            serving(4, 118),
        ];
        assert_eq!(
            judge(&even, Some(&b), None),
            vec![Verdict::Kill {
                pid: 2,
                memory: 119 * MIB
            }]
        );
        // A runaway: 1.5 times its share, however empty the container.
        let runaway = [serving(1, 190), serving(2, 50)];
        assert_eq!(
            judge(&runaway, Some(&b), None),
            vec![Verdict::Kill {
                pid: 1,
                memory: 190 * MIB
            }]
        );
        // Full with nobody past 90 % of a share: nobody to blame.
        let many = [
            serving(1, 110),
            serving(2, 110),
            serving(3, 110),
            serving(4, 110),
        ];
        assert!(judge(&many, Some(&b), None).is_empty());
        // One worker alone: past 90 % of its share the container is past
        // 90 % too; a new one would not fit beside it: killed, not drained.
        let one = Budget::new(512 * MIB, 1); // share 496 MiB
        assert!(judge(&[serving(1, 430)], Some(&one), None).is_empty());
        assert_eq!(
            judge(&[serving(1, 450)], Some(&one), None),
            vec![Verdict::Kill {
                pid: 1,
                memory: 450 * MIB
            }]
        );
        // Two workers, one grown: no room for a third beside them.
        let two = Budget::new(512 * MIB, 2); // share 248 MiB
        let tight = [serving(1, 230), serving(2, 190)]; // total 436 MiB
        assert!(judge(&tight, Some(&two), None).is_empty());
    }

    #[test]
    fn sampling_speeds_up_while_memory_grows() {
        let b = Budget::new(512 * MIB, 4);
        let idle = Duration::from_secs(4);
        let t0 = Instant::now();
        let mut w = Watch::default();
        let d = w.sampled(&[serving(1, 50)], Some(&b), None, t0, idle);
        assert_eq!(d, idle, "first sample: nothing to compare");
        let d = w.sampled(&[serving(1, 50)], Some(&b), None, t0 + idle, idle);
        assert_eq!(d, idle, "quiet");
        // +24 MiB in 100 ms: 61 MiB of room to the share's 90 %.
        let t = t0 + idle + Duration::from_millis(100);
        let d = w.sampled(&[serving(1, 74)], Some(&b), None, t, idle);
        assert!(d < Duration::from_millis(200), "{d:?}");
        assert!(d >= FASTEST);
        // Exactly: half the time to the nearest threshold at this rate.
        // 24 MiB in 100 ms from 50 MiB; room to 90 % of the share
        // (111.6 MiB) is 37.6 MiB: 156.7 ms at this rate, sampled at half.
        let t2 = t + Duration::from_millis(100);
        let d = w.sampled(&[serving(1, 98)], Some(&b), None, t2, idle);
        let room = part(b.share, SHARE_SOFT) - 98 * MIB;
        let want = room as f64 / (24.0 * MIB as f64 / 0.1) / 2.0;
        assert!((d.as_secs_f64() - want).abs() < 0.001, "{d:?} vs {want}");
        // Growth under 1 MiB is no growth.
        let t3 = t2 + Duration::from_millis(100);
        let d = w.sampled(&[serving(1, 98)], Some(&b), None, t3, idle);
        assert_eq!(d, idle);
        // No limit and no --max-memory: nothing to approach.
        let mut w = Watch::default();
        w.sampled(&[serving(1, 50)], None, None, t0, idle);
        let d = w.sampled(
            &[serving(1, 500)],
            None,
            None,
            t0 + Duration::from_millis(100),
            idle,
        );
        assert_eq!(d, idle);
        // A report brings the next sample forward, never back.
        w.hurry(t0);
        assert_eq!(w.next, Some(t0 + FASTEST));
        w.next = Some(t0 + FASTEST);
        w.hurry(t0);
        assert_eq!(w.next, Some(t0 + FASTEST));
        w.next = Some(t0 + Duration::from_millis(10));
        w.hurry(t0);
        assert_eq!(w.next, Some(t0 + Duration::from_millis(10)), "never later");
    }
}
