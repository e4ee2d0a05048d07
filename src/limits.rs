//! Every limit pminit puts on what it reads, in one place.
//!
//! A PID 1 is judged by what happens when its inputs misbehave: a worker
//! that floods its IPC channel or the notify socket, a neighbour container
//! (same network namespace, so it sees our abstract sockets) that opens
//! control connections and never speaks, a file-descriptor shortage, a log
//! reader that stops reading. The rule for every input is the same:
//!
//! - **bytes**: a bounded buffer, and a bounded read per wake-up;
//! - **items**: a bounded number of messages handled per wake-up; poll is
//!   level-triggered, so whatever is left wakes us again on the next turn,
//!   after signals and reaping have had theirs (fairness between sources);
//! - **time held**: every client has a deadline, and deadlines feed poll's
//!   timeout (no polling timers);
//! - **who**: only our own workers (or processes in their process groups)
//!   may notify; only processes inside our PID namespace may hold a control
//!   connection (a peer outside it has pid 0 in `SO_PEERCRED` and
//!   `SCM_CREDENTIALS`);
//! - **shortages** (EMFILE, ENFILE, ENOBUFS, ENOMEM on accept) back off and
//!   are reported once, never spin;
//! - **log lines** never block, are rate-limited per kind and worker, and
//!   what was suppressed or dropped is counted and reported.
//!
//! docs/reliability.md lists the same numbers for operators;
//! keep the two in step.

use std::time::Duration;

// --- Node IPC channels (src/ipc.rs) -------------------------------------

/// Bytes read from one worker's channel per wake-up.
pub const IPC_READ_PER_WAKE: usize = 64 * 1024;
/// Messages (lines) handled from one worker's channel per wake-up; reading
/// stops at the end of the chunk that reached it.
pub const IPC_MESSAGES_PER_WAKE: usize = 256;
/// The size of one read(2) from a channel.
pub const IPC_CHUNK: usize = 4096;
/// The longest line kept; the rest of a longer one is skipped up to its
/// newline and the line is counted as dropped.
pub const IPC_MAX_LINE: usize = 64 * 1024;

/// Listen requests (the preload asking for a shared socket on a port its
/// app listens on) answered from one worker per wake-up; the rest of that
/// wake-up's requests are answered with an error (EAGAIN). The preload
/// asks one at a time, so only a misbehaving worker meets this.
pub const LISTEN_REQUESTS_PER_WAKE: usize = 8;

// --- Sockets bound on request (src/listen.rs) ---------------------------

/// TCP sockets pminit binds because workers asked (ports besides `PORT`
/// and `--listen`), in all, for its whole life; a request for one more
/// gets an error (EMFILE), as the app's own listen would.
pub const SHARED_PORTS_MAX: usize = 16;

// --- sd_notify socket (src/notify.rs) -----------------------------------

/// Datagrams handled per wake-up.
pub const NOTIFY_PER_WAKE: usize = 64;
/// The largest datagram read; the rest of a longer one is cut off.
pub const NOTIFY_MAX_DATAGRAM: usize = 4096;

// --- Control socket (src/control.rs, server side) -----------------------

/// Connections served at once.
pub const CONTROL_MAX_CLIENTS: usize = 32;
/// Connections accepted per wake-up.
pub const CONTROL_ACCEPTS_PER_WAKE: usize = 16;
/// A client that has not sent its whole request line this long after it
/// connected is closed; one that does not read its reply this long after it
/// was answered, too.
pub const CONTROL_IDLE: Duration = Duration::from_millis(1500);
/// The longest request line.
pub const CONTROL_MAX_REQUEST: usize = 4096;
/// Reply bytes queued for one client (a reload's progress lines) before it
/// is dropped as not reading.
pub const CONTROL_MAX_OUTPUT: usize = 64 * 1024;
/// accept(2) failed for lack of a resource: stop polling the listening
/// socket this long, doubling up to `ACCEPT_BACKOFF_MAX`.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

// --- Metrics endpoint (src/metrics/server.rs) -------------------------

/// HTTP connections served at once; a new one past this evicts the oldest
/// that has not sent its whole request (a scraper sends it at once).
pub const METRICS_MAX_CLIENTS: usize = 16;
/// Connections accepted per wake-up.
pub const METRICS_ACCEPTS_PER_WAKE: usize = 16;
/// The longest request head (request line and headers); a longer one gets
/// 400 and is closed.
pub const METRICS_MAX_REQUEST: usize = 8 * 1024;
/// A client has this long from its connection to send its request head,
/// and as long again to read the answer; then it is closed.
pub const METRICS_IDLE: Duration = Duration::from_secs(3);
/// The largest page served: past this the per-worker series are left out
/// (with a comment saying so) rather than grow a buffer without bound.
pub const METRICS_MAX_PAGE: usize = 512 * 1024;

// --- pminit's own log lines (src/log.rs) --------------------------------

/// Lines of one kind (per worker where there is one) written per window;
/// the rest are counted and reported as "suppressed N" when it ends.
pub const LOG_BURST: u32 = 5;
pub const LOG_WINDOW: Duration = Duration::from_secs(10);
/// Distinct rate-limit keys tracked; beyond that, one shared key per kind.
pub const LOG_MAX_KEYS: usize = 64;
/// The longest log line: a write of at most PIPE_BUF bytes to a pipe is
/// atomic, so a line is written whole or not at all.
pub const LOG_MAX_LINE: usize = 4096;
/// While lines are being dropped (stderr not writable), how often pminit
/// tries to write the "N log lines dropped" report when nothing else wakes it.
pub const LOG_RETRY: Duration = Duration::from_secs(1);
