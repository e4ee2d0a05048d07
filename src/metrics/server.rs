//! The metrics endpoint's HTTP side: a listening TCP socket and at most
//! `METRICS_MAX_CLIENTS` connections, each allowed one GET (or HEAD) of
//! `/metrics` and closed after the answer. Never blocks the event loop:
//! every socket is non-blocking, a client's request head is bounded
//! (`METRICS_MAX_REQUEST`), every client has a deadline
//! (`METRICS_IDLE`, feeding poll's timeout), the page is rendered once
//! per wake-up however many clients asked and shared between them, and
//! accept(2) running short of a resource pauses accepting (100 ms doubling
//! to 1 s) instead of spinning.
//!
//! The parser is deliberately small: `METHOD SP TARGET SP HTTP/1.x` and
//! headers up to an empty line. GET and HEAD of `/metrics` (a query string
//! is ignored) get 200; another path 404; another method 405; anything
//! else 400. Every answer carries `Connection: close`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::socket::{
    accept4, bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrIn, SockaddrIn6,
};

use crate::accept::AcceptPause;
use crate::limits::{
    METRICS_ACCEPTS_PER_WAKE, METRICS_IDLE, METRICS_MAX_CLIENTS, METRICS_MAX_REQUEST,
};
use crate::listen::Addr;
use crate::log;
use crate::sys::{self, Io};

/// The content type of the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a parsed request head asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// GET /metrics (`head`: HEAD, headers only).
    Metrics { head: bool },
    /// An answer with this status and no page.
    Status(u16),
}

/// Parses a request head (up to, not including, the empty line).
pub fn parse_request(head: &[u8]) -> Ask {
    let Ok(text) = std::str::from_utf8(head) else {
        return Ask::Status(400);
    };
    let line = text.split('\n').next().unwrap_or("").trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ask::Status(400);
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || !target.starts_with('/') {
        return Ask::Status(400);
    }
    // Every header line must at least look like one.
    for h in text.split('\n').skip(1) {
        let h = h.trim_end_matches('\r');
        if !h.is_empty() && !h.contains(':') {
            return Ask::Status(400);
        }
    }
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET", "/metrics") => Ask::Metrics { head: false },
        ("HEAD", "/metrics") => Ask::Metrics { head: true },
        (_, "/metrics") => Ask::Status(405),
        _ => Ask::Status(404),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    }
}

/// The bytes of an answer without a page.
fn status_answer(status: u16) -> Vec<u8> {
    let body = format!("{status} {}\n", reason(status));
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status} {}\r\n{allow}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    )
    .into_bytes()
}

/// The head of a 200 answer for a page of `len` bytes.
fn page_head(len: usize) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

#[derive(Debug)]
enum Phase {
    /// Reading the request head.
    Reading,
    /// Asked for the page; it is rendered once this turn.
    Waiting { head: bool },
    /// Writing `head` then `page` (shared) from `at`.
    Writing,
    /// All written and our side shut: reading until the client closes
    /// (so unread input does not turn our close into a reset).
    Lingering,
}

struct Client {
    fd: OwnedFd,
    phase: Phase,
    input: Vec<u8>,
    head: Vec<u8>,
    page: Option<Rc<[u8]>>,
    /// Bytes of head + page written so far.
    at: usize,
    /// Connected (or finished writing): the deadline counts from here.
    since: Instant,
    dead: bool,
}

impl Client {
    fn total(&self) -> usize {
        self.head.len() + self.page.as_ref().map_or(0, |p| p.len())
    }

    fn answer(&mut self, head: Vec<u8>, page: Option<Rc<[u8]>>, now: Instant) {
        self.head = head;
        self.page = page;
        self.at = 0;
        self.phase = Phase::Writing;
        self.since = now;
        self.flush(now);
    }

    /// Writes what it can without blocking.
    fn flush(&mut self, now: Instant) {
        while matches!(self.phase, Phase::Writing) && self.at < self.total() {
            let chunk: &[u8] = if self.at < self.head.len() {
                &self.head[self.at..]
            } else {
                let page = self.page.as_deref().unwrap_or(&[]);
                &page[self.at - self.head.len()..]
            };
            match sys::send_some(self.fd.as_fd(), chunk) {
                Io::Moved(n) => self.at += n,
                Io::WouldBlock => return,
                Io::Closed | Io::Failed(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        if matches!(self.phase, Phase::Writing) {
            // SAFETY: shutdown on a socket we own; no memory is involved.
            unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) };
            self.phase = Phase::Lingering;
            self.since = now;
            self.page = None;
            self.head = Vec::new();
        }
    }

    /// Reads what is there (at most the head's limit plus one buffer).
    fn read(&mut self) {
        let mut buf = [0u8; 2048];
        loop {
            let n = match sys::read_some(self.fd.as_fd(), &mut buf) {
                Io::Moved(n) => n,
                Io::Closed => {
                    // The client closed (or half-closed before asking).
                    if matches!(self.phase, Phase::Reading | Phase::Lingering) {
                        self.dead = true;
                    }
                    return;
                }
                Io::WouldBlock => return,
                Io::Failed(_) => {
                    self.dead = true;
                    return;
                }
            };
            if !matches!(self.phase, Phase::Reading) {
                // Anything after the head is not looked at.
                continue;
            }
            self.input.extend_from_slice(&buf[..n]);
            if let Some(end) = head_end(&self.input) {
                let ask = parse_request(&self.input[..end]);
                self.input = Vec::new();
                match ask {
                    Ask::Metrics { head } => self.phase = Phase::Waiting { head },
                    Ask::Status(s) => self.answer(status_answer(s), None, Instant::now()),
                }
                continue;
            }
            if self.input.len() > METRICS_MAX_REQUEST {
                self.input = Vec::new();
                self.answer(status_answer(400), None, Instant::now());
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting { .. } => None,
            _ => Some(self.since + METRICS_IDLE),
        }
    }
}

/// Where the request head ends (before `\r\n\r\n` or `\n\n`).
fn head_end(input: &[u8]) -> Option<usize> {
    let crlf = input.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = input.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The listening socket and its clients.
pub struct Server {
    listener: OwnedFd,
    clients: Vec<Client>,
    /// accept(2) ran short of a resource: the listener rests a while.
    pause: AcceptPause,
    /// Clients closed before they asked (evicted or idle), for the page.
    pub dropped: u64,
}

fn tcp_listener(sa: SocketAddr, dual_stack: bool) -> nix::Result<OwnedFd> {
    let family = match sa {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    match sa {
        SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?,
        SocketAddr::V6(v6) => {
            if dual_stack {
                setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
            }
            bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?
        }
    }
    listen(&fd, Backlog::new(128)?)?;
    Ok(fd)
}

impl Server {
    /// Binds `addr` (a bare port: every interface, dual-stack where the
    /// host has IPv6). The error names the address.
    pub fn bind(addr: &Addr, text: &str) -> Result<Server, String> {
        let named = |e: Errno| {
            let why = match e {
                Errno::EADDRINUSE => format!("{e}: another process already listens there"),
                e => e.to_string(),
            };
            format!("--metrics: cannot listen on {text}: {why}")
        };
        let fd = match addr {
            Addr::AnyPort(p) => {
                let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, *p, 0, 0));
                match tcp_listener(v6, true) {
                    Ok(fd) => fd,
                    Err(Errno::EAFNOSUPPORT | Errno::EADDRNOTAVAIL) => {
                        let v4 = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, *p));
                        tcp_listener(v4, false).map_err(named)?
                    }
                    Err(e) => return Err(named(e)),
                }
            }
            Addr::Tcp(sa) => tcp_listener(*sa, false).map_err(named)?,
            Addr::Unix(_) => {
                return Err(format!(
                    "--metrics: invalid value {text:?}: expected PORT or HOST:PORT (TCP)"
                ))
            }
        };
        Ok(Server {
            listener: fd,
            clients: Vec::new(),
            pause: AcceptPause::new(),
            dropped: 0,
        })
    }

    /// The fds to poll: the listener first (None while accepting is
    /// paused), then each client's, with whether it waits to write.
    pub fn poll_set(&self) -> Vec<(Option<BorrowedFd<'_>>, bool)> {
        let listener = self.pause.polling().then(|| self.listener.as_fd());
        std::iter::once((listener, false))
            .chain(self.clients.iter().map(|c| {
                (
                    Some(c.fd.as_fd()),
                    matches!(c.phase, Phase::Writing) && c.at < c.total(),
                )
            }))
            .collect()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients
            .iter()
            .filter_map(Client::deadline)
            .chain(self.pause.deadline())
            .min()
    }

    /// Reads, writes and accepts what `poll` reported (`ready` in
    /// `poll_set` order) and closes clients past their deadline. True when
    /// some client waits for the page: render it and call `answer`.
    pub fn serve(&mut self, ready: &[bool]) -> bool {
        let now = Instant::now();
        for (i, c) in self.clients.iter_mut().enumerate() {
            if !ready.get(1 + i).copied().unwrap_or(false) {
                continue;
            }
            c.flush(now);
            c.read();
        }
        for c in &mut self.clients {
            if !c.dead && c.deadline().is_some_and(|d| d <= now) {
                if matches!(c.phase, Phase::Reading) {
                    self.dropped += 1;
                    log::warn_limited(
                        log::Kind::Metrics,
                        0,
                        &format!(
                            "metrics: closed a connection that sent no request for {} ms",
                            METRICS_IDLE.as_millis()
                        ),
                    );
                }
                c.dead = true;
            }
        }
        self.clients.retain(|c| !c.dead);
        if self.pause.due(now, ready.first().copied().unwrap_or(false)) {
            self.accept(now);
        }
        self.clients
            .iter()
            .any(|c| matches!(c.phase, Phase::Waiting { .. }))
    }

    /// Sends `page` to every client waiting for it.
    pub fn answer(&mut self, page: Rc<[u8]>) {
        let now = Instant::now();
        for c in &mut self.clients {
            if let Phase::Waiting { head } = c.phase {
                let body = (!head).then(|| page.clone());
                c.answer(page_head(page.len()), body, now);
            }
        }
        self.clients.retain(|c| !c.dead);
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..METRICS_ACCEPTS_PER_WAKE {
            let fd = match accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                // SAFETY: accept4 returned a new fd that nothing else owns.
                Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(e) if AcceptPause::is_shortage(e) => {
                    let what = "metrics: cannot accept connections";
                    self.pause.shortage(now, e, log::Kind::Metrics, 1, what);
                    return;
                }
                // EAGAIN: no more.
                Err(_) => return,
            };
            self.pause.accepted();
            if self.clients.len() >= METRICS_MAX_CLIENTS {
                // Make way: the oldest that is done (lingering), else the
                // oldest that has not sent its request. A scraper sends its
                // request at once, so idle connections cannot lock it out.
                let victim = self
                    .clients
                    .iter()
                    .position(|c| matches!(c.phase, Phase::Lingering))
                    .or_else(|| {
                        self.clients
                            .iter()
                            .position(|c| matches!(c.phase, Phase::Reading))
                    });
                match victim {
                    Some(i) => {
                        let old = self.clients.remove(i);
                        if matches!(old.phase, Phase::Reading) {
                            self.dropped += 1;
                            log::warn_limited(
                                log::Kind::Metrics,
                                2,
                                &format!(
                                    "metrics: {METRICS_MAX_CLIENTS} connections open: closed the oldest that sent no request"
                                ),
                            );
                        }
                    }
                    // Every place is busy answering: this one waits its turn
                    // by being closed; the scraper retries.
                    None => continue,
                }
            }
            self.clients.push(Client {
                fd,
                phase: Phase::Reading,
                input: Vec::new(),
                head: Vec::new(),
                page: None,
                at: 0,
                since: now,
                dead: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    #[test]
    fn request_heads() {
        let table: &[(&str, Ask)] = &[
            (
                "GET /metrics HTTP/1.1\r\nHost: x",
                Ask::Metrics { head: false },
            ),
            ("GET /metrics HTTP/1.0", Ask::Metrics { head: false }),
            ("GET /metrics?x=1 HTTP/1.1", Ask::Metrics { head: false }),
            ("HEAD /metrics HTTP/1.1", Ask::Metrics { head: true }),
            ("POST /metrics HTTP/1.1", Ask::Status(405)),
            ("GET / HTTP/1.1", Ask::Status(404)),
            ("GET /metricsx HTTP/1.1", Ask::Status(404)),
            ("GET /metrics HTTP/2.0", Ask::Status(400)),
            ("GET /metrics", Ask::Status(400)),
            ("GET  /metrics HTTP/1.1", Ask::Status(400)),
            ("GET metrics HTTP/1.1", Ask::Status(400)),
            ("GET /metrics HTTP/1.1\r\nno colon here", Ask::Status(400)),
            ("\u{0}\u{1}\u{2}", Ask::Status(400)),
            ("", Ask::Status(400)),
        ];
        for (head, want) in table {
            assert_eq!(parse_request(head.as_bytes()), *want, "{head:?}");
        }
        assert_eq!(parse_request(&[0xff, 0xfe]), Ask::Status(400));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    fn loopback() -> Server {
        Server::bind(
            &Addr::Tcp("127.0.0.1:0".parse().expect("addr")),
            "127.0.0.1:0",
        )
        .expect("bind")
    }

    fn port(s: &Server) -> u16 {
        nix::sys::socket::getsockname::<SockaddrIn>(s.listener.as_raw_fd())
            .expect("name")
            .port()
    }

    /// Runs the server as the event loop would until `done` holds.
    fn turn_until(s: &mut Server, page: &str, done: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < end, "no progress");
            let ready = {
                let fds = s.poll_set();
                crate::sys::poll(&fds, Some(Duration::from_millis(20))).expect("poll")
            };
            if s.serve(&ready) {
                s.answer(Rc::from(page.as_bytes()));
            }
        }
    }

    #[test]
    fn serves_the_page_and_refuses_the_rest_over_a_real_socket() {
        let mut s = loopback();
        let p = port(&s);
        let ask = |req: &'static [u8]| {
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(("127.0.0.1", p)).expect("connect");
                c.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                c.write_all(req).expect("write");
                let mut out = String::new();
                c.read_to_string(&mut out).expect("read");
                out
            })
        };
        let cases: Vec<(&'static [u8], &str)> = vec![
            (b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", "200 OK"),
            (b"PUT /metrics HTTP/1.1\r\n\r\n", "405"),
            (b"GET /nope HTTP/1.1\r\n\r\n", "404"),
            (b"BLAH\r\n\r\n", "400"),
        ];
        for (req, want) in cases {
            let h = ask(req);
            turn_until(&mut s, "x 1\n", || h.is_finished());
            let out = h.join().expect("client");
            assert!(out.contains(want), "{req:?}: {out:?}");
            assert!(out.contains("Connection: close"), "{out:?}");
            if want == "200 OK" {
                assert!(out.ends_with("\r\n\r\nx 1\n"), "{out:?}");
                assert!(out.contains(CONTENT_TYPE));
            }
        }
        // An oversized head: 400, not a growing buffer.
        let big: &'static [u8] = Box::leak(
            format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000))
                .into_bytes()
                .into_boxed_slice(),
        );
        let h = ask(big);
        turn_until(&mut s, "x 1\n", || h.is_finished());
        assert!(h.join().expect("client").contains("400"));
    }

    #[test]
    fn idle_connections_are_evicted_for_a_scraper() {
        let mut s = loopback();
        let p = port(&s);
        let idle: Vec<TcpStream> = (0..METRICS_MAX_CLIENTS + 8)
            .map(|_| TcpStream::connect(("127.0.0.1", p)).expect("connect"))
            .collect();
        let h = std::thread::spawn(move || {
            let mut c = TcpStream::connect(("127.0.0.1", p)).expect("connect");
            c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
                .expect("write");
            let mut out = String::new();
            c.read_to_string(&mut out).expect("read");
            out
        });
        turn_until(&mut s, "page\n", || h.is_finished());
        assert!(h.join().expect("scraper").ends_with("page\n"));
        assert!(s.clients.len() <= METRICS_MAX_CLIENTS);
        assert!(s.dropped >= 8, "dropped {}", s.dropped);
        drop(idle);
    }
}
