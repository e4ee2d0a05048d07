//! Node workers: recognising them, and the preload that lets an unmodified
//! `server.listen(PORT)` land on the socket pminit holds.

use crate::listen::FdInfo;

/// The preload's source, shipped inside the binary with its comment-only
/// lines blanked (build.rs).
const PRELOAD: &str = include_str!(concat!(env!("OUT_DIR"), "/preload.mjs"));

/// Set for a Node worker pminit starts itself: its IPC channel leads to
/// pminit, so its preload may ask for sockets there. The preload removes
/// it, so the app's own children never ask.
pub const CHANNEL_VAR: &str = "PMINIT_IPC";

/// The preload's name in stack traces.
pub const PRELOAD_NAME: &str = "pminit:preload";

/// The variable that carries the fd map to the preload.
pub const LISTEN_VAR: &str = "PMINIT_NODE_LISTEN";
/// The IPC channel's fd number, for a preload whose process has no channel
/// of its own (the app under `npm start`: npm's process owns the channel).
pub const REPORT_VAR: &str = "PMINIT_REPORT_FD";
/// The signal that asks the worker to stop, for the preload's drain.
pub const STOP_SIGNAL_VAR: &str = "PMINIT_STOP_SIGNAL";
/// Bytes of memory (RSS) past which the preload, after a garbage
/// collection, asks pminit to look at the worker now rather than at its
/// next round (a fast leak). pminit measures for itself; this only hurries.
pub const MEMORY_REPORT_VAR: &str = "PMINIT_MEMORY_REPORT";

/// A command that ends up running Node: `node app.js`, `npm start`, ...
pub fn is_node_command(argv0: &str) -> bool {
    let name = argv0.rsplit('/').next().unwrap_or(argv0);
    matches!(name, "node" | "nodejs" | "npm" | "npx" | "yarn" | "pnpm")
}

/// How much of a script's start pminit reads for its `#!` line (the
/// kernel itself reads at most 256 bytes of it since Linux 5.1).
pub const SHEBANG_MAX: usize = 256;

/// Whether a file starting with `head` is a script that Node runs:
/// `#!/usr/bin/env node`, `#!/usr/bin/env -S node --flags`,
/// `#!/usr/local/bin/node`, `#!/usr/bin/nodejs` (how `next start`,
/// `nest start` and every `node_modules/.bin` tool begin).
pub fn is_node_shebang(head: &[u8]) -> bool {
    shebang_interpreter(head).is_some_and(|name| matches!(name.as_str(), "node" | "nodejs"))
}

/// The base name of the program a `#!` line runs, looking through `env`
/// and its options (`#!/usr/bin/env -S NAME=V node --flags` is `node`).
pub fn shebang_interpreter(head: &[u8]) -> Option<String> {
    let line = head.strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    let base = |w: &str| w.rsplit('/').next().unwrap_or(w).to_string();
    let name = base(words.next()?);
    if name != "env" {
        return Some(name);
    }
    // env [-S] [-i] [-u NAME] [NAME=VALUE ...] node ...
    let mut words = words.peekable();
    while let Some(w) = words.next() {
        match w {
            "-u" | "--unset" | "-C" | "--chdir" => {
                words.next();
            }
            w if w.starts_with('-') => {}
            w if w.contains('=') => {}
            w => return Some(base(w)),
        }
    }
    None
}

/// The NODE_OPTIONS a Node worker gets: the user's own, then the heap
/// budget's flag (when pminit sets one), then the preload (unless
/// --no-preload). The preload is base64, because raw JS would break
/// NODE_OPTIONS' quoting, and a data: URL, because `--import` accepts one
/// and nothing lands on disk.
pub fn node_options(existing: Option<&str>, heap_flag: Option<&str>, preload: bool) -> String {
    let user = existing.map(str::trim).filter(|s| !s.is_empty());
    let import = preload.then(preload_import);
    [user, heap_flag, import.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
}

fn preload_import() -> String {
    // The sourceURL comment names the module in stack traces
    // (`at Server.pminitListen (pminit:preload:120:7)`), where the data:
    // URL itself would print its whole base64 text in every frame.
    let source = format!("{PRELOAD}\n//# sourceURL={PRELOAD_NAME}\n");
    format!(
        "--import=data:text/javascript;base64,{}",
        base64(source.as_bytes())
    )
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
                None if f.implicit => {
                    serde_json::json!({ "fd": fd, "port": f.port, "host": f.host, "any": true })
                }
                None => serde_json::json!({ "fd": fd, "port": f.port, "host": f.host }),
            }
        })
        .collect();
    serde_json::Value::Array(entries).to_string()
}

pub(crate) fn base64(bytes: &[u8]) -> String {
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
    fn node_scripts_by_their_shebang() {
        for yes in [
            "#!/usr/bin/env node\nrequire('x')",
            "#!/usr/bin/env node",
            "#! /usr/bin/env  node --max-old-space-size=512\n",
            "#!/usr/bin/env -S node --enable-source-maps\n",
            "#!/usr/bin/env -S NODE_ENV=production node\n",
            "#!/bin/env nodejs\n",
            "#!/usr/local/bin/node\n",
            "#!/opt/node-v22/bin/node --harmony\n",
            "#!/usr/bin/nodejs\r\n",
        ] {
            assert!(is_node_shebang(yes.as_bytes()), "{yes:?}");
        }
        for no in [
            "#!/bin/sh\nexec node app.js\n",
            "#!/usr/bin/env python3\n",
            "#!/usr/bin/env -S deno run\n",
            "#!/usr/bin/env\n",
            "#!\n",
            "\x7fELF\x02\x01",
            "node app.js",
            "#!/usr/bin/env nodemon\n",
            "#!/usr/bin/env bun\n",
            "",
        ] {
            assert!(!is_node_shebang(no.as_bytes()), "{no:?}");
        }
        assert!(!is_node_shebang(b"#!\xff\xfe node"));
    }

    #[test]
    fn the_preload_is_named_in_stack_traces() {
        let options = node_options(None, None, true);
        let b64 = options.trim_start_matches("--import=data:text/javascript;base64,");
        assert!(!b64.contains(' '));
        // Decode enough to see the tail: the comment is the last line.
        assert!(PRELOAD.len() > 1000);
        let tail = format!("\n//# sourceURL={PRELOAD_NAME}\n");
        let whole = format!("{PRELOAD}{tail}");
        assert_eq!(base64(whole.as_bytes()), b64);
    }

    #[test]
    fn node_options_keep_the_users_own() {
        assert!(node_options(None, None, true).starts_with("--import=data:text/javascript;base64,"));
        assert!(node_options(Some("  "), None, true).starts_with("--import="));
        let both = node_options(Some("--max-old-space-size=512"), None, true);
        assert!(both.starts_with("--max-old-space-size=512 --import=data:"));
        assert!(
            !both.contains(' ') || both.matches(' ').count() == 1,
            "no stray spaces"
        );
        // The heap budget's flag after the user's own, before the preload.
        let all = node_options(
            Some("--enable-source-maps "),
            Some("--max-old-space-size=81"),
            true,
        );
        assert!(all.starts_with("--enable-source-maps --max-old-space-size=81 --import=data:"));
        // --no-preload: the flag alone.
        assert_eq!(
            node_options(None, Some("--max-old-space-size=81"), false),
            "--max-old-space-size=81"
        );
        assert_eq!(node_options(Some("--x"), None, false), "--x");
    }

    #[test]
    fn listen_map_numbers_fds_from_3() {
        let fds = [
            FdInfo {
                fd: 17,
                port: Some(3000),
                host: Some("::".into()),
                path: None,
                implicit: true,
            },
            FdInfo {
                fd: 9,
                port: None,
                host: None,
                path: Some("/run/a.sock".into()),
                implicit: false,
            },
        ];
        let v: serde_json::Value = serde_json::from_str(&listen_map(&fds)).expect("json");
        assert_eq!(
            v,
            serde_json::json!([{"fd":3,"port":3000,"host":"::","any":true},{"fd":4,"path":"/run/a.sock"}])
        );
    }
}
