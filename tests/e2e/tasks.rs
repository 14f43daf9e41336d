//! `berth task cancel`: a task that can stop safely is stopped, one that cannot is
//! refused, and what was asked of a finished or unknown task changes nothing.

use anyhow::Context;
use berth_e2e::{unique, Berth};
use std::time::Duration;

/// A backup under way is cancelled: the task ends failed saying so, the backup is
/// marked failed (never listed as good), and the instance is available again. A
/// second cancel of the ended task, a cancel of an unknown task and a cancel of a
/// restart (which must end by itself) are refused with a problem that says why, and
/// the restart goes on to succeed.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_under_way_is_cancelled_and_what_cannot_stop_is_refused() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("tc-po");
    b.create_with_cli(&name, "postgres", &[])?;
    // Enough data that the dump takes a while.
    let mut db = b.db(&name).await?;
    berth_e2e::big_table(&mut db).await?;
    let (backup, task) = b.start_backup(&name)?;
    b.until_backup_runs(&backup).await?;

    let asked = b.cli_json(&["task", "cancel", &task])?;
    assert_eq!(asked["id"], task.as_str(), "{asked}");
    b.eventually(
        "the cancelled task to end",
        Duration::from_secs(30),
        || async {
            b.get(&format!("/v1/tasks/{task}"))
                .await
                .is_ok_and(|t| t["state"] == "failed")
        },
    )
    .await?;
    let t = b.get(&format!("/v1/tasks/{task}")).await?;
    let error = t["error"].as_str().unwrap_or_default();
    assert!(error.contains("cancelled on request"), "{t}");
    let v = b.get(&format!("/v1/backups/{backup}")).await?;
    assert_eq!(v["state"], "failed", "a cancelled backup is not good: {v}");
    b.eventually(
        "the instance to be available",
        Duration::from_secs(30),
        || async {
            b.get(&format!("/v1/instances/{name}"))
                .await
                .is_ok_and(|v| v["status"] == "available")
        },
    )
    .await?;

    // Ended: nothing to cancel.
    let again = b.cli(&["task", "cancel", &task]);
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "a second cancel was accepted");
    assert!(said.contains("already ended"), "{said}");
    let (status, problem) = b
        .request(
            reqwest::Method::POST,
            &format!("/v1/tasks/{task}/cancel"),
            None,
        )
        .await?;
    assert_eq!(status, 409, "{problem}");
    let (status, problem) = b
        .request(reqwest::Method::POST, "/v1/tasks/not-a-task/cancel", None)
        .await?;
    assert_eq!(status, 404, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("berth tasks"),
        "{problem}"
    );

    // A restart must end by itself: refused while it runs, and it still succeeds.
    let restart = b.cli_json(&["restart", &name, "--no-wait"])?;
    let restart = restart["task"]["id"]
        .as_str()
        .or_else(|| restart["id"].as_str())
        .with_context(|| format!("a task id in {restart}"))?
        .to_owned();
    let refused = b.cli(&["task", "cancel", &restart]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a restart was cancelled");
    assert!(
        said.contains("cannot be stopped safely") || said.contains("already ended"),
        "{said}"
    );
    b.eventually(
        "the restart to succeed",
        Duration::from_secs(120),
        || async {
            b.get(&format!("/v1/tasks/{restart}"))
                .await
                .is_ok_and(|t| t["state"] == "succeeded")
        },
    )
    .await?;
    Ok(())
}
