//! What /proc says about a process: its fields, children, zombies, memory
//! and CPU, and its pid as the host sees it.

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
/// The host's pid of the process that is `ns_pid` in the PID namespace of
/// `root` (which is that namespace's init, or above it), from NSpid.
pub fn host_pid_of(root: i32, ns_pid: i64) -> Option<i32> {
    let want = ns_pid.to_string();
    std::iter::once(root).chain(descendants(root)).find(|&p| {
        status_field(p, "NSpid")
            .is_some_and(|ns| ns.split_whitespace().last() == Some(want.as_str()))
    })
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
