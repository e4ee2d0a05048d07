//! The control protocol: one request per connection, one JSON object on
//! one line; replies are JSON lines. Also who may ask what, and where the
//! socket lives. Pure types and functions, tested over socketpairs.

use serde::{Deserialize, Serialize};
use std::io;
use std::os::unix::fs::MetadataExt;

use crate::core::{ScaleTo, WorkerState};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum Request {
    Status,
    Reload,
    Scale { to: ScaleTo },
    Ready,
    Prestop,
}

impl Request {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Reload => "reload",
            Request::Scale { .. } => "scale",
            Request::Ready => "ready",
            Request::Prestop => "prestop",
        }
    }

    /// Reload, scale and prestop change what runs; status and ready only look.
    pub fn changes_state(&self) -> bool {
        matches!(
            self,
            Request::Reload | Request::Scale { .. } | Request::Prestop
        )
    }
}

/// Written with serde; read with `Reply::parse`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Status(Status),
    Ready {
        ready: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    /// A step of a reload: the log line, as text and as the JSON event.
    Progress {
        message: String,
        event: serde_json::Value,
    },
    /// The end of a request that does something.
    Done {
        ok: bool,
        message: String,
    },
    /// The request was malformed, refused, or cannot be served.
    Error {
        message: String,
    },
}

impl Reply {
    /// One reply line, read by its `reply` field. By hand: serde's
    /// internally tagged enums buffer every field through serde's `Content`
    /// tree, and that reader alone was 12.5 KB of the static binary
    /// (docs/size.md). Unknown fields are ignored, as serde did.
    pub fn parse(line: &[u8]) -> Result<Reply, String> {
        use serde_json::Value;
        let v: Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        let tag = v
            .get("reply")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("a {tag:?} reply without the string {k:?}"))
        };
        let flag = |k: &str| {
            v.get(k)
                .and_then(Value::as_bool)
                .ok_or_else(|| format!("a {tag:?} reply without the boolean {k:?}"))
        };
        match tag.as_str() {
            "status" => serde_json::from_value(v)
                .map(Reply::Status)
                .map_err(|e| e.to_string()),
            "ready" => Ok(Reply::Ready {
                ready: flag("ready")?,
                why: v.get("why").and_then(Value::as_str).map(str::to_string),
            }),
            "progress" => Ok(Reply::Progress {
                message: text("message")?,
                event: v
                    .get("event")
                    .cloned()
                    .ok_or("a \"progress\" reply without \"event\"")?,
            }),
            "done" => Ok(Reply::Done {
                ok: flag("ok")?,
                message: text("message")?,
            }),
            "error" => Ok(Reply::Error {
                message: text("message")?,
            }),
            other => Err(format!("an unknown reply {other:?}")),
        }
    }
}

/// `pminit status --json` prints this object: the field names are stable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub pid: i32,
    pub version: String,
    /// running, draining (prestop or --stop-delay) or stopping.
    pub phase: String,
    pub ready: bool,
    pub instances: usize,
    pub generation: u64,
    pub reloading: bool,
    pub workers: Vec<Row>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub slot: usize,
    pub pid: Option<i32>,
    pub generation: u64,
    pub state: WorkerState,
    pub restarts: u32,
    pub uptime_ms: Option<u64>,
    /// Resident memory of the worker's process group.
    pub rss_bytes: Option<u64>,
    /// CPU time of the worker's process group so far.
    pub cpu_ms: Option<u64>,
    /// CPU use since the previous `status` (or since the worker started).
    pub cpu_percent: Option<f64>,
    /// Liveness: how long ago its event loop last answered a ping (None
    /// before its first answer, or when it takes no part).
    #[serde(default)]
    pub answered_ms_ago: Option<u64>,
    /// How long its event loop took to answer the last ping.
    #[serde(default)]
    pub loop_delay_ms: Option<u64>,
    /// Its V8 heap in use and its limit, from the preload's last answer.
    #[serde(default)]
    pub heap_used_bytes: Option<u64>,
    #[serde(default)]
    pub heap_limit_bytes: Option<u64>,
}

/// Who is on the other end, from SO_PEERCRED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// As seen in pminit's PID namespace: 0 when the peer is outside it.
    pub pid: i32,
    pub uid: u32,
}

/// Whether `peer` may make `request` of a pminit running as `my_uid`.
pub fn authorize(peer: Peer, request: &Request, my_uid: u32) -> Result<(), String> {
    if peer.pid == 0 {
        return Err("refused: the client is outside this container's PID namespace".into());
    }
    if request.changes_state() && peer.uid != 0 && peer.uid != my_uid {
        return Err(format!(
            "refused: only root or uid {my_uid} (pminit's own) may {}; you are uid {}",
            request.name(),
            peer.uid
        ));
    }
    Ok(())
}

/// Decodes one request line (without its newline).
pub fn decode(line: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(line).map_err(|e| {
        format!(
            "malformed request ({e}): expected one JSON object on one line, such as {{\"verb\":\"status\"}}"
        )
    })
}

/// The abstract name of the control socket of pminit `pid` in the PID
/// namespace `ns`.
pub fn socket_name(ns: u64, pid: u32) -> String {
    format!("pminit/control/{ns}/{pid}")
}

/// The inode of this process's PID namespace: what tells containers apart.
pub fn pid_namespace() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/self/ns/pid")?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reply_reads_back_as_written_and_bad_ones_say_why() {
        let row = Row {
            slot: 1,
            pid: Some(12),
            generation: 3,
            state: WorkerState::Ready,
            restarts: 2,
            uptime_ms: Some(5),
            rss_bytes: None,
            cpu_ms: Some(10),
            cpu_percent: Some(1.5),
            answered_ms_ago: None,
            loop_delay_ms: Some(1),
            heap_used_bytes: Some(7),
            heap_limit_bytes: None,
        };
        let replies = [
            Reply::Status(Status {
                pid: 1,
                version: "0.1.0".into(),
                phase: "running".into(),
                ready: true,
                instances: 2,
                generation: 3,
                reloading: false,
                workers: vec![row],
            }),
            Reply::Ready {
                ready: true,
                why: None,
            },
            Reply::Ready {
                ready: false,
                why: Some("starting".into()),
            },
            Reply::Progress {
                message: "worker 0 ready".into(),
                event: serde_json::json!({"event": "worker_ready", "slot": 0}),
            },
            Reply::Done {
                ok: true,
                message: "reloaded".into(),
            },
            Reply::Error {
                message: "no such verb".into(),
            },
        ];
        for r in replies {
            let line = serde_json::to_vec(&r).expect("json");
            assert_eq!(
                Reply::parse(&line),
                Ok(r.clone()),
                "{}",
                String::from_utf8_lossy(&line)
            );
        }
        // Fields pminit may add later are ignored; null is None.
        assert_eq!(
            Reply::parse(br#"{"reply":"ready","ready":false,"why":null,"new":1}"#),
            Ok(Reply::Ready {
                ready: false,
                why: None
            })
        );
        for (line, why) in [
            (
                &br#"{"reply":"done","ok":"yes","message":"m"}"#[..],
                "the boolean \"ok\"",
            ),
            (br#"{"reply":"error"}"#, "the string \"message\""),
            (
                br#"{"reply":"progress","message":"m"}"#,
                "without \"event\"",
            ),
            (br#"{"reply":"later"}"#, "unknown reply \"later\""),
            (br#"{"ready":true}"#, "unknown reply \"\""),
            (br#"{"reply":"status"}"#, "missing field"),
            (b"not json", "expected"),
        ] {
            let e = Reply::parse(line).expect_err("refused");
            assert!(e.contains(why), "{}: {e}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn requests_on_the_wire() {
        let table: &[(&str, Result<Request, ()>)] = &[
            (r#"{"verb":"status"}"#, Ok(Request::Status)),
            (r#"{"verb":"reload"}"#, Ok(Request::Reload)),
            (r#"{"verb":"ready"}"#, Ok(Request::Ready)),
            (r#"{"verb":"prestop"}"#, Ok(Request::Prestop)),
            (
                r#"{"verb":"scale","to":{"to":3}}"#,
                Ok(Request::Scale { to: ScaleTo::To(3) }),
            ),
            (
                r#"{"verb":"scale","to":{"add":2}}"#,
                Ok(Request::Scale {
                    to: ScaleTo::Add(2),
                }),
            ),
            (r#"{"verb":"scale"}"#, Err(())),
            // Unknown fields are ignored: a newer client may send more.
            (r#"{"verb":"status","extra":1}"#, Ok(Request::Status)),
            (r#"{"verb":"reboot"}"#, Err(())),
            (r#""status""#, Err(())),
            ("status", Err(())),
            ("", Err(())),
            ("\u{0}\u{1}", Err(())),
        ];
        for (line, want) in table {
            assert_eq!(decode(line.as_bytes()).map_err(|_| ()), *want, "{line}");
        }
        // What the client sends is what the server reads.
        for r in [
            Request::Status,
            Request::Scale {
                to: ScaleTo::Remove(1),
            },
        ] {
            let line = serde_json::to_vec(&r).expect("plain enum");
            assert_eq!(decode(&line), Ok(r));
        }
    }

    #[test]
    fn who_may_do_what() {
        let root = Peer { pid: 7, uid: 0 };
        let me = Peer { pid: 7, uid: 1000 };
        let other = Peer { pid: 7, uid: 65534 };
        let outside = Peer { pid: 0, uid: 0 };
        assert!(authorize(root, &Request::Reload, 1000).is_ok());
        assert!(authorize(me, &Request::Prestop, 1000).is_ok());
        assert!(authorize(other, &Request::Status, 1000).is_ok());
        assert!(authorize(other, &Request::Ready, 0).is_ok());
        let e = authorize(other, &Request::Reload, 0).expect_err("not root");
        assert!(
            e.contains("only root or uid 0") && e.contains("65534"),
            "{e}"
        );
        assert!(authorize(
            other,
            &Request::Scale {
                to: ScaleTo::Add(1)
            },
            0
        )
        .is_err());
        let e = authorize(outside, &Request::Status, 0).expect_err("outside");
        assert!(e.contains("outside this container's PID namespace"), "{e}");
    }
}
