//! sd_notify for workers that are not Node: a datagram socket in the
//! abstract namespace (nothing on disk, so a read-only root filesystem is
//! fine), named in `NOTIFY_SOCKET`. `READY=1` marks the sender's worker
//! ready (with --wait-ready); `STOPPING=1` is logged. The kernel tells us the
//! sender's pid (SO_PASSCRED), and its process group tells us the worker, so
//! a shell wrapper's child may notify for the worker it runs under.

use nix::sys::socket::{
    bind, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

pub struct NotifySocket {
    fd: OwnedFd,
    /// The value of NOTIFY_SOCKET: `@` and the abstract name.
    pub address: String,
}

/// One datagram: the sender's pid and its `KEY=VALUE` lines.
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

    /// Every datagram waiting, with its sender.
    pub fn recv(&self) -> Vec<Notification> {
        let mut out = Vec::new();
        loop {
            let mut buf = [0u8; 4096];
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
}
