//! Loopback HTTP for the cluster and reload tests: free ports, single
//! requests, the Node test apps, and `Load`, closed-loop clients bounded in
//! count and time that count every failed request.

use super::*;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// One HTTP/1.1 GET of / on a new connection to 127.0.0.1:`port`; the body,
/// or why it failed. Bounded by a timeout.
pub fn http_get(port: u16) -> Result<String, String> {
    http_get_path(port, "/")
}

/// A GET of `path` sent on a new connection to 127.0.0.1:`port` (one
/// request, `Connection: close`), the reply to be read with a timeout.
fn send_get(port: u16, path: &str) -> Result<std::net::TcpStream, String> {
    use std::io::Write;
    let timeout = Duration::from_secs(10);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    Ok(s)
}

/// As `http_get`, for `path`.
pub fn http_get_path(port: u16, path: &str) -> Result<String, String> {
    let mut s = send_get(port, path)?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or(format!("no header end: {reply:?}"))?;
    if head.split_whitespace().nth(1) != Some("200") {
        return Err(format!("status: {head:?}"));
    }
    Ok(body.to_string())
}

/// pminit with `args`, run in `dir` with `PORT` set to `port`, as a Node
/// app expects.
pub fn start_in(mode: Mode, dir: &std::path::Path, port: u16, args: &[&str]) -> Run {
    Run::start_with(
        mode,
        args,
        Options {
            cwd: Some(dir.to_path_buf()),
            env: vec![("PORT".into(), port.to_string())],
            ..Options::default()
        },
    )
}

/// As `start_in`, with `node` first in PATH (pminit's command finds it).
pub fn start_node(
    mode: Mode,
    dir: &std::path::Path,
    port: u16,
    node: &NodeVersion,
    args: &[&str],
) -> Run {
    Run::start_with(
        mode,
        args,
        Options {
            cwd: Some(dir.to_path_buf()),
            env: vec![("PORT".into(), port.to_string()), node.path_env()],
            ..Options::default()
        },
    )
}

/// The directory of the Node test apps, with its node_modules installed.
pub fn node_app(test: &str) -> Option<PathBuf> {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "node-app"]
        .iter()
        .collect();
    let ok = dir.join("node_modules/express/package.json").is_file();
    require(ok, test, "npm ci in tests/node-app (express)").then_some(dir)
}

/// Closed-loop HTTP load on 127.0.0.1: `clients` threads, each sending one
/// request at a time, either on a new connection per request or on a
/// keep-alive connection (reconnecting when the server says
/// `Connection: close`, as a browser or wrk does). Bounded: it stops when
/// told, or after `LOAD_LIMIT` requests or `DEADLINE * 3` per client.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<thread::JoinHandle<LoadReport>>,
}

#[derive(Default, Debug)]
pub struct LoadReport {
    pub ok: u64,
    pub failures: Vec<String>,
    pub pids: std::collections::BTreeSet<i32>,
}

pub const LOAD_LIMIT: u64 = 200_000;

/// One response on `s`: (body, server asked to close).
fn read_response(s: &mut std::net::TcpStream) -> Result<(String, bool), String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => return Err(format!("closed after {} bytes of response", head.len())),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(format!("read after {} bytes: {e}", head.len())),
        }
        if head.len() > 16 * 1024 {
            return Err("header too long".into());
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if head.split_whitespace().nth(1) != Some("200") {
        return Err(format!("status: {:?}", head.lines().next()));
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no content-length")?;
    let close = head
        .lines()
        .any(|l| l.starts_with("connection:") && l.contains("close"));
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).map_err(|e| format!("body: {e}"))?;
    Ok((String::from_utf8_lossy(&body).into_owned(), close))
}

impl Load {
    pub fn start(port: u16, clients: usize, keep_alive: bool) -> Load {
        Load::start_path(port, clients, keep_alive, "/")
    }

    /// As `start`, with GET `path`.
    pub fn start_path(port: u16, clients: usize, keep_alive: bool, path: &str) -> Load {
        use std::io::Write;
        let keep_alive_request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes();
        let close_request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .into_bytes();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                let request = if keep_alive {
                    keep_alive_request.clone()
                } else {
                    close_request.clone()
                };
                thread::spawn(move || {
                    let mut report = LoadReport::default();
                    let end = Instant::now() + DEADLINE * 3;
                    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                    let mut conn: Option<std::net::TcpStream> = None;
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && Instant::now() < end
                        && n < LOAD_LIMIT
                    {
                        n += 1;
                        let s = match conn.take() {
                            Some(s) => s,
                            None => match std::net::TcpStream::connect_timeout(
                                &addr,
                                Duration::from_secs(10),
                            ) {
                                Ok(s) => s,
                                Err(e) => {
                                    report.failures.push(format!("connect: {e}"));
                                    continue;
                                }
                            },
                        };
                        let mut s = s;
                        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        if let Err(e) = s.write_all(&request) {
                            report.failures.push(format!("write: {e}"));
                            continue;
                        }
                        match read_response(&mut s) {
                            Ok((body, close)) => {
                                report.ok += 1;
                                if let Some(pid) = body
                                    .split_whitespace()
                                    .find_map(|w| w.strip_prefix("pid="))
                                    .and_then(|p| p.parse().ok())
                                {
                                    report.pids.insert(pid);
                                }
                                if keep_alive && !close {
                                    conn = Some(s);
                                }
                            }
                            Err(e) => report.failures.push(e),
                        }
                    }
                    report
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops the clients and adds up what they saw.
    pub fn finish(self) -> LoadReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut total = LoadReport::default();
        for t in self.threads {
            let r = t.join().expect("load thread");
            total.ok += r.ok;
            total.failures.extend(r.failures);
            total.pids.extend(r.pids);
        }
        total
    }
}

/// One GET of `path` on a new connection to 127.0.0.1:`port` that reads
/// the response by its Content-Length (not to the end of the stream): the
/// body, or why it failed. For a server that may stop right after it
/// answers (a worker about to hang).
pub fn http_get_answer(port: u16, path: &str) -> Result<String, String> {
    let mut s = send_get(port, path)?;
    read_response(&mut s).map(|(body, _)| body)
}

/// The whole page of a `--metrics` endpoint on 127.0.0.1:`port`.
pub fn scrape_metrics(port: u16) -> Result<String, String> {
    http_get_path(port, "/metrics")
}

/// The value of the sample whose name and labels are exactly `series`.
pub fn metric_sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// GET /heap until `want` distinct workers answered (bounded attempts):
/// pid -> heap_size_limit.
pub fn heap_limits(port: u16, want: usize) -> std::collections::BTreeMap<i64, u64> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..1000 {
        if seen.len() >= want {
            break;
        }
        if let Ok(body) = http_get_path(port, "/heap") {
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            seen.insert(
                v["pid"].as_i64().expect("pid"),
                v["heap_size_limit"].as_u64().expect("limit"),
            );
        }
    }
    seen
}

/// GET /pid until `n` distinct pids answered (bounded attempts).
pub fn distinct_pids(port: u16, n: usize) -> std::collections::BTreeSet<i64> {
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..1000 {
        if pids.len() >= n {
            break;
        }
        if let Ok(body) = http_get_path(port, "/pid") {
            pids.insert(field(&body, "pid").into());
        }
    }
    pids
}
