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

mod fields;
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
    /// (flag, value in pminit's syntax, the field it came from).
    pub options: Vec<(&'static str, String, String)>,
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
    let f = |name: &str| {
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        }
    };
    let get = |names: &[&'static str]| -> Option<(&'static str, &Value)> {
        names
            .iter()
            .find_map(|n| app.get(*n).filter(|v| !v.is_null()).map(|v| (*n, v)))
    };
    let mut out = App {
        file: file.to_string(),
        ..App::default()
    };

    // The command: [interpreter, interpreter args..., script, args...].
    let Some((sname, script)) = get(&["script", "exec", "cmd", "command"]) else {
        return Err(format!(
            "{file}: {}: missing: the program to run (pm2's script)",
            f("script")
        ));
    };
    let script = match script {
        Value::String(s) if !s.trim().is_empty() => s.clone(),
        v => {
            return Err(format!(
                "{file}: {}: invalid value {v}: expected a path or a command",
                f(sname)
            ))
        }
    };
    let args = match get(&["args"]) {
        Some((n, v)) => words(file, &f(n), v)?,
        None => Vec::new(),
    };
    let interp_args = match get(&["node_args", "interpreter_args", "interpreterArgs"]) {
        Some((n, v)) => words(file, &f(n), v)?,
        None => Vec::new(),
    };
    let interpreter = match get(&["exec_interpreter", "interpreter"]) {
        Some((n, v)) => Some(scalar(file, &f(n), v, "a program name or none")?),
        None => None,
    };
    out.command = match interpreter.as_deref() {
        // pm2 runs a script with a space through a shell.
        None if script.contains(' ') => {
            vec!["sh".to_string(), "-c".to_string(), script]
        }
        Some("none") => std::iter::once(script).chain(args).collect(),
        Some(i) => std::iter::once(i.to_string())
            .chain(interp_args)
            .chain(std::iter::once(script))
            .chain(args)
            .collect(),
        None => match interpreter_for(&script) {
            Some(i) => std::iter::once(i.to_string())
                .chain(interp_args)
                .chain(std::iter::once(script))
                .chain(args)
                .collect(),
            // A program (npm, a binary, a script with a #! line).
            None => std::iter::once(script).chain(args).collect(),
        },
    };

    if let Some((n, v)) = get(&["cwd"]) {
        out.cwd = Some((scalar(file, &f(n), v, "a directory")?, f(n)));
    }

    // Environment: env, then env_<NAME> over it, then port.
    if let Some((n, v)) = get(&["env"]) {
        out.env = env_pairs(file, &f(n), v)?;
    }
    if let Some(name) = env_name {
        let key = format!("env_{name}");
        match app.get(&key) {
            Some(v) => {
                for (k, val) in env_pairs(file, &f(&key), v)? {
                    out.env.retain(|(x, _)| *x != k);
                    out.env.push((k, val));
                }
            }
            None => out.warnings.push(format!(
                "{file}: --env {name}: the app has no {key}; using env alone (as pm2 does)"
            )),
        }
    }
    if let Some((n, v)) = get(&["port"]) {
        let port = scalar(file, &f(n), v, "a port number")?;
        out.env.retain(|(x, _)| x != "PORT");
        out.env.push(("PORT".into(), port));
    }
    if let Some((n, v)) = get(&["instance_var"]) {
        let var = scalar(file, &f(n), v, "a variable name")?;
        if var.is_empty() || var.contains('=') || var.contains('\0') {
            return Err(format!(
                "{file}: {}: invalid value {var:?}: expected a variable name",
                f(n)
            ));
        }
        out.instance_var = Some(var);
    }

    // Options, in pminit's syntax; cli.rs parses (and names) them.
    let mut opt = |flag: &'static str, value: String, field: String| {
        out.options.push((flag, value, field));
    };
    if let Some((n, v)) = get(&["exec_mode"]) {
        let mode = scalar(file, &f(n), v, "cluster or fork")?;
        if !matches!(
            mode.as_str(),
            "cluster" | "cluster_mode" | "fork" | "fork_mode"
        ) {
            return Err(format!(
                "{file}: {}: invalid value {mode:?}: expected cluster or fork (cluster_mode, fork_mode)",
                f(n)
            ));
        }
    }
    if let Some((n, v)) = get(&["instances"]) {
        let text = match v {
            Value::Number(x) if x.is_i64() => x.to_string(),
            Value::String(s) if s == "max" => "max".to_string(),
            Value::String(s) if s.trim().parse::<i64>().is_ok() => s.trim().to_string(),
            v => {
                return Err(format!(
                    "{file}: {}: invalid value {v}: expected a whole number, \"max\", 0 or -K",
                    f(n)
                ))
            }
        };
        opt("--instances", text, f(n));
    }
    // pm2's default grace is 1600 ms; pminit's own is 8 s.
    match get(&["kill_timeout"]) {
        Some((n, v)) => opt(
            "--kill-timeout",
            scalar(file, &f(n), v, "milliseconds")?,
            f(n),
        ),
        // pm2's 1600 ms would SIGKILL a drain that takes longer: pminit's
        // own grace (--kill-timeout, 8 s unless set) applies, and says so.
        None => out.warnings.push(format!(
            "{file}: {} is not set: pminit's --kill-timeout applies (default 8s), not pm2's 1600 ms",
            f("kill_timeout")
        )),
    }
    for (field, flag, expected) in [
        ("listen_timeout", "--listen-timeout", "milliseconds"),
        ("min_uptime", "--min-uptime", "milliseconds or 1s, 1m, 1h"),
        (
            "max_memory_restart",
            "--max-memory",
            "bytes or 512K, 200M, 1G",
        ),
    ] {
        if let Some((n, v)) = app.get_key_value(field).filter(|(_, v)| !v.is_null()) {
            opt(flag, scalar(file, &f(n), v, expected)?, f(n));
        }
    }
    for (field, flag) in [
        ("wait_ready", "--wait-ready"),
        ("shutdown_with_message", "--send-shutdown"),
    ] {
        if let Some((n, v)) = app.get_key_value(field).filter(|(_, v)| !v.is_null()) {
            opt(flag, boolean(file, &f(n), v)?.to_string(), f(n));
        }
    }
    // Restarts: pm2 restarts on any exit (autorestart: true), unless the
    // code is in stop_exit_codes; max_restarts 0 means no restart at all.
    let mut restart = ("always", format!("{} (pm2's default)", f("autorestart")));
    if let Some((n, v)) = get(&["stop_exit_codes"]) {
        let codes: Vec<i64> = match v {
            Value::Number(x) => x.as_i64().into_iter().collect(),
            Value::Array(a) => a.iter().filter_map(Value::as_i64).collect(),
            _ => Vec::new(),
        };
        if codes != [0] {
            return Err(format!(
                "{file}: {}: invalid value {v}: pminit can only leave exit code 0 alone ([0], as --restart on-failure)",
                f(n)
            ));
        }
        restart = ("on-failure", f(n));
    }
    if let Some((n, v)) = get(&["max_restarts"]) {
        let text = scalar(file, &f(n), v, "a whole number")?;
        if text.trim() == "0" {
            restart = ("never", f(n));
        } else {
            opt("--max-restarts", text, f(n));
        }
    }
    if let Some((n, v)) = get(&["autorestart"]) {
        if !boolean(file, &f(n), v)? {
            restart = ("never", f(n));
        }
    }
    opt("--restart", restart.0.to_string(), restart.1);
    match (get(&["uid", "user"]), get(&["gid"])) {
        (Some((n, u)), g) => {
            let user = scalar(file, &f(n), u, "a user name or number")?;
            let spec = match g {
                Some((gn, g)) => format!("{user}:{}", scalar(file, &f(gn), g, "a group")?),
                None => user,
            };
            opt("--user", spec, f(n));
        }
        (None, Some((n, _))) => {
            return Err(format!(
                "{file}: {}: a group without uid (or user) is not supported",
                f(n)
            ))
        }
        (None, None) => {}
    }

    // Honest about what has no equivalent.
    let mut delays = Vec::new();
    for field in ["restart_delay", "exp_backoff_restart_delay"] {
        if app
            .get(field)
            .is_some_and(|v| !v.is_null() && v.as_f64() != Some(0.0))
        {
            delays.push(f(field));
        }
    }
    if !delays.is_empty() {
        out.warnings.push(format!(
            "{file}: {}: pminit has no fixed restart delay: a worker that dies within --min-uptime waits 100 ms doubling to 15 s, one that lived longer restarts at once",
            delays.join(", ")
        ));
    }
    let mut ignored = Vec::new();
    let mut unknown = Vec::new();
    for k in app.keys() {
        if USED.contains(&k.as_str()) || k.starts_with("env_") {
            continue;
        }
        if IGNORED.contains(&k.as_str()) {
            ignored.push(k.as_str());
        } else {
            unknown.push(k.as_str());
        }
    }
    if !ignored.is_empty() || !unknown.is_empty() {
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
        out.warnings.push(line);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(v: Value, env: Option<&str>) -> Result<App, String> {
        let (field, a) = select("eco.json", &v, None)?;
        from_app("eco.json", &field, a, env)
    }

    fn option<'a>(a: &'a App, flag: &str) -> Option<&'a str> {
        a.options
            .iter()
            .find(|(f, _, _)| *f == flag)
            .map(|(_, v, _)| v.as_str())
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
}
