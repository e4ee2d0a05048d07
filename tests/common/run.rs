//! `Run`: the real pminit under test, as PID 1 of a fresh PID namespace or
//! as a plain child (a subreaper), its output read line by line, waits for
//! observable events with deadlines, and the control verbs run against it.

use super::*;

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
impl Run {
    /// Waits at most `limit` for pminit to exit: None if it is still running.
    pub fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.exit.recv_timeout(limit).ok();
        }
        self.exited
    }
}
impl Run {
    /// Waits at most `limit` until a line seen so far (consumed or not)
    /// matches `pred`, and returns it: a deadline on an event.
    pub fn expect_seen_within(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Line) -> bool,
    ) -> Line {
        let end = Instant::now() + limit;
        loop {
            let found = self
                .seen
                .lock()
                .expect("lock")
                .iter()
                .find(|l| pred(l))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            let left = end.saturating_duration_since(Instant::now());
            if self.lines.recv_timeout(left).is_err() {
                panic!(
                    "[{:?}] no line {what} within {limit:?}; transcript:\n{}",
                    self.mode,
                    self.transcript()
                );
            }
        }
    }

    /// Reads lines for `limit` and fails if any line seen (before or
    /// during) matches `pred`: a bounded wait for something that must not
    /// happen. Returns early if every writer is gone.
    pub fn expect_none_within(&self, what: &str, limit: Duration, pred: impl Fn(&Line) -> bool) {
        let end = Instant::now() + limit;
        loop {
            if let Some(l) = self.seen.lock().expect("lock").iter().find(|l| pred(l)) {
                panic!(
                    "[{:?}] a line {what}: {l:?}; transcript:\n{}",
                    self.mode,
                    self.transcript()
                );
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.lines.recv_timeout(left) {
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// `pminit ARGS` against `run`'s pminit (through nsenter in PID-1 mode):
/// exit code, stdout, stderr.
pub fn verb_output(run: &Run, args: &[&str]) -> (i32, String, String) {
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
    let out = cmd.output().expect("run the verb");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
