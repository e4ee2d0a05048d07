//! The Node IPC channel of one worker: an `AF_UNIX` `SOCK_STREAM` socketpair
//! whose other end the worker finds in `NODE_CHANNEL_FD`. Node speaks one
//! JSON value per line (`process.send('ready')` arrives as `"ready"\n`).
//!
//! Rules the child's side imposes (checked on Node 20 to 24; docs/architecture.md
//! lists them with the other facts the design rests on): a line that is
//! not valid JSON, or an empty one, crashes the Node child, so pminit writes
//! only whole, valid JSON lines; and pminit keeps its end open for the
//! worker's whole life, because a `process.send()` after the parent closed
//! crashes the child. What comes the other way may be anything: malformed,
//! binary or oversized lines are reported and dropped, never fatal.
//!
//! A worker may also write as fast as it can. One wake-up reads at most
//! `IPC_READ_PER_WAKE` bytes and stops after the chunk that brought
//! `IPC_MESSAGES_PER_WAKE` messages; lines are decoded chunk by chunk as they
//! are read, and only a partial line (at most `IPC_MAX_LINE` bytes) is kept
//! between reads. What is left in the socket wakes the level-triggered poll
//! again next turn, after signals and reaping (see src/limits.rs).

use serde::{Deserialize, Serialize};
use std::io;
use std::io::IoSlice;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};

use crate::limits::{
    IPC_CHUNK, IPC_MAX_LINE as MAX_LINE, IPC_MESSAGES_PER_WAKE, IPC_READ_PER_WAKE,
};
use crate::sys::{self, Io};

/// What a worker can tell pminit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `process.send('ready')`: pm2's wait_ready convention.
    Ready,
    /// The preload: the app started listening on a pminit socket.
    Listening,
    /// The preload asks for a shared socket on a TCP port the app listens
    /// on: `{"pminit":"listen","id":N,"port":P,"host":IP|null}`. `request`
    /// is the port and host, or why they are not acceptable (answered as an
    /// error, never fatal).
    Listen {
        id: u64,
        request: Result<(u16, Option<IpAddr>), String>,
    },
    /// The preload's answer to a liveness ping (and its hello at start):
    /// the event loop runs. Carries the V8 heap's use and limit when given.
    Alive { heap: Option<Heap> },
    /// The preload saw the worker's memory pass its report mark after a
    /// garbage collection: pminit should look now (it measures itself).
    Grew,
    /// Valid JSON pminit has no use for (Node-internal `NODE_*` messages,
    /// the app's own). Ignored.
    Other,
}

/// A worker's V8 heap, as its preload reports it (`v8.getHeapStatistics()`:
/// `used_heap_size`, `heap_size_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heap {
    pub used: u64,
    pub limit: u64,
}

/// What pminit writes on a worker's channel, one JSON line each (typed, so
/// no ad-hoc JSON reaches a worker, whose Node crashes on a bad line). The
/// `cmd`s that start with `NODE_` go to the preload's 'internalMessage'
/// listener, never to the app's own `process.on('message')`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ToWorker {
    /// pm2's `'shutdown'` message (--send-shutdown): the bare string.
    Shutdown(&'static str),
    /// A liveness ping, or a listen request refused.
    Internal(Internal),
    /// Node's handle-passing envelope: the socket travels with this line
    /// (SCM_RIGHTS) and `msg` reaches the preload with it.
    Handle {
        cmd: &'static str,
        #[serde(rename = "type")]
        kind: &'static str,
        msg: Internal,
    },
}

/// pminit's own messages to the preload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "cmd")]
pub enum Internal {
    /// Liveness: the preload answers `{"pminit":"alive",...}` from the
    /// event loop.
    #[serde(rename = "NODE_PMINIT_PING")]
    Ping,
    /// The answer to listen request `id`: the socket's address (the fd
    /// comes with the line), or why not.
    #[serde(rename = "NODE_PMINIT_LISTEN")]
    Listen {
        id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        declared: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<Refusal>,
    },
}

/// Why a listen request was refused: an errno name and a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl ToWorker {
    pub fn shutdown() -> ToWorker {
        ToWorker::Shutdown("shutdown")
    }

    pub fn ping() -> ToWorker {
        ToWorker::Internal(Internal::Ping)
    }

    /// The socket for listen request `id` (send it with the fd).
    pub fn socket(id: u64, address: String, port: u16, declared: bool) -> ToWorker {
        ToWorker::Handle {
            cmd: "NODE_HANDLE",
            kind: "net.Native",
            msg: Internal::Listen {
                id,
                address: Some(address),
                port: Some(port),
                declared: Some(declared),
                error: None,
            },
        }
    }

    pub fn refused(id: u64, code: &'static str, message: String) -> ToWorker {
        ToWorker::Internal(Internal::Listen {
            id,
            address: None,
            port: None,
            declared: None,
            error: Some(Refusal { code, message }),
        })
    }
}

/// The wire forms, decoded with serde.
#[derive(Deserialize)]
#[serde(untagged)]
enum Wire {
    Text(String),
    // Before `Report`, which would match it too: only a message with an id
    // can be answered.
    Request {
        pminit: String,
        id: serde_json::Value,
        #[serde(default)]
        port: serde_json::Value,
        #[serde(default)]
        host: serde_json::Value,
    },
    Report {
        pminit: String,
        #[serde(default)]
        heap_used: serde_json::Value,
        #[serde(default)]
        heap_limit: serde_json::Value,
    },
    Any(serde::de::IgnoredAny),
}

/// Decodes one line (without its newline).
pub fn decode(line: &[u8]) -> Result<Message, String> {
    match serde_json::from_slice::<Wire>(line) {
        Ok(Wire::Text(t)) if t == "ready" => Ok(Message::Ready),
        Ok(Wire::Report { pminit, .. }) if pminit == "listening" => Ok(Message::Listening),
        Ok(Wire::Report { pminit, .. }) if pminit == "memory" => Ok(Message::Grew),
        Ok(Wire::Report {
            pminit,
            heap_used,
            heap_limit,
        }) if pminit == "alive" => Ok(Message::Alive {
            heap: match (heap_used.as_u64(), heap_limit.as_u64()) {
                (Some(used), Some(limit)) if limit > 0 => Some(Heap { used, limit }),
                _ => None,
            },
        }),
        Ok(Wire::Request {
            pminit,
            id,
            port,
            host,
        }) if pminit == "listen" => match id.as_u64().filter(|&i| i <= MAX_SAFE_INTEGER) {
            Some(id) => Ok(Message::Listen {
                id,
                request: listen_request(&port, &host),
            }),
            None => Err("a listen request without a valid id".to_string()),
        },
        Ok(_) => Ok(Message::Other),
        Err(_) => Err(format!("a malformed line of {} bytes", line.len())),
    }
}

/// JavaScript's largest exact integer: ids beyond it could not round-trip.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A listen request's port and host, checked: a port 1-65535 and an IP
/// address or null (the preload resolves names the way Node's listen does;
/// pminit, a static binary, resolves none).
fn listen_request(
    port: &serde_json::Value,
    host: &serde_json::Value,
) -> Result<(u16, Option<IpAddr>), String> {
    let port = port
        .as_u64()
        .filter(|p| (1..=65535).contains(p))
        .ok_or_else(|| format!("port {} is not 1-65535", clip(&port.to_string())))?;
    let host = match host {
        serde_json::Value::Null => None,
        serde_json::Value::String(h) => Some(
            h.parse::<IpAddr>()
                .map_err(|_| format!("host {:?} is not an IP address", clip(h)))?,
        ),
        other => return Err(format!("host {} is not a string", clip(&other.to_string()))),
    };
    Ok((port as u16, host))
}

/// At most 64 characters of something a worker sent, for a message.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Splits a byte stream into lines, skipping (and reporting) overlong ones.
#[derive(Default)]
pub struct Lines {
    buf: Vec<u8>,
    /// Inside a line longer than MAX_LINE: drop bytes up to its newline.
    skipping: bool,
}

impl Lines {
    /// Feeds `bytes`; returns each complete line's decoded message or the
    /// reason it was dropped.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Result<Message, String>> {
        let mut out = Vec::new();
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            let complete = chunk.last() == Some(&b'\n');
            let body = if complete {
                &chunk[..chunk.len() - 1]
            } else {
                chunk
            };
            if self.skipping {
                if complete {
                    self.skipping = false;
                }
                continue;
            }
            if self.buf.len() + body.len() > MAX_LINE {
                out.push(Err(format!("a line over {MAX_LINE} bytes")));
                self.buf.clear();
                self.skipping = !complete;
                continue;
            }
            self.buf.extend_from_slice(body);
            if complete {
                if !self.buf.is_empty() {
                    out.push(decode(&self.buf));
                }
                self.buf.clear();
            }
        }
        out
    }
}

/// pminit's end of one worker's channel.
pub struct Channel {
    fd: OwnedFd,
    lines: Lines,
    /// The worker closed its end (it exited, or never used it).
    pub closed: bool,
    /// Lines dropped so far, to keep a flood from flooding the log.
    pub dropped: u64,
}

/// A new channel: (pminit's end, the worker's end). Both close-on-exec; the
/// spawn moves the worker's end to its fd number, which clears that.
pub fn pair() -> io::Result<(Channel, OwnedFd)> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    // The worker's end must block like a normal fd: Node expects that.
    // SAFETY: F_GETFL/F_SETFL on an fd we own.
    unsafe {
        let fl = libc::fcntl(theirs.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(theirs.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
    }
    Ok((
        Channel {
            fd: ours,
            lines: Lines::default(),
            closed: false,
            dropped: 0,
        },
        theirs,
    ))
}

impl Channel {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads what is there, within this wake-up's budget; returns the
    /// decoded messages and drop reasons in order.
    pub fn read(&mut self) -> Vec<Result<Message, String>> {
        let mut out = Vec::new();
        let mut buf = [0u8; IPC_CHUNK];
        let mut budget = IPC_READ_PER_WAKE;
        while budget > 0 && out.len() < IPC_MESSAGES_PER_WAKE {
            let want = budget.min(buf.len());
            match sys::read_some(self.fd.as_fd(), &mut buf[..want]) {
                Io::Moved(n) => {
                    budget -= n;
                    out.extend(self.lines.feed(&buf[..n]));
                }
                Io::WouldBlock => return out,
                Io::Closed | Io::Failed(_) => {
                    self.closed = true;
                    return out;
                }
            }
        }
        out
    }

    /// Writes one JSON value as one line, whole or not at all.
    pub fn send(&self, message: &ToWorker) -> io::Result<()> {
        self.send_line(message, None)
    }

    /// Writes one JSON value as one line with `fd` attached (SCM_RIGHTS),
    /// as Node's `subprocess.send(msg, handle)` does: the worker's Node
    /// takes the fd as the handle of the `NODE_HANDLE` line it came with.
    pub fn send_with_fd(&self, message: &ToWorker, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.send_line(message, Some(fd))
    }

    fn send_line(&self, message: &ToWorker, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
        line.push(b'\n');
        if let Some(fd) = fd {
            let fds = [fd.as_raw_fd()];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            let iov = [IoSlice::new(&line)];
            // Whole or nothing, as below: the fd travels with the first byte.
            let n = sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            )?;
            return if n == line.len() {
                Ok(())
            } else {
                Err(io::Error::new(io::ErrorKind::WriteZero, "partial write"))
            };
        }
        // A stream socket takes a small write whole or not at all when its
        // buffer has room; if it has none the worker is not reading, and a
        // partial line would later crash it, so give up instead.
        match sys::send_some(self.fd.as_fd(), &line) {
            Io::Moved(n) if n == line.len() => Ok(()),
            Io::Failed(e) => Err(io::Error::from(e)),
            Io::WouldBlock => Err(io::Error::from(nix::errno::Errno::EAGAIN)),
            _ => Err(io::Error::new(io::ErrorKind::WriteZero, "partial write")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn decoding() {
        let table: &[(&[u8], Result<Message, ()>)] = &[
            (b"\"ready\"", Ok(Message::Ready)),
            (b"{\"pminit\":\"listening\"}", Ok(Message::Listening)),
            (b"\"online\"", Ok(Message::Other)),
            (b"{\"cmd\":\"NODE_HANDLE_ACK\"}", Ok(Message::Other)),
            (b"{\"pminit\":\"other\"}", Ok(Message::Other)),
            (
                b"{\"pminit\":\"alive\",\"heap_used\":5,\"heap_limit\":9}",
                Ok(Message::Alive {
                    heap: Some(Heap { used: 5, limit: 9 }),
                }),
            ),
            (b"{\"pminit\":\"alive\"}", Ok(Message::Alive { heap: None })),
            (b"{\"pminit\":\"memory\",\"rss\":1}", Ok(Message::Grew)),
            // A worker's junk in the numbers is no heap, still an answer.
            (
                b"{\"pminit\":\"alive\",\"heap_used\":-1,\"heap_limit\":\"x\"}",
                Ok(Message::Alive { heap: None }),
            ),
            (
                b"{\"pminit\":\"alive\",\"heap_used\":1,\"heap_limit\":0}",
                Ok(Message::Alive { heap: None }),
            ),
            (b"42", Ok(Message::Other)),
            (
                b"{\"pminit\":\"listen\",\"id\":7,\"port\":9100,\"host\":null}",
                Ok(Message::Listen {
                    id: 7,
                    request: Ok((9100, None)),
                }),
            ),
            (
                b"{\"pminit\":\"listen\",\"id\":1,\"port\":80,\"host\":\"::1\"}",
                Ok(Message::Listen {
                    id: 1,
                    request: Ok((80, Some("::1".parse().expect("ip")))),
                }),
            ),
            // A listen request without an id cannot be answered: dropped.
            (b"{\"pminit\":\"listen\",\"port\":9100}", Ok(Message::Other)),
            (b"{\"pminit\":\"listen\",\"id\":-1,\"port\":9100}", Err(())),
            (b"{\"pminit\":\"listen\",\"id\":9007199254740992}", Err(())),
            (b"ready", Err(())),
            (b"{\"unterminated\"", Err(())),
            (b"\xff\xfe\x00binary", Err(())),
        ];
        for (line, want) in table {
            assert_eq!(
                decode(line).map_err(|_| ()),
                *want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn junk_listen_requests_are_answerable_errors() {
        let req = |port: &str, host: &str| {
            let line =
                format!("{{\"pminit\":\"listen\",\"id\":3,\"port\":{port},\"host\":{host}}}");
            match decode(line.as_bytes()) {
                Ok(Message::Listen { id: 3, request }) => request,
                other => panic!("{line}: {other:?}"),
            }
        };
        for (port, host, want) in [
            ("0", "null", "not 1-65535"),
            ("65536", "null", "not 1-65535"),
            ("-80", "null", "not 1-65535"),
            ("80.5", "null", "not 1-65535"),
            ("\"80\"", "null", "not 1-65535"),
            ("null", "null", "not 1-65535"),
            ("80", "\"localhost\"", "not an IP address"),
            ("80", "\"no.such.host.invalid\"", "not an IP address"),
            ("80", "\"fe80::1%eth0\"", "not an IP address"),
            ("80", "42", "not a string"),
            ("80", "[\"127.0.0.1\"]", "not a string"),
        ] {
            let err = req(port, host).expect_err(port);
            assert!(err.contains(want), "{port} {host}: {err}");
            assert!(err.len() < 120, "clipped: {err}");
        }
        let long = format!("\"{}\"", "x".repeat(10_000));
        assert!(req("80", &long).expect_err("long").len() < 120);
        assert_eq!(
            req("443", "\"0.0.0.0\""),
            Ok((443, Some("0.0.0.0".parse().expect("ip"))))
        );
    }

    #[test]
    fn what_pminit_writes_is_the_json_the_preload_reads() {
        let line = |m: ToWorker| serde_json::to_string(&m).expect("json");
        assert_eq!(line(ToWorker::shutdown()), r#""shutdown""#);
        assert_eq!(line(ToWorker::ping()), r#"{"cmd":"NODE_PMINIT_PING"}"#);
        assert_eq!(
            line(ToWorker::refused(3, "EACCES", "no".into())),
            r#"{"cmd":"NODE_PMINIT_LISTEN","id":3,"error":{"code":"EACCES","message":"no"}}"#
        );
        assert_eq!(
            line(ToWorker::socket(4, "127.0.0.1".into(), 9100, false)),
            r#"{"cmd":"NODE_HANDLE","type":"net.Native","msg":{"cmd":"NODE_PMINIT_LISTEN","id":4,"address":"127.0.0.1","port":9100,"declared":false}}"#
        );
    }

    #[test]
    fn a_socket_travels_with_its_line() {
        use std::os::unix::net::UnixListener;
        let (ours, theirs) = pair().expect("socketpair");
        let dir = std::env::temp_dir().join(format!("pminit-ipc-fd-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let listener = UnixListener::bind(&dir).expect("bind");
        let answer = ToWorker::socket(1, "::".into(), 80, true);
        ours.send_with_fd(&answer, listener.as_fd()).expect("send");
        let mut buf = [0u8; 256];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(
            theirs.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .expect("recvmsg");
        let fds: Vec<_> = msg
            .cmsgs()
            .expect("cmsgs")
            .filter_map(|c| match c {
                nix::sys::socket::ControlMessageOwned::ScmRights(f) => Some(f),
                _ => None,
            })
            .flatten()
            .collect();
        let want = b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":{\"cmd\":\"NODE_PMINIT_LISTEN\",\"id\":1,\"address\":\"::\",\"port\":80,\"declared\":true}}\n";
        assert_eq!(msg.bytes, want.len());
        assert_eq!(fds.len(), 1);
        // SAFETY: closing the fd recvmsg just gave us.
        unsafe { libc::close(fds[0]) };
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn lines_split_across_reads_and_overlong_ones_are_skipped() {
        let mut l = Lines::default();
        assert!(l.feed(b"\"rea").is_empty());
        assert_eq!(
            l.feed(b"dy\"\n\n{\"pminit\":\"listening\"}\n"),
            vec![Ok(Message::Ready), Ok(Message::Listening)]
        );
        let huge = vec![b'x'; MAX_LINE + 10];
        let out = l.feed(&huge);
        assert_eq!(out.len(), 1);
        assert!(out[0].as_ref().is_err_and(|e| e.contains("over")));
        // The rest of that line is dropped; the next line is fine.
        assert!(l.feed(b"yyyy").is_empty());
        assert_eq!(l.feed(b"zz\n\"ready\"\n"), vec![Ok(Message::Ready)]);
        assert!(l.feed(b"garbage\n")[0].is_err());
    }

    #[test]
    fn a_flood_is_read_in_bounded_slices_and_nothing_is_lost() {
        let (mut ours, theirs) = pair().expect("socketpair");
        let mut worker = UnixStream::from(theirs);
        worker.set_nonblocking(true).expect("nonblocking");
        // Fill the socket: far more than one wake-up's budget.
        let chunk = "1\n".repeat(1024);
        let mut sent = 0usize;
        while let Ok(n) = worker.write(chunk.as_bytes()) {
            assert_eq!(n % 2, 0, "whole lines only in this test");
            sent += n / 2;
        }
        assert!(sent > IPC_MESSAGES_PER_WAKE * 2, "sent {sent}");
        let mut got = 0;
        let mut turns = 0;
        loop {
            let batch = ours.read();
            if batch.is_empty() {
                break;
            }
            // One chunk past the cap at most.
            assert!(
                batch.len() < IPC_MESSAGES_PER_WAKE + IPC_CHUNK / 2,
                "{}",
                batch.len()
            );
            assert!(batch.iter().all(|m| *m == Ok(Message::Other)));
            got += batch.len();
            turns += 1;
        }
        assert_eq!(got, sent);
        assert!(turns > 1);
    }

    #[test]
    fn channel_over_a_socketpair() {
        let (mut ours, theirs) = pair().expect("socketpair");
        let mut worker = UnixStream::from(theirs);
        worker
            .write_all(b"\"ready\"\nnot json\n{\"pminit\":\"list")
            .expect("write");
        let got = ours.read();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], Ok(Message::Ready));
        assert!(got[1].is_err());
        worker.write_all(b"ening\"}\n").expect("write");
        assert_eq!(ours.read(), vec![Ok(Message::Listening)]);
        ours.send(&ToWorker::shutdown()).expect("send");
        let mut buf = [0u8; 11];
        worker.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"\"shutdown\"\n");
        drop(worker);
        assert!(ours.read().is_empty());
        assert!(ours.closed);
    }
}
