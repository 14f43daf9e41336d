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
    /// How many restart-only settings the engine itself reports.
    restart_count_sql: &'static str,
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
    restart_count_sql: "SELECT count(*) FROM pg_settings WHERE context = 'postmaster'",
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
    restart_count_sql:
        "SELECT count(*) FROM information_schema.SYSTEM_VARIABLES WHERE READ_ONLY = 'YES'",
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
    let flagged = settings.iter().filter(|p| p["restart"] == true).count();
    let find = |n: &str| {
        settings
            .iter()
            .find(|p| p["name"] == n)
            .cloned()
            .unwrap_or(Value::Null)
    };
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
    let mut db = b.db(&name).await?;
    let engine_flagged: String = db.strings(case.restart_count_sql).await?.remove(0);
    assert_eq!(
        engine_flagged,
        flagged.to_string(),
        "restart flags differ from the engine's own"
    );
    drop(db);

    // Attach, then set a live setting: in effect at once, same engine process.
    let container = b.member_container(&name)?;
    let pid = server_pid(&container, case.server_process)?;
    b.cli_json(&["params", "attach", &name, &group])?;
    let (k, v, read, want) = case.live;
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
    let (rk, rv, rread, rwant) = case.restart;
    b.cli_json(&["params", "set", &group, &format!("{rk}={rv}")])?;
    let inst = b.cli_json(&["show", &name])?;
    assert_eq!(inst["pending_restart"], json!([rk]));
    assert_eq!(inst["param_group"], json!(group));
    let mut db = b.db(&name).await?;
    assert_ne!(
        db.strings(rread).await?,
        vec![rwant],
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
    for bad in ["inf", "NaN", "1e400"] {
        refused.push((case.real.to_owned(), bad.to_owned(), 400, "give a number"));
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

    // Unset: back to the default, live.
    b.cli_json(&["params", "unset", &group, k])?;
    let mut db = b.db(&name).await?;
    assert_ne!(db.strings(read).await?, vec![want]);
    drop(db);

    // A group in use cannot be deleted.
    let out = b.cli(&["params", "delete", &group]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is attached to"));
    Ok(())
}
