//! The writer behind pminit's log: a line reaches stderr whole, or is
//! dropped and counted; a write never blocks (see the module doc of log).

use super::*;

/// How pminit's lines reach stderr without blocking.
enum Sink {
    /// A non-blocking description of its own (pipe, tty), or a regular file.
    Direct(RawFd),
    /// A socket, or what /proc could not reopen: poll for POLLOUT first.
    PollFirst { fd: RawFd, socket: bool },
    /// fd 2 is not open.
    Nowhere,
}

pub struct Output {
    sink: Sink,
    /// Keeps the reopened description open.
    _own: Option<OwnedFd>,
    /// Lines dropped since the last report.
    pub(super) dropped: u64,
    pub(super) last_drop: Option<Instant>,
}

impl Output {
    /// The way to write to `fd` (stderr) without blocking.
    pub fn open(fd: BorrowedFd<'_>) -> Output {
        let raw = fd.as_raw_fd();
        // SAFETY: fstat writes into the zeroed struct we pass.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above; a closed fd gives -1.
        let (sink, own) = if unsafe { libc::fstat(raw, &mut st) } != 0 {
            (Sink::Nowhere, None)
        } else {
            match st.st_mode & libc::S_IFMT {
                libc::S_IFREG => (Sink::Direct(raw), None),
                libc::S_IFIFO | libc::S_IFCHR => match reopen_nonblocking(raw) {
                    Some(own) => (Sink::Direct(own.as_raw_fd()), Some(own)),
                    None => (
                        Sink::PollFirst {
                            fd: raw,
                            socket: false,
                        },
                        None,
                    ),
                },
                libc::S_IFSOCK => (
                    Sink::PollFirst {
                        fd: raw,
                        socket: true,
                    },
                    None,
                ),
                _ => (
                    Sink::PollFirst {
                        fd: raw,
                        socket: false,
                    },
                    None,
                ),
            }
        };
        Output {
            sink,
            _own: own,
            dropped: 0,
            last_drop: None,
        }
    }

    /// Writes one line (ending in a newline) whole, or drops and counts it.
    /// The "dropped" report goes first once writing works again.
    pub fn line(&mut self, line: &[u8], report: impl FnOnce(u64) -> String) {
        if self.dropped > 0 {
            let r = report(self.dropped);
            if self.try_write(r.as_bytes()) {
                self.dropped = 0;
                self.last_drop = None;
            } else {
                self.drop_one();
                return;
            }
        }
        if !self.try_write(line) {
            self.drop_one();
        }
    }

    pub(super) fn drop_one(&mut self) {
        self.dropped += 1;
        self.last_drop = Some(Instant::now());
    }

    /// Lines dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub(super) fn try_write(&self, line: &[u8]) -> bool {
        let (fd, socket) = match self.sink {
            Sink::Nowhere => return true,
            Sink::Direct(fd) => (fd, false),
            Sink::PollFirst { fd, socket } => {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, zero timeout.
                let r = unsafe { libc::poll(&mut p, 1, 0) };
                if r != 1 || p.revents & libc::POLLOUT == 0 {
                    return false;
                }
                (fd, socket)
            }
        };
        for _ in 0..2 {
            // SAFETY: writing from a buffer of the length we pass.
            let n = unsafe {
                if socket {
                    libc::send(
                        fd,
                        line.as_ptr().cast(),
                        line.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                } else {
                    libc::write(fd, line.as_ptr().cast(), line.len())
                }
            };
            if n >= 0 {
                // Whole: a pipe takes <= PIPE_BUF bytes atomically; a tty or
                // socket may take part, and the rest of one line is not worth
                // blocking for.
                return true;
            }
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return false;
            }
        }
        false
    }
}

/// `/proc/self/fd/N` opened again, write-only and non-blocking: a new open
/// file description of the same pipe or device.
fn reopen_nonblocking(fd: RawFd) -> Option<OwnedFd> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).ok()?;
    // SAFETY: a valid C string; the returned fd is new and ours.
    let new = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    };
    // SAFETY: open returned a new fd that nothing else owns.
    (new >= 0).then(|| unsafe { OwnedFd::from_raw_fd(new) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two-element array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both fds are new and ours.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn read_all(fd: &OwnedFd) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            // SAFETY: reading into a buffer of the length we pass.
            let n = unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            let n = if n < 0 {
                // Not a socket: a non-blocking read of the pipe.
                // SAFETY: as above.
                unsafe {
                    let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
                    libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
                    libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                }
            } else {
                n
            };
            if n <= 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
    }

    #[test]
    fn a_full_pipe_drops_whole_lines_and_the_original_fd_still_blocks() {
        let (r, w) = pipe();
        let mut out = Output::open(w.as_fd());
        assert!(matches!(out.sink, Sink::Direct(fd) if fd != w.as_raw_fd()));
        // The original description is untouched: still blocking.
        // SAFETY: F_GETFL on an fd we own.
        let fl = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(fl & libc::O_NONBLOCK, 0);
        let line = format!("{}\n", "x".repeat(99));
        let report = |n| format!("dropped {n}\n");
        // Far more than a pipe holds (64 KiB): never blocks.
        for _ in 0..2000 {
            out.line(line.as_bytes(), report);
        }
        assert!(out.dropped() > 0);
        // Whole lines only: the flood's, and the reports of what was dropped
        // (a short report may fit where a long line did not).
        let got = String::from_utf8(read_all(&r)).expect("text");
        let mut accounted = out.dropped();
        for l in got.lines() {
            match l.strip_prefix("dropped ") {
                Some(n) => accounted += n.parse::<u64>().expect("a count"),
                None => {
                    assert_eq!(l.len(), 99, "a torn line: {l:?}");
                    accounted += 1;
                }
            }
        }
        assert_eq!(accounted, 2000);
        let dropped = out.dropped();
        out.line(b"next\n", report);
        assert_eq!(out.dropped(), 0);
        assert_eq!(
            read_all(&r),
            format!("dropped {dropped}\nnext\n").as_bytes()
        );
    }

    #[test]
    fn a_socket_is_written_only_when_it_has_room() {
        use std::os::unix::net::UnixStream;
        let (a, b) = UnixStream::pair().expect("socketpair");
        let (a, b) = (OwnedFd::from(a), OwnedFd::from(b));
        let mut out = Output::open(a.as_fd());
        assert!(matches!(out.sink, Sink::PollFirst { socket: true, .. }));
        let line = format!("{}\n", "y".repeat(499));
        for _ in 0..5000 {
            out.line(line.as_bytes(), |n| format!("dropped {n}\n"));
        }
        assert!(out.dropped() > 0);
        let got = read_all(&b);
        assert!(got.len() >= 500 && got.len() % 500 == 0, "{}", got.len());
    }

    #[test]
    fn long_lines_are_capped_to_one_atomic_write() {
        let l = capped(format!("{}\n", "é".repeat(5000)));
        assert!(
            l.len() <= LOG_MAX_LINE && l.ends_with("...\n"),
            "{}",
            l.len()
        );
    }
}
