//! Shared harness for the integration tests: runs the real pminit binary as
//! PID 1 of a fresh PID namespace (`unshare --pid --fork --mount-proc`, needs
//! root) or as a plain child of the test (where it is a subreaper), reads its
//! output line by line, and waits for observable events with deadlines.
//!
//! A test that needs something missing says so loudly on stderr; with
//! `PMINIT_TEST_STRICT=1` (set by .ci/run) it fails instead of skipping.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub const PMINIT: &str = env!("CARGO_BIN_EXE_pminit");
/// Generous: the machine may be busy with other tests. Nothing waits this
/// long unless something is broken.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn fixture(name: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", name]
        .iter()
        .collect();
    p.to_string_lossy().into_owned()
}

/// The real python3 (pyenv's shim would add a process and a second of start-up).
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is needed for the test fixtures");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

fn strict() -> bool {
    std::env::var("PMINIT_TEST_STRICT").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Skips (loudly) or, under PMINIT_TEST_STRICT, fails when `ok` is false.
pub fn require(ok: bool, test: &str, what: &str) -> bool {
    if ok {
        return true;
    }
    if strict() {
        panic!("{test}: needs {what}; PMINIT_TEST_STRICT forbids skipping");
    }
    eprintln!(
        "\n*** SKIPPED {test}: needs {what} (set PMINIT_TEST_STRICT=1 to fail instead) ***\n"
    );
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// PID 1 of a new PID namespace.
    Pid1,
    /// A plain child of the test process: pminit makes itself a subreaper.
    Subreaper,
}

/// Both modes when we are root; the subreaper mode alone (loudly) otherwise.
pub fn modes(test: &str) -> Vec<Mode> {
    if require(is_root(), test, "root for unshare --pid (PID-1 mode)") {
        vec![Mode::Subreaper, Mode::Pid1]
    } else {
        vec![Mode::Subreaper]
    }
}

/// One line of output, tagged with where it came from.
#[derive(Clone, Debug)]
pub enum Line {
    Out(String),
    Err(String),
}

pub struct Run {
    pub mode: Mode,
    /// pid of the process we started (unshare in PID-1 mode, else pminit).
    pub outer_pid: i32,
    lines: Receiver<Line>,
    seen: Arc<Mutex<Vec<Line>>>,
    exit: Receiver<ExitStatus>,
    exited: Option<ExitStatus>,
}

#[derive(Default)]
pub struct Options {
    /// Runs in the test's child just before exec (extra fds, signal state).
    pub pre_exec: Option<Box<dyn FnMut() -> std::io::Result<()> + Send + Sync>>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
}

impl Run {
    pub fn start(mode: Mode, args: &[&str]) -> Run {
        Run::start_with(mode, args, Options::default())
    }

    pub fn start_with(mode: Mode, args: &[&str], opts: Options) -> Run {
        let mut cmd = match mode {
            Mode::Pid1 => {
                let mut c = Command::new("unshare");
                c.args(["--pid", "--fork", "--mount-proc", PMINIT]);
                c
            }
            Mode::Subreaper => Command::new(PMINIT),
        };
        cmd.args(args);
        Run::spawn(mode, cmd, opts)
    }

    /// Runs `cmd` (which runs pminit somehow: docker run, say), reading its
    /// output as `start_with` does.
    pub fn spawn(mode: Mode, mut cmd: Command, opts: Options) -> Run {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .envs(opts.env);
        if let Some(dir) = opts.cwd {
            cmd.current_dir(dir);
        }
        if let Some(f) = opts.pre_exec {
            // SAFETY: the tests' pre_exec closures call only async-signal-safe
            // functions (dup2, sigprocmask, sigaction).
            unsafe { cmd.pre_exec(f) };
        }
        let mut child: Child = cmd.spawn().expect("start pminit");
        let outer_pid = child.id() as i32;
        let (tx, lines) = channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        for (stream, is_err) in [
            (Box::new(stdout) as Box<dyn Read + Send>, false),
            (Box::new(stderr), true),
        ] {
            let tx = tx.clone();
            let seen = seen.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let line = if is_err {
                        Line::Err(line)
                    } else {
                        Line::Out(line)
                    };
                    seen.lock().expect("lock").push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let (etx, exit) = channel();
        thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = etx.send(status);
            }
        });
        Run {
            mode,
            outer_pid,
            lines,
            seen,
            exit,
            exited: None,
        }
    }

    /// Everything printed so far, for failure messages.
    pub fn transcript(&self) -> String {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .map(|l| match l {
                Line::Out(s) => format!("out| {s}\n"),
                Line::Err(s) => format!("err| {s}\n"),
            })
            .collect()
    }

    /// Waits for a line (stdout or stderr) for which `pred` holds.
    pub fn expect(&self, what: &str, pred: impl Fn(&Line) -> bool) -> Line {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => panic!(
                    "[{:?}] no line {what} within {DEADLINE:?}; transcript:\n{}",
                    self.mode,
                    self.transcript()
                ),
            }
        }
    }

    /// Waits until at least `n` lines seen so far (consumed or not) match.
    pub fn expect_count(&self, what: &str, n: usize, pred: impl Fn(&Line) -> bool) {
        let end = Instant::now() + DEADLINE;
        loop {
            if self
                .seen
                .lock()
                .expect("lock")
                .iter()
                .filter(|l| pred(l))
                .count()
                >= n
            {
                return;
            }
            let left = end.saturating_duration_since(Instant::now());
            if self.lines.recv_timeout(left).is_err() {
                panic!(
                    "[{:?}] fewer than {n} lines {what} within {DEADLINE:?}; transcript:\n{}",
                    self.mode,
                    self.transcript()
                );
            }
        }
    }

    /// Waits until pminit has logged `n` workers ready (in all, so far).
    pub fn expect_ready(&self, n: usize) {
        self.expect_count(
            "saying a worker is ready",
            n,
            |l| matches!(l, Line::Err(s) if s.contains("is ready")),
        );
    }

    /// Waits for a stdout line containing `text` and returns it.
    pub fn expect_out(&self, text: &str) -> String {
        match self.expect(
            &format!("on stdout containing {text:?}"),
            |l| matches!(l, Line::Out(s) if s.contains(text)),
        ) {
            Line::Out(s) | Line::Err(s) => s,
        }
    }

    /// Waits for a stderr line containing `text` and returns it.
    pub fn expect_err(&self, text: &str) -> String {
        match self.expect(
            &format!("on stderr containing {text:?}"),
            |l| matches!(l, Line::Err(s) if s.contains(text)),
        ) {
            Line::Out(s) | Line::Err(s) => s,
        }
    }

    /// pminit's pid as seen from the test. In PID-1 mode it is unshare's
    /// child; call this only after an event shows pminit is running.
    pub fn pminit_pid(&self) -> i32 {
        match self.mode {
            Mode::Subreaper => self.outer_pid,
            Mode::Pid1 => *children(self.outer_pid)
                .first()
                .unwrap_or_else(|| panic!("unshare has no child yet:\n{}", self.transcript())),
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        let r = unsafe { libc::kill(self.pminit_pid(), sig) };
        assert_eq!(r, 0, "kill pminit: {}", std::io::Error::last_os_error());
    }

    /// Waits for pminit (or unshare, which passes its status on) to exit.
    pub fn wait(&mut self) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        let s = self.exit.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            panic!(
                "[{:?}] pminit did not exit within {DEADLINE:?}; transcript:\n{}",
                self.mode,
                self.transcript()
            )
        });
        self.exited = Some(s);
        s
    }

    /// The exit code, with 128+n for a death by signal n.
    pub fn wait_code(&mut self) -> i32 {
        let s = self.wait();
        s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
    }

    /// All stderr lines so far (call after `wait` for the complete set).
    pub fn stderr_lines(&self) -> Vec<String> {
        // Output may still be in the pipe when the exit is seen: the readers
        // finish when pminit's (and its children's) write ends close.
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|l| match l {
                Line::Err(s) => Some(s.clone()),
                Line::Out(_) => None,
            })
            .collect()
    }

    /// Reads lines until both pipes close (every writer is gone).
    pub fn drain(&self) {
        let end = Instant::now() + DEADLINE;
        loop {
            match self
                .lines
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "output still open after {DEADLINE:?}:\n{}",
                        self.transcript()
                    )
                }
            }
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // A failed test must not leave pminit and its workers behind.
        if self.exited.is_none() && self.exit.try_recv().is_err() {
            for pid in descendants(self.outer_pid).into_iter().rev() {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            // SAFETY: as above.
            unsafe { libc::kill(self.outer_pid, libc::SIGKILL) };
        }
    }
}

/// Fields of /proc/PID/stat after the command name: state is [0], ppid [1].
pub fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(String::from).collect())
}

pub fn children(parent: i32) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| stat_fields(pid).and_then(|f| f.get(1)?.parse::<i32>().ok()) == Some(parent))
        .collect();
    out.sort();
    out
}

/// Every process below `root`, parents before children.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for c in children(p) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

/// The descendants of `root` that are zombies.
pub fn zombies_below(root: i32) -> Vec<i32> {
    descendants(root)
        .into_iter()
        .filter(|&p| stat_fields(p).is_some_and(|f| f[0] == "Z"))
        .collect()
}

/// A field of /proc/PID/status, e.g. "SigBlk".
pub fn status_field(pid: i32, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
}

/// `pid=123` in a fixture's line -> 123.
pub fn field(line: &str, key: &str) -> i32 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

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

/// The host's pid of the process that is `ns_pid` in the PID namespace of
/// `root` (which is that namespace's init, or above it), from NSpid.
pub fn host_pid_of(root: i32, ns_pid: i64) -> Option<i32> {
    let want = ns_pid.to_string();
    std::iter::once(root).chain(descendants(root)).find(|&p| {
        status_field(p, "NSpid")
            .is_some_and(|ns| ns.split_whitespace().last() == Some(want.as_str()))
    })
}

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

/// As `http_get`, for `path`.
pub fn http_get_path(port: u16, path: &str) -> Result<String, String> {
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

/// A cgroup v1 memory group for one test run: created with a limit, joined
/// by the started process just before exec (`join` in a pre_exec), removed
/// on drop.
pub struct MemoryCgroup {
    dir: PathBuf,
    procs: std::ffi::CString,
}

impl MemoryCgroup {
    /// None when cgroup v1's memory controller is not writable here.
    pub fn create(tag: &str, limit_bytes: u64) -> Option<MemoryCgroup> {
        let root = std::path::Path::new("/sys/fs/cgroup/memory");
        if !root.join("cgroup.procs").exists() {
            return None;
        }
        let dir = root.join(format!("pminit-test-{}-{tag}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let g = MemoryCgroup {
            procs: std::ffi::CString::new(dir.join("cgroup.procs").to_string_lossy().as_bytes())
                .ok()?,
            dir,
        };
        std::fs::write(g.dir.join("memory.limit_in_bytes"), limit_bytes.to_string()).ok()?;
        Some(g)
    }

    /// Moves the calling process into the group. Async-signal-safe (open,
    /// write, close): for a pre_exec closure.
    pub fn join(procs: &std::ffi::CStr) -> std::io::Result<()> {
        // SAFETY: a valid C string; the fd is ours and closed here.
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // "0" is the writing process itself.
            let n = libc::write(fd, b"0\n".as_ptr().cast(), 2);
            libc::close(fd);
            if n != 2 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// The path of the group's `cgroup.procs`, for `join`.
    pub fn procs(&self) -> std::ffi::CString {
        self.procs.clone()
    }

    /// How many times the group hit its limit (memory.failcnt).
    pub fn failcnt(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("memory.failcnt"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Empty by now (the run is over); a leftover process keeps it, which
        // the next run's unique name tolerates.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `pminit ARGS` run against `run`'s pminit (through nsenter in PID-1
/// mode, as `kubectl exec` would): exit code, stdout+stderr, and how long
/// the answer took.
pub fn timed_verb(run: &Run, args: &[&str]) -> (i32, String, Duration) {
    let pid = run.pminit_pid().to_string();
    let mut cmd = match run.mode {
        Mode::Pid1 => {
            let mut c = Command::new("nsenter");
            c.args(["-t", &pid, "-p", "-m", PMINIT]).args(args);
            c
        }
        Mode::Subreaper => {
            let mut c = Command::new(PMINIT);
            c.args(args).args(["--pid", &pid]);
            c
        }
    };
    let t = Instant::now();
    let out = cmd.output().expect("run the verb");
    let took = t.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text, took)
}

/// VmHWM (peak resident memory) of `pid`, in kB.
pub fn vm_hwm_kb(pid: i32) -> Option<u64> {
    status_field(pid, "VmHWM")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let f = stat_fields(pid)?;
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

impl Run {
    /// Waits at most `limit` for pminit to exit: None if it is still running.
    pub fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.exit.recv_timeout(limit).ok();
        }
        self.exited
    }
}

/// The Node majors the Node suites run on (CI installs each from npm, the
/// `node` package, into target/node-MAJOR: see scripts/test.sh).
pub const NODE_MAJORS: [u32; 2] = [22, 24];

/// One installed Node: its major and the directory of its `node` binary.
#[derive(Clone, Debug)]
pub struct NodeVersion {
    pub major: u32,
    pub bin_dir: PathBuf,
}

impl NodeVersion {
    /// `PATH` with this Node's directory first, for pminit's command.
    pub fn path_env(&self) -> (String, String) {
        let rest = std::env::var("PATH").unwrap_or_default();
        ("PATH".into(), format!("{}:{rest}", self.bin_dir.display()))
    }

    /// The `node` binary itself.
    pub fn node(&self) -> PathBuf {
        self.bin_dir.join("node")
    }
}

/// The supported Node versions installed here, each checked to report its
/// major. A missing one is a loud skip (a failure under
/// PMINIT_TEST_STRICT).
pub fn node_versions(test: &str) -> Vec<NodeVersion> {
    static FOUND: OnceLock<Vec<(u32, Option<PathBuf>)>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        NODE_MAJORS
            .iter()
            .map(|&major| {
                let dir: PathBuf = [
                    env!("CARGO_MANIFEST_DIR"),
                    "target",
                    &format!("node-{major}"),
                    "node_modules",
                    "node",
                    "bin",
                ]
                .iter()
                .collect();
                let ok = Command::new(dir.join("node"))
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| {
                        String::from_utf8_lossy(&o.stdout).starts_with(&format!("v{major}."))
                    });
                (major, ok.then_some(dir))
            })
            .collect()
    });
    found
        .iter()
        .filter_map(|(major, dir)| {
            let what = format!("Node {major} in target/node-{major} (scripts/test.sh installs it)");
            let dir = dir.clone();
            require(dir.is_some(), test, &what).then(|| NodeVersion {
                major: *major,
                bin_dir: dir.unwrap_or_default(),
            })
        })
        .collect()
}
