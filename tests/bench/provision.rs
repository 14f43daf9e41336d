//! Provisioning benchmark: time from `POST /v1/instances` to the first successful
//! `SELECT 1` through the published port, beside a floor measured in the same run:
//! a plain `docker run` of the same image with a named volume and a published port
//! that runs `initdb`, starts PostgreSQL and answers `SELECT 1`.
//!
//! `BERTH_BENCH_N` sets the number of instances (default 5). Results go to
//! `target/bench/provision.json`. Timings are printed, never asserted.

use anyhow::{Context, Result};
use berth_e2e::{docker, unique, Berth};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.total_cmp(b));
    json!({"median_ms": percentile(&v, 0.5), "p95_ms": percentile(&v, 0.95), "samples_ms": v})
}

async fn select_one(uri: &str, deadline: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        // Berth's URIs verify the server over TLS; the bare floor stays plaintext
        // inside its own container (the handshake is a few milliseconds either way).
        let client = if uri.contains("sslrootcert=") {
            berth_e2e::pg_connect_once(uri).await.ok()
        } else {
            match tokio_postgres::connect(uri, tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    Some(client)
                }
                Err(_) => None,
            }
        };
        if let Some(client) = client {
            if client.simple_query("SELECT 1").await.is_ok() {
                return Ok(());
            }
        }
        anyhow::ensure!(
            started.elapsed() < deadline,
            "no SELECT 1 within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The floor: the same image, bare `docker run` + initdb + postgres, no Berth.
async fn floor_once(image: &str) -> Result<f64> {
    let name = unique("berth-bench-floor");
    let started = Instant::now();
    let script = "mkdir -p /var/lib/floor/data /run/floor && chown postgres /var/lib/floor/data /run/floor && \
        su postgres -s /bin/sh -c '/usr/lib/postgresql/15/bin/initdb -D /var/lib/floor/data -U postgres --auth=trust >/dev/null && \
        echo \"host all all 0.0.0.0/0 trust\" >> /var/lib/floor/data/pg_hba.conf && \
        exec /usr/lib/postgresql/15/bin/postgres -D /var/lib/floor/data -c listen_addresses=* -c unix_socket_directories=/run/floor'";
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "io.berth.bench=floor",
        // The same limits Berth gives the instances below: like for like.
        "--cpus",
        "1",
        "--memory",
        "512m",
        "-v",
        &format!("{name}:/var/lib/floor"),
        "-p",
        "127.0.0.1::5432",
        image,
        "sh",
        "-c",
        script,
    ])?;
    let port = docker(&["port", &name, "5432/tcp"])?;
    let port = port
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .context("published port")?
        .to_owned();
    let result = select_one(
        &format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
        Duration::from_secs(120),
    )
    .await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let _ = docker(&["rm", "-f", "-v", &name]);
    let _ = docker(&["volume", "rm", "-f", &name]);
    result.map(|_| ms)
}

async fn berth_once(b: &Berth, name: &str) -> Result<(f64, Value)> {
    let body = json!({"name": name, "engine": "postgres", "memory": "512MiB", "cpus": "1", "storage": "1GiB"});
    let started = Instant::now();
    let (status, v) = b
        .request(reqwest::Method::POST, "/v1/instances", Some(body))
        .await?;
    anyhow::ensure!(status == 202, "create answered {status}: {v}");
    let api_ms = started.elapsed().as_secs_f64() * 1000.0;
    let creds = b.get(&format!("/v1/instances/{name}/credentials")).await?;
    select_one(
        creds["uri"].as_str().context("uri")?,
        Duration::from_secs(120),
    )
    .await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let task = b
        .wait_task(v["task"]["id"].as_str().context("task")?)
        .await?;
    let mut steps = serde_json::Map::new();
    for s in task["steps"].as_array().into_iter().flatten() {
        steps.insert(
            s["name"].as_str().unwrap_or("?").to_owned(),
            s["millis"].clone(),
        );
    }
    steps.insert("api_accept".into(), json!(api_ms));
    Ok((ms, Value::Object(steps)))
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::var("BERTH_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let b = Berth::start().await?;
    // Warm-up: builds the image if needed and fills the agent volume; not counted.
    let warm = unique("bench-warm");
    b.create(&warm, json!({})).await?;
    b.cli_json(&["delete", &warm, "--purge", "--skip-final-backup"])?;
    let image = docker(&[
        "images",
        "berth/postgres",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ])?
    .lines()
    .next()
    .context("no berth/postgres image")?
    .to_owned();

    let mut floor = vec![];
    let mut berth = vec![];
    let mut breakdown = vec![];
    // Interleave so both see the same machine conditions.
    for i in 0..n {
        floor.push(floor_once(&image).await?);
        let name = unique(&format!("bench-{i}"));
        let (ms, steps) = berth_once(&b, &name).await?;
        berth.push(ms);
        breakdown.push(steps);
        b.cli_json(&["delete", &name, "--purge", "--skip-final-backup"])?;
    }
    let floor_s = summary(floor);
    let berth_s = summary(berth);
    let ratio = berth_s["median_ms"].as_f64().unwrap_or(f64::NAN)
        / floor_s["median_ms"].as_f64().unwrap_or(f64::NAN);
    let report = json!({
        "benchmark": "provision",
        "n": n,
        "image": image,
        "floor_docker_run_initdb_select1": floor_s,
        "berth_create_to_select1": berth_s,
        "ratio_median": ratio,
        "target_ratio": 1.2,
        "steps_ms": breakdown,
    });
    println!(
        "floor (docker run + initdb + start + SELECT 1): median {:.0} ms, p95 {:.0} ms",
        floor_s["median_ms"].as_f64().unwrap_or(0.0),
        floor_s["p95_ms"].as_f64().unwrap_or(0.0)
    );
    println!(
        "berth (POST /v1/instances → SELECT 1):          median {:.0} ms, p95 {:.0} ms",
        berth_s["median_ms"].as_f64().unwrap_or(0.0),
        berth_s["p95_ms"].as_f64().unwrap_or(0.0)
    );
    println!("ratio of medians: {ratio:.2} (target ≤ 1.2)");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("provision.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", path.display());
    Ok(())
}
