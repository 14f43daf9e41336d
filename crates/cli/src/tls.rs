//! The CLI's side of TLS: a local copy of Berth's CA, so the URIs and commands it
//! prints verify the server and work as printed, and `berth connect` does the same.

use crate::{output, CliError, Client, Format, Result};
use berth_server::{CaView, CredentialsView, InstanceView};
use std::path::PathBuf;

/// Writes the CA next to the CLI's configuration (`ca-<site>.crt`, 0644) and returns
/// its path. Without a configuration directory, the system's temporary directory.
pub(crate) async fn local_ca(client: &Client) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let ca: CaView = client.get("/v1/ca").await?;
    let dir = client
        .config_dir()
        .map(|d| d.to_owned())
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("ca-{}.crt", ca.site));
    if std::fs::read_to_string(&path).ok().as_deref() != Some(ca.certificate.as_str()) {
        let fail = |e: std::io::Error| {
            CliError::Other(format!(
                "cannot write the CA certificate to {}: {e}",
                path.display()
            ))
        };
        std::fs::create_dir_all(&dir).map_err(fail)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &ca.certificate).map_err(fail)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(fail)?;
        std::fs::rename(&tmp, &path).map_err(fail)?;
    }
    Ok(path)
}

/// `berth ca`: the CA certificate (PEM), to verify instances with.
pub async fn ca(client: &Client, fmt: Format) -> Result<()> {
    let ca: CaView = client.get("/v1/ca").await?;
    if fmt == Format::Json {
        output::print_json(&serde_json::to_value(&ca).unwrap_or_default());
    } else {
        print!("{}", ca.certificate);
    }
    Ok(())
}

async fn engine_of(client: &Client, name: &str) -> Result<&'static dyn berth_engine::Engine> {
    let inst: InstanceView = client.get(&format!("/v1/instances/{name}")).await?;
    let kind: berth_model::EngineKind = inst
        .engine
        .parse()
        .map_err(|e| CliError::Other(format!("{e}")))?;
    Ok(berth_engine::engine(kind))
}

/// The credentials with the URI and command pointing at the local copy of the CA.
async fn local_credentials(client: &Client, name: &str) -> Result<CredentialsView> {
    let eng = engine_of(client, name).await?;
    let mut c: CredentialsView = client
        .get(&format!("/v1/instances/{name}/credentials"))
        .await?;
    let ca = local_ca(client).await?.display().to_string();
    let password = berth_model::Secret::new(c.password.clone());
    c.uri = eng
        .uri(&c.host, c.port, &c.user, &password, &ca)
        .expose()
        .to_owned();
    c.ro_uri = eng
        .uri(&c.host, c.ro_port, &c.user, &password, &ca)
        .expose()
        .to_owned();
    c.command =
        berth_engine::shell_line(&eng.client_command(&c.host, c.port, &c.user, &password, &ca));
    c.ca_file = ca;
    Ok(c)
}

/// `berth credentials`.
pub async fn credentials(client: &Client, name: &str, fmt: Format) -> Result<()> {
    output::credentials(&local_credentials(client, name).await?, fmt)
}

/// `berth connect`: runs the engine's client over TLS, the server verified against
/// the CA, the password in its environment.
pub async fn connect(client: &Client, name: &str, extra: &[String]) -> Result<i32> {
    let eng = engine_of(client, name).await?;
    let c = local_credentials(client, name).await?;
    let spec = eng.client_command(
        &c.host,
        c.port,
        &c.user,
        &berth_model::Secret::new(c.password.clone()),
        &c.ca_file,
    );
    let status = std::process::Command::new(&spec.program)
        .args(&spec.args)
        .args(extra)
        .envs(spec.env.iter().cloned())
        .status()
        .map_err(|e| {
            CliError::Other(format!(
                "cannot run {}: {e}; install the engine's client (PostgreSQL: apt-get install postgresql-client; MariaDB: apt-get install mariadb-client)",
                spec.program
            ))
        })?;
    Ok(status.code().unwrap_or(1))
}
