//! Switchover benchmark: `BERTH_BENCH_SWITCHOVERS` (default 10) switchovers of a
//! three-member PostgreSQL instance with `--sync 1`, under a steady writer through
//! the read-write endpoint. For each: the write outage a client saw (the pause
//! between the last commit acknowledged before the switch and the first after) and
//! the task's own time; at the end, whether every acknowledged commit is there.
//!
//! The floor, measured in the same run on the same instance: the writer's median
//! interval between two acknowledged commits when nothing happens, so the outage
//! prints as a ratio to what a client sees anyway. Results go to
//! `target/bench/switchover.json`. Timings are printed, never asserted.

use anyhow::{Context, Result};
use berth_e2e::writer::{outages, Writer};
use berth_e2e::{unique, Berth, Db};
use serde_json::json;
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    berth_e2e::require_docker();
    berth_e2e::ensure_images();
    let n: usize = std::env::var("BERTH_BENCH_SWITCHOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let b = Berth::start().await?;
    let name = unique("bench-so");
    b.create_with_cli(&name, "postgres", &["--members", "3", "--sync", "1"])?;
    let creds = b.get(&format!("/v1/instances/{name}/credentials")).await?;
    let uri = creds["uri"].as_str().context("uri")?.to_owned();
    Db::connect(&uri)
        .await?
        .exec("CREATE TABLE w (n INT PRIMARY KEY)")
        .await?;

    let writer = Writer::start(uri.clone(), "w");
    writer.progress(50).await?;
    let quiet_from = writer.count();
    writer.progress(200).await?;
    let quiet_to = writer.count();
    let mut tasks_ms = vec![];
    // Where the time goes: each step's time, and the catching up inside the hand-over.
    let mut steps_ms: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for i in 0..n {
        let started = Instant::now();
        let done = b.cli_json(&["switchover", &name])?;
        anyhow::ensure!(done["state"] == "succeeded", "switchover {i}: {done}");
        tasks_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        for step in done["steps"].as_array().into_iter().flatten() {
            let mut note = |key: String, v: Option<f64>| {
                if let Some(v) = v {
                    steps_ms.entry(key).or_default().push(v);
                }
            };
            let name = step["name"].as_str().unwrap_or("?").to_owned();
            note(name.clone(), step["millis"].as_f64());
            note(
                format!("{name}.caught_up"),
                step["decided"]["caught_up_ms"].as_f64(),
            );
        }
        writer.progress(30).await?;
    }
    let step_medians: serde_json::Map<String, serde_json::Value> = steps_ms
        .into_iter()
        .map(|(k, v)| (k, json!(median(v))))
        .collect();
    println!("switchover: step medians (ms) {}", json!(step_medians));
    let acked = writer.finish_timed().await;
    // The floor: the quiet stretch's intervals between acknowledged commits.
    let quiet: Vec<f64> = acked[quiet_from..quiet_to]
        .windows(2)
        .map(|w| w[1].1.duration_since(w[0].1).as_secs_f64() * 1000.0)
        .collect();
    let floor_ms = median(quiet);
    // Each switchover shows as the longest pause after the quiet stretch: take the
    // n longest pauses as the n outages.
    let mut pauses: Vec<f64> = outages(&acked[quiet_to..], Duration::ZERO)
        .into_iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    pauses.sort_by(|a, b| b.total_cmp(a));
    pauses.truncate(n);
    let outage_ms = median(pauses.clone());

    let mut db = Db::connect(&uri).await?;
    let rows: std::collections::HashSet<String> =
        db.strings("SELECT n FROM w").await?.into_iter().collect();
    let lost = acked
        .iter()
        .filter(|(k, _)| !rows.contains(&k.to_string()))
        .count();

    let report = json!({
        "switchovers": n,
        "acknowledged_commits": acked.len(),
        "lost_acknowledged_commits": lost,
        "write_outage_median_ms": outage_ms,
        "write_outages_ms": pauses,
        "task_median_ms": median(tasks_ms.clone()),
        "step_median_ms": step_medians,
        "tasks_ms": tasks_ms,
        "floor_commit_interval_median_ms": floor_ms,
        "outage_over_floor": outage_ms / floor_ms,
    });
    println!(
        "switchover: {n} switchovers, write outage median {outage_ms:.0} ms ({:.1}x the {floor_ms:.1} ms \
         commit interval), task median {:.0} ms, {} acknowledged commits, {lost} lost",
        outage_ms / floor_ms,
        median(tasks_ms),
        acked.len()
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("switchover.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    anyhow::ensure!(lost == 0, "{lost} acknowledged commits were lost");
    Ok(())
}
