//! Ten instances created at once.

use berth_e2e::{unique, Berth};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn ten_instances_at_once_are_all_ready_and_reachable() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let base = unique("ten");
    let names: Vec<String> = (0..10).map(|i| format!("{base}-{i}")).collect();
    let mut tasks = vec![];
    for n in &names {
        let body = json!({"name": n, "engine": "postgres", "memory": "256MiB", "cpus": "0.25", "storage": "1GiB"});
        let (status, v) = b
            .request(reqwest::Method::POST, "/v1/instances", Some(body))
            .await?;
        assert_eq!(status, 202, "{v}");
        tasks.push(v["task"]["id"].as_str().expect("task").to_owned());
    }
    for t in &tasks {
        b.wait_task(t).await?;
    }
    let list = b.cli_json(&["list"])?;
    assert_eq!(list.as_array().map(Vec::len), Some(10));
    let mut ports = std::collections::HashSet::new();
    for n in &names {
        let inst = b.get(&format!("/v1/instances/{n}")).await?;
        assert_eq!(inst["status"], "available", "{n}");
        assert!(
            ports.insert(inst["endpoint"]["port"].as_u64().expect("port")),
            "port reused"
        );
        let pg = b.pg(n).await?;
        let one: i32 = pg.query_one("SELECT 1", &[]).await?.get(0);
        assert_eq!(one, 1);
    }
    // Ten instances, each a member and an endpoint.
    assert_eq!(b.docker_objects("container", None).len(), 20);
    Ok(())
}
