//! Bootstrap never wipes data: a volume holding a database without Berth's record is
//! adopted as it is; a data directory with files that are not the engine's is refused,
//! left untouched, and the refusal is shown with its reason.

use berth_e2e::{docker, unique, Berth};
use serde_json::json;

/// The instance's data volume and the image of its member (for helper containers).
fn volume_and_image(b: &Berth, id: &str) -> anyhow::Result<(String, String)> {
    let volume = b
        .docker_objects("volume", Some(id))
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no data volume for instance {id}"))?;
    let container = b
        .docker_objects("container", Some(id))
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no container for instance {id}"))?;
    let image = docker(&["inspect", "-f", "{{.Config.Image}}", &container])?;
    Ok((volume, image))
}

/// Runs a shell script in a helper container with the volume at `/v`.
fn on_volume(volume: &str, image: &str, script: &str) -> anyhow::Result<String> {
    docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{volume}:/v"),
        "--entrypoint",
        "/bin/sh",
        image,
        "-c",
        script,
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_volume_without_berths_record_is_adopted_with_every_row() -> anyhow::Result<()> {
    adopted("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mariadb_volume_without_berths_markers_is_adopted_with_every_row() -> anyhow::Result<()> {
    adopted("mariadb").await
}

async fn adopted(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("adopt-{}", &engine[..2]));
    let inst = b.create(&name, json!({"engine": engine})).await?;
    let id = inst["id"].as_str().expect("id").to_owned();
    let mut db = b.db(&name).await?;
    let (table, count) = if engine == "postgres" {
        ("kept", "SELECT count(*)::text FROM kept")
    } else {
        db.exec("CREATE DATABASE app").await?;
        ("app.kept", "SELECT CAST(COUNT(*) AS CHAR) FROM app.kept")
    };
    db.exec(&format!("CREATE TABLE {table} (v int)")).await?;
    for i in 0..100 {
        db.exec(&format!("INSERT INTO {table} VALUES ({i})"))
            .await?;
    }
    drop(db);
    b.cli_json(&["stop", &name])?;
    let (volume, image) = volume_and_image(&b, &id)?;
    // What a restored, cloned or older Berth volume looks like: no record, no marker.
    on_volume(
        &volume,
        &image,
        "rm -f /v/berth-bootstrap.json /v/data/berth-bootstrapped && ls /v",
    )?;

    b.cli_json(&["start", &name])?;
    let mut db = b.db(&name).await?;
    assert_eq!(
        db.strings(count).await?,
        vec!["100"],
        "every row must still be there"
    );
    drop(db);
    let record = on_volume(&volume, &image, "cat /v/berth-bootstrap.json")?;
    assert!(
        record.contains("\"ready\"") && record.contains("\"adopted\""),
        "the agent did not record the adoption: {record}"
    );
    assert_eq!(b.cli_json(&["show", &name])?["status"], "available");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_directory_with_foreign_files_is_refused_and_left_untouched() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("foreign");
    let inst = b.create(&name, json!({})).await?;
    let id = inst["id"].as_str().expect("id").to_owned();
    b.cli_json(&["stop", &name])?;
    let (volume, image) = volume_and_image(&b, &id)?;
    // The database moved aside, a file that is no database's in its place, and no
    // record: nothing says Berth made what is there.
    on_volume(
        &volume,
        &image,
        "mv /v/data /v/data.moved && mkdir /v/data && echo 'my notes' > /v/data/notes.txt \
         && rm -f /v/berth-bootstrap.json",
    )?;

    let out = b.cli(&["start", &name]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "start succeeded on foreign files");
    assert!(
        err.contains("refuses to start the engine") && err.contains("notes.txt"),
        "the reason is not clear: {err}"
    );
    // The agent stays up (no restart loop) and reports the refusal; the instance's
    // status shows the reason.
    let container = b.member_container(&name)?;
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.RestartCount}}",
            &container
        ])?,
        "true 0"
    );
    b.eventually(
        "the refusal to show in the instance's status",
        std::time::Duration::from_secs(30),
        || async {
            b.get(&format!("/v1/instances/{name}"))
                .await
                .map(|v| {
                    (v["status"] == "failed" || v["status"] == "unavailable")
                        && v["status_detail"]
                            .as_str()
                            .is_some_and(|d| d.contains("notes.txt"))
                })
                .unwrap_or(false)
        },
    )
    .await?;
    let left = on_volume(
        &volume,
        &image,
        "ls -A /v/data && cat /v/data/notes.txt && test -f /v/data.moved/PG_VERSION \
         && test -f /v/data.moved/global/pg_control && echo moved-data-intact \
         && test ! -e /v/berth-bootstrap.json && echo no-record",
    )?;
    assert_eq!(
        left, "notes.txt\nmy notes\nmoved-data-intact\nno-record",
        "the volume was changed"
    );
    Ok(())
}
