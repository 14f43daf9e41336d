//! First start, images, and the hand-over of the admin token.

use berth_e2e::{berth_bin, docker, unique, Berth};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

#[tokio::test(flavor = "multi_thread")]
async fn first_start_hands_over_the_token_privately() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let token_file = b.dir.path().join("data/admin-token");
    let cli_config = b.dir.path().join("cli.json");
    for f in [&token_file, &cli_config] {
        let mode = std::fs::metadata(f)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", f.display());
    }
    assert_eq!(std::fs::read_to_string(&token_file)?.trim(), b.token);
    let data_mode = std::fs::metadata(b.dir.path().join("data"))?
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(data_mode, 0o700);
    // The token is never logged; the store keeps only its hash.
    assert!(!b.log().contains(&b.token), "the admin token is in the log");
    let db = std::fs::read(b.dir.path().join("data/berth.db"))?;
    assert!(
        !String::from_utf8_lossy(&db).contains(&b.token),
        "the admin token is stored in clear"
    );
    // The CLI works with nothing but the config file.
    let out = std::process::Command::new(berth_bin())
        .args(["-o", "json", "list"])
        .env("BERTH_CONFIG", &cli_config)
        .env_remove("BERTH_URL")
        .env_remove("BERTH_TOKEN")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn a_second_image_build_is_served_from_the_cache() {
    berth_e2e::require_docker();
    // The suite's setup built the image already; asking again finds it by its inputs.
    let out = std::process::Command::new(berth_bin())
        .args(["image", "build", "postgres"])
        .output()
        .expect("berth image build");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("berth/postgres:15-") && stdout.contains("(cached"),
        "{stdout}"
    );
    let out = std::process::Command::new(berth_bin())
        .args(["image", "build", "mysql"])
        .output()
        .expect("berth image build");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown engine \"mysql\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_image_can_replace_the_built_one() -> anyhow::Result<()> {
    // No registry is reachable here, so stand in for an upstream image with a local
    // tag of the built one: what is tested is that Berth uses the named image, runs
    // its own agent in it, and builds nothing.
    let built = docker(&[
        "images",
        "berth/postgres",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ])?;
    let built = built.lines().next().expect("built image").to_owned();
    let upstream = format!("{}/postgres:15", unique("berth-e2e-upstream"));
    docker(&["tag", &built, &upstream])?;
    let result = async {
        let b = Berth::start_with(&["--image", &format!("postgres:15={upstream}")]).await?;
        let name = unique("up");
        b.create(&name, json!({})).await?;
        assert_eq!(
            docker(&[
                "inspect",
                "-f",
                "{{.Config.Image}}",
                &b.member_container(&name)?
            ])?,
            upstream
        );
        let pg = b.pg(&name).await?;
        let one: i32 = pg.query_one("SELECT 1", &[]).await?.get(0);
        assert_eq!(one, 1);
        let tasks = b.cli_json(&["tasks", "--instance", &name])?;
        let detail = tasks[0]["steps"][0]["detail"].as_str().unwrap_or("");
        assert!(detail.contains(&upstream), "{tasks}");
        anyhow::Ok(())
    }
    .await;
    // -f: a helper container of a killed server may still reference the tag.
    let _ = docker(&["rmi", "-f", &upstream]);
    result
}
