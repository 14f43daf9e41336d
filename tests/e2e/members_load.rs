//! Members under a steady writer: every acknowledged commit survives switchover,
//! scaling and a rolling restart; the endpoints never move and keep serving while
//! the control plane is down; a lagging replica gets no new read-only sessions.

use anyhow::Context;
use berth_e2e::writer::Writer;
use berth_e2e::{all_there, make_table, member_sql, unique, Berth, Db};
use serde_json::Value;
use std::time::{Duration, Instant};

async fn creds(b: &Berth, name: &str) -> anyhow::Result<(String, String)> {
    let c = b.get(&format!("/v1/instances/{name}/credentials")).await?;
    Ok((
        c["uri"].as_str().context("uri")?.to_owned(),
        c["ro_uri"].as_str().context("ro_uri")?.to_owned(),
    ))
}

/// A `members`-member instance with `--sync 1` and a 2 s max lag.
fn create(b: &Berth, name: &str, engine: &str, members: &str) -> anyhow::Result<Value> {
    b.create_with_cli(
        name,
        engine,
        &["--members", members, "--sync", "1", "--max-lag", "2s"],
    )
}

/// What says "this session is on a replica" on the engine, and its answers.
fn replica_check(engine: &str) -> (&'static str, &'static str, &'static str) {
    if engine == "mariadb" {
        ("SELECT @@read_only", "1", "0")
    } else {
        ("SELECT pg_is_in_recovery()", "t", "f")
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
    create(&b, &name, engine, "3")?;
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
async fn postgres_scale_under_a_writer_keeps_endpoints_and_rows() -> anyhow::Result<()> {
    scale_under_a_writer("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_scale_under_a_writer_keeps_endpoints_and_rows() -> anyhow::Result<()> {
    scale_under_a_writer("mariadb").await
}

async fn scale_under_a_writer(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("sc-{}", &engine[..2]));
    b.create_with_cli(&name, engine, &[])?;
    let before = b.get(&format!("/v1/instances/{name}")).await?["endpoint"].clone();
    let (uri, ro_uri) = creds(&b, &name).await?;
    let table = make_table(&uri, engine).await?;
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
async fn postgres_endpoints_serve_while_the_control_plane_is_down() -> anyhow::Result<()> {
    endpoints_serve_while_the_control_plane_is_down("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_endpoints_serve_while_the_control_plane_is_down() -> anyhow::Result<()> {
    endpoints_serve_while_the_control_plane_is_down("mariadb").await
}

async fn endpoints_serve_while_the_control_plane_is_down(engine: &str) -> anyhow::Result<()> {
    let mut b = Berth::start().await?;
    let name = unique(&format!("kd-{}", &engine[..2]));
    create(&b, &name, engine, "2")?;
    let (uri, ro_uri) = creds(&b, &name).await?;
    let table = make_table(&uri, engine).await?;
    let (on_replica, yes, _) = replica_check(engine);
    b.kill9();
    let mut rw = Db::connect(&uri).await?;
    rw.exec(&format!("INSERT INTO {table} VALUES (1), (2)"))
        .await?;
    let mut seen = vec![];
    for _ in 0..100 {
        let mut ro = Db::connect(&ro_uri).await?;
        let replica = ro.strings(on_replica).await?;
        let rows = ro.strings(&format!("SELECT count(*) FROM {table}")).await?;
        seen = vec![replica[0].clone(), rows[0].clone()];
        if seen == [yes, "2"] {
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
async fn postgres_a_lagging_replica_gets_no_new_reads_until_it_catches_up() -> anyhow::Result<()> {
    lagging_replica(
        "postgres",
        "SELECT pg_wal_replay_pause()",
        "SELECT pg_wal_replay_resume()",
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_a_lagging_replica_gets_no_new_reads_until_it_catches_up() -> anyhow::Result<()> {
    lagging_replica("mariadb", "STOP SLAVE SQL_THREAD", "START SLAVE SQL_THREAD").await
}

async fn lagging_replica(engine: &str, pause: &str, resume: &str) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("lg-{}", &engine[..2]));
    create(&b, &name, engine, "2")?;
    let shown = b.get(&format!("/v1/instances/{name}")).await?;
    let replica = shown["members"]
        .as_array()
        .context("members")?
        .iter()
        .find(|m| m["role"] == "replica")
        .and_then(|m| m["container"].as_str())
        .context("replica")?
        .to_owned();
    let (uri, ro_uri) = creds(&b, &name).await?;
    let table = make_table(&uri, engine).await?;
    let (on_replica, yes, no) = replica_check(engine);
    let in_recovery = || async {
        let mut db = Db::connect(&ro_uri).await.ok()?;
        db.strings(on_replica)
            .await
            .ok()
            .and_then(|v| v.first().cloned())
    };
    b.eventually(
        "reads to reach the replica",
        Duration::from_secs(30),
        || async { in_recovery().await.as_deref() == Some(yes) },
    )
    .await?;
    member_sql(&replica, engine, pause)?;
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
                fallback && in_recovery().await.as_deref() == Some(no)
            },
        )
        .await;
    let _ = writer.finish().await;
    member_sql(&replica, engine, resume)?;
    fell_back?;
    b.eventually(
        "reads to reach the replica again",
        Duration::from_secs(60),
        || async { in_recovery().await.as_deref() == Some(yes) },
    )
    .await
}

/// A rolling restart of three members under a writer: no acknowledged commit is
/// lost, and writes stop only around the one switch.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_rolling_restart_under_a_writer_loses_nothing() -> anyhow::Result<()> {
    rolling_restart_under_a_writer("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_a_rolling_restart_under_a_writer_loses_nothing() -> anyhow::Result<()> {
    rolling_restart_under_a_writer("mariadb").await
}

async fn rolling_restart_under_a_writer(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("rr-{}", &engine[..2]));
    create(&b, &name, engine, "3")?;
    let (uri, _) = creds(&b, &name).await?;
    let table = make_table(&uri, engine).await?;
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
