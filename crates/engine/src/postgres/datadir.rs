//! What a PostgreSQL data directory holds, judged from its files.

use crate::DataDirState;
use std::path::Path;

/// Entries only PostgreSQL puts in a data directory.
const PG_ENTRIES: &[&str] = &[
    "PG_VERSION",
    "global",
    "base",
    "pg_wal",
    "pg_xact",
    "pg_multixact",
    "pg_subtrans",
    "pg_tblspc",
    "pg_twophase",
    "pg_stat",
    "pg_stat_tmp",
    "pg_snapshots",
    "pg_serial",
    "pg_notify",
    "pg_replslot",
    "pg_logical",
    "pg_commit_ts",
    "pg_dynshmem",
    "postgresql.conf",
    "postgresql.auto.conf",
    "pg_hba.conf",
    "pg_ident.conf",
    "postmaster.opts",
    "postmaster.pid",
];

/// `PG_VERSION` is written early by initdb, so it alone proves nothing; `global/pg_control`
/// is written once the cluster exists. Both, with the right major version, make a
/// data directory PostgreSQL can start.
pub(super) fn judge_data_dir(data: &Path, names: &[String], major: &str) -> DataDirState {
    let has = |n: &str| names.iter().any(|x| x == n);
    if has("PG_VERSION") && data.join("global").join("pg_control").is_file() {
        let found = std::fs::read_to_string(data.join("PG_VERSION")).unwrap_or_default();
        let found = found.trim();
        return if found == major {
            DataDirState::Complete
        } else {
            DataDirState::Incompatible(format!(
                "it holds PostgreSQL {found:?} data and this instance runs PostgreSQL {major}"
            ))
        };
    }
    if names.iter().any(|n| PG_ENTRIES.contains(&n.as_str())) {
        let missing = if has("PG_VERSION") {
            "global/pg_control"
        } else {
            "PG_VERSION"
        };
        return DataDirState::Partial(format!("PostgreSQL files without {missing}"));
    }
    DataDirState::Foreign(crate::some_names(names))
}

#[cfg(test)]
mod tests {
    use super::super::Postgres;
    use crate::{DataDirState, Engine, Layout};
    use berth_model::EngineKind;

    #[test]
    fn a_data_directory_is_complete_only_with_pg_control_and_the_right_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout {
            volume: dir.path().to_owned(),
            run_dir: dir.path().join("run"),
        };
        let v15 = EngineKind::Postgres.version("15").expect("version");
        let data = layout.volume.join("data");
        let seen = || Postgres.inspect_data_dir(&v15, &layout);
        assert_eq!(seen(), DataDirState::Absent);
        std::fs::create_dir_all(data.join("global")).expect("mkdir");
        assert_eq!(
            seen(),
            DataDirState::Partial("PostgreSQL files without PG_VERSION".into())
        );
        // initdb writes PG_VERSION early: alone it proves nothing.
        std::fs::write(data.join("PG_VERSION"), "15\n").expect("write");
        assert!(matches!(seen(), DataDirState::Partial(w) if w.contains("pg_control")));
        std::fs::write(data.join("global/pg_control"), b"x").expect("write");
        assert_eq!(seen(), DataDirState::Complete);
        std::fs::write(data.join("PG_VERSION"), "14\n").expect("write");
        assert!(matches!(seen(), DataDirState::Incompatible(w) if w.contains("\"14\"")));
        std::fs::remove_dir_all(&data).expect("rm");
        std::fs::create_dir_all(&data).expect("mkdir");
        assert_eq!(seen(), DataDirState::Empty);
        std::fs::write(data.join("notes.txt"), "mine").expect("write");
        assert_eq!(seen(), DataDirState::Foreign("notes.txt".into()));
    }
}
