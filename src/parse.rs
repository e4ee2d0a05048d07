//! Parsers for the value types of the command line: DURATION, SIGNAL, SIZE.
//!
//! Each returns `None` on bad input; the caller (cli) knows the flag and says
//! what is accepted, so the messages live in one place.

use std::time::Duration;

/// What a DURATION accepts, for error messages.
pub const DURATION_FORMS: &str = "a duration: 1600 (milliseconds), 1600ms, 8s, 1.5s, 1m or 1h";
/// What a SIGNAL accepts, for error messages.
pub const SIGNAL_FORMS: &str = "a signal: INT, SIGINT, 2, RTMIN+3";
/// What a SIZE accepts, for error messages.
pub const SIZE_FORMS: &str = "a size: 1048576 (bytes), 512K, 512M, 1G or 1.5G (powers of 1024)";

/// What `--instances` accepts, for error messages.
pub const INSTANCES_FORMS: &str =
    "a number of workers (1-1024), max or 0 (one per CPU this container may use), or -K (that minus K, at least 1)";

/// INSTANCES: `4`, `max` or `0` (= `cpus`), `-1` (= `cpus - 1`, at least 1).
pub fn instances(s: &str, cpus: usize) -> Option<usize> {
    let s = s.trim();
    if s == "max" || s == "0" {
        return Some(cpus.max(1));
    }
    if let Some(k) = s.strip_prefix('-') {
        let k: usize = k.parse().ok().filter(|&k| k > 0)?;
        return Some(cpus.saturating_sub(k).max(1));
    }
    s.parse::<usize>().ok().filter(|n| (1..=1024).contains(n))
}

/// Whether an --instances value counts CPUs (max, 0, -K): such a count
/// follows the CPU quota when it changes.
pub fn cpu_relative(s: &str) -> bool {
    let s = s.trim();
    s == "max" || s == "0" || s.starts_with('-')
}

/// The longest duration we accept: a year. Anything longer is a typo, and it
/// keeps `Instant + Duration` far from overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Splits `"1.5s"` into `(1500, 1000)`-style fixed-point: the number scaled to
/// thousandths, and the unit text.
fn number_and_unit(s: &str) -> Option<(u128, &str)> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() || frac.len() > 3 || (num.contains('.') && frac.is_empty()) {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // At most 20 digits keeps the arithmetic below inside u128.
    if int.len() > 20 {
        return None;
    }
    let int: u128 = int.parse().ok()?;
    let mut thousandths = int * 1000;
    if !frac.is_empty() {
        let scale = 10u128.pow(3 - frac.len() as u32);
        thousandths += frac.parse::<u128>().ok()? * scale;
    }
    Some((thousandths, unit))
}

/// DURATION: `1600` (milliseconds, as pm2), `1600ms`, `8s`, `1.5s`, `1m`, `1h`.
pub fn duration(s: &str) -> Option<Duration> {
    let (thousandths, unit) = number_and_unit(s)?;
    // thousandths of the unit -> microseconds
    let micros_per_thousandth: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    let micros = thousandths.checked_mul(micros_per_thousandth)?;
    let d = Duration::from_micros(u64::try_from(micros).ok()?);
    (d <= MAX_DURATION).then_some(d)
}

/// SIZE in bytes: `1048576`, `512K`, `512M`, `1G`, `1.5G`; `KB`, `KiB`, any case.
pub fn size(s: &str) -> Option<u64> {
    let (thousandths, unit) = number_and_unit(s)?;
    let unit = unit.to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    let bytes = thousandths.checked_mul(1u128 << shift)? / 1000;
    let bytes = u64::try_from(bytes).ok()?;
    (bytes > 0).then_some(bytes)
}

/// Standard signal names without the `SIG` prefix, with their numbers.
const NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// The real-time signal range usable by programs (glibc keeps two for itself).
pub fn rt_range() -> (i32, i32) {
    (libc::SIGRTMIN(), libc::SIGRTMAX())
}

/// SIGNAL: `INT`, `SIGINT`, `int`, `2`, `RTMIN`, `RTMIN+3`, `SIGRTMAX-1`.
pub fn signal(s: &str) -> Option<i32> {
    let s = s.trim();
    let (rtmin, rtmax) = rt_range();
    if let Ok(n) = s.parse::<i32>() {
        let valid = (1..=31).contains(&n) || (rtmin..=rtmax).contains(&n);
        return valid.then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = NAMES.iter().find(|(known, _)| *known == name) {
        return Some(n);
    }
    let rt = |base: i32, rest: &str| -> Option<i32> {
        let n = match rest.as_bytes().first() {
            None => base,
            Some(b'+') => base.checked_add(rest[1..].parse::<i32>().ok()?)?,
            Some(b'-') => base.checked_sub(rest[1..].parse::<i32>().ok()?)?,
            Some(_) => return None,
        };
        (rtmin..=rtmax).contains(&n).then_some(n)
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return rt(rtmin, rest);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return rt(rtmax, rest);
    }
    None
}

/// `SIGINT` for 2, `SIGRTMIN+3` for 37, `signal 99` for nonsense.
pub fn signal_name(n: i32) -> String {
    // IOT and POLL are aliases; the table lists the canonical name first.
    if let Some((name, _)) = NAMES.iter().find(|(_, num)| *num == n) {
        return format!("SIG{name}");
    }
    let (rtmin, rtmax) = rt_range();
    match n {
        n if n == rtmin => "SIGRTMIN".to_string(),
        n if n > rtmin && n <= rtmax => format!("SIGRTMIN+{}", n - rtmin),
        n => format!("signal {n}"),
    }
}

/// A TCP address (`--metrics`): `PORT`, `HOST:PORT` or `[V6]:PORT`.
pub fn tcp_addr(text: &str) -> Result<crate::listen::Addr, String> {
    match crate::listen::parse_addr(text) {
        Ok(crate::listen::Addr::Unix(_)) => {
            Err("a unix: path: expected PORT or HOST:PORT (TCP)".into())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        let table: &[(&str, Option<Duration>)] = &[
            ("1600", Some(ms(1600))),
            ("0", Some(ms(0))),
            ("1600ms", Some(ms(1600))),
            ("1600MS", Some(ms(1600))),
            ("8s", Some(ms(8000))),
            ("1.5s", Some(ms(1500))),
            ("0.25s", Some(ms(250))),
            ("1m", Some(ms(60_000))),
            ("2h", Some(ms(7_200_000))),
            (" 3s ", Some(ms(3000))),
            ("1.5", Some(Duration::from_micros(1500))),
            ("", None),
            ("s", None),
            ("8 s", None),
            ("-1s", None),
            ("1.s", None),
            (".5s", None),
            ("1.2345s", None),
            ("8d", None),
            ("8sec", None),
            ("1e3", None),
            ("9999h", None),
            ("99999999999999999999999999h", None),
        ];
        for (input, want) in table {
            assert_eq!(duration(input), *want, "duration({input:?})");
        }
    }

    #[test]
    fn instance_counts() {
        // (input, cpus, want)
        let table: &[(&str, usize, Option<usize>)] = &[
            ("4", 2, Some(4)),
            ("1", 8, Some(1)),
            ("1024", 2, Some(1024)),
            ("1025", 2, None),
            ("max", 2, Some(2)),
            ("0", 6, Some(6)),
            ("max", 0, Some(1)),
            ("-1", 4, Some(3)),
            ("-1", 2, Some(1)),
            ("-3", 2, Some(1)),
            ("-0", 2, None),
            ("-", 2, None),
            ("many", 2, None),
            ("", 2, None),
            ("2.5", 2, None),
        ];
        for (input, cpus, want) in table {
            assert_eq!(
                instances(input, *cpus),
                *want,
                "instances({input:?}, {cpus})"
            );
        }
    }

    #[test]
    fn sizes() {
        let table: &[(&str, Option<u64>)] = &[
            ("1048576", Some(1 << 20)),
            ("512K", Some(512 << 10)),
            ("512k", Some(512 << 10)),
            ("512KB", Some(512 << 10)),
            ("512KiB", Some(512 << 10)),
            ("512M", Some(512 << 20)),
            ("1G", Some(1 << 30)),
            ("1.5G", Some(3 << 29)),
            ("2T", Some(2 << 40)),
            ("0", None),
            ("0M", None),
            ("M", None),
            ("-1M", None),
            ("12X", None),
            ("1.5.5G", None),
            ("", None),
        ];
        for (input, want) in table {
            assert_eq!(size(input), *want, "size({input:?})");
        }
    }

    #[test]
    fn signals() {
        let (rtmin, rtmax) = rt_range();
        let table: &[(&str, Option<i32>)] = &[
            ("INT", Some(libc::SIGINT)),
            ("SIGINT", Some(libc::SIGINT)),
            ("sigint", Some(libc::SIGINT)),
            ("int", Some(libc::SIGINT)),
            ("2", Some(2)),
            ("15", Some(15)),
            ("TERM", Some(libc::SIGTERM)),
            ("USR2", Some(libc::SIGUSR2)),
            ("SIGWINCH", Some(libc::SIGWINCH)),
            ("IOT", Some(libc::SIGABRT)),
            ("RTMIN", Some(rtmin)),
            ("SIGRTMIN+3", Some(rtmin + 3)),
            ("RTMAX-1", Some(rtmax - 1)),
            ("RTMAX+1", None),
            ("RTMIN-1", None),
            ("RTMINX", None),
            ("0", None),
            ("32", None),
            ("65", None),
            ("-2", None),
            ("SIG", None),
            ("", None),
            ("INTERRUPT", None),
        ];
        for (input, want) in table {
            assert_eq!(signal(input), *want, "signal({input:?})");
        }
    }

    #[test]
    fn signal_names_round_trip() {
        let (rtmin, rtmax) = rt_range();
        for n in (1..=31).chain(rtmin..=rtmax) {
            let name = signal_name(n);
            assert_eq!(signal(&name), Some(n), "{name}");
        }
        assert_eq!(signal_name(libc::SIGINT), "SIGINT");
        assert_eq!(signal_name(rtmin + 2), "SIGRTMIN+2");
        assert_eq!(signal_name(99), "signal 99");
    }
}
