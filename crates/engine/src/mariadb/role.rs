//! `probe_role` for MariaDB: one bounded probe over the local socket.
//!
//! A member is a replica when `@@read_only` is on or it has a replication source
//! configured (`SHOW SLAVE STATUS` returns a row); otherwise it is the primary.

use crate::{EngineError, Layout, Result};
use berth_model::agent::{ReplicaReport, RoleReport};
use berth_model::member::Role;
use berth_model::EngineKind;
use mysql_async::prelude::Queryable;
use mysql_async::Row;
use std::time::Instant;

/// Client sessions: not the probe itself, not replication or system threads.
const SELF_SQL: &str = "SELECT @@read_only, @@max_connections,
  (SELECT COUNT(*) FROM information_schema.PROCESSLIST
     WHERE ID <> CONNECTION_ID() AND USER <> 'system user'
       AND COMMAND NOT LIKE 'Binlog Dump%' AND COMMAND <> 'Daemon')";

/// On a primary: the binlog dump threads, one per connected replica.
const REPLICAS_SQL: &str = "SELECT HOST, COALESCE(STATE, '') FROM information_schema.PROCESSLIST
  WHERE COMMAND LIKE 'Binlog Dump%' ORDER BY HOST";

/// What `SHOW SLAVE STATUS` says, the columns Berth reads.
#[derive(Clone, Debug, Default, PartialEq)]
struct SlaveStatus {
    io_running: Option<String>,
    sql_running: Option<String>,
    seconds_behind: Option<u64>,
    master_log_file: Option<String>,
    read_pos: Option<u64>,
    relay_master_log_file: Option<String>,
    exec_pos: Option<u64>,
}

impl SlaveStatus {
    fn from_row(row: &Row) -> Self {
        let s = |c: &str| {
            row.get_opt::<Option<String>, _>(c)
                .and_then(|r| r.ok())
                .flatten()
        };
        let n = |c: &str| {
            row.get_opt::<Option<u64>, _>(c)
                .and_then(|r| r.ok())
                .flatten()
        };
        Self {
            io_running: s("Slave_IO_Running"),
            sql_running: s("Slave_SQL_Running"),
            seconds_behind: n("Seconds_Behind_Master"),
            master_log_file: s("Master_Log_File"),
            read_pos: n("Read_Master_Log_Pos"),
            relay_master_log_file: s("Relay_Master_Log_File"),
            exec_pos: n("Exec_Master_Log_Pos"),
        }
    }

    /// Both threads run (`Connecting` is not running: nothing arrives) and the primary
    /// has begun to send its log. `CHANGE MASTER` to a new primary empties
    /// `Master_Log_File`; the primary names its log only once it has accepted the
    /// replica's GTID position. Until then the I/O thread shows `Yes` for a moment
    /// even when the primary is about to refuse that position (error 1236: the
    /// replica holds transactions it lacks), and such a member must not be called
    /// ready: it is about to be cloned afresh.
    fn running(&self) -> bool {
        self.io_running.as_deref() == Some("Yes")
            && self.sql_running.as_deref() == Some("Yes")
            && self
                .master_log_file
                .as_deref()
                .is_some_and(|f| !f.is_empty())
    }

    /// Bytes read from the primary's binlog but not executed yet; only comparable
    /// when both positions are in the same binlog file.
    fn lag_bytes(&self) -> Option<u64> {
        match (
            &self.master_log_file,
            &self.relay_master_log_file,
            self.read_pos,
            self.exec_pos,
        ) {
            (Some(a), Some(b), Some(read), Some(exec)) if a == b => Some(read.saturating_sub(exec)),
            _ => None,
        }
    }
}

pub(crate) async fn probe(layout: &Layout) -> Result<RoleReport> {
    let refused = |e: mysql_async::Error| EngineError::NotReady {
        engine: EngineKind::Mariadb,
        reason: e.to_string(),
    };
    let mut conn = super::local_conn(layout).await?;
    let result = async {
        let started = Instant::now();
        let row: Option<(i64, i64, i64)> = conn.query_first(SELF_SQL).await.map_err(refused)?;
        let probe_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (read_only, max_connections, connections) = row.unwrap_or_default();
        let slave: Option<SlaveStatus> = conn
            .query_first::<Row, _>("SHOW SLAVE STATUS")
            .await
            .map_err(refused)?
            .map(|r| SlaveStatus::from_row(&r));
        let mut report = RoleReport {
            read_only: read_only != 0,
            connections: Some(clamp_u32(connections)),
            max_connections: Some(clamp_u32(max_connections)),
            probe_ms: Some(probe_ms),
            ..RoleReport::default()
        };
        let role = if read_only != 0 || slave.is_some() {
            Role::Replica
        } else {
            Role::Primary
        };
        match &slave {
            Some(st) => {
                report.position = binlog_position(st.master_log_file.as_deref(), st.read_pos);
                report.replication_running = Some(st.running());
                report.lag_seconds = st.seconds_behind.map(|s| s as f64);
                report.lag_bytes = st.lag_bytes();
                if !st.running() {
                    report.reason = Some(format!(
                        "replication is not running (IO thread {}, SQL thread {}{})",
                        st.io_running.as_deref().unwrap_or("unknown"),
                        st.sql_running.as_deref().unwrap_or("unknown"),
                        if st.master_log_file.as_deref().unwrap_or("").is_empty() {
                            ", the primary has not begun to send its log"
                        } else {
                            ""
                        }
                    ));
                }
            }
            None if role == Role::Replica => {
                report.replication_running = Some(false);
                report.reason = Some("read_only with no replication source".to_owned());
            }
            None => {}
        }
        if role == Role::Primary {
            let master: Option<Row> = conn
                .query_first("SHOW MASTER STATUS")
                .await
                .map_err(refused)?;
            report.position = master.and_then(|r| {
                let file = r.get_opt::<String, _>("File").and_then(|f| f.ok());
                let pos = r.get_opt::<u64, _>("Position").and_then(|p| p.ok());
                binlog_position(file.as_deref(), pos)
            });
            let rows: Vec<(String, String)> = conn.query(REPLICAS_SQL).await.map_err(refused)?;
            report.replicas = rows
                .into_iter()
                .map(|(host, state)| ReplicaReport {
                    name: strip_port(&host).to_owned(),
                    state,
                    ..ReplicaReport::default()
                })
                .collect();
        }
        report.role = Some(role);
        report.ready = RoleReport::ready_for(role, report.replication_running);
        Ok(report)
    }
    .await;
    let _ = conn.disconnect().await;
    result
}

/// A position in a primary's binary log as one number: the file's sequence number
/// (`…-bin.000042`) times 2³² plus the offset. Ordered like the log itself; the
/// difference of two positions in one file is bytes.
fn binlog_position(file: Option<&str>, offset: Option<u64>) -> Option<u64> {
    let seq: u64 = file?.rsplit_once('.')?.1.parse().ok()?;
    Some((seq << 32) | (offset? & 0xffff_ffff))
}

/// `PROCESSLIST.HOST` is `host:port` for TCP clients.
fn strip_port(host: &str) -> &str {
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn clamp_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_bytes_only_within_one_binlog_file() {
        let mut st = SlaveStatus {
            io_running: Some("Yes".into()),
            sql_running: Some("Yes".into()),
            master_log_file: Some("bin.000002".into()),
            relay_master_log_file: Some("bin.000002".into()),
            read_pos: Some(1500),
            exec_pos: Some(1000),
            ..SlaveStatus::default()
        };
        assert!(st.running());
        assert_eq!(st.lag_bytes(), Some(500));
        // Connected, but the primary has not accepted the position yet.
        let connecting = SlaveStatus {
            master_log_file: Some(String::new()),
            ..st.clone()
        };
        assert!(!connecting.running());
        st.relay_master_log_file = Some("bin.000001".into());
        assert_eq!(st.lag_bytes(), None);
        st.io_running = Some("Connecting".into());
        assert!(!st.running());
    }

    #[test]
    fn binlog_positions_order_by_file_then_offset() {
        let a = binlog_position(Some("mariadb-bin.000002"), Some(900)).expect("pos");
        let b = binlog_position(Some("mariadb-bin.000003"), Some(4)).expect("pos");
        let c = binlog_position(Some("mariadb-bin.000003"), Some(104)).expect("pos");
        assert!(a < b && b < c);
        assert_eq!(c - b, 100);
        assert_eq!(binlog_position(Some("nofile"), Some(1)), None);
        assert_eq!(binlog_position(None, Some(1)), None);
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(strip_port("172.18.0.3:40122"), "172.18.0.3");
        assert_eq!(strip_port("replica1"), "replica1");
    }
}
