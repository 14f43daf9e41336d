//! Metric history (issue 11): under a real load the transaction rate is above zero
//! and near zero after it, connections are counted, a series reads back after a
//! restart of `berth serve` with a gap only for the time it was down, a stopped
//! member is missing data (not zeros), and an unknown metric is a 400 that names
//! the metrics that exist.

use anyhow::{bail, Context, Result};
use berth_e2e::{unique, Berth, Db};
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Sample every second, kept at 1 s for an hour, so a test sees its load at once.
const FAST: &[&str] = &[
    "--sample-interval",
    "1s",
    "--metric-resolutions",
    "1s:1h,10s:1d",
];

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Member 0's points of a metric over the last `since`, at 1 s: (time, mean).
async fn series(b: &Berth, name: &str, metric: &str, since: &str) -> Result<Vec<(i64, f64)>> {
    let v = b
        .get(&format!(
            "/v1/instances/{name}/metrics?metric={metric}&since={since}&step=1s"
        ))
        .await?;
    let Some(s) = v["series"]
        .as_array()
        .context("series")?
        .iter()
        .find(|s| s["member"] == 0)
    else {
        return Ok(vec![]);
    };
    Ok(s["points"]
        .as_array()
        .context("points")?
        .iter()
        .filter_map(|p| Some((p["t"].as_i64()?, p["avg"].as_f64()?)))
        .collect())
}

/// The mean of the points at or after `from`.
fn mean_since(points: &[(i64, f64)], from: i64) -> Option<f64> {
    let recent: Vec<f64> = points
        .iter()
        .filter(|(t, _)| *t >= from)
        .map(|(_, v)| *v)
        .collect();
    (!recent.is_empty()).then(|| recent.iter().sum::<f64>() / recent.len() as f64)
}

/// Waits for a metric of member 0 to hold over the last few seconds.
async fn until(
    b: &Berth,
    name: &str,
    metric: &str,
    what: &str,
    ok: impl Fn(f64) -> bool,
) -> Result<f64> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < Duration::from_secs(60) {
        let points = series(b, name, metric, "2m").await?;
        last = mean_since(&points, now() - 4);
        if last.is_some_and(&ok) {
            return Ok(last.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("{metric} of {name} did not become {what} in 60s (last {last:?})")
}

#[tokio::test]
async fn postgres_history_follows_pgbench_and_survives_a_restart_of_serve() -> Result<()> {
    let mut b = Berth::start_with(FAST).await?;
    let name = unique("mon-pg");
    b.create(&name, json!({})).await?;
    let creds = b.cli_json(&["credentials", &name])?;
    let uri = creds["uri"].as_str().context("uri")?.to_owned();

    let init = std::process::Command::new("pgbench")
        .args(["-i", "-q", "-s", "1", &uri])
        .output()?;
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    // Quiet first. The monitor itself costs a login and a read-only transaction per
    // sample (here every second; every 10 s by default) plus background work.
    let idle = until(&b, &name, "tps", "near zero before the load", |v| v < 10.0).await?;

    // Six clients for 15 s.
    let bench_uri = uri.clone();
    let load = tokio::task::spawn_blocking(move || {
        std::process::Command::new("pgbench")
            .args(["-c", "6", "-j", "2", "-T", "15", "-n", &bench_uri])
            .output()
    });
    let busy = until(&b, &name, "tps", "above 20 during the load", |v| v > 20.0).await?;
    let conns = until(&b, &name, "connections", "6 or more", |v| v >= 6.0).await?;
    let out = load.await??;
    assert!(
        out.status.success(),
        "pgbench: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Near zero: what is left is background work and the monitor's own, a few
    // percent of the load at most.
    let near_zero = (busy / 20.0).max(10.0);
    let after = until(&b, &name, "tps", "near zero after the load", |v| {
        v < near_zero
    })
    .await?;
    until(&b, &name, "connections", "back below 2", |v| v < 2.0).await?;
    eprintln!("tps idle {idle:.1}, busy {busy:.1}, after {after:.1}; connections {conns}");

    // The CLI prints the same series as JSON, and a table when not on a terminal.
    let cli = b.cli_json(&[
        "metrics", &name, "--metric", "tps", "--since", "5m", "--step", "1s",
    ])?;
    assert_eq!(cli["series"][0]["metric"], "tps");
    assert!(cli["series"][0]["points"]
        .as_array()
        .is_some_and(|p| p.len() > 10));
    let table = b.cli(&["metrics", &name, "--since", "5m"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success() && text.contains("connections_percent"),
        "{text}"
    );

    // An unknown metric is refused, naming those that exist.
    let (status, problem) = b
        .request(
            reqwest::Method::GET,
            &format!("/v1/instances/{name}/metrics?metric=tpx"),
            None,
        )
        .await?;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["_content_type"], "application/problem+json");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("tps") && d.contains("cpu_percent")),
        "{problem}"
    );

    // Serve is down for a while: the history keeps what came before, shows nothing
    // for the time it was down, and collection resumes by itself.
    let before: Vec<(i64, f64)> = series(&b, &name, "connections", "10m").await?;
    let down_at = now();
    b.kill9();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let up_at = now();
    b.restart().await?;
    b.eventually(
        "samples after the restart",
        Duration::from_secs(30),
        || async {
            series(&b, &name, "connections", "10m")
                .await
                .is_ok_and(|p| p.iter().any(|(t, _)| *t >= up_at))
        },
    )
    .await?;
    let after: Vec<(i64, f64)> = series(&b, &name, "connections", "10m").await?;
    let kept: Vec<_> = before.iter().filter(|(t, _)| *t < down_at - 1).collect();
    assert!(!kept.is_empty());
    for p in &kept {
        assert!(after.contains(p), "{p:?} was lost over the restart");
    }
    let in_gap: Vec<_> = after
        .iter()
        .filter(|(t, _)| *t > down_at + 1 && *t < up_at)
        .collect();
    assert!(in_gap.is_empty(), "points while serve was down: {in_gap:?}");

    // A stopped member gives no samples: a gap, not zeros.
    let out = b.cli(&["stop", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stopped_at = now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let late: Vec<_> = series(&b, &name, "connections", "10m")
        .await?
        .into_iter()
        .filter(|(t, _)| *t > stopped_at + 1)
        .collect();
    assert!(late.is_empty(), "samples of a stopped member: {late:?}");
    Ok(())
}

#[tokio::test]
async fn mariadb_transactions_per_second_follow_a_concurrent_writer() -> Result<()> {
    let b = Berth::start_with(FAST).await?;
    let name = unique("mon-my");
    b.create(&name, json!({"engine": "mariadb"})).await?;
    let creds: Value = b.cli_json(&["credentials", &name])?;
    let uri = creds["uri"].as_str().context("uri")?.to_owned();
    let mut db = Db::connect(&uri).await?;
    db.exec("CREATE DATABASE ldb").await?;
    db.exec("CREATE TABLE ldb.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await?;
    drop(db);
    let idle = until(&b, &name, "tps", "near zero before the load", |v| v < 10.0).await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = vec![];
    for _ in 0..4 {
        let (uri, stop) = (uri.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut db = Db::connect(&uri).await?;
            let mut n = 0u64;
            // Bounded: stopped by the test, and never more than 60 s.
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(60)
            {
                db.exec("INSERT INTO ldb.t (v) VALUES (1)").await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let busy = until(&b, &name, "tps", "above 20 during the load", |v| v > 20.0).await;
    let conns = until(&b, &name, "connections", "4 or more", |v| v >= 4.0).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await??;
    }
    let (busy, conns) = (busy?, conns?);
    let near_zero = (busy / 20.0).max(10.0);
    let after = until(&b, &name, "tps", "near zero after the load", |v| {
        v < near_zero
    })
    .await?;
    eprintln!("mariadb tps idle {idle:.1}, busy {busy:.1}, after {after:.1}; connections {conns}; {written} inserts");
    assert!(written > 0);
    Ok(())
}
