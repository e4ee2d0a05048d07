//! The typed settings pminit runs with: what the command line, `PMINIT_*`
//! and a `--config` file fill in (src/cli.rs, by the table in
//! src/options.rs) and what the shell reads (src/event_loop/).
//!
//! Plain data: no parsing, no I/O. `Config::default()` holds the defaults;
//! the table's default texts (for `--help`) are checked against it by a
//! unit test in src/options.rs.

use std::time::Duration;

use crate::core::{Restart, Settings};
use crate::listen::{Addr, Layout};
use crate::log::Format;
use crate::user;

#[derive(Clone, Debug)]
pub struct Config {
    pub settings: Settings,
    pub listen: Vec<Addr>,
    pub layout: Layout,
    pub preload: bool,
    /// Node workers get a heap budget from the container's memory limit
    /// and are watched against it (--no-memory-watch turns both off).
    pub memory_watch: bool,
    pub wait_ready: bool,
    pub send_shutdown: bool,
    pub max_memory: Option<u64>,
    /// -i max, 0 or -K: the count follows the CPU quota (the spec as given).
    pub cpu_relative: Option<String>,
    pub command: Vec<String>,
    pub user: Option<user::Spec>,
    /// --user came from PMINIT_USER: messages name the variable.
    pub user_from_env: bool,
    pub log_format: Format,
    pub verbose: bool,
    /// --metrics: the address to serve /metrics on, as given (checked).
    pub metrics: Option<String>,
    /// --config: variables for the workers (env, env_NAME, port), set in
    /// pminit's environment before anything starts.
    pub env: Vec<(String, String)>,
    /// --config: the app's cwd and the field it came from.
    pub cwd: Option<(String, String)>,
    /// --config: instance_var, set to the slot like NODE_APP_INSTANCE.
    pub instance_var: Option<String>,
    /// --config: one line each, logged before anything starts.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            settings: Settings {
                instances: 1,
                stop_signal: libc::SIGINT,
                // Inside `docker stop`'s 10 s.
                kill_timeout: Duration::from_secs(8),
                stop_delay: Duration::ZERO,
                restart: Restart::OnFailure,
                max_restarts: 16,
                min_uptime: Duration::from_secs(1),
                listen_timeout: Duration::from_secs(3),
                interactive: false,
                hang_timeout: Duration::from_secs(30),
            },
            listen: Vec::new(),
            // The measured default: see bench/LAYOUTS.md.
            layout: Layout::Shared,
            preload: true,
            memory_watch: true,
            wait_ready: false,
            send_shutdown: false,
            max_memory: None,
            cpu_relative: None,
            command: Vec::new(),
            user: None,
            user_from_env: false,
            log_format: Format::Text,
            verbose: false,
            metrics: None,
            env: Vec::new(),
            cwd: None,
            instance_var: None,
            warnings: Vec::new(),
        }
    }
}
