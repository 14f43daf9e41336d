//! A byte count as people write it (`512kB`, `4MB`, `1GiB`, `65536`): how far an
//! asynchronous replica may be behind and still be promoted (`--max-failover-lag`).
//!
//! Units are binary, as in [`crate::size`]: `k`, `kB`, `Ki` and `KiB` all mean 1024
//! bytes, and case does not matter. A plain number is bytes. Whole numbers only: a
//! count of bytes has no useful fraction, and `1.5MB` is `1536kB`.

use std::fmt;

/// The shape [`parse_max_failover_lag`] accepts, as a regular expression for the
/// API document (the same in ECMA-262 and Rust syntax). Range limits are checked
/// after parsing; `crate::schema` tests that the parser and the pattern agree.
pub const BYTES_PATTERN: &str = "^[0-9]{1,20} ?([bB]|[kKmMgG][iI]?[bB]?)?$";

/// The largest `--max-failover-lag`: beyond it "at most this far behind" means
/// "any replica", which is what `berth failover --accept-data-loss` is for.
pub const MAX_FAILOVER_LAG: u64 = 64 * GIB;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Why a `--max-failover-lag` was refused; the message names the flag and says what
/// a valid one looks like.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BytesError {
    /// Not a whole number with an optional unit.
    #[error(
        "--max-failover-lag {0:?} is not a size; write a whole number of bytes with an \
         optional unit, like 512kB, 4MB or 1GB"
    )]
    Malformed(String),
    /// Zero, or beyond [`MAX_FAILOVER_LAG`].
    #[error(
        "--max-failover-lag {0} is out of range; give from 1 byte to 64GiB (the default \
         is 1MiB)"
    )]
    OutOfRange(String),
}

/// Parses and checks a `--max-failover-lag`: from 1 byte to [`MAX_FAILOVER_LAG`].
pub fn parse_max_failover_lag(input: &str) -> Result<u64, BytesError> {
    let malformed = || BytesError::Malformed(input.to_owned());
    let split = input
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(input.len());
    let (num, unit) = input.split_at(split);
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    if num.is_empty() || num.len() > 20 {
        return Err(malformed());
    }
    let factor: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "ki" | "kib" => KIB.into(),
        "m" | "mb" | "mi" | "mib" => MIB.into(),
        "g" | "gb" | "gi" | "gib" => GIB.into(),
        _ => return Err(malformed()),
    };
    // Twenty digits fit u128 times a GiB, so a huge value is out of range, not
    // malformed.
    let n: u128 = num.parse().map_err(|_| malformed())?;
    let bytes = n * factor;
    match u64::try_from(bytes) {
        Ok(b) if (1..=MAX_FAILOVER_LAG).contains(&b) => Ok(b),
        _ => Err(BytesError::OutOfRange(input.to_owned())),
    }
}

/// A byte count in the largest unit that divides it: `1MiB`, `512KiB`, `1000 B`.
pub struct ShowBytes(pub u64);

impl fmt::Display for ShowBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, size) in [("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
            if b >= size && b.is_multiple_of(size) {
                return write!(f, "{}{unit}", b / size);
            }
        }
        write!(f, "{b} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn units_are_binary_and_case_blind() {
        assert_eq!(parse_max_failover_lag("1MB"), Ok(MIB));
        assert_eq!(parse_max_failover_lag("4MB"), Ok(4 * MIB));
        assert_eq!(parse_max_failover_lag("512kB"), Ok(512 * KIB));
        assert_eq!(parse_max_failover_lag("512 KiB"), Ok(512 * KIB));
        assert_eq!(parse_max_failover_lag("2g"), Ok(2 * GIB));
        assert_eq!(parse_max_failover_lag("65536"), Ok(65536));
        assert_eq!(parse_max_failover_lag("100b"), Ok(100));
        assert_eq!(parse_max_failover_lag("64GiB"), Ok(MAX_FAILOVER_LAG));
    }

    #[test]
    fn zero_huge_and_malformed_are_refused_naming_the_flag() {
        for bad in ["0", "0MB", "65GiB", "99999999999999999999GB", "1TB"] {
            let e = parse_max_failover_lag(bad).expect_err(bad);
            assert!(e.to_string().starts_with("--max-failover-lag"), "{e}");
        }
        assert!(matches!(
            parse_max_failover_lag("0"),
            Err(BytesError::OutOfRange(_))
        ));
        for bad in ["", "MB", "1.5MB", "-1", "1 MB ", "1  MB", "lots", "1MBB"] {
            assert_eq!(
                parse_max_failover_lag(bad),
                Err(BytesError::Malformed(bad.to_owned())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn shown_in_the_largest_unit_that_divides() {
        assert_eq!(ShowBytes(MIB).to_string(), "1MiB");
        assert_eq!(ShowBytes(512 * KIB).to_string(), "512KiB");
        assert_eq!(ShowBytes(3 * GIB).to_string(), "3GiB");
        assert_eq!(ShowBytes(1000).to_string(), "1000 B");
    }

    proptest! {
        #[test]
        fn what_is_shown_parses_back(b in 1..=MAX_FAILOVER_LAG) {
            prop_assert_eq!(parse_max_failover_lag(&ShowBytes(b).to_string()), Ok(b));
        }

        #[test]
        fn any_text_parses_or_is_refused_without_panic(s in "\\PC{0,24}") {
            let _ = parse_max_failover_lag(&s);
        }
    }
}
