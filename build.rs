//! Embeds the JS preloads without their comments.
//!
//! Every worker gets its preload base64-encoded in its environment
//! (src/node.rs, src/runtime.rs), and the binary carries it: comments are
//! 40% of the source and do nothing at run time. A comment that fills its
//! lines is blanked, not removed, so every line keeps its number and every
//! column its place: a stack trace (`pminit:preload:120:7`) still points
//! into src/preload.mjs. Comments after code stay (telling one from `//`
//! inside a string would need a JS lexer). The sources in src/ stay as
//! they are, and tests/preload runs them.

use std::{env, fs, path::Path};

const PRELOADS: [&str; 2] = ["preload.mjs", "runtime_preload.mjs"];

fn main() {
    let out = env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    for name in PRELOADS {
        let src = Path::new("src").join(name);
        println!("cargo:rerun-if-changed={}", src.display());
        let text = fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        fs::write(Path::new(&out).join(name), blank_comments(&text))
            .unwrap_or_else(|e| panic!("{out}/{name}: {e}"));
    }
}

/// `text` with each line that holds only a comment made empty: `// ...`
/// lines, and `/* ... */` blocks that begin a line and end one.
fn blank_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_block = false;
    for line in text.split_inclusive('\n') {
        let code = line.trim();
        let newline = if line.ends_with('\n') { "\n" } else { "" };
        let only_comment = if in_block {
            // The block ends on this line; code after its end would lose
            // the block's opening, so refuse it rather than guess.
            if let Some(at) = code.find("*/") {
                assert!(at + 2 == code.len(), "code after */ in: {line}");
                in_block = false;
            }
            true
        } else if code.starts_with("/*") {
            match code.find("*/") {
                Some(at) => at + 2 == code.len(),
                None => {
                    in_block = true;
                    true
                }
            }
        } else {
            code.starts_with("//")
        };
        out.push_str(if only_comment { newline } else { line });
    }
    out
}
