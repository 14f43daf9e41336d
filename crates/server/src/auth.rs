//! API tokens: random 256-bit values, stored only as SHA-256.

use crate::{Config, ServeError};
use berth_store::Store;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use tracing::info;

/// A fresh token: `berth_` and 64 hex digits.
pub(crate) fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("berth_{}", hex::encode(bytes))
}

/// SHA-256 of a token, hex: what the store keeps.
pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Writes `contents` to `path` with mode 0600, replacing it (write, sync, rename):
/// how every file holding a secret is written, by the control plane and the CLI.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// On first start: make the admin token, keep its hash, hand the token to the
/// operator through a 0600 file (never through the log). Then see to the CLI's
/// configuration (see [`ensure_cli_config`]).
pub(crate) async fn bootstrap_admin_token(
    store: &Store,
    config: &Config,
) -> Result<(), ServeError> {
    let token_file = config.data_dir.join("admin-token");
    if !store.has_tokens().await? {
        let token = new_token();
        write_private(&token_file, &format!("{token}\n")).map_err(|source| ServeError::Io {
            what: format!("writing {}", token_file.display()),
            source,
        })?;
        store.insert_token("admin", &token_hash(&token)).await?;
        info!(path = %token_file.display(), "created the admin token");
    }
    ensure_cli_config(config, &token_file)
}

/// What to do with the CLI's configuration file. Pure, so every case is tested.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CliConfigAction {
    /// There is none: write one that points here.
    Write,
    /// The operator asked for it (`--write-cli-config`): replace it.
    Replace,
    /// It is the user's and points elsewhere (or here already): leave it.
    Keep,
}

/// A running installation is never replaced silently: the file is written only
/// when there is none, or on purpose.
pub(crate) fn cli_config_action(exists: bool, forced: bool) -> CliConfigAction {
    match (exists, forced) {
        (_, true) => CliConfigAction::Replace,
        (false, false) => CliConfigAction::Write,
        (true, false) => CliConfigAction::Keep,
    }
}

/// The URL the CLI should use to reach this control plane.
fn own_url(config: &Config) -> String {
    let host = if config.listen.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        config.listen.ip().to_string()
    };
    format!("http://{host}:{}", config.listen.port())
}

/// Writes the CLI's configuration (URL and admin token) when there is none, or when
/// `--write-cli-config` says so; otherwise leaves the user's file alone and says how
/// to switch on purpose.
fn ensure_cli_config(config: &Config, token_file: &Path) -> Result<(), ServeError> {
    let Some(cli) = &config.cli_config else {
        return Ok(());
    };
    let url = own_url(config);
    match cli_config_action(cli.exists(), config.write_cli_config) {
        CliConfigAction::Keep => {
            info!(
                path = %cli.display(),
                "left the CLI configuration as it is; to point the CLI here run \
                 `berth login --url {url} --token-file {}`",
                token_file.display()
            );
            Ok(())
        }
        CliConfigAction::Write | CliConfigAction::Replace => {
            let token = std::fs::read_to_string(token_file).map_err(|source| ServeError::Io {
                what: format!("reading {}", token_file.display()),
                source,
            })?;
            let body = serde_json::json!({ "url": url, "token": token.trim() });
            write_private(cli, &format!("{body:#}\n")).map_err(|source| ServeError::Io {
                what: format!("writing {}", cli.display()),
                source,
            })?;
            info!(path = %cli.display(), "wrote the CLI configuration");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_config_is_written_only_when_absent_or_asked() {
        assert_eq!(cli_config_action(false, false), CliConfigAction::Write);
        assert_eq!(cli_config_action(true, false), CliConfigAction::Keep);
        assert_eq!(cli_config_action(true, true), CliConfigAction::Replace);
        assert_eq!(cli_config_action(false, true), CliConfigAction::Replace);
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with("berth_") && a.len() == 6 + 64);
        // SHA-256 in hex: the FIPS 180-2 test vector for "abc".
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn private_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile_dir();
        let p = dir.join("x/secret");
        write_private(&p, "s").expect("write");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("berth-auth-test-{}", new_token()));
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }
}
