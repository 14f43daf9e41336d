//! `GET /role` on a member's agent: no token needed (the per-instance endpoint
//! probes it), and it reports what the engine says — primary, ready, sessions
//! counted. Every other agent route still wants the token.

use anyhow::{bail, Context, Result};
use berth_e2e::{docker, unique, Berth, Db};
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
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        &container,
    ])?;
    let ip = ip
        .split_whitespace()
        .next()
        .context("member has an address")?;
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

    if engine == "postgres" {
        // In recovery with no primary to stream from: a replica, not ready, and why.
        docker(&[
            "exec",
            &container,
            "touch",
            "/var/lib/berth/data/standby.signal",
        ])?;
        docker(&["restart", &container])?;
        let mut last = Value::Null;
        for _ in 0..100 {
            if let Ok((_, r)) = role(http.clone()).await {
                if r["role"] == "replica" {
                    last = r;
                    break;
                }
                last = r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(last["read_only"], true, "{last}");
        assert_stalled_replica(&last, "WAL receiver");
    }
    Ok(())
}

/// A replica whose replication does not run: not ready, and the reason says `why`.
fn assert_stalled_replica(r: &Value, why: &str) {
    assert_eq!(r["role"], "replica", "{r}");
    assert_eq!(r["ready"], false, "{r}");
    assert_eq!(r["replication_running"], false, "{r}");
    assert!(r["reason"].as_str().is_some_and(|s| s.contains(why)), "{r}");
}

/// Removes the hand-made endpoint container even when the test fails (declared
/// after the `Berth`, so it goes first and the network can be removed after it).
struct Removed(String);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_through_an_endpoint_container() -> Result<()> {
    endpoint_container("postgres", 5432).await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_through_an_endpoint_container() -> Result<()> {
    endpoint_container("mariadb", 3306).await
}

/// `berth endpoint` as the control plane will run it (until it does): PID 1 of a
/// container from the engine image, on the instance's network, with the agent
/// volume; one real member and one candidate whose name does not resolve. Clients
/// reach the engine through both listeners with TLS verified end to end, and the
/// container stops at once, cleanly, on `docker stop`.
async fn endpoint_container(engine: &str, engine_port: u16) -> Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("ep-{engine}"));
    b.create(&name, json!({"engine": engine, "memory": "512MiB"}))
        .await?;
    let member = b.member_container(&name)?;
    let inspect = |f: &str| -> Result<String> {
        Ok(docker(&["inspect", "-f", f, &member])?.trim().to_owned())
    };
    let image = inspect("{{.Config.Image}}")?;
    let network = inspect("{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}")?;
    let network = network.split_whitespace().next().context("a network")?;
    let agent_volume =
        inspect("{{range .Mounts}}{{if eq .Destination \"/opt/berth\"}}{{.Name}}{{end}}{{end}}")?;
    let ep = Removed(unique("berth-e2e-endpoint"));
    docker(&[
        "run",
        "-d",
        "--name",
        &ep.0,
        "--network",
        network,
        "-v",
        &format!("{agent_volume}:/opt/berth:ro"),
        "-e",
        &format!("BERTH_ENDPOINT_MEMBERS={member},{member}-absent"),
        "-e",
        &format!("BERTH_ENDPOINT_ENGINE_PORT={engine_port}"),
        "-e",
        "BERTH_ENDPOINT_PROBE_INTERVAL_MS=300",
        "-p",
        "127.0.0.1::6432",
        "-p",
        "127.0.0.1::6433",
        "--entrypoint",
        "/opt/berth/berth",
        &image,
        "endpoint",
    ])?;
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        &ep.0,
    ])?;
    let ip = ip
        .split_whitespace()
        .next()
        .context("endpoint address")?
        .to_owned();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?;
    let status = || async {
        let v: Value = http
            .get(format!("http://{ip}:8008/status"))
            .send()
            .await?
            .json()
            .await?;
        anyhow::Ok(v)
    };
    let mut s = Value::Null;
    for _ in 0..100 {
        if let Ok(v) = status().await {
            if v["rw_target"] == member.as_str() {
                s = v;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        s["rw_target"],
        member.as_str(),
        "no read-write target in 10s: {s}\n{}",
        docker(&["logs", &ep.0])?
    );
    // One member: reads fall back to the primary, and the status says why.
    assert_eq!(s["ro_fallback"], true, "{s}");
    let absent = &s["members"][1];
    assert_eq!(absent["answered"], false, "{s}");
    assert!(
        absent["excluded"]
            .as_str()
            .is_some_and(|e| e.contains("no answer")),
        "{s}"
    );

    let creds = b.get(&format!("/v1/instances/{name}/credentials")).await?;
    let uri = creds["uri"].as_str().context("uri")?;
    for port in ["6432/tcp", "6433/tcp"] {
        let published = docker(&["port", &ep.0, port])?;
        let host_port = published
            .trim()
            .rsplit(':')
            .next()
            .context("published port")?;
        let mut db = Db::connect(&with_port(uri, host_port)?).await?;
        assert_eq!(db.strings("SELECT 1").await?, ["1"]);
        let s = status().await?;
        let open = &s["connections"][member.as_str()];
        let key = if port.starts_with("6432") { "rw" } else { "ro" };
        assert_eq!(open[key], 1, "{s}");
    }

    let started = std::time::Instant::now();
    docker(&["stop", "-t", "10", &ep.0])?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM was not handled: stop took {:?}",
        started.elapsed()
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.ExitCode}}", &ep.0])?.trim(),
        "0"
    );
    Ok(())
}

/// The URI with another port (the host stays: the certificate names it).
fn with_port(uri: &str, port: &str) -> Result<String> {
    let (head, rest) = uri.split_once('@').context("uri has credentials")?;
    let slash = rest.find('/').context("uri has a path")?;
    let host = rest[..slash].rsplit_once(':').context("uri has a port")?.0;
    Ok(format!("{head}@{host}:{port}{}", &rest[slash..]))
}
