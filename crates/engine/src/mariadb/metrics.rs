//! MariaDB's metrics for the agent, read by `berth_monitor@localhost` over the local
//! socket.
//!
//! The account has `PROCESS`, `REPLICATION CLIENT` and `SLAVE MONITOR` only (status,
//! the process and InnoDB transaction lists, replication status; no table data),
//! `MAX_USER_CONNECTIONS 2`, and each session runs with a 2 s `max_statement_time`.
//! Its password is random, made by this agent process and kept only in its memory:
//! the first scrape (and any scrape refused with "access denied", as after a restore)
//! sets it as root, with binary logging off for that session so the account never
//! replicates over a replica's own. The SQL carries the password's hash, never the
//! password. `Host = 'localhost'` keeps it out of `berth users list` (which lists
//! `'%'` accounts) and off the network.
//!
//! Replication is read in the same session: `SHOW SLAVE STATUS` (which MariaDB 10.5
//! and later allow with `SLAVE MONITOR`, no longer with `REPLICATION CLIENT`), and
//! on a primary the binary log dump threads in the process list, one per connected
//! replica (`SHOW SLAVE HOSTS` would need `REPLICATION MASTER ADMIN`, which may
//! change replication).
//!
//! Database sizes are read from the data directory (one subdirectory per database),
//! since `information_schema.TABLES` would need read access to every table.

use crate::{EngineError, Layout, Result};
use berth_model::metrics::{DatabaseSize, EngineMetrics, ReplicationMetrics};
use berth_model::EngineKind;
use mysql_async::prelude::Queryable;
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use tokio::sync::Mutex;

/// This process's password for `berth_monitor`, once set in the engine.
static PASSWORD: OnceLock<Mutex<Option<String>>> = OnceLock::new();

/// MariaDB's "access denied" for a user.
const ACCESS_DENIED: u16 = 1045;

fn refused(e: impl std::fmt::Display) -> EngineError {
    EngineError::Refused {
        engine: EngineKind::Mariadb,
        reason: e.to_string(),
    }
}

fn random_password() -> Result<String> {
    let mut buf = [0u8; 24];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|source| EngineError::Io {
            path: "/dev/urandom".into(),
            source,
        })?;
    Ok(hex::encode(buf))
}

/// Makes the account (or resets it) with `password`, as root, not replicated.
async fn ensure_account(layout: &Layout, password: &str) -> Result<()> {
    let hash = super::native_password_hash(password);
    let mut root = super::local_conn(layout).await?;
    let r = root
        .query_drop(format!(
            "SET SESSION sql_log_bin = 0;
             CREATE USER IF NOT EXISTS 'berth_monitor'@'localhost';
             ALTER USER 'berth_monitor'@'localhost' IDENTIFIED BY PASSWORD '{hash}'
               WITH MAX_USER_CONNECTIONS 2;
             GRANT PROCESS, REPLICATION CLIENT, SLAVE MONITOR ON *.* TO 'berth_monitor'@'localhost';"
        ))
        .await
        .map_err(refused);
    let _ = root.disconnect().await;
    r
}

async fn connect_as_monitor(
    layout: &Layout,
    password: &str,
) -> std::result::Result<mysql_async::Conn, mysql_async::Error> {
    let opts = mysql_async::OptsBuilder::default()
        .socket(Some(super::socket(layout).display().to_string()))
        .user(Some("berth_monitor"))
        .pass(Some(password.to_owned()))
        .prefer_socket(true)
        .init(vec!["SET SESSION max_statement_time = 2"]);
    mysql_async::Conn::new(opts).await
}

/// A session as `berth_monitor`, setting its password first when this process has
/// none yet or the engine no longer takes it.
async fn monitor_conn(layout: &Layout) -> Result<mysql_async::Conn> {
    let mut pw = PASSWORD.get_or_init(|| Mutex::new(None)).lock().await;
    if let Some(p) = pw.as_deref() {
        match connect_as_monitor(layout, p).await {
            Ok(c) => return Ok(c),
            Err(mysql_async::Error::Server(e)) if e.code == ACCESS_DENIED => {}
            Err(e) => return Err(not_ready(e)),
        }
    }
    let fresh = random_password()?;
    ensure_account(layout, &fresh).await?;
    let conn = connect_as_monitor(layout, &fresh)
        .await
        .map_err(not_ready)?;
    *pw = Some(fresh);
    Ok(conn)
}

fn not_ready(e: impl std::fmt::Display) -> EngineError {
    EngineError::NotReady {
        engine: EngineKind::Mariadb,
        reason: e.to_string(),
    }
}

/// The global status variables read, by name.
const STATUS: &[&str] = &[
    "Uptime",
    "Threads_connected",
    "Handler_commit",
    "Handler_rollback",
    "Innodb_buffer_pool_read_requests",
    "Innodb_buffer_pool_reads",
    "Innodb_deadlocks",
    "Created_tmp_files",
    "Innodb_row_lock_current_waits",
];

/// One round of reads.
pub(crate) async fn collect(layout: &Layout, data_dir: &Path) -> Result<EngineMetrics> {
    let mut conn = monitor_conn(layout).await?;
    let r = read(&mut conn).await;
    let _ = conn.disconnect().await;
    let mut m = r?;
    m.database_bytes = database_sizes(data_dir);
    Ok(m)
}

async fn read(conn: &mut mysql_async::Conn) -> Result<EngineMetrics> {
    let names = STATUS
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(",");
    let rows: Vec<(String, String)> = conn
        .query(format!(
            "SHOW GLOBAL STATUS WHERE Variable_name IN ({names})"
        ))
        .await
        .map_err(refused)?;
    let (now, max_connections, read_only, dump_threads): (i64, u64, i64, u64) = conn
        .query_first(
            "SELECT UNIX_TIMESTAMP(), @@max_connections, @@read_only,
               (SELECT COUNT(*) FROM information_schema.PROCESSLIST
                 WHERE COMMAND LIKE 'Binlog Dump%')",
        )
        .await
        .map_err(refused)?
        .unwrap_or_default();
    let slave = conn
        .query_first::<mysql_async::Row, _>("SHOW SLAVE STATUS")
        .await
        .map_err(refused)?
        .map(|row| columns(&row));
    let longest: Option<f64> = conn
        .query_first(
            "SELECT COALESCE(MAX(TIMESTAMPDIFF(MICROSECOND, trx_started, NOW(6))), 0) / 1e6
               FROM information_schema.INNODB_TRX
              WHERE trx_mysql_thread_id <> CONNECTION_ID()",
        )
        .await
        .map_err(refused)?;
    let mut m = from_status(
        &rows.into_iter().collect(),
        now,
        max_connections,
        longest.unwrap_or(0.0),
    );
    m.replication = Some(replication(read_only != 0, slave.as_ref(), dump_threads));
    Ok(m)
}

/// A row's columns by name, as text (`NULL` as `None`).
fn columns(row: &mysql_async::Row) -> HashMap<String, Option<String>> {
    row.columns_ref()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let v = row
                .as_ref(i)
                .cloned()
                .and_then(|v| mysql_async::from_value_opt::<Option<String>>(v).ok())
                .flatten();
            (c.name_str().into_owned(), v)
        })
        .collect()
}

/// The member's replication, the way `probe_role` judges its role: a replica when
/// `read_only` is on or it has a replication source (`SHOW SLAVE STATUS` has a
/// row). Running means both threads run (`Connecting` is not: nothing arrives);
/// the bytes behind are only comparable within one binary log file.
fn replication(
    read_only: bool,
    slave: Option<&HashMap<String, Option<String>>>,
    dump_threads: u64,
) -> ReplicationMetrics {
    let is_primary = !read_only && slave.is_none();
    if is_primary {
        return ReplicationMetrics {
            is_primary,
            connected_replicas: Some(dump_threads),
            ..ReplicationMetrics::default()
        };
    }
    let Some(st) = slave else {
        // read_only with no source: a replica that replicates nothing.
        return ReplicationMetrics {
            running: Some(false),
            ..ReplicationMetrics::default()
        };
    };
    let text = |c: &str| st.get(c).cloned().flatten();
    let num = |c: &str| text(c).and_then(|v| v.parse::<u64>().ok());
    let yes = |c: &str| text(c).as_deref() == Some("Yes");
    let lag_bytes = match (
        text("Master_Log_File"),
        text("Relay_Master_Log_File"),
        num("Read_Master_Log_Pos"),
        num("Exec_Master_Log_Pos"),
    ) {
        (Some(a), Some(b), Some(read), Some(exec)) if a == b => Some(read.saturating_sub(exec)),
        _ => None,
    };
    ReplicationMetrics {
        is_primary,
        running: Some(yes("Slave_IO_Running") && yes("Slave_SQL_Running")),
        lag_bytes,
        lag_seconds: num("Seconds_Behind_Master").map(|s| s as f64),
        connected_replicas: None,
        slots: None,
    }
}

/// The metrics from `SHOW GLOBAL STATUS` (this session not counted as a connection).
fn from_status(
    status: &HashMap<String, String>,
    now: i64,
    max_connections: u64,
    longest: f64,
) -> EngineMetrics {
    let n = |k: &str| {
        status
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    EngineMetrics {
        started_at: now - n("Uptime") as i64,
        connections: n("Threads_connected").saturating_sub(1),
        max_connections,
        commits: n("Handler_commit"),
        rollbacks: n("Handler_rollback"),
        cache_hits: n("Innodb_buffer_pool_read_requests")
            .saturating_sub(n("Innodb_buffer_pool_reads")),
        cache_misses: n("Innodb_buffer_pool_reads"),
        deadlocks: n("Innodb_deadlocks"),
        temp_files: n("Created_tmp_files"),
        temp_bytes: None,
        database_bytes: vec![],
        longest_transaction_seconds: longest.max(0.0),
        lock_waits: n("Innodb_row_lock_current_waits"),
        xid_age: None,
        replication: None,
    }
}

/// Bytes under each database's directory (not its subdirectories: MariaDB keeps
/// none), skipping the server's own (`#…` and the like).
fn database_sizes(data_dir: &Path) -> Vec<DatabaseSize> {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return vec![];
    };
    let mut out: Vec<DatabaseSize> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            if name.starts_with('#') || name.starts_with('.') {
                return None;
            }
            let bytes = std::fs::read_dir(e.path())
                .ok()?
                .filter_map(|f| f.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum();
            Some(DatabaseSize { name, bytes })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_becomes_metrics_without_counting_the_monitor_session() {
        let status: HashMap<String, String> = [
            ("Uptime", "100"),
            ("Threads_connected", "4"),
            ("Handler_commit", "42"),
            ("Innodb_buffer_pool_read_requests", "1000"),
            ("Innodb_buffer_pool_reads", "10"),
            ("Innodb_row_lock_current_waits", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let m = from_status(&status, 1_000, 151, 1.5);
        assert_eq!(m.started_at, 900);
        assert_eq!(m.connections, 3);
        assert_eq!(m.commits, 42);
        assert_eq!((m.cache_hits, m.cache_misses), (990, 10));
        assert_eq!(m.lock_waits, 2);
        assert_eq!(m.max_connections, 151);
        assert_eq!(m.temp_bytes, None);
    }

    fn slave_status(pairs: &[(&str, Option<&str>)]) -> HashMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn slave_status_becomes_a_replicas_replication() {
        let mut st = slave_status(&[
            ("Slave_IO_Running", Some("Yes")),
            ("Slave_SQL_Running", Some("Yes")),
            ("Seconds_Behind_Master", Some("7")),
            ("Master_Log_File", Some("bin.000002")),
            ("Relay_Master_Log_File", Some("bin.000002")),
            ("Read_Master_Log_Pos", Some("1500")),
            ("Exec_Master_Log_Pos", Some("1000")),
        ]);
        let r = replication(true, Some(&st), 0);
        assert!(!r.is_primary);
        assert_eq!(r.running, Some(true));
        assert_eq!(r.lag_bytes, Some(500));
        assert_eq!(r.lag_seconds, Some(7.0));
        assert_eq!(r.connected_replicas, None);
        // Another binary log file: the positions do not compare. The IO thread
        // reconnecting is not running, and MariaDB has no lag to tell then.
        st.insert("Relay_Master_Log_File".into(), Some("bin.000001".into()));
        st.insert("Slave_IO_Running".into(), Some("Connecting".into()));
        st.insert("Seconds_Behind_Master".into(), None);
        let r = replication(false, Some(&st), 0);
        assert!(!r.is_primary, "a source configured makes a replica");
        assert_eq!(
            (r.running, r.lag_bytes, r.lag_seconds),
            (Some(false), None, None)
        );
    }

    #[test]
    fn a_primary_counts_its_dump_threads_and_a_lone_read_only_member_is_stopped() {
        let p = replication(false, None, 2);
        assert!(p.is_primary);
        assert_eq!(
            (p.connected_replicas, p.running, p.slots),
            (Some(2), None, None)
        );
        let lone = replication(true, None, 0);
        assert!(!lone.is_primary);
        assert_eq!(lone.running, Some(false));
    }

    #[test]
    fn sizes_are_per_database_directory() {
        let d = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(d.path().join("shop")).expect("dir");
        std::fs::write(d.path().join("shop/t.ibd"), vec![0u8; 300]).expect("file");
        std::fs::write(d.path().join("shop/db.opt"), vec![0u8; 20]).expect("file");
        std::fs::create_dir(d.path().join("#innodb_temp")).expect("dir");
        std::fs::write(d.path().join("ibdata1"), vec![0u8; 5]).expect("file");
        assert_eq!(
            database_sizes(d.path()),
            vec![DatabaseSize {
                name: "shop".into(),
                bytes: 320
            }]
        );
    }
}
