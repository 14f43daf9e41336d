//! Automatic failover with the embedded lease store: a killed primary is replaced
//! by the replica that has every acknowledged commit, writes resume through the same
//! endpoint, and the old primary rejoins by itself; a frozen agent leaves no
//! writable engine behind; the control plane down alone changes nothing.

use anyhow::Context;
use berth_e2e::writer::Writer;
use berth_e2e::{all_there, docker, make_table, member_sql, unique, Berth, Db};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_killed_primary_fails_over_without_loss_and_rejoins() -> anyhow::Result<()> {
    killed_primary("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_a_killed_primary_fails_over_without_loss_and_rejoins() -> anyhow::Result<()> {
    killed_primary("mariadb").await
}

/// `docker kill` of the primary under a writer: writes resume through the same
/// endpoint, every acknowledged commit is there, the old primary rejoins as a
/// replica, and the events say so.
async fn killed_primary(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("fo-{}", &engine[..2]));
    b.create_with_cli(&name, engine, &["--members", "3", "--sync", "1"])?;
    let uri = b.rw_uri(&name).await?;
    let table = make_table(&uri, engine).await?;
    let writer = Writer::start(uri.clone(), table);
    writer.progress(30).await?;
    let old = b.primary_container(&name).await.context("a primary")?;
    let killed = Instant::now();
    docker(&["kill", &old])?;
    writer.progress(30).await?;
    eprintln!(
        "{engine}: writes resumed within {:?} of the kill",
        killed.elapsed()
    );
    b.eventually(
        "another member to be the primary",
        Duration::from_secs(60),
        || async { b.primary_container(&name).await.is_some_and(|p| p != old) },
    )
    .await?;
    b.eventually(
        "the old primary to rejoin as a ready replica",
        Duration::from_secs(180),
        || async {
            b.member_view(&name, &old)
                .await
                .is_some_and(|m| m["role"] == "replica" && m["state"] == "ready")
        },
    )
    .await?;
    // The promoted member is killed in turn. It never started as a primary, yet it
    // must come back through a rejoin (a rewind, or a GTID check) and not as a
    // replica that may hold writes the next primary lacks.
    let second = b
        .primary_container(&name)
        .await
        .context("a second primary")?;
    let second_name = b
        .member_view(&name, &second)
        .await
        .and_then(|m| m["name"].as_str().map(str::to_owned))
        .context("the second primary's name")?;
    docker(&["kill", &second])?;
    writer.progress(30).await?;
    b.eventually(
        "a third member to be the primary",
        Duration::from_secs(60),
        || async {
            b.primary_container(&name)
                .await
                .is_some_and(|p| p != second)
        },
    )
    .await?;
    b.eventually(
        "the promoted, then killed, member to rejoin as a ready replica",
        Duration::from_secs(180),
        || async {
            b.member_view(&name, &second)
                .await
                .is_some_and(|m| m["role"] == "replica" && m["state"] == "ready")
        },
    )
    .await?;
    writer.progress(10).await?;
    let (acked, gap) = writer.finish().await;
    eprintln!(
        "{engine}: {} commits acknowledged, longest pause {gap:?}",
        acked.len()
    );
    all_there(&uri, table, &acked).await?;
    // Every member, read over its own socket, ends with the primary's rows: both
    // former primaries follow the current one.
    let primary = b.primary_container(&name).await.context("a primary")?;
    let count = format!("SELECT count(*) FROM {table}");
    let want = member_sql(&primary, engine, &count)?;
    for m in b.get(&format!("/v1/instances/{name}")).await?["members"]
        .as_array()
        .context("members")?
    {
        let c = m["container"].as_str().context("container")?;
        b.eventually(
            &format!("{c} to hold the primary's {want} rows"),
            Duration::from_secs(60),
            || async { member_sql(c, engine, &count).is_ok_and(|n| n == want) },
        )
        .await?;
    }
    let events = b.get(&format!("/v1/events?instance={name}")).await?;
    let rejoins: Vec<&serde_json::Value> = events["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter(|e| e["kind"] == "member.rejoined" && e["details"]["member"] == second_name)
        .collect();
    assert!(
        rejoins.iter().any(|e| e["details"]["how"] != "followed"),
        "{second_name}, promoted and then killed, came back without a rejoin: {rejoins:?}"
    );
    let kinds = b.event_kinds(&name).await?;
    // Detection, fencing, promotion and rejoin are each an event.
    for kind in [
        "primary.failed",
        "member.fenced",
        "failover.done",
        "member.rejoined",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    // With the reason and the timings: from the old primary's last grant and from
    // the detection to the promotion.
    for done in events["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter(|e| e["kind"] == "failover.done")
    {
        let d = &done["details"];
        assert_eq!(d["reason"], "failover", "{done}");
        for timing in ["since_last_grant_ms", "since_detected_ms", "promote_ms"] {
            assert!(d[timing].is_u64(), "{timing} missing: {done}");
        }
        assert!(d["since_last_grant_ms"].as_u64() >= d["since_detected_ms"].as_u64());
    }
    Ok(())
}

/// With `berth serve` killed, the primary's lease cannot be renewed; its replicas
/// confirm the failsafe, so it keeps taking writes, and no failover happens when
/// the control plane is back.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_the_control_plane_down_alone_demotes_nobody() -> anyhow::Result<()> {
    control_plane_down_alone("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_the_control_plane_down_alone_demotes_nobody() -> anyhow::Result<()> {
    control_plane_down_alone("mariadb").await
}

async fn control_plane_down_alone(engine: &str) -> anyhow::Result<()> {
    let mut b = Berth::start().await?;
    let name = unique(&format!("fs-{}", &engine[..2]));
    b.create_with_cli(&name, engine, &["--members", "3", "--sync", "1"])?;
    let uri = b.rw_uri(&name).await?;
    let table = make_table(&uri, engine).await?;
    let before = b.primary_container(&name).await.context("a primary")?;
    b.kill9();
    let writer = Writer::start(uri.clone(), table);
    // Well past the lease's TTL: the failsafe holds it.
    keep_writing(&writer, Duration::from_secs(15)).await?;
    b.restart().await?;
    nobody_was_demoted(&b, &name, &before, writer, &uri, table).await
}

/// The writer keeps being acknowledged for `how_long` (bounded by its own 60 s wait).
async fn keep_writing(writer: &Writer, how_long: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < how_long {
        writer.progress(5).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// After an outage of the lease store (or `serve`) and its return: writes never
/// paused for 3 s, `before` is still the primary, no failover event, nothing lost.
async fn nobody_was_demoted(
    b: &Berth,
    name: &str,
    before: &str,
    writer: Writer,
    uri: &str,
    table: &str,
) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs(8)).await;
    writer.progress(10).await?;
    let (acked, gap) = writer.finish().await;
    assert!(gap < Duration::from_secs(3), "writes paused for {gap:?}");
    assert_eq!(b.primary_container(name).await.as_deref(), Some(before));
    let kinds = b.event_kinds(name).await?;
    assert!(
        !kinds.iter().any(|k| k.starts_with("failover.")),
        "{kinds:?}"
    );
    all_there(uri, table, &acked).await
}

/// `SIGSTOP` of the primary's agent only, with fencing through Docker turned off:
/// the watchdog stops the engine when the lease runs out, before another member is
/// promoted; the old member acknowledges no write afterwards, and rejoins once its
/// agent runs again.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_frozen_agent_leaves_no_writable_engine() -> anyhow::Result<()> {
    frozen_agent("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_a_frozen_agent_leaves_no_writable_engine() -> anyhow::Result<()> {
    frozen_agent("mariadb").await
}

async fn frozen_agent(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start_with(&["--docker-fence", "off"]).await?;
    let name = unique(&format!("fz-{}", &engine[..2]));
    b.create_with_cli(&name, engine, &["--members", "3", "--sync", "1"])?;
    let old = b.primary_container(&name).await.context("a primary")?;
    make_probe(&b.rw_uri(&name).await?, engine).await?;
    b.eventually(
        "the probe's write on the primary",
        Duration::from_secs(30),
        || async { takes_a_direct_write(&old, engine) },
    )
    .await?;
    let thaw = Thaw::freeze_agent(&old)?;
    let result = async {
        b.eventually(
            "another member to be the primary",
            Duration::from_secs(60),
            || async { b.primary_container(&name).await.is_some_and(|p| p != old) },
        )
        .await?;
        // The old engine takes no write: it is not running at all.
        let write = if engine == "mariadb" {
            "CREATE DATABASE stale"
        } else {
            "CREATE TABLE stale (n int)"
        };
        let answer = member_sql(&old, engine, write);
        anyhow::ensure!(
            answer.is_err(),
            "the frozen member still took a write: {answer:?}"
        );
        let uri = b.rw_uri(&name).await?;
        make_table(&uri, engine).await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    drop(thaw);
    result?;
    // Thawed, the agent reads what waited in its socket while it was frozen: lease
    // grants among them. None may make it writable again (they are counted from
    // when they were sent, and refused as too late), so for the next seconds, while
    // it learns it is a replica, every write sent to it straight is refused (an
    // application's write: MariaDB's `read_only` lets SUPER through).
    let thawed = std::time::Instant::now();
    let mut tries = 0;
    while thawed.elapsed() < Duration::from_secs(10) && tries < 60 {
        tries += 1;
        anyhow::ensure!(
            !takes_a_direct_write(&old, engine),
            "{:?} after the thaw the old primary took a write",
            thawed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    b.eventually(
        "the old primary to rejoin as a ready replica",
        Duration::from_secs(240),
        || async {
            b.member_view(&name, &old)
                .await
                .is_some_and(|m| m["role"] == "replica" && m["state"] == "ready")
        },
    )
    .await
}

/// A member's agent that starts again never starts its engine writable on its own
/// say-so: the primary's container restarted while `berth serve` (the lease store)
/// is down takes no write, however long; once the control plane is back and grants
/// the lease, it does.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_restarted_primary_waits_for_the_lease_before_it_writes() -> anyhow::Result<()> {
    let mut b = Berth::start().await?;
    let name = unique("st-po");
    b.create_with_cli(&name, "postgres", &["--members", "2", "--sync", "1"])?;
    let primary = b.primary_container(&name).await.context("a primary")?;
    make_probe(&b.rw_uri(&name).await?, "postgres").await?;
    b.eventually(
        "the probe's write on the primary",
        Duration::from_secs(30),
        || async { takes_a_direct_write(&primary, "postgres") },
    )
    .await?;
    b.kill9();
    docker(&["restart", "-t", "0", &primary])?;
    let restarted = std::time::Instant::now();
    let mut tries = 0;
    while restarted.elapsed() < Duration::from_secs(12) && tries < 60 {
        tries += 1;
        anyhow::ensure!(
            !takes_a_direct_write(&primary, "postgres"),
            "{:?} after its restart, with no lease, the primary took a write",
            restarted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    b.restart().await?;
    b.eventually(
        "the primary to take writes once the lease is granted",
        Duration::from_secs(60),
        || async { takes_a_direct_write(&primary, "postgres") },
    )
    .await?;
    assert_eq!(
        b.primary_container(&name).await.as_deref(),
        Some(primary.as_str())
    );
    Ok(())
}

/// An asynchronous instance whose replica stopped receiving: a manual failover to
/// it is refused without `--accept-data-loss`; when the primary is killed, the
/// replica is not promoted (it is further behind than `--max-failover-lag`), the
/// event says why, and the old primary is brought back in place; with
/// `--accept-data-loss` the user can still promote it.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_lagging_replica_is_not_promoted_without_consent() -> anyhow::Result<()> {
    lagging_replica("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_a_lagging_replica_is_not_promoted_without_consent() -> anyhow::Result<()> {
    lagging_replica("mariadb").await
}

/// Waits (up to 60 s) for the instance's `failover.declined` event, checking on
/// the way that `show` says why while it is so (a stopped old primary is brought
/// back in place a few seconds later); both must say the replica is too far behind.
async fn declined_and_said_why(b: &Berth, name: &str) -> anyhow::Result<()> {
    let shown_why = std::sync::Mutex::new(None::<String>);
    b.eventually(
        "a failover.declined event",
        Duration::from_secs(60),
        || async {
            if let Ok(v) = b.get(&format!("/v1/instances/{name}")).await {
                let detail = v["status_detail"].as_str().unwrap_or_default();
                if detail.contains("no failover") {
                    *shown_why.lock().unwrap_or_else(|p| p.into_inner()) = Some(detail.to_owned());
                }
            }
            b.event_kinds(name)
                .await
                .is_ok_and(|k| k.iter().any(|k| k == "failover.declined"))
        },
    )
    .await?;
    let mut shown_why = shown_why.into_inner().unwrap_or_else(|p| p.into_inner());
    if shown_why.is_none() {
        let v = b.get(&format!("/v1/instances/{name}")).await?;
        shown_why = v["status_detail"]
            .as_str()
            .filter(|d| d.contains("no failover"))
            .map(str::to_owned);
    }
    let shown_why = shown_why.context("`show` never said why no replica was promoted")?;
    anyhow::ensure!(shown_why.contains("bytes behind"), "{shown_why}");
    let events = b.get(&format!("/v1/events?instance={name}")).await?;
    let declined = events["events"]
        .as_array()
        .context("events")?
        .iter()
        .find(|e| e["kind"] == "failover.declined")
        .context("declined")?
        .clone();
    anyhow::ensure!(
        declined["message"]
            .as_str()
            .unwrap_or_default()
            .contains("bytes behind"),
        "{declined}"
    );
    Ok(())
}

/// A two-member instance whose replica stopped receiving, with ~5 MB written since
/// (past the 1 MB an asynchronous failover may lose): the primary's and the
/// replica's containers, `show`'s view and the table written.
struct Lagging {
    primary: String,
    replica: String,
    shown: serde_json::Value,
    table: &'static str,
}

async fn lag_the_replica(b: &Berth, name: &str, engine: &str) -> anyhow::Result<Lagging> {
    b.create_with_cli(name, engine, &["--members", "2"])?;
    let primary = b.primary_container(name).await.context("a primary")?;
    let shown = b.get(&format!("/v1/instances/{name}")).await?;
    let replica = shown["members"]
        .as_array()
        .context("members")?
        .iter()
        .find(|m| m["role"] == "replica")
        .and_then(|m| m["container"].as_str())
        .context("a replica")?
        .to_owned();
    let mut db = Db::connect(&b.rw_uri(name).await?).await?;
    let table = if engine == "mariadb" {
        member_sql(&replica, engine, "STOP SLAVE")?;
        db.exec("CREATE DATABASE app").await?;
        db.exec(
            "CREATE TABLE app.big AS SELECT seq AS g, repeat('x', 1000) AS pad FROM app.seq_1_to_5000",
        )
        .await?;
        "app.big"
    } else {
        member_sql(&replica, engine, "ALTER SYSTEM SET primary_conninfo = ''")?;
        member_sql(&replica, engine, "SELECT pg_reload_conf()")?;
        db.exec(
            "CREATE TABLE big AS SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 5000) g",
        )
        .await?;
        "big"
    };
    // The primary's position reaches the control plane with its next lease grant
    // (with etcd: the note beside its lease) within a second or two.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(Lagging {
        primary,
        replica,
        shown,
        table,
    })
}

/// Waits (up to 120 s) for the killed primary to be brought back in place.
async fn back_in_place(b: &Berth, name: &str, primary: &str) -> anyhow::Result<()> {
    b.eventually(
        "the old primary back in place",
        Duration::from_secs(120),
        || async {
            b.member_view(name, primary)
                .await
                .is_some_and(|m| m["role"] == "primary" && m["state"] == "ready")
        },
    )
    .await
}

async fn lagging_replica(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("lg-{}", &engine[..2]));
    let Lagging {
        primary,
        replica,
        shown,
        table,
    } = lag_the_replica(&b, &name, engine).await?;
    let uri = b.rw_uri(&name).await?;
    let member = shown["members"]
        .as_array()
        .context("members")?
        .iter()
        .find(|m| m["container"] == replica.as_str())
        .and_then(|m| m["name"].as_str())
        .context("the replica's member name")?
        .to_owned();
    // Asked for without naming it, and naming it with `--to`: refused both ways.
    for args in [
        vec!["failover", &name],
        vec!["failover", &name, "--to", &member],
    ] {
        let refused = b.cli(&args);
        let said = String::from_utf8_lossy(&refused.stderr).to_string();
        assert!(
            !refused.status.success(),
            "`berth {}` to a lagging replica was accepted",
            args.join(" ")
        );
        assert!(said.contains("--accept-data-loss"), "{said}");
    }

    docker(&["kill", &primary])?;
    declined_and_said_why(&b, &name).await?;
    back_in_place(&b, &name, &primary).await?;
    let mut db = Db::connect(&uri).await?;
    db.exec(&format!("INSERT INTO {table} VALUES (0, 'after')"))
        .await?;

    b.eventually("the repair to finish", Duration::from_secs(120), || async {
        b.get(&format!("/v1/instances/{name}"))
            .await
            .is_ok_and(|v| v["status"] == "available")
    })
    .await?;
    let forced = b.cli_json(&["failover", &name, "--accept-data-loss"])?;
    assert_eq!(forced["state"], "succeeded", "{forced}");
    assert_eq!(
        b.primary_container(&name).await.as_deref(),
        Some(replica.as_str())
    );
    Ok(())
}

/// An asynchronous instance failed over by hand to a replica that had stopped
/// receiving: the other replica received more than the new primary has, so it
/// cannot follow as it is. Its agent sees that (the new primary's timeline history
/// ends before what it replayed), rewinds it, and it follows the new primary.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_replica_ahead_of_the_new_primary_is_rewound_and_follows() -> anyhow::Result<()>
{
    replica_ahead("postgres").await
}

/// The same on MariaDB: the replica that was ahead finds (I/O error 1236) that the
/// new primary lacks transactions it holds, is cloned afresh, and its event says how
/// many were discarded.
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_a_replica_ahead_of_the_new_primary_is_cloned_afresh_and_says_what_it_lost(
) -> anyhow::Result<()> {
    replica_ahead("mariadb").await
}

async fn replica_ahead(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("ah-{}", &engine[..2]));
    b.create_with_cli(&name, engine, &["--members", "3"])?;
    let shown = b.get(&format!("/v1/instances/{name}")).await?;
    let replicas: Vec<(String, String)> = shown["members"]
        .as_array()
        .context("members")?
        .iter()
        .filter(|m| m["role"] == "replica")
        .filter_map(|m| {
            Some((
                m["name"].as_str()?.to_owned(),
                m["container"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let [(lagging_name, lagging), (ahead_name, ahead)] = replicas.as_slice() else {
        anyhow::bail!("two replicas expected: {replicas:?}");
    };
    let uri = b.rw_uri(&name).await?;
    let mut db = Db::connect(&uri).await?;
    let (big, after) = if engine == "mariadb" {
        member_sql(lagging, engine, "STOP SLAVE")?;
        db.exec("CREATE DATABASE app").await?;
        db.exec("CREATE TABLE app.big AS SELECT seq AS g FROM app.seq_1_to_5000")
            .await?;
        ("app.big", "app.after_failover")
    } else {
        member_sql(lagging, engine, "ALTER SYSTEM SET primary_conninfo = ''")?;
        member_sql(lagging, engine, "SELECT pg_reload_conf()")?;
        db.exec("CREATE TABLE big AS SELECT g FROM generate_series(1, 5000) g")
            .await?;
        ("big", "after_failover")
    };
    b.eventually(
        "the streaming replica to have the new table",
        Duration::from_secs(30),
        || async {
            member_sql(ahead, engine, &format!("SELECT count(*) FROM {big}"))
                .is_ok_and(|n| n == "5000")
        },
    )
    .await?;
    let forced = b.cli_json(&[
        "failover",
        &name,
        "--to",
        lagging_name,
        "--accept-data-loss",
    ])?;
    assert_eq!(forced["state"], "succeeded", "{forced}");
    assert_eq!(
        b.primary_container(&name).await.as_deref(),
        Some(lagging.as_str())
    );
    let mut db = Db::connect(&uri).await?;
    if engine == "mariadb" {
        // The new primary never had the database.
        db.exec("CREATE DATABASE app").await?;
    }
    db.exec(&format!("CREATE TABLE {after} AS SELECT 1 AS n"))
        .await?;
    b.eventually(
        "the replica that was ahead to follow the new primary",
        Duration::from_secs(120),
        || async {
            member_sql(ahead, engine, &format!("SELECT count(*) FROM {after}"))
                .is_ok_and(|n| n == "1")
        },
    )
    .await?;
    // Back on the new primary's history: what only it had received is gone.
    let gone = if engine == "mariadb" {
        "SELECT count(*) = 0 FROM information_schema.tables \
         WHERE table_schema = 'app' AND table_name = 'big'"
    } else {
        "SELECT to_regclass('big') IS NULL"
    };
    let true_ = if engine == "mariadb" { "1" } else { "t" };
    assert_eq!(member_sql(ahead, engine, gone)?, true_);
    // And the event log says so, once.
    let rejoins = || async {
        let events = b.get(&format!("/v1/events?instance={name}")).await?;
        Ok::<_, anyhow::Error>(
            events["events"]
                .as_array()
                .context("events")?
                .iter()
                .filter(|e| e["kind"] == "member.rejoined" && e["details"]["member"] == *ahead_name)
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    b.eventually(
        "a member.rejoined event for the replica that was ahead",
        Duration::from_secs(90),
        || async { rejoins().await.is_ok_and(|r| !r.is_empty()) },
    )
    .await?;
    // A reconcile pass later (every 10 s), still one.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let said = rejoins().await?;
    assert_eq!(said.len(), 1, "one rejoin, one event: {said:?}");
    assert_ne!(said[0]["details"]["how"], "followed", "{said:?}");
    if engine == "postgres" {
        // What it held beyond the new primary was undone by pg_rewind, not a clone.
        assert_eq!(said[0]["details"]["how"], "rewound", "{said:?}");
    }
    if engine == "mariadb" {
        // It says how many transactions were set aside.
        let message = said[0]["message"].as_str().unwrap_or_default();
        let count = message
            .split("lacks ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok());
        assert!(count.is_some_and(|n| n >= 2), "{message}");
    }
    Ok(())
}

/// With etcd as the lease store: `berth serve` killed, then the primary killed —
/// the members elect a new primary among themselves, writes resume through the same
/// endpoint, and nothing acknowledged is lost; once `serve` is back it shows the new
/// primary and the old one rejoins.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_with_etcd_failover_happens_while_serve_is_down() -> anyhow::Result<()> {
    etcd_failover_with_serve_down("postgres", "1").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_with_etcd_failover_happens_while_serve_is_down() -> anyhow::Result<()> {
    etcd_failover_with_serve_down("mariadb", "1").await
}

/// The same with asynchronous replicas: the members bound what the promotion may
/// lose by the position the primary kept beside its lease (about a second old), so
/// they fail over by themselves too. What a commit acknowledged before the kill may
/// lack is the last moment's: every commit acknowledged 2 s before it is there.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_with_etcd_an_asynchronous_instance_fails_over_while_serve_is_down(
) -> anyhow::Result<()> {
    etcd_failover_with_serve_down("postgres", "0").await
}

async fn etcd_failover_with_serve_down(engine: &str, sync: &str) -> anyhow::Result<()> {
    let etcd = berth_e2e::etcd::Etcd::start().await?;
    let mut b = Berth::start_with(&["--lease-store", &etcd.url]).await?;
    let name = unique(&format!("et{sync}-{}", &engine[..2]));
    b.create_with_cli(&name, engine, &["--members", "3", "--sync", sync])?;
    let uri = b.rw_uri(&name).await?;
    let table = make_table(&uri, engine).await?;
    let shown = b.get(&format!("/v1/instances/{name}")).await?;
    let containers: Vec<String> = shown["members"]
        .as_array()
        .context("members")?
        .iter()
        .filter_map(|m| m["container"].as_str().map(str::to_owned))
        .collect();
    let old = b.primary_container(&name).await.context("a primary")?;
    let writer = Writer::start(uri.clone(), table);
    writer.progress(20).await?;
    b.kill9();
    // Writes go on while serve is down (and the primary's note moves on).
    tokio::time::sleep(Duration::from_secs(2)).await;
    writer.progress(20).await?;
    let killed = Instant::now();
    docker(&["kill", &old])?;
    writer.progress(20).await?;
    eprintln!(
        "etcd (sync {sync}): writes resumed within {:?} of the kill, serve down",
        killed.elapsed()
    );
    let promoted: Vec<&String> = containers
        .iter()
        .filter(|c| **c != old)
        .filter(|c| {
            let (sql, writable) = if engine == "mariadb" {
                ("SELECT @@read_only", "0")
            } else {
                ("SELECT pg_is_in_recovery()", "f")
            };
            member_sql(c, engine, sql).is_ok_and(|s| s == writable)
        })
        .collect();
    assert_eq!(
        promoted.len(),
        1,
        "exactly one member takes writes: {promoted:?}"
    );
    b.restart().await?;
    b.eventually(
        "serve to show the new primary",
        Duration::from_secs(60),
        || async { b.primary_container(&name).await.as_deref() == Some(promoted[0].as_str()) },
    )
    .await?;
    b.eventually(
        "the old primary to rejoin as a ready replica",
        Duration::from_secs(180),
        || async {
            b.member_view(&name, &old)
                .await
                .is_some_and(|m| m["role"] == "replica" && m["state"] == "ready")
        },
    )
    .await?;
    let timed = writer.finish_timed().await;
    let must_have: Vec<u32> = if sync == "0" {
        let before = killed.checked_sub(Duration::from_secs(2)).unwrap_or(killed);
        timed
            .iter()
            .filter(|(_, at)| *at <= before)
            .map(|(n, _)| *n)
            .collect()
    } else {
        timed.iter().map(|(n, _)| *n).collect()
    };
    eprintln!(
        "etcd (sync {sync}): {} commits acknowledged, {} of them must be there",
        timed.len(),
        must_have.len()
    );
    all_there(&uri, table, &must_have).await?;
    // Back up, the control plane learnt from the elected member what happened while
    // it was down: detection, fencing by the lease's end, and the promotion, with
    // what it may lack (none when synchronous) and how long the lease was free.
    let events = b.get(&format!("/v1/events?instance={name}")).await?;
    let of = |kind: &str| -> Vec<serde_json::Value> {
        events["events"]
            .as_array()
            .map(|a| a.iter().filter(|e| e["kind"] == kind).cloned().collect())
            .unwrap_or_default()
    };
    anyhow::ensure!(
        !of("primary.failed").is_empty(),
        "no primary.failed: {events}"
    );
    let fenced = of("member.fenced");
    anyhow::ensure!(
        fenced
            .iter()
            .any(|e| e["details"]["how"] == "lease" || e["details"]["how"] == "stopped"),
        "no fencing event: {fenced:?}"
    );
    let done = of("failover.done");
    let done = done.last().context("a failover.done event")?;
    let d = &done["details"];
    anyhow::ensure!(d["since_lease_free_ms"].is_u64(), "{done}");
    if sync != "0" {
        anyhow::ensure!(
            d["may_lose_bytes"] == 0,
            "a synchronous failover may lose: {done}"
        );
    } else {
        anyhow::ensure!(d["may_lose_bytes"].is_u64(), "{done}");
    }
    Ok(())
}

/// With etcd as the lease store, an asynchronous instance whose only replica
/// stopped receiving: when the primary is killed the members do not elect it (it
/// is further behind than `--max-failover-lag`), and the control plane says why in
/// an event and in `show`, then brings the old primary back in place.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_with_etcd_a_lagging_replica_is_not_elected_and_says_why() -> anyhow::Result<()> {
    let etcd = berth_e2e::etcd::Etcd::start().await?;
    let b = Berth::start_with(&["--lease-store", &etcd.url]).await?;
    let name = unique("etlg-po");
    let lagging = lag_the_replica(&b, &name, "postgres").await?;
    docker(&["kill", &lagging.primary])?;
    declined_and_said_why(&b, &name).await?;
    back_in_place(&b, &name, &lagging.primary).await?;
    assert_ne!(
        b.primary_container(&name).await.as_deref(),
        Some(lagging.replica.as_str()),
        "the lagging replica was elected"
    );
    Ok(())
}

/// With etcd as the lease store: etcd stopped alone — the primary's replicas
/// confirm the failsafe, writes go on, and nobody is promoted.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_with_etcd_an_etcd_outage_demotes_nobody() -> anyhow::Result<()> {
    etcd_outage("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_with_etcd_an_etcd_outage_demotes_nobody() -> anyhow::Result<()> {
    etcd_outage("mariadb").await
}

async fn etcd_outage(engine: &str) -> anyhow::Result<()> {
    let mut etcd = berth_e2e::etcd::Etcd::start().await?;
    let b = Berth::start_with(&["--lease-store", &etcd.url]).await?;
    let name = unique(&format!("eo-{}", &engine[..2]));
    b.create_with_cli(&name, engine, &["--members", "3", "--sync", "1"])?;
    let uri = b.rw_uri(&name).await?;
    let table = make_table(&uri, engine).await?;
    let before = b.primary_container(&name).await.context("a primary")?;
    let writer = Writer::start(uri.clone(), table);
    writer.progress(10).await?;
    etcd.stop();
    keep_writing(&writer, Duration::from_secs(15)).await?;
    etcd.restart().await?;
    nobody_was_demoted(&b, &name, &before, writer, &uri, table).await
}

/// The primary's container cut off from its network (fencing through Docker off, so
/// only the lease fences it): probing every member directly, never do two members
/// take a write in the same round, the old primary takes none once another has; a
/// new primary is elected; after reconnecting, the old one rejoins as a replica.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_partitioned_primary_never_writes_beside_the_new_one() -> anyhow::Result<()> {
    partitioned_primary("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_a_partitioned_primary_never_writes_beside_the_new_one() -> anyhow::Result<()> {
    partitioned_primary("mariadb").await
}

/// The probe's account on MariaDB: it may write `app.probe` and turn off its own
/// binary logging (so a commit waits for no replica, as `synchronous_commit = local`
/// on PostgreSQL), but not write past `read_only` (no READ ONLY ADMIN): what an
/// application's account could do on that member.
const PROBE_PASSWORD: &str = "probe-Pw-1";

/// Whether `container`'s engine itself acknowledges a write now, bounded to 3 s.
fn takes_a_direct_write(container: &str, engine: &str) -> bool {
    if engine == "mariadb" {
        let sql = format!(
            "SET SESSION sql_log_bin = 0; INSERT INTO app.probe (member) VALUES ('{container}')"
        );
        return docker(&[
            "exec",
            container,
            "timeout",
            "3",
            "mariadb",
            "--socket=/run/berth/mysqld.sock",
            "-uprobe",
            &format!("-p{PROBE_PASSWORD}"),
            "-e",
            &sql,
        ])
        .is_ok();
    }
    let sql = format!(
        "SET synchronous_commit = local; INSERT INTO probe (member) VALUES ('{container}')"
    );
    member_sql(container, engine, &sql).is_ok()
}

/// The probe's table (and on MariaDB its account), made through the read-write
/// endpoint: every member has them once they replicate.
async fn make_probe(uri: &str, engine: &str) -> anyhow::Result<()> {
    let mut db = Db::connect(uri).await?;
    if engine == "mariadb" {
        db.exec("CREATE DATABASE IF NOT EXISTS app").await?;
        db.exec("CREATE TABLE app.probe (member varchar(200), at timestamp(6) DEFAULT now(6))")
            .await?;
        db.exec(&format!(
            "CREATE USER probe@localhost IDENTIFIED BY '{PROBE_PASSWORD}'"
        ))
        .await?;
        db.exec("GRANT INSERT ON app.* TO probe@localhost").await?;
        db.exec("GRANT BINLOG ADMIN ON *.* TO probe@localhost")
            .await?;
    } else {
        db.exec("CREATE TABLE probe (member text, at timestamptz DEFAULT now())")
            .await?;
    }
    Ok(())
}

async fn partitioned_primary(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start_with(&["--docker-fence", "off"]).await?;
    let name = unique(&format!("pt-{}", &engine[..2]));
    b.create_with_cli(&name, engine, &["--members", "3", "--sync", "1"])?;
    let uri = b.rw_uri(&name).await?;
    make_probe(&uri, engine).await?;
    let shown = b.get(&format!("/v1/instances/{name}")).await?;
    let containers: Vec<String> = shown["members"]
        .as_array()
        .context("members")?
        .iter()
        .filter_map(|m| m["container"].as_str().map(str::to_owned))
        .collect();
    let old = b.primary_container(&name).await.context("a primary")?;
    // The probe tells a writable engine from one that is not: before the cut, the
    // primary alone takes its write.
    b.eventually(
        "the probe's account on every member",
        Duration::from_secs(30),
        || async {
            containers
                .iter()
                .all(|c| takes_a_direct_write(c, engine) == (*c == old))
        },
    )
    .await?;
    let network = docker(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
        &old,
    ])?
    .trim()
    .to_owned();
    docker(&["network", "disconnect", &network, &old])?;
    // Reconnect whatever happens.
    struct Reconnect(String, String);
    impl Drop for Reconnect {
        fn drop(&mut self) {
            let _ = docker(&["network", "connect", &self.0, &self.1]);
        }
    }
    let reconnect = Reconnect(network.clone(), old.clone());
    let started = Instant::now();
    // Every write a member took: who, and when its probe began and ended. The probes
    // go one member after another and each may take a while (a `docker exec`), so
    // two writes in one round do not show two writable members at once; a write on
    // the old primary whose probe *began* after a write on another member *ended*
    // does (the other was writable by then and stays so).
    let mut took: Vec<(String, Instant, Instant)> = vec![];
    let mut promoted_at: Option<Instant> = None;
    let mut rounds = 0;
    // Each round writes directly on every member (commits that do not wait for a
    // replica: what a writable engine would acknowledge).
    while started.elapsed() < Duration::from_secs(60) && rounds < 300 {
        rounds += 1;
        for c in &containers {
            let began = Instant::now();
            if takes_a_direct_write(c, engine) {
                took.push((c.clone(), began, Instant::now()));
                if *c != old && promoted_at.is_none() {
                    promoted_at = Some(Instant::now());
                }
            }
        }
        if promoted_at.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
            break;
        }
    }
    let new_writers: std::collections::BTreeSet<&String> = took
        .iter()
        .map(|(c, ..)| c)
        .filter(|c| **c != old)
        .collect();
    anyhow::ensure!(
        new_writers.len() <= 1,
        "more than one other member took writes: {new_writers:?}"
    );
    let first_new = took
        .iter()
        .find(|(c, ..)| *c != old)
        .map(|(_, _, ended)| *ended)
        .context("no other member took writes within 60 s")?;
    let late_old = took
        .iter()
        .filter(|(c, began, _)| *c == old && *began > first_new)
        .count();
    anyhow::ensure!(
        late_old == 0,
        "the old primary took {late_old} write(s) whose probe began after another member's write was acknowledged"
    );
    eprintln!(
        "partition: {rounds} rounds, {} writes on the old primary, {} on {new_writers:?}",
        took.iter().filter(|(c, ..)| *c == old).count(),
        took.iter().filter(|(c, ..)| *c != old).count()
    );
    drop(reconnect);
    // Through the reconnect and the rejoin the probe goes on: one writable member at
    // a time still, and never the old primary, until it is a ready replica.
    let started = Instant::now();
    for round in 0.. {
        let took: Vec<&String> = containers
            .iter()
            .filter(|c| takes_a_direct_write(c, engine))
            .collect();
        anyhow::ensure!(
            !took.contains(&&old) && took.iter().all(|c| new_writers.contains(c)),
            "after the reconnect, round {round}: {took:?} took writes"
        );
        let rejoined = b
            .member_view(&name, &old)
            .await
            .is_some_and(|m| m["role"] == "replica" && m["state"] == "ready");
        if rejoined {
            eprintln!("partition: rejoined after {round} probed rounds");
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300) && round < 3000,
            "the old primary did not rejoin as a ready replica within 300 s"
        );
    }
    unreachable!("the loop returns or fails")
}

/// A resize begun on a primary whose agent froze does not hold the failover back:
/// the resize ends (pre-empted, saying so, if it was still running when a replica
/// was chosen; or failed by itself, the agent not answering) and a replica is
/// promoted within the bound.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_failover_takes_over_from_a_running_resize() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("pe-po");
    b.create_with_cli(&name, "postgres", &["--members", "3", "--sync", "1"])?;
    let old = b.primary_container(&name).await.context("a primary")?;
    let _thaw = Thaw::freeze_agent(&old)?;
    let accepted = b.cli_json(&["resize", &name, "--memory", "384MiB", "--no-wait"])?;
    let task = accepted["task"]["id"]
        .as_str()
        .or_else(|| accepted["id"].as_str())
        .with_context(|| format!("a task id in {accepted}"))?
        .to_owned();
    b.eventually(
        "another member to be the primary",
        Duration::from_secs(90),
        || async { b.primary_container(&name).await.is_some_and(|p| p != old) },
    )
    .await?;
    let t = b.get(&format!("/v1/tasks/{task}")).await?;
    assert_eq!(t["state"], "failed", "{t}");
    let error = t["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("pre-empted") || error.contains("agent does not answer"),
        "{t}"
    );
    eprintln!("the resize ended: {error}");
    Ok(())
}

/// A backup under way (taken on a replica; on the primary, its request would hang
/// with the agent) when the primary's agent freezes does not hold the failover back:
/// the task is pre-empted and ends saying so, the backup is not listed as good, and
/// a replica is promoted.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_failover_pre_empts_a_running_backup() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("pb-po");
    b.create_with_cli(&name, "postgres", &["--members", "3", "--sync", "1"])?;
    let old = b.primary_container(&name).await.context("a primary")?;
    // Enough data that the dump (on a replica) is still under way when the primary
    // fails.
    let mut db = b.db(&name).await?;
    berth_e2e::big_table(&mut db).await?;
    let (backup, task) = b.start_backup(&name)?;
    b.until_backup_runs(&backup).await?;
    let _thaw = Thaw::freeze_agent(&old)?;
    b.eventually(
        "another member to be the primary",
        Duration::from_secs(90),
        || async { b.primary_container(&name).await.is_some_and(|p| p != old) },
    )
    .await?;
    let t = b.get(&format!("/v1/tasks/{task}")).await?;
    assert_eq!(t["state"], "failed", "{t}");
    let error = t["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("pre-empted"),
        "the backup was pre-empted: {t}"
    );
    let v = b.get(&format!("/v1/backups/{backup}")).await?;
    assert_ne!(
        v["state"], "succeeded",
        "a pre-empted backup is not good: {v}"
    );
    Ok(())
}

/// Sends SIGCONT to a process frozen by a test, when the test ends (failed too).
struct Thaw(String);

impl Thaw {
    /// Freezes the agent (PID 1) of `container` with SIGSTOP; it is thawed when the
    /// guard drops, so the harness can remove the container whatever happened.
    fn freeze_agent(container: &str) -> anyhow::Result<Self> {
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", container])?
            .trim()
            .to_owned();
        let thaw = Thaw(pid.clone());
        let frozen = std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()?;
        anyhow::ensure!(frozen.success(), "kill -STOP {pid}");
        Ok(thaw)
    }
}

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .status();
    }
}
