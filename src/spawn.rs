//! Starting a worker: its own process group, default signal dispositions, an
//! empty signal mask, the caller's cwd, fds 0-2 only (everything else pminit
//! holds or inherited is close-on-exec), and the terminal's foreground group
//! when it is the interactive worker.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::core::Status;
use crate::sys;

pub struct Worker<'a> {
    pub argv: &'a [String],
    pub slot: usize,
    /// Make this worker's group the terminal's foreground group (stdin is a tty).
    pub take_terminal: bool,
}

/// Runs `w.argv` and returns its pid. The error is exec's: the command is
/// missing or not executable.
pub fn spawn(w: &Worker<'_>) -> io::Result<i32> {
    let (program, args) = w
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .process_group(0)
        .env("PMINIT_WORKER", w.slot.to_string())
        .env("NODE_APP_INSTANCE", w.slot.to_string());
    let take_terminal = w.take_terminal;
    // SAFETY: the closure runs in the forked child before exec. It allocates
    // nothing and calls only async-signal-safe functions (sigaction,
    // sigprocmask, tcsetpgrp, getpid).
    unsafe {
        cmd.pre_exec(move || {
            if take_terminal {
                // We are a background group until this call succeeds, and a
                // background tcsetpgrp raises SIGTTOU: ignore it meanwhile.
                let mut ign: libc::sigaction = std::mem::zeroed();
                ign.sa_sigaction = libc::SIG_IGN;
                libc::sigaction(libc::SIGTTOU, &ign, std::ptr::null_mut());
                // Fails harmlessly when the tty is not our controlling terminal.
                libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpid());
            }
            sys::reset_dispositions();
            sys::unblock_all();
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The Child handle is dropped without waiting: pminit reaps every child
    // with waitpid(-1) in its loop.
    Ok(child.id() as i32)
}

/// The shell's exit code for a failed exec: 127 when there is no such file,
/// 126 when it exists but cannot be executed.
pub fn exec_failure(err: &io::Error) -> Status {
    match err.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => Status::Code(127),
        _ => Status::Code(126),
    }
}
