//! Delete safety: `berth delete` takes a final backup first, which outlives the
//! instance and restores; one that cannot be taken (the instance is stopped) stops
//! the delete until the user says `--skip-final-backup`.

use crate::backups::{restore_rows, write_rows};
use anyhow::Context;
use berth_e2e::{unique, Berth};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn postgres_delete_leaves_a_final_backup_that_restores() -> anyhow::Result<()> {
    final_backup("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_delete_leaves_a_final_backup_that_restores() -> anyhow::Result<()> {
    final_backup("mariadb").await
}

async fn final_backup(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("del-{}", &engine[..2]));
    b.create(&name, json!({"engine": engine})).await?;
    write_rows(&b, &name, engine, 1, 4).await?;

    let out = b.cli(&["delete", &name, "--purge"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _) = b
        .request(reqwest::Method::GET, &format!("/v1/instances/{name}"), None)
        .await?;
    assert_eq!(status, 404, "the instance is gone");
    // Its final backup is not.
    let listed = b.cli_json(&["backup", "list", &name])?;
    let listed = listed.as_array().context("list")?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["state"], "succeeded");
    let id = listed[0]["id"].as_str().context("id")?;
    let restored = unique(&format!("fin-{}", &engine[..2]));
    let rows = restore_rows(&b, &name, &restored, id, engine).await?;
    assert_eq!(rows, ["1", "2", "3", "4"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_instance_is_deleted_only_when_told_to_skip_the_final_backup(
) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("del-st");
    b.create(&name, json!({})).await?;
    b.cli_json(&["stop", &name])?;
    let out = b.cli(&["delete", &name]);
    assert!(!out.status.success(), "deleted without a final backup");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--skip-final-backup"), "{err}");
    let inst = b.get(&format!("/v1/instances/{name}")).await?;
    assert_eq!(inst["status"], "stopped", "nothing changed: {inst}");

    b.cli_json(&["delete", &name, "--skip-final-backup"])?;
    let (status, _) = b
        .request(reqwest::Method::GET, &format!("/v1/instances/{name}"), None)
        .await?;
    assert_eq!(status, 404);
    let listed = b.cli_json(&["backup", "list", &name])?;
    assert!(listed.as_array().context("list")?.is_empty(), "{listed}");
    Ok(())
}
