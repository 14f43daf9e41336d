//! `probe_role` for PostgreSQL: one bounded probe over the local socket.

use crate::{EngineError, Layout, Result};
use berth_model::agent::{ReplicaReport, RoleReport};
use berth_model::member::Role;
use berth_model::EngineKind;
use std::time::Instant;

/// Works on a primary and a replica alike (the recovery-only functions are only
/// called under `pg_is_in_recovery()`). A replica's lag in seconds is 0 when all it
/// received is replayed: the last replayed commit's age is then idleness, not lag.
const SELF_SQL: &str = "SELECT pg_is_in_recovery(),
  pg_is_in_recovery() OR current_setting('default_transaction_read_only')::bool,
  (SELECT count(*) FROM pg_stat_activity
     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())::int8,
  current_setting('max_connections')::int8,
  CASE WHEN pg_is_in_recovery() THEN
    pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::int8 END,
  CASE WHEN pg_is_in_recovery() THEN
    CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0::float8
    ELSE greatest(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp()))::float8
    END END,
  CASE WHEN pg_is_in_recovery() THEN
    EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') END,
  pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery()
    THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
    ELSE pg_current_wal_lsn() END, '0/0')::int8";

/// On a primary: each walsender, as `pg_stat_replication` has it.
const REPLICAS_SQL: &str = "SELECT coalesce(application_name, ''), coalesce(state, ''),
  sync_state, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::int8,
  extract(epoch FROM replay_lag)::float8
  FROM pg_stat_replication ORDER BY application_name";

pub(crate) async fn probe(layout: &Layout) -> Result<RoleReport> {
    let refused = |e: tokio_postgres::Error| EngineError::NotReady {
        engine: EngineKind::Postgres,
        reason: e.to_string(),
    };
    let client = super::local_client(layout).await?;
    let started = Instant::now();
    let row = client.query_one(SELF_SQL, &[]).await.map_err(refused)?;
    let probe_ms = started.elapsed().as_secs_f64() * 1000.0;
    let in_recovery: bool = row.get(0);
    let role = if in_recovery {
        Role::Replica
    } else {
        Role::Primary
    };
    let replication_running: Option<bool> = row.get(6);
    let mut replicas = vec![];
    if role == Role::Primary {
        for r in client.query(REPLICAS_SQL, &[]).await.map_err(refused)? {
            replicas.push(ReplicaReport {
                name: r.get(0),
                state: r.get(1),
                sync: r.get(2),
                lag_bytes: r.get::<_, Option<i64>>(3).map(non_negative),
                lag_seconds: r.get(4),
            });
        }
    }
    Ok(RoleReport {
        role: Some(role),
        ready: RoleReport::ready_for(role, replication_running),
        read_only: row.get(1),
        replication_running,
        lag_bytes: row.get::<_, Option<i64>>(4).map(non_negative),
        lag_seconds: row.get(5),
        connections: Some(clamp_u32(row.get(2))),
        max_connections: Some(clamp_u32(row.get(3))),
        probe_ms: Some(probe_ms),
        replicas,
        reason: (replication_running == Some(false))
            .then(|| "the WAL receiver is not streaming".to_owned()),
        position: row.get::<_, Option<i64>>(7).map(non_negative),
        term: None,
    })
}

fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn clamp_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}
