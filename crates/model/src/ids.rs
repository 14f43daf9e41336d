//! Identifier newtypes. Ids are opaque, stable and never reused; names are for people.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String)]
        pub struct $name(uuid::Uuid);

        impl $name {
            /// A fresh random id.
            pub fn new_random() -> Self {
                Self(uuid::Uuid::new_v4())
            }

            /// The first eight hex digits: enough to tell objects apart in Docker names.
            pub fn short(&self) -> String {
                self.0.simple().to_string()[..8].to_owned()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// Identifies an instance for its whole life, across renames and name reuse.
    InstanceId
);
uuid_id!(
    /// Identifies a task (one operation a user or reconcile started).
    TaskId
);
uuid_id!(
    /// Identifies one Berth installation, so that several installations (or test runs)
    /// sharing a Docker engine never touch each other's objects.
    SiteId
);

/// The ordinal of a member within its instance: `berth-<instance>-<n>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemberId(pub u16);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A tenant. Only the `default` project exists until projects land.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProjectId(String);

impl ProjectId {
    /// The project every instance belongs to until projects are a feature.
    pub fn default_project() -> Self {
        Self("default".to_owned())
    }

    /// The project's id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ProjectId {
    type Err = crate::name::NameError;
    /// Project ids follow the rules of instance names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::InstanceName::try_from(s).map(|n| Self(n.into()))
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let id = InstanceId::new_random();
        let parsed: InstanceId = id.to_string().parse().expect("parses");
        assert_eq!(id, parsed);
        assert_eq!(id.short().len(), 8);
        assert!(id.to_string().replace('-', "").starts_with(&id.short()));
    }

    #[test]
    fn garbage_is_not_an_id() {
        assert!("db1".parse::<TaskId>().is_err());
    }
}
