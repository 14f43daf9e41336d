//! Which database engines and versions Berth offers.
//!
//! The list is data: the control plane never branches on an engine; it asks the
//! engine module (crate `berth-engine`) for everything that differs.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A database engine Berth can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// PostgreSQL.
    Postgres,
    /// MariaDB (MySQL-compatible).
    Mariadb,
}

impl EngineKind {
    /// Every engine, in the order they are listed to users.
    pub const ALL: &'static [EngineKind] = &[EngineKind::Postgres, EngineKind::Mariadb];

    /// The engine's name as users type it.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Postgres => "postgres",
            EngineKind::Mariadb => "mariadb",
        }
    }

    /// Major versions Berth can build and run, newest first.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            EngineKind::Postgres => &["15"],
            EngineKind::Mariadb => &["10.11"],
        }
    }

    /// The version used when none is asked for.
    pub fn default_version(self) -> EngineVersion {
        EngineVersion(self.versions()[0].to_owned())
    }

    /// Validates a version for this engine.
    pub fn version(self, v: &str) -> Result<EngineVersion, UnknownVersion> {
        if self.versions().contains(&v) {
            Ok(EngineVersion(v.to_owned()))
        } else {
            Err(UnknownVersion {
                engine: self,
                given: v.to_owned(),
            })
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An engine name that is not one of [`EngineKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown engine {given:?}; choose one of: {known}", given = .0, known = EngineKind::ALL.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", "))]
pub struct UnknownEngine(pub String);

/// A version the engine does not offer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{engine} has no version {given:?}; choose one of: {known}", known = engine.versions().join(", "))]
pub struct UnknownVersion {
    /// The engine asked for.
    pub engine: EngineKind,
    /// The version asked for.
    pub given: String,
}

impl std::str::FromStr for EngineKind {
    type Err = UnknownEngine;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EngineKind::ALL
            .iter()
            .copied()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| UnknownEngine(s.to_owned()))
    }
}

/// A major version that its engine offers (validated by [`EngineKind::version`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EngineVersion(String);

impl EngineVersion {
    /// The version as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EngineVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_and_versions_are_validated() {
        assert_eq!("postgres".parse::<EngineKind>(), Ok(EngineKind::Postgres));
        let err = "oracle".parse::<EngineKind>().expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown engine \"oracle\"; choose one of: postgres, mariadb"
        );
        assert_eq!("mariadb".parse::<EngineKind>(), Ok(EngineKind::Mariadb));
        assert_eq!(EngineKind::Mariadb.default_version().as_str(), "10.11");
        assert!(EngineKind::Postgres.version("15").is_ok());
        let err = EngineKind::Postgres.version("9.6").expect_err("unknown");
        assert!(err.to_string().contains("choose one of: 15"), "{err}");
        assert_eq!(EngineKind::Postgres.default_version().as_str(), "15");
    }
}
