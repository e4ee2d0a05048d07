//! Node workers: recognising them, and the preload that lets an unmodified
//! `server.listen(PORT)` land on the socket pminit holds.

use crate::listen::FdInfo;

/// The preload's source, shipped inside the binary.
const PRELOAD: &str = include_str!("preload.mjs");

/// The variable that carries the fd map to the preload.
pub const LISTEN_VAR: &str = "PMINIT_NODE_LISTEN";
/// The IPC channel's fd number, for a preload whose process has no channel
/// of its own (the app under `npm start`: npm's process owns the channel).
pub const REPORT_VAR: &str = "PMINIT_REPORT_FD";
/// The signal that asks the worker to stop, for the preload's drain.
pub const STOP_SIGNAL_VAR: &str = "PMINIT_STOP_SIGNAL";

/// A command that ends up running Node: `node app.js`, `npm start`, ...
pub fn is_node_command(argv0: &str) -> bool {
    let name = argv0.rsplit('/').next().unwrap_or(argv0);
    matches!(name, "node" | "nodejs" | "npm" | "npx" | "yarn" | "pnpm")
}

/// The NODE_OPTIONS a Node worker gets: the user's own, then the preload.
/// base64, because raw JS would break NODE_OPTIONS' quoting, and a data:
/// URL, because `--import` accepts one and nothing lands on disk.
pub fn node_options(existing: Option<&str>) -> String {
    let import = format!(
        "--import=data:text/javascript;base64,{}",
        base64(PRELOAD.as_bytes())
    );
    match existing.map(str::trim).filter(|s| !s.is_empty()) {
        Some(user) => format!("{user} {import}"),
        None => import,
    }
}

/// The JSON map the preload reads; `fd` numbers are as the worker sees them.
pub fn listen_map(fds: &[FdInfo]) -> String {
    let entries: Vec<serde_json::Value> = fds
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let fd = 3 + i;
            match &f.path {
                Some(path) => serde_json::json!({ "fd": fd, "path": path }),
                None => serde_json::json!({ "fd": fd, "port": f.port, "host": f.host }),
            }
        })
        .collect();
    serde_json::Value::Array(entries).to_string()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        let table = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in table {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn node_commands() {
        for yes in [
            "node",
            "/usr/bin/node",
            "nodejs",
            "npm",
            "/usr/local/bin/npx",
            "yarn",
            "pnpm",
        ] {
            assert!(is_node_command(yes), "{yes}");
        }
        for no in [
            "python3",
            "sh",
            "/opt/node/bin/nodemon",
            "deno",
            "bun",
            "node.sh",
        ] {
            assert!(!is_node_command(no), "{no}");
        }
    }

    #[test]
    fn node_options_keep_the_users_own() {
        assert!(node_options(None).starts_with("--import=data:text/javascript;base64,"));
        assert!(node_options(Some("  ")).starts_with("--import="));
        let both = node_options(Some("--max-old-space-size=512"));
        assert!(both.starts_with("--max-old-space-size=512 --import=data:"));
        assert!(
            !both.contains(' ') || both.matches(' ').count() == 1,
            "no stray spaces"
        );
    }

    #[test]
    fn listen_map_numbers_fds_from_3() {
        let fds = [
            FdInfo {
                fd: 17,
                port: Some(3000),
                host: Some("::".into()),
                path: None,
            },
            FdInfo {
                fd: 9,
                port: None,
                host: None,
                path: Some("/run/a.sock".into()),
            },
        ];
        let v: serde_json::Value = serde_json::from_str(&listen_map(&fds)).expect("json");
        assert_eq!(
            v,
            serde_json::json!([{"fd":3,"port":3000,"host":"::"},{"fd":4,"path":"/run/a.sock"}])
        );
    }
}
