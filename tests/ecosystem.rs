//! `--config FILE`: a pm2 ecosystem file, in the shapes pm2's docs show
//! (`module.exports = { apps: [...] }` in `.js` and `.cjs`, the same object
//! in `.json`), runs with the same observable behaviour as the equivalent
//! flags: 4 workers, the env_production values in the app, wait_ready
//! honoured (no worker ready before it says so), kill_timeout honoured (the
//! grace and the SIGKILL). Bad files give one line naming the file and the
//! field, exit 2, before anything starts.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pminit-eco-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

/// The apps of a migrated file: the API in cluster mode, and a second app
/// so that --only is needed.
fn apps_object(app_dir: &Path) -> String {
    format!(
        r#"{{
  "apps": [
    {{
      "name": "api",
      "script": "ecosystem_app.js",
      "cwd": {cwd:?},
      "exec_mode": "cluster",
      "instances": 4,
      "wait_ready": true,
      "listen_timeout": 20000,
      "kill_timeout": 1500,
      "instance_var": "INSTANCE_ID",
      "env": {{ "NODE_ENV": "development", "GREETING": "hello" }},
      "env_production": {{ "NODE_ENV": "production" }},
      "watch": false,
      "out_file": "/dev/null",
      "merge_logs": true
    }},
    {{ "name": "jobs", "script": "jobs.js" }}
  ]
}}"#,
        cwd = app_dir.to_string_lossy()
    )
}

/// What a run showed; equal for the file and the flags.
#[derive(Debug, PartialEq)]
struct Facts {
    workers: usize,
    ready_before_they_said_so: usize,
    envs: BTreeSet<String>,
    greetings: BTreeSet<String>,
    grace_line: String,
    grace_over: bool,
    code: i32,
}

fn observe(mut run: Run, port: u16) -> (Facts, BTreeSet<String>) {
    run.expect_count(
        "saying a worker listens",
        4,
        |l| matches!(l, Line::Out(s) if s.starts_with("listening")),
    );
    // wait_ready: listening is not ready; nobody is before it says so.
    let (code, out, _) = timed_verb(&run, &["status", "--json"]);
    assert_eq!(code, 0, "{out}");
    let status: serde_json::Value = serde_json::from_str(out.trim()).expect("status json");
    let rows = status["workers"].as_array().expect("workers").clone();
    let ready_early = rows.iter().filter(|w| w["state"] == "ready").count();
    // SIGUSR2 is forwarded: each worker says ready.
    run.signal(libc::SIGUSR2);
    run.expect_ready(4);
    let (mut envs, mut greetings, mut insts) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for _ in 0..20 {
        let body = http_get(port).unwrap_or_else(|e| panic!("{e}\n{}", run.transcript()));
        for word in body.split_whitespace() {
            match word.split_once('=') {
                Some(("env", v)) => envs.insert(v.to_string()),
                Some(("greeting", v)) => greetings.insert(v.to_string()),
                Some(("inst", v)) => insts.insert(v.to_string()),
                _ => false,
            };
        }
    }
    // kill_timeout: the app ignores SIGINT, so the grace runs out.
    run.signal(libc::SIGTERM);
    let grace_line = run.expect_err("SIGKILL in");
    let grace_line = grace_line[grace_line.find("stopping").unwrap_or(0)..].to_string();
    run.expect_err("grace of");
    let code = run.wait_code();
    let facts = Facts {
        workers: rows.len(),
        ready_before_they_said_so: ready_early,
        envs,
        greetings,
        grace_line,
        grace_over: run.transcript().contains("grace of 1500 ms over"),
        code,
    };
    (facts, insts)
}

#[test]
fn a_migrated_ecosystem_file_behaves_as_the_equivalent_flags() {
    let Some(app) = node_app("ecosystem") else {
        return;
    };
    // The flags a pm2 user would have to write by hand.
    let port = free_port();
    let run = Run::start_with(
        Mode::Subreaper,
        &[
            "-i",
            "4",
            "--wait-ready",
            "--listen-timeout",
            "20s",
            "--kill-timeout",
            "1500",
            "--restart",
            "always",
            "--",
            "node",
            "ecosystem_app.js",
        ],
        Options {
            cwd: Some(app.clone()),
            env: vec![
                ("PORT".into(), port.to_string()),
                ("NODE_ENV".into(), "production".into()),
                ("GREETING".into(), "hello".into()),
            ],
            ..Options::default()
        },
    );
    let (by_flags, _) = observe(run, port);
    assert_eq!(by_flags.workers, 4);
    assert_eq!(by_flags.ready_before_they_said_so, 0);
    assert_eq!(by_flags.envs, BTreeSet::from(["production".to_string()]));
    assert!(by_flags.grace_over, "{by_flags:?}");

    let dir = tmpdir("migrated");
    let object = apps_object(&app);
    for (name, text) in [
        (
            "ecosystem.config.js",
            format!("module.exports = {object};\n"),
        ),
        (
            "ecosystem.config.cjs",
            format!(
                "// pm2's CommonJS shape\nconst config = {object};\nmodule.exports = config;\n"
            ),
        ),
        ("ecosystem.json", object.clone()),
    ] {
        let file = dir.join(name);
        std::fs::write(&file, text).expect("write the file");
        let port = free_port();
        let file = file.to_string_lossy().into_owned();
        let run = Run::start_with(
            Mode::Subreaper,
            &["--config", &file, "--only", "api", "--env", "production"],
            Options {
                // The file's env wins over the container's, as in pm2.
                env: vec![
                    ("PORT".into(), port.to_string()),
                    ("NODE_ENV".into(), "test".into()),
                ],
                ..Options::default()
            },
        );
        let warned = run.expect_err("ignored");
        for field in ["watch", "out_file", "merge_logs"] {
            assert!(warned.contains(field), "{warned}");
        }
        let (by_file, insts) = observe(run, port);
        assert_eq!(by_file, by_flags, "{name}");
        // instance_var: each worker's slot in INSTANCE_ID, as pm2 sets it.
        assert!(
            !insts.is_empty()
                && insts
                    .iter()
                    .all(|i| ["0", "1", "2", "3"].contains(&i.as_str())),
            "{name}: {insts:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_files_and_fields_are_one_line_naming_the_file_and_the_field() {
    let dir = tmpdir("bad");
    let w = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p.to_string_lossy().into_owned()
    };
    let syntax = w(
        "syntax.config.js",
        "module.exports = { apps: [ { script: 'a.js', } ;\n",
    );
    let throws = w(
        "throws.config.js",
        "throw new Error('DATABASE_URL is not set');\n",
    );
    let not_json = w("broken.json", "{ \"apps\": [ { \"script\": \"a.js\" } ] ");
    let open_comment = w("comment.json", "{\n  \"apps\": [] /* to do\n");
    let instances = w(
        "instances.json",
        r#"{"apps": [{"script": "a.js", "instances": "lots"}]}"#,
    );
    let kill = w(
        "kill.config.cjs",
        "module.exports = { apps: [{ script: 'a.js', kill_timeout: 'soon' }] };\n",
    );
    let memory = w(
        "memory.json",
        r#"{"apps": [{"script": "a.js", "max_memory_restart": "lots"}]}"#,
    );
    let two = w(
        "two.json",
        r#"{"apps": [{"name": "web", "script": "a.js"}, {"name": "cron", "script": "b.js"}]}"#,
    );
    let no_script = w("noscript.json", r#"{"apps": [{"name": "web"}]}"#);
    let cwd = w(
        "cwd.json",
        r#"{"apps": [{"script": "a.js", "cwd": "/nonexistent/dir"}]}"#,
    );
    let toml = w("ecosystem.toml", "[[apps]]\n");
    let bad_yaml = w(
        "ecosystem.yml",
        "apps:\n  - script: a.js\n    args: *shared\n",
    );
    let missing = dir.join("missing.config.js").to_string_lossy().into_owned();
    let table: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--config", &syntax],
            vec![&syntax, "evaluating it failed"],
        ),
        (
            vec!["--config", &throws],
            vec![&throws, "DATABASE_URL is not set"],
        ),
        (
            vec!["--config", &not_json],
            vec![&not_json, "not valid JSON"],
        ),
        (
            vec!["--config", &open_comment],
            vec![&open_comment, "line 2: a comment that does not end"],
        ),
        (
            vec!["--config", &instances],
            vec![&instances, "apps[0].instances", "\"lots\""],
        ),
        (
            vec!["--config", &kill],
            vec![&kill, "apps[0].kill_timeout", "--kill-timeout", "\"soon\""],
        ),
        (
            vec!["--config", &memory],
            vec![&memory, "apps[0].max_memory_restart", "--max-memory"],
        ),
        (vec!["--config", &two], vec![&two, "web, cron", "--only"]),
        (
            vec!["--config", &two, "--only", "api"],
            vec![&two, "\"api\"", "web, cron"],
        ),
        (
            vec!["--config", &no_script],
            vec![&no_script, "apps[0].script"],
        ),
        (
            vec!["--config", &cwd],
            vec![&cwd, "apps[0].cwd", "/nonexistent/dir"],
        ),
        (
            vec!["--config", &toml],
            vec!["--config", ".json", ".yaml", ".ts"],
        ),
        (
            vec!["--config", &bad_yaml],
            vec![&bad_yaml, "line 3", "aliases"],
        ),
        (vec!["--config", &missing], vec![&missing, "cannot read"]),
        (
            vec!["--env", "production", "--", "true"],
            vec!["--env", "--config"],
        ),
    ];
    for (args, wants) in table {
        let mut run = Run::start(Mode::Subreaper, &args);
        let code = run.wait_code();
        run.drain();
        let log = run.stderr_lines();
        assert_eq!(code, 2, "{args:?}: {log:?}");
        assert_eq!(log.len(), 1, "{args:?}: one line: {log:?}");
        for want in wants {
            assert!(
                log[0].contains(want),
                "{args:?}: {:?} lacks {want:?}",
                log[0]
            );
        }
    }
    // PMINIT_CONFIG works as --config does.
    let mut run = Run::start_with(
        Mode::Subreaper,
        &[],
        Options {
            env: vec![("PMINIT_CONFIG".into(), two.clone())],
            ..Options::default()
        },
    );
    assert_eq!(run.wait_code(), 2);
    run.drain();
    assert!(run.stderr_lines()[0].contains("web, cron"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The file shapes pm2 users have besides `.js` and `.json`: TypeScript
/// (`.ts`, `.mts`, through Node's type stripping, Node >= 22.18) and YAML.
/// Each starts its app (2 workers answering); a file that leaves
/// kill_timeout unset gets pminit's grace, said in one line.
#[test]
fn typescript_and_yaml_ecosystem_files_start_their_apps() {
    let test = "typescript_and_yaml_ecosystem_files";
    // plain.js needs no npm package.
    let app: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "node-app"]
        .iter()
        .collect();
    let dir = tmpdir("ts-yaml");
    let cwd = app.to_string_lossy();
    let files = [
        (
            "ecosystem.config.ts",
            format!(
                "interface App {{ name: string; script: string; instances: number; cwd: string }}\n\
                 const apps: App[] = [{{ name: 'api', script: 'plain.js', instances: 2, cwd: {cwd:?} }}];\n\
                 module.exports = {{ apps }};\n"
            ),
        ),
        (
            "ecosystem.config.mts",
            format!(
                "type Config = {{ apps: Array<Record<string, unknown>> }};\n\
                 const config: Config = {{ apps: [{{ name: 'api', script: 'plain.js', instances: 2, cwd: {cwd:?} }}] }};\n\
                 export default config;\n"
            ),
        ),
        (
            "ecosystem.yaml",
            format!(
                "# pm2's YAML shape\napps:\n  - name: api\n    script: plain.js\n    instances: 2\n    cwd: {cwd:?}\n    env:\n      GREETING: hello\n"
            ),
        ),
        (
            // What pm2 reads in a .json file (it evaluates it as
            // JavaScript): comments, trailing commas, bare keys, quotes.
            "ecosystem.json",
            format!(
                "// written by hand\n{{\n  apps: [{{\n    name: 'api', /* the service */\n    script: 'plain.js',\n    instances: 2,\n    cwd: {cwd:?},\n  }},],\n}}\n"
            ),
        ),
        (
            "ecosystem.json5",
            format!("{{apps: [{{name: 'api', script: 'plain.js', instances: 2, cwd: {cwd:?},}}]}}"),
        ),
    ];
    for node in node_versions(test) {
        for (name, text) in &files {
            let file = dir.join(name);
            std::fs::write(&file, text).expect("write");
            let port = free_port();
            let mut run = Run::start_with(
                Mode::Subreaper,
                &["--config", &file.to_string_lossy()],
                Options {
                    env: vec![("PORT".into(), port.to_string()), node.path_env()],
                    ..Options::default()
                },
            );
            run.expect_err("kill_timeout is not set: pminit's --kill-timeout applies");
            run.expect_ready(2);
            let body =
                http_get(port).unwrap_or_else(|e| panic!("{name}: {e}\n{}", run.transcript()));
            assert!(body.contains("pid="), "{name}: {body}");
            run.signal(libc::SIGTERM);
            assert_eq!(
                run.wait_code(),
                0,
                "{name} on Node {}: {}",
                node.major,
                run.transcript()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TypeScript file on a Node without type stripping (the machine's
/// Node 20): one line naming the Node version, exit 2, nothing started.
#[test]
fn a_typescript_ecosystem_file_on_an_old_node_names_the_version() {
    let out = Command::new("node").arg("--version").output();
    let Ok(out) = out else {
        require(false, "ts_on_old_node", "node in PATH");
        return;
    };
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !require(
        version.starts_with("v20."),
        "ts_on_old_node",
        "Node 20 as the machine's node (the image's)",
    ) {
        return;
    }
    let dir = tmpdir("ts-old");
    let file = dir.join("ecosystem.config.ts");
    std::fs::write(
        &file,
        "const apps: string[] = [];\nmodule.exports = { apps };\n",
    )
    .expect("write");
    let out = Command::new(PMINIT)
        .args(["--config", &file.to_string_lossy()])
        .output()
        .expect("run pminit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("Node >= 22.18") && err.contains(&version),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
