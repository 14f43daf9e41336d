//! A control plane killed while a backup streams never leaves it listed as good:
//! the record stays `running` without size or checksum, and the resumed task takes
//! the backup again from the start.

use anyhow::{bail, Context};
use berth_e2e::{unique, Berth};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_cut_by_a_crash_is_never_good_and_is_taken_again() -> anyhow::Result<()> {
    let mut b = Berth::start().await?;
    let name = unique("bk-crash");
    b.create(
        &name,
        json!({"engine": "postgres", "memory": "512MiB", "cpus": "1"}),
    )
    .await?;
    // Enough data that the dump takes a moment.
    let mut db = b.db(&name).await?;
    berth_e2e::big_table(&mut db).await?;
    let started = b.cli_json(&["backup", "create", &name, "--no-wait"])?;
    let id = started["backup"].as_str().context("backup id")?.to_owned();

    // Wait until the backup streams, then kill the control plane mid-way.
    b.until_backup_runs(&id).await?;
    b.kill9();
    b.restart().await?;

    // Seen right after the restart or when the resumed task ends: never complete
    // without the checksum of its complete bytes.
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let v = b.get(&format!("/v1/backups/{id}")).await?;
        match v["state"].as_str() {
            Some("succeeded") => break v,
            Some("running") => {
                assert_eq!(v["complete"], false, "{v}");
                assert!(v.get("sha256").is_none(), "{v}");
            }
            other => {
                let container = b.member_container(&name).unwrap_or_default();
                let out = std::process::Command::new("docker")
                    .args(["logs", "--tail", "30", &container])
                    .output()?;
                eprintln!(
                    "AGENT LOGS:\n{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                eprintln!(
                    "SERVE LOG:\n{}",
                    b.log()
                        .lines()
                        .filter(|l| l.contains("backup") || l.contains("WARN"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                bail!("backup ended {other:?}: {v}")
            }
        }
        if Instant::now() > deadline {
            bail!("the resumed backup did not finish: {v}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let object = b
        .data_dir()
        .join("backups")
        .join(done["object"].as_str().context("object")?);
    let bytes = std::fs::read(&object)?;
    assert_eq!(Some(bytes.len() as u64), done["size_bytes"].as_u64());
    assert_eq!(
        Some(hex::encode(Sha256::digest(&bytes)).as_str()),
        done["sha256"].as_str()
    );
    let inst = b.get(&format!("/v1/instances/{name}")).await?;
    assert_eq!(inst["status"], "available");
    Ok(())
}
