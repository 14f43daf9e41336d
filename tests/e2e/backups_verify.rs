//! Backups verified by restoring them: `berth backup verify` restores into a
//! throwaway instance, runs the engine's own check (amcheck, CHECK TABLE) and reads
//! every table, records the outcome on the backup with an event, and removes the
//! throwaway instance — whether the backup passed or not.

use super::backups::write_rows;
use anyhow::Context;
use berth_e2e::{unique, Berth};
use serde_json::{json, Value};
use std::time::Duration;

/// Verifies backup `id` through the API, waits for the task to end (either way) and
/// for the throwaway instance's containers and volumes to be gone; returns the task.
async fn verify(b: &Berth, id: &str) -> anyhow::Result<Value> {
    // An earlier verification of the same backup may still be cleaning up (409).
    let mut answer = (409, Value::Null);
    for _ in 0..60 {
        answer = b
            .request(
                reqwest::Method::POST,
                &format!("/v1/backups/{id}/verify"),
                Some(json!({})),
            )
            .await?;
        if answer.0 != 409 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (status, v) = answer;
    anyhow::ensure!(status == 202, "verify answered {status}: {v}");
    let task_id = v["task"]["id"].as_str().context("task id")?.to_owned();
    let throwaway = v["task"]["instance_id"]
        .as_str()
        .context("task's instance")?
        .to_owned();
    let started = std::time::Instant::now();
    let task = loop {
        let task = b.get(&format!("/v1/tasks/{task_id}")).await?;
        if matches!(task["state"].as_str(), Some("succeeded" | "failed")) {
            break task;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the verification did not end within 300 s: {task}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let created = task["created_at"].as_str().unwrap_or_default().to_owned();
    b.eventually(
        "the outcome to be recorded on the backup",
        Duration::from_secs(30),
        || async {
            verification(b, id)
                .await
                .is_ok_and(|v| v["at"].as_str().is_some_and(|at| at >= created.as_str()))
        },
    )
    .await?;
    b.eventually(
        "the throwaway instance's containers and volumes to be removed",
        Duration::from_secs(120),
        || async {
            b.docker_objects("container", Some(&throwaway)).is_empty()
                && b.docker_objects("volume", Some(&throwaway)).is_empty()
        },
    )
    .await?;
    Ok(task)
}

/// The backup's recorded verification.
async fn verification(b: &Berth, id: &str) -> anyhow::Result<Value> {
    Ok(b.get(&format!("/v1/backups/{id}")).await?["verification"].clone())
}

fn backup_id(b: &Berth, name: &str) -> anyhow::Result<String> {
    let backup = b.cli_json(&["backup", "create", name])?;
    anyhow::ensure!(backup["state"] == "succeeded", "{backup}");
    Ok(backup["id"].as_str().context("id")?.to_owned())
}

/// Flips one byte in the middle of the backup's stored object.
async fn damage_object(b: &Berth, id: &str) -> anyhow::Result<()> {
    let backup = b.get(&format!("/v1/backups/{id}")).await?;
    let object = b
        .data_dir()
        .join("backups")
        .join(backup["object"].as_str().context("object")?);
    let mut bytes = std::fs::read(&object)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&object, &bytes)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_backup_is_verified_by_restoring_it_and_damage_is_caught() -> anyhow::Result<()>
{
    let b = Berth::start().await?;
    let name = unique("vf-pg");
    b.create(&name, json!({"engine": "postgres"})).await?;
    write_rows(&b, &name, "postgres", 1, 5).await?;
    let mut db = b.db(&name).await?;
    db.exec("CREATE TABLE child_t (id INT PRIMARY KEY, parent INT REFERENCES rows_t (n))")
        .await?;
    db.exec("INSERT INTO child_t VALUES (1, 1), (2, 2)").await?;
    db.exec("CREATE INDEX child_parent ON child_t (parent)")
        .await?;

    // A good backup passes: restored, consistent, every table read.
    let good = backup_id(&b, &name)?;
    let out = b.cli(&["backup", "verify", &good]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("passed"), "{said}");
    let v = verification(&b, &good).await?;
    assert_eq!(v["outcome"], "passed", "{v}");
    let detail = v["detail"].as_str().context("detail")?;
    assert!(detail.starts_with("consistent:"), "{detail}");
    // The two tables of the instance's one database with their 7 rows were read, and
    // its indexes checked (the tables' own and the catalogs').
    assert!(detail.contains("2 table(s) with 7 row(s) read"), "{detail}");
    assert!(detail.contains("index(es) checked"), "{detail}");
    let kinds = b.event_kinds(&name).await?;
    assert!(kinds.iter().any(|k| k == "backup.verified"), "{kinds:?}");

    // A row that breaks the foreign key, written with the key's triggers off: the
    // dump is taken without complaint, but its restore cannot add the key back. The
    // checksum is right; only restoring finds it.
    db.exec("SET session_replication_role = replica").await?;
    db.exec("INSERT INTO child_t VALUES (3, 999)").await?;
    db.exec("SET session_replication_role = origin").await?;
    let broken = backup_id(&b, &name)?;
    let out = b.cli(&["backup", "verify", &broken]);
    assert!(
        !out.status.success(),
        "a backup that cannot be restored passed"
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("foreign key"), "{err}");
    let v = verification(&b, &broken).await?;
    assert_eq!(v["outcome"], "failed", "{v}");
    assert!(
        v["detail"].as_str().unwrap_or("").contains("load_backup"),
        "the step that failed is named: {v}"
    );
    let events = b.get(&format!("/v1/events?instance={name}")).await?;
    let failed: Vec<&Value> = events["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter(|e| e["kind"] == "backup.verify-failed")
        .collect();
    assert_eq!(failed.len(), 1, "{events}");
    assert_eq!(failed[0]["details"]["backup"], broken.as_str());
    assert!(
        failed[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("foreign key"),
        "{}",
        failed[0]
    );

    // The good backup, damaged in the store: its checksum no longer matches, and a
    // new verification says so and marks it failed.
    damage_object(&b, &good).await?;
    let task = verify(&b, &good).await?;
    assert_eq!(task["state"], "failed", "{task}");
    let v = verification(&b, &good).await?;
    assert_eq!(v["outcome"], "failed", "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or("")
            .contains("checksum mismatch"),
        "{v}"
    );
    // The list says which backups passed.
    let listed = String::from_utf8_lossy(&b.cli(&["backup", "list", &name]).stdout).into_owned();
    assert!(
        listed.contains("VERIFIED") && listed.contains("failed"),
        "{listed}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_backups_are_verified_after_each_when_the_policy_says_so() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("vf-ma");
    b.create(&name, json!({"engine": "mariadb"})).await?;
    write_rows(&b, &name, "mariadb", 1, 4).await?;

    // The policy: every backup is verified once it is complete, without asking.
    let policy = b.cli_json(&["backup", "schedule", &name, "--verify", "after-each"])?;
    assert_eq!(policy["verify"], "after-each", "{policy}");
    assert_eq!(
        policy["schedule"], "off",
        "the rest of the policy is kept: {policy}"
    );
    let id = backup_id(&b, &name)?;
    let started = std::time::Instant::now();
    let v = loop {
        let v = verification(&b, &id).await?;
        if !v.is_null() {
            break v;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the policy did not verify the backup within 300 s; log:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(v["outcome"], "passed", "{v}");
    let detail = v["detail"].as_str().context("detail")?;
    // CHECK TABLE passed on the one table, whose 4 rows were read.
    assert!(
        detail.starts_with("consistent: 1 database(s), 1 table(s) with 4 row(s) read"),
        "{detail}"
    );
    let inst = b.get(&format!("/v1/instances/{name}")).await?;
    let own_id = inst["id"].as_str().context("id")?;
    b.eventually(
        "the throwaway instance to be removed",
        Duration::from_secs(120),
        || async {
            b.docker_objects("container", None).len()
                == b.docker_objects("container", Some(own_id)).len()
        },
    )
    .await?;
    // Not verified twice.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let kinds = b.event_kinds(&name).await?;
    assert_eq!(
        kinds.iter().filter(|k| *k == "backup.verified").count(),
        1,
        "{kinds:?}"
    );

    // Damaged in the store: caught, recorded, and the command fails saying why.
    damage_object(&b, &id).await?;
    // The policy's throwaway instance may still be going away (409 meanwhile).
    let mut out = b.cli(&["backup", "verify", &id]);
    for _ in 0..60 {
        if !String::from_utf8_lossy(&out.stderr).contains("being verified already") {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        out = b.cli(&["backup", "verify", &id]);
    }
    assert!(!out.status.success(), "a damaged backup passed");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("checksum mismatch"), "{err}");
    assert_eq!(verification(&b, &id).await?["outcome"], "failed");

    // Bad input changes nothing: an unknown backup is 404, a bad policy 422/400.
    let (status, _) = b
        .request(
            reqwest::Method::POST,
            "/v1/backups/00000000-0000-0000-0000-000000000000/verify",
            Some(json!({})),
        )
        .await?;
    assert_eq!(status, 404);
    let out = b.cli(&["backup", "schedule", &name, "--verify", "daily"]);
    assert!(!out.status.success());
    let (status, v) = b
        .request(
            reqwest::Method::PUT,
            &format!("/v1/instances/{name}/backup-policy"),
            Some(json!({"schedule": "off", "verify": "daily"})),
        )
        .await?;
    assert!(status == 400 || status == 422, "{status} {v}");
    assert!(v.to_string().contains("after-each"), "{v}");
    let policy = b.cli_json(&["backup", "schedule", &name])?;
    assert_eq!(policy["verify"], "after-each", "{policy}");
    Ok(())
}
