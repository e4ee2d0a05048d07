//! The verbs' side: `pminit status|reload|scale|ready|prestop` parse their
//! command line, find the running pminit of this PID namespace, send one
//! request and turn the replies into output and an exit code.

use std::io::{self, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::time::Duration;

use super::protocol::*;
use crate::core::ScaleTo;
use crate::exit;

const EXIT_FAILED: u8 = exit::FAILED as u8;
const EXIT_USAGE: u8 = exit::USAGE as u8;
use crate::parse;

const VERB_USAGE: &str = "usage: pminit status [--json] | reload | scale N|+K|-K | ready | prestop [--delay DURATION]  (each also takes --pid PID)";

/// A parsed verb command line.
#[derive(Debug, PartialEq)]
pub struct Invocation {
    pub request: Request,
    pub json: bool,
    pub delay: Duration,
    pub pid: Option<u32>,
}

/// The default of `prestop --delay`: long enough for the endpoint removal to
/// reach every node's proxy in a typical cluster.
pub const DEFAULT_PRESTOP_DELAY: Duration = Duration::from_secs(5);

/// Parses `args` after the verb. Err is the one-line usage error.
pub fn parse_verb(verb: &str, args: &[String]) -> Result<Option<Invocation>, String> {
    let mut json = false;
    let mut delay = DEFAULT_PRESTOP_DELAY;
    let mut pid = None;
    let mut scale: Option<ScaleTo> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{verb} {flag}: missing value"))
        };
        match a.as_str() {
            "--help" | "-h" => return Ok(None),
            "--json" if verb == "status" => json = true,
            "--delay" if verb == "prestop" => {
                let v = value("--delay")?;
                delay = parse::duration(&v).ok_or_else(|| {
                    format!("prestop --delay: invalid value {v:?}: expected a duration such as 5s, 1500ms, 1m or 1500 (ms)")
                })?;
            }
            "--pid" => {
                let v = value("--pid")?;
                pid = Some(v.parse::<u32>().ok().filter(|&p| p > 0).ok_or_else(|| {
                    format!(
                        "{verb} --pid: invalid value {v:?}: expected the pid of a running pminit"
                    )
                })?);
            }
            v if verb == "scale" && scale.is_none() => {
                scale = Some(parse_scale(v).ok_or_else(|| {
                    format!("scale: invalid value {v:?}: expected N (1-1024), +K or -K")
                })?);
            }
            other => {
                return Err(format!(
                    "{verb}: unexpected argument {other:?}; {VERB_USAGE}"
                ))
            }
        }
    }
    let request = match verb {
        "status" => Request::Status,
        "reload" => Request::Reload,
        "ready" => Request::Ready,
        "prestop" => Request::Prestop,
        "scale" => Request::Scale {
            to: scale.ok_or_else(|| {
                "scale: missing N|+K|-K: the number of workers, or how many to add or remove"
                    .to_string()
            })?,
        },
        _ => return Err(VERB_USAGE.to_string()),
    };
    Ok(Some(Invocation {
        request,
        json,
        delay,
        pid,
    }))
}

fn parse_scale(v: &str) -> Option<ScaleTo> {
    let count = |s: &str| {
        s.parse::<usize>()
            .ok()
            .filter(|n| (1..=crate::core::MAX_INSTANCES).contains(n))
    };
    if let Some(k) = v.strip_prefix('+') {
        count(k).map(ScaleTo::Add)
    } else if let Some(k) = v.strip_prefix('-') {
        count(k).map(ScaleTo::Remove)
    } else {
        count(v).map(ScaleTo::To)
    }
}

/// The pids of the pminit processes with a control socket in this PID
/// namespace, from /proc/net/unix (which lists abstract names).
fn find_servers(ns: u64) -> Vec<u32> {
    let prefix = format!("@pminit/control/{ns}/");
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = table
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(7)?
                .strip_prefix(&prefix)?
                .parse()
                .ok()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn connect(pid: Option<u32>) -> Result<UnixStream, String> {
    let ns = pid_namespace().map_err(|e| format!("cannot read /proc/self/ns/pid: {e}"))?;
    let pid = match pid {
        Some(p) => p,
        None => match find_servers(ns).as_slice() {
            [one] => *one,
            // /proc/net/unix unreadable or empty: the usual PID 1.
            [] => 1,
            many => {
                let list: Vec<String> = many.iter().map(u32::to_string).collect();
                return Err(format!(
                    "several pminit processes here (pids {}): choose one with --pid",
                    list.join(", ")
                ));
            }
        },
    };
    let name = socket_name(ns, pid);
    let addr = SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| format!("bad socket name: {e}"))?;
    UnixStream::connect_addr(&addr).map_err(|e| {
        format!("cannot reach pminit (pid {pid}) in this container: {e}; is this container's PID 1 pminit?")
    })
}

/// Sends the request, then hands each reply line to `each` until it
/// returns Some(exit code).
fn exchange(inv: &Invocation, each: &mut dyn FnMut(Reply) -> Option<u8>) -> Result<u8, String> {
    let mut stream = connect(inv.pid)?;
    let mut line = serde_json::to_vec(&inv.request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut pending = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Err("pminit closed the connection without an answer".into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read the answer: {e}")),
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let reply = Reply::parse(&line[..end])
                .map_err(|e| format!("cannot understand pminit's answer: {e}"))?;
            if let Some(code) = each(reply) {
                return Ok(code);
            }
        }
    }
}

/// Runs `pminit <verb> ARGS...`; returns the exit code.
pub fn client_main(verb: &str, args: &[String]) -> u8 {
    let inv = match parse_verb(verb, args) {
        Ok(Some(inv)) => inv,
        Ok(None) => {
            println!("{VERB_USAGE}");
            return 0;
        }
        Err(message) => {
            eprintln!("pminit: {message}");
            return EXIT_USAGE;
        }
    };
    let result = exchange(&inv, &mut |reply| answer(&inv, reply));
    match result {
        Ok(0) if inv.request == Request::Prestop => {
            // The point of the hook: keep serving while the endpoint removal
            // reaches every proxy, then let the orchestrator send TERM.
            std::thread::sleep(inv.delay);
            0
        }
        Ok(code) => code,
        Err(message) => {
            eprintln!("pminit {verb}: {message}");
            EXIT_FAILED
        }
    }
}

/// Prints one reply; Some(exit code) when it is the last.
fn answer(inv: &Invocation, reply: Reply) -> Option<u8> {
    match reply {
        Reply::Status(s) => {
            if inv.json {
                println!("{}", serde_json::to_string(&s).unwrap_or_default());
            } else {
                print!("{}", status_table(&s));
            }
            Some(0)
        }
        Reply::Ready { ready: true, .. } => {
            println!("ready");
            Some(0)
        }
        Reply::Ready { ready: false, why } => {
            println!("not ready: {}", why.unwrap_or_default());
            Some(EXIT_FAILED)
        }
        Reply::Progress { message, .. } => {
            println!("{message}");
            None
        }
        Reply::Done { ok, message } => {
            if ok {
                // A reload's last progress line already said it finished.
                if inv.request != Request::Reload {
                    println!("{message}");
                }
                Some(0)
            } else {
                eprintln!("pminit {}: {message}", inv.request.name());
                Some(EXIT_FAILED)
            }
        }
        Reply::Error { message } => {
            eprintln!("pminit {}: {message}", inv.request.name());
            Some(EXIT_FAILED)
        }
    }
}

/// `pm2 ls` for pminit: one row per worker.
pub fn status_table(s: &Status) -> String {
    let mut out = format!(
        "pminit pid {}, {}, {} worker(s), generation {}{}, {}\n",
        s.pid,
        s.phase,
        s.instances,
        s.generation,
        if s.reloading { " (reloading)" } else { "" },
        if s.ready { "ready" } else { "not ready" }
    );
    out.push_str(&format!(
        "{:<5} {:<8} {:<4} {:<9} {:<9} {:<9} {:<10} {:>6} {:>9} {:>17}\n",
        "slot", "pid", "gen", "state", "restarts", "uptime", "memory", "cpu", "answered", "heap"
    ));
    for r in &s.workers {
        let dash = || "-".to_string();
        let state = serde_json::to_value(r.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let heap = match (r.heap_used_bytes, r.heap_limit_bytes) {
            (Some(u), Some(l)) => format!("{}/{}", human_size(u), human_size(l)),
            _ => dash(),
        };
        out.push_str(&format!(
            "{:<5} {:<8} {:<4} {:<9} {:<9} {:<9} {:<10} {:>6} {:>9} {:>17}\n",
            r.slot,
            r.pid.map_or_else(dash, |p| p.to_string()),
            r.generation,
            state,
            r.restarts,
            r.uptime_ms.map_or_else(dash, human_duration),
            r.rss_bytes.map_or_else(dash, human_size),
            r.cpu_percent
                .map_or_else(dash, |c| format!("{}%", crate::decimal::fixed_f64(c, 1))),
            r.answered_ms_ago
                .map_or_else(dash, |ms| format!("{}s ago", ms / 1000)),
            heap,
        ));
    }
    out
}

fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn human_size(bytes: u64) -> String {
    format!("{}MiB", crate::decimal::fixed(bytes.into(), 1024 * 1024, 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::WorkerState;

    #[test]
    fn verb_command_lines() {
        let args = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let ok = |verb: &str, a: &[&str]| {
            parse_verb(verb, &args(a))
                .expect("valid")
                .expect("not help")
        };
        assert!(ok("status", &["--json"]).json);
        assert_eq!(ok("status", &["--pid", "42"]).pid, Some(42));
        assert_eq!(ok("prestop", &[]).delay, DEFAULT_PRESTOP_DELAY);
        assert_eq!(
            ok("prestop", &["--delay", "1500ms"]).delay,
            Duration::from_millis(1500)
        );
        for (v, want) in [
            ("3", ScaleTo::To(3)),
            ("+2", ScaleTo::Add(2)),
            ("-1", ScaleTo::Remove(1)),
        ] {
            assert_eq!(ok("scale", &[v]).request, Request::Scale { to: want });
        }
        assert_eq!(parse_verb("ready", &args(&["--help"])), Ok(None));
        let rejected: &[(&str, &[&str], &str)] = &[
            ("scale", &[], "missing N|+K|-K"),
            ("scale", &["0"], "\"0\""),
            ("scale", &["+x"], "expected N (1-1024), +K or -K"),
            ("scale", &["2000"], "\"2000\""),
            ("prestop", &["--delay", "soon"], "prestop --delay"),
            ("prestop", &["--delay"], "missing value"),
            ("status", &["--pid", "0"], "status --pid"),
            ("ready", &["--json"], "unexpected argument \"--json\""),
            ("reload", &["now"], "unexpected argument \"now\""),
        ];
        for (verb, a, needle) in rejected {
            let e = parse_verb(verb, &args(a)).expect_err("rejected");
            assert!(e.contains(needle), "{verb} {a:?}: {e}");
        }
    }

    #[test]
    fn status_table_reads_like_pm2_ls() {
        let s = Status {
            pid: 1,
            version: "0".into(),
            phase: "running".into(),
            ready: true,
            instances: 2,
            generation: 1,
            reloading: false,
            workers: vec![
                Row {
                    slot: 0,
                    pid: Some(12),
                    generation: 1,
                    state: WorkerState::Ready,
                    restarts: 2,
                    uptime_ms: Some(3_723_000),
                    rss_bytes: Some(48 << 20),
                    cpu_ms: Some(10),
                    cpu_percent: Some(1.5),
                    answered_ms_ago: Some(2_500),
                    loop_delay_ms: Some(1),
                    heap_used_bytes: Some(10 << 20),
                    heap_limit_bytes: Some(84 << 20),
                },
                Row {
                    slot: 1,
                    pid: None,
                    generation: 1,
                    state: WorkerState::Backoff,
                    restarts: 5,
                    uptime_ms: None,
                    rss_bytes: None,
                    cpu_ms: None,
                    cpu_percent: None,
                    answered_ms_ago: None,
                    loop_delay_ms: None,
                    heap_used_bytes: None,
                    heap_limit_bytes: None,
                },
            ],
        };
        let t = status_table(&s);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].contains("2 worker(s), generation 1, ready"), "{t}");
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "0",
                "12",
                "1",
                "ready",
                "2",
                "1h2m",
                "48.0MiB",
                "1.5%",
                "2s",
                "ago",
                "10.0MiB/84.0MiB"
            ]
        );
        let row: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            row,
            ["1", "-", "1", "backoff", "5", "-", "-", "-", "-", "-"]
        );
    }
}
