//! A pseudo-terminal for the interactive (Ctrl-C) tests.

use super::*;

/// A TCP port free on 127.0.0.1 right now (the kernel picks it).
/// A pseudo-terminal pair: (master, slave path).
fn openpty() -> (std::os::fd::OwnedFd, String) {
    use std::os::fd::FromRawFd;
    // SAFETY: posix_openpt returns a new fd we own; grantpt/unlockpt take it;
    // ptsname's static buffer is copied out at once.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(m >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let name = std::ffi::CStr::from_ptr(libc::ptsname(m))
            .to_string_lossy()
            .into_owned();
        (std::os::fd::OwnedFd::from_raw_fd(m), name)
    }
}

/// A command on a terminal, as `docker run -it` or a login shell would have
/// it: a session leader whose stdin, stdout and stderr are a pty.
pub struct OnPty {
    child: Child,
    keys: std::fs::File,
    lines: Receiver<String>,
    /// Everything read so far.
    pub seen: String,
}

impl OnPty {
    pub fn spawn(mut cmd: Command) -> OnPty {
        let (master, slave) = openpty();
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&slave)
            .expect("open pty slave");
        cmd.stdin(Stdio::from(tty.try_clone().expect("dup")))
            .stdout(Stdio::from(tty.try_clone().expect("dup")))
            .stderr(Stdio::from(tty));
        // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start on a pty");
        let keys = std::fs::File::from(master.try_clone().expect("dup master"));
        let (tx, lines) = channel();
        thread::spawn(move || {
            for line in BufReader::new(std::fs::File::from(master)).lines() {
                // EIO once every slave fd is closed.
                let Ok(l) = line else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        OnPty {
            child,
            keys,
            lines,
            seen: String::new(),
        }
    }

    /// Waits until `text` has appeared `n` times; returns the last line read.
    pub fn wait_for(&mut self, text: &str, n: usize) -> String {
        let end = Instant::now() + DEADLINE;
        let mut last = String::new();
        while self.seen.matches(text).count() < n {
            let l = self
                .lines
                .recv_timeout(end.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    panic!("no {text:?} x{n} on the terminal; saw:\n{}", self.seen)
                });
            self.seen.push_str(&l);
            self.seen.push('\n');
            last = l;
        }
        last
    }

    /// Types `bytes` at the terminal.
    pub fn type_keys(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.keys.write_all(bytes).expect("type at the terminal");
    }

    /// Waits (with the deadline) for the command to exit.
    pub fn wait(self) -> ExitStatus {
        let (tx, rx) = channel();
        let mut child = self.child;
        thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        rx.recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("still running after {DEADLINE:?}; saw:\n{}", self.seen))
            .expect("wait")
    }
}
