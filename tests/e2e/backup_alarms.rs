//! Backups watched by the default alarms (issue 11): a backup that fails — here
//! MariaDB's dump refusing a view whose table is gone, a real way `mariadb-dump`
//! fails — puts `backup_failed` to 1 and the default `backup-failed` alarm in
//! ALARM; the next good backup clears it. An instance with a schedule has its
//! `backup_overdue_seconds` series.

use anyhow::{bail, Context, Result};
use berth_e2e::{unique, Berth};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FAST: &[&str] = &[
    "--sample-interval",
    "1s",
    "--metric-resolutions",
    "1s:1h,10s:1d",
];

async fn alarm(b: &Berth, name: &str, alarm: &str) -> Result<Value> {
    let all = b.get(&format!("/v1/instances/{name}/alarms")).await?;
    all.as_array()
        .context("alarms")?
        .iter()
        .find(|a| a["name"] == alarm)
        .cloned()
        .with_context(|| format!("no alarm {alarm} in {all}"))
}

/// Waits (up to 150 s: the default rule's period is a minute) for the alarm's state.
async fn until_state(b: &Berth, name: &str, which: &str, want: &str) -> Result<Value> {
    let started = Instant::now();
    loop {
        let a = alarm(b, name, which).await.unwrap_or_default();
        if a["state"] == want {
            return Ok(a);
        }
        if started.elapsed() > Duration::from_secs(150) {
            bail!("alarm {which} did not become {want} within 150 s: {a}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The newest value of one of the instance's series, if it has one.
async fn latest(b: &Berth, name: &str, metric: &str) -> Option<f64> {
    let v = b
        .get(&format!(
            "/v1/instances/{name}/metrics?metric={metric}&since=5m&step=1s"
        ))
        .await
        .ok()?;
    v["series"]
        .as_array()?
        .iter()
        .filter_map(|s| s["points"].as_array()?.last()?["max"].as_f64())
        .reduce(f64::max)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_backup_raises_the_default_alarm_until_a_good_one_follows() -> Result<()> {
    let b = Berth::start_with(FAST).await?;
    let name = unique("bkalarm");
    b.create(&name, json!({"engine": "mariadb"})).await?;
    let mut db = b.db(&name).await?;
    db.exec("CREATE DATABASE app").await?;
    db.exec("CREATE TABLE app.t (n INT PRIMARY KEY)").await?;
    db.exec("INSERT INTO app.t VALUES (1)").await?;
    // A view whose table is gone: mariadb-dump stops on it.
    db.exec("CREATE TABLE app.gone (n INT)").await?;
    db.exec("CREATE VIEW app.v AS SELECT n FROM app.gone")
        .await?;
    db.exec("DROP TABLE app.gone").await?;

    // A schedule: the overdue series is kept (0: nothing due yet).
    let out = b.cli(&["backup", "schedule", &name, "--cron", "0 3 * * *"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ok = until_state(&b, &name, "backup-failed", "OK").await?;
    assert_eq!(ok["rule"]["metric"], "backup_failed", "{ok}");
    let overdue = alarm(&b, &name, "backup-overdue").await?;
    assert_eq!(overdue["rule"]["metric"], "backup_overdue_seconds");

    let out = b.cli(&["backup", "create", &name]);
    assert!(!out.status.success(), "the dump of a broken view succeeded");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("references invalid table"),
        "the dump's own words: {err}"
    );
    let fired = until_state(&b, &name, "backup-failed", "ALARM").await?;
    assert!(
        fired["reason"].as_str().unwrap_or("").contains("1"),
        "{fired}"
    );
    assert_eq!(latest(&b, &name, "backup_failed").await, Some(1.0));
    let kinds = b.event_kinds(&name).await?;
    assert!(
        kinds.iter().any(|k| k == "alarm.state-changed"),
        "{kinds:?}"
    );

    // Mended: the next backup is good and the alarm clears.
    db.exec("DROP VIEW app.v").await?;
    let good = b.cli_json(&["backup", "create", &name])?;
    assert_eq!(good["state"], "succeeded", "{good}");
    until_state(&b, &name, "backup-failed", "OK").await?;
    assert_eq!(latest(&b, &name, "backup_failed").await, Some(0.0));
    assert_eq!(latest(&b, &name, "backup_overdue_seconds").await, Some(0.0));
    Ok(())
}
