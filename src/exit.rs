//! pminit's own exit codes, named once. (A worker's code, or 128 + its
//! signal, is passed through as it is: see README's exit-code table.)

/// A control verb failed: not ready, reload rolled back, refused, no
/// pminit found.
pub const FAILED: u8 = 1;

/// Bad command line, `PMINIT_*` variable or `--config` file (as most
/// CLIs): nothing was started.
pub const USAGE: u8 = 2;
