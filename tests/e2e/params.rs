//! Parameter groups against real engines: the catalog is the engine's own, live
//! settings apply without a restart, restart-only ones wait for `berth restart`, and
//! anything outside the catalog's rules is refused with nothing saved.

use berth_e2e::{server_pid, unique, Berth};
use serde_json::{json, Value};

struct Case {
    engine: &'static str,
    /// (setting, value, how to read it back) that changes live.
    live: (&'static str, &'static str, &'static str, &'static str),
    /// (setting, value, read back, expected) that needs a restart.
    restart: (&'static str, &'static str, &'static str, &'static str),
    /// An out-of-range value.
    out_of_range: (&'static str, &'static str, &'static str),
    /// The names of the settings the running engine itself says need a restart.
    restart_names_sql: &'static str,
    /// Settings known (from the engine's manual) to need a restart.
    known_restart: &'static [&'static str],
    /// Settings known (from the engine's manual) to change live.
    known_live: &'static [&'static str],
    /// A setting that would stop an instance of 256MiB from starting.
    too_big: (&'static str, &'static str),
    server_process: &'static str,
    /// Settings that run a command or load code on the server: never settable.
    runs_code: &'static [&'static str],
    /// A real-typed setting, for values that are no strict number.
    real: &'static str,
}

const POSTGRES: Case = Case {
    engine: "postgres",
    live: ("work_mem", "48MB", "SHOW work_mem", "48MB"),
    restart: ("max_connections", "120", "SHOW max_connections", "120"),
    out_of_range: ("work_mem", "1kB", "allowed 64kB to"),
    restart_names_sql: "SELECT name FROM pg_settings WHERE context = 'postmaster'",
    known_restart: &[
        "shared_buffers",
        "max_connections",
        "port",
        "shared_preload_libraries",
    ],
    known_live: &[
        "work_mem",
        "statement_timeout",
        "random_page_cost",
        "log_min_duration_statement",
    ],
    too_big: ("shared_buffers", "4GB"),
    server_process: "/bin/postgres -D",
    runs_code: &["archive_command", "ssl_passphrase_command"],
    real: "random_page_cost",
};

const MARIADB: Case = Case {
    engine: "mariadb",
    live: ("max_connections", "222", "SELECT @@max_connections", "222"),
    restart: (
        "innodb_log_buffer_size",
        "32M",
        "SELECT @@innodb_log_buffer_size",
        "33554432",
    ),
    out_of_range: ("max_connections", "5", "allowed 10 to"),
    restart_names_sql:
        "SELECT LOWER(VARIABLE_NAME) FROM information_schema.SYSTEM_VARIABLES WHERE READ_ONLY = 'YES'",
    known_restart: &["innodb_log_buffer_size", "port", "innodb_page_size", "skip_networking"],
    known_live: &["max_connections", "innodb_buffer_pool_size", "wait_timeout", "long_query_time"],
    too_big: ("innodb_buffer_pool_size", "4G"),
    server_process: "/usr/sbin/mariadbd",
    runs_code: &["plugin_load_add", "init_file"],
    real: "long_query_time",
};

#[tokio::test(flavor = "multi_thread")]
async fn postgres_parameter_groups() -> anyhow::Result<()> {
    groups(&POSTGRES).await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_parameter_groups() -> anyhow::Result<()> {
    groups(&MARIADB).await
}

async fn groups(case: &Case) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let e = case.engine;

    // The catalog is the engine's: hundreds of settings, restart flags as it says.
    let catalog = b.cli_json(&["params", "catalog", e])?;
    let settings = catalog.as_array().expect("list");
    assert!(settings.len() > 300, "only {} settings", settings.len());
    let mut flagged: Vec<String> = settings
        .iter()
        .filter(|p| p["restart"] == true)
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    flagged.sort();
    let find = |n: &str| {
        settings
            .iter()
            .find(|p| p["name"] == n)
            .cloned()
            .unwrap_or(Value::Null)
    };
    for (names, restart) in [(case.known_restart, true), (case.known_live, false)] {
        for n in names {
            assert_eq!(find(n)["restart"], restart, "{n} in the catalog");
        }
    }
    assert_eq!(find(case.live.0)["restart"], false);
    assert_eq!(find(case.restart.0)["restart"], true);

    let group = unique("grp");
    b.cli_json(&[
        "params",
        "create",
        &group,
        "--engine",
        e,
        "--description",
        "e2e",
    ])?;
    let name = unique(&format!("pg-{}", &e[..2]));
    b.create(&name, json!({"engine": e, "memory": "256MiB"}))
        .await?;
    // The running instance, asked over a real connection, marks the same settings.
    let mut db = b.db(&name).await?;
    let mut engine_flagged = db.strings(case.restart_names_sql).await?;
    engine_flagged.sort();
    assert_eq!(
        flagged, engine_flagged,
        "restart flags differ from the engine's own"
    );
    // What the instance runs with before any group: the values to come back to.
    let (k, v, read, want) = case.live;
    let (rk, rv, rread, rwant) = case.restart;
    let live_before = db.strings(read).await?;
    let restart_before = db.strings(rread).await?;
    assert_ne!(
        live_before,
        vec![want],
        "pick a {k} that is not the default"
    );
    assert_ne!(
        restart_before,
        vec![rwant],
        "pick a {rk} that is not the default"
    );
    drop(db);

    // Attach, then set a live setting: in effect at once, same engine process.
    let container = b.member_container(&name)?;
    let pid = server_pid(&container, case.server_process)?;
    b.cli_json(&["params", "attach", &name, &group])?;
    b.cli_json(&["params", "set", &group, &format!("{k}={v}")])?;
    let mut db = b.db(&name).await?;
    assert_eq!(db.strings(read).await?, vec![want]);
    drop(db);
    assert_eq!(
        server_pid(&container, case.server_process)?,
        pid,
        "a live setting restarted the engine"
    );
    assert_eq!(b.cli_json(&["show", &name])?["pending_restart"], json!([]));

    // A restart-only setting waits, shown per setting, until `berth restart`.
    b.cli_json(&["params", "set", &group, &format!("{rk}={rv}")])?;
    let inst = b.cli_json(&["show", &name])?;
    assert_eq!(inst["pending_restart"], json!([rk]));
    assert_eq!(inst["param_group"], json!(group));
    let mut db = b.db(&name).await?;
    assert_eq!(
        db.strings(rread).await?,
        restart_before,
        "{rk} changed without a restart"
    );
    drop(db);
    b.cli_json(&["restart", &name])?;
    let mut db = b.db(&name).await?;
    assert_eq!(db.strings(rread).await?, vec![rwant]);
    assert_eq!(
        db.strings(read).await?,
        vec![want],
        "the live setting did not survive the restart"
    );
    drop(db);
    assert_eq!(b.cli_json(&["show", &name])?["pending_restart"], json!([]));

    // Out of range, unknown, managed or unfit values: refused, group unchanged.
    let before = b.cli_json(&["params", "show", &group])?;
    let (ok, ov, orule) = case.out_of_range;
    for (pair, want) in [
        (format!("{ok}={ov}"), orule),
        ("no_such_setting=1".to_owned(), "has no setting"),
        ("port=1234".to_owned(), "managed by Berth"),
        (
            format!("{}={}", case.too_big.0, case.too_big.1),
            "would not fit",
        ),
    ] {
        let out = b.cli(&["params", "set", &group, &pair]);
        assert!(!out.status.success(), "{pair} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{pair}: {err}");
    }
    // Settings that run commands, values with a newline and numbers an engine would
    // read as something else: 422 at the API, saying why.
    let mut refused: Vec<(String, String, u16, &str)> = case
        .runs_code
        .iter()
        .map(|n| ((*n).to_owned(), "/tmp/x".to_owned(), 422, "runs a command"))
        .collect();
    refused.push((
        k.to_owned(),
        format!("{v}\n{k} = 1"),
        422,
        "control character",
    ));
    // Well-formed JSON the engine's catalog refuses: 422, as the API document says.
    for bad in ["inf", "NaN", "1e400"] {
        refused.push((case.real.to_owned(), bad.to_owned(), 422, "give a number"));
    }
    for (setting, value, code, want) in refused {
        let (status, body) = b
            .request(
                reqwest::Method::PATCH,
                &format!("/v1/parameter-groups/{group}"),
                Some(json!({"set": {setting.clone(): value.clone()}})),
            )
            .await?;
        assert_eq!(status, code, "{setting}={value:?}: {body}");
        assert!(
            body.to_string().contains(want),
            "{setting}={value:?}: {body}"
        );
    }
    assert_eq!(
        b.cli_json(&["params", "show", &group])?,
        before,
        "a refused change altered the group"
    );

    // A new instance created with the group starts with its settings.
    let second = unique(&format!("pg2-{}", &e[..2]));
    b.create(
        &second,
        json!({"engine": e, "memory": "256MiB", "params": group}),
    )
    .await?;
    let mut db = b.db(&second).await?;
    assert_eq!(db.strings(read).await?, vec![want]);
    assert_eq!(db.strings(rread).await?, vec![rwant]);
    drop(db);

    // Unset: back to what it was before the group, live.
    b.cli_json(&["params", "unset", &group, k])?;
    let mut db = b.db(&name).await?;
    assert_eq!(db.strings(read).await?, live_before);
    drop(db);

    // A group in use cannot be deleted.
    let out = b.cli(&["params", "delete", &group]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is attached to"));
    Ok(())
}
