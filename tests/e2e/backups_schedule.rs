//! Scheduled backups and retention: a schedule every minute runs on time, a run
//! missed while `berth serve` was down runs once when it is back, retention deletes
//! what expired (object and record) and keeps the newest good backup, and a bad cron
//! expression is refused and changes nothing.

use crate::backups::write_rows;
use anyhow::Context;
use berth_e2e::{unique, Berth};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The instance's events of `kind`.
async fn events_of(b: &Berth, name: &str, kind: &str) -> anyhow::Result<Vec<Value>> {
    let page = b
        .get(&format!("/v1/events?instance={name}&limit=1000"))
        .await?;
    Ok(page["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect())
}

/// Seconds past the minute, now.
fn second_of_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() % 60)
        .unwrap_or(0)
}

/// Sleeps until `at` seconds past a minute at least `min` from now.
async fn sleep_until_second(at: u64, min: Duration) {
    tokio::time::sleep(min).await;
    let s = second_of_minute();
    tokio::time::sleep(Duration::from_secs((60 + at - s) % 60)).await;
}

/// Backups of `name` started by the schedule, by the `backup.scheduled` events.
async fn scheduled(b: &Berth, name: &str) -> anyhow::Result<Vec<Value>> {
    Ok(events_of(b, name, "backup.scheduled")
        .await?
        .into_iter()
        .filter(|e| e["details"]["backup"].is_string())
        .collect())
}

/// Polls until the schedule started a backup of `name` (or `limit` passed).
async fn first_scheduled(b: &Berth, name: &str, limit: Duration) -> anyhow::Result<Vec<Value>> {
    let started = std::time::Instant::now();
    loop {
        let runs = scheduled(b, name).await?;
        if !runs.is_empty() || started.elapsed() > limit {
            return Ok(runs);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_succeeded(b: &Berth, id: &str) -> anyhow::Result<Value> {
    let mut last = Value::Null;
    for _ in 0..300 {
        last = b.get(&format!("/v1/backups/{id}")).await?;
        if last["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::ensure!(last["state"] == "succeeded", "backup {id}: {last}");
    Ok(last)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_runs_on_time_and_retention_deletes_what_expired() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("sch-pg");
    b.create(&name, json!({"engine": "postgres"})).await?;
    write_rows(&b, &name, "postgres", 1, 2).await?;
    let first = b.cli_json(&["backup", "create", &name])?;
    let first_id = first["id"].as_str().context("id")?.to_owned();
    let first_object = b
        .data_dir()
        .join("backups")
        .join(first["object"].as_str().context("object")?);
    assert!(first_object.is_file());

    // The default until one is set (serve's --default-backup-schedule: `off` in
    // the harness, daily otherwise), keeping everything.
    let policy = b.cli_json(&["backup", "schedule", &name])?;
    assert_eq!(policy["schedule"], "off", "{policy}");
    assert!(policy.get("next_run").is_none(), "{policy}");
    // A malformed cron expression is refused, says what a good one is, changes nothing.
    let (status, problem) = b
        .request(
            reqwest::Method::PUT,
            &format!("/v1/instances/{name}/backup-policy"),
            Some(json!({"schedule": "61 * * * *", "keep_count": 1})),
        )
        .await?;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("five fields"),
        "{problem}"
    );
    let out = b.cli(&["backup", "schedule", &name, "--cron", "every minute"]);
    assert!(!out.status.success());
    let unchanged = b.cli_json(&["backup", "schedule", &name])?;
    assert_eq!(unchanged["schedule"], "off", "{unchanged}");
    assert!(unchanged.get("keep_count").is_none(), "{unchanged}");

    let policy = b.cli_json(&[
        "backup",
        "schedule",
        &name,
        "--cron",
        "* * * * *",
        "--keep-count",
        "1",
    ])?;
    assert_eq!(policy["schedule"], "* * * * *");
    assert_eq!(policy["keep_count"], 1);
    assert!(events_of(&b, &name, "backup.policy-changed").await?.len() == 1);

    // The next minute's slot starts a backup, on time.
    let runs = first_scheduled(&b, &name, Duration::from_secs(100)).await?;
    let run = runs.first().context("no scheduled backup within 100s")?;
    let slot = run["details"]["slot"].as_str().context("slot")?;
    let id = run["details"]["backup"].as_str().context("backup")?;
    let backup = wait_succeeded(&b, id).await?;
    let started = backup["started_at"].as_str().context("started_at")?;
    assert_eq!(started[..16], slot[..16], "started in the slot's minute");
    let late: u64 = started[17..19].parse()?;
    assert!(late < 20, "started {started} for slot {slot}");

    // Retention (keep 1): the manual backup expired, object and record; the newest
    // good backup stays.
    b.eventually(
        "the expired backup to go",
        Duration::from_secs(30),
        || async { b.get(&format!("/v1/backups/{first_id}")).await.is_err() },
    )
    .await?;
    assert!(!first_object.exists(), "its object is gone too");
    let expired = events_of(&b, &name, "backup.expired").await?;
    assert!(
        expired
            .iter()
            .any(|e| e["details"]["backup"] == first_id.as_str()),
        "{expired:?}"
    );
    assert!(b.get(&format!("/v1/backups/{id}")).await.is_ok());

    // `off`: no more scheduled runs; the retention stays.
    let off = b.cli_json(&["backup", "schedule", &name, "--cron", "off"])?;
    assert_eq!(off["schedule"], "off", "{off}");
    assert_eq!(off["keep_count"], 1, "{off}");
    assert!(off.get("next_run").is_none(), "{off}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_missed_while_serve_was_down_runs_once_after_restart() -> anyhow::Result<()> {
    let mut b = Berth::start().await?;
    let name = unique("sch-my");
    b.create(&name, json!({"engine": "mariadb"})).await?;
    // Set the schedule early in a minute, and stop serve at once: no slot passes
    // while it runs.
    if second_of_minute() > 45 {
        sleep_until_second(2, Duration::ZERO).await;
    }
    b.cli_json(&["backup", "schedule", &name, "--cron", "* * * * *"])?;
    b.kill9();
    // Down across two slots; back a few seconds after the second.
    sleep_until_second(5, Duration::from_secs(61)).await;
    b.restart().await?;

    let runs = first_scheduled(&b, &name, Duration::from_secs(20)).await?;
    anyhow::ensure!(!runs.is_empty(), "no backup ran after the restart");
    // Still before the next slot: one run for the missed ones, not one per slot.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let runs = scheduled(&b, &name).await?;
    assert!(
        second_of_minute() < 55,
        "the check ran too late in the minute"
    );
    assert_eq!(runs.len(), 1, "{runs:?}");
    let slot = runs[0]["details"]["slot"].as_str().context("slot")?;
    assert!(slot.ends_with(":00Z"), "{slot}");
    let id = runs[0]["details"]["backup"].as_str().context("backup")?;
    wait_succeeded(&b, id).await?;
    Ok(())
}

/// The backup policy is chosen at create, and a bad one refuses the create before
/// anything is made.
#[tokio::test(flavor = "multi_thread")]
async fn the_backup_policy_is_chosen_at_create() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("bp-create");
    let out = b.cli(&berth_e2e::small_create(
        &name,
        "postgres",
        &[
            "--backup-schedule",
            "30 2 * * *",
            "--keep-count",
            "3",
            "--verify",
            "after-each",
        ],
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = b.cli_json(&["backup", "schedule", &name])?;
    assert_eq!(p["schedule"], "30 2 * * *", "{p}");
    assert_eq!(p["keep_count"], 3, "{p}");
    assert_eq!(p["verify"], "after-each", "{p}");
    assert!(p.get("keep_days").is_none(), "{p}");
    let changed = events_of(&b, &name, "backup.policy-changed").await?;
    assert_eq!(changed.len(), 1, "{changed:?}");

    // A malformed schedule or an out-of-range rule: refused, nothing made.
    let bad = unique("bp-bad");
    for (policy, status, says) in [
        (json!({"schedule": "every day"}), 422, "five fields"),
        (json!({"keep_days": 0}), 400, "keep_days must be between 1"),
        (json!({"verify": "daily"}), 400, "after-each"),
    ] {
        let (got, v) = b
            .request(
                reqwest::Method::POST,
                "/v1/instances",
                Some(json!({"name": bad, "engine": "postgres", "backup_policy": policy})),
            )
            .await?;
        assert_eq!(got, status, "{policy}: {v}");
        assert!(v.to_string().contains(says), "{policy}: {v}");
    }
    let (got, _) = b
        .request(reqwest::Method::GET, &format!("/v1/instances/{bad}"), None)
        .await?;
    assert_eq!(got, 404, "a refused create made nothing");
    let made = b.docker_objects("container", None);
    assert!(
        made.iter().all(|c| !c.contains(&bad)),
        "no container of a refused create: {made:?}"
    );
    Ok(())
}
