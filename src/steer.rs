//! Classic BPF programs that pick the socket of a `SO_REUSEPORT` group a new
//! connection goes to (`SO_ATTACH_REUSEPORT_CBPF`, attached by
//! `listen::Sockets::steer`).
//!
//! A program's result is an index into the group: sockets are numbered in
//! the order they called `listen()`, and pminit binds slot i's socket i-th
//! and never closes one, so the index is the slot. A result past the
//! group's end makes the kernel use its own hash instead.
//!
//! - `random` (`--socket-layout per-worker`): a random pick among the slots
//!   whose worker is ready.
//! - `sticky` (`--sticky`): a hash of the client's source address picks the
//!   slot, so one address always reaches the same slot; while that slot has
//!   no ready worker its addresses are spread, again by hash, over the
//!   slots that have one.
//!
//! Facts these rest on, checked on Linux 6.18 (a Python experiment first,
//! now `tests/sticky.rs`, which predicts every client's slot from the
//! hash): the program runs on the SYN with `SKF_NET_OFF` at the IP header;
//! the source address is at +12 (IPv4) or +8..+24 (IPv6), in network byte
//! order; IPv4 clients of a dual-stack `[::]` socket arrive with an IPv4
//! header, so the version nibble must be read first. Programs must stay
//! within the kernel's `BPF_MAXINSNS` (4096), with jump offsets within a
//! byte; `sticky` for the largest group (1024 slots) is at most 2,625
//! instructions (every other slot down).

use libc::sock_filter;

type Prog = Vec<sock_filter>;

fn ins(code: u32, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// `A = k` (a constant result) and `return k`.
fn ret(k: u32) -> sock_filter {
    ins(libc::BPF_RET | libc::BPF_K, 0, 0, k)
}

fn ret_a() -> sock_filter {
    ins(libc::BPF_RET | libc::BPF_A, 0, 0, 0)
}

fn alu(op: u32, k: u32) -> sock_filter {
    ins(libc::BPF_ALU | op | libc::BPF_K, 0, 0, k)
}

/// `A = the 32-bit word at the IP header + off` (network byte order).
fn load_net_word(off: u32) -> sock_filter {
    ins(
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        0,
        0,
        (libc::SKF_NET_OFF as u32).wrapping_add(off),
    )
}

fn tax() -> sock_filter {
    ins(libc::BPF_MISC | libc::BPF_TAX, 0, 0, 0)
}

fn xor_x() -> sock_filter {
    ins(libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X, 0, 0, 0)
}

/// Scrambles A so that every input bit moves every output bit: the
/// well-known 32-bit finaliser of murmur3 (xor-shift, multiply, xor-shift,
/// multiply, xor-shift). Without it `mod N` sees only the address's low
/// bits: consecutive addresses spread, strided ones (every 4th, every
/// /24) all land on one slot.
fn mix(p: &mut Prog) {
    for (shift, mul) in [(16, Some(0x85eb_ca6b)), (13, Some(0xc2b2_ae35)), (16, None)] {
        p.push(tax());
        p.push(alu(libc::BPF_RSH, shift));
        p.push(xor_x());
        if let Some(m) = mul {
            p.push(alu(libc::BPF_MUL, m));
        }
    }
}

/// The same function in Rust, for tests and for predicting slots.
#[cfg(test)]
pub fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The hash `sticky` computes of a source address, in Rust.
#[cfg(test)]
pub fn address_hash(ip: std::net::IpAddr) -> u32 {
    match ip {
        std::net::IpAddr::V4(v4) => mix32(u32::from(v4)),
        std::net::IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            let mut h = mix32(w(0));
            for i in [4, 8, 12] {
                h = mix32(h ^ w(i));
            }
            h
        }
    }
}

/// A random pick among `live` (the slots whose worker is ready). With none
/// live, the kernel's own hash decides (connections wait in the queues for
/// the replacements).
pub fn random(live: &[u32]) -> Prog {
    const SKF_AD_RANDOM: u32 = 56;
    if live.is_empty() {
        return vec![ret(u32::MAX)];
    }
    let mut p = vec![
        ins(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            0,
            0,
            (libc::SKF_AD_OFF as u32).wrapping_add(SKF_AD_RANDOM),
        ),
        alu(libc::BPF_MOD, live.len() as u32),
    ];
    pick_live(&mut p, live);
    p
}

/// `return live[A]` for A < live.len() (A is already reduced mod that).
fn pick_live(p: &mut Prog, live: &[u32]) {
    for (i, &slot) in live.iter().enumerate() {
        // if A == i: return slot, else skip that return
        p.push(ins(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            i as u32,
        ));
        p.push(ret(slot));
    }
    p.push(ret(live[0]));
}

/// Source-address affinity for a group of `group` sockets (slots 0 to
/// group-1), `live` (sorted, each below `group`) being the slots whose
/// worker is ready:
///
/// 1. h = hash of the source address (IPv4: its 4 bytes; IPv6: its 16, a
///    word at a time; the IP version is read from the packet, so one
///    program serves IPv4, IPv6 and dual-stack sockets);
/// 2. slot h mod `group`, when it is live;
/// 3. else live[(h / group) mod live.len()]: the addresses of a slot that is
///    down spread evenly over the live ones (the quotient, not h itself,
///    so that they do not all pick the same one), while every other
///    address keeps its slot.
///
/// With none live, the kernel's own hash decides (connections wait in the
/// queues for the replacements).
pub fn sticky(group: u32, live: &[u32]) -> Prog {
    if live.is_empty() || group == 0 {
        return vec![ret(u32::MAX)];
    }
    // IPv6: fold the four words of the source address into A.
    let mut v6 = vec![load_net_word(8)];
    for off in [12, 16, 20] {
        mix(&mut v6);
        v6.push(tax());
        v6.push(load_net_word(off));
        v6.push(xor_x());
    }
    v6.push(ins(libc::BPF_JMP | libc::BPF_JA, 0, 0, 1)); // over the IPv4 load
    let mut p = vec![
        // A = IP version: the high nibble of the header's first byte.
        ins(
            libc::BPF_LD | libc::BPF_B | libc::BPF_ABS,
            0,
            0,
            libc::SKF_NET_OFF as u32,
        ),
        alu(libc::BPF_RSH, 4),
        // `v6` is 44 instructions: the offset fits in a byte.
        ins(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            v6.len() as u8,
            6,
        ),
    ];
    p.extend(v6);
    p.push(load_net_word(12)); // IPv4 source address
    mix(&mut p);
    p.push(ins(libc::BPF_ST, 0, 0, 0)); // M[0] = h
    p.push(alu(libc::BPF_MOD, group));
    if live.len() == group as usize {
        p.push(ret_a());
        return p;
    }
    // Runs of consecutive live slots: if first <= A <= last, return A.
    let mut i = 0;
    while i < live.len() {
        let first = live[i];
        while i + 1 < live.len() && live[i + 1] == live[i] + 1 {
            i += 1;
        }
        let last = live[i];
        i += 1;
        p.push(ins(
            libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
            0,
            2,
            first,
        ));
        p.push(ins(libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K, 1, 0, last));
        p.push(ret_a());
    }
    // A's slot is down.
    p.push(ins(libc::BPF_LD | libc::BPF_MEM, 0, 0, 0));
    p.push(alu(libc::BPF_DIV, group));
    p.push(alu(libc::BPF_MOD, live.len() as u32));
    pick_live(&mut p, live);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// What the kernel would run: a classic BPF interpreter for the
    /// instructions these programs use, over an IP header and a random word.
    pub fn run(prog: &[sock_filter], packet: &[u8], random: u32) -> u32 {
        let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
        let net = libc::SKF_NET_OFF as u32;
        let load = |k: u32, width: usize| -> u32 {
            if k == (libc::SKF_AD_OFF as u32).wrapping_add(56) {
                return random;
            }
            let off = k.wrapping_sub(net) as usize;
            let bytes = &packet[off..off + width];
            bytes.iter().fold(0, |acc, &b| (acc << 8) | u32::from(b))
        };
        let mut pc = 0;
        for _ in 0..libc::BPF_MAXINSNS {
            let i = prog[pc];
            let code = u32::from(i.code);
            pc += 1;
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => a = load(i.k, 4),
                c if c == libc::BPF_LD | libc::BPF_B | libc::BPF_ABS => a = load(i.k, 1),
                c if c == libc::BPF_LD | libc::BPF_MEM => a = mem[i.k as usize],
                c if c == libc::BPF_ST => mem[i.k as usize] = a,
                c if c == libc::BPF_MISC | libc::BPF_TAX => x = a,
                c if c == libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X => a ^= x,
                c if c == libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K => a >>= i.k,
                c if c == libc::BPF_ALU | libc::BPF_MUL | libc::BPF_K => a = a.wrapping_mul(i.k),
                c if c == libc::BPF_ALU | libc::BPF_DIV | libc::BPF_K => a /= i.k,
                c if c == libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K => a %= i.k,
                c if c == libc::BPF_JMP | libc::BPF_JA => pc += i.k as usize,
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                    pc += usize::from(if a == i.k { i.jt } else { i.jf })
                }
                c if c == libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K => {
                    pc += usize::from(if a >= i.k { i.jt } else { i.jf })
                }
                c if c == libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K => {
                    pc += usize::from(if a > i.k { i.jt } else { i.jf })
                }
                c if c == libc::BPF_RET | libc::BPF_K => return i.k,
                c if c == libc::BPF_RET | libc::BPF_A => return a,
                c => panic!("opcode {c:#x} at {}", pc - 1),
            }
        }
        panic!("no return within BPF_MAXINSNS steps");
    }

    /// The start of an IP header from `src` (what the program reads).
    fn header(src: IpAddr) -> Vec<u8> {
        match src {
            IpAddr::V4(v4) => {
                let mut h = vec![0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0];
                h.extend(v4.octets());
                h.extend([127, 0, 0, 1]);
                h
            }
            IpAddr::V6(v6) => {
                let mut h = vec![0x60, 0, 0, 0, 0, 40, 6, 64];
                h.extend(v6.octets());
                h.extend(Ipv6Addr::LOCALHOST.octets());
                h
            }
        }
    }

    fn v4(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(i))
    }

    #[test]
    fn random_maps_the_random_word_to_live_slots() {
        let live = [0, 2, 3];
        let prog = random(&live);
        let mut hits = [0; 4];
        for r in 0..300u32 {
            hits[run(&prog, &[], r) as usize] += 1;
        }
        assert_eq!(hits[1], 0, "slot 1 is down: {hits:?}");
        assert!(
            hits.iter().enumerate().all(|(i, &h)| i == 1 || h == 100),
            "{hits:?}"
        );
        assert_eq!(run(&random(&[]), &[], 7), u32::MAX);
    }

    #[test]
    fn sticky_computes_the_address_hash_for_ipv4_and_ipv6() {
        let none = sticky(4, &[]);
        assert_eq!(none.len(), 1, "none live: the kernel's hash");
        assert_eq!(run(&none, &header(v4(1)), 0), u32::MAX);
        let addrs = [
            v4(0x7f00_0001),
            v4(0x7f00_0002),
            v4(0x0a00_0400),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            "fd00::2".parse().expect("v6"),
            "2001:db8:1:2:3:4:5:6".parse().expect("v6"),
        ];
        for ip in addrs {
            // The program up to `M[0] = h`, then `return A`: h itself.
            let mut prog = sticky(4, &[0, 1, 2, 3]);
            let st = prog
                .iter()
                .position(|i| u32::from(i.code) == libc::BPF_ST)
                .expect("st");
            prog.truncate(st + 1);
            prog.push(ret_a());
            assert_eq!(run(&prog, &header(ip), 0), address_hash(ip), "{ip}");
        }
    }

    #[test]
    fn sticky_keeps_each_address_on_its_slot_while_it_is_live() {
        for group in 1..=6u32 {
            // Every non-empty set of live slots.
            for mask in 1u32..(1 << group) {
                let live: Vec<u32> = (0..group).filter(|s| mask & (1 << s) != 0).collect();
                let prog = sticky(group, &live);
                for i in 0..500u32 {
                    for ip in [
                        v4(0x7f00_0000 + i),
                        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i as u16)),
                    ] {
                        let h = address_hash(ip);
                        let got = run(&prog, &header(ip), 0);
                        assert!(live.contains(&got), "{group} {live:?} {ip}: {got}");
                        if live.contains(&(h % group)) {
                            assert_eq!(got, h % group, "{group} {live:?} {ip}");
                        } else {
                            let want = live[((h / group) % live.len() as u32) as usize];
                            assert_eq!(got, want, "{group} {live:?} {ip}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sticky_spreads_the_addresses_of_a_slot_that_is_down() {
        // Slot 1 of 4 is down: its addresses go to the three others, evenly.
        let prog = sticky(4, &[0, 2, 3]);
        let mut moved = [0u32; 4];
        for i in 0..40_000u32 {
            let ip = v4(0x0a00_0000 + i);
            if address_hash(ip) % 4 == 1 {
                moved[run(&prog, &header(ip), 0) as usize] += 1;
            }
        }
        let total: u32 = moved.iter().sum();
        assert_eq!(moved[1], 0);
        for s in [0, 2, 3] {
            assert!(
                moved[s] * 3 > total * 9 / 10 && moved[s] * 3 < total * 11 / 10,
                "{moved:?}"
            );
        }
    }

    #[test]
    fn sticky_spreads_strided_addresses_too() {
        // 127.0.0.2 to .9 (the acceptance test's clients) reach at least 3
        // of 4 slots; so do addresses 256 or 1024 apart, which a bare
        // `mod 4` would all put on one slot.
        let prog = sticky(4, &[0, 1, 2, 3]);
        let slots = |ips: Vec<IpAddr>| {
            let mut seen = [0u32; 4];
            for ip in &ips {
                seen[run(&prog, &header(*ip), 0) as usize] += 1;
            }
            seen
        };
        let seen = slots((2..10).map(|i| v4(0x7f00_0000 + i)).collect());
        assert!(seen.iter().filter(|&&n| n > 0).count() >= 3, "{seen:?}");
        for stride in [4, 256, 1024, 1 << 16] {
            let seen = slots((0..4000).map(|i| v4(0x0a00_0000 + i * stride)).collect());
            assert!(
                seen.iter().all(|&n| n > 800 && n < 1200),
                "{stride}: {seen:?}"
            );
            let v6: Vec<IpAddr> = (0..4000u32)
                .map(|i| IpAddr::V6(Ipv6Addr::from(0xfd00u128 << 112 | u128::from(i * stride))))
                .collect();
            let seen = slots(v6);
            assert!(
                seen.iter().all(|&n| n > 800 && n < 1200),
                "v6 {stride}: {seen:?}"
            );
        }
    }

    #[test]
    fn sticky_fits_the_kernel_limits_at_the_largest_group() {
        // -i accepts up to 1024. Worst cases: one slot down; every other one.
        let one_down: Vec<u32> = (1..1024).collect();
        let alternate: Vec<u32> = (0..1024).step_by(2).collect();
        for live in [one_down, alternate, (0..1024).collect()] {
            let prog = sticky(1024, &live);
            assert!(prog.len() <= libc::BPF_MAXINSNS as usize, "{}", prog.len());
            assert_eq!(u32::from(prog[prog.len() - 1].code) & 0x07, libc::BPF_RET);
        }
        assert!(random(&(0..1024).collect::<Vec<_>>()).len() <= libc::BPF_MAXINSNS as usize);
    }
}
