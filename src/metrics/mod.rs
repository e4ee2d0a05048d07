//! `--metrics ADDR`: Prometheus text (format 0.0.4, which OpenMetrics
//! scrapers read too) at `http://ADDR/metrics`, served by pminit itself.
//!
//! What it owns: counters kept from the core's notes (every note passes
//! through the event loop, which hands it to `observe`), and the page,
//! rendered from those counters, the core's read-only views
//! (`Supervisor::workers`, `quick_deaths`, ...) and /proc (memory as PSS,
//! as --max-memory measures it; CPU time). It never feeds anything back
//! into the core: a scrape changes no decision.
//!
//! What it must never do: block the loop or hold unbounded memory for a
//! client. `server.rs` holds the limits (src/limits.rs has the numbers);
//! the page is rendered at most once per wake-up and shared by every
//! client that asked in it, and it is capped at `METRICS_MAX_PAGE`.

mod server;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::core::{MemoryReason, Note, Supervisor, WorkerState};
use crate::limits::METRICS_MAX_PAGE;
use crate::listen::Addr;
use crate::{parse, sys};

pub use server::Server;

/// Counts kept from the notes: what no view of the current state shows.
#[derive(Debug, Default)]
pub struct Counters {
    /// Restarts of a worker that exited on its own, per slot.
    restarts: BTreeMap<usize, u64>,
    /// The last exit of a worker of each slot: (code or 128+signal, signal).
    last_exit: BTreeMap<usize, (i32, i32)>,
    worker_starts: u64,
    reloads_started: u64,
    reloads_succeeded: u64,
    reloads_failed: u64,
    /// A rolling reload (HUP, `pminit reload`) is under way: its end counts
    /// as its outcome. A --max-memory replacement ends the same way but is
    /// counted as a replacement, not a reload.
    rolling: bool,
    /// Workers replaced for their memory, by reason (max_memory, heap,
    /// share, in MemoryReason's order).
    memory_replacements: [u64; 3],
    /// Workers SIGKILLed because they were about to exhaust the container.
    memory_kills: u64,
    /// Workers found hung (--hang-timeout) and replaced.
    hangs: u64,
    crash_loop: bool,
}

/// The memory reasons, in the order of `Counters::memory_replacements`.
const MEMORY_REASONS: [MemoryReason; 3] = [
    MemoryReason::MaxMemory,
    MemoryReason::Heap,
    MemoryReason::Share,
];

impl Counters {
    pub fn observe(&mut self, note: &Note) {
        match note {
            Note::WorkerSpawned { .. } => self.worker_starts += 1,
            Note::WorkerRestarting { slot, .. } => *self.restarts.entry(*slot).or_default() += 1,
            Note::WorkerExited {
                slot, code, signal, ..
            } => {
                let sig = signal.as_deref().and_then(parse::signal).unwrap_or(0);
                let code = match code {
                    Some(c) => *c,
                    None => 128 + sig,
                };
                self.last_exit.insert(*slot, (code, sig));
            }
            Note::ReloadStarted { .. } => {
                self.reloads_started += 1;
                self.rolling = true;
            }
            Note::ReloadFinished { .. } if self.rolling => {
                self.reloads_succeeded += 1;
                self.rolling = false;
            }
            Note::ReloadFailed { .. } if self.rolling => {
                self.reloads_failed += 1;
                self.rolling = false;
            }
            Note::MemoryExceeded { reason, .. } => {
                if let Some(i) = MEMORY_REASONS.iter().position(|r| r == reason) {
                    self.memory_replacements[i] += 1;
                }
            }
            Note::MemoryKilled { .. } => self.memory_kills += 1,
            Note::WorkerHung { .. } => self.hangs += 1,
            Note::CrashLoop { .. } => self.crash_loop = true,
            _ => {}
        }
    }
}

/// One worker process as the page shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub slot: usize,
    pub pid: i32,
    pub uptime: Duration,
    pub memory_bytes: Option<u64>,
    pub cpu_ms: Option<u64>,
}

/// Everything one page shows, gathered at once.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub uptime: Duration,
    pub phase: &'static str,
    pub ready: bool,
    pub instances: usize,
    pub generation: u64,
    pub reloading: bool,
    pub max_restarts: u32,
    pub quick_deaths: Vec<u32>,
    /// Worker processes (and empty slots) by state.
    pub states: Vec<WorkerState>,
    pub rows: Vec<Row>,
    pub dropped_connections: u64,
}

const STATES: [(WorkerState, &str); 5] = [
    (WorkerState::Starting, "starting"),
    (WorkerState::Ready, "ready"),
    (WorkerState::Draining, "draining"),
    (WorkerState::Backoff, "backoff"),
    (WorkerState::Stopped, "stopped"),
];

/// Writes one metric family: HELP, TYPE, then its samples.
struct Page {
    text: String,
}

impl Page {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, String)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// Room left for per-worker series.
    fn full(&self) -> bool {
        self.text.len() > METRICS_MAX_PAGE
    }
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds(d: Duration) -> String {
    crate::decimal::fixed(d.as_nanos(), 1_000_000_000, 3)
}

/// The page for `snap` and `c`.
pub fn render(snap: &Snapshot, c: &Counters) -> String {
    let mut p = Page {
        text: String::with_capacity(4096),
    };
    run_section(&mut p, snap);
    restarts_and_reloads(&mut p, snap, c);
    healing_section(&mut p, c);
    crash_loop_and_exits(&mut p, snap, c);
    worker_section(&mut p, snap);
    p.text
}

/// pminit itself: version, uptime, phase, readiness, workers by state.
fn run_section(p: &mut Page, snap: &Snapshot) {
    p.family("pminit_build_info", "gauge", "pminit's version (always 1).");
    p.sample(
        "pminit_build_info",
        &[("version", env!("CARGO_PKG_VERSION").to_string())],
        1,
    );
    p.one(
        "pminit_uptime_seconds",
        "gauge",
        "Seconds since pminit started.",
        seconds(snap.uptime),
    );
    p.family(
        "pminit_phase",
        "gauge",
        "1 for pminit's current phase: running, draining (prestop or --stop-delay) or stopping.",
    );
    for phase in ["running", "draining", "stopping"] {
        p.sample(
            "pminit_phase",
            &[("phase", phase.to_string())],
            u8::from(snap.phase == phase),
        );
    }
    p.one(
        "pminit_ready",
        "gauge",
        "1 when `pminit ready` succeeds (serving, not draining).",
        u8::from(snap.ready),
    );
    p.one(
        "pminit_instances",
        "gauge",
        "Workers asked for (-i, scale).",
        snap.instances,
    );
    p.one(
        "pminit_generation",
        "gauge",
        "The newest workers' generation; each reload makes the next one.",
        snap.generation,
    );
    p.family(
        "pminit_workers",
        "gauge",
        "Worker processes by state; backoff and stopped count slots with no process.",
    );
    for (state, name) in STATES {
        let n = snap.states.iter().filter(|s| **s == state).count();
        p.sample("pminit_workers", &[("state", name.to_string())], n);
    }
}

/// Starts, restarts per slot, rolling reloads and their outcome.
fn restarts_and_reloads(p: &mut Page, snap: &Snapshot, c: &Counters) {
    p.one(
        "pminit_worker_starts_total",
        "counter",
        "Worker processes started (first start, restarts, reloads, scaling).",
        c.worker_starts,
    );
    p.family(
        "pminit_restarts_total",
        "counter",
        "Restarts of a slot's worker after it exited on its own (a crash, kill -9).",
    );
    let slots = snap.instances.max(snap.quick_deaths.len());
    let mut restart_slots: Vec<usize> = (0..slots).collect();
    restart_slots.extend(c.restarts.keys().filter(|&&s| s >= slots));
    for slot in restart_slots {
        let n = c.restarts.get(&slot).copied().unwrap_or(0);
        p.sample("pminit_restarts_total", &[("slot", slot.to_string())], n);
    }
    p.one(
        "pminit_reloads_started_total",
        "counter",
        "Rolling reloads started (SIGHUP, pminit reload).",
        c.reloads_started,
    );
    p.family(
        "pminit_reloads_total",
        "counter",
        "Rolling reloads ended, by outcome: succeeded, or failed (the old workers kept serving).",
    );
    p.sample(
        "pminit_reloads_total",
        &[("outcome", "succeeded".to_string())],
        c.reloads_succeeded,
    );
    p.sample(
        "pminit_reloads_total",
        &[("outcome", "failed".to_string())],
        c.reloads_failed,
    );
    p.one(
        "pminit_reload_in_progress",
        "gauge",
        "1 while a rolling reload (or a --max-memory replacement) runs.",
        u8::from(snap.reloading),
    );
}

/// Healing: memory replacements by reason, memory kills, hangs.
fn healing_section(p: &mut Page, c: &Counters) {
    p.family(
        "pminit_memory_replacements_total",
        "counter",
        "Workers replaced (new first, old drained) for their memory: over --max-memory, V8 heap near its limit, or near their share of the container's memory limit.",
    );
    for (reason, n) in MEMORY_REASONS.iter().zip(c.memory_replacements) {
        p.sample(
            "pminit_memory_replacements_total",
            &[("reason", reason.name().to_string())],
            n,
        );
    }
    p.one(
        "pminit_memory_kills_total",
        "counter",
        "Workers SIGKILLed by pminit (their replacement first) because they were about to exhaust the container's memory, before the kernel's OOM killer.",
        c.memory_kills,
    );
    p.one(
        "pminit_worker_hangs_total",
        "counter",
        "Workers whose event loop left a liveness ping unanswered for --hang-timeout: replaced, then SIGKILLed.",
        c.hangs,
    );
}

/// The crash-loop state, the last exit of each slot, dropped connections.
fn crash_loop_and_exits(p: &mut Page, snap: &Snapshot, c: &Counters) {
    p.one(
        "pminit_max_restarts",
        "gauge",
        "--max-restarts: this many quick deaths in a row of one slot is a crash loop.",
        snap.max_restarts,
    );
    p.family(
        "pminit_slot_quick_deaths",
        "gauge",
        "Deaths in a row of a slot's worker sooner than --min-uptime (a crash loop at pminit_max_restarts).",
    );
    for (slot, n) in snap.quick_deaths.iter().enumerate() {
        p.sample("pminit_slot_quick_deaths", &[("slot", slot.to_string())], n);
    }
    p.one(
        "pminit_crash_loop",
        "gauge",
        "1 once a crash loop has ended the run (pminit is stopping).",
        u8::from(c.crash_loop),
    );
    p.family(
        "pminit_slot_last_exit_code",
        "gauge",
        "Exit code of the last worker of the slot that exited, 128+N for a death by signal N.",
    );
    for (slot, (code, _)) in &c.last_exit {
        p.sample(
            "pminit_slot_last_exit_code",
            &[("slot", slot.to_string())],
            code,
        );
    }
    p.family(
        "pminit_slot_last_exit_signal",
        "gauge",
        "Signal that ended the last worker of the slot that exited, 0 when it exited with a code.",
    );
    for (slot, (_, sig)) in &c.last_exit {
        p.sample(
            "pminit_slot_last_exit_signal",
            &[("slot", slot.to_string())],
            sig,
        );
    }
    p.one(
        "pminit_metrics_connections_dropped_total",
        "counter",
        "Metrics connections closed before they sent a request (idle, or evicted when full).",
        snap.dropped_connections,
    );
}

/// Per worker process; left out past the page limit.
fn worker_section(p: &mut Page, snap: &Snapshot) {
    let label = |r: &Row| vec![("slot", r.slot.to_string()), ("pid", r.pid.to_string())];
    p.family(
        "pminit_worker_uptime_seconds",
        "gauge",
        "Seconds since the worker process started.",
    );
    let mut cut = false;
    for r in &snap.rows {
        cut |= p.full();
        if !cut {
            p.sample("pminit_worker_uptime_seconds", &label(r), seconds(r.uptime));
        }
    }
    p.family(
        "pminit_worker_memory_bytes",
        "gauge",
        "Memory of the worker's process group: the sum of its processes' PSS (shared pages counted once), as --max-memory measures it.",
    );
    for r in &snap.rows {
        cut |= p.full();
        if let (false, Some(m)) = (cut, r.memory_bytes) {
            p.sample("pminit_worker_memory_bytes", &label(r), m);
        }
    }
    p.family(
        "pminit_worker_cpu_seconds_total",
        "counter",
        "User plus system CPU time of the worker's process group.",
    );
    for r in &snap.rows {
        cut |= p.full();
        if let (false, Some(ms)) = (cut, r.cpu_ms) {
            p.sample(
                "pminit_worker_cpu_seconds_total",
                &label(r),
                crate::decimal::fixed(ms.into(), 1000, 3),
            );
        }
    }
    if cut {
        let _ = writeln!(
            p.text,
            "# per-worker series cut at {METRICS_MAX_PAGE} bytes: too many workers"
        );
    }
}

/// The endpoint: its server, the counters, and when pminit started.
pub struct Metrics {
    pub server: Server,
    pub counters: Counters,
    started: Instant,
}

impl Metrics {
    /// Parses `text` (`PORT`, `HOST:PORT`, `[V6]:PORT`) and binds it.
    pub fn bind(text: &str) -> Result<Metrics, String> {
        let addr = parse_addr(text)?;
        Ok(Metrics {
            server: Server::bind(&addr, text)?,
            counters: Counters::default(),
            started: Instant::now(),
        })
    }

    /// Serves what poll reported; renders the page once if anyone asked.
    pub fn serve(&mut self, ready: &[bool], sup: &Supervisor) {
        if self.server.serve(ready) {
            let page = render(&self.snapshot(sup), &self.counters);
            self.server.answer(Rc::from(page.into_bytes()));
        }
    }

    fn snapshot(&self, sup: &Supervisor) -> Snapshot {
        let now = Instant::now();
        let views = sup.workers();
        let pids: Vec<i32> = views.iter().filter_map(|v| v.pid).collect();
        let memory: BTreeMap<i32, u64> = sys::group_memory(&pids).into_iter().collect();
        let usage: BTreeMap<i32, sys::Usage> = sys::group_usage(&pids).into_iter().collect();
        Snapshot {
            uptime: now.saturating_duration_since(self.started),
            phase: sup.phase_name(),
            ready: sup.readiness().is_ok(),
            instances: sup.instances(),
            generation: sup.generation(),
            reloading: sup.reloading(),
            max_restarts: sup.max_restarts(),
            quick_deaths: sup.quick_deaths(),
            states: views.iter().map(|v| v.state).collect(),
            rows: views
                .iter()
                .filter_map(|v| {
                    let pid = v.pid?;
                    Some(Row {
                        slot: v.slot,
                        pid,
                        uptime: v
                            .since
                            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s)),
                        memory_bytes: memory.get(&pid).copied(),
                        cpu_ms: usage.get(&pid).map(|u| u.cpu_ms),
                    })
                })
                .collect(),
            dropped_connections: self.server.dropped,
        }
    }
}

/// `--metrics`' value: `PORT`, `HOST:PORT` or `[V6]:PORT` (TCP only).
pub fn parse_addr(text: &str) -> Result<Addr, String> {
    parse::tcp_addr(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(slot: usize, code: Option<i32>, signal: Option<&str>) -> Note {
        Note::WorkerExited {
            slot,
            pid: 100,
            code,
            signal: signal.map(String::from),
            uptime_ms: 5,
        }
    }

    #[test]
    fn counters_follow_the_notes() {
        let mut c = Counters::default();
        for n in [
            Note::WorkerSpawned { slot: 0, pid: 1 },
            Note::WorkerSpawned { slot: 1, pid: 2 },
            exited(1, None, Some("SIGKILL")),
            Note::WorkerRestarting {
                slot: 1,
                delay_ms: 0,
                restarts: 1,
            },
            exited(0, Some(3), None),
            Note::ReloadStarted { generation: 1 },
            Note::ReloadFinished {
                generation: 1,
                replaced: 2,
                not_running: 0,
            },
            Note::ReloadStarted { generation: 2 },
            Note::ReloadFailed {
                generation: 2,
                slot: 0,
                reason: "x".into(),
            },
            // A --max-memory replacement ends like a reload; not one.
            Note::MemoryExceeded {
                slot: 0,
                pid: 1,
                rss_bytes: 9,
                reason: crate::core::MemoryReason::Share,
            },
            Note::ReloadFinished {
                generation: 3,
                replaced: 1,
                not_running: 0,
            },
        ] {
            c.observe(&n);
        }
        assert_eq!(c.worker_starts, 2);
        assert_eq!(c.restarts.get(&1), Some(&1));
        assert_eq!(c.last_exit.get(&1), Some(&(137, 9)));
        assert_eq!(c.last_exit.get(&0), Some(&(3, 0)));
        assert_eq!(
            (c.reloads_started, c.reloads_succeeded, c.reloads_failed),
            (2, 1, 1)
        );
        assert_eq!(c.memory_replacements, [0, 0, 1]);
        c.observe(&Note::WorkerHung {
            slot: 0,
            pid: 1,
            silent_ms: 30_000,
            hang_timeout_ms: 30_000,
        });
        c.observe(&Note::MemoryKilled {
            slot: 0,
            pid: 1,
            rss_bytes: 9,
            limit_bytes: 10,
        });
        assert_eq!((c.hangs, c.memory_kills), (1, 1));
        assert!(!c.crash_loop);
        c.observe(&Note::CrashLoop {
            slot: 0,
            quick_deaths: 16,
            min_uptime_ms: 1000,
        });
        assert!(c.crash_loop);
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            uptime: Duration::from_millis(1500),
            phase: "running",
            ready: true,
            instances: 2,
            generation: 1,
            reloading: false,
            max_restarts: 16,
            quick_deaths: vec![0, 1],
            states: vec![WorkerState::Ready, WorkerState::Backoff],
            rows: vec![Row {
                slot: 0,
                pid: 42,
                uptime: Duration::from_secs(2),
                memory_bytes: Some(1 << 20),
                cpu_ms: Some(1500),
            }],
            dropped_connections: 0,
        }
    }

    #[test]
    fn page_has_every_family_with_help_and_type() {
        let mut c = Counters::default();
        c.observe(&exited(1, None, Some("SIGKILL")));
        c.observe(&Note::WorkerRestarting {
            slot: 1,
            delay_ms: 100,
            restarts: 1,
        });
        let page = render(&snapshot(), &c);
        for line in [
            "pminit_uptime_seconds 1.500",
            "pminit_phase{phase=\"running\"} 1",
            "pminit_phase{phase=\"stopping\"} 0",
            "pminit_workers{state=\"ready\"} 1",
            "pminit_workers{state=\"backoff\"} 1",
            "pminit_workers{state=\"draining\"} 0",
            "pminit_restarts_total{slot=\"0\"} 0",
            "pminit_restarts_total{slot=\"1\"} 1",
            "pminit_reloads_total{outcome=\"succeeded\"} 0",
            "pminit_slot_quick_deaths{slot=\"1\"} 1",
            "pminit_slot_last_exit_code{slot=\"1\"} 137",
            "pminit_slot_last_exit_signal{slot=\"1\"} 9",
            "pminit_worker_memory_bytes{slot=\"0\",pid=\"42\"} 1048576",
            "pminit_worker_cpu_seconds_total{slot=\"0\",pid=\"42\"} 1.500",
            "pminit_worker_uptime_seconds{slot=\"0\",pid=\"42\"} 2.000",
        ] {
            assert!(page.lines().any(|l| l == line), "{line:?} in\n{page}");
        }
        // Every sample's family has HELP and TYPE before it.
        let mut typed = Vec::new();
        for l in page.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                typed.push(rest.split(' ').next().unwrap_or("").to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap_or("");
                assert_eq!(typed.last().map(String::as_str), Some(name), "{l}");
            }
        }
    }

    #[test]
    fn a_huge_page_is_cut_not_grown() {
        let mut snap = snapshot();
        snap.rows = (0..20_000)
            .map(|i| Row {
                slot: i,
                pid: i as i32,
                uptime: Duration::ZERO,
                memory_bytes: Some(1),
                cpu_ms: Some(1),
            })
            .collect();
        let page = render(&snap, &Counters::default());
        assert!(page.len() < METRICS_MAX_PAGE + 4096, "{}", page.len());
        assert!(page.contains("cut at"));
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("9464"), Ok(Addr::AnyPort(9464)));
        assert!(matches!(parse_addr("127.0.0.1:9464"), Ok(Addr::Tcp(_))));
        assert!(parse_addr("unix:/x").is_err());
        assert!(parse_addr("nope").is_err());
    }
}
