//! MariaDB's metrics for the agent, read by `berth_monitor@localhost` over the local
//! socket.
//!
//! The account has `PROCESS` and `REPLICATION CLIENT` only (status, the process and
//! InnoDB transaction lists, replication status; no table data),
//! `MAX_USER_CONNECTIONS 2`, and each session runs with a 2 s `max_statement_time`.
//! Its password is random, made by this agent process and kept only in its memory:
//! the first scrape (and any scrape refused with "access denied", as after a restore)
//! sets it as root, with binary logging off for that session so the account never
//! replicates over a replica's own. The SQL carries the password's hash, never the
//! password. `Host = 'localhost'` keeps it out of `berth users list` (which lists
//! `'%'` accounts) and off the network.
//!
//! Database sizes are read from the data directory (one subdirectory per database),
//! since `information_schema.TABLES` would need read access to every table.

use crate::{EngineError, Layout, Result};
use berth_model::metrics::{DatabaseSize, EngineMetrics};
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
             GRANT PROCESS, REPLICATION CLIENT ON *.* TO 'berth_monitor'@'localhost';"
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
    let (now, max_connections): (i64, u64) = conn
        .query_first("SELECT UNIX_TIMESTAMP(), @@max_connections")
        .await
        .map_err(refused)?
        .unwrap_or((0, 0));
    let longest: Option<f64> = conn
        .query_first(
            "SELECT COALESCE(MAX(TIMESTAMPDIFF(MICROSECOND, trx_started, NOW(6))), 0) / 1e6
               FROM information_schema.INNODB_TRX
              WHERE trx_mysql_thread_id <> CONNECTION_ID()",
        )
        .await
        .map_err(refused)?;
    Ok(from_status(
        &rows.into_iter().collect(),
        now,
        max_connections,
        longest.unwrap_or(0.0),
    ))
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
