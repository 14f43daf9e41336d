//! Bootstrap of the data directory, decided from a recorded state and what the
//! directory holds — never by deleting what is there.
//!
//! Invariant: the agent deletes files in the data directory only when its own record
//! on the volume says it started a bootstrap there (`initializing`), and that record
//! is written before the first file goes into a directory Berth found absent or empty.
//! A directory holding a database without the record (a restored or cloned volume, or
//! one made by an older Berth) is adopted; anything else is refused, left untouched,
//! and reported through the agent's health.

use crate::{AgentConfig, AgentError, Reaper, Result};
use berth_engine::DataDirState;
use nix::unistd::{chown, User};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::{info, warn};

/// The bootstrap state Berth recorded on the volume, outside the data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Recorded {
    /// Berth found the directory absent or empty and began making a database in it.
    Initializing,
    /// The directory holds a database Berth may start.
    Ready,
}

/// How a directory came to be `ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum How {
    /// Berth made the database.
    Bootstrapped,
    /// The database was there already; Berth took it as it was.
    Adopted,
    /// Berth copied it from the instance's primary (a replica).
    Cloned,
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    state: Recorded,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    how: Option<How>,
}

/// What to do with the data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Make a new database in an absent or empty directory.
    Bootstrap,
    /// A replica's absent or empty directory: copy the primary's database into it.
    Clone,
    /// Berth's own bootstrap did not finish: clear what it made and bootstrap again.
    Redo,
    /// A finished database without Berth's record: record it as ready, touch nothing.
    Adopt,
    /// A database Berth recorded as ready: start it.
    Start,
    /// Leave everything as it is and do not start the engine (why).
    Refuse(String),
}

/// Decides from what was recorded and what the directory holds, and whether the
/// member is a replica (whose empty directory is cloned, never bootstrapped: a
/// replica with a database of its own would follow nobody). Pure.
pub(crate) fn decide(recorded: Option<Recorded>, data: &DataDirState, replica: bool) -> Decision {
    match decide_primary(recorded, data) {
        Decision::Bootstrap if replica => Decision::Clone,
        other => other,
    }
}

fn decide_primary(recorded: Option<Recorded>, data: &DataDirState) -> Decision {
    use DataDirState as D;
    match (recorded, data) {
        (_, D::Incompatible(why)) => Decision::Refuse(format!(
            "the data directory cannot be opened: {why}; run the instance with the engine version that made it"
        )),
        (None, D::Absent | D::Empty) => Decision::Bootstrap,
        (None, D::Complete) => Decision::Adopt,
        (None, D::Partial(what)) => Decision::Refuse(format!(
            "the data directory holds {what}, which is not a finished database, and Berth has no record of making it; \
             restore a complete data directory, or empty it to start a new database"
        )),
        (None | Some(Recorded::Initializing), D::Foreign(names)) => Decision::Refuse(format!(
            "the data directory holds files that are not the engine's ({names}); \
             move them away (an empty directory starts a new database)"
        )),
        (Some(Recorded::Initializing), D::Absent | D::Empty) => Decision::Bootstrap,
        (Some(Recorded::Initializing), D::Partial(_) | D::Complete) => Decision::Redo,
        (Some(Recorded::Ready), D::Complete | D::Partial(_)) => Decision::Start,
        (Some(Recorded::Ready), D::Absent | D::Empty) => Decision::Refuse(
            "Berth made a database on this volume, but its data directory is now missing or empty; \
             a lost database is not replaced by an empty one: restore the data directory, or \
             delete berth-bootstrap.json on the volume to start a new database"
                .into(),
        ),
        (Some(Recorded::Ready), D::Foreign(names)) => Decision::Refuse(format!(
            "Berth made a database on this volume, but its data directory now holds only files that are \
             not the engine's ({names}); restore the data directory"
        )),
    }
}

/// Where the record is kept: on the volume, beside (not inside) the data directory.
pub(crate) fn record_path(config: &AgentConfig) -> PathBuf {
    config.layout.volume.join("berth-bootstrap.json")
}

fn read_record(path: &Path) -> Option<Recorded> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str::<Record>(&text) {
        Ok(r) => Some(r.state),
        Err(e) => {
            // Written by rename, so a torn file is not expected; without a trusted
            // record nothing is deleted, which is the safe reading.
            warn!(path = %path.display(), error = %e, "unreadable bootstrap record; ignoring it");
            None
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Io { what, source }
}

/// Writes the record durably: temporary file, fsync, rename, fsync of the directory.
fn write_record(path: &Path, state: Recorded, how: Option<How>) -> Result<()> {
    let what = || path.display().to_string();
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(&Record { state, how })
        .map_err(|e| AgentError::Bootstrap(format!("encoding the bootstrap record: {e}")))?;
    let mut f = std::fs::File::create(&tmp).map_err(io(what()))?;
    f.write_all(&body).map_err(io(what()))?;
    f.sync_all().map_err(io(what()))?;
    std::fs::rename(&tmp, path).map_err(io(what()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir.display().to_string()))?;
    }
    Ok(())
}

pub(crate) fn owned_dir(path: &Path, user: &User) -> Result<()> {
    std::fs::create_dir_all(path).map_err(io(path.display().to_string()))?;
    chown(path, Some(user.uid), Some(user.gid)).map_err(|e| AgentError::Io {
        what: path.display().to_string(),
        source: e.into(),
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(io(path.display().to_string()))
}

/// What [`ensure_database`] left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The data directory holds a database the engine can be started on.
    Ready,
    /// The agent will not start the engine (why); nothing was changed.
    Refused(String),
}

/// Makes sure the data directory holds a database: bootstraps, redoes Berth's own
/// unfinished bootstrap, adopts a database made elsewhere, or refuses.
pub(crate) async fn ensure_database(
    config: &AgentConfig,
    reaper: &Reaper,
    user: &User,
) -> Result<Outcome> {
    let engine = config.engine();
    let layout = &config.layout;
    let data = engine.data_dir(layout);
    let record = record_path(config);
    let recorded = read_record(&record);
    let seen = engine.inspect_data_dir(&config.version, layout);
    let replication =
        crate::replication::read(config).filter(|r| r.role == berth_model::member::Role::Replica);
    let decision = decide(recorded, &seen, replication.is_some());
    info!(?recorded, ?seen, ?decision, data = %data.display(), "data directory inspected");
    match decision {
        Decision::Start => Ok(Outcome::Ready),
        Decision::Refuse(why) => Ok(Outcome::Refused(why)),
        Decision::Adopt => {
            write_record(&record, Recorded::Ready, Some(How::Adopted))?;
            info!("adopted an existing database; nothing in it was changed");
            Ok(Outcome::Ready)
        }
        Decision::Redo => {
            // Only reached with Berth's `initializing` record: everything here is what
            // its unfinished bootstrap made.
            warn!(data = %data.display(), "an earlier bootstrap did not finish; starting it over");
            std::fs::remove_dir_all(&data).map_err(io(data.display().to_string()))?;
            match &replication {
                Some(repl) => clone(config, reaper, user, &record, repl).await,
                None => bootstrap(config, reaper, user, &record).await,
            }
        }
        Decision::Bootstrap => bootstrap(config, reaper, user, &record).await,
        Decision::Clone => match &replication {
            Some(repl) => clone(config, reaper, user, &record, repl).await,
            None => bootstrap(config, reaper, user, &record).await,
        },
    }
}

/// A former primary's data directory was set aside: the new primary's copied in,
/// like a new replica's.
pub(crate) async fn reclone(
    config: &AgentConfig,
    reaper: &Reaper,
    user: &User,
    repl: &berth_model::agent::Replication,
) -> Result<()> {
    clone(config, reaper, user, &record_path(config), repl)
        .await
        .map(|_| ())
}

/// A replica's first start: the primary's database copied into the empty directory,
/// under the same `initializing` record as a bootstrap (an interrupted clone is
/// Berth's own unfinished work, cleared and redone).
async fn clone(
    config: &AgentConfig,
    reaper: &Reaper,
    user: &User,
    record: &Path,
    repl: &berth_model::agent::Replication,
) -> Result<Outcome> {
    let data = config.engine().data_dir(&config.layout);
    let started = Instant::now();
    write_record(record, Recorded::Initializing, None)?;
    owned_dir(&data, user)?;
    crate::replication::clone(config, reaper, user, repl).await?;
    write_record(record, Recorded::Ready, Some(How::Cloned))?;
    info!(
        millis = started.elapsed().as_millis() as u64,
        "data directory cloned from the primary"
    );
    Ok(Outcome::Ready)
}

async fn bootstrap(
    config: &AgentConfig,
    reaper: &Reaper,
    user: &User,
    record: &Path,
) -> Result<Outcome> {
    let engine = config.engine();
    let layout = &config.layout;
    let data = engine.data_dir(layout);
    let started = Instant::now();
    info!(data = %data.display(), "bootstrapping a new database");
    // Recorded before the first file goes into the directory, so a crash from here on
    // is recognised as Berth's own unfinished work.
    write_record(record, Recorded::Initializing, None)?;
    owned_dir(&data, user)?;
    let var = engine.bootstrap_secret_var();
    let secret = match &config.bootstrap_secret {
        Some(s) => s.clone(),
        None => std::env::var(var).map_err(|_| AgentError::Config(format!("{var} is not set")))?,
    };
    let secret_file = layout.run_dir.join("bootstrap-secret");
    std::fs::write(&secret_file, &secret).map_err(io("bootstrap secret file"))?;
    chown(&secret_file, Some(user.uid), Some(user.gid)).map_err(|e| AgentError::Io {
        what: "bootstrap secret file".into(),
        source: e.into(),
    })?;
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600))
        .map_err(io("bootstrap secret file"))?;
    let mut result = Ok(());
    for spec in engine.initialize_commands(&config.version, layout, &secret_file, &secret) {
        let exit = reaper
            .run(
                &mut crate::supervisor::engine_command(&spec, user),
                spec.stdin.as_deref(),
            )
            .await
            .map_err(io(format!("running {}", spec.program)));
        match exit {
            Ok(exit) if exit.success() => {}
            Ok(exit) => {
                result = Err(AgentError::Bootstrap(format!(
                    "{} failed with {exit}",
                    spec.program
                )));
                break;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let _ = std::fs::remove_file(&secret_file);
    result?;
    write_record(record, Recorded::Ready, Some(How::Bootstrapped))?;
    info!(
        millis = started.elapsed().as_millis() as u64,
        "database bootstrapped"
    );
    Ok(Outcome::Ready)
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataDirState as D;

    fn is_refused(d: &Decision) -> bool {
        matches!(d, Decision::Refuse(_))
    }

    #[test]
    fn every_recorded_state_and_directory_state() {
        let partial = D::Partial("PostgreSQL files without global/pg_control".into());
        let foreign = D::Foreign("notes.txt".into());
        let old = D::Incompatible("PostgreSQL 14".into());
        let init = Some(Recorded::Initializing);
        let ready = Some(Recorded::Ready);
        let table: Vec<(Option<Recorded>, &D, Decision)> = vec![
            // A new volume, or one an older Berth made before its first file.
            (None, &D::Absent, Decision::Bootstrap),
            (None, &D::Empty, Decision::Bootstrap),
            // A restored, cloned or older Berth volume: taken as it is.
            (None, &D::Complete, Decision::Adopt),
            // Berth's own bootstrap that did not finish: PG_VERSION alone, or even a
            // complete-looking directory, is redone — nobody has used it yet.
            (init, &D::Absent, Decision::Bootstrap),
            (init, &D::Empty, Decision::Bootstrap),
            (init, &partial, Decision::Redo),
            (init, &D::Complete, Decision::Redo),
            (ready, &D::Complete, Decision::Start),
            (ready, &partial, Decision::Start),
        ];
        for (recorded, data, want) in table {
            assert_eq!(decide(recorded, data, false), want, "{recorded:?} {data:?}");
            // A replica clones where a primary would bootstrap; nothing else differs.
            let replica = if want == Decision::Bootstrap {
                Decision::Clone
            } else {
                want
            };
            assert_eq!(
                decide(recorded, data, true),
                replica,
                "{recorded:?} {data:?}"
            );
        }
        // Never deleted, never started: half a database nobody recorded, foreign files,
        // another version, or a recorded database that has gone.
        for (recorded, data) in [
            (None, &partial),
            (None, &foreign),
            (init, &foreign),
            (ready, &foreign),
            (ready, &D::Absent),
            (ready, &D::Empty),
            (None, &old),
            (init, &old),
            (ready, &old),
        ] {
            for replica in [false, true] {
                let d = decide(recorded, data, replica);
                assert!(is_refused(&d), "{recorded:?} {data:?} gave {d:?}");
            }
        }
    }

    #[test]
    fn refusals_name_what_was_found() {
        let d = decide(None, &D::Foreign("notes.txt".into()), false);
        let Decision::Refuse(why) = d else {
            panic!("not refused")
        };
        assert!(
            why.contains("notes.txt") && why.contains("not the engine's"),
            "{why}"
        );
    }

    #[test]
    fn the_record_round_trips_durably() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("berth-bootstrap.json");
        assert_eq!(read_record(&path), None);
        write_record(&path, Recorded::Initializing, None).expect("write");
        assert_eq!(read_record(&path), Some(Recorded::Initializing));
        write_record(&path, Recorded::Ready, Some(How::Adopted)).expect("write");
        assert_eq!(read_record(&path), Some(Recorded::Ready));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("\"adopted\""), "{text}");
        std::fs::write(&path, "{not json").expect("write");
        assert_eq!(
            read_record(&path),
            None,
            "an unreadable record deletes nothing"
        );
    }
}
