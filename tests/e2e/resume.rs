//! SIGKILL of the control plane in the middle of a task: the task finishes after
//! the restart, with no duplicate and no orphan.

use berth_e2e::{unique, Berth};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Polls the task until `pred` holds for it, as fast as the API answers.
async fn until_step(b: &Berth, task: &str, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let t = b.get(&format!("/v1/tasks/{task}")).await?;
        if pred(&t) {
            return Ok(t);
        }
        anyhow::ensure!(
            t["state"] != "succeeded" && t["state"] != "failed",
            "task finished before the crash point: {t}"
        );
    }
    anyhow::bail!("crash point never reached")
}

fn step_state<'a>(t: &'a Value, step: &str) -> &'a str {
    t["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["name"] == step))
        .and_then(|x| x["state"].as_str())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn create_resumes_after_sigkill() -> anyhow::Result<()> {
    let mut b = Berth::start().await?;
    let name = unique("rc");
    let (s, v) = b
        .request(
            Method::POST,
            "/v1/instances",
            Some(
                json!({"name": name, "engine": "postgres", "memory": "256MiB", "storage": "1GiB"}),
            ),
        )
        .await?;
    assert_eq!(s, 202, "{v}");
    let task = v["task"]["id"].as_str().expect("task").to_owned();
    let id = v["instance"]["id"].as_str().expect("id").to_owned();
    // Crash once the container exists but before the engine is ready.
    let t = until_step(&b, &task, |t| step_state(t, "ensure_container") == "done").await?;
    b.kill9();
    assert_eq!(t["state"], "running");
    b.restart().await?;
    let done = b.wait_task(&task).await?;
    assert_eq!(done["progress"], 100);
    let inst = b.get(&format!("/v1/instances/{name}")).await?;
    assert_eq!(inst["status"], "available");
    assert_eq!(
        b.docker_objects("container", Some(&id)).len(),
        2,
        "duplicate or missing container (one member, one endpoint)"
    );
    assert_eq!(b.docker_objects("volume", Some(&id)).len(), 1);
    assert_eq!(b.docker_objects("network", Some(&id)).len(), 1);
    let tasks = b.get("/v1/tasks").await?;
    assert_eq!(
        tasks.as_array().map(Vec::len),
        Some(1),
        "resume must not start a second task"
    );
    let pg = b.pg(&name).await?;
    let one: i32 = pg.query_one("SELECT 1", &[]).await?.get(0);
    assert_eq!(one, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_resumes_after_sigkill() -> anyhow::Result<()> {
    let mut b = Berth::start().await?;
    let name = unique("rd");
    let inst = b.create(&name, json!({})).await?;
    let id = inst["id"].as_str().expect("id").to_owned();
    let (s, v) = b
        .request(
            Method::DELETE,
            &format!("/v1/instances/{name}?purge=true"),
            None,
        )
        .await?;
    assert_eq!(s, 202, "{v}");
    let task = v["task"]["id"].as_str().expect("task").to_owned();
    // Crash while the engine is being shut down, the first step of the delete.
    until_step(&b, &task, |t| t["state"] == "running").await?;
    b.kill9();
    b.restart().await?;
    b.wait_task(&task).await?;
    let (s, _) = b
        .request(Method::GET, &format!("/v1/instances/{name}"), None)
        .await?;
    assert_eq!(s, 404);
    for kind in ["container", "volume", "network"] {
        assert!(
            b.docker_objects(kind, Some(&id)).is_empty(),
            "{kind} left behind"
        );
    }
    Ok(())
}
