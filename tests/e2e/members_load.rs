//! Members under a steady writer: every acknowledged commit survives switchover,
//! scaling and a rolling restart; the endpoints never move and keep serving while
//! the control plane is down; a lagging replica gets no new read-only sessions.

use anyhow::Context;
use berth_e2e::{docker, unique, Berth, Db};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Inserts 1, 2, 3, … through the read-write endpoint, reconnecting after an error,
/// and keeps every number whose commit was acknowledged. Bounded by `LIMIT` rows and
/// by the time the test lets it run.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u32, Instant)>>>,
    task: tokio::task::JoinHandle<()>,
}

const LIMIT: u32 = 100_000;

impl Writer {
    fn start(uri: String, table: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(vec![]));
        let (s, a) = (stop.clone(), acked.clone());
        let task = tokio::spawn(async move {
            let mut db: Option<Db> = None;
            let mut n = 0u32;
            while !s.load(Ordering::Relaxed) && n < LIMIT {
                let conn = match db.as_mut() {
                    Some(c) => c,
                    None => {
                        match tokio::time::timeout(Duration::from_secs(3), Db::connect_once(&uri))
                            .await
                        {
                            Ok(Ok(c)) => db.insert(c),
                            _ => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                    }
                };
                n += 1;
                let insert = format!("INSERT INTO {table} VALUES ({n})");
                match tokio::time::timeout(Duration::from_secs(10), conn.exec(&insert)).await {
                    Ok(Ok(())) => a
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((n, Instant::now())),
                    // Not acknowledged: it may or may not have committed; never counted.
                    _ => db = None,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self { stop, acked, task }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Waits until `more` further commits were acknowledged (bounded).
    async fn progress(&self, more: usize) -> anyhow::Result<()> {
        let want = self.count() + more;
        let started = Instant::now();
        while self.count() < want {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the writer made no progress for 60 s ({} acknowledged)",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Stops it; the acknowledged numbers and the longest pause between two
    /// acknowledgements.
    async fn finish(self) -> (Vec<u32>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let acked = self.acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let gap = acked
            .windows(2)
            .map(|w| w[1].1.duration_since(w[0].1))
            .max()
            .unwrap_or_default();
        (acked.into_iter().map(|(n, _)| n).collect(), gap)
    }
}

async fn creds(b: &Berth, name: &str) -> anyhow::Result<(String, String)> {
    let c = b.get(&format!("/v1/instances/{name}/credentials")).await?;
    Ok((
        c["uri"].as_str().context("uri")?.to_owned(),
        c["ro_uri"].as_str().context("ro_uri")?.to_owned(),
    ))
}

async fn create(b: &Berth, name: &str, engine: &str, members: &str) -> anyhow::Result<Value> {
    let v = b.cli_json(&[
        "create",
        name,
        "--engine",
        engine,
        "--members",
        members,
        "--sync",
        "1",
        "--memory",
        "256MiB",
        "--cpus",
        "0.5",
        "--storage",
        "1GiB",
        "--max-lag",
        "2s",
    ])?;
    anyhow::ensure!(v["state"] == "succeeded", "create: {v}");
    Ok(v)
}

/// Every acknowledged number is in the table, read through `uri`.
async fn all_there(uri: &str, table: &str, acked: &[u32]) -> anyhow::Result<()> {
    let mut db = Db::connect(uri).await?;
    let rows: std::collections::HashSet<String> = db
        .strings(&format!("SELECT n FROM {table}"))
        .await?
        .into_iter()
        .collect();
    let lost: Vec<&u32> = acked
        .iter()
        .filter(|n| !rows.contains(&n.to_string()))
        .collect();
    anyhow::ensure!(
        lost.is_empty(),
        "{} acknowledged commits are missing: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    Ok(())
}

async fn make_table(uri: &str, engine: &str) -> anyhow::Result<&'static str> {
    let mut db = Db::connect(uri).await?;
    if engine == "mariadb" {
        db.exec("CREATE DATABASE app").await?;
        db.exec("CREATE TABLE app.w (n INT PRIMARY KEY)").await?;
        Ok("app.w")
    } else {
        db.exec("CREATE TABLE w (n INT PRIMARY KEY)").await?;
        Ok("w")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_switchover_under_a_writer_loses_nothing() -> anyhow::Result<()> {
    switchover_under_a_writer("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_switchover_under_a_writer_loses_nothing() -> anyhow::Result<()> {
    switchover_under_a_writer("mariadb").await
}

/// Two switchovers under a writer: no acknowledged commit lost, the same endpoint
/// writes to the new primary, and a session held on the old primary is cut.
async fn switchover_under_a_writer(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("sw-{}", &engine[..2]));
    create(&b, &name, engine, "3").await?;
    let before = b.get(&format!("/v1/instances/{name}")).await?["endpoint"].clone();
    let (uri, _) = creds(&b, &name).await?;
    let table = make_table(&uri, engine).await?;
    let writer = Writer::start(uri.clone(), table);
    writer.progress(20).await?;
    for _ in 0..2 {
        let mut held = Db::connect(&uri).await?;
        held.exec("SELECT 1").await?;
        let done = b.cli_json(&["switchover", &name])?;
        assert_eq!(done["state"], "succeeded", "{done}");
        // The session held on the old primary does not survive the switch.
        assert!(
            held.exec(&format!("INSERT INTO {table} VALUES (0)"))
                .await
                .is_err(),
            "a session on the old primary still took a write"
        );
        writer.progress(20).await?;
    }
    let after = b.get(&format!("/v1/instances/{name}")).await?["endpoint"].clone();
    assert_eq!(before["port"], after["port"]);
    assert_eq!(before["ro_port"], after["ro_port"]);
    let (acked, gap) = writer.finish().await;
    eprintln!(
        "{engine}: {} commits acknowledged, longest pause {gap:?}",
        acked.len()
    );
    all_there(&uri, table, &acked).await
}

/// Scale 1 → 3 → 2 under a writer: the endpoints stay, nothing acknowledged is
/// lost, and a new replica has every row.
#[tokio::test(flavor = "multi_thread")]
async fn scale_under_a_writer_keeps_endpoints_and_rows() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("sc-po");
    let v = b.cli_json(&[
        "create",
        &name,
        "--engine",
        "postgres",
        "--memory",
        "256MiB",
        "--cpus",
        "0.5",
        "--storage",
        "1GiB",
    ])?;
    assert_eq!(v["state"], "succeeded", "{v}");
    let before = b.get(&format!("/v1/instances/{name}")).await?["endpoint"].clone();
    let (uri, ro_uri) = creds(&b, &name).await?;
    let table = make_table(&uri, "postgres").await?;
    let writer = Writer::start(uri.clone(), table);
    writer.progress(20).await?;
    for n in ["3", "2"] {
        let done = b.cli_json(&["scale", &name, "--members", n])?;
        assert_eq!(done["state"], "succeeded", "{done}");
        writer.progress(20).await?;
    }
    let shown = b.get(&format!("/v1/instances/{name}")).await?;
    assert_eq!(shown["members"].as_array().map(Vec::len), Some(2));
    assert_eq!(before["port"], shown["endpoint"]["port"]);
    assert_eq!(before["ro_port"], shown["endpoint"]["ro_port"]);
    let (acked, _) = writer.finish().await;
    all_there(&uri, table, &acked).await?;
    // Read through the read-only endpoint: the replica, once it has caught up.
    let last = acked.last().copied().unwrap_or(0).to_string();
    b.eventually(
        "the replica to have the last row",
        Duration::from_secs(30),
        || {
            let ro_uri = ro_uri.clone();
            let last = last.clone();
            async move {
                match Db::connect(&ro_uri).await {
                    Ok(mut db) => db
                        .strings(&format!("SELECT count(*) FROM {table} WHERE n = {last}"))
                        .await
                        .map(|v| v == vec!["1".to_owned()])
                        .unwrap_or(false),
                    Err(_) => false,
                }
            }
        },
    )
    .await?;
    all_there(&ro_uri, table, &acked).await
}

/// With `berth serve` killed, both endpoints go on serving: the data path never
/// goes through the control plane.
#[tokio::test(flavor = "multi_thread")]
async fn endpoints_serve_while_the_control_plane_is_down() -> anyhow::Result<()> {
    let mut b = Berth::start().await?;
    let name = unique("kd-po");
    create(&b, &name, "postgres", "2").await?;
    let (uri, ro_uri) = creds(&b, &name).await?;
    let table = make_table(&uri, "postgres").await?;
    b.kill9();
    let mut rw = Db::connect(&uri).await?;
    rw.exec(&format!("INSERT INTO {table} VALUES (1), (2)"))
        .await?;
    let mut seen = vec![];
    for _ in 0..100 {
        let mut ro = Db::connect(&ro_uri).await?;
        let in_recovery = ro.strings("SELECT pg_is_in_recovery()").await?;
        let rows = ro.strings(&format!("SELECT count(*) FROM {table}")).await?;
        seen = vec![in_recovery[0].clone(), rows[0].clone()];
        if seen == ["t", "2"] {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the read-only endpoint did not serve the replica's rows: {seen:?}")
}

/// A replica whose replay is paused falls behind `--max-lag` and gets no new
/// read-only sessions (they go to the primary, and `show` says so); once replay
/// resumes it gets them again.
#[tokio::test(flavor = "multi_thread")]
async fn a_lagging_replica_gets_no_new_reads_until_it_catches_up() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("lg-po");
    create(&b, &name, "postgres", "2").await?;
    let shown = b.get(&format!("/v1/instances/{name}")).await?;
    let replica = shown["members"]
        .as_array()
        .context("members")?
        .iter()
        .find(|m| m["role"] == "replica")
        .and_then(|m| m["container"].as_str())
        .context("replica")?
        .to_owned();
    let psql = |sql: &str| {
        docker(&[
            "exec",
            "-u",
            "postgres",
            &replica,
            "psql",
            "-h",
            "/run/berth",
            "-d",
            "postgres",
            "-At",
            "-c",
            sql,
        ])
    };
    let (uri, ro_uri) = creds(&b, &name).await?;
    let table = make_table(&uri, "postgres").await?;
    let in_recovery = || async {
        let mut db = Db::connect(&ro_uri).await.ok()?;
        db.strings("SELECT pg_is_in_recovery()")
            .await
            .ok()
            .and_then(|v| v.first().cloned())
    };
    b.eventually(
        "reads to reach the replica",
        Duration::from_secs(30),
        || async { in_recovery().await.as_deref() == Some("t") },
    )
    .await?;
    psql("SELECT pg_wal_replay_pause()")?;
    let writer = Writer::start(uri.clone(), table);
    let fell_back = b
        .eventually(
            "reads to go to the primary",
            Duration::from_secs(60),
            || async {
                let shown = b.get(&format!("/v1/instances/{name}")).await;
                let fallback = shown
                    .map(|v| v["endpoint"]["ro_fallback"] == true)
                    .unwrap_or(false);
                fallback && in_recovery().await.as_deref() == Some("f")
            },
        )
        .await;
    let _ = writer.finish().await;
    psql("SELECT pg_wal_replay_resume()")?;
    fell_back?;
    b.eventually(
        "reads to reach the replica again",
        Duration::from_secs(60),
        || async { in_recovery().await.as_deref() == Some("t") },
    )
    .await
}

/// A rolling restart of three members under a writer: no acknowledged commit is
/// lost, and writes stop only around the one switch.
#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_under_a_writer_loses_nothing() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("rr-po");
    create(&b, &name, "postgres", "3").await?;
    let (uri, _) = creds(&b, &name).await?;
    let table = make_table(&uri, "postgres").await?;
    let writer = Writer::start(uri.clone(), table);
    writer.progress(20).await?;
    let started = Instant::now();
    let done = b.cli_json(&["restart", &name])?;
    let took = started.elapsed();
    assert_eq!(done["state"], "succeeded", "{done}");
    writer.progress(20).await?;
    let (acked, gap) = writer.finish().await;
    eprintln!("rolling restart took {took:?}; longest pause between acknowledged writes {gap:?}");
    // Writes paused only for the switch, not for the whole restart.
    assert!(
        gap < took,
        "writes stopped for the whole restart ({gap:?} of {took:?})"
    );
    all_there(&uri, table, &acked).await
}
