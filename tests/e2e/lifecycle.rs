//! The whole life of an instance, with a control-plane crash in the middle.

use berth_e2e::{docker, unique, Berth, Db};
use serde_json::json;
use std::time::Duration;

/// What differs between engines, for these tests only.
struct Case {
    engine: &'static str,
    version: &'static str,
    superuser: &'static str,
    client_port: &'static str,
    /// Arguments that make the engine's client run one query and print bare values.
    query_args: &'static [&'static str],
    /// What the engine logs when it shut down cleanly.
    shutdown_line: &'static str,
    /// How the engine's server process shows in `docker top`.
    server_process: &'static str,
}

const POSTGRES: Case = Case {
    engine: "postgres",
    version: "15",
    superuser: "postgres",
    client_port: "5432/tcp",
    query_args: &["-tAc"],
    shutdown_line: "database system is shut down",
    server_process: "/bin/postgres -D",
};

const MARIADB: Case = Case {
    engine: "mariadb",
    version: "10.11",
    superuser: "root",
    client_port: "3306/tcp",
    query_args: &["-N", "-B", "-e"],
    shutdown_line: "Shutdown complete",
    server_process: "/usr/sbin/mariadbd",
};

#[tokio::test(flavor = "multi_thread")]
async fn postgres_lifecycle() -> anyhow::Result<()> {
    lifecycle(&POSTGRES).await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_lifecycle() -> anyhow::Result<()> {
    lifecycle(&MARIADB).await
}

/// Create → write → SIGKILL the control plane → restart it → data and instance intact
/// → stop, start, restart → delete --purge leaves nothing behind.
async fn lifecycle(case: &Case) -> anyhow::Result<()> {
    let mut b = Berth::start().await?;
    let name = unique(&format!("life-{}", case.engine));

    // Create through the CLI: it waits with progress and prints the instance.
    let out = b.cli(&berth_e2e::small_create(&name, case.engine, &[]));
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
    assert_eq!(inst["engine"], case.engine);
    assert_eq!(inst["version"], case.version);
    assert_eq!(inst["memory"], "256MiB");
    assert_eq!(inst["cpus"], "0.5");
    let id = inst["id"].as_str().expect("id").to_owned();
    let port = inst["endpoint"]["port"].as_u64().expect("port");

    // Docker applies the limits, publishes the port, and gives the instance its network and volume.
    let container = b.member_container(&name)?;
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
            &container
        ])?,
        "268435456 500000000"
    );
    // The member publishes nothing: clients come through the endpoint container,
    // which publishes the read-write and read-only ports.
    assert!(docker(&["port", &container, case.client_port]).is_err());
    let endpoint = container.trim_end_matches("-0").to_owned() + "-endpoint";
    let ro_port = inst["endpoint"]["ro_port"].as_u64().expect("ro_port");
    for (listener, want) in [("6432/tcp", port), ("6433/tcp", ro_port)] {
        let published = docker(&["port", &endpoint, listener])?;
        assert_eq!(
            published.lines().next().and_then(|l| l.rsplit(':').next()),
            Some(want.to_string().as_str()),
            "{listener}"
        );
    }
    assert_eq!(b.docker_objects("volume", Some(&id)).len(), 1);
    assert_eq!(b.docker_objects("network", Some(&id)).len(), 1);

    // The superuser's password works over the published port; write something.
    let creds = b.cli_json(&["credentials", &name])?;
    assert_eq!(creds["user"], case.superuser);
    assert_eq!(creds["port"].as_u64(), Some(port));
    let uri = creds["uri"].as_str().expect("uri").to_owned();
    let mut db = b.db(&name).await?;
    db.exec("CREATE SCHEMA app").await?;
    db.exec("CREATE TABLE app.orders (id int primary key, note text)")
        .await?;
    db.exec("INSERT INTO app.orders VALUES (1, 'first')")
        .await?;
    drop(db);
    // A wrong password is refused by the engine itself.
    let bad = uri.replace(creds["password"].as_str().expect("pw"), "wrong");
    let refused = tokio::time::timeout(std::time::Duration::from_secs(10), Db::connect_once(&bad))
        .await?
        .map(drop);
    assert!(refused.is_err(), "a wrong password was accepted");

    // `berth connect` runs the engine's client with the credentials.
    let mut args = vec!["connect", name.as_str(), "--"];
    args.extend_from_slice(case.query_args);
    args.push("SELECT note FROM app.orders");
    let out = b.cli(&args);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "first",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The control plane dies hard; the database keeps serving meanwhile.
    b.kill9();
    let mut db = Db::connect(&uri).await?;
    assert_eq!(
        db.strings("SELECT note FROM app.orders WHERE id = 1")
            .await?,
        vec!["first"]
    );
    drop(db);
    b.restart().await?;
    let inst = b.cli_json(&["show", &name])?;
    assert_eq!(inst["id"], json!(id));
    assert_eq!(inst["status"], "available");

    // Stop: the engine shuts down cleanly (exit 0), data stays.
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
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );
    assert!(
        logs.contains(case.shutdown_line),
        "no clean shutdown in the log"
    );

    b.cli_json(&["start", &name])?;
    let mut db = b.db(&name).await?;
    assert_eq!(
        db.strings("SELECT count(*) FROM app.orders").await?,
        vec!["1"]
    );
    drop(db);

    let before = docker(&["inspect", "-f", "{{.State.StartedAt}}", &container])?;
    b.cli_json(&["restart", &name])?;
    assert_ne!(
        docker(&["inspect", "-f", "{{.State.StartedAt}}", &container])?,
        before,
        "restart did not restart"
    );
    let mut db = b.db(&name).await?;
    db.exec("INSERT INTO app.orders VALUES (2, 'second')")
        .await?;
    drop(db);

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
    // Whole reconcile passes that saw the deletion must not take the kept volume for
    // an orphan.
    b.reconcile_passes(2).await?;
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
async fn the_agent_restarts_a_crashed_postgres() -> anyhow::Result<()> {
    agent_restarts_crashed_engine(&POSTGRES).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_restarts_a_crashed_mariadb() -> anyhow::Result<()> {
    agent_restarts_crashed_engine(&MARIADB).await
}

async fn agent_restarts_crashed_engine(case: &Case) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("crash-{}", case.engine));
    b.create(&name, json!({"engine": case.engine})).await?;
    let mut db = b.db(&name).await?;
    db.exec("CREATE SCHEMA app").await?;
    db.exec("CREATE TABLE app.t (x int)").await?;
    db.exec("INSERT INTO app.t VALUES (42)").await?;
    drop(db);
    let container = b.member_container(&name)?;
    assert_eq!(
        b.get(&format!("/v1/instances/{name}")).await?["status"],
        "available"
    );
    let restarts = berth_e2e::engine_restarts(&container)?;
    // Kill the engine's server (not the agent, PID 1) from the host.
    let pid = berth_e2e::server_pid(&container, case.server_process)?;
    let kill = std::process::Command::new("kill")
        .args(["-9", &pid])
        .output()?;
    assert!(
        kill.status.success(),
        "kill -9 {pid} failed: {}",
        String::from_utf8_lossy(&kill.stderr)
    );
    // The agent notices and starts a new server process in the same container: a
    // kill that did nothing leaves the old PID in place and fails here.
    b.eventually(
        "a new engine server process",
        Duration::from_secs(60),
        || async {
            berth_e2e::server_pid(&container, case.server_process).is_ok_and(|now| now != pid)
        },
    )
    .await?;
    b.eventually(
        "the agent to report the restart",
        Duration::from_secs(10),
        || async { berth_e2e::engine_restarts(&container).is_ok_and(|n| n == restarts + 1) },
    )
    .await?;
    // The control plane sees it healthy, and committed data is there.
    b.eventually(
        "the instance to be available",
        Duration::from_secs(60),
        || async {
            b.get(&format!("/v1/instances/{name}"))
                .await
                .is_ok_and(|v| v["status"] == "available")
        },
    )
    .await?;
    let mut db = b.db(&name).await?;
    assert_eq!(db.strings("SELECT x FROM app.t").await?, vec!["42"]);
    assert_eq!(
        docker(&["inspect", "-f", "{{.RestartCount}}", &container])?,
        "0",
        "the container itself must not restart"
    );
    // No zombies left behind by the dead server's children: PID 1 reaps them.
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
