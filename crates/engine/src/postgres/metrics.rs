//! PostgreSQL's metrics for the agent, read by `berth_monitor` over the local socket.
//!
//! `berth_monitor` is a login role in `pg_monitor` (it reads every session and
//! statistic, no table data) with `CONNECTION LIMIT 2` and a 2 s
//! `statement_timeout`: monitoring never holds more than two sessions or waits long
//! on a busy database. The local socket trusts it (pg_hba `local all all trust`; the
//! socket directory is private to the container), so it has no password. The role is
//! made (idempotently, by the superuser) the first time a connection finds it
//! missing; on a replica it arrives with the primary's catalog. The `berth_` prefix
//! is reserved, so no user can take or see it.
//!
//! Replication is read in the same transaction: the role, a replica's receiver and
//! lag, a primary's streaming replicas, and every slot with the WAL it keeps.

use crate::{EngineError, Layout, Result};
use berth_model::metrics::{DatabaseSize, EngineMetrics, ReplicationMetrics, SlotUsage};
use berth_model::EngineKind;
use std::time::Duration;
use tokio_postgres::error::SqlState;

/// The monitoring role.
pub(crate) const MONITOR_ROLE: &str = "berth_monitor";

/// Makes the role, or brings its limits back to Berth's.
const ENSURE_ROLE: &str = "
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'berth_monitor') THEN
    CREATE ROLE berth_monitor LOGIN CONNECTION LIMIT 2 IN ROLE pg_monitor;
  END IF;
END $$;
ALTER ROLE berth_monitor LOGIN CONNECTION LIMIT 2;
GRANT pg_monitor TO berth_monitor;
ALTER ROLE berth_monitor SET statement_timeout = '2s';
";

/// Everything but database sizes, in one statement (one snapshot of the statistics).
const READ: &str = "
SELECT
  extract(epoch FROM pg_postmaster_start_time())::bigint,
  (SELECT count(*) FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())::bigint,
  current_setting('max_connections')::bigint,
  coalesce(sum(xact_commit), 0)::bigint,
  coalesce(sum(xact_rollback), 0)::bigint,
  coalesce(sum(blks_hit), 0)::bigint,
  coalesce(sum(blks_read), 0)::bigint,
  coalesce(sum(deadlocks), 0)::bigint,
  coalesce(sum(temp_files), 0)::bigint,
  coalesce(sum(temp_bytes), 0)::bigint,
  (SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0)::float8
     FROM pg_stat_activity
    WHERE xact_start IS NOT NULL AND backend_type = 'client backend'
      AND pid <> pg_backend_pid()),
  (SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock')::bigint,
  (SELECT max(age(datfrozenxid)) FROM pg_database)::bigint
FROM pg_stat_database";

/// The member's replication: its role; on a replica whether the WAL receiver
/// streams and how far replay is behind (0 s when everything received is replayed:
/// the last replayed commit's age is then idleness, not lag); on a primary the
/// replicas streaming now (`pg_stat_replication`, not a clone's walsender). Every
/// column `pg_monitor` may read (it is in `pg_read_all_stats`).
const REPLICATION: &str = "
SELECT NOT pg_is_in_recovery(),
  CASE WHEN pg_is_in_recovery() THEN
    EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') END,
  CASE WHEN pg_is_in_recovery() THEN
    pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::int8 END,
  CASE WHEN pg_is_in_recovery() THEN
    CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn()
      THEN 0::float8
      ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
    END END,
  CASE WHEN NOT pg_is_in_recovery() THEN
    (SELECT count(*) FROM pg_stat_replication
      WHERE state IN ('streaming', 'catchup'))::int8 END";

/// Each slot and the WAL it keeps: from its `restart_lsn` to where this member is
/// (its replay position on a replica, where a slot left from its primary days still
/// keeps WAL).
const SLOTS: &str = "
SELECT slot_name::text, active,
  pg_wal_lsn_diff(
    CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
    restart_lsn)::int8
FROM pg_replication_slots ORDER BY 1";

const SIZES: &str =
    "SELECT datname, pg_database_size(oid) FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1";

fn refused(e: tokio_postgres::Error) -> EngineError {
    EngineError::Refused {
        engine: EngineKind::Postgres,
        reason: e.to_string(),
    }
}

async fn connect_as_monitor(
    layout: &Layout,
) -> std::result::Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(&layout.run_dir)
        .user(MONITOR_ROLE)
        .dbname("postgres")
        .application_name("berth-monitor")
        .options("-c statement_timeout=2000 -c lock_timeout=1000")
        .connect_timeout(Duration::from_secs(2));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A session as `berth_monitor`, making the role first when it is missing.
async fn monitor_client(layout: &Layout) -> Result<tokio_postgres::Client> {
    match connect_as_monitor(layout).await {
        Ok(c) => Ok(c),
        Err(e) if e.code() == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION) => {
            let su = super::local_client(layout).await?;
            su.batch_execute(ENSURE_ROLE).await.map_err(refused)?;
            drop(su);
            connect_as_monitor(layout)
                .await
                .map_err(|e| EngineError::NotReady {
                    engine: EngineKind::Postgres,
                    reason: e.to_string(),
                })
        }
        Err(e) => Err(EngineError::NotReady {
            engine: EngineKind::Postgres,
            reason: e.to_string(),
        }),
    }
}

/// One round of reads, in one read-only transaction: a scrape adds one commit to
/// the counters it reads, however many statements it runs.
pub(crate) async fn collect(layout: &Layout) -> Result<EngineMetrics> {
    let client = monitor_client(layout).await?;
    client
        .batch_execute("BEGIN READ ONLY")
        .await
        .map_err(refused)?;
    let r = client.query_one(READ, &[]).await.map_err(refused)?;
    let n = |i: usize| r.get::<_, Option<i64>>(i).unwrap_or(0).max(0) as u64;
    let sizes = client.query(SIZES, &[]).await.map_err(refused)?;
    let repl = client.query_one(REPLICATION, &[]).await.map_err(refused)?;
    let slots = client.query(SLOTS, &[]).await.map_err(refused)?;
    client.batch_execute("COMMIT").await.map_err(refused)?;
    let replication = ReplicationMetrics {
        is_primary: repl.get(0),
        running: repl.get(1),
        lag_bytes: repl.get::<_, Option<i64>>(2).map(non_negative),
        lag_seconds: repl.get::<_, Option<f64>>(3).map(|s| s.max(0.0)),
        connected_replicas: repl.get::<_, Option<i64>>(4).map(non_negative),
        slots: Some(
            slots
                .iter()
                .map(|s| SlotUsage {
                    name: s.get(0),
                    active: s.get(1),
                    retained_bytes: s.get::<_, Option<i64>>(2).map(non_negative),
                })
                .collect(),
        ),
    };
    Ok(EngineMetrics {
        started_at: r.get::<_, Option<i64>>(0).unwrap_or(0),
        connections: n(1),
        max_connections: n(2),
        commits: n(3),
        rollbacks: n(4),
        cache_hits: n(5),
        cache_misses: n(6),
        deadlocks: n(7),
        temp_files: n(8),
        temp_bytes: Some(n(9)),
        longest_transaction_seconds: r.get::<_, Option<f64>>(10).unwrap_or(0.0).max(0.0),
        lock_waits: n(11),
        xid_age: r.get::<_, Option<i64>>(12).map(|v| v.max(0) as u64),
        database_bytes: sizes
            .iter()
            .map(|s| DatabaseSize {
                name: s.get(0),
                bytes: s.get::<_, Option<i64>>(1).unwrap_or(0).max(0) as u64,
            })
            .collect(),
        replication: Some(replication),
    })
}

/// A byte count or difference of positions; a negative one (a receive position
/// behind replay just after a restart) is nothing outstanding.
fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_position_behind_is_nothing_outstanding() {
        assert_eq!(super::non_negative(-8192), 0);
        assert_eq!(super::non_negative(8192), 8192);
    }
}
