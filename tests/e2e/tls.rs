//! TLS to the databases: plaintext from the host is refused by both engines, the
//! URI and command `berth credentials` prints connect with the server verified by
//! `psql` and `mariadb` as printed, and a host name the certificate does not carry is
//! rejected by the client.

use anyhow::{Context, Result};
use berth_e2e::{docker, server_pid, unique, Berth, Db};
use serde_json::json;
use std::process::{Command, Output};

#[tokio::test(flavor = "multi_thread")]
async fn postgres_refuses_plaintext_and_is_verified() -> Result<()> {
    tls("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_refuses_plaintext_and_is_verified() -> Result<()> {
    tls("mariadb").await
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        String::from_utf8_lossy(&o.stderr).trim().to_owned(),
    )
}

fn sh(line: &str) -> Result<Output> {
    Ok(Command::new("sh").args(["-c", line]).output()?)
}

/// An address of this machine that is not loopback: ports are published there too,
/// but the certificate does not name it.
fn other_address() -> Result<String> {
    let out = Command::new("hostname").arg("-I").output()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(str::to_owned)
        .context("this machine has no non-loopback IPv4 address")
}

async fn tls(engine: &str) -> Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("tls-{}", &engine[..2]));
    let inst = b.create(&name, json!({"engine": engine})).await?;
    let id = inst["id"].as_str().context("id")?.to_owned();

    // The CA: `berth ca` prints what is in the data directory; its key is private.
    let data = b.dir.path().join("data").join("ca");
    let pem = std::fs::read_to_string(data.join("ca.crt"))?;
    let out = b.cli(&["ca"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(text(&out).0, pem.trim());
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("ca.key"))?.permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the CA key must be 0600");

    let creds = b.cli_json(&["credentials", &name])?;
    let (uri, command) = (
        creds["uri"].as_str().context("uri")?.to_owned(),
        creds["command"].as_str().context("command")?.to_owned(),
    );
    let (port, password) = (
        creds["port"].as_u64().context("port")?,
        creds["password"].as_str().context("password")?.to_owned(),
    );
    // The CLI's own copy of the CA, named in the URI, is the CA.
    let ca_file = creds["ca_file"].as_str().context("ca_file")?.to_owned();
    assert_eq!(std::fs::read_to_string(&ca_file)?, pem);
    assert!(uri.contains(&ca_file), "{uri}");

    // The key is in no environment Docker shows, of the member or the endpoint.
    for container in b.docker_objects("container", Some(&id)) {
        let inspect = docker(&["inspect", &container])?;
        assert!(!inspect.contains("PRIVATE KEY"), "{container}");
    }

    // The harness's Rust clients verify against the CA too.
    let mut db = Db::connect(&uri).await?;
    assert_eq!(db.strings("SELECT 'verified'").await?, vec!["verified"]);
    drop(db);

    let other = other_address()?;
    match engine {
        "postgres" => {
            // As printed: the URI, and the command line.
            let out = Command::new("psql")
                .args([
                    uri.as_str(),
                    "-At",
                    "-c",
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                ])
                .output()?;
            assert_eq!(text(&out).0, "t", "{:?}", text(&out));
            let out = sh(&format!("{command} -At -c 'SELECT 1'"))?;
            assert_eq!(text(&out).0, "1", "{:?}", text(&out));
            // Plaintext from the host: refused by pg_hba.
            let out = Command::new("psql")
                .arg(format!(
                    "host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable"
                ))
                .args(["-c", "SELECT 1"])
                .env("PGPASSWORD", &password)
                .output()?;
            assert!(!out.status.success());
            assert!(text(&out).1.contains("no encryption"), "{:?}", text(&out));
            // A host name the certificate does not carry: the client refuses the server.
            let wrong = uri.replace("@127.0.0.1:", &format!("@{other}:"));
            assert_ne!(wrong, uri);
            let out = Command::new("psql")
                .args([wrong.as_str(), "-c", "SELECT 1"])
                .output()?;
            assert!(!out.status.success());
            assert!(
                text(&out).1.contains("does not match host name"),
                "{:?}",
                text(&out)
            );
        }
        _ => {
            // As printed: the command line (the `mariadb` client takes no URI).
            let out = sh(&format!(
                "{command} -N -e \"SHOW SESSION STATUS LIKE 'Ssl_version'\""
            ))?;
            assert!(text(&out).0.contains("TLSv1."), "{:?}", text(&out));
            // Plaintext from the host: refused by require_secure_transport. MariaDB
            // 10.11 says only "Access denied" (as for a wrong password), so the same
            // password over TLS on the same line must succeed.
            let plain = |tls: &str| {
                Command::new("mariadb")
                    .args(["--protocol=TCP", "-h", "127.0.0.1", "-P", &port.to_string()])
                    .args(["-u", "root", tls, "-N", "-e", "SELECT 1"])
                    .env("MYSQL_PWD", &password)
                    .output()
            };
            let out = plain("--skip-ssl")?;
            assert!(!out.status.success());
            assert!(text(&out).1.contains("Access denied"), "{:?}", text(&out));
            let out = plain("--ssl")?;
            assert_eq!(text(&out).0, "1", "{:?}", text(&out));
            let refused = mysql_async::Conn::new(mysql_async::Opts::from_url(&format!(
                "mysql://root:{password}@127.0.0.1:{port}/"
            ))?)
            .await;
            assert!(refused.is_err(), "a plaintext login was accepted");
            // A host name the certificate does not carry: the client refuses the server.
            let wrong = command.replace(" -h 127.0.0.1 ", &format!(" -h {other} "));
            assert_ne!(wrong, command);
            let out = sh(&format!("{wrong} -e 'SELECT 1'"))?;
            assert!(!out.status.success());
            // The same line with the certificate's name succeeded above: only the host
            // name differs.
            assert!(
                text(&out)
                    .1
                    .contains("Validation of SSL server certificate failed"),
                "{:?}",
                text(&out)
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_takes_a_renewed_certificate_live() -> Result<()> {
    renewal("postgres", "postgres -D").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_takes_a_renewed_certificate_live() -> Result<()> {
    renewal("mariadb", "mariadbd").await
}

/// A certificate that must be replaced (here its names: the endpoint host changed) is
/// renewed by a task the user sees, and the running engine takes it without a restart.
async fn renewal(engine: &str, process: &str) -> Result<()> {
    let mut b = Berth::start().await?;
    let name = unique(&format!("renew-{}", &engine[..2]));
    b.create(&name, json!({"engine": engine})).await?;
    let container = b.member_container(&name)?;
    let pid = server_pid(&container, process)?;

    let other = other_address()?;
    b.restart_with(&["--endpoint-host", &other]).await?;
    let renewed = |b: &Berth| -> bool {
        let tasks = b
            .cli_json(&["tasks", "--instance", &name])
            .unwrap_or_default();
        tasks.as_array().into_iter().flatten().any(|t| {
            t["kind"] == "reconfigure"
                && t["state"] == "succeeded"
                && t["steps"].as_array().into_iter().flatten().any(|s| {
                    s["name"] == "ensure_tls"
                        && s["detail"].as_str().is_some_and(|d| {
                            d.contains("host names changed") && d.contains("reloaded")
                        })
                })
        })
    };
    b.eventually(
        "a reconfigure task renewed the certificate",
        std::time::Duration::from_secs(90),
        || {
            let done = renewed(&b);
            async move { done }
        },
    )
    .await?;
    // The renewal is in the event log, with its reason.
    let events = b
        .get(&format!("/v1/events?instance={name}&limit=1000"))
        .await?;
    let renewal = events["events"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["kind"] == "certificate.renewed")
        .context("no certificate.renewed event")?;
    assert!(
        renewal["message"]
            .as_str()
            .is_some_and(|m| m.contains("host names changed")),
        "{renewal}"
    );

    // The printed command now names the new host, and the server proves it.
    let creds = b.cli_json(&["credentials", &name])?;
    assert_eq!(creds["host"], json!(other));
    let command = creds["command"].as_str().context("command")?;
    let out = match engine {
        "postgres" => sh(&format!("{command} -At -c 'SELECT 1'"))?,
        _ => sh(&format!("{command} -N -e 'SELECT 1'"))?,
    };
    assert_eq!(text(&out).0, "1", "{:?}", text(&out));
    assert_eq!(
        server_pid(&container, process)?,
        pid,
        "the engine restarted"
    );
    Ok(())
}
