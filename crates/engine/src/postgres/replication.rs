//! PostgreSQL physical streaming replication: one slot per replica on the primary,
//! `pg_basebackup` for the clone, `primary_conninfo` and `standby.signal` on replicas,
//! `synchronous_standby_names = 'ANY K (…)'` for synchronous commits.

use super::{bin, conf::conf_line, local_client};
use crate::{write_file, CommandSpec, EngineError, Layout, Result};
use berth_model::agent::{Replication, REPLICATION_USER};
use berth_model::member::{replication_name, Role};
use berth_model::{EngineKind, EngineVersion};
use std::path::Path;

/// postgresql.conf lines for the member's role.
pub(super) fn conf_lines(repl: Option<&Replication>) -> Vec<String> {
    let mut lines = vec![
        "# Replication (from berth-replication.json).".to_owned(),
        "wal_level = replica".to_owned(),
        "max_wal_senders = 10".to_owned(),
        "max_replication_slots = 10".to_owned(),
        "hot_standby = on".to_owned(),
        "hot_standby_feedback = on".to_owned(),
        "wal_log_hints = on".to_owned(),
        // A replica that stops answering (frozen, cut off) is noticed in seconds, not
        // the default minute; a parameter group may set it otherwise.
        "wal_sender_timeout = '10s'".to_owned(),
        "wal_receiver_status_interval = '1s'".to_owned(),
    ];
    let Some(repl) = repl else {
        return lines;
    };
    match repl.role {
        Role::Primary => {
            if repl.sync > 0 && !repl.replicas.is_empty() {
                lines.push(conf_line(
                    "synchronous_standby_names",
                    &sync_names(repl.sync, &repl.replicas),
                ));
            }
        }
        Role::Replica => {
            if let Some((host, port)) = &repl.source {
                lines.push(conf_line("primary_conninfo", &conninfo(repl, host, *port)));
                lines.push(conf_line(
                    "primary_slot_name",
                    &replication_name(repl.member),
                ));
            }
        }
    }
    lines
}

/// `ANY K ("berth_m1", "berth_m2")`: a commit returns once any K of them have it.
pub(super) fn sync_names(k: u8, replicas: &[berth_model::MemberId]) -> String {
    let names: Vec<String> = replicas
        .iter()
        .map(|m| format!("\"{}\"", replication_name(*m)))
        .collect();
    format!("ANY {k} ({})", names.join(", "))
}

/// The replica's connection to its primary: TLS, the replication account, its own
/// application name (what `synchronous_standby_names` lists).
fn conninfo(repl: &Replication, host: &str, port: u16) -> String {
    format!(
        "host={host} port={port} user={REPLICATION_USER} password={} application_name={} sslmode=require connect_timeout=5",
        quote_conninfo(repl.password.expose()),
        replication_name(repl.member)
    )
}

/// A libpq connection-string value in single quotes (backslash and quote escaped).
fn quote_conninfo(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `standby.signal` says "start as a replica"; it is there exactly when the member is
/// one.
pub(super) fn write_role_files(data: &Path, repl: Option<&Replication>) -> Result<()> {
    // Berth owns where a replica streams from: an `ALTER SYSTEM` of it, or one a clone
    // or a rewind copied from another member, would override that and stop it.
    let auto = data.join("postgresql.auto.conf");
    if let Ok(text) = std::fs::read_to_string(&auto) {
        let kept = without_settings(&text, &["primary_conninfo", "primary_slot_name"]);
        if kept != text {
            write_file(&auto, &kept)?;
        }
    }
    let signal = data.join("standby.signal");
    let replica = repl.is_some_and(|r| r.role == Role::Replica);
    if replica {
        write_file(&signal, "")?;
    } else if signal.exists() {
        std::fs::remove_file(&signal).map_err(|source| EngineError::Io {
            path: signal.clone(),
            source,
        })?;
    }
    Ok(())
}

/// `text` (a configuration file) without the lines that set any of `names`.
fn without_settings(text: &str, names: &[&str]) -> String {
    text.lines()
        .filter(|line| {
            let key = line.split(['=', ' ', '\t']).next().unwrap_or("");
            !names.contains(&key)
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// `pg_basebackup` from the primary into the data directory, streaming the WAL it
/// needs, through the replica's own slot (made by the primary beforehand).
pub(super) fn clone_commands(
    version: &EngineVersion,
    data: &Path,
    repl: &Replication,
) -> Vec<CommandSpec> {
    let Some((host, port)) = &repl.source else {
        return vec![];
    };
    vec![
        CommandSpec {
            program: bin(version, "pg_basebackup"),
            args: vec![
                format!("--pgdata={}", data.display()),
                format!("--host={host}"),
                format!("--port={port}"),
                format!("--username={REPLICATION_USER}"),
                format!("--slot={}", replication_name(repl.member)),
                "--wal-method=stream".into(),
                "--checkpoint=fast".into(),
                "--no-password".into(),
            ],
            env: vec![
                ("PGPASSWORD".into(), repl.password.expose().to_owned()),
                ("PGSSLMODE".into(), "require".into()),
                ("PGAPPNAME".into(), replication_name(repl.member)),
                ("PGCONNECT_TIMEOUT".into(), "10".into()),
            ],
            stdin: None,
        },
        crate::sync_command(data),
    ]
}

/// A former primary becoming a replica: `pg_rewind` takes its data directory back
/// to where it left the new primary's history (it recovers a crashed directory
/// first), through the replication account (granted the file functions it reads).
/// When nothing diverged it changes nothing.
///
/// The recovery signal files go first: pg_rewind recovers a directory that was not
/// shut down cleanly in single-user mode, which refuses to run in standby mode
/// ("standby mode is not supported by single-user servers"). The configuration
/// rendered after the rewind puts them back.
pub(super) fn rejoin_commands(
    version: &EngineVersion,
    data: &Path,
    repl: &Replication,
) -> Vec<CommandSpec> {
    let Some((host, port)) = &repl.source else {
        return vec![];
    };
    vec![
        CommandSpec {
            program: "rm".into(),
            args: vec![
                "-f".into(),
                data.join("standby.signal").display().to_string(),
                data.join("recovery.signal").display().to_string(),
            ],
            env: vec![],
            stdin: None,
        },
        CommandSpec {
            program: bin(version, "pg_rewind"),
            args: vec![
                format!("--target-pgdata={}", data.display()),
                format!(
                    "--source-server=host={host} port={port} user={REPLICATION_USER} dbname=postgres \
                     sslmode=require connect_timeout=10 application_name=berth_rewind"
                ),
                "--progress".into(),
            ],
            env: vec![("PGPASSWORD".into(), repl.password.expose().to_owned())],
            stdin: None,
        },
        crate::sync_command(data),
    ]
}

fn refused(e: tokio_postgres::Error) -> EngineError {
    EngineError::Refused {
        engine: EngineKind::Postgres,
        reason: e.to_string(),
    }
}

/// SQL string literal (standard_conforming_strings is on).
fn literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Primary: the replication account with its password, exactly one slot per replica
/// (slots of removed replicas dropped once inactive), and the configuration reloaded.
/// Replica: the configuration reloaded (it follows `primary_conninfo`).
pub(super) async fn apply(layout: &Layout, repl: &Replication) -> Result<()> {
    let client = local_client(layout).await?;
    client
        .simple_query("SELECT pg_reload_conf()")
        .await
        .map_err(refused)?;
    if repl.role != Role::Primary {
        return Ok(());
    }
    // Berth's own writes never wait for synchronous replicas (none may be there yet).
    let sql = format!(
        "SET synchronous_commit = local;
         DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {user}) THEN
             CREATE ROLE {REPLICATION_USER} WITH REPLICATION LOGIN;
           END IF;
         END $$;
         ALTER ROLE {REPLICATION_USER} WITH REPLICATION LOGIN CONNECTION LIMIT 10 PASSWORD {password};
         GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO {REPLICATION_USER};
         GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO {REPLICATION_USER};
         GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO {REPLICATION_USER};
         GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO {REPLICATION_USER};",
        user = literal(REPLICATION_USER),
        password = literal(repl.password.expose()),
    );
    client.batch_execute(&sql).await.map_err(refused)?;
    let wanted: Vec<String> = repl.replicas.iter().map(|m| replication_name(*m)).collect();
    for slot in &wanted {
        client
            .execute(
                "SELECT pg_create_physical_replication_slot($1::text, true)
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1::text)",
                &[slot],
            )
            .await
            .map_err(refused)?;
    }
    client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
             WHERE slot_name LIKE 'berth\\_m%' AND NOT active AND NOT (slot_name = ANY($1))",
            &[&wanted],
        )
        .await
        .map_err(refused)?;
    Ok(())
}

/// A replica has applied all it received and is not receiving more: once its
/// primary shut down cleanly, that is everything the primary wrote.
pub(super) async fn caught_up(layout: &Layout) -> Result<bool> {
    let client = local_client(layout).await?;
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(),
                    pg_last_wal_receive_lsn() IS NOT NULL
                      AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(),
                    NOT EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')",
            &[],
        )
        .await
        .map_err(refused)?;
    let (in_recovery, replayed, not_streaming): (bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2));
    Ok(in_recovery && replayed && not_streaming)
}

/// A replica that cannot follow its primary's timeline: the newest timeline history
/// in `pg_wal` (the primary's, fetched by the WAL receiver) says the timeline this
/// replica streams ended at a point before what it already replayed — PostgreSQL's
/// own "new timeline forked off … before current recovery point", which it retries
/// for ever. Then only a rewind (or a clone) lets it follow.
pub(super) async fn diverged(layout: &Layout) -> Result<Option<String>> {
    let client = local_client(layout).await?;
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(),
                    (SELECT received_tli FROM pg_stat_wal_receiver),
                    pg_last_wal_replay_lsn()::text,
                    (SELECT name FROM pg_ls_waldir()
                       WHERE name ~ '^[0-9A-F]{8}\\.history$' ORDER BY name DESC LIMIT 1)",
            &[],
        )
        .await
        .map_err(refused)?;
    let (in_recovery, tli, replayed, history): (bool, Option<i32>, Option<String>, Option<String>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let (true, Some(tli), Some(replayed), Some(history)) = (in_recovery, tli, replayed, history)
    else {
        return Ok(None);
    };
    let text: String = client
        .query_one("SELECT pg_read_file('pg_wal/' || $1::text)", &[&history])
        .await
        .map_err(refused)?
        .get(0);
    let (Some(ended), Some(at)) = (
        timeline_end(&text, u32::try_from(tli).unwrap_or(0)),
        parse_lsn(&replayed),
    ) else {
        return Ok(None);
    };
    Ok((at > ended).then(|| {
        format!(
            "its timeline {tli} ended at {} in the primary's history ({history}), before what \
             it replayed ({replayed})",
            format_lsn(ended)
        )
    }))
}

/// Where timeline `tli` ended, from a timeline history file's lines
/// (`<parent tli>\t<switchpoint LSN>\t<reason>`).
fn timeline_end(history: &str, tli: u32) -> Option<u64> {
    history.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let parent: u32 = fields.next()?.parse().ok()?;
        let lsn = parse_lsn(fields.next()?)?;
        (parent == tli).then_some(lsn)
    })
}

/// `X/Y` (hexadecimal halves) as a byte position.
fn parse_lsn(lsn: &str) -> Option<u64> {
    let (hi, lo) = lsn.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// `pg_promote`: the replica leaves recovery on a new timeline and takes writes.
pub(super) async fn promote(layout: &Layout) -> Result<()> {
    let client = local_client(layout).await?;
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(refused)?
        .get(0);
    if !in_recovery {
        return Ok(());
    }
    let promoted: bool = client
        .query_one("SELECT pg_promote(true, 60)", &[])
        .await
        .map_err(refused)?
        .get(0);
    if promoted {
        // pg_rewind reads the source's timeline from its control file, which only
        // the end-of-recovery checkpoint updates, and that one is spread out: until
        // it ends, a former primary rewinding from here is told "no rewind
        // required" and then cannot follow. An immediate checkpoint now, in the
        // background (the promotion itself is done).
        // Its failure only makes a later rewind slower (the divergence watch heals it).
        tokio::spawn(async move {
            let _ = client.simple_query("CHECKPOINT").await;
        });
        Ok(())
    } else {
        Err(EngineError::Refused {
            engine: EngineKind::Postgres,
            reason: "the replica did not finish its promotion within 60 s".into(),
        })
    }
}

/// How many of the synchronous candidates stream; in `available` mode, commits are
/// released while too few do.
pub(super) async fn sync_status(layout: &Layout, repl: &Replication) -> Result<Option<String>> {
    let client = local_client(layout).await?;
    let names: Vec<String> = repl.replicas.iter().map(|m| replication_name(*m)).collect();
    let streaming: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name = ANY($1)",
            &[&names],
        )
        .await
        .map_err(refused)?
        .get(0);
    let current: String = client
        .query_one("SELECT current_setting('synchronous_standby_names')", &[])
        .await
        .map_err(refused)?
        .get(0);
    let wanted = i64::from(repl.sync);
    let short = streaming < wanted;
    let released = current.trim().is_empty();
    let available = repl.sync_mode == berth_model::member::SyncMode::Available;
    let change = match (short && available, released) {
        (true, false) => Some("ALTER SYSTEM SET synchronous_standby_names = ''"),
        (false, true) => Some("ALTER SYSTEM RESET synchronous_standby_names"),
        _ => None,
    };
    if let Some(sql) = change {
        client.simple_query(sql).await.map_err(refused)?;
        client
            .simple_query("SELECT pg_reload_conf()")
            .await
            .map_err(refused)?;
    }
    Ok(short.then(|| {
        format!(
            "{streaming} of the {wanted} synchronous replica(s) needed stream; {}",
            if available {
                "commits go on asynchronously until one is back"
            } else {
                "commits wait until one is back"
            }
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::member::SyncMode;
    use berth_model::{MemberId, Secret};

    fn repl(role: Role) -> Replication {
        Replication {
            member: MemberId(1),
            role,
            source: Some(("berth-db-12345678-0".into(), 5432)),
            password: Secret::new("s3cret"),
            replicas: vec![MemberId(1), MemberId(2)],
            replica_hosts: vec![],
            members: vec![],
            auto_failover: false,
            max_failover_lag: 0,
            sync: 1,
            sync_mode: SyncMode::Strict,
            server_name: None,
        }
    }

    #[test]
    fn a_primary_lists_its_synchronous_replicas() {
        let lines = conf_lines(Some(&repl(Role::Primary))).join("\n");
        assert!(
            lines.contains(r#"synchronous_standby_names = 'ANY 1 ("berth_m1", "berth_m2")'"#),
            "{lines}"
        );
        assert!(!lines.contains("primary_conninfo"));
        let lone = conf_lines(None).join("\n");
        assert!(!lone.contains("synchronous_standby_names") && lone.contains("wal_level"));
    }

    #[test]
    fn a_replica_follows_its_primary_through_its_slot() {
        let lines = conf_lines(Some(&repl(Role::Replica))).join("\n");
        assert!(lines.contains("primary_slot_name = 'berth_m1'"), "{lines}");
        assert!(lines.contains("application_name=berth_m1"), "{lines}");
        assert!(lines.contains("sslmode=require"), "{lines}");
        // The password is quoted for libpq, then for the configuration file.
        assert!(lines.contains("password=''s3cret''"), "{lines}");
        assert!(!lines.contains("synchronous_standby_names"));
    }

    #[test]
    fn the_clone_keeps_the_password_out_of_argv() {
        let v = EngineKind::Postgres.version("15").expect("version");
        let cmds = clone_commands(&v, Path::new("/d"), &repl(Role::Replica));
        assert!(cmds[0].program.ends_with("pg_basebackup"));
        assert!(cmds[0].args.iter().all(|a| !a.contains("s3cret")));
        assert!(cmds[0].args.contains(&"--slot=berth_m1".to_owned()));
        assert!(cmds[0].env.iter().any(|(k, _)| k == "PGPASSWORD"));
    }

    #[test]
    fn a_timeline_ends_where_the_history_says() {
        let history = "1\t0/3000158\tno recovery target specified\n\n\
                       2\t0/60D0FD8\tno recovery target specified\n";
        assert_eq!(timeline_end(history, 1), Some(0x3000158));
        assert_eq!(timeline_end(history, 2), Some(0x60D0FD8));
        assert_eq!(timeline_end(history, 3), None);
        assert_eq!(timeline_end("garbage", 1), None);
    }

    #[test]
    fn lsns_parse_and_print_back() {
        assert_eq!(parse_lsn("0/611B588"), Some(0x611B588));
        assert_eq!(parse_lsn("1A/0"), Some(0x1A << 32));
        assert_eq!(parse_lsn("nope"), None);
        for lsn in [0, 0x611B588, (0x1A << 32) | 0x10] {
            assert_eq!(parse_lsn(&format_lsn(lsn)), Some(lsn));
        }
    }

    #[test]
    fn replication_settings_leave_the_auto_conf() {
        let auto = "# Do not edit this file manually!\nprimary_conninfo = ''\nwork_mem = '8MB'\nprimary_slot_name='x'\n";
        let kept = without_settings(auto, &["primary_conninfo", "primary_slot_name"]);
        assert_eq!(
            kept,
            "# Do not edit this file manually!\nwork_mem = '8MB'\n"
        );
        assert_eq!(without_settings(&kept, &["primary_conninfo"]), kept);
    }
}
