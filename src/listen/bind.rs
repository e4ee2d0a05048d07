//! Binding: a TCP socket with SO_REUSEADDR + SO_REUSEPORT (probed first
//! without SO_REUSEPORT, so a port someone else holds is an error, not a
//! silent share), a unix socket, and errors that name what failed.

use super::*;

/// The errno names a listen can fail with, as Node spells them.
pub(super) fn errno_name(e: nix::errno::Errno) -> &'static str {
    use nix::errno::Errno::*;
    match e {
        EADDRINUSE => "EADDRINUSE",
        EADDRNOTAVAIL => "EADDRNOTAVAIL",
        EACCES => "EACCES",
        EPERM => "EPERM",
        EAFNOSUPPORT => "EAFNOSUPPORT",
        EMFILE => "EMFILE",
        ENFILE => "ENFILE",
        ENOBUFS => "ENOBUFS",
        ENOMEM => "ENOMEM",
        _ => "EINVAL",
    }
}

/// Stops a listening socket in every process that holds it (the workers
/// inherited copies): shutdown(SHUT_RD) on a TCP listener closes its
/// listen queue, so new connections to its address are refused. pminit's
/// copy closes when `fd` is dropped.
pub(super) fn retire(fd: OwnedFd) {
    // SAFETY: shutdown on an fd we own; an error leaves it as it was.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RD) };
}

pub(super) fn tcp_socket(sa: SocketAddr, dual_stack: bool) -> nix::Result<OwnedFd> {
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
pub(super) fn probe(sa: SocketAddr, dual_stack: bool) -> nix::Result<()> {
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
pub(super) fn bind_tcp(addr: &Addr, probe_first: bool) -> nix::Result<(OwnedFd, SocketAddr)> {
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
pub(super) fn bind_error(e: nix::errno::Errno) -> String {
    match e {
        e @ nix::errno::Errno::EADDRINUSE => format!(
            "{e}: another process or socket already listens there (pminit shares a port only among its own workers)"
        ),
        e => e.to_string(),
    }
}

pub(super) fn bind_unix(path: &std::path::Path) -> io::Result<OwnedFd> {
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
