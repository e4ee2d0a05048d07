//! `--listen` addresses: their forms, parsing, and the pairs that overlap
//! (the same port on the same or a covering host), which are refused.

use super::*;

/// What `--listen` accepts, for error messages.
pub const ADDR_FORMS: &str =
    "PORT, HOST:PORT, [V6]:PORT or unix:PATH (HOST an IP address, * or localhost; PORT 1-65535)";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    /// `PORT` or `*:PORT`: every interface, IPv6 and IPv4 when the host has
    /// IPv6, else IPv4.
    AnyPort(u16),
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::AnyPort(p) => write!(f, "{p}"),
            Addr::Tcp(sa) => write!(f, "{sa}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

fn port(s: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        Ok(p) => Err(format!("port {p} is out of range 1-65535")),
        Err(_) => Err(format!("expected {ADDR_FORMS}")),
    }
}

/// Parses one `--listen` value; the error says what is wrong with it.
pub fn parse_addr(s: &str) -> Result<Addr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a path, as in unix:/run/app.sock".to_string());
        }
        return Ok(Addr::Unix(PathBuf::from(path)));
    }
    if !s.contains(':') {
        return port(s).map(Addr::AnyPort);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, p) = rest
            .split_once("]:")
            .ok_or_else(|| format!("expected {ADDR_FORMS}"))?;
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv6 address"))?;
        return Ok(Addr::Tcp(SocketAddr::V6(SocketAddrV6::new(
            ip,
            port(p)?,
            0,
            0,
        ))));
    }
    let (host, p) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("expected {ADDR_FORMS}"))?;
    let p = port(p)?;
    let ip: IpAddr = match host {
        "*" | "" => return Ok(Addr::AnyPort(p)),
        // A static glibc cannot resolve names (no NSS); this one is certain.
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h if h.contains(':') => {
            return Err(format!("write an IPv6 address in brackets: [{h}]:{p}"))
        }
        h => h.parse().map_err(|_| {
            format!("{h:?} is not an IP address (pminit does not resolve host names)")
        })?,
    };
    Ok(Addr::Tcp(SocketAddr::new(ip, p)))
}

/// Whether two `--listen` addresses would take the same port (or path):
/// the same address; a wildcard and any address of its family; `[::]` (and
/// a plain PORT, which binds it) dual-stack, so also every IPv4 address.
fn overlap(a: &Addr, b: &Addr) -> bool {
    // (port, ip) where None is a dual-stack wildcard.
    fn tcp(a: &Addr) -> Option<(u16, Option<IpAddr>)> {
        match a {
            Addr::AnyPort(p) => Some((*p, None)),
            Addr::Tcp(sa) if sa.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => {
                Some((sa.port(), None))
            }
            // A v4-mapped v6 address is that v4 address.
            Addr::Tcp(SocketAddr::V6(v6)) => Some((
                v6.port(),
                Some(
                    v6.ip()
                        .to_ipv4_mapped()
                        .map_or(IpAddr::V6(*v6.ip()), IpAddr::V4),
                ),
            )),
            Addr::Tcp(sa) => Some((sa.port(), Some(sa.ip()))),
            Addr::Unix(_) => None,
        }
    }
    match (a, b) {
        (Addr::Unix(x), Addr::Unix(y)) => x == y,
        _ => match (tcp(a), tcp(b)) {
            (Some((pa, ia)), Some((pb, ib))) if pa == pb => match (ia, ib) {
                (None, _) | (_, None) => true,
                (Some(x), Some(y)) => {
                    x == y
                        || (x.is_unspecified() && x.is_ipv4() == y.is_ipv4())
                        || (y.is_unspecified() && x.is_ipv4() == y.is_ipv4())
                }
            },
            _ => false,
        },
    }
}

/// Refuses two `--listen` addresses that would take the same port: pminit
/// would bind both (SO_REUSEPORT), and the kernel would split connections
/// between them at random. The error names both.
pub fn check_overlaps(addrs: &[Addr]) -> Result<(), String> {
    for (i, a) in addrs.iter().enumerate() {
        if let Some(b) = addrs[i + 1..].iter().find(|b| overlap(a, b)) {
            return Err(format!(
                "{a} and {b} overlap (both would take {}); give each address once",
                match a {
                    Addr::Unix(p) => format!("{}", p.display()),
                    Addr::AnyPort(p) => format!("port {p}"),
                    Addr::Tcp(sa) => format!("port {}", sa.port()),
                }
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let v4 = |s: &str| Addr::Tcp(s.parse().expect("valid"));
        let table: &[(&str, Result<Addr, &str>)] = &[
            ("3000", Ok(Addr::AnyPort(3000))),
            ("*:80", Ok(Addr::AnyPort(80))),
            (":80", Ok(Addr::AnyPort(80))),
            ("127.0.0.1:3000", Ok(v4("127.0.0.1:3000"))),
            ("0.0.0.0:8080", Ok(v4("0.0.0.0:8080"))),
            ("localhost:3000", Ok(v4("127.0.0.1:3000"))),
            ("[::1]:3000", Ok(v4("[::1]:3000"))),
            ("[::]:443", Ok(v4("[::]:443"))),
            ("unix:/run/app.sock", Ok(Addr::Unix("/run/app.sock".into()))),
            ("0", Err("out of range")),
            ("65536", Err("out of range")),
            ("abc", Err("PORT, HOST:PORT")),
            ("", Err("PORT, HOST:PORT")),
            ("1.2.3.4:", Err("PORT, HOST:PORT")),
            ("1.2.3.4:99999", Err("out of range")),
            ("example.com:80", Err("does not resolve host names")),
            ("::1:3000", Err("brackets")),
            ("[::1]3000", Err("PORT, HOST:PORT")),
            ("[zz]:3000", Err("not an IPv6 address")),
            ("unix:", Err("needs a path")),
        ];
        for (input, want) in table {
            match (parse_addr(input), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{input:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{input:?}: {got}"),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn overlapping_addresses() {
        let a = |s: &str| parse_addr(s).expect("valid");
        let table: &[(&str, &str, bool)] = &[
            ("3000", "3000", true),
            ("3000", "127.0.0.1:3000", true),
            ("3000", "[::1]:3000", true),
            ("0.0.0.0:3000", "127.0.0.1:3000", true),
            ("[::]:3000", "0.0.0.0:3000", true),
            ("[::]:3000", "127.0.0.1:3000", true),
            ("[::]:3000", "[::1]:3000", true),
            ("127.0.0.1:3000", "127.0.0.1:3000", true),
            ("[::ffff:127.0.0.1]:3000", "127.0.0.1:3000", true),
            ("[::ffff:127.0.0.1]:3000", "0.0.0.0:3000", true),
            ("unix:/run/a.sock", "unix:/run/a.sock", true),
            ("3000", "3001", false),
            ("127.0.0.1:3000", "127.0.0.2:3000", false),
            ("0.0.0.0:3000", "[::1]:3000", false),
            ("[::1]:3000", "127.0.0.1:3000", false),
            ("unix:/run/a.sock", "unix:/run/b.sock", false),
            ("unix:/run/3000", "3000", false),
        ];
        for (x, y, want) in table {
            assert_eq!(overlap(&a(x), &a(y)), *want, "{x} vs {y}");
            assert_eq!(overlap(&a(y), &a(x)), *want, "{y} vs {x}");
        }
        let err = check_overlaps(&[a("8080"), a("9090"), a("127.0.0.1:8080")]).unwrap_err();
        assert!(err.contains("8080 and 127.0.0.1:8080"), "{err}");
        assert!(check_overlaps(&[a("8080"), a("9090")]).is_ok());
    }
}
