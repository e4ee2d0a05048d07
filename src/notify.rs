//! sd_notify for workers that are not Node: a datagram socket in the
//! abstract namespace (nothing on disk, so a read-only root filesystem is
//! fine), named in `NOTIFY_SOCKET`. `READY=1` marks the sender's worker
//! ready (with --wait-ready); `STOPPING=1` is logged. The kernel tells us the
//! sender's pid (SO_PASSCRED), and its process group tells us the worker, so
//! a shell wrapper's child may notify for the worker it runs under.
//!
//! Who may notify: a worker, or a process in a worker's process group
//! (workers lead their own groups). Everything else is dropped unread and
//! counted: a datagram without credentials, one whose sender pid is 0 (it is
//! outside our PID namespace: another container of the pod sees our
//! abstract name), one from any other process. At most `NOTIFY_PER_WAKE`
//! datagrams are read per wake-up (see src/limits.rs); the rest wait for
//! the next turn.

use nix::sys::socket::{
    bind, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::limits::{NOTIFY_MAX_DATAGRAM, NOTIFY_PER_WAKE};

pub struct NotifySocket {
    fd: OwnedFd,
    /// The value of NOTIFY_SOCKET: `@` and the abstract name.
    pub address: String,
}

/// One datagram: the sender's pid (0: unknown or outside our PID
/// namespace) and its `KEY=VALUE` lines.
pub struct Notification {
    pub pid: i32,
    pub lines: Vec<String>,
}

impl NotifySocket {
    pub fn bind() -> io::Result<NotifySocket> {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        setsockopt(&fd, sockopt::PassCred, &true)?;
        // Unique per pminit: pid, plus the time for runs in one network
        // namespace (docker --network host shares the abstract namespace).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("pminit/{}/{nanos:x}/notify", std::process::id());
        bind(fd.as_raw_fd(), &UnixAddr::new_abstract(name.as_bytes())?)?;
        Ok(NotifySocket {
            fd,
            address: format!("@{name}"),
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The datagrams waiting, `NOTIFY_PER_WAKE` at most, with their senders.
    pub fn recv(&self) -> Vec<Notification> {
        let mut out = Vec::new();
        while out.len() < NOTIFY_PER_WAKE {
            let mut buf = [0u8; NOTIFY_MAX_DATAGRAM];
            let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<UnixAddr>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(m) => m,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return out,
            };
            let mut pid = 0;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmCredentials(cred) = c {
                        pid = cred.pid();
                    }
                }
            }
            let len = msg.bytes;
            let text = String::from_utf8_lossy(&buf[..len]);
            out.push(Notification {
                pid,
                lines: text.lines().map(str::to_string).collect(),
            });
        }
        out
    }
}

/// Which worker a datagram from `pid` speaks for: the worker itself, or the
/// worker whose process group `pid` is in (`pgid` looks that up). Err says
/// why it is refused.
pub fn worker_of(
    pid: i32,
    workers: &[i32],
    pgid: impl Fn(i32) -> Option<i32>,
) -> Result<i32, &'static str> {
    if pid <= 0 {
        return Err("from outside pminit's PID namespace (or without credentials)");
    }
    if workers.contains(&pid) {
        return Ok(pid);
    }
    match pgid(pid) {
        Some(g) if workers.contains(&g) => Ok(g),
        _ => Err("from a process that is not a worker nor in a worker's process group"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn datagrams_arrive_with_the_senders_pid() {
        let sock = NotifySocket::bind().expect("bind");
        assert!(sock.address.starts_with("@pminit/"));
        let client = UnixDatagram::unbound().expect("socket");
        let name = &sock.address[1..];
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
        client
            .send_to_addr(b"READY=1\nSTATUS=up", &addr)
            .expect("send");
        let got = sock.recv();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].pid, std::process::id() as i32);
        assert_eq!(got[0].lines, ["READY=1", "STATUS=up"]);
        assert!(sock.recv().is_empty());
    }

    #[test]
    fn a_flood_is_read_a_bounded_batch_per_wake_up() {
        // The kernel queues only ~10 datagrams per socket; a sender that
        // keeps up refills it as fast as we read, so the cap is what ends a
        // wake-up.
        let sock = NotifySocket::bind().expect("bind");
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(&sock.address.as_bytes()[1..])
                .expect("name");
        const SENT: usize = 2000;
        let sender = std::thread::spawn(move || {
            let client = UnixDatagram::unbound().expect("socket");
            for _ in 0..SENT {
                client.send_to_addr(b"STOPPING=1", &addr).expect("send");
            }
        });
        let mut got = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while got < SENT && std::time::Instant::now() < deadline {
            let batch = sock.recv();
            assert!(batch.len() <= NOTIFY_PER_WAKE);
            got += batch.len();
        }
        sender.join().expect("sender");
        assert_eq!(got, SENT);
    }

    #[test]
    fn only_workers_and_their_process_groups_may_notify() {
        let workers = [10, 20];
        let pgid = |pid| match pid {
            11 => Some(10),
            30 => Some(30),
            _ => None,
        };
        assert_eq!(worker_of(10, &workers, pgid), Ok(10));
        assert_eq!(worker_of(11, &workers, pgid), Ok(10));
        for refused in [0, -1, 30, 99] {
            assert!(worker_of(refused, &workers, pgid).is_err(), "{refused}");
        }
    }
}
