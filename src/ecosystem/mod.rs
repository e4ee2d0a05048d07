//! `--config FILE`: a pm2 ecosystem file (`.js`, `.cjs`, `.mjs`, `.json`)
//! read into pminit's options, following pm2's schema (`lib/API/schema.json`)
//! and defaults. The command line and `PMINIT_*` win over the file; the
//! file wins over pminit's own defaults (src/cli.rs layers them).
//!
//! A `.json` file is parsed here. A `.js`/`.cjs`/`.mjs` file is code: it is
//! evaluated by `node` (the one in `PATH`, which runs the app) with a tiny
//! loader that prints `JSON.stringify(module.exports)` on stdout; its output
//! is bounded (`MAX_OUTPUT`) and so is its time (`EVAL_TIMEOUT`), and a
//! failure is one line naming the file. All of this happens before anything
//! starts; every problem is one line naming the file and the field.

use std::io::Read;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::options::{FileValue, Id, Kind, Pm2, OPTIONS};

mod fields;
mod json5;
mod read;
mod yaml;

use fields::*;
use read::read;

/// The most JSON a config file may produce.
pub const MAX_OUTPUT: usize = 1 << 20;
/// The longest a `.js` config may take to evaluate.
pub const EVAL_TIMEOUT: Duration = Duration::from_secs(10);

/// One app of the file, in pminit's terms.
#[derive(Debug, Default, PartialEq)]
pub struct App {
    /// The file as given, for messages.
    pub file: String,
    pub command: Vec<String>,
    /// `cwd`: (directory, the field's name for messages).
    pub cwd: Option<(String, String)>,
    /// `env`, then `env_<NAME>` over it, then `port` as PORT.
    pub env: Vec<(String, String)>,
    pub instance_var: Option<String>,
    /// (option, its value, the field it came from).
    pub options: Vec<(Id, FileValue, String)>,
    pub warnings: Vec<String>,
}

/// Reads `file` and picks its app: the one named `only`, or the only one.
pub fn load(file: &str, env_name: Option<&str>, only: Option<&str>) -> Result<App, String> {
    let value = read(file)?;
    let (field, app) = select(file, &value, only)?;
    from_app(file, &field, app, env_name)
}

fn app_name(app: &Map<String, Value>) -> Option<&str> {
    app.get("name").and_then(Value::as_str)
}

/// The app to run and its field prefix (`apps[1].`, or empty).
fn select<'a>(
    file: &str,
    value: &'a Value,
    only: Option<&str>,
) -> Result<(String, &'a Map<String, Value>), String> {
    let (list, prefix): (Vec<&Value>, &str) = match value {
        Value::Array(a) => (a.iter().collect(), ""),
        Value::Object(o) => match o.get("apps") {
            Some(Value::Array(a)) => (a.iter().collect(), "apps"),
            Some(app @ Value::Object(_)) => (vec![app], "apps"),
            Some(_) => {
                return Err(format!(
                    "{file}: apps: expected an array of apps or one app"
                ))
            }
            None if o.contains_key("script") => (vec![value], ""),
            None => {
                return Err(format!(
                "{file}: apps: missing: expected module.exports = {{ apps: [{{ script: ... }}] }}"
            ))
            }
        },
        _ => {
            return Err(format!(
                "{file}: expected an object with apps (module.exports = {{ apps: [...] }})"
            ))
        }
    };
    let mut apps = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let field = match (prefix, value.get("apps").map(Value::is_array)) {
            ("apps", Some(true)) => format!("apps[{i}]"),
            ("apps", _) => "apps".to_string(),
            _ if value.is_array() => format!("[{i}]"),
            _ => String::new(),
        };
        match v {
            Value::Object(o) => apps.push((field, o)),
            _ => return Err(format!("{file}: {field}: expected an object (an app)")),
        }
    }
    let names = || {
        apps.iter()
            .map(|(_, a)| app_name(a).unwrap_or("(no name)"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match only {
        Some(want) => {
            let mut found = apps.iter().filter(|(_, a)| app_name(a) == Some(want));
            match (found.next(), found.next()) {
                (Some(one), None) => Ok(one.clone()),
                (Some(_), Some(_)) => Err(format!(
                    "{file}: several apps are named {want:?}: --only needs one"
                )),
                (None, _) => Err(format!(
                    "{file}: no app named {want:?} (--only); the apps: {}",
                    names()
                )),
            }
        }
        None if apps.len() == 1 => Ok(apps[0].clone()),
        None if apps.is_empty() => Err(format!("{file}: apps: empty: no app to run")),
        None => Err(format!(
            "{file}: {} apps ({}): pick one with --only NAME",
            apps.len(),
            names()
        )),
    }
}

fn from_app(
    file: &str,
    prefix: &str,
    app: &Map<String, Value>,
    env_name: Option<&str>,
) -> Result<App, String> {
    let a = Fields { file, prefix, app };
    let mut out = App {
        file: file.to_string(),
        command: a.command()?,
        ..App::default()
    };
    if let Some((n, v)) = a.get(&["cwd"]) {
        out.cwd = Some((scalar(file, &a.name(n), v, "a directory")?, a.name(n)));
    }
    out.env = a.environment(env_name, &mut out.warnings)?;
    out.instance_var = a.instance_var()?;
    a.options(&mut out.options)?;
    out.warnings.extend(a.warnings());
    Ok(out)
}

/// One app of the file, and how to name its fields in messages.
struct Fields<'a> {
    file: &'a str,
    /// `apps[1]`, or empty.
    prefix: &'a str,
    app: &'a Map<String, Value>,
}

impl Fields<'_> {
    /// A field's name for messages: `apps[1].kill_timeout`.
    fn name(&self, field: &str) -> String {
        if self.prefix.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.prefix)
        }
    }

    /// The first of `names` that is present and not null.
    fn get<'v>(&'v self, names: &[&'v str]) -> Option<(&'v str, &'v Value)> {
        names
            .iter()
            .find_map(|n| self.app.get(*n).filter(|v| !v.is_null()).map(|v| (*n, v)))
    }

    fn err(&self, field: &str, what: &str) -> String {
        format!("{}: {}: {what}", self.file, self.name(field))
    }

    /// The command: [interpreter, interpreter args..., script, args...].
    fn command(&self) -> Result<Vec<String>, String> {
        let file = self.file;
        let Some((sname, script)) = self.get(&["script", "exec", "cmd", "command"]) else {
            return Err(self.err("script", "missing: the program to run (pm2's script)"));
        };
        let script = match script {
            Value::String(s) if !s.trim().is_empty() => s.clone(),
            v => {
                return Err(self.err(
                    sname,
                    &format!("invalid value {v}: expected a path or a command"),
                ))
            }
        };
        let args = match self.get(&["args"]) {
            Some((n, v)) => words(file, &self.name(n), v)?,
            None => Vec::new(),
        };
        let interp_args = match self.get(&["node_args", "interpreter_args", "interpreterArgs"]) {
            Some((n, v)) => words(file, &self.name(n), v)?,
            None => Vec::new(),
        };
        let interpreter = match self.get(&["exec_interpreter", "interpreter"]) {
            Some((n, v)) => Some(scalar(file, &self.name(n), v, "a program name or none")?),
            None => None,
        };
        let interpreter = match interpreter.as_deref() {
            // pm2 runs a script with a space through a shell.
            None if script.contains(' ') => {
                return Ok(vec!["sh".to_string(), "-c".to_string(), script])
            }
            Some("none") => None,
            Some(i) => Some(i),
            // None: a program (npm, a binary, a script with a #! line).
            None => interpreter_for(&script),
        };
        Ok(match interpreter {
            Some(i) => std::iter::once(i.to_string())
                .chain(interp_args)
                .chain(std::iter::once(script))
                .chain(args)
                .collect(),
            None => std::iter::once(script).chain(args).collect(),
        })
    }

    /// `env`, then `env_<NAME>` over it, then `port` as PORT.
    fn environment(
        &self,
        env_name: Option<&str>,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<(String, String)>, String> {
        let file = self.file;
        let mut env = match self.get(&["env"]) {
            Some((n, v)) => env_pairs(file, &self.name(n), v)?,
            None => Vec::new(),
        };
        if let Some(name) = env_name {
            let key = format!("env_{name}");
            match self.app.get(&key) {
                Some(v) => {
                    for (k, val) in env_pairs(file, &self.name(&key), v)? {
                        env.retain(|(x, _)| *x != k);
                        env.push((k, val));
                    }
                }
                None => warnings.push(format!(
                    "{file}: --env {name}: the app has no {key}; using env alone (as pm2 does)"
                )),
            }
        }
        if let Some((n, v)) = self.get(&["port"]) {
            let port = scalar(file, &self.name(n), v, "a port number")?;
            env.retain(|(x, _)| x != "PORT");
            env.push(("PORT".into(), port));
        }
        Ok(env)
    }

    fn instance_var(&self) -> Result<Option<String>, String> {
        let Some((n, v)) = self.get(&["instance_var"]) else {
            return Ok(None);
        };
        let var = scalar(self.file, &self.name(n), v, "a variable name")?;
        if var.is_empty() || var.contains('=') || var.contains('\0') {
            return Err(self.err(
                n,
                &format!("invalid value {var:?}: expected a variable name"),
            ));
        }
        Ok(Some(var))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(v: Value, env: Option<&str>) -> Result<App, String> {
        let (field, a) = select("eco.json", &v, None)?;
        from_app("eco.json", &field, a, env)
    }

    /// The app's value for the option named `flag`, as text.
    fn option<'a>(a: &'a App, flag: &str) -> Option<&'a str> {
        a.options
            .iter()
            .find(|(id, _, _)| crate::options::opt(*id).long == flag)
            .map(|(_, v, _)| match v {
                FileValue::Text(t) => t.as_str(),
                FileValue::Switch(true) => "true",
                FileValue::Switch(false) => "false",
            })
    }

    #[test]
    fn a_migrated_cluster_app_maps_to_pminit_options() {
        let a = app(
            json!({"apps": [{
                "name": "api", "script": "server.js", "args": "--port 1 'a b'",
                "node_args": ["--max-old-space-size=256"],
                "exec_mode": "cluster", "instances": 4,
                "env": {"NODE_ENV": "development", "A": 1},
                "env_production": {"NODE_ENV": "production"},
                "wait_ready": true, "kill_timeout": 3000, "listen_timeout": 8000,
                "max_memory_restart": "300M", "min_uptime": "5s", "max_restarts": 3,
                "instance_var": "INSTANCE_ID", "port": 8080,
                "watch": false, "out_file": "/dev/null", "cron_restart": "0 * * * *",
            }]}),
            Some("production"),
        )
        .expect("valid");
        assert_eq!(
            a.command,
            [
                "node",
                "--max-old-space-size=256",
                "server.js",
                "--port",
                "1",
                "a b"
            ]
        );
        assert_eq!(option(&a, "--instances"), Some("4"));
        assert_eq!(option(&a, "--wait-ready"), Some("true"));
        assert_eq!(option(&a, "--kill-timeout"), Some("3000"));
        assert_eq!(option(&a, "--listen-timeout"), Some("8000"));
        assert_eq!(option(&a, "--max-memory"), Some("300M"));
        assert_eq!(option(&a, "--min-uptime"), Some("5s"));
        assert_eq!(option(&a, "--max-restarts"), Some("3"));
        assert_eq!(option(&a, "--restart"), Some("always"));
        assert_eq!(a.instance_var.as_deref(), Some("INSTANCE_ID"));
        assert_eq!(
            a.env,
            [
                ("A".to_string(), "1".to_string()),
                ("NODE_ENV".to_string(), "production".to_string()),
                ("PORT".to_string(), "8080".to_string()),
            ]
        );
        assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
        for x in ["watch", "out_file", "cron_restart"] {
            assert!(a.warnings[0].contains(x), "{:?}", a.warnings);
        }
    }

    #[test]
    fn pm2_defaults_and_shapes() {
        // A single app object: pm2's autorestart; not pm2's 1600 ms grace,
        // which would SIGKILL a long drain: pminit's own, said once.
        let a = app(json!({"apps": {"script": "app.py"}}), None).expect("valid");
        assert_eq!(a.command, ["python3", "app.py"]);
        assert_eq!(option(&a, "--kill-timeout"), None);
        assert_eq!(option(&a, "--restart"), Some("always"));
        assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
        assert!(
            a.warnings[0].contains("kill_timeout is not set")
                && a.warnings[0].contains("not pm2's 1600 ms"),
            "{:?}",
            a.warnings
        );
        // .mts and .cts scripts are Node's too.
        for script in ["a.mts", "a.cts"] {
            let a = app(json!({"script": script, "kill_timeout": 1}), None).expect("valid");
            assert_eq!(a.command, ["node", script]);
        }
        // A bare array; interpreter none; npm as a program; a shell line.
        let a = app(
            json!([{"script": "./bin/app", "interpreter": "none", "args": ["x"]}]),
            None,
        )
        .expect("valid");
        assert_eq!(a.command, ["./bin/app", "x"]);
        let a = app(json!({"script": "npm", "args": "start"}), None).expect("valid");
        assert_eq!(a.command, ["npm", "start"]);
        let a = app(json!({"apps": [{"script": "node a.js | cat"}]}), None).expect("valid");
        assert_eq!(a.command, ["sh", "-c", "node a.js | cat"]);
        // instances max and -1; autorestart false; stop_exit_codes [0].
        let a = app(
            json!({"apps": [{"script": "a.js", "instances": "max", "autorestart": false}]}),
            None,
        )
        .expect("valid");
        assert_eq!(option(&a, "--instances"), Some("max"));
        assert_eq!(option(&a, "--restart"), Some("never"));
        let a = app(
            json!({"apps": [{"script": "a.js", "instances": -1, "stop_exit_codes": [0]}]}),
            None,
        )
        .expect("valid");
        assert_eq!(option(&a, "--instances"), Some("-1"));
        assert_eq!(option(&a, "--restart"), Some("on-failure"));
        // Restart delays have no equivalent: said once.
        let a = app(
            json!({"apps": [{"script": "a.js", "kill_timeout": 5000, "restart_delay": 4000, "exp_backoff_restart_delay": 100}]}),
            None,
        )
        .expect("valid");
        assert_eq!(a.warnings.len(), 1);
        assert!(a.warnings[0].contains("restart_delay"));
        // --env without env_NAME: warned, as pm2 does.
        let a = app(
            json!({"apps": [{"script": "a.js", "env": {"X": "1"}}]}),
            Some("staging"),
        )
        .expect("valid");
        assert!(a.warnings[0].contains("env_staging"), "{:?}", a.warnings);
    }

    #[test]
    fn several_apps_need_only() {
        let v = json!({"apps": [{"name": "api", "script": "a.js"}, {"name": "jobs", "script": "j.js"}]});
        let e = app(v.clone(), None).expect_err("two apps");
        assert!(e.contains("api, jobs") && e.contains("--only"), "{e}");
        let (field, a) = select("eco.json", &v, Some("jobs")).expect("jobs");
        assert_eq!(field, "apps[1]");
        assert_eq!(
            from_app("eco.json", &field, a, None).expect("ok").command,
            ["node", "j.js"]
        );
        let e = select("eco.json", &v, Some("web")).expect_err("none");
        assert!(e.contains("\"web\"") && e.contains("api, jobs"), "{e}");
    }

    #[test]
    fn bad_fields_name_the_file_and_the_field() {
        let table: &[(Value, &[&str])] = &[
            (
                json!({"apps": [{}]}),
                &["eco.json", "apps[0].script", "missing"],
            ),
            (json!({"apps": [{"script": 3}]}), &["apps[0].script"]),
            (
                json!({"apps": [{"script": "a.js", "instances": true}]}),
                &["apps[0].instances", "max"],
            ),
            (
                json!({"apps": [{"script": "a.js", "instances": 1.5}]}),
                &["apps[0].instances"],
            ),
            (
                json!({"apps": [{"script": "a.js", "exec_mode": "turbo"}]}),
                &["apps[0].exec_mode", "cluster or fork"],
            ),
            (
                json!({"apps": [{"script": "a.js", "env": "X=1"}]}),
                &["apps[0].env", "object"],
            ),
            (
                json!({"apps": [{"script": "a.js", "env": {"A=B": "1"}}]}),
                &["apps[0].env", "A=B"],
            ),
            (
                json!({"apps": [{"script": "a.js", "wait_ready": "yes"}]}),
                &["apps[0].wait_ready", "true or false"],
            ),
            (
                json!({"apps": [{"script": "a.js", "kill_timeout": [1]}]}),
                &["apps[0].kill_timeout"],
            ),
            (
                json!({"apps": [{"script": "a.js", "args": {"a": 1}}]}),
                &["apps[0].args"],
            ),
            (
                json!({"apps": [{"script": "a.js", "stop_exit_codes": [0, 2]}]}),
                &["apps[0].stop_exit_codes"],
            ),
            (
                json!({"apps": [{"script": "a.js", "gid": 5}]}),
                &["apps[0].gid"],
            ),
            (json!({"apps": [3]}), &["apps[0]", "object"]),
            (json!({"apps": 3}), &["apps"]),
            (json!({"services": []}), &["apps", "missing"]),
            (json!("x"), &["eco.json"]),
            (json!({"apps": []}), &["empty"]),
        ];
        for (v, wants) in table {
            let e = app(v.clone(), None).expect_err(&v.to_string());
            assert!(!e.contains('\n'), "one line: {e}");
            assert!(e.starts_with("eco.json: "), "{e}");
            for w in *wants {
                assert!(e.contains(w), "{v}: {e:?} lacks {w:?}");
            }
        }
    }

    #[test]
    fn args_split_as_pm2_splits_them() {
        assert_eq!(
            split_words(r#"  a "b c"  --x="y z" 'd'  "#),
            ["a", "b c", "--x=\"y z\"", "d"]
        );
        assert!(split_words("   ").is_empty());
    }

    /// Every field the option table names is read, not warned about; a
    /// table field of the wrong JSON type names the file, field and flag.
    #[test]
    fn the_table_s_fields_are_read() {
        let mut app = serde_json::Map::new();
        app.insert("script".into(), json!("a.js"));
        app.insert("kill_timeout".into(), json!(5000));
        for o in OPTIONS {
            let fields: &[&str] = match &o.pm2 {
                Pm2::None => &[],
                Pm2::Field(f) => std::slice::from_ref(f),
                Pm2::Mapped(fs) => fs,
            };
            for f in fields {
                assert!(fields::used(f), "{f}");
            }
        }
        app.insert("listen_timeout".into(), json!([1]));
        let e = from_app("eco.json", "", &app, None).expect_err("an array");
        assert!(
            e.starts_with("eco.json: listen_timeout: ") && e.contains("--listen-timeout"),
            "{e}"
        );
        app.insert("listen_timeout".into(), json!(2500));
        app.insert("wait_redy".into(), json!(true));
        let a = from_app("eco.json", "", &app, None).expect("valid");
        assert_eq!(option(&a, "--listen-timeout"), Some("2500"));
        assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
        assert!(
            a.warnings[0].contains("(not pm2 fields): wait_redy"),
            "{:?}",
            a.warnings
        );
    }
}
