//! A cgroup v1 memory group for the hostile-input tests, removed on drop.

use super::*;

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

impl MemoryCgroup {
    /// How many processes the kernel's OOM killer ended in the group
    /// (the `oom_kill` line of memory.oom_control).
    pub fn oom_kills(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.dir.join("memory.oom_control")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
    }
}
