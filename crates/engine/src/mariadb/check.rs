//! `check_consistency` for MariaDB: `CHECK TABLE … EXTENDED` of every table outside
//! the system schemas, and a full count of each one's rows, over the local socket.

use crate::{EngineError, Layout, Result};
use berth_model::verify::ConsistencyReport;
use berth_model::EngineKind;
use mysql_async::prelude::Queryable;

const SYSTEM: &str = "('mysql', 'information_schema', 'performance_schema', 'sys')";

fn refused(e: mysql_async::Error) -> EngineError {
    EngineError::Refused {
        engine: EngineKind::Mariadb,
        reason: e.to_string(),
    }
}

/// `name` as a quoted identifier.
fn quoted(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// What `CHECK TABLE` said that is not a clean bill: its rows are (table, op,
/// message type, message text); the last one's type is `status`, `OK` when fine. An
/// engine that cannot check (MEMORY, say) answers only a `note` that it does not
/// support it: nothing wrong was found.
fn problems(table: &str, rows: &[(String, String, String, String)]) -> Vec<String> {
    let ok = rows
        .last()
        .is_some_and(|(_, _, kind, text)| kind == "status" && text == "OK");
    let only_notes = !rows.is_empty() && rows.iter().all(|(_, _, kind, _)| kind == "note");
    if ok || only_notes {
        return vec![];
    }
    let said: Vec<String> = rows
        .iter()
        .filter(|(_, _, kind, _)| kind != "note")
        .map(|(_, _, kind, text)| format!("{kind}: {text}"))
        .collect();
    vec![format!("table {table}: {}", said.join("; "))]
}

pub(crate) async fn check(layout: &Layout) -> Result<ConsistencyReport> {
    let mut conn = super::local_conn(layout).await?;
    let result = async {
        let mut report = ConsistencyReport::default();
        let databases: Option<i64> = conn
            .query_first(format!(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN {SYSTEM}"
            ))
            .await
            .map_err(refused)?;
        report.databases = u32::try_from(databases.unwrap_or(0)).unwrap_or(0);
        let tables: Vec<(String, String)> = conn
            .query(format!(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN {SYSTEM} \
                 ORDER BY TABLE_SCHEMA, TABLE_NAME"
            ))
            .await
            .map_err(refused)?;
        for (db, t) in &tables {
            let name = format!("{}.{}", quoted(db), quoted(t));
            let shown = format!("{db}.{t}");
            match conn
                .query::<(String, String, String, String), _>(format!(
                    "CHECK TABLE {name} EXTENDED"
                ))
                .await
            {
                Ok(rows) => report.problems.extend(problems(&shown, &rows)),
                Err(e) => report
                    .problems
                    .push(format!("table {shown} cannot be checked: {e}")),
            }
            match conn
                .query_first::<i64, _>(format!("SELECT COUNT(*) FROM {name}"))
                .await
            {
                Ok(n) => {
                    report.tables += 1;
                    report.rows += u64::try_from(n.unwrap_or(0)).unwrap_or(0);
                }
                Err(e) => report
                    .problems
                    .push(format!("table {shown} cannot be read: {e}")),
            }
        }
        Ok(report)
    }
    .await;
    let _ = conn.disconnect().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, text: &str) -> (String, String, String, String) {
        ("app.t".into(), "check".into(), kind.into(), text.into())
    }

    #[test]
    fn only_a_last_ok_status_is_clean() {
        assert!(problems("app.t", &[row("status", "OK")]).is_empty());
        assert!(problems("app.t", &[row("note", "fine"), row("status", "OK")]).is_empty());
        let unsupported = [row(
            "note",
            "The storage engine for the table doesn't support check",
        )];
        assert!(problems("app.t", &unsupported).is_empty());
        let bad = problems(
            "app.t",
            &[row("error", "Corrupt"), row("status", "Operation failed")],
        );
        assert_eq!(
            bad,
            ["table app.t: error: Corrupt; status: Operation failed"]
        );
        assert_eq!(problems("app.t", &[]).len(), 1);
    }

    #[test]
    fn identifiers_are_quoted_whatever_they_hold() {
        assert_eq!(quoted("a`b"), "`a``b`");
    }
}
