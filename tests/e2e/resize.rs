//! Live resize: Docker's limits change, the engine keeps running (same PID), and the
//! settings that follow memory follow it, live or at the next restart.

use berth_e2e::{docker, server_pid, unique, Berth};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn postgres_resize_is_live_and_shared_buffers_waits_for_restart() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("rs-pg");
    b.create(&name, json!({"memory": "512MiB", "cpus": "0.5"}))
        .await?;
    let container = b.member_container(&name)?;
    let pid = server_pid(&container, "/bin/postgres -D")?;

    let done = b.cli_json(&["resize", &name, "--memory", "1GiB", "--cpus", "1"])?;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
            &container
        ])?,
        "1073741824 1000000000"
    );
    assert_eq!(
        server_pid(&container, "/bin/postgres -D")?,
        pid,
        "the engine restarted"
    );

    let inst = b.cli_json(&["show", &name])?;
    assert_eq!(inst["memory"], "1GiB");
    assert_eq!(inst["pending_restart"], json!(["shared_buffers"]));
    assert_eq!(inst["memory_settings"]["shared_buffers"], "256MB");
    let mut db = b.db(&name).await?;
    // Live: the planner's cache estimate and sort memory already follow.
    assert_eq!(
        db.strings("SHOW effective_cache_size").await?,
        vec!["768MB"]
    );
    assert_eq!(
        db.strings("SHOW shared_buffers").await?,
        vec!["128MB"],
        "shared_buffers changed without a restart?"
    );
    drop(db);

    b.cli_json(&["restart", &name])?;
    let mut db = b.db(&name).await?;
    assert_eq!(db.strings("SHOW shared_buffers").await?, vec!["256MB"]);
    assert_eq!(b.cli_json(&["show", &name])?["pending_restart"], json!([]));

    // Shrinking below what the engine uses is refused, with the figure; nothing changes.
    db.exec("CREATE EXTENSION pg_prewarm").await?;
    db.exec(
        "CREATE TABLE big AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 400000) g",
    )
    .await?;
    db.exec("SELECT pg_prewarm('big')").await?;
    drop(db);
    let out = b.cli(&["resize", &name, "--memory", "128MiB"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("of memory right now") && err.contains("ask for at least"),
        "{err}"
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.HostConfig.Memory}}", &container])?,
        "1073741824"
    );
    assert_eq!(b.cli_json(&["show", &name])?["memory"], "1GiB");

    // Storage cannot grow on the local driver, and the answer says so.
    let out = b.cli(&["resize", &name, "--storage", "20GiB"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("local volume driver"));
    // A stopped instance must be started first.
    b.cli_json(&["stop", &name])?;
    let out = b.cli(&["resize", &name, "--memory", "2GiB"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("berth start {name}")));
    Ok(())
}

/// Waits until MariaDB reports the buffer pool size (it resizes in the background).
async fn buffer_pool_reaches(b: &Berth, name: &str, bytes: &str) -> anyhow::Result<()> {
    b.eventually(
        &format!("the buffer pool to reach {bytes} bytes"),
        Duration::from_secs(30),
        || async {
            match b.db(name).await {
                Ok(mut db) => {
                    db.strings("SELECT @@innodb_buffer_pool_size").await.ok()
                        == Some(vec![bytes.to_owned()])
                }
                Err(_) => false,
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_buffer_pool_follows_memory_live() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("rs-my");
    b.create(
        &name,
        json!({"engine": "mariadb", "memory": "512MiB", "cpus": "0.5"}),
    )
    .await?;
    let container = b.member_container(&name)?;
    let pid = server_pid(&container, "/usr/sbin/mariadbd")?;
    let mut db = b.db(&name).await?;
    assert_eq!(
        db.strings("SELECT @@innodb_buffer_pool_size").await?,
        vec!["268435456"]
    );
    // Binary logs do not pile up for ever (MariaDB's own default keeps them).
    assert_eq!(
        db.strings("SELECT CONCAT(@@binlog_expire_logs_seconds, '')")
            .await?,
        vec!["604800"]
    );

    b.cli_json(&["resize", &name, "--memory", "1GiB", "--cpus", "1"])?;
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
            &container
        ])?,
        "1073741824 1000000000"
    );
    // InnoDB resizes its pool in the background; it gets there without a restart.
    buffer_pool_reaches(&b, &name, "536870912").await?;
    assert_eq!(
        server_pid(&container, "/usr/sbin/mariadbd")?,
        pid,
        "the engine restarted"
    );
    assert_eq!(b.cli_json(&["show", &name])?["pending_restart"], json!([]));

    // Shrinking to what still fits works the same way, down.
    b.cli_json(&["resize", &name, "--memory", "768MiB"])?;
    buffer_pool_reaches(&b, &name, "402653184").await?;
    // The new size survives a restart: the configuration follows the container's limits.
    b.cli_json(&["restart", &name])?;
    let mut db = b.db(&name).await?;
    assert_eq!(
        db.strings("SELECT @@innodb_buffer_pool_size").await?,
        vec!["402653184"]
    );
    Ok(())
}
