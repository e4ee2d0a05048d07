//! The few raw syscalls pminit needs, each wrapped once with its safety
//! argument. Signal numbers are plain `i32` here because real-time signals
//! have no name in nix's `Signal` enum.

use nix::errno::Errno;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::core::Status;

/// Signals pminit never takes over: the kernel sends the fault signals only
/// when pminit itself is broken, so they keep their default (die, dump core)
/// and are never forwarded. KILL and STOP cannot be caught.
pub fn is_untouchable(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGKILL
            | libc::SIGSTOP
            | libc::SIGSEGV
            | libc::SIGBUS
            | libc::SIGILL
            | libc::SIGFPE
            | libc::SIGABRT
            | libc::SIGTRAP
            | libc::SIGSYS
    )
}

/// Every signal number a process can use: 1..=31 and the real-time range.
pub fn all_signals() -> impl Iterator<Item = i32> {
    (1..=31).chain(libc::SIGRTMIN()..=libc::SIGRTMAX())
}

/// Puts every catchable signal back to SIG_DFL. pminit may inherit ignored
/// signals (nohup, a shell's background job, a runtime); a SIGCHLD left at
/// SIG_IGN would even make the kernel reap children behind our back.
/// Async-signal-safe: also used between fork and exec.
///
/// The raw rt_sigaction syscall, because glibc's sigaction refuses the two
/// real-time signals it reserves (32, 33), and an inherited SIG_IGN on those
/// would otherwise reach the workers.
pub fn reset_dispositions() {
    // The kernel's struct sigaction (handler, flags, [restorer,] mask), all
    // zero: SIG_DFL, no flags, empty mask. 32 bytes covers every layout.
    let dfl = [0u64; 4];
    let mask_size = std::mem::size_of::<u64>();
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `dfl` has the layout of the kernel's sigaction and outlives
        // the call; the old-action pointer is null. The syscall is
        // async-signal-safe.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<u64>(),
                mask_size,
            )
        };
    }
}

/// Empties the signal mask. Async-signal-safe: used between fork and exec.
pub fn unblock_all() {
    // SAFETY: a zeroed sigset_t is initialised by sigemptyset before use;
    // sigprocmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Blocks every catchable signal except the fault signals and returns a
/// signalfd that reads them. Blocked signals are queued even for PID 1 (the
/// kernel drops a signal to init only when it would take the default action),
/// so this is pminit's "handler installed" for everything it acts on.
pub fn signalfd() -> io::Result<OwnedFd> {
    // SAFETY: the set is initialised by sigemptyset before any other use;
    // sigprocmask and signalfd only read it; the fd signalfd returns is new
    // and owned by nobody else, so OwnedFd may take it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in all_signals().filter(|&s| !is_untouchable(s)) {
            libc::sigaddset(&mut set, sig);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Drains the signalfd: the signals delivered since the last call, in order.
pub fn read_signals(fd: BorrowedFd<'_>) -> Vec<i32> {
    let mut out = Vec::new();
    loop {
        // SAFETY: signalfd_siginfo is a plain C struct; zero bytes are valid.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: we read at most `size` bytes into `info`, which is that big.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n == size as isize {
            out.push(info.ssi_signo as i32);
            continue;
        }
        if n < 0 && Errno::last() == Errno::EINTR {
            continue;
        }
        // EAGAIN: drained. Anything else cannot happen on a signalfd.
        return out;
    }
}

pub enum Reaped {
    Child(i32, Status),
    /// Children exist, none has exited.
    Running,
    /// No child at all (ECHILD).
    Empty,
}

/// One non-blocking `waitpid(-1)`.
pub fn reap_one() -> Reaped {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes an int through the valid pointer we pass.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            let st = if libc::WIFSIGNALED(status) {
                Status::Signal(libc::WTERMSIG(status))
            } else {
                Status::Code(libc::WEXITSTATUS(status))
            };
            return Reaped::Child(pid, st);
        }
        if pid == 0 {
            return Reaped::Running;
        }
        match Errno::last() {
            Errno::EINTR => continue,
            // ECHILD; nothing else is possible with these arguments.
            _ => return Reaped::Empty,
        }
    }
}

/// Whether this process has any child at all (running, or exited and not
/// yet reaped), without reaping it.
pub fn has_children() -> bool {
    // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waitid writes into the siginfo_t we pass; WNOWAIT leaves
        // any exited child to be reaped later.
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if r == 0 {
            return true;
        }
        if Errno::last() != Errno::EINTR {
            // ECHILD: none at all.
            return false;
        }
    }
}

/// kill(2) with any signal number, real-time ones included.
pub fn kill(pid: i32, sig: i32) -> Result<(), Errno> {
    // SAFETY: kill has no memory-safety preconditions.
    Errno::result(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Signals the process group `pgid`; if the group is gone but the leader is
/// a not-yet-reaped zombie, there is nothing to signal, which is fine.
pub fn signal_group(pgid: i32, sig: i32) -> Result<(), Errno> {
    match kill(-pgid, sig) {
        Err(Errno::ESRCH) => Ok(()),
        r => r,
    }
}

pub fn getpgid(pid: i32) -> Option<i32> {
    // SAFETY: getpgid has no memory-safety preconditions.
    let pgid = unsafe { libc::getpgid(pid) };
    (pgid >= 0).then_some(pgid)
}

/// Waits until one of `fds` is ready or `timeout` passes (None: forever);
/// says which are. Each fd is watched for reading (or hang-up), and also for
/// writing when its flag is set. A None entry is skipped. EINTR counts as a
/// wake-up with nothing ready.
/// What one non-blocking read or send on a socket did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    /// This many bytes moved (more than zero).
    Moved(usize),
    /// Nothing to read, or no room to send, right now (EAGAIN).
    WouldBlock,
    /// The peer closed its end (a read of 0 bytes).
    Closed,
    /// Any other error: the connection is unusable.
    Failed(Errno),
}

/// The one non-blocking read for every socket pminit reads a stream from
/// (control and metrics clients, workers' IPC channels): read(2), retried
/// on EINTR. `fd` must be non-blocking.
pub fn read_some(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Io {
    loop {
        // SAFETY: reading into a buffer of the length we pass.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => return Io::Closed,
            n if n > 0 => return Io::Moved(n as usize),
            _ => match Errno::last() {
                Errno::EINTR => continue,
                Errno::EAGAIN => return Io::WouldBlock,
                e => return Io::Failed(e),
            },
        }
    }
}

/// The one send for every socket pminit writes to: never blocks
/// (MSG_DONTWAIT), never raises SIGPIPE (MSG_NOSIGNAL), retried on EINTR.
pub fn send_some(fd: BorrowedFd<'_>, bytes: &[u8]) -> Io {
    loop {
        // SAFETY: sending from a buffer of the length we pass.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        match n {
            n if n > 0 => return Io::Moved(n as usize),
            0 => return Io::WouldBlock,
            _ => match Errno::last() {
                Errno::EINTR => continue,
                Errno::EAGAIN => return Io::WouldBlock,
                e => return Io::Failed(e),
            },
        }
    }
}

pub fn poll(
    fds: &[(Option<BorrowedFd<'_>>, bool)],
    timeout: Option<Duration>,
) -> io::Result<Vec<bool>> {
    let ms: libc::c_int = match timeout {
        None => -1,
        // Round up, so we never wake a millisecond early and spin.
        Some(d) => d
            .as_micros()
            .div_ceil(1000)
            .try_into()
            .unwrap_or(libc::c_int::MAX),
    };
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|(fd, write)| libc::pollfd {
            fd: fd.map_or(-1, |f| f.as_raw_fd()),
            events: if *write {
                libc::POLLIN | libc::POLLOUT
            } else {
                libc::POLLIN
            },
            revents: 0,
        })
        .collect();
    // SAFETY: `pfds` holds `len` valid pollfd structs; negative fds are
    // ignored by poll.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if r < 0 && Errno::last() != Errno::EINTR {
        return Err(io::Error::last_os_error());
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// What a worker's process group uses, summed over its members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub rss_bytes: u64,
    /// User plus system CPU time.
    pub cpu_ms: u64,
}

/// Usage of each process group led by a pid in `leaders`, from /proc.
pub fn group_usage(leaders: &[i32]) -> Vec<(i32, Usage)> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    // SAFETY: as above.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let mut totals: Vec<(i32, Usage)> = leaders.iter().map(|&l| (l, Usage::default())).collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return totals;
    };
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Some(fields) = stat_fields(pid) else {
            continue;
        };
        // After the name: pgrp is field 2, utime 11, stime 12.
        let num = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let Some(group) = fields.get(2).and_then(|f| f.parse::<i32>().ok()) else {
            continue;
        };
        let Some(entry) = totals.iter_mut().find(|(l, _)| *l == group) else {
            continue;
        };
        let resident = std::fs::read_to_string(format!("/proc/{pid}/statm"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
        entry.1.rss_bytes += resident * page;
        entry.1.cpu_ms += (num(11) + num(12)) * 1000 / hz;
    }
    totals
}

/// Memory of each process group led by a pid in `leaders`, counting pages
/// shared between processes once: the sum of the members' proportional set
/// size (PSS, `/proc/PID/smaps_rollup`, Linux >= 4.14), where a page shared
/// by n processes counts 1/n for each. A worker that forks children sharing
/// its pages copy-on-write is counted once, not once per child, as an RSS
/// sum would. A process whose smaps_rollup cannot be read counts its RSS.
pub fn group_memory(leaders: &[i32]) -> Vec<(i32, u64)> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let mut totals: Vec<(i32, u64)> = leaders.iter().map(|&l| (l, 0)).collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return totals;
    };
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Some(group) = stat_field(pid, 2) else {
            continue;
        };
        let Some(entry) = totals.iter_mut().find(|(l, _)| *l == group) else {
            continue;
        };
        entry.1 += pss_bytes(pid).unwrap_or_else(|| {
            std::fs::read_to_string(format!("/proc/{pid}/statm"))
                .ok()
                .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
                .unwrap_or(0)
                * page
        });
    }
    totals
}

/// The `Pss:` line of /proc/PID/smaps_rollup, in bytes.
fn pss_bytes(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    parse_pss(&text)
}

fn parse_pss(smaps_rollup: &str) -> Option<u64> {
    let kb = smaps_rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// Sets O_NONBLOCK on `fd`'s open file description (shared by every
/// process holding a copy of it). A failure leaves it as it was.
pub fn set_nonblocking(fd: BorrowedFd<'_>) {
    // SAFETY: F_GETFL/F_SETFL on a live fd; no memory is passed.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if fl >= 0 && fl & libc::O_NONBLOCK == 0 {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
}

/// Gives the heap's free pages back to the kernel. A spawn's environment
/// and a dead worker's buffers leave free chunks below the top of the heap,
/// which glibc keeps resident; this releases every whole free page (about
/// 80 KB of pminit's RSS with four Node workers, docs/size.md).
pub fn release_free_heap() {
    // SAFETY: malloc_trim takes a size and touches only malloc's own state;
    // pminit has one thread, so no allocation runs concurrently.
    unsafe { libc::malloc_trim(0) };
}

/// Makes orphans of our descendants our children when we are not PID 1.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks every inherited fd above stderr close-on-exec, so a worker gets only
/// 0-2 and what pminit hands it.
pub fn cloexec_inherited_fds() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes fd flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    // Kernels before 5.11: walk /proc/self/fd.
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on any fd number is harmless; a closed one fails.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// The pids whose parent is `parent`, from /proc (empty if /proc is absent).
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| parent_of(pid) == Some(parent))
        .collect()
}

fn parent_of(pid: i32) -> Option<i32> {
    stat_field(pid, 1)
}

/// A numeric field of /proc/PID/stat, counted after the command name (state
/// is 0, ppid 1, pgrp 2).
fn stat_field(pid: i32, index: usize) -> Option<i32> {
    stat_fields(pid)?.get(index)?.parse().ok()
}

/// The fields of /proc/PID/stat after the command name. The name may hold
/// spaces and parentheses, so fields are counted after the last ')'.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

pub fn isatty(fd: i32) -> bool {
    // SAFETY: isatty has no memory-safety preconditions.
    unsafe { libc::isatty(fd) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pss_from_smaps_rollup() {
        let text = "55d1c0a00000-7ffd3b5f2000 ---p 00000000 00:00 0    [rollup]\n\
                    Rss:              153600 kB\n\
                    Pss:               17066 kB\n\
                    Pss_Anon:          16800 kB\n";
        assert_eq!(parse_pss(text), Some(17066 * 1024));
        assert_eq!(parse_pss("Rss: 5 kB\n"), None);
        // Our own process has one.
        let me = std::process::id() as i32;
        assert!(pss_bytes(me).is_some_and(|b| b > 0));
    }
}
