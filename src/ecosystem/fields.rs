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

/// Fields of the app itself (besides `env_*`); the fields that feed an
/// option are in the option table (src/options.rs).
const APP_FIELDS: &[&str] = &[
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
    "cwd",
    "env",
    "instance_var",
    "port",
    // No equivalent: warned about in their own line.
    "restart_delay",
    "exp_backoff_restart_delay",
];

/// Whether pminit reads `field`.
pub(super) fn used(field: &str) -> bool {
    field.starts_with("env_")
        || APP_FIELDS.contains(&field)
        || OPTIONS.iter().any(|o| match o.pm2 {
            Pm2::None => false,
            Pm2::Field(f) => f == field,
            Pm2::Mapped(fs) => fs.contains(&field),
        })
}

impl Fields<'_> {
    /// The app's values for pminit's options, keyed by the option: the
    /// fields the table names (`Pm2::Field`), then those read with pm2's
    /// semantics and defaults.
    pub(super) fn options(&self, out: &mut Vec<(Id, FileValue, String)>) -> Result<(), String> {
        for o in OPTIONS {
            let Pm2::Field(field) = o.pm2 else { continue };
            let Some((n, v)) = self.get(&[field]) else {
                continue;
            };
            let value = match o.kind {
                Kind::Switch(_) => FileValue::Switch(boolean(self.file, &self.name(n), v)?),
                _ => {
                    let expected = format!("a number or a string (as for {})", o.long);
                    FileValue::Text(scalar(self.file, &self.name(n), v, &expected)?)
                }
            };
            out.push((o.id, value, self.name(n)));
        }
        self.exec_mode()?;
        if let Some(v) = self.instances()? {
            out.push(v);
        }
        if let Some(v) = self.kill_timeout()? {
            out.push(v);
        }
        self.restarts(out)?;
        if let Some(v) = self.user()? {
            out.push(v);
        }
        Ok(())
    }

    fn text(&self, id: Id, value: String, field: String) -> (Id, FileValue, String) {
        (id, FileValue::Text(value), field)
    }

    /// pminit always runs workers side by side: either mode is fine.
    fn exec_mode(&self) -> Result<(), String> {
        let Some((n, v)) = self.get(&["exec_mode"]) else {
            return Ok(());
        };
        let mode = scalar(self.file, &self.name(n), v, "cluster or fork")?;
        if matches!(
            mode.as_str(),
            "cluster" | "cluster_mode" | "fork" | "fork_mode"
        ) {
            return Ok(());
        }
        Err(self.err(
            n,
            &format!("invalid value {mode:?}: expected cluster or fork (cluster_mode, fork_mode)"),
        ))
    }

    fn instances(&self) -> Result<Option<(Id, FileValue, String)>, String> {
        let Some((n, v)) = self.get(&["instances"]) else {
            return Ok(None);
        };
        let text = match v {
            Value::Number(x) if x.is_i64() => x.to_string(),
            Value::String(s) if s == "max" => "max".to_string(),
            Value::String(s) if s.trim().parse::<i64>().is_ok() => s.trim().to_string(),
            v => {
                return Err(self.err(
                    n,
                    &format!("invalid value {v}: expected a whole number, \"max\", 0 or -K"),
                ))
            }
        };
        Ok(Some(self.text(Id::Instances, text, self.name(n))))
    }

    /// `kill_timeout`, when set. pm2's default of 1600 ms would SIGKILL a
    /// drain that takes longer: without it pminit's own grace applies, and
    /// `warnings` says so.
    fn kill_timeout(&self) -> Result<Option<(Id, FileValue, String)>, String> {
        let Some((n, v)) = self.get(&["kill_timeout"]) else {
            return Ok(None);
        };
        let ms = scalar(self.file, &self.name(n), v, "milliseconds")?;
        Ok(Some(self.text(Id::KillTimeout, ms, self.name(n))))
    }

    /// pm2 restarts on any exit (autorestart: true), unless the code is in
    /// stop_exit_codes; max_restarts 0 means no restart at all.
    fn restarts(&self, out: &mut Vec<(Id, FileValue, String)>) -> Result<(), String> {
        let mut restart = (
            "always",
            format!("{} (pm2's default)", self.name("autorestart")),
        );
        if let Some((n, v)) = self.get(&["stop_exit_codes"]) {
            let codes: Vec<i64> = match v {
                Value::Number(x) => x.as_i64().into_iter().collect(),
                Value::Array(a) => a.iter().filter_map(Value::as_i64).collect(),
                _ => Vec::new(),
            };
            if codes != [0] {
                return Err(self.err(n, &format!(
                    "invalid value {v}: pminit can only leave exit code 0 alone ([0], as --restart on-failure)"
                )));
            }
            restart = ("on-failure", self.name(n));
        }
        if let Some((n, v)) = self.get(&["max_restarts"]) {
            let text = scalar(self.file, &self.name(n), v, "a whole number")?;
            if text.trim() == "0" {
                restart = ("never", self.name(n));
            } else {
                out.push(self.text(Id::MaxRestarts, text, self.name(n)));
            }
        }
        if let Some((n, v)) = self.get(&["autorestart"]) {
            if !boolean(self.file, &self.name(n), v)? {
                restart = ("never", self.name(n));
            }
        }
        out.push(self.text(Id::Restart, restart.0.to_string(), restart.1));
        Ok(())
    }

    /// uid (or user) and gid: `--user USER[:GROUP]`.
    fn user(&self) -> Result<Option<(Id, FileValue, String)>, String> {
        match (self.get(&["uid", "user"]), self.get(&["gid"])) {
            (Some((n, u)), g) => {
                let user = scalar(self.file, &self.name(n), u, "a user name or number")?;
                let spec = match g {
                    Some((gn, g)) => {
                        format!(
                            "{user}:{}",
                            scalar(self.file, &self.name(gn), g, "a group")?
                        )
                    }
                    None => user,
                };
                Ok(Some(self.text(Id::User, spec, self.name(n))))
            }
            (None, Some((n, _))) => {
                Err(self.err(n, "a group without uid (or user) is not supported"))
            }
            (None, None) => Ok(None),
        }
    }

    /// Honest about what has no equivalent: restart delays in one line,
    /// ignored pm2 fields and unknown fields in another.
    pub(super) fn warnings(&self) -> Vec<String> {
        let file = self.file;
        let mut out = Vec::new();
        if self.get(&["kill_timeout"]).is_none() {
            out.push(format!(
                "{file}: {} is not set: pminit's --kill-timeout applies (default 8s), not pm2's 1600 ms",
                self.name("kill_timeout")
            ));
        }
        let delays: Vec<String> = ["restart_delay", "exp_backoff_restart_delay"]
            .into_iter()
            .filter(|f| {
                self.app
                    .get(*f)
                    .is_some_and(|v| !v.is_null() && v.as_f64() != Some(0.0))
            })
            .map(|f| self.name(f))
            .collect();
        if !delays.is_empty() {
            out.push(format!(
                "{file}: {}: pminit has no fixed restart delay: a worker that dies within --min-uptime waits 100 ms doubling to 15 s, one that lived longer restarts at once",
                delays.join(", ")
            ));
        }
        let unused = self.app.keys().map(String::as_str).filter(|k| !used(k));
        let (ignored, unknown): (Vec<&str>, Vec<&str>) = unused.partition(|k| IGNORED.contains(k));
        if ignored.is_empty() && unknown.is_empty() {
            return out;
        }
        let mut line = format!("{file}: ignored");
        if !ignored.is_empty() {
            line += &format!(
                " (pm2 fields with no use under pminit): {}",
                ignored.join(", ")
            );
        }
        if !unknown.is_empty() {
            line += &format!(
                "{} (not pm2 fields): {}",
                if ignored.is_empty() { "" } else { "; and" },
                unknown.join(", ")
            );
        }
        out.push(line);
        out
    }
}

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
