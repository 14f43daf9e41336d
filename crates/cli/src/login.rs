//! `berth login`: point the CLI at an installation on purpose.
//!
//! `berth serve` writes the CLI's configuration only when there is none, so a second
//! installation (or a test run) never silently takes over a user's CLI. Switching is
//! this command: it checks the URL and token against the API before it writes.

use crate::{CliError, Client, Result};
use std::path::{Path, PathBuf};

/// Checks `url` + the token in `token_file` against the API, then writes them to the
/// CLI configuration at `config` (mode 0600). Returns the path written.
pub async fn login(url: &str, token_file: &Path, config: Option<PathBuf>) -> Result<PathBuf> {
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| {
            CliError::Config(format!(
                "cannot read the token file {}: {e}; `berth serve` keeps the admin token in <data-dir>/admin-token",
                token_file.display()
            ))
        })?
        .trim()
        .to_owned();
    if token.is_empty() {
        return Err(CliError::Config(format!(
            "the token file {} is empty",
            token_file.display()
        )));
    }
    let path = config
        .or_else(crate::default_config_path)
        .ok_or_else(|| CliError::Config("no config directory: pass --config".into()))?;
    // A client that ignores the current file: check before replacing anything.
    let client = Client::new(
        Some(url.to_owned()),
        Some(token.clone()),
        Some(path.clone()),
    )?;
    let _: serde_json::Value = client.get("/v1/info").await?;
    let body = serde_json::json!({ "url": url.trim_end_matches('/'), "token": token });
    berth_server::write_private(&path, &format!("{body:#}\n"))
        .map_err(|e| CliError::Config(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}
