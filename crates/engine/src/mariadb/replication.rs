//! MariaDB GTID replication: binary logs on every member, `mariabackup` streamed
//! from the primary's agent for the clone, `CHANGE MASTER … MASTER_USE_GTID =
//! slave_pos` and `read_only` on replicas, semi-synchronous replication with the
//! `AFTER_SYNC` wait point for synchronous commits.

use super::{local_conn, socket};
use crate::{CommandSpec, EngineError, Layout, Result};
use berth_model::agent::{Replication, REPLICATION_USER};
use berth_model::member::{Role, SyncMode};
use berth_model::EngineKind;
use mysql_async::prelude::Queryable;
use std::path::Path;

/// How long a commit waits for the semi-synchronous replica before MariaDB goes on
/// asynchronously. Strict: as long as MariaDB allows (about 49 days), so commits wait
/// rather than silently lose their second copy. Available: one second.
pub(super) fn semi_sync_timeout_ms(mode: SyncMode) -> u64 {
    match mode {
        SyncMode::Strict => u64::from(u32::MAX),
        SyncMode::Available => 1000,
    }
}

/// berth.cnf lines for the member's role. Binary logs with GTIDs are on for every
/// member, so any of them can become the primary.
pub(super) fn cnf_lines(repl: Option<&Replication>) -> Vec<String> {
    let server_id = repl.map_or(1, |r| u32::from(r.member.0) + 1);
    let mut lines = vec![
        format!("server_id = {server_id}"),
        "log_bin = mariadb-bin".to_owned(),
        "log_bin_index = mariadb-bin.index".to_owned(),
        "relay_log = mariadb-relay".to_owned(),
        "binlog_format = ROW".to_owned(),
        "log_slave_updates = ON".to_owned(),
        "gtid_strict_mode = ON".to_owned(),
        // Replication starts only once the agent pointed it at the current primary.
        "skip_slave_start = ON".to_owned(),
    ];
    let Some(repl) = repl else {
        return lines;
    };
    if repl.role == Role::Replica {
        lines.push("read_only = ON".to_owned());
    }
    if repl.sync > 0 {
        lines.extend([
            "rpl_semi_sync_master_enabled = ON".to_owned(),
            "rpl_semi_sync_slave_enabled = ON".to_owned(),
            "rpl_semi_sync_master_wait_point = AFTER_SYNC".to_owned(),
            "rpl_semi_sync_master_wait_no_slave = ON".to_owned(),
            format!(
                "rpl_semi_sync_master_timeout = {}",
                semi_sync_timeout_ms(repl.sync_mode)
            ),
        ]);
    }
    lines
}

/// The primary's agent streams this: a physical backup of the running server.
pub(super) fn source_command(layout: &Layout) -> CommandSpec {
    CommandSpec {
        program: "mariabackup".into(),
        args: vec![
            "--backup".into(),
            "--stream=xbstream".into(),
            format!("--socket={}", socket(layout).display()),
            "--user=root".into(),
            format!("--target-dir={}", layout.run_dir.join("clone").display()),
        ],
        env: vec![],
        stdin: None,
    }
}

/// The replica's side: unpack the stream into the data directory, then make it
/// consistent.
pub(super) fn receive(data: &Path) -> (CommandSpec, Vec<CommandSpec>) {
    (
        CommandSpec {
            program: "mbstream".into(),
            args: vec!["-x".into(), "-C".into(), data.display().to_string()],
            env: vec![],
            stdin: None,
        },
        vec![
            CommandSpec {
                program: "mariabackup".into(),
                args: vec![
                    "--prepare".into(),
                    format!("--target-dir={}", data.display()),
                ],
                env: vec![],
                stdin: None,
            },
            crate::sync_command(data),
        ],
    )
}

fn refused(e: mysql_async::Error) -> EngineError {
    EngineError::Refused {
        engine: EngineKind::Mariadb,
        reason: e.to_string(),
    }
}

/// A MariaDB string literal.
fn literal(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The GTID position a clone was taken at, from mariabackup's `xtrabackup_binlog_info`
/// (`<file> <position> <gtid list>`).
pub(super) fn clone_gtid(info: &str) -> Option<String> {
    let gtid = info.split_whitespace().nth(2)?;
    gtid.chars()
        .all(|c| c.is_ascii_digit() || c == '-' || c == ',')
        .then(|| gtid.to_owned())
}

/// Primary: the replication account (not written to the binary log: replicas get it
/// in their clone, and Berth's writes never wait for a replica) and semi-sync live.
/// Replica: `read_only`, then following the primary by GTID from where its clone or
/// its relay log left off.
pub(super) async fn apply(layout: &Layout, data: &Path, repl: &Replication) -> Result<()> {
    let mut conn = local_conn(layout).await?;
    let sync = repl.sync > 0;
    let on = |b: bool| if b { "ON" } else { "OFF" };
    let mut sql = vec![format!(
        "SET GLOBAL rpl_semi_sync_master_enabled = {}, rpl_semi_sync_slave_enabled = {}, \
         rpl_semi_sync_master_wait_point = AFTER_SYNC, rpl_semi_sync_master_wait_no_slave = ON, \
         rpl_semi_sync_master_timeout = {}",
        on(sync && repl.role == Role::Primary),
        on(sync),
        semi_sync_timeout_ms(repl.sync_mode)
    )];
    match repl.role {
        Role::Primary => {
            sql.extend([
                "SET SESSION sql_log_bin = 0".to_owned(),
                format!(
                    "CREATE USER IF NOT EXISTS {REPLICATION_USER}@'%' IDENTIFIED BY {} REQUIRE SSL",
                    literal(repl.password.expose())
                ),
                format!(
                    "ALTER USER {REPLICATION_USER}@'%' IDENTIFIED BY {} REQUIRE SSL WITH MAX_USER_CONNECTIONS 10",
                    literal(repl.password.expose())
                ),
                format!("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO {REPLICATION_USER}@'%'"),
                "SET GLOBAL read_only = OFF".to_owned(),
            ]);
            for q in sql {
                conn.query_drop(q).await.map_err(refused)?;
            }
        }
        Role::Replica => {
            for q in sql {
                conn.query_drop(q).await.map_err(refused)?;
            }
            conn.query_drop("SET GLOBAL read_only = ON")
                .await
                .map_err(refused)?;
            let Some((host, port)) = &repl.source else {
                return Ok(());
            };
            let status: Option<mysql_async::Row> = conn
                .query_first("SHOW SLAVE STATUS")
                .await
                .map_err(refused)?;
            let current_host = status
                .as_ref()
                .and_then(|r| r.get_opt::<String, _>("Master_Host"))
                .and_then(|r| r.ok());
            if current_host.as_deref() != Some(host.as_str()) {
                conn.query_drop("STOP SLAVE").await.map_err(refused)?;
                // A fresh clone starts from the position mariabackup recorded.
                let info = data.join("xtrabackup_binlog_info");
                // A member that was primary, or followed another one, goes on from
                // its own binary log (every member logs what it applies).
                match std::fs::read_to_string(&info)
                    .ok()
                    .and_then(|t| clone_gtid(&t))
                {
                    Some(gtid) => conn
                        .query_drop(format!("SET GLOBAL gtid_slave_pos = {}", literal(&gtid)))
                        .await
                        .map_err(refused)?,
                    None if current_host.is_some() || status.is_none() => conn
                        .query_drop("SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos")
                        .await
                        .map_err(refused)?,
                    None => {}
                }
                conn.query_drop(format!(
                    "CHANGE MASTER TO MASTER_HOST = {}, MASTER_PORT = {port}, MASTER_USER = {}, \
                     MASTER_PASSWORD = {}, MASTER_USE_GTID = slave_pos, MASTER_SSL = 1, \
                     MASTER_CONNECT_RETRY = 1",
                    literal(host),
                    literal(REPLICATION_USER),
                    literal(repl.password.expose()),
                ))
                .await
                .map_err(refused)?;
                let _ = std::fs::rename(&info, data.join("xtrabackup_binlog_info.applied"));
            }
            // Semi-sync on the replica side takes effect when the I/O thread starts.
            conn.query_drop("STOP SLAVE IO_THREAD")
                .await
                .map_err(refused)?;
            conn.query_drop("START SLAVE").await.map_err(refused)?;
        }
    }
    let _ = conn.disconnect().await;
    Ok(())
}

/// `FLUSH TABLES WITH READ LOCK` in a session kept by the guard: no write, not even
/// the superuser's, commits on this member while it is held; and the GTID position
/// of everything written before.
pub(super) async fn fence(layout: &Layout) -> Result<crate::Fence> {
    let mut conn = local_conn(layout).await?;
    conn.query_drop("SET GLOBAL read_only = ON")
        .await
        .map_err(refused)?;
    conn.query_drop("FLUSH TABLES WITH READ LOCK")
        .await
        .map_err(refused)?;
    let position: Option<String> = conn
        .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
        .await
        .map_err(refused)?;
    Ok(crate::Fence {
        position: position.unwrap_or_default(),
        guard: Box::new(tokio::sync::Mutex::new(conn)),
    })
}

/// Per replication domain, the highest sequence number of a GTID list
/// (`domain-server-seq,…`).
pub(super) fn gtid_seqs(list: &str) -> std::collections::BTreeMap<u32, u64> {
    list.split(',')
        .filter_map(|g| {
            let mut parts = g.trim().split('-');
            let domain = parts.next()?.parse().ok()?;
            let _server = parts.next()?;
            let seq = parts.next()?.parse().ok()?;
            Some((domain, seq))
        })
        .collect()
}

/// Whether `have` includes every domain of `want` at least as far.
pub(super) fn gtid_covers(have: &str, want: &str) -> bool {
    let have = gtid_seqs(have);
    gtid_seqs(want)
        .iter()
        .all(|(d, seq)| have.get(d).is_some_and(|h| h >= seq))
}

/// The replica applied everything up to `position` (its SQL thread's GTID position).
pub(super) async fn caught_up(layout: &Layout, position: Option<&str>) -> Result<bool> {
    let mut conn = local_conn(layout).await?;
    let have: Option<String> = conn
        .query_first("SELECT @@GLOBAL.gtid_slave_pos")
        .await
        .map_err(refused)?;
    let _ = conn.disconnect().await;
    Ok(gtid_covers(
        &have.unwrap_or_default(),
        position.unwrap_or(""),
    ))
}

/// Stops following, forgets the old primary, takes writes.
pub(super) async fn promote(layout: &Layout) -> Result<()> {
    let mut conn = local_conn(layout).await?;
    for q in [
        "STOP SLAVE",
        "RESET SLAVE ALL",
        "SET GLOBAL read_only = OFF",
    ] {
        conn.query_drop(q).await.map_err(refused)?;
    }
    let _ = conn.disconnect().await;
    Ok(())
}

/// The I/O thread stopped with error 1236: the primary's binary log does not hold
/// the GTID this member wants next, because this member wrote transactions the
/// primary never had (a former primary's unconfirmed commits).
pub(super) async fn diverged(layout: &Layout, repl: &Replication) -> Result<Option<String>> {
    let mut conn = local_conn(layout).await?;
    let row: Option<mysql_async::Row> = conn
        .query_first("SHOW SLAVE STATUS")
        .await
        .map_err(refused)?;
    let own: Option<(String, String)> = conn
        .query_first("SELECT @@GLOBAL.gtid_binlog_pos, @@GLOBAL.gtid_binlog_state")
        .await
        .map_err(refused)?;
    let _ = conn.disconnect().await;
    let Some(row) = row else { return Ok(None) };
    let errno = row
        .get_opt::<u64, _>("Last_IO_Errno")
        .and_then(|r| r.ok())
        .unwrap_or(0);
    if errno != 1236 {
        return Ok(None);
    }
    let error = row
        .get_opt::<String, _>("Last_IO_Error")
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let (pos, state) = own.unwrap_or_default();
    let lacks = match primary_binlog_state(layout, repl).await {
        Ok(p) => match discarded(&state, &p) {
            Some(n) => format!("{n} transaction(s) this member holds"),
            None => format!("transactions this member holds (how many is unknown: GTID states {state:?} here, {p:?} there)"),
        },
        Err(why) => format!("transactions this member holds (how many is unknown: {why})"),
    };
    Ok(Some(format!(
        "the new primary lacks {lacks}, up to its GTID position {pos}: {error}"
    )))
}

/// The primary's `gtid_binlog_state` (the last GTID of every server in every domain)
/// and `gtid_slave_pos` (where a clone or its replication left it), asked through the replication account over TLS checked against Berth's CA; `None`
/// when it does not answer.
async fn primary_binlog_state(
    layout: &Layout,
    repl: &Replication,
) -> std::result::Result<String, String> {
    let (host, port) = repl.source.clone().ok_or("this member follows nobody")?;
    if repl.server_name.is_none() {
        return Err("the role names no certificate to check the primary's against".into());
    }
    let ca = std::fs::read(layout.tls_file(crate::TLS_CA))
        .map_err(|e| format!("Berth's CA certificate is unreadable: {e}"))?;
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(REPLICATION_USER))
        .pass(Some(repl.password.expose().to_owned()))
        .prefer_socket(false)
        // Members' certificates carry the instance's internal name, not each
        // member's host: that name, against Berth's CA only.
        .ssl_opts(Some(
            mysql_async::SslOpts::default()
                .with_root_certs(vec![ca.into()])
                .with_disable_built_in_roots(true)
                .with_danger_tls_hostname_override(repl.server_name.clone()),
        ));
    let ask = async {
        let mut conn = mysql_async::Conn::new(opts)
            .await
            .map_err(|e| format!("the primary does not answer: {e}"))?;
        // What it logged itself, and what a clone or replication gave it.
        let state: Option<(String, String)> = conn
            .query_first("SELECT @@GLOBAL.gtid_binlog_state, @@GLOBAL.gtid_slave_pos")
            .await
            .map_err(|e| format!("the primary refused: {e}"))?;
        let _ = conn.disconnect().await;
        state
            .map(|(logged, applied)| format!("{logged},{applied}"))
            .ok_or_else(|| "the primary gave no GTID state".to_owned())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), ask)
        .await
        .map_err(|_| "the primary did not answer within 5 s".to_owned())?
}

/// How many transactions this member holds that the new primary never received (a
/// former primary's own writes, or what a replica received from it): in each
/// replication domain, this member's last sequence number less the last one both
/// hold. The states list the last GTID of every server in every domain; only one
/// primary writes at a time, so what both hold of a server ends at the lower of the
/// two, and nothing of a server the primary does not list. `None` when a state
/// cannot be read.
pub(super) fn discarded(own_state: &str, primary_state: &str) -> Option<u64> {
    let own = parse_gtids(own_state)?;
    let primary = parse_gtids(primary_state)?;
    let mut domains: Vec<u32> = own.iter().map(|g| g.0).collect();
    domains.sort_unstable();
    domains.dedup();
    let mut total = 0;
    for domain in domains {
        let mine = own.iter().filter(|g| g.0 == domain);
        let last = mine.clone().map(|g| g.2).max()?;
        let shared = mine
            .map(|(_, server, seq)| {
                let theirs = primary
                    .iter()
                    .filter(|g| g.0 == domain && g.1 == *server)
                    .map(|g| g.2)
                    .max()
                    .unwrap_or(0);
                (*seq).min(theirs)
            })
            .max()
            .unwrap_or(0);
        total += last.saturating_sub(shared);
    }
    Some(total)
}

/// `domain-server-sequence` triples, comma-separated (empty: none).
fn parse_gtids(s: &str) -> Option<Vec<(u32, u32, u64)>> {
    s.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(|g| {
            let mut it = g.splitn(3, '-');
            Some((
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// Whether semi-synchronous replication is on and has a replica to confirm commits.
pub(super) async fn sync_status(layout: &Layout, repl: &Replication) -> Result<Option<String>> {
    let mut conn = local_conn(layout).await?;
    let rows: Vec<(String, String)> = conn
        .query(
            "SHOW GLOBAL STATUS WHERE Variable_name IN \
             ('Rpl_semi_sync_master_status', 'Rpl_semi_sync_master_clients')",
        )
        .await
        .map_err(refused)?;
    let _ = conn.disconnect().await;
    let get = |k: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let clients: u32 = get("Rpl_semi_sync_master_clients").parse().unwrap_or(0);
    let on = get("Rpl_semi_sync_master_status").eq_ignore_ascii_case("ON");
    let available = repl.sync_mode == SyncMode::Available;
    Ok(match (clients, on) {
        (0, _) => Some(format!(
            "no semi-synchronous replica is connected; {}",
            if available {
                "commits go on asynchronously until one is back"
            } else {
                "commits wait until one is back"
            }
        )),
        (_, false) => Some(
            "semi-synchronous replication fell back to asynchronous after a timeout; \
             it resumes once a replica catches up"
                .into(),
        ),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discarded_counts_what_this_member_holds_beyond_the_primary() {
        // A former primary (server 1) wrote up to 105; the new primary (server 2)
        // had received up to 103, then wrote its own from 104 on.
        assert_eq!(discarded("0-1-105", "0-1-103,0-2-110"), Some(2));
        // A replica that received 104 and 105 from server 1 is in the same place.
        assert_eq!(discarded("0-2-7,0-1-105", "0-1-103,0-2-110"), Some(2));
        // Nothing lost: the primary has all of it.
        assert_eq!(discarded("0-2-7,0-1-105", "0-1-105,0-2-110"), Some(0));
        // Two domains.
        assert_eq!(discarded("0-1-10,1-1-20", "0-1-9,1-1-17,0-3-12"), Some(4));
        // Another server's transactions the primary lacks count too.
        assert_eq!(discarded("0-3-104,0-1-105", "0-1-103,0-3-100"), Some(2));
        // Nothing shared in a domain: all of it.
        assert_eq!(discarded("0-1-10", "0-2-12"), Some(10));
        // A state listed twice (logged, and the replication position) counts once.
        assert_eq!(discarded("0-1-105", "0-2-110,0-1-101,0-1-103"), Some(2));
        assert_eq!(discarded("garbage", "0-1-1"), None);
        // Nothing held: nothing discarded.
        assert_eq!(discarded("", "0-2-12"), Some(0));
    }
    use berth_model::{MemberId, Secret};

    fn repl(role: Role, sync: u8, mode: SyncMode) -> Replication {
        Replication {
            member: MemberId(2),
            role,
            source: Some(("berth-db-12345678-0".into(), 3306)),
            password: Secret::new("s3cret"),
            replicas: vec![],
            replica_hosts: vec![],
            members: vec![],
            auto_failover: false,
            max_failover_lag: 0,
            sync,
            sync_mode: mode,
            server_name: None,
        }
    }

    #[test]
    fn every_member_logs_gtids_and_replicas_are_read_only() {
        let lone = cnf_lines(None).join("\n");
        assert!(lone.contains("server_id = 1") && lone.contains("gtid_strict_mode = ON"));
        assert!(!lone.contains("read_only"));
        let r = cnf_lines(Some(&repl(Role::Replica, 0, SyncMode::Strict))).join("\n");
        assert!(
            r.contains("server_id = 3") && r.contains("read_only = ON"),
            "{r}"
        );
        assert!(!r.contains("rpl_semi_sync"));
        assert!(
            !r.contains("s3cret"),
            "no password in the configuration file"
        );
    }

    #[test]
    fn strict_sync_waits_and_available_sync_goes_on() {
        let strict = cnf_lines(Some(&repl(Role::Primary, 1, SyncMode::Strict))).join("\n");
        assert!(strict.contains("rpl_semi_sync_master_wait_point = AFTER_SYNC"));
        assert!(strict.contains(&format!("rpl_semi_sync_master_timeout = {}", u32::MAX)));
        let avail = cnf_lines(Some(&repl(Role::Primary, 1, SyncMode::Available))).join("\n");
        assert!(avail.contains("rpl_semi_sync_master_timeout = 1000"));
    }

    #[test]
    fn a_gtid_position_covers_another_domain_by_domain() {
        assert!(gtid_covers("0-1-17", "0-1-17"));
        assert!(gtid_covers("0-2-20,1-1-3", "0-1-17"));
        assert!(!gtid_covers("0-1-16", "0-1-17"));
        assert!(!gtid_covers("0-1-17", "0-1-17,1-1-1"));
        assert!(
            gtid_covers("0-1-1", ""),
            "nothing written: nothing to wait for"
        );
    }

    #[test]
    fn the_clone_position_is_read_from_mariabackup() {
        assert_eq!(
            clone_gtid("mariadb-bin.000002\t385\t0-1-17\n").as_deref(),
            Some("0-1-17")
        );
        assert_eq!(
            clone_gtid("mariadb-bin.000002 385 0-1-17,1-2-3").as_deref(),
            Some("0-1-17,1-2-3")
        );
        assert_eq!(clone_gtid("mariadb-bin.000002 385"), None);
        assert_eq!(clone_gtid("f 1 0-1-1';DROP"), None);
    }
}
