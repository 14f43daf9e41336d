//! The event log: a whole lifecycle comes back in order, API calls name the token,
//! nothing is lost across a SIGKILL of `berth serve`, `--follow` prints a new event
//! as it happens, paging returns each event once, and no password ever appears.

use anyhow::{bail, Context};
use berth_e2e::{berth_bin, unique, Berth};
use serde_json::{json, Value};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

async fn all_events(b: &Berth, instance: &str) -> anyhow::Result<Vec<Value>> {
    let page = b
        .get(&format!("/v1/events?instance={instance}&limit=1000"))
        .await?;
    Ok(page["events"].as_array().context("events")?.clone())
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["kind"].as_str()).collect()
}

/// A `berth events NAME --follow -o json` child, its lines read on a thread.
struct Follower {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Follower {
    fn spawn(b: &Berth, instance: &str) -> anyhow::Result<Self> {
        let mut child = Command::new(berth_bin())
            .args(["-o", "json", "events", instance, "--follow"])
            .env("BERTH_URL", &b.url)
            .env("BERTH_TOKEN", &b.token)
            .env("BERTH_CONFIG", b.dir.path().join("cli.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting berth events --follow")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// Reads lines until one is an event of `kind`; returns every line read.
    fn until(&self, kind: &str, timeout: Duration) -> anyhow::Result<Vec<String>> {
        let started = Instant::now();
        let mut seen = vec![];
        while let Some(left) = timeout.checked_sub(started.elapsed()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            let v: Value = serde_json::from_str(&line)
                .with_context(|| format!("--follow -o json printed a non-JSON line: {line}"))?;
            seen.push(line);
            if v["kind"] == kind {
                return Ok(seen);
            }
        }
        bail!("--follow printed no {kind} event within {timeout:?}; it printed {seen:?}")
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lifecycle_is_logged_in_order_durably_followed_and_without_secrets() -> anyhow::Result<()>
{
    let mut b = Berth::start().await?;
    let name = unique("ev");
    b.create(&name, json!({})).await?;
    // A user with a password, then a new one: neither may reach an event.
    let user = b.cli_json(&["user", "create", &name, "app_user"])?;
    let rotated = b.cli_json(&["user", "password", &name, "app_user"])?;
    let passwords: Vec<String> = [&user, &rotated]
        .iter()
        .map(|v| v["password"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(passwords.iter().all(|p| p.len() >= 16), "{passwords:?}");
    b.cli_json(&["resize", &name, "--memory", "512MiB"])?;
    b.cli_json(&["stop", &name])?;
    b.cli_json(&["start", &name])?;
    b.cli_json(&["restart", &name])?;

    let events = all_events(&b, &name).await?;
    let lifecycle: Vec<&str> = kinds(&events)
        .into_iter()
        .filter(|k| k.starts_with("instance."))
        .collect();
    assert_eq!(
        lifecycle,
        [
            "instance.created",
            "instance.resized",
            "instance.stopped",
            "instance.started",
            "instance.restarted"
        ],
        "{events:#?}"
    );
    let seqs: Vec<i64> = events.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let resized = events
        .iter()
        .find(|e| e["kind"] == "instance.resized")
        .context("resized")?;
    assert_eq!(resized["details"]["to"]["memory"], "512MiB", "{resized}");
    // Every call that changed something, by the token's name, with its template.
    let calls: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["kind"] == "api")
        .map(|e| {
            assert_eq!(e["details"]["token"], "admin", "{e}");
            (
                e["details"]["method"].as_str().unwrap_or("").to_owned(),
                e["details"]["path"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for want in [
        ("POST", "/v1/instances"),
        ("POST", "/v1/instances/{name}/users"),
        ("POST", "/v1/instances/{name}/users/{user}/password"),
        ("PATCH", "/v1/instances/{name}"),
        ("POST", "/v1/instances/{name}/{action}"),
    ] {
        assert!(
            calls.contains(&(want.0.to_owned(), want.1.to_owned())),
            "no api event {want:?} in {calls:?}"
        );
    }
    // The task of every change began and ended.
    let k = kinds(&events);
    assert_eq!(
        k.iter().filter(|k| **k == "task.began").count(),
        k.iter().filter(|k| **k == "task.succeeded").count(),
        "{k:?}"
    );

    // Paging with the cursor returns each event once, in order.
    let mut paged = vec![];
    let mut after = 0;
    for _ in 0..1000 {
        let page = b
            .get(&format!("/v1/events?instance={name}&after={after}&limit=3"))
            .await?;
        let got = page["events"].as_array().context("events")?;
        if got.is_empty() {
            assert_eq!(page["next"], after, "an empty page keeps the cursor");
            break;
        }
        assert!(got.len() <= 3);
        paged.extend(got.iter().filter_map(|e| e["seq"].as_i64()));
        after = page["next"].as_i64().context("next")?;
    }
    assert_eq!(paged, seqs);

    // The CLI shows the same log: an array with -o json, a table otherwise.
    let shown = b.cli_json(&["events", &name])?;
    assert_eq!(shown.as_array().map(Vec::len), Some(events.len()));
    let table = b.cli(&["events", &name, "--since", "1h"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("TIME") && table.contains("instance.restarted"),
        "{table}"
    );

    // Following: history first; then SIGKILL and start `berth serve` again: the
    // follower reconnects after the last event it saw, and everything is still there.
    let follower = Follower::spawn(&b, &name)?;
    let mut followed = follower.until("instance.restarted", Duration::from_secs(30))?;
    let before = all_events(&b, &name).await?;
    b.restart().await?;
    let after_restart = all_events(&b, &name).await?;
    assert_eq!(after_restart[..before.len()], before[..]);

    // A new event is printed as it happens, each event once across the reconnect.
    b.cli_json(&["delete", &name, "--purge"])?;
    followed.extend(follower.until("instance.deleted", Duration::from_secs(60))?);
    drop(follower);
    let followed_seqs: Vec<i64> = followed
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["seq"].as_i64())
        .collect();
    assert!(
        followed_seqs.windows(2).all(|w| w[0] < w[1]),
        "followed twice or out of order: {followed_seqs:?}"
    );
    // History first, from the start: what the API listed, then what came after.
    assert_eq!(
        followed_seqs[..seqs.len().min(followed_seqs.len())],
        seqs[..]
    );

    // No password in any event, nor in the stream.
    let everything = b.get("/v1/events?limit=1000").await?.to_string();
    for p in &passwords {
        assert!(
            !everything.contains(p.as_str()),
            "a password is in the event log"
        );
        assert!(
            !followed.iter().any(|l| l.contains(p.as_str())),
            "a password is in the event stream"
        );
    }
    assert!(
        !everything.contains(&b.token),
        "the API token is in the event log"
    );
    Ok(())
}

/// A retention shorter than a day is refused at start, not silently raised.
#[test]
fn a_retention_under_a_day_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for bad in ["1h", "soon"] {
        let out = Command::new(berth_bin())
            .args(["serve", "--event-retention", bad, "--data-dir"])
            .arg(dir.path())
            .env("BERTH_CONFIG", dir.path().join("cli.json"))
            .stdin(Stdio::null())
            .output()?;
        assert!(
            !out.status.success(),
            "serve accepted --event-retention {bad}"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("event-retention"), "{err}");
    }
    Ok(())
}

/// Reconcile's observations and repairs are events too: a frozen member is seen
/// down and then healthy again, a removed one is repaired.
#[tokio::test(flavor = "multi_thread")]
async fn observations_and_repairs_are_logged() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("evr");
    b.create(&name, json!({})).await?;
    let container = b.member_container(&name)?;
    let has = |kind: &'static str| {
        let b = &b;
        let name = name.clone();
        move || {
            let name = name.clone();
            async move {
                all_events(b, &name)
                    .await
                    .is_ok_and(|e| kinds(&e).contains(&kind))
            }
        }
    };
    berth_e2e::docker(&["pause", &container])?;
    b.eventually(
        "a status.down event",
        Duration::from_secs(60),
        has("status.down"),
    )
    .await?;
    berth_e2e::docker(&["unpause", &container])?;
    b.eventually(
        "a status.healthy event",
        Duration::from_secs(60),
        has("status.healthy"),
    )
    .await?;
    berth_e2e::docker(&["rm", "-f", &container])?;
    b.eventually(
        "an instance.repaired event",
        Duration::from_secs(120),
        has("instance.repaired"),
    )
    .await?;
    let events = all_events(&b, &name).await?;
    let down = events
        .iter()
        .find(|e| e["kind"] == "status.down")
        .context("down")?;
    assert!(
        down["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("observed down: ")),
        "the reason is in the event: {down}"
    );
    Ok(())
}
