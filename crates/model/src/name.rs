//! Instance names: what users type, and part of every Docker object name.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest accepted name. Docker names are longer, but the name also goes into
/// DNS-like places (container hostnames, network names) where 63 is the label limit,
/// and Berth adds a prefix and a suffix.
pub const MAX_NAME_LEN: usize = 40;

/// The rule [`InstanceName::try_from`] enforces, as a regular expression (the same in
/// ECMA-262 and Rust syntax) for the API document; `crate::schema` tests that the two agree.
pub const NAME_PATTERN: &str = "^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$";

/// A validated instance name: lowercase letters, digits and hyphens, starting with a
/// letter, not ending with a hyphen, at most [`MAX_NAME_LEN`] characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceName(String);

/// Why a name was refused; each message says what a valid name looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("the name is empty; use 1 to {MAX_NAME_LEN} lowercase letters, digits and hyphens, starting with a letter")]
    Empty,
    /// The name is too long.
    #[error("the name {0:?} is {1} characters long; use at most {MAX_NAME_LEN}")]
    TooLong(String, usize),
    /// The name does not start with a letter.
    #[error("the name {0:?} must start with a lowercase letter (a-z)")]
    BadStart(String),
    /// The name ends with a hyphen.
    #[error("the name {0:?} must not end with a hyphen")]
    BadEnd(String),
    /// The name holds a character outside `[a-z0-9-]`.
    #[error("the name {name:?} contains {ch:?}; use only lowercase letters, digits and hyphens")]
    BadChar {
        /// The name as given.
        name: String,
        /// The first offending character.
        ch: char,
    },
}

impl InstanceName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InstanceName {
    type Error = NameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        let len = s.chars().count();
        if len > MAX_NAME_LEN {
            return Err(NameError::TooLong(s, len));
        }
        if let Some(ch) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadChar { name: s, ch });
        }
        if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(NameError::BadStart(s));
        }
        if s.ends_with('-') {
            return Err(NameError::BadEnd(s));
        }
        Ok(Self(s))
    }
}

impl TryFrom<&str> for InstanceName {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::try_from(s.to_owned())
    }
}

impl std::str::FromStr for InstanceName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from(s)
    }
}

impl From<InstanceName> for String {
    fn from(n: InstanceName) -> String {
        n.0
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["db1", "a", "orders-eu-1", "x0"] {
            assert!(InstanceName::try_from(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_bad_names_with_a_reason() {
        type Check = fn(&NameError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, NameError::Empty)),
            ("1db", |e| matches!(e, NameError::BadStart(_))),
            ("-db", |e| matches!(e, NameError::BadStart(_))),
            ("db-", |e| matches!(e, NameError::BadEnd(_))),
            ("DB1", |e| matches!(e, NameError::BadChar { ch: 'D', .. })),
            ("db_1", |e| matches!(e, NameError::BadChar { ch: '_', .. })),
            ("db;drop", |e| {
                matches!(e, NameError::BadChar { ch: ';', .. })
            }),
            ("db 1", |e| matches!(e, NameError::BadChar { ch: ' ', .. })),
        ];
        for (input, check) in cases {
            let err = InstanceName::try_from(*input).expect_err(input);
            assert!(check(&err), "{input:?} gave {err:?}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            InstanceName::try_from(long.as_str()),
            Err(NameError::TooLong(_, 41))
        ));
    }

    proptest! {
        #[test]
        fn valid_names_are_safe_docker_and_dns_fragments(s in "\\PC{0,50}") {
            if let Ok(n) = InstanceName::try_from(s.as_str()) {
                prop_assert!(n.as_str().len() <= MAX_NAME_LEN);
                prop_assert!(n.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                let back: InstanceName = serde_json::from_value(serde_json::json!(n.as_str())).expect("round trip");
                prop_assert_eq!(back, n);
            }
        }

        #[test]
        fn generated_valid_names_are_accepted(s in "[a-z]([a-z0-9-]{0,38}[a-z0-9])?") {
            prop_assert!(InstanceName::try_from(s.as_str()).is_ok());
        }
    }
}
