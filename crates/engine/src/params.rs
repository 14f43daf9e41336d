//! Parameters re-checked where they are used, whatever wrote the parameters file.

use crate::{Engine, EngineError};
use berth_model::EngineKind;

/// Whether `name` can be a setting's name where it is used (a config file line, a
/// `SET GLOBAL`): lowercase letters, digits and underscores, with at most one dot for
/// PostgreSQL's `extension.setting`.
pub(crate) fn is_setting_name(name: &str) -> bool {
    let part = |p: &str| {
        p.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    match name.split_once('.') {
        Some((a, b)) => part(a) && part(b),
        None => part(name),
    }
}

/// The parameters that may reach the engine, and the names of those that may not:
/// not a setting name, reserved (managed or running code), or a value with a control
/// character. The control plane refuses all of these; this re-check is where they
/// are used, so a parameters file written by anything else cannot inject either.
pub(crate) fn usable_params(
    engine: &dyn Engine,
    params: &std::collections::BTreeMap<String, String>,
) -> (Vec<(String, String)>, Vec<String>) {
    let reserved = engine.reserved();
    let mut ok = vec![];
    let mut refused = vec![];
    for (k, v) in params {
        if is_setting_name(k)
            && !reserved.managed.contains(&k.as_str())
            && !reserved.runs_code.contains(&k.as_str())
            && !v.chars().any(char::is_control)
        {
            ok.push((k.clone(), v.clone()));
        } else {
            refused.push(format!("{k:?}"));
        }
    }
    (ok, refused)
}

/// The refusal for parameters [`usable_params`] would not pass on.
pub(crate) fn refuse_params(engine: EngineKind, refused: &[String]) -> EngineError {
    EngineError::Refused {
        engine,
        reason: format!(
            "parameters {} are not setting names Berth lets a group set, or hold control characters; nothing was applied",
            refused.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mariadb, Postgres};

    #[test]
    fn only_setting_names_without_reserved_ones_or_control_characters_pass() {
        for ok in ["work_mem", "_x1", "pg_stat_statements.max"] {
            assert!(is_setting_name(ok), "{ok}");
        }
        for bad in [
            "", "Work_mem", "1x", "a.b.c", "a-b", "x = 1", "x\nport", "a.",
        ] {
            assert!(!is_setting_name(bad), "{bad:?}");
        }
        let params = [
            ("work_mem", "64MB"),
            ("archive_command", "cp %p /x"),
            ("port", "1"),
            ("search_path", "a\nport = 1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (ok, refused) = usable_params(&Postgres, &params);
        assert_eq!(ok, vec![("work_mem".to_owned(), "64MB".to_owned())]);
        assert_eq!(refused.len(), 3);
        let (_, refused) = usable_params(&Mariadb, &params);
        assert!(refused.contains(&"\"search_path\"".to_owned()));
        let err = refuse_params(EngineKind::Postgres, &refused).to_string();
        assert!(err.contains("nothing was applied"), "{err}");
    }
}
