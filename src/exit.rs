//! pminit's own exit codes, by name. A worker's code (or 128 + signal, as
//! a shell and tini report it) is passed through as it is; these are the
//! ones pminit chooses itself. The README's exit-code table lists them.

/// A control verb failed: not ready, reload rolled back, refused, no
/// pminit found.
pub const FAILED: i32 = 1;
/// Something pminit needs could not be set up before any worker started
/// (signal handling, a socket to bind, the metrics address): nothing ran.
pub const SETUP: i32 = 1;
/// A bad command line, `PMINIT_*` variable or `--config` file (one line
/// names it), or a start-up check that rejects the configuration.
pub const USAGE: i32 = 2;
/// The command exists but cannot be executed (permission, format).
pub const NOT_EXECUTABLE: i32 = 126;
/// The command was not found.
pub const NOT_FOUND: i32 = 127;

/// A code as the process's exit status (codes above 255 keep their low
/// byte, as the kernel would).
pub fn status(code: i32) -> std::process::ExitCode {
    std::process::ExitCode::from(code as u8)
}
