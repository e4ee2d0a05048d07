//! Listening sockets pminit owns and hands to its workers.
//!
//! pminit binds every `--listen` address before any worker starts, so a bind
//! failure is a start-up error, and keeps its own copy for its whole life, so
//! a connection the kernel has queued survives any worker's exit.
//!
//! Three layouts:
//! - `shared`: one socket per address, the same one in every worker: one
//!   accept queue that every worker accepts from.
//! - `per-worker`: one `SO_REUSEPORT` socket per address and slot, inherited
//!   by that slot's every replacement. The kernel spreads new connections
//!   over the group; a classic BPF program (`SO_ATTACH_REUSEPORT_CBPF`)
//!   steers them to the slots whose worker is running, so a slot whose
//!   worker is down gets none while it is down.
//! - `sticky` (`--sticky`): the per-worker sockets, with a program that
//!   picks the slot by a hash of the client's source address, so one
//!   client keeps one worker (src/steer.rs).

use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrIn, SockaddrIn6, UnixAddr,
};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use crate::limits::SHARED_PORTS_MAX;
use crate::steer;

mod addr;
mod bind;

pub use addr::*;
use bind::*;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

/// Whether listener `l` is at `host` (None: the app names none, which
/// only `$PORT`'s and `--listen PORT`'s wildcard match).
fn same_host(l: &Listener, host: Option<IpAddr>) -> bool {
    match (&l.addr, host) {
        (Addr::AnyPort(_), None) => true,
        (_, Some(ip)) => l.bound.is_some_and(|b| b.ip() == ip),
        _ => false,
    }
}

/// Node's default, and enough for bursts of new connections.
const BACKLOG: i32 = 511;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Shared,
    PerWorker,
    /// PerWorker sockets steered by the client's source address.
    Sticky,
}

/// One `--listen` address (or `$PORT`) and the socket(s) bound to it.
struct Listener {
    addr: Addr,
    /// Bound for `$PORT` without `--listen`: the host is the app's to
    /// choose. The first worker that listens on this port at a specific
    /// host moves it there (see `Sockets::share`); then this is false.
    implicit: bool,
    /// From `$PORT`, moved or not: other hosts on its port may be added.
    from_port_var: bool,
    /// The shared socket; also the only one for unix: addresses.
    shared: Option<OwnedFd>,
    /// per-worker layout: slot i's socket at i (its index in the group).
    per_slot: Vec<OwnedFd>,
    /// The address actually bound (AnyPort resolves to [::] or 0.0.0.0).
    bound: Option<SocketAddr>,
}

pub struct Sockets {
    listeners: Vec<Listener>,
    layout: Layout,
    /// Sockets bound when a worker asked (any TCP port its app listens on
    /// besides the declared ones), by the (port, host) it asked for; kept
    /// for pminit's whole life, shared by every worker that asks.
    on_request: Vec<OnRequest>,
    /// Workers run as a non-root user (--user): a port below 1024 is one
    /// their app could not bind itself, so pminit refuses it too.
    unprivileged_workers: bool,
    /// The live slots last steered to (per-worker layout), to steer a
    /// rebound group the same way.
    live: Vec<usize>,
}

struct OnRequest {
    port: u16,
    host: Option<IpAddr>,
    fd: OwnedFd,
    bound: SocketAddr,
}

/// What a Node worker's preload needs to know about one fd.
pub struct FdInfo {
    pub fd: RawFd,
    pub port: Option<u16>,
    pub host: Option<String>,
    pub path: Option<String>,
    /// The host is the app's to choose (`$PORT`, not `--listen`).
    pub implicit: bool,
}

/// A socket handed to a worker that asked for one.
pub struct Shared<'a> {
    pub fd: std::os::fd::BorrowedFd<'a>,
    pub bound: SocketAddr,
    /// One of the declared sockets (`--listen`, `$PORT`): the worker is
    /// ready once it listens on it.
    pub declared: bool,
    /// A declared `$PORT` socket moved from the wildcard to this host.
    pub moved_from: Option<SocketAddr>,
    /// Bound just now, for this request.
    pub new: bool,
}

/// Why a worker cannot have the socket it asked for: an errno name the
/// app sees as its listen error's `code`, and a sentence.
#[derive(Debug, PartialEq, Eq)]
pub struct ShareError {
    pub code: &'static str,
    pub message: String,
}

impl ShareError {
    fn errno(e: nix::errno::Errno, what: &str) -> ShareError {
        ShareError {
            code: errno_name(e),
            message: format!("{what}: {}", bind_error(e)),
        }
    }
}

impl Sockets {
    /// Binds every address before any worker starts: per-worker layout, one
    /// socket per slot. The error names the address.
    /// `source` names where the addresses came from (`--listen`, `PORT`).
    /// `implicit`: the addresses are `$PORT`'s (no `--listen`), whose host
    /// the app chooses.
    pub fn bind(
        addrs: &[Addr],
        layout: Layout,
        slots: usize,
        source: &str,
        implicit: bool,
    ) -> Result<Sockets, String> {
        let mut listeners = Vec::new();
        for addr in addrs {
            let fail = |e: &dyn fmt::Display| format!("{source} {addr}: cannot bind: {e}");
            let tcp_fail = |e: nix::errno::Errno| fail(&bind_error(e));
            let mut l = Listener {
                addr: addr.clone(),
                implicit: implicit && matches!(addr, Addr::AnyPort(_)),
                from_port_var: implicit,
                shared: None,
                per_slot: Vec::new(),
                bound: None,
            };
            match addr {
                Addr::Unix(path) => l.shared = Some(bind_unix(path).map_err(|e| fail(&e))?),
                _ if layout == Layout::Shared => {
                    let (fd, bound) = bind_tcp(addr, true).map_err(tcp_fail)?;
                    l.shared = Some(fd);
                    l.bound = Some(bound);
                }
                _ => {
                    // Probe before the first: the others join our own group.
                    for slot in 0..slots.max(1) {
                        let (fd, bound) = bind_tcp(addr, slot == 0).map_err(tcp_fail)?;
                        l.per_slot.push(fd);
                        l.bound = Some(bound);
                    }
                }
            }
            listeners.push(l);
        }
        Ok(Sockets {
            listeners,
            layout,
            on_request: Vec::new(),
            unprivileged_workers: false,
            live: Vec::new(),
        })
    }

    /// Workers run as a non-root user: refuse them ports below 1024.
    pub fn set_unprivileged_workers(&mut self, yes: bool) {
        self.unprivileged_workers = yes;
    }

    /// The socket for a worker of `slot` whose app listens on `port` at
    /// `host` (None: no host, Node's default, the dual-stack wildcard).
    ///
    /// - A declared socket (`--listen`, `$PORT`) at that address, or on
    ///   that port from `--listen` (the operator's address wins): that one.
    /// - `$PORT`'s wildcard socket while the app asks for a specific host:
    ///   bound anew at that host, and the wildcard one is shut down in
    ///   every process, so nothing answers on other addresses. Once.
    /// - A socket bound earlier for the same (port, host): that one.
    /// - Else a new one, up to `SHARED_PORTS_MAX`, kept for pminit's life.
    pub fn share(
        &mut self,
        port: u16,
        host: Option<IpAddr>,
        slot: usize,
    ) -> Result<Shared<'_>, ShareError> {
        let wanted = match host {
            None => Addr::AnyPort(port),
            Some(ip) => Addr::Tcp(SocketAddr::new(ip, port)),
        };
        if let Some(i) = self.declared_for(port, host) {
            return self.share_declared(i, &wanted, (port, host), slot);
        }
        let (i, new) = match self
            .on_request
            .iter()
            .position(|r| r.port == port && r.host == host)
        {
            Some(i) => (i, false),
            None => (self.bind_on_request(port, host, &wanted)?, true),
        };
        let r = &self.on_request[i];
        Ok(Shared {
            fd: r.fd.as_fd(),
            bound: r.bound,
            declared: false,
            moved_from: None,
            new,
        })
    }

    /// The declared listener (`--listen`, `$PORT`) a listen on `port` at
    /// `host` takes: one at that address, or on that port from `--listen`
    /// (the operator's address wins), or `$PORT`'s wildcard when the app
    /// names a host (it is then moved there).
    fn declared_for(&self, port: u16, host: Option<IpAddr>) -> Option<usize> {
        let on_port = |l: &Listener| l.bound.is_some_and(|b| b.port() == port);
        self.listeners
            .iter()
            .position(|l| on_port(l) && (same_host(l, host) || !l.from_port_var))
            .or_else(|| {
                self.listeners
                    .iter()
                    .position(|l| on_port(l) && l.implicit && host.is_some())
            })
    }

    /// The socket of declared listener `i` for `slot`: the shared one, or
    /// the slot's own (bound now for a slot beyond those so far).
    fn share_declared(
        &mut self,
        i: usize,
        wanted: &Addr,
        (port, host): (u16, Option<IpAddr>),
        slot: usize,
    ) -> Result<Shared<'_>, ShareError> {
        let mut moved_from = None;
        if !same_host(&self.listeners[i], host) && self.listeners[i].implicit {
            moved_from = self.listeners[i].bound;
            self.move_implicit(i, wanted)?;
        }
        let l = &mut self.listeners[i];
        let fd = match &l.shared {
            Some(fd) => fd.as_fd(),
            None => {
                while l.per_slot.len() <= slot {
                    let (fd, _) = bind_tcp(&l.addr, false)
                        .map_err(|e| ShareError::errno(e, &format!("{wanted}")))?;
                    l.per_slot.push(fd);
                }
                l.per_slot[slot].as_fd()
            }
        };
        Ok(Shared {
            fd,
            bound: l
                .bound
                .unwrap_or(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)),
            declared: true,
            moved_from,
            new: false,
        })
    }

    /// Binds a port a worker asked for, within the limits (at most
    /// SHARED_PORTS_MAX, no privileged port for --user workers); returns
    /// its index in `on_request`.
    fn bind_on_request(
        &mut self,
        port: u16,
        host: Option<IpAddr>,
        wanted: &Addr,
    ) -> Result<usize, ShareError> {
        if self.on_request.len() >= SHARED_PORTS_MAX {
            return Err(ShareError {
                code: "EMFILE",
                message: format!(
                    "{wanted}: pminit already shares {SHARED_PORTS_MAX} ports its workers asked for, the most it will"
                ),
            });
        }
        if port < 1024 && self.unprivileged_workers {
            return Err(ShareError {
                code: "EACCES",
                message: format!(
                    "{wanted}: port {port} is privileged and the workers run as a non-root user (--user); bind it with --listen instead"
                ),
            });
        }
        // Probe for a foreign listener only when the port is not already
        // ours; our own sockets on it share it by SO_REUSEPORT.
        let ours = self
            .listeners
            .iter()
            .any(|l| l.bound.is_some_and(|b| b.port() == port))
            || self.on_request.iter().any(|r| r.port == port);
        let (fd, bound) =
            bind_tcp(wanted, !ours).map_err(|e| ShareError::errno(e, &format!("{wanted}")))?;
        self.on_request.push(OnRequest {
            port,
            host,
            fd,
            bound,
        });
        Ok(self.on_request.len() - 1)
    }

    /// Moves `$PORT`'s listener `i` from the wildcard to `wanted`: the new
    /// socket(s) first, then the old ones shut down (see `retire`).
    fn move_implicit(&mut self, i: usize, wanted: &Addr) -> Result<(), ShareError> {
        let fail = |e| ShareError::errno(e, &format!("{wanted}"));
        let l = &mut self.listeners[i];
        if l.shared.is_some() {
            let (fd, bound) = bind_tcp(wanted, false).map_err(fail)?;
            if let Some(old) = l.shared.replace(fd) {
                retire(old);
            }
            l.bound = Some(bound);
        } else {
            let mut fresh = Vec::new();
            let mut bound = None;
            for _ in 0..l.per_slot.len().max(1) {
                let (fd, b) = bind_tcp(wanted, false).map_err(fail)?;
                fresh.push(fd);
                bound = Some(b);
            }
            for old in std::mem::replace(&mut l.per_slot, fresh) {
                retire(old);
            }
            l.bound = bound;
        }
        l.addr = wanted.clone();
        l.implicit = false;
        if matches!(self.layout, Layout::PerWorker | Layout::Sticky) {
            let live = self.live.clone();
            // Not fatal: without it the kernel's hash spreads connections.
            let _ = self.steer(&live);
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    /// The fds slot `slot` gets, in `--listen` order (they become 3, 4, ...).
    /// A per-worker slot beyond those bound so far (TTIN) gets new sockets.
    pub fn fds_for(&mut self, slot: usize) -> io::Result<Vec<FdInfo>> {
        let mut out = Vec::new();
        for l in &mut self.listeners {
            let fd = match &l.shared {
                Some(fd) => fd.as_raw_fd(),
                None => {
                    while l.per_slot.len() <= slot {
                        let (fd, _) = bind_tcp(&l.addr, false)?;
                        l.per_slot.push(fd);
                    }
                    l.per_slot[slot].as_raw_fd()
                }
            };
            out.push(FdInfo {
                fd,
                port: l.bound.map(|b| b.port()),
                host: l.bound.map(|b| b.ip().to_string()),
                path: match &l.addr {
                    Addr::Unix(p) => Some(p.to_string_lossy().into_owned()),
                    _ => None,
                },
                implicit: l.implicit,
            });
        }
        Ok(out)
    }

    /// `LISTEN_FDNAMES`: the port for TCP, the path for unix sockets
    /// (systemd's separator `:` replaced by `_`).
    pub fn names(&self) -> String {
        self.listeners
            .iter()
            .map(|l| match (&l.addr, l.bound) {
                (Addr::Unix(p), _) => p.to_string_lossy().replace(':', "_"),
                (_, Some(b)) => b.port().to_string(),
                (a, None) => a.to_string().replace(':', "_"),
            })
            .collect::<Vec<_>>()
            .join(":")
    }

    /// per-worker and sticky layouts: new connections go only to the
    /// sockets of `live` slots (src/steer.rs says how each picks one).
    /// With none live, the kernel's own hash decides (connections wait in
    /// the queues for the replacements).
    pub fn steer(&mut self, live: &[usize]) -> io::Result<()> {
        self.live = live.to_vec();
        for l in &self.listeners {
            let Some(first) = l.per_slot.first() else {
                continue;
            };
            let live: Vec<u32> = live
                .iter()
                .filter(|&&s| s < l.per_slot.len())
                .map(|&s| s as u32)
                .collect();
            let mut prog = match self.layout {
                // Every socket ever bound stays in the group (a slot removed
                // by a scale-down keeps its socket), so the group's size is
                // the most slots there have been: see docs/sockets.md "Sticky
                // sessions".
                Layout::Sticky => steer::sticky(l.per_slot.len() as u32, &live),
                Layout::PerWorker | Layout::Shared => steer::random(&live),
            };
            let fprog = libc::sock_fprog {
                len: prog.len() as u16,
                filter: prog.as_mut_ptr(),
            };
            setsockopt(&first.as_fd(), sockopt::AttachReusePortCbpf, &fprog)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port free on both 127.0.0.1 and [::] right now.
    fn free_port() -> u16 {
        loop {
            let l = std::net::TcpListener::bind("[::]:0").expect("bind [::]:0");
            let port = l.local_addr().expect("addr").port();
            drop(l);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }

    fn inode(fd: impl AsRawFd) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .expect("fd")
            .ino()
    }

    fn empty() -> Sockets {
        Sockets::bind(&[], Layout::Shared, 1, "--listen", false).expect("no addresses")
    }

    #[test]
    fn a_port_asked_for_is_bound_once_and_shared() {
        let mut s = empty();
        let port = free_port();
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let (first, bound, new) = {
            let a = s.share(port, lo, 0).expect("share");
            (inode(a.fd), a.bound, a.new)
        };
        assert!(new);
        assert_eq!(bound, SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port));
        // A second worker (or a restart) asking again gets the same socket.
        let again = s.share(port, lo, 1).expect("share again");
        assert_eq!(inode(again.fd), first);
        assert!(!again.new && !again.declared);
        // Another host on the same port is another socket, no probe needed.
        let any = s.share(port, None, 0).expect("wildcard too");
        assert_ne!(inode(any.fd), first);
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("listening");
    }

    #[test]
    fn a_port_held_by_someone_else_is_eaddrinuse() {
        let mut s = empty();
        let foreign = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = foreign.local_addr().expect("addr").port();
        let e = s
            .share(port, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), 0)
            .map(|_| ())
            .expect_err("in use");
        assert_eq!(e.code, "EADDRINUSE", "{e:?}");
        assert!(e.message.contains(&port.to_string()), "{e:?}");
    }

    #[test]
    fn at_most_shared_ports_max_ports_on_request() {
        let mut s = empty();
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut ports = Vec::new();
        while ports.len() < SHARED_PORTS_MAX {
            let port = free_port();
            if ports.contains(&port) {
                continue;
            }
            s.share(port, lo, 0).map(|_| ()).expect("within the limit");
            ports.push(port);
        }
        let e = s
            .share(free_port(), lo, 0)
            .map(|_| ())
            .expect_err("one too many");
        assert_eq!(e.code, "EMFILE", "{e:?}");
        // The ones held are still handed out.
        assert!(s.share(ports[3], lo, 0).is_ok());
    }

    #[test]
    fn privileged_ports_are_refused_to_unprivileged_workers() {
        let mut s = empty();
        s.set_unprivileged_workers(true);
        let e = s.share(80, None, 0).map(|_| ()).expect_err("privileged");
        assert_eq!(e.code, "EACCES", "{e:?}");
        assert!(e.message.contains("--user"), "{e:?}");
    }

    #[test]
    fn the_port_var_socket_moves_to_the_host_the_app_names() {
        let port = free_port();
        let mut s =
            Sockets::bind(&[Addr::AnyPort(port)], Layout::Shared, 1, "$PORT", true).expect("bind");
        let before = inode(s.fds_for(0).expect("fds")[0].fd);
        // No host: the wildcard itself, unmoved.
        let same = s.share(port, None, 0).expect("share");
        assert!(same.declared && same.moved_from.is_none());
        assert_eq!(inode(same.fd), before);
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let moved = s.share(port, lo, 0).expect("move");
        assert!(moved.declared);
        assert!(moved.moved_from.is_some());
        assert_eq!(
            moved.bound,
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)
        );
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("loopback answers");
        let refused = std::net::TcpStream::connect(("::1", port)).map(|_| ());
        assert!(refused.is_err(), "the wildcard socket is gone");
        // New workers get the moved socket as fd 3, host and all.
        let info = &s.fds_for(0).expect("fds")[0];
        assert_eq!(info.host.as_deref(), Some("127.0.0.1"));
        assert!(!info.implicit);
        // A second host on that port is added beside it, once.
        let v6 = s
            .share(port, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)), 0)
            .expect("::1 too");
        assert!(!v6.declared && v6.new);
        std::net::TcpStream::connect(("::1", port)).expect("::1 answers now");
    }

    #[test]
    fn per_worker_sockets_of_the_port_var_move_together() {
        let port = free_port();
        let mut s = Sockets::bind(&[Addr::AnyPort(port)], Layout::PerWorker, 2, "$PORT", true)
            .expect("bind");
        s.steer(&[0, 1]).expect("steer");
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let moved = s.share(port, lo, 1).expect("move");
        assert!(moved.moved_from.is_some());
        let slot1 = inode(moved.fd);
        // Slot 0 asks too: its own socket, at the new host; no second move.
        let zero = s.share(port, lo, 0).expect("slot 0");
        assert!(zero.moved_from.is_none());
        assert_ne!(inode(zero.fd), slot1);
        assert_eq!(zero.bound.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        for f in s.fds_for(1).expect("fds") {
            assert_eq!(f.host.as_deref(), Some("127.0.0.1"));
        }
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("loopback answers");
        assert!(std::net::TcpStream::connect(("::1", port)).is_err());
    }

    #[test]
    fn a_listen_address_from_the_operator_is_not_moved() {
        let port = free_port();
        let mut s = Sockets::bind(&[Addr::AnyPort(port)], Layout::Shared, 1, "--listen", false)
            .expect("bind");
        let got = s
            .share(port, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), 0)
            .expect("share");
        assert!(got.declared && got.moved_from.is_none());
        assert_eq!(got.bound.port(), port);
        assert!(got.bound.ip().is_unspecified());
    }
}
