//! Failover benchmark: for each lease store (`BERTH_BENCH_LEASE_STORES`, default
//! `embedded,etcd`) and each engine (`BERTH_BENCH_ENGINES`, default
//! `postgres,mariadb`), a three-member instance with `--sync 1` under a steady
//! writer through the read-write endpoint, and `BERTH_BENCH_FAILOVERS` (default 10)
//! cycles of `docker kill` of the primary. For each kill: the time from the kill to
//! the first commit acknowledged after it; between kills the bench waits until
//! another member is primary and the killed one is back as a ready replica.
//!
//! The floor, measured in the same run on the same instance: the writer's median
//! interval between two acknowledged commits while nothing happens, so the figure
//! prints as a ratio to what a client sees anyway. False failovers: `failover.done`
//! events beyond the number of kills (none expected).
//!
//! Quiet mode (`BERTH_BENCH_QUIET_SECS`, default 0 = skipped): before the kills, two
//! busy loops load both cores while the writer runs that long and nothing is killed;
//! every `failover.done` then is a false failover, and the longest write pause says
//! what the load alone cost. `BERTH_BENCH_FAILOVERS=0` runs the quiet mode alone.
//!
//! Results go to `target/bench/failover.json`. Timings are printed, never asserted:
//! the bench fails only if an acknowledged commit is lost, or when a wait for the
//! instance to recover runs out (it says which).

use anyhow::{Context, Result};
use berth_e2e::writer::Writer;
use berth_e2e::{docker, member_sql, unique, Berth, Db};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Busy loops that load the machine's cores for the quiet mode. Each is bounded by
/// `timeout`, so none outlives a bench that was itself killed; `Drop` ends them
/// earlier (SIGTERM to `timeout`, which passes it on), on failure too.
struct CpuHog(Vec<std::process::Child>);

impl CpuHog {
    fn start(n: usize, bound: Duration) -> Result<Self> {
        let mut hog = Self(vec![]);
        for _ in 0..n {
            hog.0.push(
                std::process::Command::new("timeout")
                    .args(["--signal=KILL", &format!("{}s", bound.as_secs())])
                    .args(["sh", "-c", "while :; do :; done"])
                    .stdin(std::process::Stdio::null())
                    .spawn()
                    .context("starting a busy loop")?,
            );
        }
        Ok(hog)
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        for c in &mut self.0 {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let _ = c.wait();
        }
    }
}

/// The members of an instance as the API shows them.
async fn members(b: &Berth, name: &str) -> Vec<Value> {
    match b.get(&format!("/v1/instances/{name}")).await {
        Ok(v) => v["members"].as_array().cloned().unwrap_or_default(),
        Err(_) => vec![],
    }
}

/// The member shown as primary (its container), if exactly one is.
async fn primary_container(b: &Berth, name: &str) -> Option<String> {
    let primaries: Vec<String> = members(b, name)
        .await
        .iter()
        .filter(|m| m["role"] == "primary")
        .filter_map(|m| m["container"].as_str().map(str::to_owned))
        .collect();
    match primaries.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Every member ready, exactly one of them primary.
async fn settled(b: &Berth, name: &str) -> bool {
    let ms = members(b, name).await;
    !ms.is_empty()
        && ms.iter().all(|m| m["state"] == "ready")
        && ms.iter().filter(|m| m["role"] == "primary").count() == 1
}

/// How many events of each kind the instance has, every page read.
async fn event_counts(b: &Berth, name: &str) -> Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = b
            .get(&format!(
                "/v1/events?instance={name}&after={after}&limit=1000"
            ))
            .await?;
        let events = page["events"].as_array().context("events")?;
        if events.is_empty() {
            return Ok(counts);
        }
        for e in events {
            let kind = e["kind"].as_str().unwrap_or("?");
            *counts.entry(kind.to_owned()).or_default() += 1;
            // How each former primary came back: by the log alone, or a clone.
            if kind == "member.rejoined" {
                let how = e["details"]["how"].as_str().unwrap_or("?");
                *counts.entry(format!("{kind}:{how}")).or_default() += 1;
            }
        }
        after = page["next"].as_i64().context("next")?;
    }
}

fn failovers_done(counts: &BTreeMap<String, usize>) -> usize {
    counts.get("failover.done").copied().unwrap_or(0)
}

/// The pauses between acknowledgements inside `[from, to]`, the edges counted as
/// acknowledgements: a writer that stopped before `to` shows as a pause too.
fn pauses(acked: &[(u32, Instant)], from: Instant, to: Instant) -> Vec<f64> {
    let mut times = vec![from];
    times.extend(acked.iter().map(|a| a.1).filter(|t| *t > from && *t < to));
    times.push(to);
    times.windows(2).map(|w| ms(w[1] - w[0])).collect()
}

/// The quiet mode: the cores loaded, nothing killed, for `secs`. The window, and
/// what happened in it apart from the writer's pauses (those are read at the end).
async fn quiet_run(
    b: &Berth,
    name: &str,
    writer: &Writer,
    secs: u64,
) -> Result<(Instant, Instant, Value)> {
    let before = event_counts(b, name).await?;
    let hog = CpuHog::start(2, Duration::from_secs(secs + 120))?;
    let from = Instant::now();
    let acked_before = writer.count();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let to = Instant::now();
    drop(hog);
    let acked_during = writer.count() - acked_before;
    let after = event_counts(b, name).await?;
    let new_events: BTreeMap<&String, usize> = after
        .iter()
        .filter_map(|(kind, n)| {
            let was = before.get(kind).copied().unwrap_or(0);
            (*n > was).then_some((kind, n - was))
        })
        .collect();
    let v = json!({
        "secs": secs,
        "acknowledged_commits": acked_during,
        "false_failovers": failovers_done(&after) - failovers_done(&before),
        "events": new_events,
    });
    Ok((from, to, v))
}

/// What each member looked like when a cycle failed: its role and state in the API
/// view, and what its engine says of its replication, read over the local socket.
async fn snapshot(b: &Berth, name: &str, engine: &str) -> String {
    let queries: &[&str] = if engine == "mariadb" {
        &[
            "SELECT @@read_only",
            "SHOW STATUS LIKE 'Rpl_semi_sync_master%'",
            "SHOW ALL SLAVES STATUS",
        ]
    } else {
        &[
            "SELECT pg_is_in_recovery()",
            "SHOW synchronous_standby_names",
            "SELECT application_name, state, sync_state FROM pg_stat_replication",
            "SELECT wait_event, left(query, 60) FROM pg_stat_activity WHERE wait_event IS NOT NULL AND backend_type = 'client backend'",
        ]
    };
    let mut out = String::new();
    for m in members(b, name).await {
        out += &format!("\n{} {} {}", m["container"], m["role"], m["state"]);
        let Some(c) = m["container"].as_str() else {
            continue;
        };
        for q in queries {
            let answer = member_sql(c, engine, q).unwrap_or_else(|e| format!("{e:#}"));
            out += &format!("\n  {q}: {}", answer.replace('\n', " | "));
        }
        // The agent's and the engine's own words (the container's output).
        let log = std::process::Command::new("docker")
            .args(["logs", "--tail", "25", c])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_else(|e| e.to_string());
        out += &format!("\n  log tail:\n    {}", log.trim().replace('\n', "\n    "));
    }
    out
}

/// One kill and the wait for the instance to be whole again; returns when the kill
/// was sent, when `docker kill` returned, and whether the failover was declined (no
/// replica could be shown to hold every acknowledged commit — one was being cloned
/// afresh, say — so the killed primary was brought back in place instead).
async fn kill_primary(b: &Berth, name: &str, cycle: usize) -> Result<(Instant, Instant, bool)> {
    b.eventually(
        &format!("cycle {cycle}: every member ready before the kill"),
        Duration::from_secs(180),
        || settled(b, name),
    )
    .await?;
    let old = primary_container(b, name)
        .await
        .with_context(|| format!("cycle {cycle}: no single primary shown"))?;
    let declined_before = declined(b, name).await;
    let sent = Instant::now();
    docker(&["kill", &old])?;
    let returned = Instant::now();
    b.eventually(
        &format!(
            "cycle {cycle}: another member than the killed {old} to be primary (or, the \
             failover declined, {old} back in place)"
        ),
        Duration::from_secs(60),
        || async {
            match primary_container(b, name).await {
                Some(p) if p != old => true,
                Some(_) => declined(b, name).await > declined_before && settled(b, name).await,
                None => false,
            }
        },
    )
    .await?;
    if declined(b, name).await > declined_before {
        b.eventually(
            &format!("cycle {cycle}: every member ready after a declined failover"),
            Duration::from_secs(180),
            || settled(b, name),
        )
        .await?;
        return Ok((sent, returned, true));
    }
    b.eventually(
        &format!("cycle {cycle}: the killed {old} to be back as a ready replica"),
        Duration::from_secs(180),
        || async {
            members(b, name).await.iter().any(|m| {
                m["container"] == old.as_str() && m["role"] == "replica" && m["state"] == "ready"
            })
        },
    )
    .await?;
    Ok((sent, returned, false))
}

/// How many failovers the instance declined so far.
async fn declined(b: &Berth, name: &str) -> usize {
    event_counts(b, name)
        .await
        .ok()
        .and_then(|c| c.get("failover.declined").copied())
        .unwrap_or(0)
}

async fn run_engine(engine: &str, store: &str, n: usize, quiet_secs: u64) -> Result<Value> {
    // etcd: the agents elect; it lives while this run does.
    let etcd = match store {
        "etcd" => Some(berth_e2e::etcd::Etcd::start().await?),
        _ => None,
    };
    let b = match &etcd {
        Some(e) => Berth::start_with(&["--lease-store", &e.url]).await?,
        None => Berth::start().await?,
    };
    let name = unique(&format!("bench-fo-{}", &engine[..2]));
    b.create_with_cli(&name, engine, &["--members", "3", "--sync", "1"])?;
    let uri = b.rw_uri(&name).await?;
    let table = berth_e2e::make_table(&uri, engine).await?;

    let writer = Writer::start(uri.clone(), table);
    writer.progress(50).await?;
    let quiet_from = writer.count();
    writer.progress(200).await?;
    let quiet_to = writer.count();

    let quiet = if quiet_secs > 0 {
        Some(quiet_run(&b, &name, &writer, quiet_secs).await?)
    } else {
        None
    };
    let done_before = failovers_done(&event_counts(&b, &name).await?);
    let mut kills = vec![];
    // A cycle that fails still leaves its acknowledged commits to be checked.
    let mut error = None;
    for i in 0..n {
        let cycle = async {
            kills.push(kill_primary(&b, &name, i).await?);
            writer.progress(20).await
        };
        if let Err(e) = cycle.await {
            let members = snapshot(&b, &name, engine).await;
            let log = b.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "failover {engine}: cycle {i} failed: {e:#}\nmembers:{members}\n\
                 control plane log tail:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            error = Some(format!("cycle {i}: {e:#}"));
            break;
        }
    }
    let counts_after = event_counts(&b, &name).await?;
    let done_after = failovers_done(&counts_after);
    let rejoined: BTreeMap<&str, usize> = counts_after
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("member.rejoined:").map(|how| (how, *v)))
        .collect();
    let acked = writer.finish_timed().await;

    let floor_ms = median(
        acked[quiet_from..quiet_to]
            .windows(2)
            .map(|w| ms(w[1].1 - w[0].1))
            .collect(),
    );
    // The first commit acknowledged once `docker kill` had returned (one acknowledged
    // while it ran may still be the old primary's), timed from when the kill was sent.
    // A declined cycle's write resumed on the killed primary brought back: counted
    // apart, it is not a failover's time.
    let mut kill_to_write = vec![];
    let mut declined_to_write = vec![];
    for (i, (sent, returned, declined)) in kills.iter().enumerate() {
        match acked.iter().find(|a| a.1 > *returned) {
            Some(first) if *declined => declined_to_write.push(ms(first.1 - *sent)),
            Some(first) => kill_to_write.push(ms(first.1 - *sent)),
            None => {
                error.get_or_insert(format!("cycle {i}: no commit acknowledged after the kill"));
            }
        }
    }
    let quiet = quiet.map(|(from, to, mut q)| {
        let p = pauses(&acked, from, to);
        q["longest_write_pause_ms"] = json!(p.iter().copied().fold(0.0, f64::max));
        q["pauses_over_1s"] = json!(p.iter().filter(|d| **d > 1000.0).count());
        q["commit_interval_median_ms"] = json!(median(p));
        q
    });

    let mut db = Db::connect(&uri).await?;
    let rows: HashSet<String> = db
        .strings(&format!("SELECT n FROM {table}"))
        .await?
        .into_iter()
        .collect();
    let lost: Vec<u32> = acked
        .iter()
        .map(|a| a.0)
        .filter(|k| !rows.contains(&k.to_string()))
        .collect();

    let med = median(kill_to_write.clone());
    let max = kill_to_write.iter().copied().fold(f64::NAN, f64::max);
    let done = done_after - done_before;
    let n = kills.len();
    // Each kill not declined is one failover; any beyond is a false one.
    let expected = kills.iter().filter(|k| !k.2).count();
    if n > 0 {
        println!(
            "failover {engine}: {n} kills, kill→first write median {med:.0} ms, max {max:.0} ms \
             ({:.1}x the {floor_ms:.1} ms commit interval), {} false failovers",
            med / floor_ms,
            done.saturating_sub(expected),
        );
    }
    println!(
        "failover {engine}: {} acknowledged commits, {} lost",
        acked.len(),
        lost.len()
    );
    println!("failover {engine}: the former primaries rejoined by {rejoined:?}");
    if !declined_to_write.is_empty() {
        println!(
            "failover {engine}: {} kill(s) declined (no replica provably complete; the killed \
             primary came back in place), kill→first write {declined_to_write:?} ms",
            declined_to_write.len()
        );
    }
    if let Some(q) = &quiet {
        println!(
            "failover {engine} quiet ({quiet_secs} s, both cores loaded): {} false failovers, \
             longest write pause {:.0} ms, {} pauses over 1 s, events {}",
            q["false_failovers"],
            q["longest_write_pause_ms"].as_f64().unwrap_or(f64::NAN),
            q["pauses_over_1s"],
            q["events"]
        );
    }
    Ok(json!({
        "cycles": n,
        "kill_to_write_ms": {"median": med, "max": max, "all": kill_to_write},
        // How long `docker kill` itself took: part of every figure above.
        "docker_kill_ms": kills.iter().map(|(s, r, _)| ms(*r - *s)).collect::<Vec<_>>(),
        "declined_cycles": declined_to_write.len(),
        "declined_kill_to_write_ms": declined_to_write,
        "floor_commit_interval_median_ms": floor_ms,
        "median_over_floor": med / floor_ms,
        "acknowledged_commits": acked.len(),
        "lost": lost.len(),
        "lost_sample": &lost[..lost.len().min(20)],
        "failovers_done": done,
        "false_failovers": done.saturating_sub(expected),
        "rejoined_by": rejoined,
        "quiet": quiet,
        "error": error,
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    berth_e2e::require_docker();
    berth_e2e::ensure_images();
    let n: usize = env_or("BERTH_BENCH_FAILOVERS", 10);
    let quiet_secs: u64 = env_or("BERTH_BENCH_QUIET_SECS", 0);
    let engines: String = env_or("BERTH_BENCH_ENGINES", "postgres,mariadb".to_owned());
    let mut report = serde_json::Map::new();
    let mut failed = vec![];
    let stores: String = env_or("BERTH_BENCH_LEASE_STORES", "embedded,etcd".to_owned());
    let runs: Vec<(String, String)> = stores
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .flat_map(|store| {
            engines
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(move |e| (e.to_owned(), store.to_owned()))
        })
        .collect();
    for (engine, store) in &runs {
        let (engine, store) = (engine.as_str(), store.as_str());
        let started = Instant::now();
        let result = run_engine(engine, store, n, quiet_secs).await;
        let secs = started.elapsed().as_secs_f64();
        let engine = &format!("{engine}/{store}");
        println!("failover {engine}: took {secs:.0} s");
        match result {
            Ok(mut v) => {
                v["took_s"] = json!(secs);
                if v["lost"].as_u64() != Some(0) {
                    failed.push(format!(
                        "{engine}: {} acknowledged commits were lost",
                        v["lost"]
                    ));
                }
                if let Some(e) = v["error"].as_str() {
                    failed.push(format!("{engine}: {e}"));
                }
                report.insert(engine.to_owned(), v);
            }
            Err(e) => {
                failed.push(format!("{engine}: {e:#}"));
                report.insert(engine.to_owned(), json!({"error": format!("{e:#}")}));
            }
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("failover.json"),
        serde_json::to_string_pretty(&Value::Object(report))?,
    )?;
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("\n"));
    Ok(())
}
