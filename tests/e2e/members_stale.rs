//! A replica volume left by a scale-down without `--purge` is cloned afresh when a
//! scale-up brings its member back: its position is older than anything the primary
//! still keeps (its slot was dropped, the WAL since recycled), so resuming from it
//! could never work.

use anyhow::Context;
use berth_e2e::{member_sql, unique, Berth};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_volume_left_by_a_scale_down_is_cloned_afresh_on_scale_up() -> anyhow::Result<()>
{
    let b = Berth::start().await?;
    let name = unique("stale-po");
    b.create_with_cli(&name, "postgres", &["--members", "2"])?;
    let mut db = b.db(&name).await?;
    db.exec("CREATE TABLE t (n INT PRIMARY KEY)").await?;
    db.exec("INSERT INTO t VALUES (1)").await?;

    // Down to the primary alone; the replica's volume stays.
    let down = b.cli_json(&["scale", &name, "--members", "1"])?;
    assert_eq!(down["state"], "succeeded", "{down}");
    let volumes_kept = b.docker_objects("volume", None).len();

    // The primary moves on far past the replica's position, and recycles the WAL
    // that held it (no slot keeps it any more).
    db.exec("INSERT INTO t SELECT generate_series(2, 50000)")
        .await?;
    for _ in 0..4 {
        db.exec("SELECT pg_switch_wal()").await?;
        db.exec("INSERT INTO t VALUES ((SELECT max(n) + 1 FROM t))")
            .await?;
        db.exec("CHECKPOINT").await?;
    }
    let want = db.strings("SELECT count(*)::text FROM t").await?;

    let up = b.cli_json(&["scale", &name, "--members", "2"])?;
    assert_eq!(up["state"], "succeeded", "{up}");
    assert_eq!(
        b.docker_objects("volume", None).len(),
        volumes_kept,
        "the left volume is used again, not a new one beside it"
    );
    let replica = b.member_with_role(&name, "replica")?;
    let container = replica["container"].as_str().context("container")?;
    b.eventually(
        "the re-added replica to hold every row",
        Duration::from_secs(60),
        || async {
            member_sql(container, "postgres", "SELECT count(*) FROM t").ok()
                == want.first().cloned()
        },
    )
    .await?;
    b.eventually(
        "the re-added replica to be ready",
        Duration::from_secs(60),
        || async {
            b.member_view(&name, container)
                .await
                .is_some_and(|m| m["state"] == "ready")
        },
    )
    .await?;
    // It says it was cloned afresh, and why (reconcile writes it when it sees the
    // member's agent report the rejoin).
    b.eventually(
        "a member.rejoined event saying it was cloned afresh",
        Duration::from_secs(60),
        || async {
            let Ok(events) = b.get(&format!("/v1/events?instance={name}")).await else {
                return false;
            };
            events["events"].as_array().is_some_and(|all| {
                all.iter().any(|e| {
                    e["kind"] == "member.rejoined"
                        && e["details"]["how"] == "cloned afresh"
                        && e["message"]
                            .as_str()
                            .unwrap_or("")
                            .contains("left from an earlier member")
                })
            })
        },
    )
    .await?;
    Ok(())
}
