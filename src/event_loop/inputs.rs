//! What the loop reads besides signals and exits: control requests (and
//! the `status` they ask for), and workers' IPC messages (readiness, the
//! preload's listen requests, liveness answers) and notify datagrams. Each
//! is bounded per wake-up (src/limits.rs).

use std::net::IpAddr;

use super::*;
use crate::control::{Outcome, Reply, Request};
use crate::core::{Ask, Note};
use crate::ipc::{Message, ToWorker};
use crate::limits::LISTEN_REQUESTS_PER_WAKE;
use crate::listen::ShareError;
use crate::notify;

impl Shell {
    /// What control clients asked: `status` is answered here (the core's
    /// view and /proc); everything else goes to the core as Event::Asked,
    /// and the core's Action::Answer replies.
    pub(super) fn control_requests(
        &mut self,
        ready: &Ready,
        sup: &Supervisor,
        queue: &mut VecDeque<Event>,
    ) {
        let Some(server) = self.control.as_mut() else {
            return;
        };
        let readable = ready.of(Token::Control, server.poll_set().len());
        for (id, request) in server.serve(&readable) {
            let ask = match request {
                Request::Status => {
                    let status = self.status(sup);
                    if let Some(server) = self.control.as_mut() {
                        server.answer(id, Outcome::Reply(Reply::Status(status)));
                    }
                    continue;
                }
                Request::Ready => Ask::Ready,
                Request::Reload => Ask::Reload,
                Request::Scale { to } => Ask::Scale(to),
                Request::Prestop => Ask::Prestop,
            };
            queue.push_back(Event::Asked { id, ask });
        }
    }

    /// `pminit status`: the core's view plus memory and CPU from /proc.
    pub(super) fn status(&mut self, sup: &Supervisor) -> control::Status {
        let now = Instant::now();
        let views = sup.workers();
        let pids: Vec<i32> = views.iter().filter_map(|v| v.pid).collect();
        let usage: HashMap<i32, sys::Usage> = sys::group_usage(&pids).into_iter().collect();
        let mut seen = HashMap::new();
        let workers = views
            .into_iter()
            .map(|v| {
                let used = v.pid.and_then(|p| usage.get(&p).copied());
                let heap = v.pid.and_then(|p| self.healing.heaps.get(&p).copied());
                let cpu_percent = match (v.pid, used, v.since) {
                    (Some(pid), Some(u), Some(since)) => {
                        // Since the previous status, or since the worker started.
                        let (before, at) = self.cpu_seen.get(&pid).copied().unwrap_or((0, since));
                        seen.insert(pid, (u.cpu_ms, now));
                        let wall = now.saturating_duration_since(at).as_millis() as f64;
                        let busy = u.cpu_ms.saturating_sub(before) as f64;
                        Some(if wall > 0.0 { busy * 100.0 / wall } else { 0.0 })
                    }
                    _ => None,
                };
                control::Row {
                    slot: v.slot,
                    pid: v.pid,
                    generation: v.generation,
                    state: v.state,
                    restarts: v.restarts,
                    uptime_ms: v
                        .since
                        .map(|s| now.saturating_duration_since(s).as_millis() as u64),
                    rss_bytes: used.map(|u| u.rss_bytes),
                    cpu_ms: used.map(|u| u.cpu_ms),
                    cpu_percent,
                    answered_ms_ago: v
                        .answered
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                    loop_delay_ms: v.answer_delay.map(|d| d.as_millis() as u64),
                    heap_used_bytes: heap.map(|h| h.used),
                    heap_limit_bytes: heap.map(|h| h.limit),
                }
            })
            .collect();
        self.cpu_seen = seen;
        control::Status {
            pid: self.me,
            version: env!("CARGO_PKG_VERSION").to_string(),
            phase: sup.phase_name().to_string(),
            ready: sup.readiness().is_ok(),
            instances: sup.instances(),
            generation: sup.generation(),
            reloading: sup.reloading(),
            workers,
        }
    }

    /// What the workers said on their channels and the notify socket. One
    /// Ready per worker per wake-up is enough: a flood of them is not a
    /// flood of events.
    pub(super) fn messages(
        &mut self,
        ready: &Ready,
        sup: &Supervisor,
        queue: &mut VecDeque<Event>,
    ) {
        let mut readied: Vec<i32> = Vec::new();
        if ready.has(Token::Notify) {
            self.notify_datagrams(sup, &mut readied, queue);
        }
        for pid in ready.channels() {
            self.channel_messages(pid, &mut readied, queue);
        }
    }

    /// sd_notify datagrams: READY=1 (with --wait-ready) from a worker or
    /// its process group; the rest is logged, rate-limited.
    fn notify_datagrams(
        &mut self,
        sup: &Supervisor,
        readied: &mut Vec<i32>,
        queue: &mut VecDeque<Event>,
    ) {
        let Some(n) = &self.notify else {
            return;
        };
        let batch = n.recv();
        let workers: Vec<i32> = if batch.is_empty() {
            Vec::new()
        } else {
            sup.workers().iter().filter_map(|w| w.pid).collect()
        };
        for note in batch {
            let worker = match notify::worker_of(note.pid, &workers, sys::getpgid) {
                Ok(w) => w,
                Err(why) => {
                    let who = if note.pid > 0 { note.pid } else { 0 };
                    log::warn_limited(
                        log::Kind::NotifyRefused,
                        0,
                        &format!("dropped a notify datagram from pid {who}: {why}"),
                    );
                    continue;
                }
            };
            for line in note.lines {
                if line == "READY=1" && self.wait_ready && !readied.contains(&worker) {
                    readied.push(worker);
                    queue.push_back(Event::Ready { pid: worker });
                }
                let note = Note::Notified {
                    pid: worker,
                    message: line,
                };
                log::note_limited(log::Kind::Notified, worker, &note);
            }
        }
    }

    /// One worker's IPC channel: readiness, listen requests (answered
    /// here, at most LISTEN_REQUESTS_PER_WAKE), liveness answers and memory
    /// reports; malformed lines are dropped and counted.
    fn channel_messages(&mut self, pid: i32, readied: &mut Vec<i32>, queue: &mut VecDeque<Event>) {
        let Some(c) = self.channels.get_mut(&pid) else {
            return;
        };
        let (mut ready, mut alive) = (false, false);
        let mut requests = Vec::new();
        let was_closed = c.closed;
        let messages = c.read();
        let closed_now = c.closed && !was_closed;
        for m in messages {
            match m {
                Ok(Message::Ready) if self.wait_ready => ready = true,
                Ok(Message::Listening) if !self.wait_ready => ready = true,
                Ok(Message::Listen { id, request }) => requests.push((id, request)),
                Ok(Message::Alive { heap }) => {
                    alive = true;
                    match heap {
                        Some(h) => self.healing.heaps.insert(pid, h),
                        None => self.healing.heaps.remove(&pid),
                    };
                }
                Ok(Message::Grew) => self.healing.hurry(Instant::now()),
                Ok(_) => {}
                Err(reason) => {
                    c.dropped += 1;
                    let line = format!(
                        "worker pid {pid}: dropped {reason} from its IPC channel ({} so far)",
                        c.dropped
                    );
                    log::warn_limited(log::Kind::IpcDropped, pid, &line);
                }
            }
        }
        if ready && !readied.contains(&pid) {
            readied.push(pid);
            queue.push_back(Event::Ready { pid });
        }
        // One answer per wake-up is enough, however many were sent.
        if alive {
            queue.push_back(Event::Alive { pid });
        }
        if closed_now {
            queue.push_back(Event::Unanswerable { pid });
        }
        for (k, (id, request)) in requests.into_iter().enumerate() {
            let request = match request {
                _ if k >= LISTEN_REQUESTS_PER_WAKE => Err(ShareError {
                    code: "EAGAIN",
                    message: format!(
                        "more than {LISTEN_REQUESTS_PER_WAKE} listen requests at once; ask one at a time"
                    ),
                }),
                Ok(r) => Ok(r),
                Err(message) => Err(ShareError {
                    code: "EINVAL",
                    message,
                }),
            };
            self.answer_listen(pid, id, request);
        }
    }

    /// Answers a worker's listen request: the socket as a `NODE_HANDLE`
    /// message (Node's own way to pass a server handle, fd in SCM_RIGHTS),
    /// or an error its preload turns into the server's 'error' event. The
    /// inner message's `cmd` starts with `NODE_`, so Node hands it to the
    /// preload's 'internalMessage' listener and never to the app's own
    /// `process.on('message')`.
    pub(super) fn answer_listen(
        &mut self,
        pid: i32,
        id: u64,
        request: Result<(u16, Option<IpAddr>), ShareError>,
    ) {
        let slot = self.slots.get(&pid).copied().unwrap_or(0);
        let shared = match request {
            Ok((port, host)) => self.launcher.sockets.share(port, host, slot),
            Err(e) => Err(e),
        };
        let Some(channel) = self.channels.get(&pid) else {
            return;
        };
        let sent = match shared {
            Ok(s) => {
                let address = s.bound.ip().to_string();
                let port = s.bound.port();
                if let Some(from) = s.moved_from {
                    log::warn(&format!(
                        "$PORT {port}: the app listens on {address} only, so pminit moved the socket there from {from} (nothing answers on other addresses)"
                    ));
                } else if s.new {
                    log::warn(&format!(
                        "sharing {} among the workers: worker pid {pid}'s app listens there",
                        s.bound
                    ));
                }
                let answer = ToWorker::socket(id, address, port, s.declared);
                // Node takes a socket received over IPC as it is, and its
                // event loop assumes non-blocking: a blocking listener
                // shared by two workers froze the one whose accept() lost
                // the race for a connection, until the next one came (a
                // worker that then ignored SIGINT until SIGKILL).
                sys::set_nonblocking(s.fd);
                channel.send_with_fd(&answer, s.fd)
            }
            Err(e) => {
                log::warn_limited(
                    log::Kind::Listen,
                    pid,
                    &format!(
                        "worker pid {pid}: listen refused: {} ({})",
                        e.message, e.code
                    ),
                );
                channel.send(&ToWorker::refused(id, e.code, e.message))
            }
        };
        if let Err(e) = sent {
            log::warn_limited(
                log::Kind::Listen,
                pid,
                &format!("worker pid {pid}: cannot answer its listen request: {e}"),
            );
        }
    }
}
