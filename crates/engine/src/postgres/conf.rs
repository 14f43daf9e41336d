//! Lines of postgresql.conf for user parameters.

/// One `name = 'value'` line. Inside quotes PostgreSQL's configuration lexer reads
/// `''` as a quote and a backslash as an escape, so both are doubled: a value ending in
/// `\` cannot close the quote early. Names and values come from [`crate::usable_params`]
/// (a setting name; no control character, so no second line).
pub(super) fn conf_line(name: &str, value: &str) -> String {
    format!(
        "{name} = '{}'",
        value.replace('\\', "\\\\").replace('\'', "''")
    )
}

#[cfg(test)]
mod tests {
    use super::super::postgresql_conf;
    use super::*;
    use crate::{Layout, Resources, Settings};

    /// Reads a `name = 'value'` line the way PostgreSQL's configuration lexer does.
    fn read_back(line: &str) -> Option<(String, String)> {
        let (name, rest) = line.split_once(" = '")?;
        let mut out = String::new();
        let mut chars = rest.chars();
        loop {
            match chars.next()? {
                '\\' => out.push(chars.next()?),
                '\'' => match chars.next() {
                    Some('\'') => out.push('\''),
                    None => return Some((name.to_owned(), out)),
                    Some(_) => return None,
                },
                c => out.push(c),
            }
        }
    }

    #[test]
    fn names_reserved_settings_and_control_characters_never_reach_the_file() {
        let conf = postgresql_conf(
            &Layout::standard(),
            &Settings {
                resources: Resources::default(),
                params: [
                    ("work_mem", "64MB"),
                    ("archive_command", "rm -rf /"),
                    ("port", "1"),
                    ("x = 1\nport", "2"),
                    ("search_path", "a\nport = 1"),
                    ("application_name", "ends\\"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
                replication: None,
            },
        );
        assert!(conf.contains("work_mem = '64MB'"));
        assert!(conf.contains("application_name = 'ends\\\\'"), "{conf}");
        assert!(!conf.contains("archive_command") && !conf.contains("rm -rf"));
        assert_eq!(conf.lines().filter(|l| l.starts_with("port")).count(), 1);
        assert!(conf.contains("# 4 parameter(s) left out"), "{conf}");
    }

    proptest::proptest! {
        /// Any value without control characters stays one line and reads back as itself.
        #[test]
        fn a_conf_line_reads_back_as_its_value(value in "[^\\p{Cc}]{0,40}") {
            let line = conf_line("search_path", &value);
            proptest::prop_assert_eq!(line.lines().count(), 1);
            proptest::prop_assert_eq!(read_back(&line), Some(("search_path".to_owned(), value)));
        }
    }
}
