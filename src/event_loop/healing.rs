//! The shell's side of healing: what pminit samples at a low rate and turns
//! into core events. Liveness pings are the core's (core/liveness.rs); here:
//!
//! - memory: the workers' memory against --max-memory and, under a
//!   container limit, against each Node worker's share (src/memory.rs
//!   decides; this samples /proc and feeds the verdicts to the core);
//! - CPU: with `-i max` (or 0, -K), the count follows an in-place change
//!   of the CPU quota (Kubernetes' in-place resize, `docker update
//!   --cpus`), which no signal announces.
//!
//! Both run once per housekeeping round (HOUSEKEEPING) while nothing
//! changes, and a round due within SLACK of another wake-up runs in that
//! one, so an idle pminit wakes once per round for all of them and the
//! liveness pings together.

use super::*;
use crate::core::ScaleTo;
use crate::ipc::Heap;
use crate::memory::{self, Budget, Limit, Sample, Verdict, Watch};
use crate::parse;

/// The low rate: one round every 4 s (the liveness pings' rate at the
/// default --hang-timeout).
pub const HOUSEKEEPING: Duration = Duration::from_secs(4);

/// A round due this close to a wake-up runs in it.
pub const SLACK: Duration = Duration::from_millis(500);

/// What the healing side keeps between rounds.
pub struct Healing {
    /// The container's limit, when Node workers are watched against it.
    pub limit: Option<Limit>,
    pub max_memory: Option<u64>,
    pub watch: Watch,
    /// Each worker's V8 heap, from its last answer to a ping.
    pub heaps: HashMap<i32, Heap>,
    /// -i max/0/-K: the spec, the count it gave last, the next look.
    pub cpus: Option<(String, usize, Instant)>,
}

impl Healing {
    pub fn new(
        limit: Option<Limit>,
        max_memory: Option<u64>,
        cpu_relative: Option<String>,
        instances: usize,
        now: Instant,
    ) -> Healing {
        let mut watch = Watch::default();
        if limit.is_some() || max_memory.is_some() {
            watch.next = Some(now + HOUSEKEEPING);
        }
        Healing {
            limit,
            max_memory,
            watch,
            heaps: HashMap::new(),
            cpus: cpu_relative.map(|spec| (spec, instances, now + HOUSEKEEPING)),
        }
    }

    /// The next moment something here is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        let cpus = self.cpus.as_ref().map(|c| c.2);
        [self.watch.next, cpus].into_iter().flatten().min()
    }

    fn budget(&self, workers: usize) -> Option<Budget> {
        self.limit.as_ref().map(|l| Budget::new(l.bytes, workers))
    }

    /// Runs what is due (within SLACK) and queues the events it finds.
    pub fn run_due(&mut self, sup: &Supervisor, now: Instant, queue: &mut VecDeque<Event>) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now + SLACK);
        if due(self.watch.next) {
            self.sample_memory(sup, now, queue);
        }
        if due(self.cpus.as_ref().map(|c| c.2)) {
            self.follow_cpus(now, queue);
        }
    }

    fn sample_memory(&mut self, sup: &Supervisor, now: Instant, queue: &mut VecDeque<Event>) {
        let serving = sup.serving();
        let views = sup.workers();
        let pids: Vec<i32> = views.iter().filter_map(|v| v.pid).collect();
        // PSS: pages a worker shares with its forked children count once.
        let samples: Vec<Sample> = sys::group_memory(&pids)
            .into_iter()
            .map(|(pid, memory)| Sample {
                pid,
                memory,
                heap: self.heaps.get(&pid).map(|h| (h.used, h.limit)),
                serving: serving.contains(&pid),
            })
            .collect();
        let budget = self.budget(sup.instances());
        for verdict in memory::judge(&samples, budget.as_ref(), self.max_memory) {
            queue.push_back(match verdict {
                Verdict::Replace {
                    pid,
                    memory,
                    reason,
                } => Event::OverMemory {
                    pid,
                    rss: memory,
                    reason,
                },
                Verdict::Kill { pid, memory } => Event::MemoryCritical {
                    pid,
                    rss: memory,
                    limit: budget.map_or(0, |b| b.limit),
                },
            });
        }
        self.watch.sampled(
            &samples,
            budget.as_ref(),
            self.max_memory,
            now,
            HOUSEKEEPING,
        );
    }

    fn follow_cpus(&mut self, now: Instant, queue: &mut VecDeque<Event>) {
        let Some((spec, last, next)) = self.cpus.as_mut() else {
            return;
        };
        *next = now + HOUSEKEEPING;
        let Some(n) = parse::instances(spec, crate::cli::cpus()) else {
            return;
        };
        if n != *last {
            log::warn(&format!(
                "the CPU quota changed: -i {spec} is now {n} worker(s) (was {last}); scaling"
            ));
            *last = n;
            queue.push_back(Event::Scale(ScaleTo::To(n)));
        }
    }

    /// A worker's preload says its memory grew past its report mark.
    pub fn hurry(&mut self, now: Instant) {
        if self.watch.next.is_some() {
            self.watch.hurry(now);
        }
    }

    pub fn forget(&mut self, pid: i32) {
        self.heaps.remove(&pid);
    }
}

/// The start-up line about memory: the limit and what each worker gets.
pub fn budget_line(limit: &Limit, budget: &Budget, user_heap: bool) -> String {
    const MIB: u64 = 1 << 20;
    let heap = if user_heap {
        "their heap size is yours (--max-old-space-size given), kept unchanged".to_string()
    } else {
        format!(
            "each gets {} (a V8 heap limit of about {} MiB)",
            budget.flag(),
            budget.heap / MIB
        )
    };
    let mut line = format!(
        "memory budget: the container's limit is {} MiB ({}, {}); {} Node worker(s) get a share of {} MiB each; {heap}; a worker near its share is replaced (new first), one that would exhaust the container is killed before the kernel's OOM killer acts",
        limit.bytes / MIB,
        limit.source,
        limit.file,
        budget.workers,
        budget.share / MIB,
    );
    if budget.tight() {
        line.push_str(&format!(
            "; WARNING: {} MiB per worker is less than a Node worker needs besides its heap ({} MiB): use fewer workers or more memory",
            budget.share / MIB,
            (memory::NON_HEAP + memory::MIN_HEAP) / MIB
        ));
    }
    line
}
