//! What every command gets from the global flags: the output format and how to
//! reach the control plane. Command modules take an `&Env` instead of the whole
//! `Cli`, so a new command group is one module plus one line in `main.rs`.

use berth_cli::{Client, Follow, Format};
use std::path::PathBuf;

/// The global flags, resolved once in `main`.
pub struct Env {
    /// `--output`.
    pub fmt: Format,
    /// `--url` / `BERTH_URL`; `None` means the CLI configuration decides.
    pub url: Option<String>,
    /// `--token` / `BERTH_TOKEN`; `None` means the CLI configuration decides.
    pub token: Option<String>,
    /// `--config` / `BERTH_CONFIG`; `None` means the default path.
    pub config: Option<PathBuf>,
}

impl Env {
    /// A REST client for the control plane. Made on demand, not in `main`: `serve`,
    /// `agent`, `image` and `login` must work without a CLI configuration.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(
            self.url.clone(),
            self.token.clone(),
            self.config.clone(),
        )?)
    }
}

/// How to follow a task given a command's `--no-wait` flag.
pub fn follow(no_wait: bool) -> Follow {
    if no_wait {
        Follow::NoWait
    } else {
        Follow::Wait
    }
}
