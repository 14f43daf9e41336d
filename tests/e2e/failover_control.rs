//! Failover control: with `--failover manual`, or automatic failover paused for
//! maintenance (`berth failover pause`), a killed primary is restarted in place and
//! no replica is promoted; once resumed, a replica is promoted again. Bad values of
//! the flags are refused naming them.

use anyhow::Context;
use berth_e2e::{docker, unique, Berth};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

/// Kills the primary's container, checks that no other member becomes the primary
/// for 20 s, that the old one comes back in place, ready, and takes a write (number
/// `n`) through the credentials URI, and that the instance is available again.
async fn killed_primary_comes_back_in_place(b: &Berth, name: &str, n: u32) -> anyhow::Result<()> {
    let old = b.primary_container(name).await.context("a primary")?;
    docker(&["kill", &old])?;
    let killed = Instant::now();
    while killed.elapsed() < Duration::from_secs(20) {
        if let Some(p) = b.primary_container(name).await {
            anyhow::ensure!(p == old, "{p} was promoted although failover is held");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    b.eventually(
        "the old primary back in place, ready",
        Duration::from_secs(120),
        || async {
            b.member_view(name, &old)
                .await
                .is_some_and(|m| m["role"] == "primary" && m["state"] == "ready")
        },
    )
    .await?;
    let write = async {
        let mut db = b.db(name).await?;
        db.exec(&format!("INSERT INTO t VALUES ({n})")).await
    };
    tokio::time::timeout(Duration::from_secs(60), write)
        .await
        .context("a write through the endpoint did not finish within 60 s")??;
    b.eventually(
        "the instance available",
        Duration::from_secs(120),
        || async {
            b.get(&format!("/v1/instances/{name}"))
                .await
                .is_ok_and(|v| v["status"] == "available")
        },
    )
    .await
}

/// Waits until every replica is ready, so that a failover has one to choose.
async fn replicas_ready(b: &Berth, name: &str) -> anyhow::Result<()> {
    b.eventually("every replica ready", Duration::from_secs(120), || async {
        b.get(&format!("/v1/instances/{name}"))
            .await
            .is_ok_and(|v| {
                v["members"].as_array().is_some_and(|ms| {
                    ms.iter()
                        .filter(|m| m["role"] == "replica")
                        .all(|m| m["state"] == "ready")
                })
            })
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_manual_or_paused_failover_restarts_the_primary_in_place() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("fc-po");
    b.create_with_cli(
        &name,
        "postgres",
        &["--members", "2", "--sync", "1", "--failover", "manual"],
    )?;
    let shown = b.cli_json(&["show", &name])?;
    assert_eq!(shown["failover"], "manual", "{shown}");
    assert_eq!(shown["failover_paused"], false, "{shown}");
    assert_eq!(shown["max_failover_lag_bytes"], 1024 * 1024, "{shown}");
    b.db(&name).await?.exec("CREATE TABLE t (n int)").await?;

    // Manual: nobody promotes; reconcile repairs the primary.
    killed_primary_comes_back_in_place(&b, &name, 1).await?;

    let refused = b.cli(&["scale", &name, "--max-failover-lag", "0"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a max failover lag of 0 was taken"
    );
    assert!(said.contains("--max-failover-lag"), "{said}");
    let scaled = b.cli_json(&[
        "scale",
        &name,
        "--failover",
        "auto",
        "--max-failover-lag",
        "4MB",
    ])?;
    assert_eq!(scaled["state"], "succeeded", "{scaled}");
    let paused = b.cli_json(&["failover", "pause", &name])?;
    assert_eq!(paused["failover"], "auto", "{paused}");
    assert_eq!(paused["failover_paused"], true, "{paused}");
    assert_eq!(
        paused["max_failover_lag_bytes"],
        4 * 1024 * 1024,
        "{paused}"
    );
    // Idempotent: a second pause changes nothing and succeeds.
    let again = b.cli_json(&["failover", "pause", &name])?;
    assert_eq!(again["failover_paused"], true, "{again}");
    let table = b.cli(&["show", &name]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("auto, paused"), "{table}");

    // Paused: the same as manual.
    replicas_ready(&b, &name).await?;
    killed_primary_comes_back_in_place(&b, &name, 2).await?;

    let resumed = b.cli_json(&["failover", "resume", &name])?;
    assert_eq!(resumed["failover_paused"], false, "{resumed}");
    replicas_ready(&b, &name).await?;
    let old = b.primary_container(&name).await.context("a primary")?;
    docker(&["kill", &old])?;
    b.eventually(
        "another member to be the primary",
        Duration::from_secs(60),
        || async { b.primary_container(&name).await.is_some_and(|p| p != old) },
    )
    .await?;
    let mut db = b.db(&name).await?;
    let rows = db.strings("SELECT n FROM t ORDER BY n").await?;
    assert_eq!(rows, ["1", "2"]);

    let kinds = b.event_kinds(&name).await?;
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    assert_eq!(count("failover.paused"), 1, "{kinds:?}");
    assert_eq!(count("failover.resumed"), 1, "{kinds:?}");
    assert_eq!(count("failover.done"), 1, "{kinds:?}");
    Ok(())
}

/// Bad failover settings are refused with a 400 naming the flag; pausing an
/// instance that does not exist is a 404. Nothing is created.
#[tokio::test(flavor = "multi_thread")]
async fn bad_failover_settings_are_refused_naming_the_flag() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let ok = json!({"name": "db1", "engine": "postgres", "members": 2});
    for (lag, says) in [
        ("0", "--max-failover-lag"),
        ("lots", "--max-failover-lag"),
        ("1.5MB", "--max-failover-lag"),
        ("100GB", "out of range"),
    ] {
        let mut body = ok.clone();
        body["max_failover_lag"] = json!(lag);
        let (status, v) = b.request(Method::POST, "/v1/instances", Some(body)).await?;
        assert_eq!(status, 400, "{lag}: {v}");
        assert_eq!(
            v["type"], "https://berth.dev/problems/invalid-request",
            "{v}"
        );
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{lag}: {detail}");
    }
    let mut body = ok.clone();
    body["failover"] = json!("sometimes");
    let (status, v) = b.request(Method::POST, "/v1/instances", Some(body)).await?;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("failover"),
        "{v}"
    );

    let out = b.cli(&[
        "create",
        "db1",
        "--engine",
        "postgres",
        "--members",
        "2",
        "--max-failover-lag",
        "0",
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "created with a max failover lag of 0"
    );
    assert!(said.contains("--max-failover-lag"), "{said}");
    let out = b.cli(&[
        "create",
        "db1",
        "--engine",
        "postgres",
        "--failover",
        "sometimes",
    ]);
    assert!(!out.status.success(), "created with failover sometimes");

    let (status, v) = b
        .request(Method::POST, "/v1/instances/nope/failover/pause", None)
        .await?;
    assert_eq!(status, 404, "{v}");
    let out = b.cli(&["failover", "resume", "nope"]);
    assert!(!out.status.success(), "resumed a missing instance");

    let tasks = b.get("/v1/tasks").await?;
    assert_eq!(tasks.as_array().map(Vec::len), Some(0), "{tasks}");
    Ok(())
}
