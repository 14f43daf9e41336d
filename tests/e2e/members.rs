//! Members: a primary and replicas cloned from it and kept streaming, synchronous
//! commits, and scaling online. Real containers, real engines, both engines.

use anyhow::{bail, Context};
use berth_e2e::{docker, member_sql, unique, Berth};
use serde_json::Value;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn postgres_members_replicate_and_scale() -> anyhow::Result<()> {
    members_replicate_and_scale("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_members_replicate_and_scale() -> anyhow::Result<()> {
    members_replicate_and_scale("mariadb").await
}

fn members_of(v: &Value) -> Vec<Value> {
    v["members"].as_array().cloned().unwrap_or_default()
}

fn with_role(v: &Value, role: &str) -> Vec<Value> {
    members_of(v)
        .into_iter()
        .filter(|m| m["role"] == role)
        .collect()
}

/// Waits until `sql` on the member prints `want`.
async fn until_member_says(
    b: &Berth,
    container: &str,
    engine: &str,
    sql: &str,
    want: &str,
) -> anyhow::Result<()> {
    b.eventually(
        &format!("{container} to answer {want:?} to {sql:?}"),
        Duration::from_secs(60),
        || async { member_sql(container, engine, sql).unwrap_or_default() == want },
    )
    .await
}

async fn members_replicate_and_scale(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("mb-{}", &engine[..2]));
    b.create_with_cli(&name, engine, &["--members", "3", "--sync", "1"])?;

    let shown = b.cli_json(&["show", &name])?;
    assert_eq!(shown["sync"], 1, "{shown}");
    assert_eq!(with_role(&shown, "primary").len(), 1, "{shown}");
    let replicas = with_role(&shown, "replica");
    assert_eq!(replicas.len(), 2, "{shown}");
    for m in members_of(&shown) {
        assert_eq!(m["state"], "ready", "{m}");
        let container = m["container"].as_str().context("container")?;
        assert!(docker(&["inspect", container]).is_ok(), "{container}");
    }

    // A write through the endpoint reaches every replica, which is read-only.
    let (table, in_recovery) = if engine == "mariadb" {
        ("app.t", "SELECT @@read_only")
    } else {
        ("t", "SELECT pg_is_in_recovery()")
    };
    let mut db = b.db(&name).await?;
    if engine == "mariadb" {
        db.exec("CREATE DATABASE app").await?;
    }
    db.exec(&format!("CREATE TABLE {table} (n INT PRIMARY KEY)"))
        .await?;
    db.exec(&format!("INSERT INTO {table} VALUES (1), (2), (3)"))
        .await?;
    let count = format!("SELECT count(*) FROM {table}");
    let replica_yes = if engine == "mariadb" { "1" } else { "t" };
    for r in &replicas {
        let c = r["container"].as_str().context("container")?;
        until_member_says(&b, c, engine, &count, "3").await?;
        assert_eq!(member_sql(c, engine, in_recovery)?, replica_yes, "{c}");
    }
    // The read-only endpoint reaches a replica, with the rows.
    let creds = b.cli_json(&["credentials", &name])?;
    let mut ro = berth_e2e::Db::connect(creds["ro_uri"].as_str().context("ro_uri")?).await?;
    assert_eq!(ro.strings(in_recovery).await?, vec![replica_yes.to_owned()]);
    assert_eq!(ro.strings(&count).await?, vec!["3".to_owned()]);
    let primary = with_role(&shown, "primary")[0]["container"]
        .as_str()
        .context("primary")?
        .to_owned();
    let replica_no = if engine == "mariadb" { "0" } else { "f" };
    assert_eq!(member_sql(&primary, engine, in_recovery)?, replica_no);

    // The primary names its synchronous replicas to the engine.
    if engine == "postgres" {
        let names = member_sql(&primary, engine, "SHOW synchronous_standby_names")?;
        assert!(names.starts_with("ANY 1 ("), "{names}");
        let streaming = member_sql(
            &primary,
            engine,
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
        )?;
        assert_eq!(streaming, "2");
    } else {
        let status = member_sql(&primary, engine, "SELECT @@rpl_semi_sync_master_enabled")?;
        assert_eq!(status, "1");
    }

    // Scale down: the highest replica goes, the primary stays, the endpoint too.
    let port = shown["endpoint"]["port"].clone();
    let down = b.cli_json(&["scale", &name, "--members", "2", "--purge"])?;
    assert_eq!(down["state"], "succeeded", "{down}");
    let shown = b.cli_json(&["show", &name])?;
    assert_eq!(members_of(&shown).len(), 2, "{shown}");
    assert_eq!(shown["endpoint"]["port"], port);
    let gone = replicas
        .iter()
        .map(|r| r["container"].as_str().unwrap_or_default().to_owned())
        .max()
        .context("a replica")?;
    assert!(docker(&["inspect", &gone]).is_err(), "{gone} still exists");
    if engine == "postgres" {
        let slots = member_sql(
            &primary,
            engine,
            "SELECT count(*) FROM pg_replication_slots",
        )?;
        assert_eq!(slots, "1", "the removed replica's slot is dropped");
    }

    // Writes go on; scale up again: the new replica is cloned with everything.
    db.exec(&format!("INSERT INTO {table} VALUES (4)")).await?;
    let up = b.cli_json(&["scale", &name, "--members", "3"])?;
    assert_eq!(up["state"], "succeeded", "{up}");
    let shown = b.cli_json(&["show", &name])?;
    assert_eq!(with_role(&shown, "replica").len(), 2, "{shown}");
    for r in with_role(&shown, "replica") {
        let c = r["container"].as_str().context("container")?;
        until_member_says(&b, c, engine, &count, "4").await?;
    }

    // Sync beyond the replicas, or beyond what MariaDB can wait for, is refused
    // with the reason, and changes nothing.
    let out = b.cli(&["scale", &name, "--sync", "3"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--sync 3 needs at least 4 members"), "{err}");
    if engine == "mariadb" {
        let out = b.cli(&["scale", &name, "--sync", "2"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("one replica only"), "{err}");
    }

    // The events say which members came and went.
    let events = b.get(&format!("/v1/events?instance={name}")).await?;
    let kinds: Vec<String> = events["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_owned))
        .collect();
    let added = kinds.iter().filter(|k| *k == "member.added").count();
    let removed = kinds.iter().filter(|k| *k == "member.removed").count();
    if added != 3 || removed != 1 {
        bail!("expected 3 member.added and 1 member.removed events, got {kinds:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_strict_sync_waits_for_a_replica() -> anyhow::Result<()> {
    strict_sync_waits_for_a_replica("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_strict_sync_waits_for_a_replica() -> anyhow::Result<()> {
    strict_sync_waits_for_a_replica("mariadb").await
}

/// With `--sync 1` (strict, the default) a commit does not return while no replica
/// can confirm it, and returns once one can: it never silently becomes asynchronous.
/// The replica is frozen (`docker pause`), so nothing repairs it behind the test.
async fn strict_sync_waits_for_a_replica(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("ss-{}", &engine[..2]));
    b.create_with_cli(&name, engine, &["--members", "2", "--sync", "1"])?;
    let shown = b.cli_json(&["show", &name])?;
    let replica = with_role(&shown, "replica")[0]["container"]
        .as_str()
        .context("replica")?
        .to_owned();
    let table = if engine == "mariadb" { "app.t" } else { "t" };
    let mut db = b.db(&name).await?;
    if engine == "mariadb" {
        db.exec("CREATE DATABASE app").await?;
    }
    db.exec(&format!("CREATE TABLE {table} (n INT PRIMARY KEY)"))
        .await?;

    docker(&["pause", &replica])?;
    let insert = format!("INSERT INTO {table} VALUES (1)");
    let pending = tokio::spawn(async move { db.exec(&insert).await.map(|_| db) });
    tokio::time::sleep(Duration::from_secs(4)).await;
    let waited = !pending.is_finished();
    docker(&["unpause", &replica])?;
    assert!(waited, "the commit returned with no replica to confirm it");
    let mut db = tokio::time::timeout(Duration::from_secs(60), pending)
        .await
        .context("the commit did not return once the replica was back")???;
    let rows = db.strings(&format!("SELECT count(*) FROM {table}")).await?;
    assert_eq!(rows, vec!["1".to_owned()]);
    until_member_says(
        &b,
        &replica,
        engine,
        &format!("SELECT count(*) FROM {table}"),
        "1",
    )
    .await
}

/// A replica removed with `docker rm -f` comes back by itself (reconcile repairs the
/// instance), as a replica of the current primary, with what was written meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_removed_replica_comes_back_as_a_replica() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("rr-po");
    b.create_with_cli(&name, "postgres", &["--members", "2"])?;
    let shown = b.cli_json(&["show", &name])?;
    let replica = with_role(&shown, "replica")[0]["container"]
        .as_str()
        .context("replica")?
        .to_owned();
    docker(&["rm", "-f", &replica])?;
    let mut db = b.db(&name).await?;
    db.exec("CREATE TABLE t (n INT); INSERT INTO t VALUES (7)")
        .await?;
    until_member_says(&b, &replica, "postgres", "SELECT sum(n) FROM t", "7").await?;
    assert_eq!(
        member_sql(&replica, "postgres", "SELECT pg_is_in_recovery()")?,
        "t"
    );
    b.eventually(
        "the instance to be available again",
        Duration::from_secs(60),
        || async {
            b.get(&format!("/v1/instances/{name}"))
                .await
                .map(|v| v["status"] == "available")
                .unwrap_or(false)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_switchover_twice() -> anyhow::Result<()> {
    switchover_twice("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_switchover_twice() -> anyhow::Result<()> {
    switchover_twice("mariadb").await
}

fn primary_container(v: &Value) -> anyhow::Result<String> {
    Ok(with_role(v, "primary")
        .first()
        .and_then(|m| m["container"].as_str())
        .context("a primary")?
        .to_owned())
}

/// Two switchovers: each time the target becomes a writable primary with every row,
/// the old primary follows it in the same container (no new clone), and a
/// switchover to a member that is not there is refused with the reason.
async fn switchover_twice(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("so-{}", &engine[..2]));
    b.create_with_cli(&name, engine, &["--members", "3", "--sync", "1"])?;
    let (table, read_only) = if engine == "mariadb" {
        ("app.t", "SELECT @@read_only")
    } else {
        ("t", "SELECT pg_is_in_recovery()")
    };
    let (yes, no) = if engine == "mariadb" {
        ("1", "0")
    } else {
        ("t", "f")
    };
    let first = primary_container(&b.cli_json(&["show", &name])?)?;
    if engine == "mariadb" {
        member_sql(&first, engine, "CREATE DATABASE app")?;
    }
    member_sql(
        &first,
        engine,
        &format!("CREATE TABLE {table} (n INT PRIMARY KEY)"),
    )?;
    member_sql(&first, engine, &format!("INSERT INTO {table} VALUES (1)"))?;

    let out = b.cli(&["switchover", &name, "--to", &format!("{name}-9")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("has no member"),
        "{err}"
    );

    let mut rows = 1;
    let mut previous = first;
    for to in [Some(format!("{name}-1")), None] {
        let old_id = docker(&["inspect", "-f", "{{.Id}}", &previous])?;
        let mut args = vec!["switchover", name.as_str()];
        if let Some(to) = &to {
            args.extend(["--to", to.as_str()]);
        }
        let done = b.cli_json(&args)?;
        assert_eq!(done["state"], "succeeded", "{done}");
        let shown = b.cli_json(&["show", &name])?;
        let primary = primary_container(&shown)?;
        assert_ne!(primary, previous, "{shown}");
        if let Some(to) = &to {
            let want = with_role(&shown, "primary")[0]["name"].clone();
            assert_eq!(&want, to.as_str(), "{shown}");
        }
        for m in members_of(&shown) {
            assert_eq!(m["state"], "ready", "{m}");
        }
        // The new primary takes writes, through the same read-write endpoint; the
        // old one follows it, same container.
        assert_eq!(member_sql(&primary, engine, read_only)?, no);
        rows += 1;
        let mut db = b.db(&name).await?;
        db.exec(&format!("INSERT INTO {table} VALUES ({rows})"))
            .await?;
        assert_eq!(docker(&["inspect", "-f", "{{.Id}}", &previous])?, old_id);
        let count = format!("SELECT count(*) FROM {table}");
        for m in with_role(&shown, "replica") {
            let c = m["container"].as_str().context("container")?;
            until_member_says(&b, c, engine, &count, &rows.to_string()).await?;
            assert_eq!(member_sql(c, engine, read_only)?, yes, "{c}");
        }
        previous = primary;
    }
    let events = b.get(&format!("/v1/events?instance={name}")).await?;
    let changes = events["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter(|e| e["kind"] == "member.role-changed")
        .count();
    assert_eq!(changes, 2, "{events}");
    Ok(())
}

/// `berth restart` of several members is rolling: the replicas restart first, then
/// a switchover, then the old primary restarts as a replica; every row stays and
/// every member is ready at the end.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_of_members_is_rolling() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("rl-po");
    b.create_with_cli(&name, "postgres", &["--members", "2", "--sync", "1"])?;
    let before = primary_container(&b.cli_json(&["show", &name])?)?;
    member_sql(
        &before,
        "postgres",
        "CREATE TABLE t (n INT); INSERT INTO t VALUES (1)",
    )?;
    let done = b.cli_json(&["restart", &name])?;
    assert_eq!(done["state"], "succeeded", "{done}");
    let steps: Vec<&str> = done["steps"]
        .as_array()
        .context("steps")?
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    // Planned from the members: a step per replica, each naming it; the switch
    // names the old primary and the target, and records what it decided.
    assert_eq!(steps.first(), Some(&"restart_replica"), "{steps:?}");
    let step = |n: &str| {
        done["steps"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == n))
            .cloned()
            .unwrap_or_default()
    };
    let number = |container: &str| container.rsplit('-').next().map(str::to_owned);
    let restart = step("restart_replica");
    let hand_over = step("hand_over_writes");
    let promote = step("promote_target");
    assert_eq!(
        hand_over["member"].to_string(),
        number(&before).context("member number")?,
        "{hand_over}"
    );
    assert_eq!(restart["member"], promote["member"], "{done}");
    assert_eq!(
        hand_over["decided"]["target"],
        format!("{name}-{}", promote["member"]),
        "{hand_over}"
    );
    assert!(hand_over["decided"]["caught_up_ms"].is_u64(), "{hand_over}");
    assert!(promote["decided"]["term"].as_u64() > Some(0), "{promote}");
    let shown = b.cli_json(&["show", &name])?;
    let after = primary_container(&shown)?;
    assert_eq!(
        number(&after),
        Some(promote["member"].to_string()),
        "the member the task named is the primary"
    );
    assert_ne!(
        after, before,
        "the primary moved once, to a restarted replica"
    );
    for m in members_of(&shown) {
        assert_eq!(m["state"], "ready", "{m}");
    }
    member_sql(&after, "postgres", "INSERT INTO t VALUES (2)")?;
    until_member_says(&b, &before, "postgres", "SELECT sum(n) FROM t", "3").await
}

/// An instance with members stopped and started again, and restarted with no
/// ready replica to hand over to (every member stopped, then started), comes back
/// whole: the primary is granted its lease again, takes writes, and the replica
/// follows with every row.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_instance_with_members_starts_again_whole() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("ss-po");
    b.create_with_cli(&name, "postgres", &["--members", "2", "--sync", "1"])?;
    let mut db = b.db(&name).await?;
    db.exec("CREATE TABLE t (n INT); INSERT INTO t VALUES (1)")
        .await?;
    drop(db);
    for verb in ["stop", "start"] {
        let done = b.cli_json(&[verb, &name])?;
        assert_eq!(done["state"], "succeeded", "{verb}: {done}");
    }
    let mut db = b.db(&name).await?;
    db.exec("INSERT INTO t VALUES (2)").await?;
    drop(db);
    let shown = b.cli_json(&["show", &name])?;
    let replica = with_role(&shown, "replica")[0]["container"]
        .as_str()
        .context("a replica")?
        .to_owned();
    until_member_says(&b, &replica, "postgres", "SELECT sum(n) FROM t", "3").await?;
    // With no ready replica to hand over to, a restart stops every member and
    // starts them again.
    member_sql(
        &replica,
        "postgres",
        "ALTER SYSTEM SET primary_conninfo = ''",
    )?;
    member_sql(&replica, "postgres", "SELECT pg_reload_conf()")?;
    b.eventually("the replica not ready", Duration::from_secs(30), || async {
        b.member_view(&name, &replica)
            .await
            .is_some_and(|m| m["state"] != "ready")
    })
    .await?;
    let done = b.cli_json(&["restart", &name])?;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        done["steps"][0]["name"], "ensure_stopped",
        "not rolling: {done}"
    );
    let mut db = b.db(&name).await?;
    db.exec("INSERT INTO t VALUES (4)").await?;
    drop(db);
    until_member_says(&b, &replica, "postgres", "SELECT sum(n) FROM t", "7").await
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_available_sync_goes_on_and_says_so() -> anyhow::Result<()> {
    available_sync_goes_on_and_says_so("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_available_sync_goes_on_and_says_so() -> anyhow::Result<()> {
    available_sync_goes_on_and_says_so("mariadb").await
}

fn event_kinds(v: &Value) -> Vec<String> {
    v["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// With `--sync-mode available`, a commit goes on while the synchronous replica is
/// frozen; `show` and an event say synchronous replication is degraded, and another
/// event says so when it is restored.
async fn available_sync_goes_on_and_says_so(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("av-{}", &engine[..2]));
    b.create_with_cli(
        &name,
        engine,
        &["--members", "2", "--sync", "1", "--sync-mode", "available"],
    )?;
    let shown = b.cli_json(&["show", &name])?;
    assert_eq!(shown["sync_mode"], "available");
    let replica = with_role(&shown, "replica")[0]["container"]
        .as_str()
        .context("replica")?
        .to_owned();
    let table = if engine == "mariadb" { "app.t" } else { "t" };
    let mut db = b.db(&name).await?;
    if engine == "mariadb" {
        db.exec("CREATE DATABASE app").await?;
    }
    db.exec(&format!("CREATE TABLE {table} (n INT PRIMARY KEY)"))
        .await?;
    docker(&["pause", &replica])?;
    let insert = format!("INSERT INTO {table} VALUES (1)");
    let committed = tokio::time::timeout(Duration::from_secs(45), db.exec(&insert)).await;
    let degraded = b
        .eventually(
            "show to say sync is degraded",
            Duration::from_secs(30),
            || async {
                b.get(&format!("/v1/instances/{name}"))
                    .await
                    .map(|v| v["sync_degraded"].is_string())
                    .unwrap_or(false)
            },
        )
        .await;
    docker(&["unpause", &replica])?;
    committed.context("the commit waited although sync mode is available")??;
    degraded?;
    b.eventually("a sync.restored event", Duration::from_secs(60), || async {
        b.get(&format!("/v1/events?instance={name}"))
            .await
            .map(|v| {
                let kinds = event_kinds(&v);
                kinds.iter().any(|k| k == "sync.degraded")
                    && kinds.iter().any(|k| k == "sync.restored")
            })
            .unwrap_or(false)
    })
    .await?;
    // Restored is what show says too, once reconcile has looked again.
    b.eventually(
        "show to say sync is restored",
        Duration::from_secs(30),
        || async {
            b.get(&format!("/v1/instances/{name}"))
                .await
                .map(|v| v.get("sync_degraded").is_none())
                .unwrap_or(false)
        },
    )
    .await
}
