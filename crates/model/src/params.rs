//! Parameter catalogs and the rules a value must follow.
//!
//! A catalog is read from the engine itself when its image is built (PostgreSQL's
//! `pg_settings`, MariaDB's `information_schema.SYSTEM_VARIABLES`), never typed by
//! hand. [`Catalog::check`] turns what a user typed into the value Berth stores and
//! renders, or says what is allowed.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The type of a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    /// on / off.
    Bool,
    /// A whole number, maybe with a unit.
    Integer,
    /// A number.
    Real,
    /// One of a list.
    Enum,
    /// A comma-separated subset of a list (MariaDB's SET type, like `sql_mode`).
    Set,
    /// Free text.
    String,
}

/// One setting, as the engine describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ParamSpec {
    /// Name, lowercase.
    pub name: String,
    /// Type.
    pub kind: ParamKind,
    /// Base unit of numeric values (PostgreSQL: `8kB`, `kB`, `MB`, `ms`, `s`, `min`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Smallest value, in the base unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest value, in the base unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Allowed values of enums and sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
    /// The engine's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// A change takes effect only after a restart.
    pub restart: bool,
    /// Whether it can be set at all from a configuration file.
    pub settable: bool,
    /// The engine's one-line description.
    #[serde(default)]
    pub description: String,
}

/// Every setting of one engine version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Catalog {
    /// `postgres` or `mariadb`.
    pub engine: String,
    /// Major version.
    pub version: String,
    /// By name.
    pub params: BTreeMap<String, ParamSpec>,
}

/// Why a value was refused. Each message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// Not in the catalog.
    #[error("{engine} {version} has no setting {name:?}{hint}")]
    Unknown {
        /// Engine.
        engine: String,
        /// Version.
        version: String,
        /// As given.
        name: String,
        /// "; did you mean …?" or nothing.
        hint: String,
    },
    /// Berth sets it itself.
    #[error("{0} is managed by Berth and cannot be set in a parameter group")]
    Managed(String),
    /// Cannot be set in a configuration file at all.
    #[error("{0} cannot be set; the engine computes or fixes it")]
    NotSettable(String),
    /// The value does not fit the rules.
    #[error("{name} = {value:?} is not allowed: {rule}")]
    Invalid {
        /// Setting.
        name: String,
        /// As given.
        value: String,
        /// What is allowed.
        rule: String,
    },
}

fn bytes_of(unit: &str) -> Option<f64> {
    Some(match unit {
        "B" => 1.0,
        "kB" | "K" | "k" => 1024.0,
        "8kB" => 8192.0,
        "16kB" => 16384.0,
        "32kB" => 32768.0,
        "64kB" => 65536.0,
        "MB" | "M" | "m" => 1024.0 * 1024.0,
        "GB" | "G" | "g" => 1024.0 * 1024.0 * 1024.0,
        "TB" | "T" | "t" => 1024.0f64.powi(4),
        _ => return None,
    })
}

fn millis_of(unit: &str) -> Option<f64> {
    Some(match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return None,
    })
}

/// A number with an optional unit, converted to `base` (the setting's unit).
fn number_in(value: &str, base: Option<&str>) -> Option<f64> {
    let v = value.trim();
    let split = v
        .find(|c: char| {
            !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E')
        })
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    let unit = unit.trim();
    if unit.is_empty() {
        return Some(n);
    }
    let base = base?;
    if let (Some(u), Some(b)) = (bytes_of(unit), bytes_of(base)) {
        return Some(n * u / b);
    }
    if let (Some(u), Some(b)) = (millis_of(unit), millis_of(base)) {
        return Some(n * u / b);
    }
    None
}

/// A memory value in bytes: `value` as written (with or without a unit) for a setting
/// whose base unit is `base` (`8kB`, `kB`, `B`, …).
pub fn bytes_value(value: &str, base: &str) -> Option<f64> {
    Some(number_in(value, Some(base))? * bytes_of(base)?)
}

fn fmt_bound(n: f64, unit: Option<&str>) -> String {
    let n = if n.fract() == 0.0 && n.abs() < 1e18 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    };
    match unit {
        // "16×8kB": a count of 8kB pages, not 168kB.
        Some(u) if u.starts_with(|c: char| c.is_ascii_digit()) => format!("{n}×{u}"),
        Some(u) => format!("{n}{u}"),
        None => n,
    }
}

impl Catalog {
    /// Checks `value` for setting `name`; returns the value to store (normalised:
    /// canonical booleans and enum spellings, numbers in the setting's base unit for
    /// MariaDB, as written for PostgreSQL, which parses units itself).
    pub fn check(&self, name: &str, value: &str, managed: &[&str]) -> Result<String, ParamError> {
        let key = name.trim().to_ascii_lowercase();
        let Some(spec) = self.params.get(&key) else {
            let hint = self
                .params
                .keys()
                .filter(|k| k.contains(&key) || key.contains(k.as_str()))
                .take(3)
                .cloned()
                .collect::<Vec<_>>();
            return Err(ParamError::Unknown {
                engine: self.engine.clone(),
                version: self.version.clone(),
                name: name.to_owned(),
                hint: if hint.is_empty() {
                    String::new()
                } else {
                    format!("; did you mean {}?", hint.join(", "))
                },
            });
        };
        if managed.contains(&key.as_str()) {
            return Err(ParamError::Managed(key));
        }
        if !spec.settable {
            return Err(ParamError::NotSettable(key));
        }
        let invalid = |rule: String| ParamError::Invalid {
            name: key.clone(),
            value: value.to_owned(),
            rule,
        };
        let v = value.trim();
        if v.is_empty() || v.chars().any(|c| c.is_control()) || v.contains('\'') || v.contains('\\')
        {
            return Err(invalid(
                "give a non-empty value without quotes, backslashes or control characters".into(),
            ));
        }
        let mariadb = self.engine == "mariadb";
        match spec.kind {
            ParamKind::Bool => match v.to_ascii_lowercase().as_str() {
                "on" | "true" | "yes" | "1" => Ok(if mariadb { "ON" } else { "on" }.into()),
                "off" | "false" | "no" | "0" => Ok(if mariadb { "OFF" } else { "off" }.into()),
                _ => Err(invalid("use on or off".into())),
            },
            ParamKind::Integer | ParamKind::Real => {
                let unit = spec.unit.as_deref();
                // MariaDB's option files take K, M, G as multipliers of any number.
                let base = unit.or(if mariadb { Some("B") } else { None });
                let n = number_in(v, base).ok_or_else(|| {
                    invalid(match unit {
                        Some(u) => format!("give a number, optionally with a unit (base unit {u})"),
                        None => "give a number".into(),
                    })
                })?;
                if spec.kind == ParamKind::Integer && n.fract() != 0.0 {
                    return Err(invalid(format!(
                        "give a whole number of {}",
                        unit.unwrap_or("units")
                    )));
                }
                let range = format!(
                    "allowed {} to {}",
                    spec.min
                        .map(|m| fmt_bound(m, unit))
                        .unwrap_or_else(|| "-∞".into()),
                    spec.max
                        .map(|m| fmt_bound(m, unit))
                        .unwrap_or_else(|| "∞".into())
                );
                if spec.min.is_some_and(|m| n < m) || spec.max.is_some_and(|m| n > m) {
                    return Err(invalid(range));
                }
                if mariadb {
                    Ok(fmt_bound(n, None))
                } else {
                    Ok(v.to_owned())
                }
            }
            ParamKind::Enum => spec
                .allowed
                .iter()
                .find(|a| a.eq_ignore_ascii_case(v))
                .cloned()
                .ok_or_else(|| invalid(format!("choose one of: {}", spec.allowed.join(", ")))),
            ParamKind::Set => {
                let mut out = vec![];
                for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let a = spec
                        .allowed
                        .iter()
                        .find(|a| a.eq_ignore_ascii_case(part))
                        .ok_or_else(|| {
                            invalid(format!(
                                "each item must be one of: {}",
                                spec.allowed.join(", ")
                            ))
                        })?;
                    out.push(a.clone());
                }
                Ok(out.join(","))
            }
            ParamKind::String => Ok(v.to_owned()),
        }
    }

    /// Whether changing the setting needs a restart (unknown: assume it does).
    pub fn needs_restart(&self, name: &str) -> bool {
        self.params.get(name).is_none_or(|p| p.restart)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn catalog(engine: &str) -> Catalog {
        let p =
            |name: &str, kind, unit: Option<&str>, min, max, allowed: &[&str], restart| ParamSpec {
                name: name.into(),
                kind,
                unit: unit.map(str::to_owned),
                min,
                max,
                allowed: allowed.iter().map(|s| (*s).to_owned()).collect(),
                default: None,
                restart,
                settable: true,
                description: String::new(),
            };
        let mut params = BTreeMap::new();
        for s in [
            p(
                "work_mem",
                ParamKind::Integer,
                Some("kB"),
                Some(64.0),
                Some(2147483647.0),
                &[],
                false,
            ),
            p(
                "shared_buffers",
                ParamKind::Integer,
                Some("8kB"),
                Some(16.0),
                Some(1073741823.0),
                &[],
                true,
            ),
            p(
                "statement_timeout",
                ParamKind::Integer,
                Some("ms"),
                Some(0.0),
                Some(2147483647.0),
                &[],
                false,
            ),
            p(
                "random_page_cost",
                ParamKind::Real,
                None,
                Some(0.0),
                Some(1.79e308),
                &[],
                false,
            ),
            p(
                "log_min_messages",
                ParamKind::Enum,
                None,
                None,
                None,
                &["debug1", "info", "warning", "error"],
                false,
            ),
            p("jit", ParamKind::Bool, None, None, None, &[], false),
            p(
                "sql_mode",
                ParamKind::Set,
                None,
                None,
                None,
                &["STRICT_TRANS_TABLES", "ANSI_QUOTES"],
                false,
            ),
            p(
                "innodb_buffer_pool_size",
                ParamKind::Integer,
                None,
                Some(2097152.0),
                Some(9.2e18),
                &[],
                false,
            ),
            p(
                "port",
                ParamKind::Integer,
                None,
                Some(1.0),
                Some(65535.0),
                &[],
                true,
            ),
        ] {
            params.insert(s.name.clone(), s);
        }
        Catalog {
            engine: engine.into(),
            version: "x".into(),
            params,
        }
    }

    #[test]
    fn numbers_units_and_ranges() {
        let c = catalog("postgres");
        assert_eq!(c.check("work_mem", "64MB", &[]), Ok("64MB".into()));
        assert_eq!(c.check("WORK_MEM", "4096", &[]), Ok("4096".into()));
        assert_eq!(c.check("shared_buffers", "256MB", &[]), Ok("256MB".into()));
        assert_eq!(c.check("statement_timeout", "30s", &[]), Ok("30s".into()));
        let err = c.check("shared_buffers", "1", &[]).expect_err("below min");
        assert!(
            err.to_string().contains("allowed 16×8kB to 1073741823×8kB"),
            "{err}"
        );
        let err = c.check("work_mem", "1kB", &[]).expect_err("below min");
        assert_eq!(
            err.to_string(),
            "work_mem = \"1kB\" is not allowed: allowed 64kB to 2147483647kB"
        );
        assert!(c.check("work_mem", "lots", &[]).is_err());
        assert!(c.check("work_mem", "1.5", &[]).is_err());
        assert!(c.check("work_mem", "10parsecs", &[]).is_err());
        assert_eq!(c.check("random_page_cost", "1.1", &[]), Ok("1.1".into()));
        let m = catalog("mariadb");
        assert_eq!(
            m.check("innodb_buffer_pool_size", "256M", &[]),
            Ok("268435456".into())
        );
        assert!(m.check("innodb_buffer_pool_size", "1M", &[]).is_err());
    }

    #[test]
    fn enums_bools_sets_and_names() {
        let c = catalog("postgres");
        assert_eq!(
            c.check("log_min_messages", "WARNING", &[]),
            Ok("warning".into())
        );
        let err = c.check("log_min_messages", "loud", &[]).expect_err("enum");
        assert!(err
            .to_string()
            .contains("choose one of: debug1, info, warning, error"));
        assert_eq!(c.check("jit", "true", &[]), Ok("on".into()));
        assert_eq!(catalog("mariadb").check("jit", "0", &[]), Ok("OFF".into()));
        assert_eq!(
            catalog("mariadb").check("sql_mode", "ansi_quotes, strict_trans_tables", &[]),
            Ok("ANSI_QUOTES,STRICT_TRANS_TABLES".into())
        );
        let err = c.check("work_memory", "1", &[]).expect_err("unknown");
        assert!(err.to_string().contains("did you mean work_mem"), "{err}");
        assert!(matches!(
            c.check("port", "5433", &["port"]),
            Err(ParamError::Managed(_))
        ));
        assert!(c.check("work_mem", "1'; DROP", &[]).is_err());
        // A setting the catalog does not know is assumed to need a restart: the
        // safe answer when the engine's own word is missing.
        assert!(c.needs_restart("no_such_setting"));
    }

    proptest! {
        #[test]
        fn checking_never_panics(name in "\\PC{0,20}", value in "\\PC{0,20}") {
            let c = catalog("postgres");
            let _ = c.check(&name, &value, &[]);
            let _ = catalog("mariadb").check(&name, &value, &[]);
        }

        #[test]
        fn accepted_values_are_safe_to_render(value in "\\PC{0,20}") {
            for name in ["work_mem", "log_min_messages", "jit", "random_page_cost"] {
                if let Ok(v) = catalog("postgres").check(name, &value, &[]) {
                    prop_assert!(!v.contains('\'') && !v.contains('\\') && !v.chars().any(char::is_control));
                }
            }
        }
    }
}
