//! Resource quantities: memory and storage in MiB, CPU in thousandths of a core.
//!
//! Parsing is strict: a size needs a unit (`512MiB`, `2G`), so that `--memory 512`
//! can never silently mean 512 bytes or 512 GiB. Units are binary: `M`, `MB`, `Mi`
//! and `MiB` all mean 1024×1024 bytes, as Docker reads them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a quantity was refused; the message says what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Not a number with a unit.
    #[error(
        "{what} {input:?} is not a size; write a number and a unit, like 512MiB, 2GiB or 1.5G"
    )]
    Malformed {
        /// Which quantity ("memory", "storage").
        what: &'static str,
        /// The text as given.
        input: String,
    },
    /// The unit is not one Berth knows.
    #[error("{what} {input:?} has an unknown unit; use M, MiB, G, GiB, T or TiB")]
    UnknownUnit {
        /// Which quantity.
        what: &'static str,
        /// The text as given.
        input: String,
    },
    /// Below the smallest useful value.
    #[error("{what} {input} is too small; the minimum is {min}")]
    TooSmall {
        /// Which quantity.
        what: &'static str,
        /// The value as given, normalised.
        input: String,
        /// The minimum, formatted.
        min: String,
    },
    /// Above the largest value Berth accepts at all.
    #[error("{what} {input} is too large; the maximum is {max}")]
    TooLarge {
        /// Which quantity.
        what: &'static str,
        /// The value as given, normalised.
        input: String,
        /// The maximum, formatted.
        max: String,
    },
    /// Not a CPU count.
    #[error("cpus {0:?} is not a number of cores; write 0.5, 2 or 1500m")]
    MalformedCpus(String),
}

/// The shape [`parse_mib`] accepts, as a regular expression for the API document
/// (the same in ECMA-262 and Rust syntax): digits, up to three decimals, at most one
/// space, a binary unit. Range limits are checked after parsing. `crate::schema`
/// tests that the parser and the pattern agree.
pub const SIZE_PATTERN: &str = "^[0-9]{1,12}(\\.[0-9]{1,3})? ?(M|MB|Mi|MiB|m|mb|mi|mib|G|GB|Gi|GiB|g|gb|gi|gib|T|TB|Ti|TiB|t|tb|ti|tib)$";

/// The shape [`CpuMillis::from_str`] accepts as text: cores with up to three decimals,
/// or thousandths with an `m`.
pub const CPU_PATTERN: &str = "^([0-9]{1,6}(\\.[0-9]{1,3})?|[0-9]{1,9}m)$";

fn parse_mib(what: &'static str, input: &str) -> Result<u64, SizeError> {
    let malformed = || SizeError::Malformed {
        what,
        input: input.to_owned(),
    };
    let split = input
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(malformed)?;
    let (num, unit) = input.split_at(split);
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty()
        || int.len() > 12
        || frac.len() > 3
        || frac.contains('.')
        || (num.contains('.') && frac.is_empty())
    {
        return Err(malformed());
    }
    let factor: u128 = match unit {
        "M" | "MB" | "Mi" | "MiB" | "m" | "mb" | "mi" | "mib" => 1,
        "G" | "GB" | "Gi" | "GiB" | "g" | "gb" | "gi" | "gib" => 1024,
        "T" | "TB" | "Ti" | "TiB" | "t" | "tb" | "ti" | "tib" => 1024 * 1024,
        _ => {
            return Err(SizeError::UnknownUnit {
                what,
                input: input.to_owned(),
            })
        }
    };
    // Fixed point with three decimals keeps "1.5G" exact without floating point; at
    // most 12 digits in u128 cannot overflow, so a huge value is "too large", not
    // "malformed".
    let int: u128 = int.parse().map_err(|_| malformed())?;
    let frac_thousandths: u128 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<3}").parse().map_err(|_| malformed())?
    };
    let mib = (int * 1000 + frac_thousandths) * factor / 1000;
    Ok(u64::try_from(mib).unwrap_or(u64::MAX))
}

fn format_mib(mib: u64) -> String {
    if mib >= 1024 * 1024 && mib.is_multiple_of(1024 * 1024) {
        format!("{}TiB", mib / (1024 * 1024))
    } else if mib >= 1024 && mib.is_multiple_of(1024) {
        format!("{}GiB", mib / 1024)
    } else {
        format!("{mib}MiB")
    }
}

macro_rules! mib_quantity {
    ($(#[$doc:meta])* $name:ident, $what:literal, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = u64)]
        pub struct $name(u64);

        impl $name {
            /// Smallest accepted value, in MiB.
            pub const MIN_MIB: u64 = $min;
            /// Largest accepted value, in MiB.
            pub const MAX_MIB: u64 = $max;

            /// A validated quantity of `mib` MiB.
            pub fn from_mib(mib: u64) -> Result<Self, SizeError> {
                if mib < Self::MIN_MIB {
                    return Err(SizeError::TooSmall { what: $what, input: format_mib(mib), min: format_mib(Self::MIN_MIB) });
                }
                if mib > Self::MAX_MIB {
                    return Err(SizeError::TooLarge { what: $what, input: format_mib(mib), max: format_mib(Self::MAX_MIB) });
                }
                Ok(Self(mib))
            }

            /// The quantity in MiB.
            pub fn mib(self) -> u64 {
                self.0
            }

            /// The quantity in bytes, as Docker wants it.
            pub fn bytes(self) -> u64 {
                self.0 * 1024 * 1024
            }
        }

        impl std::str::FromStr for $name {
            type Err = SizeError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::from_mib(parse_mib($what, s)?)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&format_mib(self.0))
            }
        }
    };
}

mib_quantity!(
    /// Memory limit of a member. PostgreSQL needs room for its shared buffers and a few
    /// backends, so below 128 MiB nothing useful runs.
    MemoryMib, "memory", 128, 4 * 1024 * 1024
);
mib_quantity!(
    /// Storage size of a member's data volume.
    StorageMib, "storage", 256, 64 * 1024 * 1024
);

/// CPU limit in thousandths of a core (Docker's `NanoCpus` / 1e6).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = u32)]
pub struct CpuMillis(u32);

impl CpuMillis {
    /// A tenth of a core: below this PostgreSQL cannot even start in a sensible time.
    pub const MIN: u32 = 100;
    /// 1024 cores: anything above is a typo.
    pub const MAX: u32 = 1024 * 1000;

    /// A validated CPU limit.
    pub fn from_millis(m: u32) -> Result<Self, SizeError> {
        if m < Self::MIN {
            return Err(SizeError::TooSmall {
                what: "cpus",
                input: Self(m).to_string(),
                min: Self(Self::MIN).to_string(),
            });
        }
        if m > Self::MAX {
            return Err(SizeError::TooLarge {
                what: "cpus",
                input: Self(m).to_string(),
                max: Self(Self::MAX).to_string(),
            });
        }
        Ok(Self(m))
    }

    /// Thousandths of a core.
    pub fn millis(self) -> u32 {
        self.0
    }

    /// Docker's unit.
    pub fn nano_cpus(self) -> i64 {
        i64::from(self.0) * 1_000_000
    }
}

impl std::str::FromStr for CpuMillis {
    type Err = SizeError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input;
        let bad = || SizeError::MalformedCpus(input.to_owned());
        if let Some(m) = s.strip_suffix('m') {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) || m.len() > 9 {
                return Err(bad());
            }
            return Self::from_millis(m.parse().map_err(|_| bad())?);
        }
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty()
            || int.len() > 6
            || frac.len() > 3
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || (s.contains('.') && frac.is_empty())
        {
            return Err(bad());
        }
        let int: u32 = int.parse().map_err(|_| bad())?;
        let frac: u32 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<3}").parse().map_err(|_| bad())?
        };
        Self::from_millis(int.saturating_mul(1000).saturating_add(frac))
    }
}

impl fmt::Display for CpuMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            let s = format!("{}.{:03}", self.0 / 1000, self.0 % 1000);
            f.write_str(s.trim_end_matches('0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_memory_in_the_units_people_write() {
        let cases = [
            ("512MiB", 512),
            ("512M", 512),
            ("512Mi", 512),
            ("1G", 1024),
            ("1GiB", 1024),
            ("1.5G", 1536),
            ("2 GiB", 2048),
            ("1T", 1024 * 1024),
        ];
        for (s, mib) in cases {
            assert_eq!(s.parse::<MemoryMib>().map(MemoryMib::mib), Ok(mib), "{s}");
        }
    }

    #[test]
    fn refuses_malformed_and_absurd_sizes() {
        for s in [
            "", "512", "abc", "1.2.3G", ".5G", "5.G", "-1G", "1KB", "1Q", "G",
        ] {
            assert!(s.parse::<MemoryMib>().is_err(), "{s:?} accepted");
        }
        assert!(matches!(
            "64MiB".parse::<MemoryMib>(),
            Err(SizeError::TooSmall { .. })
        ));
        assert!(matches!(
            "100T".parse::<MemoryMib>(),
            Err(SizeError::TooLarge { .. })
        ));
        assert!(matches!(
            "99999999999999G".parse::<MemoryMib>(),
            Err(SizeError::Malformed { .. } | SizeError::TooLarge { .. })
        ));
        let msg = "64MiB"
            .parse::<MemoryMib>()
            .expect_err("too small")
            .to_string();
        assert!(msg.contains("minimum is 128MiB"), "{msg}");
    }

    #[test]
    fn parses_cpus() {
        for (s, m) in [
            ("1", 1000),
            ("0.5", 500),
            ("2.25", 2250),
            ("250m", 250),
            ("16", 16000),
        ] {
            assert_eq!(s.parse::<CpuMillis>().map(CpuMillis::millis), Ok(m), "{s}");
        }
        for s in [
            "", "abc", "1.", ".5", "0.0001", "-1", "1e3", "m", "0", "0.05", "2000000",
        ] {
            assert!(s.parse::<CpuMillis>().is_err(), "{s:?} accepted");
        }
        assert_eq!(
            CpuMillis::from_millis(1500).map(|c| c.to_string()),
            Ok("1.5".to_owned())
        );
        assert_eq!(
            CpuMillis::from_millis(2000).map(|c| c.nano_cpus()),
            Ok(2_000_000_000)
        );
    }

    proptest! {
        #[test]
        fn memory_parse_never_panics(s in "\\PC{0,20}") {
            let _ = s.parse::<MemoryMib>();
            let _ = s.parse::<StorageMib>();
            let _ = s.parse::<CpuMillis>();
        }

        #[test]
        fn memory_display_round_trips(mib in MemoryMib::MIN_MIB..=MemoryMib::MAX_MIB) {
            let m = MemoryMib::from_mib(mib).expect("in range");
            prop_assert_eq!(m.to_string().parse::<MemoryMib>(), Ok(m));
        }

        #[test]
        fn cpu_display_round_trips(millis in CpuMillis::MIN..=CpuMillis::MAX) {
            let c = CpuMillis::from_millis(millis).expect("in range");
            prop_assert_eq!(c.to_string().parse::<CpuMillis>(), Ok(c));
        }
    }
}
