//! Reconcile: what Docker lost comes back; what nobody owns goes; status is real.

use berth_e2e::{docker, unique, Berth};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_postgres_member_comes_back_with_its_data() -> anyhow::Result<()> {
    removed_member_comes_back("postgres").await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_mariadb_member_comes_back_with_its_data() -> anyhow::Result<()> {
    removed_member_comes_back("mariadb").await
}

async fn removed_member_comes_back(engine: &str) -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique(&format!("rm-{}", &engine[..2]));
    let inst = b.create(&name, json!({"engine": engine})).await?;
    let port = inst["endpoint"]["port"].clone();
    let mut db = b.db(&name).await?;
    db.exec("CREATE SCHEMA app").await?;
    db.exec("CREATE TABLE app.kept (v text)").await?;
    db.exec("INSERT INTO app.kept VALUES ('still here')")
        .await?;
    drop(db);
    let container = b.member_container(&name)?;
    let old_id = docker(&["inspect", "-f", "{{.Id}}", &container])?;
    docker(&["rm", "-f", &container])?;

    b.eventually(
        "the member to be recreated and ready",
        Duration::from_secs(90),
        || async {
            let new_id = docker(&["inspect", "-f", "{{.Id}}", &container]).unwrap_or_default();
            let status = b
                .get(&format!("/v1/instances/{name}"))
                .await
                .map(|v| v["status"].clone())
                .unwrap_or_default();
            !new_id.is_empty() && new_id != old_id && status == "available"
        },
    )
    .await?;
    let inst = b.get(&format!("/v1/instances/{name}")).await?;
    assert_eq!(inst["endpoint"]["port"], port, "the endpoint must not move");
    let mut db = b.db(&name).await?;
    assert_eq!(
        db.strings("SELECT v FROM app.kept").await?,
        vec!["still here"]
    );
    let tasks = b.cli_json(&["tasks", "--instance", &name])?;
    assert_eq!(tasks[0]["kind"], "repair");
    assert_eq!(tasks[0]["state"], "succeeded");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_reality_and_orphans_are_removed() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("real");
    b.create(&name, json!({})).await?;
    let container = b.member_container(&name)?;

    // A frozen member (running, but answering nothing) is reported unavailable, with why.
    docker(&["pause", &container])?;
    b.eventually("status unavailable", Duration::from_secs(30), || async {
        b.get(&format!("/v1/instances/{name}"))
            .await
            .map(|v| v["status"] == "unavailable")
            .unwrap_or(false)
    })
    .await?;
    let inst = b.get(&format!("/v1/instances/{name}")).await?;
    let detail = inst["status_detail"].as_str().unwrap_or("");
    assert!(
        detail.contains(": agent does not answer"),
        "the reason should say the agent does not answer: {inst}"
    );
    docker(&["unpause", &container])?;
    b.eventually(
        "status available again",
        Duration::from_secs(30),
        || async {
            b.get(&format!("/v1/instances/{name}"))
                .await
                .map(|v| v["status"] == "available")
                .unwrap_or(false)
        },
    )
    .await?;

    // Objects labelled for this site that no instance owns are removed; an unknown
    // volume is kept (it may hold data) and reported.
    let ghost = "00000000-0000-4000-8000-000000000001";
    let net = format!("{}-ghost-net", unique("e2e"));
    let vol = format!("{}-ghost-vol", unique("e2e"));
    let labels = [
        format!("io.berth.site={}", b.site),
        format!("io.berth.instance={ghost}"),
    ];
    docker(&[
        "network", "create", "--label", &labels[0], "--label", &labels[1], &net,
    ])?;
    docker(&[
        "volume", "create", "--label", &labels[0], "--label", &labels[1], &vol,
    ])?;
    let orphan = format!("{}-ghost", unique("e2e"));
    let image = docker(&[
        "images",
        "berth/postgres",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ])?;
    let image = image.lines().next().expect("image").to_owned();
    docker(&[
        "create", "--name", &orphan, "--label", &labels[0], "--label", &labels[1], &image, "true",
    ])?;
    b.eventually(
        "the orphan container to be removed",
        Duration::from_secs(30),
        || async { b.docker_objects("container", Some(ghost)).is_empty() },
    )
    .await?;
    b.eventually(
        "the orphan network to be removed",
        Duration::from_secs(30),
        || async { b.docker_objects("network", Some(ghost)).is_empty() },
    )
    .await?;
    assert_eq!(
        b.docker_objects("volume", Some(ghost)),
        vec![vol.clone()],
        "an unknown volume must be kept"
    );
    b.eventually(
        "the kept volume to be reported",
        Duration::from_secs(10),
        || async { b.log().contains(&vol) },
    )
    .await?;
    // Later passes find the same volume again and stay quiet about it.
    b.reconcile_passes(2).await?;
    assert_eq!(b.log().matches(&vol).count(), 1, "reported more than once");
    assert_eq!(
        b.docker_objects("volume", Some(ghost)),
        vec![vol.clone()],
        "an unknown volume must be kept"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn start_brings_back_a_missing_container_but_never_an_empty_database() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("gone");
    let inst = b.create(&name, json!({})).await?;
    let id = inst["id"].as_str().expect("id").to_owned();
    let mut db = b.db(&name).await?;
    db.exec("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('here')")
        .await?;
    drop(db);
    let container = b.member_container(&name)?;

    // Stopped, then its container removed behind Berth's back: start recreates it on
    // the same volume.
    b.cli_json(&["stop", &name])?;
    docker(&["rm", &container])?;
    b.cli_json(&["start", &name])?;
    let mut db = b.db(&name).await?;
    assert_eq!(db.strings("SELECT v FROM kept").await?, vec!["here"]);
    drop(db);

    // Its data volume removed too: start refuses, saying why, and creates nothing.
    b.cli_json(&["stop", &name])?;
    docker(&["rm", &container])?;
    let volume = b.docker_objects("volume", Some(&id)).remove(0);
    docker(&["volume", "rm", &volume])?;
    let out = b.cli(&["start", &name]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("data volume") && err.contains("is missing"),
        "{err}"
    );
    assert!(
        b.docker_objects("volume", Some(&id)).is_empty(),
        "an empty volume was made"
    );
    // No member container was made (the endpoint's, stopped, stays until delete).
    assert!(b
        .docker_objects("container", Some(&id))
        .iter()
        .all(|c| c.ends_with("-endpoint")));
    assert_eq!(b.cli_json(&["show", &name])?["status"], "failed");
    Ok(())
}
