//! Starting a worker.
//!
//! A worker gets: its own process group; every signal at its default action
//! and an empty mask; pminit's cwd; fds 0-2 plus the listening sockets as
//! 3, 4, ... (everything else pminit holds or inherited is close-on-exec);
//! systemd's `LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES`; its slot in
//! `PMINIT_WORKER` and `NODE_APP_INSTANCE`; for Node, the preload; and the
//! terminal's foreground group when it is the interactive worker.
//!
//! pminit forks and execs itself rather than using std::process::Command,
//! because `LISTEN_PID` must be the worker's own pid, known only after the
//! fork. Everything the child touches is allocated before the fork; the
//! child only calls async-signal-safe functions and writes into that memory.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::core::Status;
use crate::ipc::{self, Channel};
use crate::listen::Sockets;
use crate::user::Identity;
use crate::{exit, node, runtime, sys};

/// The command, resolved once at start-up.
pub struct Program {
    path: CString,
    argv: Vec<CString>,
    /// argv[0] as the user wrote it, for messages.
    pub name: String,
    pub is_node: bool,
    /// Bun or Deno (src/runtime.rs).
    pub js: Option<runtime::Js>,
}

/// Variables pminit sets itself; inherited values are dropped.
/// NODE_UNIQUE_ID is never set: it would make a worker a cluster worker.
const OWN_VARS: &[&str] = &[
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "PMINIT_WORKER",
    "NODE_APP_INSTANCE",
    "NODE_CHANNEL_FD",
    "NODE_CHANNEL_SERIALIZATION_MODE",
    "NODE_UNIQUE_ID",
    "NOTIFY_SOCKET",
    node::LISTEN_VAR,
    node::REPORT_VAR,
    node::STOP_SIGNAL_VAR,
    node::CHANNEL_VAR,
    node::MEMORY_REPORT_VAR,
];

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument"))
}

impl Program {
    /// Finds `argv[0]` as execvp would: as given when it holds a `/`, else
    /// in `$PATH`. ENOENT when nowhere, EACCES when only non-executables.
    pub fn resolve(argv: &[String]) -> io::Result<Program> {
        let name = argv
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let path = if name.contains('/') {
            PathBuf::from(name)
        } else {
            search_path(name, std::env::var_os("PATH").as_deref())?
        };
        let is_node = node::is_node_command(name) || node_script(&path);
        Ok(Program {
            js: if is_node {
                None
            } else {
                runtime::detect(name, &path)
            },
            path: cstring(path.as_os_str().as_bytes())?,
            argv: argv
                .iter()
                .map(|a| cstring(a.as_bytes()))
                .collect::<io::Result<_>>()?,
            name: name.clone(),
            is_node,
        })
    }

    /// The arguments as text (lossy), for rewriting them.
    pub fn args(&self) -> Vec<String> {
        self.argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// Replaces the arguments (argv[0] included); the path stays.
    pub fn set_args(&mut self, args: &[String]) -> io::Result<()> {
        self.argv = args
            .iter()
            .map(|a| cstring(a.as_bytes()))
            .collect::<io::Result<_>>()?;
        Ok(())
    }
}

/// Whether `path` is a script whose `#!` line runs Node (a bounded read of
/// its start; anything unreadable is not).
fn node_script(path: &Path) -> bool {
    node::is_node_shebang(&script_head(path))
}

/// The first `SHEBANG_MAX` bytes of `path` (fewer, or none, when it is
/// shorter or unreadable).
pub fn script_head(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut head = [0u8; node::SHEBANG_MAX];
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut n = 0;
    // A short read is possible on odd files; a few reads at most.
    for _ in 0..4 {
        match (&file).read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
        if n == head.len() {
            break;
        }
    }
    head[..n].to_vec()
}

fn search_path(name: &str, path_var: Option<&OsStr>) -> io::Result<PathBuf> {
    let default = OsStr::new("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut denied = false;
    for dir in std::env::split_paths(path_var.unwrap_or(default)) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(name);
        if !candidate.is_file() {
            continue;
        }
        if executable(&candidate) {
            return Ok(candidate);
        }
        denied = true;
    }
    Err(io::Error::from_raw_os_error(if denied {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

fn executable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

/// How workers are started, beyond the command and the sockets.
pub struct Options {
    /// Inject the Node preload.
    pub preload: bool,
    /// Readiness only from an explicit message.
    pub wait_ready: bool,
    /// The signal that asks a worker to stop, for the preload's drain.
    pub stop_signal: i32,
    /// NOTIFY_SOCKET for sd_notify, if pminit has one.
    pub notify_socket: Option<String>,
    /// stdin is a terminal: slot 0 takes the foreground group.
    pub interactive: bool,
    /// --user: the identity workers take before exec.
    pub user: Option<Identity>,
    /// pm2's instance_var (--config): one more variable set to the slot.
    pub instance_var: Option<String>,
    /// The container's memory limit, when Node workers get a heap budget
    /// from it (the user set no heap size of their own).
    pub memory_limit: Option<u64>,
    /// The memory at which a worker's preload asks pminit to look at it
    /// (--max-memory, or near its share of the container), if any.
    pub memory_report: Option<u64>,
}

/// What pminit needs to start any slot's worker.
pub struct Launcher {
    pub program: Program,
    /// pminit's environment less the variables it sets itself.
    base_env: Vec<(OsString, OsString)>,
    user_node_options: Option<String>,
    pub sockets: Sockets,
    options: Options,
    /// The number of workers the heap budget is split among: the shell
    /// keeps it equal to the core's count, so a scale changes new workers'
    /// budgets.
    pub workers: usize,
    /// Bun and Deno workers with the preload: what they get besides.
    runtime: Option<runtime::Workers>,
}

/// A started worker.
pub struct Started {
    pub pid: i32,
    /// pminit's end of its Node IPC channel.
    pub channel: Option<Channel>,
    /// It will say when it is ready (else it is ready once spawned).
    pub awaits_ready: bool,
}

impl Launcher {
    pub fn new(program: Program, sockets: Sockets, options: Options) -> Launcher {
        let base_env = std::env::vars_os()
            .filter(|(k, _)| !OWN_VARS.iter().any(|v| k == v))
            .collect();
        Launcher {
            user_node_options: std::env::var("NODE_OPTIONS").ok(),
            program,
            base_env,
            sockets,
            options,
            workers: 1,
            runtime: None,
        }
    }

    /// The heap budget a Node worker started now gets, if any.
    pub fn budget(&self) -> Option<crate::memory::Budget> {
        let limit = self.options.memory_limit.filter(|_| self.program.is_node)?;
        Some(crate::memory::Budget::new(limit, self.workers))
    }

    /// Bun and Deno: the preload, once, before the first worker (src/runtime.rs).
    /// Returns lines for the log.
    pub fn prepare_runtime(&mut self) -> Vec<runtime::Line> {
        let Some(js) = self.program.js else {
            return Vec::new();
        };
        let stop = crate::parse::signal_name(self.options.stop_signal);
        let (workers, notes) = runtime::prepare(
            js,
            &mut self.program,
            self.options.preload && self.sockets.is_empty(),
            &stop,
        );
        self.runtime = workers;
        notes
    }

    /// Whether Node workers get the preload.
    fn preloading(&self) -> bool {
        self.program.is_node && self.options.preload
    }

    /// A worker says when it is ready: explicitly (--wait-ready), or through
    /// the preload once it listens on a pminit socket.
    pub fn awaits_ready(&self) -> bool {
        self.options.wait_ready
            || (self.preloading() && !self.sockets.is_empty())
            || self.runtime.as_ref().is_some_and(|r| r.reports_listening)
    }

    /// Starts the worker of `slot`.
    pub fn start(&mut self, slot: usize) -> io::Result<Started> {
        let fds = self.sockets.fds_for(slot)?;
        let mut env: Vec<(OsString, OsString)> = self.base_env.clone();
        let mut set = |k: &str, v: String| env.push((k.into(), v.into()));
        set("PMINIT_WORKER", slot.to_string());
        set("NODE_APP_INSTANCE", slot.to_string());
        if !fds.is_empty() {
            set("LISTEN_FDS", fds.len().to_string());
            set("LISTEN_FDNAMES", self.sockets.names());
        }
        if let Some(address) = &self.options.notify_socket {
            env.push(("NOTIFY_SOCKET".into(), address.into()));
        }
        if let Some(var) = &self.options.instance_var {
            env.retain(|(k, _)| k != var.as_str());
            env.push((var.into(), slot.to_string().into()));
        }
        if let Some(id) = &self.options.user {
            // What login, su and Docker's --user give a process.
            let mut replace = |k: &str, v: &str| {
                env.retain(|(name, _)| name != k);
                env.push((k.into(), v.into()));
            };
            if let Some(home) = &id.home {
                replace("HOME", home);
            }
            if let Some(name) = &id.name {
                replace("USER", name);
                replace("LOGNAME", name);
            }
        }
        let mut raw_fds: Vec<RawFd> = fds.iter().map(|f| f.fd).collect();
        // Node workers: the IPC channel, right after the sockets.
        let mut channel = None;
        let mut theirs = None;
        if self.program.is_node || self.program.js.is_some() {
            let (ours, end) = ipc::pair()?;
            let number = (3 + raw_fds.len()).to_string();
            raw_fds.push(end.as_raw_fd());
            env.push(("NODE_CHANNEL_FD".into(), number.clone().into()));
            env.push(("NODE_CHANNEL_SERIALIZATION_MODE".into(), "json".into()));
            env.push((node::REPORT_VAR.into(), number.into()));
            env.push((node::CHANNEL_VAR.into(), "1".into()));
            channel = Some(ours);
            theirs = Some(end);
        }
        let heap_flag = self.budget().map(|b| b.flag());
        if self.preloading() || heap_flag.is_some() {
            // Ours replaces the user's NODE_OPTIONS, which it starts with.
            env.retain(|(k, _)| k != "NODE_OPTIONS");
            env.push((
                "NODE_OPTIONS".into(),
                node::node_options(
                    self.user_node_options.as_deref(),
                    heap_flag.as_deref(),
                    self.preloading(),
                )
                .into(),
            ));
        }
        if self.preloading() {
            if let Some(bytes) = self.options.memory_report {
                env.push((node::MEMORY_REPORT_VAR.into(), bytes.to_string().into()));
            }
            if !fds.is_empty() {
                env.push((node::LISTEN_VAR.into(), node::listen_map(&fds).into()));
            }
            env.push((
                node::STOP_SIGNAL_VAR.into(),
                crate::parse::signal_name(self.options.stop_signal).into(),
            ));
        }
        if let Some(r) = &self.runtime {
            for (k, v) in &r.env {
                env.retain(|(name, _)| name != k.as_str());
                env.push((k.into(), v.into()));
            }
        }
        let pid = spawn(&Plan {
            program: &self.program,
            env,
            fds: &raw_fds,
            listen_pid: !fds.is_empty(),
            take_terminal: self.options.interactive && slot == 0,
            user: self.options.user.as_ref(),
        })?;
        // The child has its copy; ours closes now.
        drop(theirs);
        Ok(Started {
            pid,
            channel,
            awaits_ready: self.awaits_ready(),
        })
    }
}

struct Plan<'a> {
    program: &'a Program,
    env: Vec<(OsString, OsString)>,
    /// Become fds 3, 4, ... in the child.
    fds: &'a [RawFd],
    /// Add LISTEN_PID=<the child's pid>.
    listen_pid: bool,
    take_terminal: bool,
    user: Option<&'a Identity>,
}

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";

fn spawn(plan: &Plan<'_>) -> io::Result<i32> {
    // --- everything the child uses, allocated before fork ---
    let mut env: Vec<Vec<u8>> = plan
        .env
        .iter()
        .map(|(k, v)| {
            let mut e = k.clone().into_vec();
            e.push(b'=');
            e.extend_from_slice(v.as_bytes());
            e.retain(|&b| b != 0);
            e.push(0);
            e
        })
        .collect();
    if plan.listen_pid {
        // Room for any pid's digits and the NUL; filled in by the child.
        let mut e = LISTEN_PID_PREFIX.to_vec();
        e.resize(LISTEN_PID_PREFIX.len() + 12, 0);
        env.push(e);
    }
    let pid_digits: *mut u8 = if plan.listen_pid {
        let last = env.len() - 1;
        // SAFETY: the entry is LISTEN_PID_PREFIX plus 12 bytes; the offset is
        // inside it. Vec::as_mut_ptr does not create a reference to the
        // contents, so the pointers taken below stay valid alongside it.
        unsafe { env[last].as_mut_ptr().add(LISTEN_PID_PREFIX.len()) }
    } else {
        std::ptr::null_mut()
    };
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr().cast()).collect();
    envp.push(std::ptr::null());
    let mut argv: Vec<*const libc::c_char> = plan.program.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut parked: Vec<libc::c_int> = vec![-1; plan.fds.len()];
    let groups: Vec<libc::gid_t> = plan.user.map(|u| u.groups.clone()).unwrap_or_default();

    let mut pipe = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we pass.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let [report_read, report_write] = pipe;
    let child = ChildPlan {
        path: plan.program.path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        fds: plan.fds.as_ptr(),
        parked: parked.as_mut_ptr(),
        nfds: plan.fds.len(),
        pid_digits,
        take_terminal: plan.take_terminal,
        report: report_write,
        user: plan.user.map(|u| (u.uid, u.gid)),
        groups: groups.as_ptr(),
        ngroups: groups.len(),
    };

    // SAFETY: pminit is single-threaded, so the child is a full copy with
    // no lock held by another thread; it runs only `run_child`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: we are the freshly forked child; `child` points into
        // memory this process owns (a copy of the parent's).
        unsafe { run_child(&child) }
    }
    // SAFETY: closing the write end we own; the child has its own copy.
    unsafe { libc::close(report_write) };
    if pid < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: closing the read end we own.
        unsafe { libc::close(report_read) };
        return Err(e);
    }
    // SAFETY: setpgid has no memory-safety preconditions. Doing it in the
    // parent too closes the race with a signal to the group; the error once
    // the child has exec'd (EACCES) is expected.
    unsafe { libc::setpgid(pid, pid) };

    let failed = read_report(report_read);
    drop((env, envp, argv, parked, groups));
    if let Some(errno) = failed {
        let mut status = 0;
        // SAFETY: reaping our own child, which exits right after reporting.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok(pid)
}

/// The child reports an errno if a step before exec fails; exec closes the
/// pipe (close-on-exec), so EOF (None) means the program runs. Closes
/// `report_read`, which the caller owns and hands over.
fn read_report(report_read: RawFd) -> Option<i32> {
    let mut errno = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        // SAFETY: reading into the unfilled tail of `errno`.
        let n = unsafe { libc::read(report_read, errno[got..].as_mut_ptr().cast(), 4 - got) };
        if n > 0 {
            got += n as usize;
        } else if n == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    // SAFETY: closing the read end we were handed.
    unsafe { libc::close(report_read) };
    (got == 4).then(|| i32::from_ne_bytes(errno))
}

struct ChildPlan {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    fds: *const RawFd,
    parked: *mut libc::c_int,
    nfds: usize,
    pid_digits: *mut u8,
    take_terminal: bool,
    report: RawFd,
    /// (uid, gid) to switch to, with `groups` as supplementary groups.
    user: Option<(libc::uid_t, libc::gid_t)>,
    groups: *const libc::gid_t,
    ngroups: usize,
}

/// Sends errno to the parent and exits. Async-signal-safe.
///
/// # Safety
///
/// Only in the child between fork and exec: it ends the process with
/// `_exit`, without running destructors or flushing anything of the
/// parent's. `report` is the write end of the parent's report pipe (a
/// failed write is ignored: the parent then sees EOF).
unsafe fn fail(report: RawFd) -> ! {
    let errno = *libc::__errno_location();
    let bytes = errno.to_ne_bytes();
    libc::write(report, bytes.as_ptr().cast(), bytes.len());
    libc::_exit(exit::NOT_FOUND)
}

/// The child between fork and exec: no allocation, async-signal-safe calls.
///
/// # Safety
///
/// Only in the child right after fork, in a process with one thread. Every
/// pointer in `c` points into memory the parent prepared before the fork
/// and that stays valid (the child has a copy): `path`, `argv` and `envp`
/// NUL-terminated as execve wants them, `fds` and `parked` with `nfds`
/// entries, `groups` with `ngroups`, `pid_digits` null or room for 11
/// bytes inside the environment block.
unsafe fn run_child(c: &ChildPlan) -> ! {
    if libc::setpgid(0, 0) != 0 {
        fail(c.report);
    }
    if c.take_terminal {
        // We are a background group until this call succeeds, and a
        // background tcsetpgrp raises SIGTTOU: ignore it meanwhile. Fails
        // harmlessly when the tty is not our controlling terminal.
        let mut ign: libc::sigaction = std::mem::zeroed();
        ign.sa_sigaction = libc::SIG_IGN;
        libc::sigaction(libc::SIGTTOU, &ign, std::ptr::null_mut());
        libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpid());
    }
    // Listening sockets to 3, 4, ...: first park every source above the
    // target range, so no source is overwritten before it is moved.
    let first = 3 + c.nfds as libc::c_int;
    for i in 0..c.nfds {
        let fd = libc::fcntl(*c.fds.add(i), libc::F_DUPFD_CLOEXEC, first);
        if fd < 0 {
            fail(c.report);
        }
        *c.parked.add(i) = fd;
    }
    for i in 0..c.nfds {
        // dup2 leaves the new fd without close-on-exec: it is inherited.
        if libc::dup2(*c.parked.add(i), 3 + i as libc::c_int) < 0 {
            fail(c.report);
        }
    }
    if let Some((uid, gid)) = c.user {
        // Groups first, then the gid, then the uid: after setuid the
        // others could no longer be changed.
        if libc::setgroups(c.ngroups, c.groups) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
        {
            fail(c.report);
        }
    }
    sys::reset_dispositions();
    sys::unblock_all();
    if !c.pid_digits.is_null() {
        write_decimal(c.pid_digits, libc::getpid() as u32);
    }
    libc::execve(c.path, c.argv, c.envp);
    fail(c.report)
}

/// Writes `n` in decimal plus a NUL at `at`. Async-signal-safe.
///
/// # Safety
///
/// `at` must be valid for writes of 11 bytes (10 digits and the NUL).
unsafe fn write_decimal(at: *mut u8, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        *at.add(i) = digits[len - 1 - i];
    }
    *at.add(len) = 0;
}

/// The shell's exit code for a command that cannot run: 127 when there is
/// no such file, 126 when it exists but cannot be executed.
pub fn exec_failure(err: &io::Error) -> Status {
    match err.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => Status::Code(exit::NOT_FOUND),
        _ => Status::Code(exit::NOT_EXECUTABLE),
    }
}

/// Why a worker could not start, as the user should read it.
pub struct Failure {
    /// 127 no such file (or interpreter), 126 cannot be executed, 1 a
    /// resource shortage (pminit's failure, not the command's).
    pub code: i32,
    /// One line, naming the real cause.
    pub message: String,
    /// A resource shortage: worth retrying later, not a broken command.
    pub shortage: bool,
}

/// What ran out, for EAGAIN, EMFILE, ENFILE, ENOMEM.
fn shortage(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EAGAIN => "out of processes (EAGAIN): the process limit (ulimit -u) or the container's pids limit is reached",
        libc::EMFILE => "out of file descriptors (EMFILE): pminit's open-file limit (ulimit -n) is reached",
        libc::ENFILE => "out of file descriptors (ENFILE): the system's open-file table is full",
        libc::ENOMEM => "out of memory (ENOMEM)",
        _ => return None,
    })
}

/// The interpreter a script's `#!` line names, if that file does not exist.
fn missing_interpreter(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let interpreter = std::str::from_utf8(line).ok()?.split_whitespace().next()?;
    (!Path::new(interpreter).exists()).then(|| interpreter.to_string())
}

/// Explains why `Program::resolve` failed for the command `name`.
pub fn resolve_failure(name: &str, err: &io::Error) -> Failure {
    Failure {
        code: exec_failure(err).code(),
        message: format!("cannot run {name:?}: {err}"),
        shortage: false,
    }
}

impl Program {
    /// Explains `err`, from starting this program.
    pub fn failure(&self, err: &io::Error) -> Failure {
        let name = &self.name;
        let errno = err.raw_os_error().unwrap_or(0);
        if let Some(what) = shortage(errno) {
            return Failure {
                code: exit::SETUP,
                message: format!("cannot start {name:?}: {what}"),
                shortage: true,
            };
        }
        let path = Path::new(OsStr::from_bytes(self.path.as_bytes()));
        let message = if errno == libc::ENOENT && path.is_file() {
            // execve says ENOENT for a file that exists when what it names
            // to run it with does not.
            match missing_interpreter(path) {
                Some(interpreter) => format!(
                    "cannot run {name:?}: interpreter {interpreter} (from its #! line) not found"
                ),
                None => format!(
                    "cannot run {name:?}: {err}, though the file exists: the program interpreter it names (its ELF dynamic loader) is missing"
                ),
            }
        } else {
            format!("cannot run {name:?}: {err}")
        };
        Failure {
            code: exec_failure(err).code(),
            message,
            shortage: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_pids() {
        for (n, want) in [
            (0u32, "0"),
            (7, "7"),
            (4_194_304, "4194304"),
            (u32::MAX, "4294967295"),
        ] {
            let mut buf = [0xffu8; 12];
            // SAFETY: 12 bytes is room for 10 digits and the NUL.
            unsafe { write_decimal(buf.as_mut_ptr(), n) };
            let end = buf.iter().position(|&b| b == 0).expect("NUL");
            assert_eq!(std::str::from_utf8(&buf[..end]).expect("ascii"), want);
        }
    }

    #[test]
    fn path_search() {
        let dir = std::env::temp_dir().join(format!("pminit-path-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let plain = dir.join("plain");
        std::fs::write(&plain, "x").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let path = OsString::from(format!("/nonexistent:{}:/bin", dir.display()));
        assert_eq!(
            search_path("sh", Some(&path)).expect("found"),
            PathBuf::from("/bin/sh")
        );
        let err = search_path("no-such-thing", Some(&path)).expect_err("missing");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        // Found but not executable (access(X_OK) refuses a file with no x
        // bit even to root): EACCES, so the caller exits 126.
        let err = search_path("plain", Some(&path))
            .map(|_| ())
            .expect_err("not executable");
        assert!(matches!(err.raw_os_error(), Some(libc::EACCES)), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
