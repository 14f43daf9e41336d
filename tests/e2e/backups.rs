//! Backups: taken from a running instance into the local backup store, streamed,
//! compressed and checksummed; listed, shown and deleted.

use anyhow::Context;
use berth_e2e::{unique, Berth};
use serde_json::json;
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread")]
async fn postgres_logical_backup() -> anyhow::Result<()> {
    logical_backup("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_logical_backup() -> anyhow::Result<()> {
    logical_backup("mariadb").await
}

/// The table the tests write, qualified for the engine (MariaDB has no default database).
pub(crate) fn table(engine: &str) -> &'static str {
    if engine == "mariadb" {
        "app.rows_t"
    } else {
        "rows_t"
    }
}

/// Restores backup `id` of `source` into a new instance `to` with the CLI (which
/// must succeed) and gives the rows of the test table there.
pub(crate) async fn restore_rows(
    b: &Berth,
    source: &str,
    to: &str,
    id: &str,
    engine: &str,
) -> anyhow::Result<Vec<String>> {
    let out = b.cli(&["restore", source, "--to", to, "--backup", id]);
    anyhow::ensure!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut db = b.db(to).await?;
    db.strings(&format!(
        "SELECT CONCAT(n, '') FROM {} ORDER BY n",
        table(engine)
    ))
    .await
}

pub(crate) async fn write_rows(
    b: &Berth,
    name: &str,
    engine: &str,
    from: u32,
    to: u32,
) -> anyhow::Result<()> {
    let mut db = b.db(name).await?;
    let t = table(engine);
    if from == 1 {
        if engine == "mariadb" {
            db.exec("CREATE DATABASE app").await?;
        }
        db.exec(&format!("CREATE TABLE {t} (n INT PRIMARY KEY)"))
            .await?;
    }
    for n in from..=to {
        db.exec(&format!("INSERT INTO {t} VALUES ({n})")).await?;
    }
    Ok(())
}

async fn logical_backup(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("bk-{}", &engine[..2]));
    b.create(&name, json!({"engine": engine})).await?;
    write_rows(&b, &name, engine, 1, 3).await?;

    let backup = b.cli_json(&["backup", "create", &name, "--kind", "logical"])?;
    assert_eq!(backup["state"], "succeeded", "{backup}");
    assert_eq!(backup["complete"], true);
    assert_eq!(backup["engine"], engine);
    let id = backup["id"].as_str().context("id")?.to_owned();
    let size = backup["size_bytes"].as_u64().context("size")?;
    let sha = backup["sha256"].as_str().context("sha256")?.to_owned();
    assert!(size > 0);
    assert_eq!(sha.len(), 64);

    // The object is a file under the data directory's backup folder, and the
    // recorded size and checksum are those of its bytes: a zstd frame.
    let object = b
        .data_dir()
        .join("backups")
        .join(backup["object"].as_str().context("object")?);
    let bytes = std::fs::read(&object).with_context(|| format!("{}", object.display()))?;
    assert_eq!(bytes.len() as u64, size);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), sha);
    assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");

    // The instance kept serving and is available again.
    let inst = b.get(&format!("/v1/instances/{name}")).await?;
    assert_eq!(inst["status"], "available");

    // list (all, and by instance) and show report size and checksum.
    let listed = b.cli_json(&["backup", "list", &name])?;
    let listed = listed.as_array().context("list")?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["sha256"], sha.as_str());
    assert_eq!(listed[0]["size_bytes"], size);
    assert!(b
        .cli_json(&["backup", "list", "nosuch"])?
        .as_array()
        .context("list")?
        .is_empty());
    let shown = b.cli_json(&["backup", "show", &id])?;
    assert_eq!(shown["sha256"], sha.as_str());
    let table_out = b.cli(&["backup", "show", &id]);
    assert!(String::from_utf8_lossy(&table_out.stdout).contains(&sha));

    // Unknown ids are 404 problems that say where to look.
    let (status, v) = b
        .request(reqwest::Method::GET, "/v1/backups/not-an-id", None)
        .await?;
    assert_eq!(status, 404, "{v}");
    // A backup of an unknown instance changes nothing.
    let (status, _) = b
        .request(
            reqwest::Method::POST,
            "/v1/instances/nosuch/backups",
            Some(json!({"kind": "logical"})),
        )
        .await?;
    assert_eq!(status, 404);
    let (status, _) = b
        .request(
            reqwest::Method::POST,
            &format!("/v1/instances/{name}/backups"),
            Some(json!({"kind": "physical"})),
        )
        .await?;
    assert_eq!(status, 400);

    // Rows written after the backup are not in a restore of it.
    write_rows(&b, &name, engine, 4, 6).await?;
    let restored = unique(&format!("rs-{}", &engine[..2]));
    let rows = restore_rows(&b, &name, &restored, &id, engine).await?;
    assert_eq!(rows, ["1", "2", "3"]);
    let inst = b.get(&format!("/v1/instances/{restored}")).await?;
    assert_eq!(inst["status"], "available");
    assert_eq!(inst["engine"], engine);
    // The source still has everything.
    let mut src = b.db(&name).await?;
    assert_eq!(
        src.strings(&format!(
            "SELECT CONCAT(COUNT(*), '') FROM {}",
            table(engine)
        ))
        .await?,
        ["6"]
    );

    // One byte flipped in the stored object: the restore is refused by checksum
    // before anything is made, and the new instance says so instead of looking good.
    let mut bytes = bytes;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&object, &bytes)?;
    let broken = unique(&format!("rx-{}", &engine[..2]));
    let out = b.cli(&["restore", &name, "--to", &broken, "--backup", &id]);
    assert!(!out.status.success(), "a corrupt backup was restored");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains(&id), "{err}");
    let inst = b.get(&format!("/v1/instances/{broken}")).await?;
    assert_eq!(inst["status"], "failed", "{inst}");
    let inst_id = inst["id"].as_str().context("id")?;
    assert!(
        b.docker_objects("container", Some(inst_id)).is_empty(),
        "no container was made for a corrupt backup"
    );

    // Delete removes the object and the record.
    let out = b.cli(&["backup", "delete", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!object.exists());
    let out = b.cli(&["backup", "show", &id]);
    assert!(!out.status.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_backup_is_taken_on_a_replica() -> anyhow::Result<()> {
    backup_on_a_replica("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_a_backup_is_taken_on_a_replica() -> anyhow::Result<()> {
    backup_on_a_replica("mariadb").await
}

/// With replicas, the dump runs on one (the primary's clients do not pay for it); the
/// backup says which member, and restores with every row.
async fn backup_on_a_replica(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("bkr-{}", &engine[..2]));
    b.create_with_cli(&name, engine, &["--members", "2"])?;
    write_rows(&b, &name, engine, 1, 6).await?;
    let member = b.member_with_role(&name, "replica")?;
    let replica = member["name"].as_str().context("name")?.to_owned();
    // Asked for at once: the replica it is taken on has replayed every row the
    // primary had acknowledged by then.
    let backup = b.cli_json(&["backup", "create", &name])?;
    assert_eq!(backup["state"], "succeeded", "{backup}");
    assert_eq!(backup["taken_from"], replica.as_str(), "{backup}");
    let shown_text = b.cli(&["backup", "show", backup["id"].as_str().context("id")?]);
    assert!(
        String::from_utf8_lossy(&shown_text.stdout).contains(&replica),
        "`backup show` says where it was taken"
    );
    let id = backup["id"].as_str().context("id")?;
    let to = unique(&format!("bkr-to-{}", &engine[..2]));
    let rows = restore_rows(&b, &name, &to, id, engine).await?;
    assert_eq!(rows, ["1", "2", "3", "4", "5", "6"]);
    Ok(())
}
