//! pminit: a tiny PID 1 for containers. See README.md.

mod accept;
mod cli;
mod config;
mod control;
mod core;
mod decimal;
mod ecosystem;
mod event_loop;
mod exit;
mod ipc;
mod limits;
mod listen;
mod log;
mod memory;
mod metrics;
mod node;
mod notify;
mod options;
mod parse;
mod runtime;
mod spawn;
mod static_libc;
mod steer;
mod strays;
mod sys;
mod user;

use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match cli::parse_process() {
        Ok(cli::Invocation::Run(config)) => config,
        Ok(cli::Invocation::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(cli::Invocation::Verb(verb, args)) => {
            return ExitCode::from(control::client_main(&verb, &args))
        }
        Err(cli::CliError(message)) => return fail(&message, exit::USAGE),
    };
    log::init(config.log_format, config.verbose);
    if let Err(message) = enter(&config) {
        return fail(&message, exit::USAGE);
    }
    // After enter(): a file that cannot be entered is one line, no more.
    for w in &config.warnings {
        log::warn(w);
    }
    match event_loop::run(*config) {
        Ok(code) => exit::status(code),
        Err(e) => fail(&e.to_string(), e.code),
    }
}

fn fail(message: &str, code: i32) -> ExitCode {
    eprintln!("pminit: {message}");
    exit::status(code)
}

/// --config: the app's cwd and environment become pminit's before anything
/// starts, so the command, `$PORT` and the workers see them. (One thread
/// runs at this point: setting variables is safe.)
fn enter(config: &config::Config) -> Result<(), String> {
    if let Some((dir, field)) = &config.cwd {
        std::env::set_current_dir(dir)
            .map_err(|e| format!("{field}: cannot change to {dir:?}: {e}"))?;
    }
    for (k, v) in &config.env {
        std::env::set_var(k, v);
    }
    Ok(())
}
