//! The member's server certificate: the control plane leaves a bundle (certificate,
//! key, CA) on the data volume; at every start, and when asked (`POST /tls`, a
//! renewal), the agent installs it where the engine reads it: owned by the engine's
//! user, mode 0600 (PostgreSQL refuses a key others can read). The key is never
//! logged.

use crate::{AgentConfig, AgentError, Result};
use berth_engine::{Layout, TLS_CA, TLS_CERT, TLS_KEY};
use berth_model::tls::{Bundle, BUNDLE_FILE};
use nix::unistd::{chown, User};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Io { what, source }
}

fn bundle_path(layout: &Layout) -> std::path::PathBuf {
    layout.volume.join(BUNDLE_FILE)
}

/// Writes `contents` as the engine's user, 0600, replacing the file atomically.
fn write_owned(path: &Path, contents: &str, user: &User) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let what = || path.display().to_string();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(what()))?;
    f.write_all(contents.as_bytes()).map_err(io(what()))?;
    chown(&tmp, Some(user.uid), Some(user.gid)).map_err(|e| AgentError::Io {
        what: what(),
        source: e.into(),
    })?;
    std::fs::rename(&tmp, path).map_err(io(what()))
}

/// Installs the bundle for the engine. Returns whether anything changed; no bundle
/// (a member made before TLS, or catalog mode) installs nothing, and the engine then
/// refuses network connections.
pub(crate) fn install(config: &AgentConfig) -> Result<bool> {
    let layout = &config.layout;
    let text = match std::fs::read_to_string(bundle_path(layout)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!("no server certificate on the data volume; the engine accepts no network connections until the control plane delivers one");
            return Ok(false);
        }
        Err(e) => return Err(io("the certificate bundle")(e)),
    };
    let bundle: Bundle = serde_json::from_str(&text)
        .map_err(|e| AgentError::Config(format!("the certificate bundle is unreadable: {e}")))?;
    let name = config.engine().os_user();
    let user = User::from_name(name)
        .ok()
        .flatten()
        .ok_or_else(|| AgentError::Config(format!("the image has no user {name:?}")))?;
    let dir = layout.tls_dir();
    std::fs::create_dir_all(&dir).map_err(io(dir.display().to_string()))?;
    chown(&dir, Some(user.uid), Some(user.gid)).map_err(|e| AgentError::Io {
        what: dir.display().to_string(),
        source: e.into(),
    })?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io(dir.display().to_string()))?;
    let mut changed = false;
    for (file, contents) in [
        (TLS_CERT, &bundle.cert),
        (TLS_KEY, &bundle.key),
        (TLS_CA, &bundle.ca),
    ] {
        let path = dir.join(file);
        if std::fs::read_to_string(&path).ok().as_ref() != Some(contents) {
            write_owned(&path, contents, &user)?;
            changed = true;
        }
    }
    if changed {
        tracing::info!("installed the server certificate");
    }
    Ok(changed)
}

/// Installs the bundle and, when it changed, makes the running engine use it: the
/// configuration is rendered again (TLS on) and the engine reloads without a restart.
pub(crate) async fn install_and_reload(config: &AgentConfig) -> Result<bool> {
    if !install(config)? {
        return Ok(false);
    }
    let engine = config.engine();
    engine.render_config(&config.layout, &crate::current_settings(config))?;
    engine.reload_tls(&config.layout).await?;
    tracing::info!("the engine reloaded its server certificate");
    Ok(true)
}
