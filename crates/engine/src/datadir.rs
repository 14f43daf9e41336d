//! What a data directory holds: the shared part of each engine's judgement.

use std::path::Path;

/// What a data directory holds, as the engine judges it from its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataDirState {
    /// There is no data directory.
    Absent,
    /// The directory exists and holds nothing.
    Empty,
    /// A finished database of this engine and version: it can be started.
    Complete,
    /// Some of the engine's files, but not a finished database (what is missing).
    Partial(String),
    /// Files the engine does not recognise as its own (which ones).
    Foreign(String),
    /// A finished database this version cannot open (why).
    Incompatible(String),
}

/// Absent and empty directories are told apart here; a directory with entries goes to
/// the engine's `judge` with its entry names, sorted so messages are stable.
pub(crate) fn inspect_dir(
    dir: &Path,
    judge: impl FnOnce(&[String]) -> DataDirState,
) -> DataDirState {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return DataDirState::Absent,
        Err(e) => return DataDirState::Foreign(format!("{} cannot be read: {e}", dir.display())),
        Ok(m) if !m.is_dir() => {
            return DataDirState::Foreign(format!("{} is not a directory", dir.display()))
        }
        Ok(_) => {}
    }
    let names = match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
        Err(e) => return DataDirState::Foreign(format!("{} cannot be read: {e}", dir.display())),
    };
    if names.is_empty() {
        DataDirState::Empty
    } else {
        judge(&names)
    }
}

/// A short list of names for a message: the first few, then how many more.
pub(crate) fn some_names(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    match names.len().saturating_sub(shown.len()) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}
