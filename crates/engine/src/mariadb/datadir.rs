//! What a MariaDB data directory holds, judged from its files.

use crate::DataDirState;
use std::path::Path;

/// The marker older Berth builds wrote as the last step of bootstrap; kept writing it
/// so a volume stays safe with them too.
pub(super) const MARKER: &str = "berth-bootstrapped";

/// Whether an entry is one MariaDB (InnoDB, Aria, the system schemas) makes.
fn is_engine_entry(name: &str) -> bool {
    matches!(
        name,
        "mysql"
            | "ibdata1"
            | "ibtmp1"
            | "ib_buffer_pool"
            | "aria_log_control"
            | "performance_schema"
            | "sys"
            | "mysql_upgrade_info"
            | "ddl_recovery.log"
            | "tc.log"
            | MARKER
    ) || name.starts_with("ib_logfile")
        || name.starts_with("aria_log.")
        || name.starts_with("undo")
}

/// Berth's marker, or the system schema with the InnoDB system tablespace, make a
/// data directory MariaDB can start.
pub(super) fn judge_data_dir(data: &Path, names: &[String]) -> DataDirState {
    let has = |n: &str| names.iter().any(|x| x == n);
    if has(MARKER) || (data.join("mysql").is_dir() && data.join("ibdata1").is_file()) {
        return DataDirState::Complete;
    }
    if names.iter().any(|n| is_engine_entry(n)) {
        let missing = if has("mysql") {
            "ibdata1"
        } else {
            "the mysql system schema"
        };
        return DataDirState::Partial(format!("MariaDB files without {missing}"));
    }
    DataDirState::Foreign(crate::some_names(names))
}

#[cfg(test)]
mod tests {
    use super::super::Mariadb;
    use super::MARKER;
    use crate::{DataDirState, Engine, Layout};
    use berth_model::EngineKind;

    #[test]
    fn a_data_directory_is_complete_with_the_system_schema_or_the_old_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout {
            volume: dir.path().to_owned(),
            run_dir: dir.path().join("run"),
        };
        let v = EngineKind::Mariadb.version("10.11").expect("version");
        let data = layout.volume.join("data");
        let seen = || Mariadb.inspect_data_dir(&v, &layout);
        assert_eq!(seen(), DataDirState::Absent);
        std::fs::create_dir_all(data.join("mysql")).expect("mkdir");
        assert!(matches!(seen(), DataDirState::Partial(w) if w.contains("ibdata1")));
        std::fs::write(data.join("ibdata1"), b"x").expect("write");
        assert_eq!(seen(), DataDirState::Complete);
        std::fs::remove_dir_all(&data).expect("rm");
        std::fs::create_dir_all(&data).expect("mkdir");
        std::fs::write(data.join(MARKER), b"").expect("write");
        assert_eq!(seen(), DataDirState::Complete, "volumes of older builds");
        std::fs::remove_file(data.join(MARKER)).expect("rm");
        for i in 0..7 {
            std::fs::write(data.join(format!("f{i}.txt")), b"").expect("write");
        }
        assert_eq!(
            seen(),
            DataDirState::Foreign("f0.txt, f1.txt, f2.txt, f3.txt, f4.txt and 2 more".into())
        );
    }
}
