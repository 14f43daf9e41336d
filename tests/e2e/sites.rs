//! Two installations on one Docker engine never touch each other's objects, and
//! one data directory never has two control planes.

use berth_e2e::{docker, unique, Berth};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn two_installations_with_the_same_instance_name_stay_apart() -> anyhow::Result<()> {
    let (a, b) = tokio::try_join!(Berth::start(), Berth::start())?;
    // The same name in both, as two teams would pick `db1`.
    let name = unique("db1");
    tokio::try_join!(a.create(&name, json!({})), b.create(&name, json!({})))?;
    let (ca, cb) = (a.member_container(&name)?, b.member_container(&name)?);
    assert_ne!(ca, cb, "each installation has its own container");

    let mut in_b = b.db(&name).await?;
    in_b.exec("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('b''s row')")
        .await?;
    let mut in_a = a.db(&name).await?;
    in_a.exec("CREATE TABLE mine (v text); INSERT INTO mine VALUES ('a')")
        .await?;
    assert!(
        in_b.strings("SELECT to_regclass('public.mine')::text")
            .await?
            .is_empty(),
        "a write in one installation does not land in the other"
    );
    drop(in_a);
    let b_objects = (
        b.docker_objects("container", None),
        b.docker_objects("network", None),
        b.docker_objects("volume", None),
    );

    // Stop, then delete with purge, in A: B keeps running, with its data. (A
    // stopped instance cannot give the final backup a delete takes: skipped.)
    let stopped = a.cli(&["stop", &name]);
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &cb])?,
        "true"
    );
    let deleted = a.cli(&["delete", &name, "--purge", "--skip-final-backup"]);
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    for kind in ["container", "network", "volume"] {
        assert!(
            a.docker_objects(kind, None).is_empty(),
            "A's {kind}s are gone"
        );
    }
    assert_eq!(
        (
            b.docker_objects("container", None),
            b.docker_objects("network", None),
            b.docker_objects("volume", None),
        ),
        b_objects,
        "B's objects are exactly as they were"
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &cb])?,
        "true"
    );
    assert_eq!(
        in_b.strings("SELECT v FROM kept").await?,
        vec!["b's row".to_owned()]
    );
    let shown = b.get(&format!("/v1/instances/{name}")).await?;
    assert_eq!(shown["status"], "available");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_serve_on_the_same_data_directory_is_refused() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let out = b.serve_again_on_same_data_dir()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the second serve must exit: {stderr}"
    );
    assert!(
        stderr.contains("another berth serve")
            && stderr.contains(&b.data_dir().display().to_string()),
        "the error says what is wrong and where: {stderr}"
    );
    // The first one is unharmed.
    b.get("/v1/info").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_already_taken_is_a_conflict_that_says_by_whom() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let first = unique("holder");
    let inst = b.create(&first, json!({})).await?;
    let port = inst["endpoint"]["port"].as_u64().expect("port");
    let tasks_before = b.get("/v1/tasks").await?;

    let (status, body) = b
        .request(
            reqwest::Method::POST,
            "/v1/instances",
            Some(json!({"name": unique("second"), "engine": "postgres", "port": port})),
        )
        .await?;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains(&first),
        "the conflict names the instance holding the port: {body}"
    );

    // A port some other program on this host holds is refused too.
    let squatter = std::net::TcpListener::bind("0.0.0.0:0")?;
    let taken = squatter.local_addr()?.port();
    let (status, body) = b
        .request(
            reqwest::Method::POST,
            "/v1/instances",
            Some(json!({"name": unique("third"), "engine": "postgres", "port": taken})),
        )
        .await?;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("in use on this host"),
        "{body}"
    );
    assert_eq!(
        b.get("/v1/tasks").await?,
        tasks_before,
        "nothing was started"
    );
    // One instance: its member and its endpoint.
    assert_eq!(b.docker_objects("container", None).len(), 2);
    Ok(())
}
