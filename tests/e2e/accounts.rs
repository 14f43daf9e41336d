//! Databases, users and grants, enforced by the engines themselves.

use berth_e2e::{unique, Berth, Db};
use serde_json::{json, Value};

async fn login(
    creds: &Value,
    engine: &str,
    user: &str,
    password: &str,
    db: &str,
) -> anyhow::Result<Db> {
    let (host, port, ca) = (
        creds["host"].as_str().unwrap_or(""),
        creds["port"].as_u64().unwrap_or(0),
        creds["ca_file"].as_str().unwrap_or(""),
    );
    let uri = match engine {
        "mariadb" => format!("mysql://{user}:{password}@{host}:{port}/{db}?ssl-ca={ca}"),
        _ => format!("postgresql://{user}:{password}@{host}:{port}/{db}?sslrootcert={ca}"),
    };
    // One attempt: a refused login must fail fast, not be retried into a pass.
    Db::connect_once(&uri).await
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_databases_users_and_grants() -> anyhow::Result<()> {
    accounts("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_databases_users_and_grants() -> anyhow::Result<()> {
    accounts("mariadb").await
}

async fn accounts(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("acct-{}", &engine[..2]));
    b.create(&name, json!({"engine": engine})).await?;
    let creds = b.cli_json(&["credentials", &name])?;

    b.cli_json(&["db", "create", &name, "app"])?;
    let dbs = b.cli_json(&["db", "list", &name])?;
    assert_eq!(dbs, json!([{"name": "app"}]));

    let owner = b.cli_json(&["user", "create", &name, "app_owner", "--grant", "app:owner"])?;
    let ro = b.cli_json(&["user", "create", &name, "app_ro", "--grant", "app:readonly"])?;
    let rw = b.cli_json(&[
        "user",
        "create",
        &name,
        "app_rw",
        "--grant",
        "app:readwrite",
    ])?;
    let pw = |v: &Value| v["password"].as_str().unwrap_or("").to_owned();
    assert_eq!(pw(&owner).len(), 32);

    // The owner creates tables; the others cannot.
    let mut o = login(&creds, engine, "app_owner", &pw(&owner), "app").await?;
    o.exec("CREATE TABLE items (id int primary key, v text)")
        .await?;
    o.exec("INSERT INTO items VALUES (1, 'one')").await?;
    let mut r = login(&creds, engine, "app_ro", &pw(&ro), "app").await?;
    assert_eq!(r.strings("SELECT v FROM items").await?, vec!["one"]);
    let denied = r.exec("INSERT INTO items VALUES (2, 'two')").await;
    assert!(denied.is_err(), "a readonly user wrote");
    let mut w = login(&creds, engine, "app_rw", &pw(&rw), "app").await?;
    w.exec("INSERT INTO items VALUES (2, 'two')").await?;
    w.exec("UPDATE items SET v = 'uno' WHERE id = 1").await?;
    assert!(
        w.exec("CREATE TABLE other (x int)").await.is_err(),
        "a readwrite user created a table"
    );
    assert!(
        w.exec("DROP TABLE items").await.is_err(),
        "a readwrite user dropped a table"
    );
    drop((o, r, w));

    let users = b.cli_json(&["user", "list", &name])?;
    let grants_of = |u: &str| {
        users
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["name"] == u)
            .map(|x| x["grants"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        grants_of("app_owner"),
        json!([{"database": "app", "level": "owner"}])
    );
    assert_eq!(
        grants_of("app_ro"),
        json!([{"database": "app", "level": "readonly"}])
    );
    assert_eq!(
        grants_of("app_rw"),
        json!([{"database": "app", "level": "readwrite"}])
    );

    // Rotation: the old password stops working, the new one works.
    let rotated = b.cli_json(&["user", "password", &name, "app_ro"])?;
    assert_ne!(pw(&rotated), pw(&ro));
    assert!(login(&creds, engine, "app_ro", &pw(&ro), "app")
        .await
        .is_err());
    login(&creds, engine, "app_ro", &pw(&rotated), "app").await?;

    // A dropped user cannot log in.
    b.cli_json(&["user", "drop", &name, "app_ro"])?;
    assert!(login(&creds, engine, "app_ro", &pw(&rotated), "app")
        .await
        .is_err());

    // Injection attempts fail validation; nothing is created.
    for (args, want) in [
        (
            vec!["db", "create", &name, "x; DROP DATABASE app"],
            "not valid",
        ),
        (vec!["db", "create", &name, "App"], "not valid"),
        (vec!["db", "create", &name, "mysql"], "reserved"),
        (vec!["user", "create", &name, "a'b"], "not valid"),
        (
            vec!["user", "create", &name, "robert\"); DROP TABLE items;--"],
            "not valid",
        ),
        (
            vec!["user", "create", &name, "eve", "--grant", "app`.*:owner"],
            "not valid",
        ),
        (
            vec!["user", "create", &name, "eve", "--grant", "app:admin"],
            "readonly, readwrite or owner",
        ),
        (
            vec!["user", "create", &name, "eve", "--grant", "nope:readonly"],
            "no database nope",
        ),
        (vec!["user", "create", &name, "app_rw"], "already exists"),
        (vec!["db", "create", &name, "app"], "already exists"),
        (
            vec!["db", "drop", &name, "nope", "--yes"],
            "no database nope",
        ),
        (vec!["user", "drop", &name, "nope"], "no user nope"),
    ] {
        let out = b.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let users_after = b.cli_json(&["user", "list", &name])?;
    let names: Vec<&str> = users_after
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(
        names,
        vec!["app_owner", "app_rw"],
        "a refused request changed the users"
    );

    // Dropping a database asks for --yes.
    let out = b.cli(&["db", "drop", &name, "app"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert_eq!(
        b.cli_json(&["db", "list", &name])?,
        json!([{"name": "app"}])
    );
    b.cli_json(&["db", "drop", &name, "app", "--yes"])?;
    assert_eq!(b.cli_json(&["db", "list", &name])?, json!([]));

    // A stopped instance says so.
    b.cli_json(&["stop", &name])?;
    let out = b.cli(&["db", "list", &name]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("run `berth start {name}`")));
    Ok(())
}
