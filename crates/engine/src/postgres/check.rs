//! `check_consistency` for PostgreSQL: amcheck over every table and B-tree index of
//! every database, and a full count of every table's rows, over the local socket.
//!
//! `verify_heapam` reads each table's pages (and its TOAST) and reports what is
//! damaged; `bt_index_check` with `heapallindexed` checks each index's structure and
//! that it points at every row. Counting reads each table to its end once more, the
//! way a restore's user would. Both come with PostgreSQL's contrib modules, which
//! Debian's server package ships.

use crate::{EngineError, Layout, Result};
use berth_model::verify::ConsistencyReport;
use berth_model::EngineKind;
use std::time::Duration;

/// At most this many problems are listed per table or index.
const PROBLEMS_PER_OBJECT: i64 = 3;

fn refused(e: tokio_postgres::Error) -> EngineError {
    EngineError::Refused {
        engine: EngineKind::Postgres,
        reason: e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string()),
    }
}

async fn client(layout: &Layout, db: &str) -> Result<tokio_postgres::Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(&layout.run_dir)
        .user("postgres")
        .dbname(db)
        .connect_timeout(Duration::from_secs(5));
    super::connect(&config).await
}

pub(crate) async fn check(layout: &Layout) -> Result<ConsistencyReport> {
    let postgres = client(layout, "postgres").await?;
    let databases: Vec<String> = postgres
        .query(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate \
             ORDER BY datname",
            &[],
        )
        .await
        .map_err(refused)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(postgres);
    let mut report = ConsistencyReport::default();
    for db in &databases {
        report.databases += 1;
        let c = client(layout, db).await?;
        check_database(&c, db, &mut report).await?;
    }
    Ok(report)
}

async fn check_database(
    c: &tokio_postgres::Client,
    db: &str,
    report: &mut ConsistencyReport,
) -> Result<()> {
    // amcheck in a schema of its own unless the restored database has it already
    // (then wherever it is); its functions are called by that schema's name, so no
    // search_path or missing `public` is in the way.
    c.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS berth_verify; \
         CREATE EXTENSION IF NOT EXISTS amcheck SCHEMA berth_verify",
    )
    .await
    .map_err(refused)?;
    let amcheck: String = c
        .query_one(
            "SELECT quote_ident(n.nspname) FROM pg_extension e \
             JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'",
            &[],
        )
        .await
        .map_err(refused)?
        .get(0);
    // Tables and materialized views of every schema but the system's; the name comes
    // quoted from the server itself.
    let tables = c
        .query(
            "SELECT c.oid::bigint, format('%I.%I', n.nspname, c.relname) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't' \
               AND c.relispopulated \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg\\_toast%' \
             ORDER BY 2",
            &[],
        )
        .await
        .map_err(refused)?;
    for t in &tables {
        let oid: i64 = t.get(0);
        let name: String = t.get(1);
        let damaged = c
            .query(
                &format!(
                    "SELECT coalesce(blkno, -1), msg FROM {amcheck}.verify_heapam(\
                     {oid}::oid::regclass, check_toast => true) LIMIT {PROBLEMS_PER_OBJECT}"
                ),
                &[],
            )
            .await;
        match damaged {
            Ok(rows) => report.problems.extend(rows.iter().map(|r| {
                let block: i64 = r.get(0);
                let msg: String = r.get(1);
                format!("table {db}.{name}, block {block}: {msg}")
            })),
            Err(e) => report.problems.push(format!(
                "table {db}.{name} cannot be checked: {}",
                refused(e)
            )),
        }
        match c
            .query_one(&format!("SELECT count(*) FROM {name}"), &[])
            .await
        {
            Ok(row) => {
                report.tables += 1;
                report.rows += u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
            }
            Err(e) => report
                .problems
                .push(format!("table {db}.{name} cannot be read: {}", refused(e))),
        }
    }
    // Every valid B-tree index, the system catalogs' too.
    let indexes = c
        .query(
            "SELECT c.oid::bigint, format('%I.%I', n.nspname, c.relname) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_am a ON a.oid = c.relam \
             WHERE a.amname = 'btree' AND i.indisvalid AND i.indisready \
               AND c.relpersistence <> 't' \
             ORDER BY 2",
            &[],
        )
        .await
        .map_err(refused)?;
    for i in &indexes {
        let oid: i64 = i.get(0);
        let name: String = i.get(1);
        let checked = c
            .query_one(
                &format!(
                    "SELECT {amcheck}.bt_index_check(index => {oid}::oid::regclass, \
                     heapallindexed => true)"
                ),
                &[],
            )
            .await;
        match checked {
            Ok(_) => report.indexes += 1,
            Err(e) => report
                .problems
                .push(format!("index {db}.{name}: {}", refused(e))),
        }
    }
    Ok(())
}
