//! Listening sockets pminit owns and hands to its workers.
//!
//! pminit binds every `--listen` address before any worker starts, so a bind
//! failure is a start-up error, and keeps its own copy for its whole life, so
//! a connection the kernel has queued survives any worker's exit.
//!
//! Two layouts:
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

use crate::steer;
use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrIn, SockaddrIn6, UnixAddr,
};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

/// What `--listen` accepts, for error messages.
pub const ADDR_FORMS: &str =
    "PORT, HOST:PORT, [V6]:PORT or unix:PATH (HOST an IP address, * or localhost; PORT 1-65535)";

/// Node's default, and enough for bursts of new connections.
const BACKLOG: i32 = 511;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    /// `PORT` or `*:PORT`: every interface, IPv6 and IPv4 when the host has
    /// IPv6, else IPv4.
    AnyPort(u16),
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::AnyPort(p) => write!(f, "{p}"),
            Addr::Tcp(sa) => write!(f, "{sa}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

fn port(s: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        Ok(p) => Err(format!("port {p} is out of range 1-65535")),
        Err(_) => Err(format!("expected {ADDR_FORMS}")),
    }
}

/// Parses one `--listen` value; the error says what is wrong with it.
pub fn parse_addr(s: &str) -> Result<Addr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a path, as in unix:/run/app.sock".to_string());
        }
        return Ok(Addr::Unix(PathBuf::from(path)));
    }
    if !s.contains(':') {
        return port(s).map(Addr::AnyPort);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, p) = rest
            .split_once("]:")
            .ok_or_else(|| format!("expected {ADDR_FORMS}"))?;
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv6 address"))?;
        return Ok(Addr::Tcp(SocketAddr::V6(SocketAddrV6::new(
            ip,
            port(p)?,
            0,
            0,
        ))));
    }
    let (host, p) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("expected {ADDR_FORMS}"))?;
    let p = port(p)?;
    let ip: IpAddr = match host {
        "*" | "" => return Ok(Addr::AnyPort(p)),
        // A static glibc cannot resolve names (no NSS); this one is certain.
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h if h.contains(':') => {
            return Err(format!("write an IPv6 address in brackets: [{h}]:{p}"))
        }
        h => h.parse().map_err(|_| {
            format!("{h:?} is not an IP address (pminit does not resolve host names)")
        })?,
    };
    Ok(Addr::Tcp(SocketAddr::new(ip, p)))
}

/// Whether two `--listen` addresses would take the same port (or path):
/// the same address; a wildcard and any address of its family; `[::]` (and
/// a plain PORT, which binds it) dual-stack, so also every IPv4 address.
fn overlap(a: &Addr, b: &Addr) -> bool {
    // (port, ip) where None is a dual-stack wildcard.
    fn tcp(a: &Addr) -> Option<(u16, Option<IpAddr>)> {
        match a {
            Addr::AnyPort(p) => Some((*p, None)),
            Addr::Tcp(sa) if sa.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => {
                Some((sa.port(), None))
            }
            // A v4-mapped v6 address is that v4 address.
            Addr::Tcp(SocketAddr::V6(v6)) => Some((
                v6.port(),
                Some(
                    v6.ip()
                        .to_ipv4_mapped()
                        .map_or(IpAddr::V6(*v6.ip()), IpAddr::V4),
                ),
            )),
            Addr::Tcp(sa) => Some((sa.port(), Some(sa.ip()))),
            Addr::Unix(_) => None,
        }
    }
    match (a, b) {
        (Addr::Unix(x), Addr::Unix(y)) => x == y,
        _ => match (tcp(a), tcp(b)) {
            (Some((pa, ia)), Some((pb, ib))) if pa == pb => match (ia, ib) {
                (None, _) | (_, None) => true,
                (Some(x), Some(y)) => {
                    x == y
                        || (x.is_unspecified() && x.is_ipv4() == y.is_ipv4())
                        || (y.is_unspecified() && x.is_ipv4() == y.is_ipv4())
                }
            },
            _ => false,
        },
    }
}

/// Refuses two `--listen` addresses that would take the same port: pminit
/// would bind both (SO_REUSEPORT), and the kernel would split connections
/// between them at random. The error names both.
pub fn check_overlaps(addrs: &[Addr]) -> Result<(), String> {
    for (i, a) in addrs.iter().enumerate() {
        if let Some(b) = addrs[i + 1..].iter().find(|b| overlap(a, b)) {
            return Err(format!(
                "{a} and {b} overlap (both would take {}); give each address once",
                match a {
                    Addr::Unix(p) => format!("{}", p.display()),
                    Addr::AnyPort(p) => format!("port {p}"),
                    Addr::Tcp(sa) => format!("port {}", sa.port()),
                }
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Shared,
    PerWorker,
    /// PerWorker sockets steered by the client's source address.
    Sticky,
}

/// One `--listen` address and the socket(s) bound to it.
struct Listener {
    addr: Addr,
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
}

/// What a Node worker's preload needs to know about one fd.
pub struct FdInfo {
    pub fd: RawFd,
    pub port: Option<u16>,
    pub host: Option<String>,
    pub path: Option<String>,
}

fn tcp_socket(sa: SocketAddr, dual_stack: bool) -> nix::Result<OwnedFd> {
    let family = match sa {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    match sa {
        SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?,
        SocketAddr::V6(v6) => {
            if dual_stack {
                setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
            }
            bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?
        }
    }
    listen(&fd, Backlog::new(BACKLOG)?)?;
    Ok(fd)
}

/// Whether another socket already holds `sa`: a bind without SO_REUSEPORT
/// (SO_REUSEADDR only, so connections in TIME_WAIT do not count) fails with
/// EADDRINUSE when any listener is bound there, SO_REUSEPORT or not. Our
/// own SO_REUSEPORT bind would join such a listener's group silently and
/// split its connections with it. The probe socket is closed at once.
fn probe(sa: SocketAddr, dual_stack: bool) -> nix::Result<()> {
    let family = match sa {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    match sa {
        SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4)),
        SocketAddr::V6(v6) => {
            if dual_stack {
                setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
            }
            bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))
        }
    }
}

/// Binds `addr` (TCP); for AnyPort, dual-stack [::] where IPv6 exists.
/// With `probe_first`, fails with EADDRINUSE when someone else holds it.
fn bind_tcp(addr: &Addr, probe_first: bool) -> nix::Result<(OwnedFd, SocketAddr)> {
    let bind_one = |sa: SocketAddr, dual_stack: bool| -> nix::Result<OwnedFd> {
        if probe_first {
            probe(sa, dual_stack)?;
        }
        tcp_socket(sa, dual_stack)
    };
    match addr {
        Addr::AnyPort(p) => {
            let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, *p, 0, 0));
            match bind_one(v6, true) {
                Ok(fd) => Ok((fd, v6)),
                Err(nix::errno::Errno::EAFNOSUPPORT) | Err(nix::errno::Errno::EADDRNOTAVAIL) => {
                    let v4 = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, *p));
                    bind_one(v4, false).map(|fd| (fd, v4))
                }
                Err(e) => Err(e),
            }
        }
        Addr::Tcp(sa) => bind_one(*sa, false).map(|fd| (fd, *sa)),
        Addr::Unix(_) => Err(nix::errno::Errno::EINVAL),
    }
}

/// A bind error as the user should read it.
fn bind_error(e: nix::errno::Errno) -> String {
    match e {
        e @ nix::errno::Errno::EADDRINUSE => format!(
            "{e}: another process or socket already listens there (pminit shares a port only among its own workers)"
        ),
        e => e.to_string(),
    }
}

fn bind_unix(path: &std::path::Path) -> io::Result<OwnedFd> {
    // A socket file left by an earlier run would make bind fail; anything
    // else at that path is not ours to remove.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    listen(&fd, Backlog::new(BACKLOG)?)?;
    Ok(fd)
}

impl Sockets {
    /// Binds every address before any worker starts: per-worker layout, one
    /// socket per slot. The error names the address.
    /// `source` names where the addresses came from (`--listen`, `PORT`).
    pub fn bind(
        addrs: &[Addr],
        layout: Layout,
        slots: usize,
        source: &str,
    ) -> Result<Sockets, String> {
        let mut listeners = Vec::new();
        for addr in addrs {
            let fail = |e: &dyn fmt::Display| format!("{source} {addr}: cannot bind: {e}");
            let tcp_fail = |e: nix::errno::Errno| fail(&bind_error(e));
            let mut l = Listener {
                addr: addr.clone(),
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
        Ok(Sockets { listeners, layout })
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
    pub fn steer(&self, live: &[usize]) -> io::Result<()> {
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
                // the most slots there have been: see README "Sticky
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

    #[test]
    fn addresses() {
        let v4 = |s: &str| Addr::Tcp(s.parse().expect("valid"));
        let table: &[(&str, Result<Addr, &str>)] = &[
            ("3000", Ok(Addr::AnyPort(3000))),
            ("*:80", Ok(Addr::AnyPort(80))),
            (":80", Ok(Addr::AnyPort(80))),
            ("127.0.0.1:3000", Ok(v4("127.0.0.1:3000"))),
            ("0.0.0.0:8080", Ok(v4("0.0.0.0:8080"))),
            ("localhost:3000", Ok(v4("127.0.0.1:3000"))),
            ("[::1]:3000", Ok(v4("[::1]:3000"))),
            ("[::]:443", Ok(v4("[::]:443"))),
            ("unix:/run/app.sock", Ok(Addr::Unix("/run/app.sock".into()))),
            ("0", Err("out of range")),
            ("65536", Err("out of range")),
            ("abc", Err("PORT, HOST:PORT")),
            ("", Err("PORT, HOST:PORT")),
            ("1.2.3.4:", Err("PORT, HOST:PORT")),
            ("1.2.3.4:99999", Err("out of range")),
            ("example.com:80", Err("does not resolve host names")),
            ("::1:3000", Err("brackets")),
            ("[::1]3000", Err("PORT, HOST:PORT")),
            ("[zz]:3000", Err("not an IPv6 address")),
            ("unix:", Err("needs a path")),
        ];
        for (input, want) in table {
            match (parse_addr(input), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{input:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{input:?}: {got}"),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn overlapping_addresses() {
        let a = |s: &str| parse_addr(s).expect("valid");
        let table: &[(&str, &str, bool)] = &[
            ("3000", "3000", true),
            ("3000", "127.0.0.1:3000", true),
            ("3000", "[::1]:3000", true),
            ("0.0.0.0:3000", "127.0.0.1:3000", true),
            ("[::]:3000", "0.0.0.0:3000", true),
            ("[::]:3000", "127.0.0.1:3000", true),
            ("[::]:3000", "[::1]:3000", true),
            ("127.0.0.1:3000", "127.0.0.1:3000", true),
            ("[::ffff:127.0.0.1]:3000", "127.0.0.1:3000", true),
            ("[::ffff:127.0.0.1]:3000", "0.0.0.0:3000", true),
            ("unix:/run/a.sock", "unix:/run/a.sock", true),
            ("3000", "3001", false),
            ("127.0.0.1:3000", "127.0.0.2:3000", false),
            ("0.0.0.0:3000", "[::1]:3000", false),
            ("[::1]:3000", "127.0.0.1:3000", false),
            ("unix:/run/a.sock", "unix:/run/b.sock", false),
            ("unix:/run/3000", "3000", false),
        ];
        for (x, y, want) in table {
            assert_eq!(overlap(&a(x), &a(y)), *want, "{x} vs {y}");
            assert_eq!(overlap(&a(y), &a(x)), *want, "{y} vs {x}");
        }
        let err = check_overlaps(&[a("8080"), a("9090"), a("127.0.0.1:8080")]).unwrap_err();
        assert!(err.contains("8080 and 127.0.0.1:8080"), "{err}");
        assert!(check_overlaps(&[a("8080"), a("9090")]).is_ok());
    }
}
