//! The whole life of an instance, with a control-plane crash in the middle.

use berth_e2e::{docker, unique, Berth};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn create_write_crash_restart_stop_start_restart_delete() -> anyhow::Result<()> {
    let mut b = Berth::start().await?;
    let name = unique("life");

    // Create through the CLI: it waits with progress and prints the instance.
    let out = b.cli(&[
        "create",
        &name,
        "--engine",
        "postgres",
        "--memory",
        "256MiB",
        "--cpus",
        "0.5",
        "--storage",
        "1GiB",
    ]);
    assert!(
        out.status.success(),
        "create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("✓ wait_ready"),
        "no step progress shown: {stderr}"
    );

    let inst = b.cli_json(&["show", &name])?;
    assert_eq!(inst["status"], "available");
    assert_eq!(inst["engine"], "postgres");
    assert_eq!(inst["version"], "15");
    assert_eq!(inst["memory"], "256MiB");
    assert_eq!(inst["cpus"], "0.5");
    let id = inst["id"].as_str().expect("id").to_owned();
    let port = inst["endpoint"]["port"].as_u64().expect("port");

    // Docker applies the limits, publishes the port, and gives the instance its network and volume.
    let container = format!("berth-{name}-0");
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
            &container
        ])?,
        "268435456 500000000"
    );
    assert_eq!(
        docker(&["port", &container, "5432/tcp"])?
            .lines()
            .next()
            .map(|l| l.rsplit(':').next().unwrap_or("")),
        Some(port.to_string().as_str())
    );
    assert_eq!(b.docker_objects("volume", Some(&id)).len(), 1);
    assert_eq!(b.docker_objects("network", Some(&id)).len(), 1);

    // The superuser's password works over the published port; write something.
    let creds = b.cli_json(&["credentials", &name])?;
    assert_eq!(creds["user"], "postgres");
    assert_eq!(creds["port"].as_u64(), Some(port));
    let pg = b.pg(&name).await?;
    pg.batch_execute("CREATE TABLE orders (id int primary key, note text); INSERT INTO orders VALUES (1, 'first')").await?;
    drop(pg);
    // A wrong password is refused by the engine (SCRAM, not trust).
    let bad = creds["uri"]
        .as_str()
        .expect("uri")
        .replace(creds["password"].as_str().expect("pw"), "wrong");
    assert!(tokio_postgres::connect(&bad, tokio_postgres::NoTls)
        .await
        .is_err());

    // `berth connect` runs psql with the credentials.
    let out = b.cli(&["connect", &name, "--", "-tAc", "SELECT note FROM orders"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "first",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The control plane dies hard; the database keeps serving meanwhile.
    b.kill9();
    let pg = berth_e2e::connect_uri(creds["uri"].as_str().expect("uri")).await?;
    let row = pg
        .query_one("SELECT note FROM orders WHERE id = 1", &[])
        .await?;
    assert_eq!(row.get::<_, String>(0), "first");
    drop(pg);
    b.restart().await?;
    let inst = b.cli_json(&["show", &name])?;
    assert_eq!(inst["id"], json!(id));
    assert_eq!(inst["status"], "available");

    // Stop: the engine shuts down cleanly (exit 0 after a checkpoint), data stays.
    b.cli_json(&["stop", &name])?;
    assert_eq!(b.cli_json(&["show", &name])?["status"], "stopped");
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.ExitCode}}",
            &container
        ])?,
        "false 0"
    );
    let logs = std::process::Command::new("docker")
        .args(["logs", &container])
        .output()?;
    assert!(String::from_utf8_lossy(&logs.stderr).contains("database system is shut down"));

    b.cli_json(&["start", &name])?;
    let pg = b.pg(&name).await?;
    assert_eq!(
        pg.query_one("SELECT count(*) FROM orders", &[])
            .await?
            .get::<_, i64>(0),
        1
    );
    drop(pg);

    let before = docker(&["inspect", "-f", "{{.State.StartedAt}}", &container])?;
    b.cli_json(&["restart", &name])?;
    assert_ne!(
        docker(&["inspect", "-f", "{{.State.StartedAt}}", &container])?,
        before,
        "restart did not restart"
    );
    let pg = b.pg(&name).await?;
    pg.batch_execute("INSERT INTO orders VALUES (2, 'second')")
        .await?;
    drop(pg);

    // The task log tells the story.
    let tasks = b.cli_json(&["tasks", "--instance", &name])?;
    let kinds: Vec<&str> = tasks
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["kind"].as_str())
        .collect();
    assert_eq!(kinds, vec!["restart", "start", "stop", "create"]);
    assert!(tasks
        .as_array()
        .expect("list")
        .iter()
        .all(|t| t["state"] == "succeeded" && t["progress"] == 100));

    // Delete --purge leaves nothing labelled for the instance.
    b.cli_json(&["delete", &name, "--purge"])?;
    let out = b.cli(&["show", &name]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("no instance named {name}")));
    for kind in ["container", "volume", "network"] {
        assert_eq!(
            b.docker_objects(kind, Some(&id)),
            Vec::<String>::new(),
            "{kind} left behind"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_without_purge_keeps_the_data_volume() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("keep");
    let inst = b.create(&name, json!({})).await?;
    let id = inst["id"].as_str().expect("id");
    b.cli_json(&["delete", &name])?;
    assert!(b.docker_objects("container", Some(id)).is_empty());
    assert!(b.docker_objects("network", Some(id)).is_empty());
    assert_eq!(
        b.docker_objects("volume", Some(id)).len(),
        1,
        "the data volume must stay"
    );
    // Reconcile runs every second here: it must not take the kept volume for an orphan.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        b.docker_objects("volume", Some(id)).len(),
        1,
        "reconcile removed kept data"
    );
    // The name is free again, and the new instance starts on a fresh volume.
    let again = b.create(&name, json!({})).await?;
    assert_ne!(again["id"], inst["id"]);
    let pg = b.pg(&name).await?;
    let n: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'orders'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(n, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_restarts_a_crashed_engine() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("crash");
    b.create(&name, json!({})).await?;
    let pg = b.pg(&name).await?;
    pg.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        .await?;
    drop(pg);
    let container = format!("berth-{name}-0");
    // Kill the postmaster (not the agent, PID 1) from the host.
    let top = docker(&["top", &container, "-eo", "pid,args"])?;
    let pid = top
        .lines()
        .find(|l| l.contains("/bin/postgres -D"))
        .and_then(|l| l.split_whitespace().next())
        .expect("postmaster in docker top")
        .to_owned();
    std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()?;
    // The agent brings it back in the same container; committed data is there.
    let pg = berth_e2e::connect_uri(
        b.get(&format!("/v1/instances/{name}/credentials")).await?["uri"]
            .as_str()
            .expect("uri"),
    )
    .await?;
    let x: i32 = pg.query_one("SELECT x FROM t", &[]).await?.get(0);
    assert_eq!(x, 42);
    assert_eq!(
        docker(&["inspect", "-f", "{{.RestartCount}}", &container])?,
        "0",
        "the container itself must not restart"
    );
    // No zombies left behind by the dead postmaster's children: PID 1 reaps them.
    let top = docker(&["top", &container, "-eo", "pid,stat,args"])?;
    assert!(
        !top.lines().any(|l| l
            .split_whitespace()
            .nth(1)
            .is_some_and(|s| s.starts_with('Z'))),
        "zombies in the container:\n{top}"
    );
    Ok(())
}
