//! Two glibc functions, written again for the static build (docs/size.md).
//!
//! A static link takes an object out of `libc.a` only for a symbol nobody
//! else defines. Two of glibc's objects pull in far more than they are
//! worth to pminit:
//!
//! - `pthread_getattr_np` (std asks it once, at start-up, where the main
//!   thread's stack ends, to name a stack overflow) reads `/proc/self/maps`
//!   with `sscanf`: that brings the whole `scanf` family and every `strto*`
//!   float parser, about 132 KB.
//! - `__assert_fail` (referenced by glibc's own start-up code) formats its
//!   message with `asprintf` and translates it with `gettext`: about 31 KB
//!   more, and with them gettext's message catalogues.
//!
//! Defining both here keeps those objects out: the static binary is
//! ~164 KB smaller and does the same things. Only the static build
//! exports them (`crt-static`); the dynamic build used by `cargo test`
//! keeps glibc's, and the logic below is unit-tested in both.

// Only the static build calls these (through the linker): the dynamic
// build compiles them for the unit tests alone.
#![cfg_attr(not(all(target_feature = "crt-static", not(test))), allow(dead_code))]

use std::ffi::{c_char, c_int};

/// Where the main thread's stack is, the way glibc's `pthread_getattr_np`
/// works it out: the top is the page after the stack's innermost address,
/// `top`, rounded up; the size is `RLIMIT_STACK` less the part of the
/// mapping above `top`, rounded down to a page, and never reaching into the
/// mapping below. `maps` is `/proc/self/maps`, read in any pieces. Returns
/// (lowest address, size) or None when no mapping holds `top`.
#[derive(Default)]
pub struct StackFinder {
    /// The start and end of the line being read, and which of the two the
    /// next hex digit belongs to (0, 1, or 2 once the rest of the line is
    /// skipped).
    from: usize,
    to: usize,
    field: u8,
    /// The end of the last mapping wholly before the stack.
    last_to: usize,
    found: Option<(usize, usize)>,
}

impl StackFinder {
    /// Reads the next piece of the maps file; `inner` is an address in the
    /// stack (glibc uses `__libc_stack_end`).
    pub fn feed(&mut self, piece: &[u8], inner: usize) {
        for &b in piece {
            if self.found.is_some() {
                return;
            }
            match (self.field, b) {
                (_, b'\n') => {
                    if self.field == 2 && self.from <= inner && inner < self.to {
                        self.found = Some((self.from, self.to));
                    } else if self.field == 2 {
                        self.last_to = self.to;
                    }
                    (self.from, self.to, self.field) = (0, 0, 0);
                }
                (0, b'-') => self.field = 1,
                (1, b' ') => self.field = 2,
                (0 | 1, _) => {
                    let Some(d) = (b as char).to_digit(16) else {
                        // Not a maps line: skip it.
                        self.field = 3;
                        continue;
                    };
                    let v = if self.field == 0 {
                        &mut self.from
                    } else {
                        &mut self.to
                    };
                    *v = v.wrapping_shl(4) | d as usize;
                }
                _ => {}
            }
        }
    }

    /// The stack's lowest address and size, given the stack limit and the
    /// page size.
    pub fn stack(&self, inner: usize, rlimit: u64, page: usize) -> Option<(usize, usize)> {
        let (_, to) = self.found?;
        let top = (inner & !(page - 1)) + page;
        let size = usize::try_from(rlimit)
            .unwrap_or(usize::MAX)
            .saturating_sub(to.saturating_sub(top))
            & !(page - 1);
        let size = size.min(top.saturating_sub(self.last_to));
        Some((top - size, size))
    }
}

/// The text glibc's `assert` prints, without gettext and printf, into
/// `out` (cut short if it does not fit): `pminit: file:line: function:
/// Assertion `expr' failed.` Returns its length. No allocation: the
/// assertion may be malloc's own.
pub fn assert_message(
    out: &mut [u8],
    expr: &[u8],
    file: &[u8],
    line: u32,
    function: &[u8],
) -> usize {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut n = line;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let sep: &[u8] = if function.is_empty() { b"" } else { b": " };
    let parts: [&[u8]; 10] = [
        b"pminit: ",
        file,
        b":",
        &digits[at..],
        b": ",
        function,
        sep,
        b"Assertion `",
        expr,
        b"' failed.\n",
    ];
    let mut len = 0;
    for p in parts {
        let take = p.len().min(out.len() - len);
        out[len..len + take].copy_from_slice(&p[..take]);
        len += take;
    }
    len
}

/// The bytes of a C string, or none for a null pointer.
///
/// # Safety
/// `p` is null or points at a NUL-terminated string that outlives the call.
unsafe fn c_bytes<'a>(p: *const c_char) -> &'a [u8] {
    if p.is_null() {
        return b"";
    }
    // SAFETY: the caller's promise: non-null and NUL-terminated.
    unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes()
}

/// glibc's `assert` failure: one line on stderr, then `abort`.
///
/// # Safety
/// The pointers are null or NUL-terminated strings, as glibc passes them.
#[cfg_attr(all(target_feature = "crt-static", not(test)), no_mangle)]
pub unsafe extern "C" fn __assert_fail(
    expr: *const c_char,
    file: *const c_char,
    line: u32,
    function: *const c_char,
) -> ! {
    let mut m = [0u8; 512];
    // SAFETY: glibc passes string literals (or null).
    let n = unsafe {
        assert_message(
            &mut m,
            c_bytes(expr),
            c_bytes(file),
            line,
            c_bytes(function),
        )
    };
    // SAFETY: writing a live buffer to fd 2; a failed write changes nothing.
    unsafe { libc::write(2, m.as_ptr().cast(), n) };
    // SAFETY: abort takes no arguments and does not return.
    unsafe { libc::abort() }
}

/// glibc's `pthread_getattr_np` for the one thread pminit has: the main
/// thread's stack from `/proc/self/maps` and `RLIMIT_STACK` (StackFinder).
/// Any other thread, or a failure, is an error number, which std takes as
/// "no stack information" (it then names no stack overflow).
///
/// # Safety
/// `attr` points at writable memory for a `pthread_attr_t`, as the
/// function's contract says.
#[cfg_attr(all(target_feature = "crt-static", not(test)), no_mangle)]
pub unsafe extern "C" fn pthread_getattr_np(
    thread: libc::pthread_t,
    attr: *mut libc::pthread_attr_t,
) -> c_int {
    // SAFETY: the caller gives a writable pthread_attr_t.
    let e = unsafe { libc::pthread_attr_init(attr) };
    if e != 0 {
        return e;
    }
    // SAFETY: no arguments; gettid and getpid cannot fail.
    let main = unsafe { libc::pthread_self() == thread && libc::gettid() == libc::getpid() };
    let found = if main { main_stack() } else { None };
    match found {
        // SAFETY: attr was initialised above; the range is the stack's.
        Some((low, size)) => unsafe { libc::pthread_attr_setstack(attr, low as *mut _, size) },
        None => libc::ENOSYS,
    }
}

extern "C" {
    /// glibc's record of the stack pointer at process start: the main
    /// thread's stack, near its top.
    static __libc_stack_end: *const std::ffi::c_void;
}

/// The main thread's stack: (lowest address, size).
fn main_stack() -> Option<(usize, usize)> {
    // SAFETY: glibc sets it before any Rust code runs and never again.
    let inner = unsafe { __libc_stack_end } as usize;
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: rl is a writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut rl) } != 0 {
        return None;
    }
    // SAFETY: sysconf has no memory arguments.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    // SAFETY: a NUL-terminated path literal.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut finder = StackFinder::default();
    let mut buf = [0u8; 1024];
    loop {
        // SAFETY: reading into a live buffer of its own length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        finder.feed(&buf[..n as usize], inner);
    }
    // SAFETY: fd was opened above and is closed once.
    unsafe { libc::close(fd) };
    finder.stack(inner, rl.rlim_cur, page)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &[u8] = b"\
55d0c0000000-55d0c0100000 r-xp 00000000 08:01 123 /pminit
55d0c0100000-55d0c0110000 rw-p 00000000 00:00 0 [heap]
7ffc10000000-7ffc10800000 rw-p 00000000 00:00 0
7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0                          [stack]
7ffd1c1f0000-7ffd1c1f4000 r--p 00000000 00:00 0                          [vvar]
";

    fn find(pieces: &[&[u8]], inner: usize) -> StackFinder {
        let mut f = StackFinder::default();
        for p in pieces {
            f.feed(p, inner);
        }
        f
    }

    #[test]
    fn the_stack_is_the_mapping_holding_the_address_however_the_file_is_cut() {
        let inner = 0x7ffd_1c01_ff10;
        for cut in 0..MAPS.len() {
            let f = find(&[&MAPS[..cut], &MAPS[cut..]], inner);
            assert_eq!(
                f.found,
                Some((0x7ffd_1c00_0000, 0x7ffd_1c02_1000)),
                "cut at {cut}"
            );
            assert_eq!(f.last_to, 0x7ffc_1080_0000, "cut at {cut}");
        }
    }

    #[test]
    fn the_size_is_the_limit_less_what_lies_above_cut_to_pages() {
        let inner = 0x7ffd_1c01_ff10;
        let f = find(&[MAPS], inner);
        let top = 0x7ffd_1c02_0000;
        // 8 MiB limit, 0x1000 of the mapping above the top.
        assert_eq!(
            f.stack(inner, 8 << 20, 4096),
            Some((top - ((8 << 20) - 0x1000), (8 << 20) - 0x1000))
        );
        // No limit: down to the mapping below, no further.
        let gap = top - 0x7ffc_1080_0000;
        assert_eq!(f.stack(inner, u64::MAX, 4096), Some((top - gap, gap)));
        // A limit that is not a page multiple is cut down to one.
        assert_eq!(
            f.stack(inner, (1 << 20) + 100, 4096),
            Some((top - ((1 << 20) - 0x1000), (1 << 20) - 0x1000))
        );
    }

    #[test]
    fn an_address_in_no_mapping_finds_nothing() {
        let f = find(&[MAPS], 0x1000);
        assert_eq!(f.stack(0x1000, 8 << 20, 4096), None);
        let f = find(&[b"garbage-line\nnot hex at all\n"], 0x1000);
        assert_eq!(f.found, None);
    }

    #[test]
    fn this_threads_own_stack_is_found() {
        // In this (dynamic) test binary glibc's pthread_getattr_np is the
        // real one; ours must agree with it on the main thread's maps,
        // but tests run on other threads, so compare the mapping instead.
        let here = 0u8;
        let inner = std::ptr::addr_of!(here) as usize;
        let maps = std::fs::read("/proc/self/maps").expect("maps");
        let f = find(&[&maps], inner);
        let (from, to) = f.found.expect("a mapping holds this stack");
        assert!(from <= inner && inner < to);
    }

    #[test]
    fn the_assert_line_is_glibcs_and_cut_to_the_buffer() {
        let mut out = [0u8; 512];
        let n = assert_message(&mut out, b"x > 0", b"malloc.c", 42, b"sysmalloc");
        assert_eq!(
            &out[..n],
            b"pminit: malloc.c:42: sysmalloc: Assertion `x > 0' failed.\n"
        );
        let n = assert_message(&mut out, b"p", b"f.c", 0, b"");
        assert_eq!(&out[..n], b"pminit: f.c:0: Assertion `p' failed.\n");
        let n = assert_message(&mut out, b"p", b"f.c", u32::MAX, b"");
        assert_eq!(
            &out[..n],
            b"pminit: f.c:4294967295: Assertion `p' failed.\n"
        );
        let mut small = [0u8; 12];
        let n = assert_message(&mut small, b"p", b"file.c", 1, b"f");
        assert_eq!(&small[..n], b"pminit: file");
    }
}
