//! pminit's side of the control socket: accepts (peer checked at accept),
//! reads one bounded request per client, queues replies without blocking,
//! and enforces the limits of src/limits.rs (clients, idle deadlines,
//! eviction, accept back-off). Never blocks the event loop.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use nix::sys::socket::{
    accept4, bind, getsockopt, listen, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    UnixAddr,
};

use super::protocol::*;
use crate::accept::AcceptPause;
use crate::core::Note;
use crate::limits::{
    CONTROL_ACCEPTS_PER_WAKE, CONTROL_IDLE, CONTROL_MAX_CLIENTS as MAX_CLIENTS, CONTROL_MAX_OUTPUT,
    CONTROL_MAX_REQUEST as MAX_REQUEST,
};
use crate::log;
use crate::sys::{self, Io};

/// Tells a peer outside our PID namespace why it is refused, and closes.
/// What it already sent is read (and ignored) first, so that the close is an
/// orderly end of stream after the reply rather than a reset.
fn refuse_outsider(fd: OwnedFd) {
    let reply = Reply::Error {
        message: "refused: the client is outside this container's PID namespace".into(),
    };
    if let Ok(mut line) = serde_json::to_vec(&reply) {
        line.push(b'\n');
        let _ = sys::send_some(fd.as_fd(), &line);
    }
    let mut buf = [0u8; MAX_REQUEST];
    let _ = sys::read_some(fd.as_fd(), &mut buf);
    log::warn_limited(
        log::Kind::Control,
        0,
        "refused a control connection from outside pminit's PID namespace",
    );
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
            match sys::send_some(self.fd.as_fd(), &self.output) {
                Io::Moved(n) => {
                    self.output.drain(..n);
                }
                Io::WouldBlock => return,
                Io::Closed | Io::Failed(_) => {
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
            match sys::read_some(self.fd.as_fd(), &mut buf) {
                Io::Moved(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    if let Some(end) = self.input.iter().position(|&b| b == b'\n') {
                        self.input.truncate(end);
                        return Some(Ok(std::mem::take(&mut self.input)));
                    }
                    if self.input.len() > MAX_REQUEST {
                        return Some(Err(format!(
                            "request over {MAX_REQUEST} bytes: expected one JSON object on one line"
                        )));
                    }
                }
                Io::Closed => {
                    if self.waiting.is_some() || self.answered || self.input.is_empty() {
                        // Gone while we work on it, after the answer, or
                        // without a word.
                        self.dead = true;
                        return None;
                    }
                    // Half-closed without a newline: take what came as the line.
                    return Some(Ok(std::mem::take(&mut self.input)));
                }
                Io::WouldBlock => return None,
                Io::Failed(_) => {
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
    /// accept(2) ran short of a resource: the listener rests a while.
    pause: AcceptPause,
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
            pause: AcceptPause::new(),
        }
    }

    /// The fds to poll: the listener first (None while accepting is paused),
    /// then each client's, with whether it waits to write.
    pub fn poll_set(&self) -> Vec<(Option<BorrowedFd<'_>>, bool)> {
        let listener = self.pause.polling().then(|| self.listener.as_fd());
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
            .chain(self.pause.deadline())
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
        if self.pause.due(now, ready.first().copied().unwrap_or(false)) {
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
                Err(e) if AcceptPause::is_shortage(e) => {
                    let what = "cannot accept control connections";
                    self.pause.shortage(now, e, log::Kind::Accept, 0, what);
                    return;
                }
                // EAGAIN (no more), or the client already gone.
                Err(_) => return,
            };
            self.pause.accepted();
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

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::socketpair;
    use std::io::{BufRead, Read, Write};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixStream};
    use std::time::Duration;

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
            .map(|l| Reply::parse(l.expect("line").as_bytes()).expect("a reply"))
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
}
