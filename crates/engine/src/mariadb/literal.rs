//! Values as MariaDB reads them: SQL literals for `SET GLOBAL`, option-file values.

/// A value as an SQL literal for `SET GLOBAL`: bare only when it is a strictly
/// formatted number (never `inf`, `NaN` or `1e5`, which MariaDB would read as a name
/// or differently); otherwise a string literal with quotes and backslashes escaped.
pub(super) fn sql_literal(value: &str) -> String {
    if berth_model::params::is_strict_number(value) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    }
}

/// A value for the option file: bare when it is a number or a plain word, otherwise
/// in double quotes with backslashes and quotes escaped (MariaDB unescapes them when
/// it reads the file; a `#` inside quotes is no comment).
pub(super) fn option_value(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b',' | b'-' | b'/'));
    if plain {
        value.to_owned()
    } else {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::super::berth_cnf;
    use super::*;
    use crate::{Layout, Settings};
    use std::path::Path;

    #[test]
    fn only_strict_numbers_go_unquoted() {
        assert_eq!(sql_literal("536870912"), "536870912");
        assert_eq!(sql_literal("0.5"), "0.5");
        for v in ["inf", "NaN", "1e5", "+1", "01", "ON"] {
            assert_eq!(sql_literal(v), format!("'{v}'"));
        }
        assert_eq!(sql_literal("a'b\\"), "'a''b\\\\'");
    }

    #[test]
    fn option_values_stay_one_option() {
        assert_eq!(
            option_value("STRICT_TRANS_TABLES,ANSI"),
            "STRICT_TRANS_TABLES,ANSI"
        );
        assert_eq!(option_value("a b # c"), "\"a b # c\"");
        assert_eq!(option_value("x\\\""), "\"x\\\\\\\"\"");
        let cnf = berth_cnf(
            &Layout::standard(),
            Path::new("/var/lib/berth/data"),
            &Settings {
                resources: crate::Resources {
                    memory_mib: 256,
                    cpu_millis: 1000,
                },
                params: [
                    ("max_connections", "200"),
                    ("init_file", "/tmp/x.sql"),
                    ("long_query_time", "1\ninit_file = /tmp/x.sql"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
                replication: None,
            },
        );
        assert!(cnf.contains("max_connections = 200"));
        assert!(!cnf.contains("init_file"), "{cnf}");
        assert!(cnf.contains("# 2 parameter(s) left out"), "{cnf}");
    }

    proptest::proptest! {
        /// Whatever the value, the literal is a number in canonical form or one quoted
        /// string in which every quote is doubled.
        #[test]
        fn sql_literals_are_numbers_or_closed_strings(value in "\\PC{0,30}") {
            let lit = sql_literal(&value);
            if !berth_model::params::is_strict_number(&lit) {
                let inner = &lit[1..lit.len() - 1];
                proptest::prop_assert!(lit.starts_with('\'') && lit.ends_with('\''));
                proptest::prop_assert!(!inner.replace("''", "").contains('\''));
                proptest::prop_assert!(!inner.replace("\\\\", "").contains('\\'));
            }
        }
    }
}
