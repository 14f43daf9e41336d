//! Replication metrics and the replication alarms (issue 11): a primary with one
//! replica reports its role, the replica its lag and that it replicates, the primary
//! its connected replica and its slot; a replica frozen with `docker pause` (nothing
//! repairs it behind the test) drops out of the primary's view, which fires the
//! `replication-stopped` default alarm, and the alarm clears once it is back.

use anyhow::{bail, Context, Result};
use berth_e2e::{docker, unique, Berth};
use serde_json::Value;
use std::time::Duration;

/// Sample every second, kept at 1 s for an hour: the alarm's 10 s periods are whole
/// multiples of it.
const FAST: &[&str] = &[
    "--sample-interval",
    "1s",
    "--metric-resolutions",
    "1s:1h,10s:1d",
];

/// The last value (the last point's minimum) of a member's metric in the last 20 s.
async fn latest(b: &Berth, name: &str, metric: &str, member: u32) -> Option<f64> {
    let v = b
        .get(&format!(
            "/v1/instances/{name}/metrics?metric={metric}&since=20s&step=1s"
        ))
        .await
        .ok()?;
    v["series"]
        .as_array()?
        .iter()
        .find(|s| s["member"] == member)?["points"]
        .as_array()?
        .last()?["min"]
        .as_f64()
}

/// A metric of a member, and what its value must satisfy.
type Expect = (&'static str, u32, fn(f64) -> bool);

/// Waits until every `(metric, member, check)` holds at once; bounded by `limit`.
async fn until_metrics(
    b: &Berth,
    name: &str,
    what: &str,
    limit: Duration,
    want: &[Expect],
) -> Result<()> {
    let waited = b
        .eventually(what, limit, || async {
            for (metric, member, check) in want {
                if !latest(b, name, metric, *member).await.is_some_and(check) {
                    return false;
                }
            }
            true
        })
        .await;
    if let Err(e) = waited {
        let mut seen = vec![];
        for (metric, member, _) in want {
            let v = latest(b, name, metric, *member).await;
            seen.push(format!("{metric} of member {member}: {v:?}"));
        }
        return Err(e.context(seen.join(", ")));
    }
    Ok(())
}

/// The id of an instance's alarm, by name.
async fn alarm_id(b: &Berth, name: &str, alarm: &str) -> Result<String> {
    let alarms = b.get(&format!("/v1/instances/{name}/alarms")).await?;
    alarms
        .as_array()
        .context("alarms")?
        .iter()
        .find(|a| a["name"] == alarm)
        .and_then(|a| a["id"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("no alarm {alarm} in {alarms}"))
}

async fn until_alarm(b: &Berth, id: &str, want: &str, limit: Duration) -> Result<()> {
    let path = format!("/v1/alarms/{id}");
    let waited = b
        .eventually(&format!("alarm {id} to be {want}"), limit, || async {
            b.get(&path).await.is_ok_and(|a| a["state"] == want)
        })
        .await;
    if let Err(e) = waited {
        let now = b.get(&path).await.unwrap_or(Value::Null);
        return Err(e.context(now.to_string()));
    }
    Ok(())
}

/// The first member with a role: its number (from `<instance>-<n>`) and container.
fn member(shown: &Value, role: &str) -> Result<(u32, String)> {
    let m = shown["members"]
        .as_array()
        .context("members")?
        .iter()
        .find(|m| m["role"] == role)
        .with_context(|| format!("no {role} in {shown}"))?;
    let n = m["name"]
        .as_str()
        .and_then(|n| n.rsplit('-').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("member number of {m}"))?;
    let c = m["container"].as_str().context("container")?.to_owned();
    Ok((n, c))
}

/// Unpauses the container when dropped, so a failing test leaves no frozen member
/// for the harness to remove.
struct Paused(String);

impl Paused {
    fn new(container: &str) -> Result<Self> {
        docker(&["pause", container])?;
        Ok(Self(container.to_owned()))
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = docker(&["unpause", &self.0]);
    }
}

fn is_one(v: f64) -> bool {
    v == 1.0
}
fn is_zero(v: f64) -> bool {
    v == 0.0
}
fn any(_: f64) -> bool {
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_replication_metrics_and_the_replication_stopped_alarm() -> Result<()> {
    let b = Berth::start_with(FAST).await?;
    let name = unique("rm-pg");
    b.create_with_cli(&name, "postgres", &["--members", "2"])?;
    let shown = b.cli_json(&["show", &name])?;
    let (p, _) = member(&shown, "primary")?;
    let (r, replica) = member(&shown, "replica")?;

    until_metrics(
        &b,
        &name,
        "replication metrics of a streaming pair",
        Duration::from_secs(90),
        &[
            ("replication_is_primary", p, is_one),
            ("replication_is_primary", r, is_zero),
            ("replication_running", r, is_one),
            ("replication_running", p, is_one),
            ("replication_lag_seconds", r, any),
            ("replication_lag_bytes", r, any),
            ("replication_connected_replicas", p, is_one),
            ("replication_slots_inactive", p, is_zero),
            ("replication_slot_retained_bytes", p, any),
            ("xid_age", p, any),
        ],
    )
    .await?;
    // The CLI reads the history of the new series like any other.
    let cli = b.cli_json(&[
        "metrics",
        &name,
        "--metric",
        "replication_lag_seconds",
        "--since",
        "5m",
        "--step",
        "1s",
    ])?;
    let series = cli["series"].as_array().context("series")?;
    assert!(
        series
            .iter()
            .any(|s| s["metric"] == "replication_lag_seconds" && s["member"] == r),
        "{cli}"
    );

    // The default alarms are there for every instance, and replication is fine.
    let stopped = alarm_id(&b, &name, "replication-stopped").await?;
    alarm_id(&b, &name, "replication-lagging").await?;
    alarm_id(&b, &name, "replication-slot-retention").await?;
    until_alarm(&b, &stopped, "OK", Duration::from_secs(60)).await?;

    // The replica freezes: it reports nothing, but the primary's walsender gives
    // up on it (wal_sender_timeout, 10 s) and its slot goes inactive.
    let paused = Paused::new(&replica)?;
    until_metrics(
        &b,
        &name,
        "the primary to see its replica gone",
        Duration::from_secs(60),
        &[
            ("replication_connected_replicas", p, is_zero),
            ("replication_slots_inactive", p, is_one),
            ("replication_running", p, is_zero),
        ],
    )
    .await?;
    // Three whole 10 s periods breaching, plus the one under way.
    until_alarm(&b, &stopped, "ALARM", Duration::from_secs(90)).await?;

    drop(paused);
    until_metrics(
        &b,
        &name,
        "replication to resume",
        Duration::from_secs(90),
        &[
            ("replication_connected_replicas", p, is_one),
            ("replication_running", p, is_one),
            ("replication_running", r, is_one),
        ],
    )
    .await?;
    until_alarm(&b, &stopped, "OK", Duration::from_secs(60)).await?;

    let events = b
        .get(&format!("/v1/events?instance={name}&limit=1000"))
        .await?;
    let changes: Vec<&Value> = events["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter(|e| {
            e["kind"] == "alarm.state-changed" && e["details"]["name"] == "replication-stopped"
        })
        .collect();
    let to: Vec<&str> = changes
        .iter()
        .filter_map(|e| e["details"]["to"].as_str())
        .collect();
    if !to.ends_with(&["OK", "ALARM", "OK"]) {
        bail!("replication-stopped changed {to:?}");
    }
    Ok(())
}

/// MariaDB's figures come from `SHOW SLAVE STATUS`, which the monitoring account
/// may run only with `SLAVE MONITOR`: a replica replicates, the primary counts its
/// binary log dump thread, and there are no slots. A frozen replica fires
/// `replication-stopped` and clears it when it thaws.
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_replication_metrics() -> Result<()> {
    let b = Berth::start_with(FAST).await?;
    let name = unique("rm-my");
    b.create_with_cli(&name, "mariadb", &["--members", "2"])?;
    let shown = b.cli_json(&["show", &name])?;
    let (p, _) = member(&shown, "primary")?;
    let (r, replica) = member(&shown, "replica")?;
    until_metrics(
        &b,
        &name,
        "replication metrics of a MariaDB pair",
        Duration::from_secs(90),
        &[
            ("engine_up", p, is_one),
            ("engine_up", r, is_one),
            ("replication_is_primary", p, is_one),
            ("replication_is_primary", r, is_zero),
            ("replication_running", r, is_one),
            ("replication_lag_seconds", r, any),
            ("replication_connected_replicas", p, is_one),
        ],
    )
    .await?;
    for m in [p, r] {
        let slots = latest(&b, &name, "replication_slots_inactive", m).await;
        assert_eq!(slots, None, "MariaDB has no slots (member {m})");
    }

    // Frozen: the primary keeps the replica's connection open (nothing tells it
    // otherwise for minutes), but the replica answers nothing while its container
    // should run, so it counts as not replicating and the default alarm fires.
    let stopped = alarm_id(&b, &name, "replication-stopped").await?;
    until_alarm(&b, &stopped, "OK", Duration::from_secs(60)).await?;
    let paused = Paused::new(&replica)?;
    until_metrics(
        &b,
        &name,
        "the frozen replica to count as not replicating",
        Duration::from_secs(60),
        &[("replication_running", r, is_zero)],
    )
    .await?;
    until_alarm(&b, &stopped, "ALARM", Duration::from_secs(90)).await?;
    drop(paused);
    until_metrics(
        &b,
        &name,
        "replication to resume",
        Duration::from_secs(90),
        &[("replication_running", r, is_one)],
    )
    .await?;
    until_alarm(&b, &stopped, "OK", Duration::from_secs(60)).await?;
    Ok(())
}
