//! `berth endpoint` run by hand as the control plane will run it: a container beside
//! real members of both engines. Clients reach the engine through both listeners
//! with TLS verified end to end; writes follow the primary and reads the replicas,
//! across lag and a switchover.

use crate::role::container_ip;
use anyhow::{bail, Context, Result};
use berth_e2e::{docker, unique, Berth, Db};
use serde_json::{json, Value};
use std::time::Duration;

/// `berth endpoint` as the control plane will run it (until it does): PID 1 of a
/// container from the engine image, on the instance's network, with the agent
/// volume. Removed even when the test fails (declared after the `Berth`, so it goes
/// first and the network can be removed after it).
struct EndpointContainer {
    name: String,
    ip: String,
    http: reqwest::Client,
}

impl Drop for EndpointContainer {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}

impl EndpointContainer {
    /// Starts one beside `member` (image, network and agent volume from it), with
    /// `--max-lag` in milliseconds.
    fn start(member: &str, candidates: &[&str], engine_port: u16, max_lag_ms: u64) -> Result<Self> {
        let inspect = |f: &str, c: &str| -> Result<String> {
            Ok(docker(&["inspect", "-f", f, c])?.trim().to_owned())
        };
        let image = inspect("{{.Config.Image}}", member)?;
        let networks = "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}";
        let network = inspect(networks, member)?;
        let network = network.split_whitespace().next().context("a network")?;
        let agent = "{{range .Mounts}}{{if eq .Destination \"/opt/berth\"}}{{.Name}}{{end}}{{end}}";
        let agent_volume = inspect(agent, member)?;
        let mut ep = Self {
            name: unique("berth-e2e-endpoint"),
            ip: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()?,
        };
        docker(&[
            "run",
            "-d",
            "--name",
            &ep.name,
            "--network",
            network,
            "-v",
            &format!("{agent_volume}:/opt/berth:ro"),
            "-e",
            &format!("BERTH_ENDPOINT_MEMBERS={}", candidates.join(",")),
            "-e",
            &format!("BERTH_ENDPOINT_ENGINE_PORT={engine_port}"),
            "-e",
            &format!("BERTH_ENDPOINT_MAX_LAG_MS={max_lag_ms}"),
            "-p",
            "127.0.0.1::6432",
            "-p",
            "127.0.0.1::6433",
            "--entrypoint",
            "/opt/berth/berth",
            &image,
            "endpoint",
        ])?;
        ep.ip = container_ip(&ep.name)?;
        Ok(ep)
    }

    async fn status(&self) -> Result<Value> {
        let url = format!("http://{}:8008/status", self.ip);
        Ok(self.http.get(url).send().await?.json().await?)
    }

    /// Polls `/status` until `check` holds (at most 20 s).
    async fn until(&self, what: &str, check: impl Fn(&Value) -> bool) -> Result<Value> {
        let mut last = Value::Null;
        for _ in 0..200 {
            if let Ok(v) = self.status().await {
                if check(&v) {
                    return Ok(v);
                }
                last = v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "{what} not within 10s: {last}\n{}",
            docker(&["logs", &self.name])?
        )
    }

    /// The instance's URI, through this endpoint's `listener` port (6432 or 6433).
    async fn uri(&self, b: &Berth, instance: &str, listener: u16) -> Result<String> {
        let creds = b
            .get(&format!("/v1/instances/{instance}/credentials"))
            .await?;
        let published = docker(&["port", &self.name, &format!("{listener}/tcp")])?;
        let port = published
            .trim()
            .rsplit(':')
            .next()
            .context("published port")?;
        with_port(creds["uri"].as_str().context("uri")?, port)
    }
}

/// The URI with another port (the host stays: the certificate names it).
fn with_port(uri: &str, port: &str) -> Result<String> {
    let (head, rest) = uri.split_once('@').context("uri has credentials")?;
    let slash = rest.find('/').context("uri has a path")?;
    let host = rest[..slash].rsplit_once(':').context("uri has a port")?.0;
    Ok(format!("{head}@{host}:{port}{}", &rest[slash..]))
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_through_an_endpoint_container() -> Result<()> {
    endpoint_container("postgres", 5432).await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_through_an_endpoint_container() -> Result<()> {
    endpoint_container("mariadb", 3306).await
}

/// One real member and one candidate whose name does not resolve: clients reach the
/// engine through both listeners with TLS verified end to end, reads fall back to
/// the primary visibly, and the container stops at once, cleanly, on `docker stop`.
async fn endpoint_container(engine: &str, engine_port: u16) -> Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("ep-{engine}"));
    b.create(&name, json!({"engine": engine, "memory": "512MiB"}))
        .await?;
    let member = b.member_container(&name)?;
    let absent = format!("{member}-absent");
    let ep = EndpointContainer::start(&member, &[&member, &absent], engine_port, 10_000)?;
    let s = ep
        .until("a read-write target", |s| s["rw_target"] == member.as_str())
        .await?;
    assert_eq!(s["ro_fallback"], true, "{s}");
    assert_eq!(s["members"][1]["answered"], false, "{s}");
    let excluded = s["members"][1]["excluded"].as_str().unwrap_or("");
    assert!(excluded.contains("no answer"), "{s}");

    for (listener, key) in [(6432, "rw"), (6433, "ro")] {
        let mut db = Db::connect(&ep.uri(&b, &name, listener).await?).await?;
        assert_eq!(db.strings("SELECT 1").await?, ["1"]);
        let s = ep.status().await?;
        assert_eq!(s["connections"][member.as_str()][key], 1, "{s}");
    }

    let started = std::time::Instant::now();
    docker(&["stop", "-t", "10", &ep.name])?;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM not handled: {took:?}"
    );
    let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &ep.name])?;
    assert_eq!(code.trim(), "0");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_endpoint_follows_replicas_and_a_switchover() -> Result<()> {
    replicas_through_an_endpoint("postgres", 5432).await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_endpoint_follows_replicas_and_a_switchover() -> Result<()> {
    replicas_through_an_endpoint("mariadb", 3306).await
}

/// Two streaming members: the replica reports its lag and the primary sees it; the
/// endpoint sends writes to the primary and reads to the replica, where the write is
/// read back from a read-only engine; after a switchover the same two addresses
/// follow the new roles.
async fn replicas_through_an_endpoint(engine: &str, engine_port: u16) -> Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("epr-{}", &engine[..2]));
    let shown = b
        .create(
            &name,
            json!({"engine": engine, "memory": "512MiB", "members": 2}),
        )
        .await?;
    let container = |role: &str| -> Result<String> {
        let members = shown["members"].as_array().context("members")?;
        let m = members
            .iter()
            .find(|m| m["role"] == role)
            .context("a member")?;
        Ok(m["container"].as_str().context("container")?.to_owned())
    };
    let (primary, replica) = (container("primary")?, container("replica")?);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let role_of = |c: String| {
        let http = http.clone();
        async move {
            let url = format!("http://{}:8008/role", container_ip(&c)?);
            let v: Value = http.get(url).send().await?.json().await?;
            anyhow::Ok(v)
        }
    };
    let mut r = Value::Null;
    for _ in 0..100 {
        r = role_of(replica.clone()).await?;
        if r["ready"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(r["role"], "replica", "{r}");
    assert_eq!(r["ready"], true, "{r}");
    assert_eq!(r["read_only"], true, "{r}");
    assert_eq!(r["replication_running"], true, "{r}");
    assert!(r["lag_seconds"].as_f64().is_some_and(|s| s >= 0.0), "{r}");
    let p = role_of(primary.clone()).await?;
    assert_eq!(p["role"], "primary", "{p}");
    assert_eq!(p["replicas"].as_array().map(Vec::len), Some(1), "{p}");

    let ep = EndpointContainer::start(&primary, &[&primary, &replica], engine_port, 3_000)?;
    let s = ep
        .until("a replica as read-only target", |s| {
            s["rw_target"] == primary.as_str() && s["ro_targets"][0]["member"] == replica.as_str()
        })
        .await?;
    assert_eq!(s["ro_fallback"], false, "{s}");
    let mut rw = Db::connect(&ep.uri(&b, &name, 6432).await?).await?;
    let (table, read_only) = if engine == "mariadb" {
        rw.exec("CREATE DATABASE app").await?;
        ("app.t", "SELECT @@read_only")
    } else {
        ("t", "SELECT pg_is_in_recovery()::int")
    };
    rw.exec(&format!("CREATE TABLE {table} (n INT PRIMARY KEY)"))
        .await?;
    rw.exec(&format!("INSERT INTO {table} VALUES (7)")).await?;
    // MariaDB counts lag in whole seconds from each event's time: right after a
    // write a fresh replica may show a second or two.
    ep.until("the replica qualifies", |s| s["ro_fallback"] == false)
        .await?;
    let mut ro = Db::connect(&ep.uri(&b, &name, 6433).await?).await?;
    assert_eq!(
        ro.strings(read_only).await?,
        ["1"],
        "reads reached the primary"
    );
    let read = format!("SELECT CAST(n AS CHAR(8)) FROM {table}");
    let read = if engine == "mariadb" {
        read
    } else {
        read.replace("CHAR(8)", "text")
    };
    let mut seen = vec![];
    for _ in 0..50 {
        seen = ro.strings(&read).await.unwrap_or_default();
        if seen == ["7"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen, ["7"], "the write did not reach the replica's readers");

    // Replay paused on the replica (through the session that reached it) and a
    // write: past the 3 s maximum (MariaDB: replication not running) it gets no new
    // reads, which go to the primary, visibly; resumed, it gets them again.
    let (pause, resume) = if engine == "mariadb" {
        ("STOP SLAVE SQL_THREAD", "START SLAVE SQL_THREAD")
    } else {
        (
            "SELECT pg_wal_replay_pause()",
            "SELECT pg_wal_replay_resume()",
        )
    };
    ro.exec(pause).await?;
    rw.exec(&format!("INSERT INTO {table} VALUES (9)")).await?;
    let s = ep
        .until("reads fall back", |s| s["ro_fallback"] == true)
        .await?;
    let why = if engine == "mariadb" {
        "not running"
    } else {
        "lag"
    };
    let excluded = s["members"][1]["excluded"].as_str().unwrap_or("");
    assert!(excluded.contains(why), "{s}");
    let mut fallback = Db::connect(&ep.uri(&b, &name, 6433).await?).await?;
    assert_eq!(fallback.strings(read_only).await?, ["0"], "{s}");
    ro.exec(resume).await?;
    ep.until("the replica is back", |s| {
        s["ro_fallback"] == false && s["ro_targets"][0]["member"] == replica.as_str()
    })
    .await?;

    // Switchover: the session on the old primary ends; the same two addresses now
    // reach the new primary for writes and the old one, a replica now, for reads.
    let done = b.cli_json(&["switchover", &name])?;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(
        rw.exec("SELECT 1").await.is_err(),
        "a session stayed on the old primary"
    );
    ep.until("the roles swapped in the endpoint", |s| {
        s["rw_target"] == replica.as_str() && s["ro_targets"][0]["member"] == primary.as_str()
    })
    .await?;
    let mut rw = Db::connect(&ep.uri(&b, &name, 6432).await?).await?;
    assert_eq!(
        rw.strings(read_only).await?,
        ["0"],
        "writes reached a replica"
    );
    rw.exec(&format!("INSERT INTO {table} VALUES (8)")).await?;
    let mut ro = Db::connect(&ep.uri(&b, &name, 6433).await?).await?;
    assert_eq!(
        ro.strings(read_only).await?,
        ["1"],
        "reads reached the primary"
    );
    Ok(())
}
