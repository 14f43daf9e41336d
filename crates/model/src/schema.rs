//! The input rules as JSON Schema for the API document, built from the constants the
//! validators use. The document is the contract: a request it allows must pass the
//! server's shape checks, and one it forbids must be refused. The tests below hold
//! each validator and its pattern to the same language.
//!
//! What a pattern cannot say (a size beyond the host, a reserved name, a version of
//! another engine) the server refuses with 422, which the document lists.

use crate::account::{GRANT_PATTERN, IDENT_PATTERN, MAX_IDENT};
use crate::bytes::BYTES_PATTERN;
use crate::name::{MAX_NAME_LEN, NAME_PATTERN};
use crate::size::{CPU_PATTERN, SIZE_PATTERN};
use crate::{CpuMillis, EngineKind};
use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema, Type};

/// Fewest cores a JSON number for `cpus` may say.
pub const CPUS_MIN: f64 = CpuMillis::MIN as f64 / 1000.0;
/// Most cores a JSON number for `cpus` may say.
pub const CPUS_MAX: f64 = CpuMillis::MAX as f64 / 1000.0;

fn string(pattern: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
}

/// `value` or JSON `null` (the server reads `null` as absent).
fn or_null(value: impl Into<Schema>) -> Schema {
    AnyOfBuilder::new()
        .item(value.into())
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

/// An instance or parameter-group name.
pub fn instance_name() -> Schema {
    string(NAME_PATTERN)
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_LEN))
        .description(Some(
            "Lowercase letters, digits and hyphens, starting with a letter, not ending with a hyphen.",
        ))
        .into()
}

/// An optional parameter-group name.
pub fn optional_group() -> Schema {
    or_null(instance_name())
}

/// A database or user name.
pub fn ident() -> Schema {
    string(IDENT_PATTERN)
        .min_length(Some(1))
        .max_length(Some(MAX_IDENT))
        .description(Some(
            "Lowercase letters, digits and underscores, starting with a letter or underscore. \
             Reserved names (postgres, root, pg_…) are refused with 422.",
        ))
        .into()
}

/// Grants as `DB:readonly`, `DB:readwrite` or `DB:owner`.
pub fn grants() -> Schema {
    ArrayBuilder::new()
        .items(string(GRANT_PATTERN))
        .description(Some(
            "Access, as `DB:readonly`, `DB:readwrite` or `DB:owner`.",
        ))
        .into()
}

/// An engine name.
pub fn engine() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(EngineKind::ALL.iter().map(|e| e.as_str())))
        .into()
}

/// A major version of any engine; whether it belongs to the engine asked for is
/// checked by the server (422).
pub fn version() -> Schema {
    let mut all: Vec<&str> = EngineKind::ALL
        .iter()
        .flat_map(|e| e.versions().iter().copied())
        .collect();
    all.dedup();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(all))
        .into()
}

/// An optional major version.
pub fn optional_version() -> Schema {
    or_null(version())
}

/// CPU cores as a number or text; above the host's cores is refused with 422.
fn cpus() -> AnyOfBuilder {
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(CPUS_MIN))
                .maximum(Some(CPUS_MAX)),
        )
        .item(string(CPU_PATTERN))
}

/// Optional CPU cores.
pub fn optional_cpus() -> Schema {
    cpus()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "CPU cores: a number from 0.1 to 1024, or text like `0.5`, `2` or `1500m`.",
        ))
        .into()
}

/// A memory or storage size; out of range or beyond the host is refused with 422.
pub fn size() -> Schema {
    string(SIZE_PATTERN)
        .description(Some(
            "A number and a binary unit, like `512MiB`, `2GiB` or `1.5G`. \
             Memory is 128MiB to 4TiB, storage 256MiB to 64TiB, and at most what the host has (else 422).",
        ))
        .into()
}

/// An optional size.
pub fn optional_size() -> Schema {
    or_null(size())
}

/// An optional byte count (`--max-failover-lag`).
pub fn optional_bytes() -> Schema {
    or_null(string(BYTES_PATTERN).description(Some(
        "A whole number of bytes with an optional binary unit, like `512kB`, `4MB` \
                 or `1GiB`; from 1 byte to 64GiB (else 400).",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{DbName, Grant, IdentError, UserName};
    use crate::size::SizeError;
    use crate::spec::Quantity;
    use crate::{InstanceName, MemoryMib, StorageMib};
    use proptest::prelude::*;
    use regex::Regex;

    fn re(p: &str) -> Regex {
        Regex::new(p).expect("pattern compiles")
    }

    /// Strings near the pattern's language (generated from it, then mutated) and
    /// arbitrary ones.
    fn near(pattern: &'static str) -> impl Strategy<Value = String> {
        let inner = &pattern[1..pattern.len() - 1];
        prop_oneof![
            proptest::string::string_regex(inner).expect("pattern generates"),
            (
                proptest::string::string_regex(inner).expect("pattern generates"),
                any::<char>(),
                any::<prop::sample::Index>()
            )
                .prop_map(|(s, c, i)| {
                    let mut v: Vec<char> = s.chars().collect();
                    let at = i.index(v.len() + 1);
                    v.insert(at, c);
                    v.into_iter().collect()
                }),
            "\\PC{0,16}",
        ]
    }

    fn size_shape_ok(r: Result<u64, SizeError>) -> bool {
        !matches!(
            r,
            Err(SizeError::Malformed { .. }
                | SizeError::UnknownUnit { .. }
                | SizeError::MalformedCpus(_))
        )
    }

    proptest! {
        #[test]
        fn instance_names_match_their_pattern(s in near(NAME_PATTERN)) {
            prop_assert_eq!(re(NAME_PATTERN).is_match(&s), InstanceName::try_from(s.as_str()).is_ok(), "{:?}", s);
        }

        #[test]
        fn idents_match_their_pattern(s in near(IDENT_PATTERN)) {
            let shape_ok = |r: Result<DbName, IdentError>| !matches!(r, Err(IdentError::Invalid { .. }));
            prop_assert_eq!(re(IDENT_PATTERN).is_match(&s), shape_ok(s.parse::<DbName>()), "{:?}", s);
            let user_ok = !matches!(s.parse::<UserName>(), Err(IdentError::Invalid { .. }));
            prop_assert_eq!(re(IDENT_PATTERN).is_match(&s), user_ok, "{:?}", s);
        }

        #[test]
        fn grants_match_their_pattern(s in near(GRANT_PATTERN)) {
            let shape_ok = match s.parse::<Grant>() {
                Ok(_) | Err(crate::account::GrantError::Database(IdentError::Reserved { .. })) => true,
                Err(_) => false,
            };
            prop_assert_eq!(re(GRANT_PATTERN).is_match(&s), shape_ok, "{:?}", s);
        }

        #[test]
        fn sizes_match_their_pattern(s in near(SIZE_PATTERN)) {
            let m = size_shape_ok(s.parse::<MemoryMib>().map(MemoryMib::mib));
            let st = size_shape_ok(s.parse::<StorageMib>().map(StorageMib::mib));
            prop_assert_eq!(re(SIZE_PATTERN).is_match(&s), m, "{:?}", s);
            prop_assert_eq!(m, st);
        }

        #[test]
        fn byte_counts_match_their_pattern(s in near(BYTES_PATTERN)) {
            let ok = !matches!(
                crate::bytes::parse_max_failover_lag(&s),
                Err(crate::bytes::BytesError::Malformed(_))
            );
            prop_assert_eq!(re(BYTES_PATTERN).is_match(&s), ok, "{:?}", s);
        }

        #[test]
        fn cpus_text_matches_its_pattern(s in near(CPU_PATTERN)) {
            let ok = size_shape_ok(s.parse::<CpuMillis>().map(|c| u64::from(c.millis())));
            prop_assert_eq!(re(CPU_PATTERN).is_match(&s), ok, "{:?}", s);
        }

        #[test]
        fn every_cpus_number_in_range_parses(f in CPUS_MIN..=CPUS_MAX) {
            let q: Quantity = serde_json::from_value(serde_json::json!(f)).expect("number");
            prop_assert!(q.text().parse::<CpuMillis>().is_ok(), "{} -> {}", f, q.text());
        }
    }

    #[test]
    fn versions_and_engines_are_enumerated() {
        let v = serde_json::to_value(version()).expect("json");
        assert_eq!(v["enum"], serde_json::json!(["15", "10.11"]));
        let e = serde_json::to_value(engine()).expect("json");
        assert_eq!(e["enum"], serde_json::json!(["postgres", "mariadb"]));
    }
}
