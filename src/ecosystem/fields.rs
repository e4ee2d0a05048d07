//! pm2's fields: which ones pminit uses and ignores, and how a field's
//! value is read (words, scalars, booleans, env maps), each failure one line
//! naming the file and the field.

use super::*;

/// pm2's fields pminit has no use for in a container: one warning names
/// those present.
pub(super) const IGNORED: &[&str] = &[
    "name_prefix",
    "filter_env",
    "namespace",
    "install_url",
    "out_file",
    "out",
    "output",
    "out_log",
    "error_file",
    "error",
    "err",
    "err_file",
    "err_log",
    "log_file",
    "log",
    "disable_logs",
    "log_type",
    "log_date_format",
    "time",
    "pid_file",
    "pid",
    "source_map_support",
    "disable_source_map_support",
    "cron_restart",
    "cron",
    "merge_logs",
    "combine_logs",
    "vizion",
    "autostart",
    "watch_delay",
    "watch",
    "ignore_watch",
    "watch_options",
    "execute_command",
    "force",
    "append_env_to_name",
    "post_update",
    "trace",
    "disable_trace",
    "v8",
    "event_loop_inspector",
    "deep_monitoring",
    "increment_var",
    "pmx",
    "automation",
    "treekill",
    "username",
    "windowsHide",
    "kill_retry_time",
    "write",
    "io",
];

/// Fields read below (besides `env_*`).
pub(super) const USED: &[&str] = &[
    "name",
    "script",
    "exec",
    "cmd",
    "command",
    "args",
    "interpreter",
    "exec_interpreter",
    "node_args",
    "interpreter_args",
    "interpreterArgs",
    "instances",
    "exec_mode",
    "cwd",
    "env",
    "kill_timeout",
    "listen_timeout",
    "wait_ready",
    "max_memory_restart",
    "min_uptime",
    "max_restarts",
    "restart_delay",
    "exp_backoff_restart_delay",
    "autorestart",
    "stop_exit_codes",
    "instance_var",
    "shutdown_with_message",
    "port",
    "uid",
    "user",
    "gid",
];

/// pm2's args as a list: an array, or a string split as pm2 splits it
/// (whitespace, quotes group and are removed when they wrap a whole word).
pub(super) fn words(file: &str, field: &str, v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                _ => Err(format!(
                    "{file}: {field}: invalid value {x}: expected strings"
                )),
            })
            .collect(),
        Value::String(s) => Ok(split_words(s)),
        _ => Err(format!(
            "{file}: {field}: invalid value {v}: expected a string or an array of strings"
        )),
    }
}

pub(super) fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                word.push(c);
            }
            Some(_) => word.push(c),
            None if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            None => {
                if c == '"' || c == '\'' {
                    quote = Some(c);
                }
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(word);
    }
    out.into_iter()
        .map(|w| {
            let b = w.as_bytes();
            if w.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[w.len() - 1] == b[0] {
                w[1..w.len() - 1].to_string()
            } else {
                w
            }
        })
        .filter(|w| !w.trim().is_empty())
        .collect()
}

/// A scalar field as text for pminit's parsers (numbers and strings).
pub(super) fn scalar(file: &str, field: &str, v: &Value, expected: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(format!(
            "{file}: {field}: invalid value {v}: expected {expected}"
        )),
    }
}

pub(super) fn boolean(file: &str, field: &str, v: &Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("{file}: {field}: invalid value {v}: expected true or false"))
}

/// An env object's pairs, values as pm2 gives them to the app.
pub(super) fn env_pairs(
    file: &str,
    field: &str,
    v: &Value,
) -> Result<Vec<(String, String)>, String> {
    let Value::Object(o) = v else {
        return Err(format!(
            "{file}: {field}: invalid value {v}: expected an object of variables"
        ));
    };
    let mut out = Vec::new();
    for (k, v) in o {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(format!(
                "{file}: {field}: invalid variable name {k:?}: no '=' or NUL, not empty"
            ));
        }
        let text = match v {
            Value::String(s) => s.clone(),
            // Objects are JSON-encoded, as pm2 does; numbers and booleans
            // become their text, as Node does.
            other => other.to_string(),
        };
        if text.contains('\0') {
            return Err(format!("{file}: {field}.{k}: the value holds a NUL byte"));
        }
        out.push((k.clone(), text));
    }
    Ok(out)
}

/// The interpreter pm2 picks for a script by its extension.
pub(super) fn interpreter_for(script: &str) -> Option<&'static str> {
    let ext = std::path::Path::new(script).extension()?.to_str()?;
    Some(match ext {
        "js" | "cjs" | "mjs" | "ts" | "mts" | "cts" | "tsx" => "node",
        "sh" => "bash",
        "py" => "python3",
        "rb" => "ruby",
        "php" => "php",
        "pl" => "perl",
        "coffee" => "coffee",
        "ls" => "lsc",
        _ => return None,
    })
}
