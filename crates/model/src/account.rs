//! Databases and users inside an instance: names, and the three levels of access.
//!
//! Names are restricted to lowercase letters, digits and underscores, starting with
//! a letter or underscore, so that they are identifiers in both engines without
//! case folding surprises. They are still quoted wherever they reach SQL; the
//! restriction is defence in depth, not the only defence.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest identifier: MariaDB allows 64 for databases but 80 for users, PostgreSQL
/// 63 for both; 63 fits everywhere.
pub const MAX_IDENT: usize = 63;

/// The shape `valid_ident` accepts, as a regular expression for the API document
/// (reserved names match it and are refused separately); `crate::schema` tests that
/// the two agree.
pub const IDENT_PATTERN: &str = "^[a-z_][a-z0-9_]{0,62}$";

/// The shape of a grant (`DB:LEVEL`) as a regular expression for the API document.
pub const GRANT_PATTERN: &str = "^[a-z_][a-z0-9_]{0,62}:(readonly|readwrite|owner)$";

/// Why a database or user name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    /// Bad shape.
    #[error("{what} name {given:?} is not valid; use 1 to {MAX_IDENT} lowercase letters, digits and underscores, starting with a letter or underscore")]
    Invalid {
        /// "database" or "user".
        what: &'static str,
        /// As given.
        given: String,
    },
    /// Reserved by an engine or by Berth.
    #[error("{what} name {given:?} is reserved; pick another")]
    Reserved {
        /// "database" or "user".
        what: &'static str,
        /// As given.
        given: String,
    },
}

fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_IDENT
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

const RESERVED_DATABASES: &[&str] = &[
    "postgres",
    "template0",
    "template1",
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
];
const RESERVED_USERS: &[&str] = &[
    "postgres",
    "root",
    "mysql",
    "public",
    "mariadb_sys",
    "berth",
];

macro_rules! ident {
    ($(#[$doc:meta])* $name:ident, $what:literal, $reserved:expr, $reserved_prefixes:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The name as text (already validated; still quote it in SQL).
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdentError;
            fn try_from(s: String) -> Result<Self, IdentError> {
                if !valid_ident(&s) {
                    return Err(IdentError::Invalid { what: $what, given: s });
                }
                let prefixes: &[&str] = $reserved_prefixes;
                if $reserved.contains(&s.as_str()) || prefixes.iter().any(|p| s.starts_with(p)) {
                    return Err(IdentError::Reserved { what: $what, given: s });
                }
                Ok(Self(s))
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdentError;
            fn from_str(s: &str) -> Result<Self, IdentError> {
                Self::try_from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

ident!(
    /// A database inside an instance.
    DbName, "database", RESERVED_DATABASES, &["pg_"]
);
ident!(
    /// A login user inside an instance.
    UserName, "user", RESERVED_USERS, &["pg_", "berth_"]
);

/// How much a user may do in a database.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum GrantLevel {
    /// Read tables.
    Readonly,
    /// Read and change rows.
    Readwrite,
    /// Everything, including creating and dropping tables.
    Owner,
}

impl GrantLevel {
    /// The level as users type it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Readonly => "readonly",
            Self::Readwrite => "readwrite",
            Self::Owner => "owner",
        }
    }
}

/// Access of one user to one database.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct Grant {
    /// The database.
    #[schema(value_type = String)]
    pub database: DbName,
    /// The level.
    pub level: GrantLevel,
}

/// A `--grant` that is not `DB:readonly|readwrite|owner`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// No colon or an unknown level.
    #[error("grant {0:?} is not DB:LEVEL; LEVEL is readonly, readwrite or owner")]
    Malformed(String),
    /// Bad database name.
    #[error(transparent)]
    Database(#[from] IdentError),
}

impl std::str::FromStr for Grant {
    type Err = GrantError;
    fn from_str(s: &str) -> Result<Self, GrantError> {
        let (db, level) = s
            .rsplit_once(':')
            .ok_or_else(|| GrantError::Malformed(s.to_owned()))?;
        let level = match level {
            "readonly" => GrantLevel::Readonly,
            "readwrite" => GrantLevel::Readwrite,
            "owner" => GrantLevel::Owner,
            _ => return Err(GrantError::Malformed(s.to_owned())),
        };
        Ok(Grant {
            database: db.parse()?,
            level,
        })
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.database, self.level.as_str())
    }
}

/// Quotes an identifier for PostgreSQL (`"…"`, doubling quotes).
pub fn quote_pg(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quotes an identifier for MariaDB (`` `…` ``, doubling backticks).
pub fn quote_my(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// Quotes a string literal (doubled single quotes). Used only for values Berth
/// generates (alphanumeric passwords, hashes), never for user input.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_and_grants() {
        assert!("app".parse::<DbName>().is_ok());
        assert!("_tmp_1".parse::<UserName>().is_ok());
        for bad in [
            "",
            "App",
            "1db",
            "a-b",
            "a b",
            "x\"; drop",
            "a`b",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(bad.parse::<DbName>(), Err(IdentError::Invalid { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            "postgres".parse::<DbName>(),
            Err(IdentError::Reserved { .. })
        ));
        assert!(matches!(
            "pg_catalog".parse::<DbName>(),
            Err(IdentError::Reserved { .. })
        ));
        assert!(matches!(
            "root".parse::<UserName>(),
            Err(IdentError::Reserved { .. })
        ));
        let g: Grant = "app:readonly".parse().expect("grant");
        assert_eq!(g.level, GrantLevel::Readonly);
        assert_eq!(g.to_string(), "app:readonly");
        assert!(matches!(
            "app".parse::<Grant>(),
            Err(GrantError::Malformed(_))
        ));
        assert!(matches!(
            "app:admin".parse::<Grant>(),
            Err(GrantError::Malformed(_))
        ));
        assert!(matches!(
            "Bad:owner".parse::<Grant>(),
            Err(GrantError::Database(_))
        ));
    }

    #[test]
    fn quoting_doubles_the_quote() {
        assert_eq!(quote_pg("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_my("a`b"), "`a``b`");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    proptest! {
        #[test]
        fn accepted_names_need_no_quoting_at_all(s in "\\PC{0,70}") {
            if let Ok(n) = s.parse::<DbName>() {
                prop_assert!(n.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
                prop_assert_eq!(quote_pg(n.as_str()), format!("\"{}\"", n));
            }
            let _ = s.parse::<UserName>();
            let _ = s.parse::<Grant>();
        }
    }
}
