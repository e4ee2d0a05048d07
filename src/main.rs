//! pminit: a tiny PID 1 for containers. See README.md.

mod accept;
mod cli;
mod control;
mod core;
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
mod parse;
mod runtime;
mod spawn;
mod steer;
mod strays;
mod sys;
mod user;

use std::process::ExitCode;

/// Bad command line (as argh and most CLIs).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect()
    {
        Ok(args) => args,
        Err(bad) => {
            eprintln!("pminit: argument {bad:?} is not valid UTF-8");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Some(verb) = args
        .first()
        .filter(|a| control::VERBS.contains(&a.as_str()))
    {
        return ExitCode::from(control::client_main(verb, &args[1..]));
    }
    // A variable pminit reads that is not UTF-8 is an error naming it, not
    // silently unset.
    let not_utf8 = std::cell::RefCell::new(None);
    let getenv = |name: &str| match std::env::var(name) {
        Ok(v) => Some(v),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(raw)) => {
            not_utf8.borrow_mut().get_or_insert((name.to_string(), raw));
            None
        }
    };
    let parsed = cli::parse(&args, &getenv);
    if let Some((name, raw)) = not_utf8.take() {
        eprintln!("pminit: {name}: invalid value {raw:?}: not valid UTF-8");
        return ExitCode::from(EXIT_USAGE);
    }
    let config = match parsed {
        Ok(cli::Parsed::Run(config)) => config,
        Ok(cli::Parsed::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(cli::CliError(message)) => {
            eprintln!("pminit: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    log::init(config.log_format, config.verbose);
    if let Err(message) = enter(&config) {
        eprintln!("pminit: {message}");
        return ExitCode::from(EXIT_USAGE);
    }
    // After enter(): a file that cannot be entered is one line, no more.
    for w in &config.warnings {
        log::warn(w);
    }
    match event_loop::run(*config) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("pminit: {e}");
            ExitCode::from(e.code as u8)
        }
    }
}

/// --config: the app's cwd and environment become pminit's before anything
/// starts, so the command, `$PORT` and the workers see them. (One thread
/// runs at this point: setting variables is safe.)
fn enter(config: &cli::Config) -> Result<(), String> {
    if let Some((dir, field)) = &config.cwd {
        std::env::set_current_dir(dir)
            .map_err(|e| format!("{field}: cannot change to {dir:?}: {e}"))?;
    }
    for (k, v) in &config.env {
        std::env::set_var(k, v);
    }
    Ok(())
}
