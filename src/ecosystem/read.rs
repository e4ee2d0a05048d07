//! Reading an ecosystem file into JSON: `.json` parsed here (with what pm2
//! also reads in one, json5.rs; `.json5` the same), `.yaml`/`.yml` by yaml.rs; `.js`, `.cjs`, `.mjs` and `.ts`, `.mts`, `.cts` (Node's type
//! stripping, Node >= 22.18) evaluated by `node` with a tiny loader, its output bounded
//! by `MAX_OUTPUT` and its time by `EVAL_TIMEOUT`.

use super::*;

pub(super) fn read(file: &str) -> Result<Value, String> {
    let lower = file.to_ascii_lowercase();
    let has = |exts: &[&str]| exts.iter().any(|x| lower.ends_with(x));
    if has(&[".json", ".json5"]) {
        let text = read_bounded(file)?;
        match serde_json::from_str(&text) {
            Ok(v) if !has(&[".json5"]) => Ok(v),
            _ => super::json5::to_json(&text)
                .and_then(|strict| serde_json::from_str(&strict).map_err(|e| e.to_string()))
                .map_err(|e| format!("{file}: not valid JSON (nor JSON5, as pm2 reads it): {e}")),
        }
    } else if has(&[".yaml", ".yml"]) {
        let text = read_bounded(file)?;
        super::yaml::parse(&text).map_err(|e| format!("{file}: {e}"))
    } else if has(&[".js", ".cjs", ".mjs", ".ts", ".mts", ".cts"]) {
        if let Err(e) = std::fs::metadata(file) {
            return Err(format!("{file}: cannot read it: {e}"));
        }
        let text = evaluate(file)?;
        serde_json::from_str(&text).map_err(|e| format!("{file}: not valid JSON: {e}"))
    } else {
        Err(format!(
            "--config: invalid value {file:?}: expected a pm2 ecosystem file ending in .js, .cjs, .mjs, .ts, .mts, .cts, .json, .json5, .yaml or .yml"
        ))
    }
}

/// The file's text, at most `MAX_OUTPUT` bytes.
fn read_bounded(file: &str) -> Result<String, String> {
    let f = std::fs::File::open(file).map_err(|e| format!("{file}: cannot read it: {e}"))?;
    let mut text = String::new();
    f.take(MAX_OUTPUT as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{file}: cannot read it: {e}"))?;
    if text.len() > MAX_OUTPUT {
        return Err(format!("{file}: over {MAX_OUTPUT} bytes"));
    }
    Ok(text)
}

/// What node runs: prints the file's exports as JSON on stdout, or one
/// line saying why not on stderr (exit 3). The file's own console output
/// goes to stderr, so it cannot spoil the JSON.
pub(super) const LOADER: &str = r#"
const file = require('node:path').resolve(process.argv[1]);
console.log = console.info = console.debug = console.error;
const done = (v) => {
  const json = JSON.stringify(v && typeof v === 'object' && 'default' in v && !('apps' in v) && !('script' in v) ? v.default : v);
  process.stdout.write(json === undefined ? 'null' : json);
};
const fail = (e) => {
  const msg = String((e && e.message) || e).split('\n')[0];
  const at = e && typeof e.stack === 'string' ? e.stack.split('\n')[0] : '';
  process.stderr.write('pminit-config-error: ' + (at.startsWith(file) ? at + ': ' : '') + msg + '\n');
  process.exit(3);
};
const viaImport = () => import(require('node:url').pathToFileURL(file).href).then(done, fail);
if (/\.[mc]?ts$/i.test(file) && !process.features.typescript) {
  fail('a TypeScript ecosystem file needs Node >= 22.18 (type stripping on by default); this node is ' + process.version);
}
if (/\.m(js|ts)$/i.test(file)) viaImport();
else {
  let m;
  try { m = require(file); } catch (e) {
    if (e && (e.code === 'ERR_REQUIRE_ESM' || e.code === 'ERR_REQUIRE_ASYNC_MODULE')) { viaImport(); m = undefined; }
    else fail(e);
  }
  if (m !== undefined) done(m);
}
"#;

pub(super) fn evaluate(file: &str) -> Result<String, String> {
    let mut child = Command::new("node")
        .arg("-e")
        .arg(LOADER)
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("{file}: cannot run node to evaluate it: {e} (a .json file needs no node)")
        })?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let end = Instant::now() + EVAL_TIMEOUT;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut why = None;
    while stdout.is_some() || stderr.is_some() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            why = Some(format!(
                "{file}: evaluating it took over {} s",
                EVAL_TIMEOUT.as_secs()
            ));
            break;
        }
        let fds = [
            (stdout.as_ref().map(|s| s.as_fd()), false),
            (stderr.as_ref().map(|s| s.as_fd()), false),
        ];
        let ready = crate::sys::poll(&fds, Some(left)).unwrap_or(vec![true, true]);
        let mut buf = [0u8; 16 * 1024];
        if ready[0] {
            if let Some(s) = stdout.as_mut() {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => stdout = None,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        }
        if ready[1] {
            if let Some(s) = stderr.as_mut() {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => stderr = None,
                    Ok(n) if err.len() < 64 * 1024 => err.extend_from_slice(&buf[..n]),
                    Ok(_) => {}
                }
            }
        }
        if out.len() > MAX_OUTPUT {
            why = Some(format!(
                "{file}: its exports are over {MAX_OUTPUT} bytes of JSON"
            ));
            break;
        }
    }
    if why.is_some() {
        let _ = child.kill();
    }
    let status = child.wait();
    if let Some(why) = why {
        return Err(why);
    }
    let err = String::from_utf8_lossy(&err);
    if let Some(line) = err
        .lines()
        .find_map(|l| l.strip_prefix("pminit-config-error: "))
    {
        return Err(format!("{file}: evaluating it failed: {line}"));
    }
    match status {
        Ok(s) if s.success() => {
            String::from_utf8(out).map_err(|_| format!("{file}: node printed non-UTF-8 output"))
        }
        _ => Err(format!(
            "{file}: evaluating it failed: {}",
            err.lines().last().unwrap_or("node exited without a word")
        )),
    }
}
