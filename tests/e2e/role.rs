//! `GET /role` on a member's agent: no token needed (the per-instance endpoint
//! probes it), and it reports what the engine says — primary, ready, sessions
//! counted. Every other agent route still wants the token.

use anyhow::{bail, Context, Result};
use berth_e2e::{docker, unique, Berth};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn postgres_member_reports_its_role_without_a_token() -> Result<()> {
    role_of_one_member("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_member_reports_its_role_without_a_token() -> Result<()> {
    role_of_one_member("mariadb").await
}

async fn role_of_one_member(engine: &str) -> Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("role-{engine}"));
    b.create(&name, json!({"engine": engine, "memory": "512MiB"}))
        .await?;
    let container = b.member_container(&name)?;
    let ip = container_ip(&container)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let role = |http: reqwest::Client| {
        let url = format!("http://{ip}:8008/role");
        async move {
            let resp = http.get(&url).send().await?;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await?;
            anyhow::Ok((status, body))
        }
    };

    // A session through the instance's published port: the report counts it.
    let mut db = b.db(&name).await?;
    db.exec("SELECT 1").await?;
    let (status, r) = role(http.clone()).await?;
    if status != 200 {
        bail!("GET /role answered {status}: {r}");
    }
    assert_eq!(r["role"], "primary", "{r}");
    assert_eq!(r["ready"], true, "{r}");
    assert_eq!(r["read_only"], false, "{r}");
    assert!(r["connections"].as_u64().is_some_and(|n| n >= 1), "{r}");
    assert!(r["max_connections"].as_u64().is_some_and(|n| n > 1), "{r}");
    assert!(r["probe_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{r}");
    assert_eq!(r["replicas"], json!([]), "{r}");
    assert!(r["lag_seconds"].is_null(), "a primary has no lag: {r}");

    if engine == "mariadb" {
        // A replication source that never answers: a replica, not ready, and why.
        db.exec("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=1")
            .await?;
        let (status, r) = role(http.clone()).await?;
        assert_eq!(status, 200, "{r}");
        assert_stalled_replica(&r, "IO thread");
        db.exec("RESET SLAVE ALL").await?;
        let (_, r) = role(http.clone()).await?;
        assert_eq!(r["role"], "primary", "{r}");
    }

    // The session ends: the count follows (the probe's own is never counted).
    let before = r["connections"].as_u64().unwrap_or(0);
    drop(db);
    let mut after = before;
    for _ in 0..50 {
        let (_, r) = role(http.clone()).await?;
        after = r["connections"].as_u64().unwrap_or(u64::MAX);
        if after < before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        after < before,
        "connections stayed at {after} (was {before})"
    );

    // Only /role is open: the agent's other routes still want the token.
    let health = http
        .get(format!("http://{ip}:8008/health"))
        .send()
        .await?
        .status()
        .as_u16();
    assert_eq!(health, 401);

    Ok(())
}

/// A replica whose replication does not run: not ready, and the reason says `why`.
fn assert_stalled_replica(r: &Value, why: &str) {
    assert_eq!(r["role"], "replica", "{r}");
    assert_eq!(r["ready"], false, "{r}");
    assert_eq!(r["replication_running"], false, "{r}");
    assert!(r["reason"].as_str().is_some_and(|s| s.contains(why)), "{r}");
}

/// A container's address on its (first) network, reachable from the Docker host.
pub(crate) fn container_ip(container: &str) -> Result<String> {
    let ips = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}";
    let out = docker(&["inspect", "-f", ips, container])?;
    Ok(out
        .split_whitespace()
        .next()
        .context("an address")?
        .to_owned())
}
