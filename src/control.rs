//! The control socket: how `pminit status`, `reload`, `scale`, `ready` and
//! `prestop` (a second pminit process) talk to the running one.
//!
//! Where it lives: a stream socket in the abstract namespace, named
//! `pminit/control/<pid namespace inode>/<pid>`. Nothing is on disk, so a
//! read-only root filesystem is fine. Abstract names belong to the network
//! namespace, which `--network host` (or a Kubernetes pod's other
//! containers) shares, so the name alone is no fence: every connection's
//! peer is checked with `SO_PEERCRED`. A peer outside pminit's PID namespace
//! shows as pid 0 there and is refused outright; requests that change state
//! (reload, scale, prestop) come only from root or pminit's own uid.
//!
//! The protocol: one request per connection, one JSON object on one line
//! (`{"verb":"status"}`); replies are JSON lines too. A reload streams
//! `progress` lines and ends with `done`. A malformed or oversized request
//! gets an `error` reply; it never disturbs pminit.
//!
//! What a client can hold (limits in src/limits.rs): a peer outside the PID
//! namespace is answered with an error and closed at accept, before
//! anything is read, so it holds nothing. An insider gets `CONTROL_IDLE` to
//! send its request line and, once answered, as long to read the reply;
//! those deadlines feed the event loop's poll timeout. When
//! `CONTROL_MAX_CLIENTS` are connected, a new client evicts the oldest
//! silent one (no request yet) of the peer process that holds the most
//! silent connections, so a `ready` or `status` probe always gets in and
//! one process cannot push out another's probe. accept(2) failing for lack of a resource (EMFILE, ENFILE,
//! ENOBUFS, ENOMEM) takes the listening socket out of the poll set for a
//! back-off (100 ms doubling to 1 s) and is logged rate-limited, never spun on.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    accept4, bind, getsockopt, listen, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    UnixAddr,
};

use crate::core::{Note, ScaleTo, WorkerState};
use crate::limits::{
    ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, CONTROL_ACCEPTS_PER_WAKE, CONTROL_IDLE,
    CONTROL_MAX_CLIENTS as MAX_CLIENTS, CONTROL_MAX_OUTPUT, CONTROL_MAX_REQUEST as MAX_REQUEST,
};
use crate::{log, parse};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum Request {
    Status,
    Reload,
    Scale { to: ScaleTo },
    Ready,
    Prestop,
}

impl Request {
    fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Reload => "reload",
            Request::Scale { .. } => "scale",
            Request::Ready => "ready",
            Request::Prestop => "prestop",
        }
    }

    /// Reload, scale and prestop change what runs; status and ready only look.
    pub fn changes_state(&self) -> bool {
        matches!(
            self,
            Request::Reload | Request::Scale { .. } | Request::Prestop
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Status(Status),
    Ready {
        ready: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    /// A step of a reload: the log line, as text and as the JSON event.
    Progress {
        message: String,
        event: serde_json::Value,
    },
    /// The end of a request that does something.
    Done {
        ok: bool,
        message: String,
    },
    /// The request was malformed, refused, or cannot be served.
    Error {
        message: String,
    },
}

/// `pminit status --json` prints this object: the field names are stable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub pid: i32,
    pub version: String,
    /// running, draining (prestop or --stop-delay) or stopping.
    pub phase: String,
    pub ready: bool,
    pub instances: usize,
    pub generation: u64,
    pub reloading: bool,
    pub workers: Vec<Row>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub slot: usize,
    pub pid: Option<i32>,
    pub generation: u64,
    pub state: WorkerState,
    pub restarts: u32,
    pub uptime_ms: Option<u64>,
    /// Resident memory of the worker's process group.
    pub rss_bytes: Option<u64>,
    /// CPU time of the worker's process group so far.
    pub cpu_ms: Option<u64>,
    /// CPU use since the previous `status` (or since the worker started).
    pub cpu_percent: Option<f64>,
}

/// Tells a peer outside our PID namespace why it is refused, and closes.
/// What it already sent is read (and ignored) first, so that the close is an
/// orderly end of stream after the reply rather than a reset.
fn refuse_outsider(fd: OwnedFd) {
    let reply = Reply::Error {
        message: "refused: the client is outside this container's PID namespace".into(),
    };
    if let Ok(mut line) = serde_json::to_vec(&reply) {
        line.push(b'\n');
        // SAFETY: sending from a buffer of the length we pass; never blocks.
        unsafe {
            libc::send(
                fd.as_raw_fd(),
                line.as_ptr().cast(),
                line.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
    }
    let mut buf = [0u8; MAX_REQUEST];
    // SAFETY: reading into a buffer of the length we pass; never blocks.
    unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    log::warn_limited(
        log::Kind::Control,
        0,
        "refused a control connection from outside pminit's PID namespace",
    );
}

/// Who is on the other end, from SO_PEERCRED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// As seen in pminit's PID namespace: 0 when the peer is outside it.
    pub pid: i32,
    pub uid: u32,
}

/// Whether `peer` may make `request` of a pminit running as `my_uid`.
pub fn authorize(peer: Peer, request: &Request, my_uid: u32) -> Result<(), String> {
    if peer.pid == 0 {
        return Err("refused: the client is outside this container's PID namespace".into());
    }
    if request.changes_state() && peer.uid != 0 && peer.uid != my_uid {
        return Err(format!(
            "refused: only root or uid {my_uid} (pminit's own) may {}; you are uid {}",
            request.name(),
            peer.uid
        ));
    }
    Ok(())
}

/// Decodes one request line (without its newline).
pub fn decode(line: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(line).map_err(|e| {
        format!(
            "malformed request ({e}): expected one JSON object on one line, such as {{\"verb\":\"status\"}}"
        )
    })
}

/// The abstract name of the control socket of pminit `pid` in the PID
/// namespace `ns`.
pub fn socket_name(ns: u64, pid: u32) -> String {
    format!("pminit/control/{ns}/{pid}")
}

/// The inode of this process's PID namespace: what tells containers apart.
pub fn pid_namespace() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/self/ns/pid")?.ino())
}

/// What the shell does with a request that passed the checks.
pub enum Outcome {
    /// Send this and close.
    Reply(Reply),
    /// A reload: stream its progress; done when this generation finishes.
    Wait(u64),
}

/// One connected client.
struct Client {
    id: u64,
    fd: OwnedFd,
    peer: Peer,
    input: Vec<u8>,
    /// Replies not yet written (the socket buffer was full).
    output: Vec<u8>,
    /// Waiting for this reload generation to finish.
    waiting: Option<u64>,
    /// A request came: read no more; close once answered and written.
    answered: bool,
    /// The request was handed to the shell and not yet answered.
    pending: bool,
    /// Unusable (hung up, write error, idle too long): drop it.
    dead: bool,
    /// When it connected, or when its answer was queued: the idle deadline
    /// counts from here.
    since: Instant,
}

impl Client {
    fn new(id: u64, fd: OwnedFd, peer: Peer, now: Instant) -> Client {
        Client {
            id,
            fd,
            peer,
            input: Vec::new(),
            output: Vec::new(),
            waiting: None,
            answered: false,
            pending: false,
            dead: false,
            since: now,
        }
    }

    fn queue(&mut self, reply: &Reply) {
        // Replies are plain data: serialising cannot fail; skip it if it does.
        if let Ok(mut line) = serde_json::to_vec(reply) {
            line.push(b'\n');
            self.output.extend_from_slice(&line);
        }
        self.flush();
        if self.output.len() > CONTROL_MAX_OUTPUT {
            // A reload's progress piles up for a client that does not read.
            self.dead = true;
        }
    }

    fn finish(&mut self, reply: &Reply) {
        self.waiting = None;
        self.answered = true;
        self.since = Instant::now();
        self.queue(reply);
    }

    /// When this client is closed unless it does its part: send its request
    /// (not yet sent), or read its answer (written only in part). None while
    /// pminit works on its request or it waits on a reload.
    fn deadline(&self) -> Option<Instant> {
        if self.pending || self.waiting.is_some() || self.dead {
            return None;
        }
        if !self.answered || !self.output.is_empty() {
            return Some(self.since + CONTROL_IDLE);
        }
        None
    }

    /// Has not sent a request yet: the first to go when all places are taken.
    fn idle(&self) -> bool {
        !self.answered && !self.pending && self.waiting.is_none()
    }

    /// Writes what it can without blocking.
    fn flush(&mut self) {
        while !self.output.is_empty() {
            // SAFETY: sending from a buffer of the length we pass.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    self.output.as_ptr().cast(),
                    self.output.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                self.output.drain(..n as usize);
                continue;
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return,
                _ => {
                    self.dead = true;
                    return;
                }
            }
        }
    }

    /// Reads what is there. Some(request line) once a whole line arrived
    /// (or the client stopped sending); Err for an oversized one.
    fn read(&mut self) -> Option<Result<Vec<u8>, String>> {
        let mut buf = [0u8; 1024];
        loop {
            // SAFETY: reading into a buffer of the length we pass.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                self.input.extend_from_slice(&buf[..n as usize]);
                if let Some(end) = self.input.iter().position(|&b| b == b'\n') {
                    self.input.truncate(end);
                    return Some(Ok(std::mem::take(&mut self.input)));
                }
                if self.input.len() > MAX_REQUEST {
                    return Some(Err(format!(
                        "request over {MAX_REQUEST} bytes: expected one JSON object on one line"
                    )));
                }
                continue;
            }
            if n == 0 {
                if self.waiting.is_some() || self.answered {
                    // Gone while we work on it, or after the answer.
                    self.dead = true;
                    return None;
                }
                // Half-closed without a newline: take what came as the line.
                if self.input.is_empty() {
                    self.dead = true;
                    return None;
                }
                return Some(Ok(std::mem::take(&mut self.input)));
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return None,
                _ => {
                    self.dead = true;
                    return None;
                }
            }
        }
    }

    fn closable(&self) -> bool {
        self.dead || (self.answered && !self.pending && self.output.is_empty())
    }
}

/// The listening socket and its clients.
pub struct Server {
    listener: OwnedFd,
    uid: u32,
    clients: Vec<Client>,
    next_id: u64,
    /// accept(2) ran short of a resource: the listener is not polled until
    /// then.
    paused_until: Option<Instant>,
    /// The next pause, doubled each time in a row, reset by an accept.
    backoff: Duration,
}

impl Server {
    pub fn bind() -> io::Result<Server> {
        let ns = pid_namespace()?;
        let name = socket_name(ns, std::process::id());
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        bind(fd.as_raw_fd(), &UnixAddr::new_abstract(name.as_bytes())?)?;
        listen(&fd, Backlog::new(16).unwrap_or(Backlog::MAXCONN))?;
        Ok(Server::on(fd))
    }

    fn on(listener: OwnedFd) -> Server {
        Server {
            listener,
            // SAFETY: geteuid has no preconditions and cannot fail.
            uid: unsafe { libc::geteuid() },
            clients: Vec::new(),
            next_id: 0,
            paused_until: None,
            backoff: ACCEPT_BACKOFF_MIN,
        }
    }

    /// The fds to poll: the listener first (None while accepting is paused),
    /// then each client's, with whether it waits to write.
    pub fn poll_set(&self) -> Vec<(Option<BorrowedFd<'_>>, bool)> {
        let listener = self.paused_until.is_none().then(|| self.listener.as_fd());
        std::iter::once((listener, false))
            .chain(
                self.clients
                    .iter()
                    .map(|c| (Some(c.fd.as_fd()), !c.output.is_empty())),
            )
            .collect()
    }

    /// The nearest client deadline, or the end of an accept pause.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients
            .iter()
            .filter_map(Client::deadline)
            .chain(self.paused_until)
            .min()
    }

    /// Reads what `poll` reported (`ready[0]`: the listener, then the
    /// clients in `poll_set` order). Malformed, oversized and refused
    /// requests are answered here; the rest are returned, each with its
    /// client's id for `answer`.
    pub fn serve(&mut self, ready: &[bool]) -> Vec<(u64, Request)> {
        self.serve_at(ready, Instant::now())
    }

    fn serve_at(&mut self, ready: &[bool], now: Instant) -> Vec<(u64, Request)> {
        let mut requests = Vec::new();
        for (i, client) in self.clients.iter_mut().enumerate() {
            if !ready.get(1 + i).copied().unwrap_or(false) {
                continue;
            }
            client.flush();
            if client.answered || client.waiting.is_some() {
                // Only a hang-up matters now; read() notices it.
                let _ = client.read();
                client.input.clear();
                continue;
            }
            match client.read() {
                None => {}
                Some(Err(message)) => client.finish(&Reply::Error { message }),
                Some(Ok(line)) => {
                    let checked = decode(&line).and_then(|request| {
                        authorize(client.peer, &request, self.uid).map(|()| request)
                    });
                    match checked {
                        Err(message) => client.finish(&Reply::Error { message }),
                        Ok(request) => {
                            // Answered (or waiting) from now: ignore more input.
                            client.answered = true;
                            client.pending = true;
                            requests.push((client.id, request));
                        }
                    }
                }
            }
        }
        for c in &mut self.clients {
            if c.deadline().is_some_and(|d| d <= now) {
                c.dead = true;
                log::warn_limited(
                    log::Kind::Control,
                    c.peer.pid,
                    &format!(
                        "closed the control connection of pid {}: nothing for {} ms",
                        c.peer.pid,
                        CONTROL_IDLE.as_millis()
                    ),
                );
            }
        }
        self.clients.retain(|c| !c.closable());
        if self.paused_until.is_some_and(|t| t <= now) {
            // Try again; the listener is back in the poll set, and a
            // connection that waits in its queue makes it readable.
            self.paused_until = None;
            self.accept(now);
        } else if ready.first().copied().unwrap_or(false) {
            self.accept(now);
        }
        requests
    }

    /// Answers the request of client `id`.
    pub fn answer(&mut self, id: u64, outcome: Outcome) {
        let Some(c) = self.clients.iter_mut().find(|c| c.id == id) else {
            return;
        };
        c.pending = false;
        match outcome {
            Outcome::Reply(reply) => c.finish(&reply),
            Outcome::Wait(generation) => {
                c.answered = false;
                c.waiting = Some(generation);
            }
        }
        self.clients.retain(|c| !c.closable());
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..CONTROL_ACCEPTS_PER_WAKE {
            let fd = match accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                // SAFETY: accept4 returned a new fd that nothing else owns.
                Ok(fd) => unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) },
                Err(nix::errno::Errno::EINTR) => continue,
                Err(
                    e @ (nix::errno::Errno::EMFILE
                    | nix::errno::Errno::ENFILE
                    | nix::errno::Errno::ENOBUFS
                    | nix::errno::Errno::ENOMEM),
                ) => {
                    // The connection stays queued; try again after a pause
                    // instead of waking for it at once, over and over.
                    self.paused_until = Some(now + self.backoff);
                    log::warn_limited(
                        log::Kind::Accept,
                        0,
                        &format!(
                            "cannot accept control connections: {}; retrying in {} ms",
                            e.desc(),
                            self.backoff.as_millis()
                        ),
                    );
                    self.backoff = (self.backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    return;
                }
                // EAGAIN (no more), or the client already gone.
                Err(_) => return,
            };
            self.backoff = ACCEPT_BACKOFF_MIN;
            let peer = match getsockopt(&fd, sockopt::PeerCredentials) {
                Ok(c) => Peer {
                    pid: c.pid(),
                    uid: c.uid(),
                },
                Err(_) => continue,
            };
            if peer.pid == 0 {
                // Outside our PID namespace (another container of the pod):
                // told why and closed at once, holding nothing.
                refuse_outsider(fd);
                continue;
            }
            self.next_id += 1;
            let mut client = Client::new(self.next_id, fd, peer, now);
            if self.clients.len() >= MAX_CLIENTS {
                // Keep room for probes: the oldest silent client of the peer
                // that holds the most silent connections makes way, so one
                // process cannot push out another's probe.
                if let Some(i) = self.evictable() {
                    let old = self.clients.remove(i);
                    log::warn_limited(
                        log::Kind::Control,
                        old.peer.pid,
                        &format!(
                            "closed the silent control connection of pid {}: {MAX_CLIENTS} connections open",
                            old.peer.pid
                        ),
                    );
                } else {
                    // Told once, without waiting for the buffer; then dropped.
                    client.finish(&Reply::Error {
                        message: format!("busy: {MAX_CLIENTS} control requests in progress"),
                    });
                    continue;
                }
            }
            self.clients.push(client);
        }
    }

    /// The client to close when every place is taken: the oldest one that
    /// has not sent a request, among those of the peer with the most such.
    fn evictable(&self) -> Option<usize> {
        let silent = |pid: i32| {
            self.clients
                .iter()
                .filter(|c| c.idle() && c.peer.pid == pid)
                .count()
        };
        let (_, pid) = self
            .clients
            .iter()
            .filter(|c| c.idle())
            .map(|c| (silent(c.peer.pid), c.peer.pid))
            .max_by_key(|&(n, _)| n)?;
        self.clients
            .iter()
            .position(|c| c.idle() && c.peer.pid == pid)
    }

    /// Tells clients waiting on a reload what happened; finishes them when
    /// their generation is through, or when pminit stops.
    pub fn progress(&mut self, note: &Note, text: String) {
        let (done, ok) = match note {
            Note::ReloadFinished { generation, .. } => (Some(*generation), true),
            Note::ReloadFailed { generation, .. } => (Some(*generation), false),
            _ => (None, false),
        };
        let stopping = matches!(note, Note::StopRequested { .. } | Note::Stopping { .. });
        let event = serde_json::to_value(note).unwrap_or(serde_json::Value::Null);
        for c in self.clients.iter_mut().filter(|c| c.waiting.is_some()) {
            let target = c.waiting.unwrap_or(0);
            if stopping {
                c.finish(&Reply::Done {
                    ok: false,
                    message: "pminit is stopping: the reload will not finish".into(),
                });
                continue;
            }
            c.queue(&Reply::Progress {
                message: text.clone(),
                event: event.clone(),
            });
            if let Some(g) = done.filter(|&g| g >= target) {
                let message = if ok {
                    format!("reload to generation {g} finished")
                } else {
                    format!(
                        "reload to generation {g} failed: the workers not replaced keep serving"
                    )
                };
                c.finish(&Reply::Done { ok, message });
            }
        }
        self.clients.retain(|c| !c.closable());
    }

    /// Whether some client waits on a reload (then every note goes to it).
    pub fn has_waiters(&self) -> bool {
        self.clients.iter().any(|c| c.waiting.is_some())
    }
}

// ---------------------------------------------------------------------------
// The client side: `pminit <verb>`.

pub const VERBS: &[&str] = &["status", "reload", "scale", "ready", "prestop"];

const VERB_USAGE: &str = "usage: pminit status [--json] | reload | scale N|+K|-K | ready | prestop [--delay DURATION]  (each also takes --pid PID)";

/// The exit code of a verb that failed (not ready, reload rolled back,
/// refused, no pminit found).
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// A parsed verb command line.
#[derive(Debug, PartialEq)]
pub struct Invocation {
    pub request: Request,
    pub json: bool,
    pub delay: Duration,
    pub pid: Option<u32>,
}

/// The default of `prestop --delay`: long enough for the endpoint removal to
/// reach every node's proxy in a typical cluster.
pub const DEFAULT_PRESTOP_DELAY: Duration = Duration::from_secs(5);

/// Parses `args` after the verb. Err is the one-line usage error.
pub fn parse_verb(verb: &str, args: &[String]) -> Result<Option<Invocation>, String> {
    let mut json = false;
    let mut delay = DEFAULT_PRESTOP_DELAY;
    let mut pid = None;
    let mut scale: Option<ScaleTo> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{verb} {flag}: missing value"))
        };
        match a.as_str() {
            "--help" | "-h" => return Ok(None),
            "--json" if verb == "status" => json = true,
            "--delay" if verb == "prestop" => {
                let v = value("--delay")?;
                delay = parse::duration(&v).ok_or_else(|| {
                    format!("prestop --delay: invalid value {v:?}: expected a duration such as 5s, 1500ms, 1m or 1500 (ms)")
                })?;
            }
            "--pid" => {
                let v = value("--pid")?;
                pid = Some(v.parse::<u32>().ok().filter(|&p| p > 0).ok_or_else(|| {
                    format!(
                        "{verb} --pid: invalid value {v:?}: expected the pid of a running pminit"
                    )
                })?);
            }
            v if verb == "scale" && scale.is_none() => {
                scale = Some(parse_scale(v).ok_or_else(|| {
                    format!("scale: invalid value {v:?}: expected N (1-1024), +K or -K")
                })?);
            }
            other => {
                return Err(format!(
                    "{verb}: unexpected argument {other:?}; {VERB_USAGE}"
                ))
            }
        }
    }
    let request = match verb {
        "status" => Request::Status,
        "reload" => Request::Reload,
        "ready" => Request::Ready,
        "prestop" => Request::Prestop,
        "scale" => Request::Scale {
            to: scale.ok_or_else(|| {
                "scale: missing N|+K|-K: the number of workers, or how many to add or remove"
                    .to_string()
            })?,
        },
        _ => return Err(VERB_USAGE.to_string()),
    };
    Ok(Some(Invocation {
        request,
        json,
        delay,
        pid,
    }))
}

fn parse_scale(v: &str) -> Option<ScaleTo> {
    let count = |s: &str| {
        s.parse::<usize>()
            .ok()
            .filter(|n| (1..=crate::core::MAX_INSTANCES).contains(n))
    };
    if let Some(k) = v.strip_prefix('+') {
        count(k).map(ScaleTo::Add)
    } else if let Some(k) = v.strip_prefix('-') {
        count(k).map(ScaleTo::Remove)
    } else {
        count(v).map(ScaleTo::To)
    }
}

/// The pids of the pminit processes with a control socket in this PID
/// namespace, from /proc/net/unix (which lists abstract names).
fn find_servers(ns: u64) -> Vec<u32> {
    let prefix = format!("@pminit/control/{ns}/");
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = table
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(7)?
                .strip_prefix(&prefix)?
                .parse()
                .ok()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn connect(pid: Option<u32>) -> Result<UnixStream, String> {
    let ns = pid_namespace().map_err(|e| format!("cannot read /proc/self/ns/pid: {e}"))?;
    let pid = match pid {
        Some(p) => p,
        None => match find_servers(ns).as_slice() {
            [one] => *one,
            // /proc/net/unix unreadable or empty: the usual PID 1.
            [] => 1,
            many => {
                let list: Vec<String> = many.iter().map(u32::to_string).collect();
                return Err(format!(
                    "several pminit processes here (pids {}): choose one with --pid",
                    list.join(", ")
                ));
            }
        },
    };
    let name = socket_name(ns, pid);
    let addr = SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| format!("bad socket name: {e}"))?;
    UnixStream::connect_addr(&addr).map_err(|e| {
        format!("cannot reach pminit (pid {pid}) in this container: {e}; is this container's PID 1 pminit?")
    })
}

/// Sends the request, then hands each reply line to `each` until it
/// returns Some(exit code).
fn exchange(inv: &Invocation, each: &mut dyn FnMut(Reply) -> Option<u8>) -> Result<u8, String> {
    let mut stream = connect(inv.pid)?;
    let mut line = serde_json::to_vec(&inv.request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut pending = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Err("pminit closed the connection without an answer".into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read the answer: {e}")),
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let reply: Reply = serde_json::from_slice(&line[..end])
                .map_err(|e| format!("cannot understand pminit's answer: {e}"))?;
            if let Some(code) = each(reply) {
                return Ok(code);
            }
        }
    }
}

/// Runs `pminit <verb> ARGS...`; returns the exit code.
pub fn client_main(verb: &str, args: &[String]) -> u8 {
    let inv = match parse_verb(verb, args) {
        Ok(Some(inv)) => inv,
        Ok(None) => {
            println!("{VERB_USAGE}");
            return 0;
        }
        Err(message) => {
            eprintln!("pminit: {message}");
            return EXIT_USAGE;
        }
    };
    let result = exchange(&inv, &mut |reply| answer(&inv, reply));
    match result {
        Ok(0) if inv.request == Request::Prestop => {
            // The point of the hook: keep serving while the endpoint removal
            // reaches every proxy, then let the orchestrator send TERM.
            std::thread::sleep(inv.delay);
            0
        }
        Ok(code) => code,
        Err(message) => {
            eprintln!("pminit {verb}: {message}");
            EXIT_FAILED
        }
    }
}

/// Prints one reply; Some(exit code) when it is the last.
fn answer(inv: &Invocation, reply: Reply) -> Option<u8> {
    match reply {
        Reply::Status(s) => {
            if inv.json {
                println!("{}", serde_json::to_string(&s).unwrap_or_default());
            } else {
                print!("{}", status_table(&s));
            }
            Some(0)
        }
        Reply::Ready { ready: true, .. } => {
            println!("ready");
            Some(0)
        }
        Reply::Ready { ready: false, why } => {
            println!("not ready: {}", why.unwrap_or_default());
            Some(EXIT_FAILED)
        }
        Reply::Progress { message, .. } => {
            println!("{message}");
            None
        }
        Reply::Done { ok, message } => {
            if ok {
                // A reload's last progress line already said it finished.
                if inv.request != Request::Reload {
                    println!("{message}");
                }
                Some(0)
            } else {
                eprintln!("pminit {}: {message}", inv.request.name());
                Some(EXIT_FAILED)
            }
        }
        Reply::Error { message } => {
            eprintln!("pminit {}: {message}", inv.request.name());
            Some(EXIT_FAILED)
        }
    }
}

/// `pm2 ls` for pminit: one row per worker.
pub fn status_table(s: &Status) -> String {
    let mut out = format!(
        "pminit pid {}, {}, {} worker(s), generation {}{}, {}\n",
        s.pid,
        s.phase,
        s.instances,
        s.generation,
        if s.reloading { " (reloading)" } else { "" },
        if s.ready { "ready" } else { "not ready" }
    );
    out.push_str(&format!(
        "{:<5} {:<8} {:<4} {:<9} {:<9} {:<9} {:<10} {:>6}\n",
        "slot", "pid", "gen", "state", "restarts", "uptime", "memory", "cpu"
    ));
    for r in &s.workers {
        let dash = || "-".to_string();
        let state = serde_json::to_value(r.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<5} {:<8} {:<4} {:<9} {:<9} {:<9} {:<10} {:>6}\n",
            r.slot,
            r.pid.map_or_else(dash, |p| p.to_string()),
            r.generation,
            state,
            r.restarts,
            r.uptime_ms.map_or_else(dash, human_duration),
            r.rss_bytes.map_or_else(dash, human_size),
            r.cpu_percent.map_or_else(dash, |c| format!("{c:.1}%")),
        ));
    }
    out
}

fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn human_size(bytes: u64) -> String {
    format!("{:.1}MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::io::BufRead;

    #[test]
    fn requests_on_the_wire() {
        let table: &[(&str, Result<Request, ()>)] = &[
            (r#"{"verb":"status"}"#, Ok(Request::Status)),
            (r#"{"verb":"reload"}"#, Ok(Request::Reload)),
            (r#"{"verb":"ready"}"#, Ok(Request::Ready)),
            (r#"{"verb":"prestop"}"#, Ok(Request::Prestop)),
            (
                r#"{"verb":"scale","to":{"to":3}}"#,
                Ok(Request::Scale { to: ScaleTo::To(3) }),
            ),
            (
                r#"{"verb":"scale","to":{"add":2}}"#,
                Ok(Request::Scale {
                    to: ScaleTo::Add(2),
                }),
            ),
            (r#"{"verb":"scale"}"#, Err(())),
            // Unknown fields are ignored: a newer client may send more.
            (r#"{"verb":"status","extra":1}"#, Ok(Request::Status)),
            (r#"{"verb":"reboot"}"#, Err(())),
            (r#""status""#, Err(())),
            ("status", Err(())),
            ("", Err(())),
            ("\u{0}\u{1}", Err(())),
        ];
        for (line, want) in table {
            assert_eq!(decode(line.as_bytes()).map_err(|_| ()), *want, "{line}");
        }
        // What the client sends is what the server reads.
        for r in [
            Request::Status,
            Request::Scale {
                to: ScaleTo::Remove(1),
            },
        ] {
            let line = serde_json::to_vec(&r).expect("plain enum");
            assert_eq!(decode(&line), Ok(r));
        }
    }

    #[test]
    fn who_may_do_what() {
        let root = Peer { pid: 7, uid: 0 };
        let me = Peer { pid: 7, uid: 1000 };
        let other = Peer { pid: 7, uid: 65534 };
        let outside = Peer { pid: 0, uid: 0 };
        assert!(authorize(root, &Request::Reload, 1000).is_ok());
        assert!(authorize(me, &Request::Prestop, 1000).is_ok());
        assert!(authorize(other, &Request::Status, 1000).is_ok());
        assert!(authorize(other, &Request::Ready, 0).is_ok());
        let e = authorize(other, &Request::Reload, 0).expect_err("not root");
        assert!(
            e.contains("only root or uid 0") && e.contains("65534"),
            "{e}"
        );
        assert!(authorize(
            other,
            &Request::Scale {
                to: ScaleTo::Add(1)
            },
            0
        )
        .is_err());
        let e = authorize(outside, &Request::Status, 0).expect_err("outside");
        assert!(e.contains("outside this container's PID namespace"), "{e}");
    }

    #[test]
    fn verb_command_lines() {
        let args = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let ok = |verb: &str, a: &[&str]| {
            parse_verb(verb, &args(a))
                .expect("valid")
                .expect("not help")
        };
        assert!(ok("status", &["--json"]).json);
        assert_eq!(ok("status", &["--pid", "42"]).pid, Some(42));
        assert_eq!(ok("prestop", &[]).delay, DEFAULT_PRESTOP_DELAY);
        assert_eq!(
            ok("prestop", &["--delay", "1500ms"]).delay,
            Duration::from_millis(1500)
        );
        for (v, want) in [
            ("3", ScaleTo::To(3)),
            ("+2", ScaleTo::Add(2)),
            ("-1", ScaleTo::Remove(1)),
        ] {
            assert_eq!(ok("scale", &[v]).request, Request::Scale { to: want });
        }
        assert_eq!(parse_verb("ready", &args(&["--help"])), Ok(None));
        let rejected: &[(&str, &[&str], &str)] = &[
            ("scale", &[], "missing N|+K|-K"),
            ("scale", &["0"], "\"0\""),
            ("scale", &["+x"], "expected N (1-1024), +K or -K"),
            ("scale", &["2000"], "\"2000\""),
            ("prestop", &["--delay", "soon"], "prestop --delay"),
            ("prestop", &["--delay"], "missing value"),
            ("status", &["--pid", "0"], "status --pid"),
            ("ready", &["--json"], "unexpected argument \"--json\""),
            ("reload", &["now"], "unexpected argument \"now\""),
        ];
        for (verb, a, needle) in rejected {
            let e = parse_verb(verb, &args(a)).expect_err("rejected");
            assert!(e.contains(needle), "{verb} {a:?}: {e}");
        }
    }

    /// A server with one client on a socketpair; the client sends `send`.
    fn served(send: &[u8]) -> (Server, Vec<(u64, Request)>, UnixStream) {
        let (listener, _unused) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        let mut server = Server::on(listener);
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .expect("socketpair");
        let peer = Peer {
            pid: 1,
            uid: server.uid,
        };
        server
            .clients
            .push(Client::new(9, ours, peer, Instant::now()));
        let mut client = UnixStream::from(theirs);
        client.set_nonblocking(false).expect("blocking");
        client.write_all(send).expect("write");
        let requests = server.serve(&[false, true]);
        (server, requests, client)
    }

    fn replies(client: UnixStream) -> Vec<Reply> {
        std::io::BufReader::new(client)
            .lines()
            .map(|l| serde_json::from_str(&l.expect("line")).expect("a reply"))
            .collect()
    }

    #[test]
    fn a_request_over_a_socketpair_gets_its_reply_and_the_connection_closes() {
        let (mut server, requests, client) = served(b"{\"verb\":\"ready\"}\n");
        assert_eq!(requests, vec![(9, Request::Ready)]);
        assert_eq!(server.clients.len(), 1, "open until answered");
        let ready = Reply::Ready {
            ready: true,
            why: None,
        };
        server.answer(9, Outcome::Reply(ready.clone()));
        assert!(server.clients.is_empty(), "closed once answered");
        assert_eq!(replies(client), vec![ready]);
    }

    #[test]
    fn malformed_and_oversized_requests_get_an_error_and_reach_nothing() {
        let big = vec![b'x'; MAX_REQUEST + 100];
        for bad in [
            b"not json\n".as_slice(),
            b"{\"verb\":\"reboot\"}\n",
            b"\xff\xfe\n",
            &big,
        ] {
            let (server, requests, client) = served(bad);
            assert!(requests.is_empty());
            assert!(server.clients.is_empty());
            let got = replies(client);
            assert_eq!(got.len(), 1);
            let Reply::Error { message } = &got[0] else {
                panic!("{got:?}");
            };
            assert!(
                message.contains("malformed request") || message.contains("over 4096 bytes"),
                "{message}"
            );
        }
    }

    #[test]
    fn silent_clients_make_way_for_a_probe_and_are_closed_at_their_deadline() {
        let name = format!("pminit-test/{}/silent", std::process::id());
        let listener = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .expect("socket");
        bind(
            listener.as_raw_fd(),
            &UnixAddr::new_abstract(name.as_bytes()).expect("name"),
        )
        .expect("bind");
        listen(&listener, Backlog::new(64).expect("backlog")).expect("listen");
        let mut server = Server::on(listener);
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
        let t0 = Instant::now();
        let all = |n: usize| vec![true; n + 1];
        let mut silent: Vec<UnixStream> = (0..MAX_CLIENTS)
            .map(|_| UnixStream::connect_addr(&addr).expect("connect"))
            .collect();
        for _ in 0..MAX_CLIENTS {
            server.serve_at(&all(server.clients.len()), t0);
        }
        assert_eq!(server.clients.len(), MAX_CLIENTS);
        assert_eq!(server.next_deadline(), Some(t0 + CONTROL_IDLE));
        // Every place taken by a silent client: a probe still gets in.
        let mut probe = UnixStream::connect_addr(&addr).expect("connect");
        probe.write_all(b"{\"verb\":\"ready\"}\n").expect("write");
        server.serve_at(&all(server.clients.len()), t0);
        let requests = server.serve_at(&all(server.clients.len()), t0);
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].1, Request::Ready);
        assert_eq!(server.clients.len(), MAX_CLIENTS);
        // The oldest silent one was closed to make room.
        silent[0]
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert_eq!(silent[0].read(&mut [0u8; 16]).expect("eof"), 0);
        // At the deadline the silent ones go; the one being answered stays.
        server.serve_at(&[false], t0 + CONTROL_IDLE);
        assert_eq!(server.clients.len(), 1);
        assert_eq!(server.next_deadline(), None);
        for s in &mut silent[1..] {
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            assert_eq!(s.read(&mut [0u8; 16]).expect("eof"), 0);
        }
        server.answer(
            requests[0].0,
            Outcome::Reply(Reply::Ready {
                ready: true,
                why: None,
            }),
        );
        assert!(server.clients.is_empty());
        let mut reply = String::new();
        probe.read_to_string(&mut reply).expect("reply");
        assert!(reply.contains("\"ready\":true"), "{reply}");
    }

    #[test]
    fn a_reload_streams_progress_and_ends_with_its_generation() {
        let (mut server, requests, client) = served(b"{\"verb\":\"reload\"}\n");
        assert_eq!(requests, vec![(9, Request::Reload)]);
        server.answer(9, Outcome::Wait(2));
        assert!(server.has_waiters());
        // An older reload finishing is progress, not the end.
        server.progress(
            &Note::ReloadFinished {
                generation: 1,
                replaced: 1,
                not_running: 0,
            },
            "one".into(),
        );
        assert!(server.has_waiters());
        server.progress(
            &Note::ReloadFailed {
                generation: 2,
                slot: 0,
                reason: "r".into(),
            },
            "two".into(),
        );
        assert!(!server.has_waiters());
        assert!(server.clients.is_empty());
        let got = replies(client);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(matches!(&got[0], Reply::Progress { message, .. } if message == "one"));
        assert!(matches!(&got[2], Reply::Done { ok: false, .. }));
    }

    #[test]
    fn a_stop_ends_a_waiting_reload_as_failed() {
        let (mut server, _, client) = served(b"{\"verb\":\"reload\"}\n");
        server.answer(9, Outcome::Wait(1));
        server.progress(
            &Note::StopRequested {
                signal: "SIGTERM".into(),
                delay_ms: 0,
            },
            "stop".into(),
        );
        let got = replies(client);
        assert!(
            matches!(&got[..], [Reply::Done { ok: false, message }] if message.contains("stopping")),
            "{got:?}"
        );
    }

    #[test]
    fn status_table_reads_like_pm2_ls() {
        let s = Status {
            pid: 1,
            version: "0".into(),
            phase: "running".into(),
            ready: true,
            instances: 2,
            generation: 1,
            reloading: false,
            workers: vec![
                Row {
                    slot: 0,
                    pid: Some(12),
                    generation: 1,
                    state: WorkerState::Ready,
                    restarts: 2,
                    uptime_ms: Some(3_723_000),
                    rss_bytes: Some(48 << 20),
                    cpu_ms: Some(10),
                    cpu_percent: Some(1.5),
                },
                Row {
                    slot: 1,
                    pid: None,
                    generation: 1,
                    state: WorkerState::Backoff,
                    restarts: 5,
                    uptime_ms: None,
                    rss_bytes: None,
                    cpu_ms: None,
                    cpu_percent: None,
                },
            ],
        };
        let t = status_table(&s);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].contains("2 worker(s), generation 1, ready"), "{t}");
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            row,
            ["0", "12", "1", "ready", "2", "1h2m", "48.0MiB", "1.5%"]
        );
        let row: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(row, ["1", "-", "1", "backoff", "5", "-", "-", "-"]);
    }
}
