//! The one blocking wait of a turn: every fd pminit reads, each under a
//! token that says what it is, so readiness is looked up by meaning and
//! never by an index kept in step across files.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use crate::{log, sys};

/// What a polled fd is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// The signalfd.
    Signals,
    /// The sd_notify socket.
    Notify,
    /// The control server's n-th fd (its listener, then its clients).
    Control(usize),
    /// The metrics server's n-th fd.
    Metrics(usize),
    /// The IPC channel of the worker with this pid.
    Channel(i32),
}

/// The fds of one turn, each with its token; `(fd, also POLLOUT)`.
#[derive(Default)]
pub struct PollSet<'a> {
    fds: Vec<(Option<BorrowedFd<'a>>, bool)>,
    tokens: Vec<Token>,
}

impl<'a> PollSet<'a> {
    pub fn add(&mut self, token: Token, fd: Option<BorrowedFd<'a>>, write: bool) {
        self.fds.push((fd, write));
        self.tokens.push(token);
    }

    /// A server's fds, numbered in its own order (`Control(n)`, `Metrics(n)`).
    pub fn add_all(&mut self, token: fn(usize) -> Token, fds: Vec<(Option<BorrowedFd<'a>>, bool)>) {
        for (n, (fd, write)) in fds.into_iter().enumerate() {
            self.add(token(n), fd, write);
        }
    }

    /// Blocks until an fd is ready or `timeout` passes (None: no timeout).
    /// A failed poll is logged and counts every fd as ready: each reader
    /// is non-blocking, so a spurious turn costs one read each, never a
    /// hang.
    pub fn wait(self, timeout: Option<Duration>) -> Ready {
        let readable = sys::poll(&self.fds, timeout).unwrap_or_else(|e: io::Error| {
            log::warn(&format!("poll failed: {e}"));
            vec![true; self.fds.len()]
        });
        Ready {
            tokens: self
                .tokens
                .into_iter()
                .zip(readable)
                .filter_map(|(t, r)| r.then_some(t))
                .collect(),
        }
    }
}

/// The tokens whose fds were ready.
pub struct Ready {
    tokens: Vec<Token>,
}

impl Ready {
    pub fn has(&self, token: Token) -> bool {
        self.tokens.contains(&token)
    }

    /// A server's readiness in its own order, `n` fds long.
    pub fn of(&self, token: fn(usize) -> Token, n: usize) -> Vec<bool> {
        (0..n).map(|i| self.has(token(i))).collect()
    }

    /// The workers whose IPC channel is readable.
    pub fn channels(&self) -> impl Iterator<Item = i32> + '_ {
        self.tokens.iter().filter_map(|t| match t {
            Token::Channel(pid) => Some(*pid),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn readiness_is_found_by_token() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        let (c, _d) = UnixStream::pair().expect("pair");
        b.write_all(b"x").expect("write");
        let mut set = PollSet::default();
        set.add(Token::Signals, Some(c.as_fd()), false);
        set.add_all(
            Token::Control,
            vec![(Some(c.as_fd()), false), (Some(a.as_fd()), false)],
        );
        set.add(Token::Channel(42), Some(a.as_fd()), false);
        set.add(Token::Notify, None, false);
        let ready = set.wait(Some(Duration::ZERO));
        assert!(!ready.has(Token::Signals));
        assert!(!ready.has(Token::Notify), "no fd, never ready");
        assert_eq!(ready.of(Token::Control, 2), vec![false, true]);
        assert_eq!(ready.channels().collect::<Vec<_>>(), vec![42]);
    }
}
