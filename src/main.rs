//! pminit: a tiny PID 1 for containers. See README.md.

mod cli;
mod control;
mod core;
mod event_loop;
mod ipc;
mod limits;
mod listen;
mod log;
mod node;
mod notify;
mod parse;
mod spawn;
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
    let config = match cli::parse(&args, &|name| std::env::var(name).ok()) {
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
    match event_loop::run(config) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("pminit: {e}");
            ExitCode::from(e.code as u8)
        }
    }
}
