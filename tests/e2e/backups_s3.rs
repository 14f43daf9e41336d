//! Backups in an S3-compatible store: a real `s3s-fs` server per test (see
//! `berth_e2e::s3`), the same backup and restore path as the local store, and a
//! store that cannot be used refused when `serve` starts.

use crate::backups::{restore_rows, write_rows};
use anyhow::Context;
use berth_e2e::s3::{serve_refused, S3Server};
use berth_e2e::{unique, Berth};
use serde_json::json;
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread")]
async fn postgres_backup_and_restore_over_s3() -> anyhow::Result<()> {
    over_s3("postgres", Credentials::Env).await
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_backup_and_restore_over_s3() -> anyhow::Result<()> {
    over_s3("mariadb", Credentials::File).await
}

enum Credentials {
    Env,
    File,
}

async fn over_s3(engine: &str, creds: Credentials) -> anyhow::Result<()> {
    let s3 = S3Server::start().await?;
    let prefix = "berth/site1";
    let mut args = s3.serve_args(prefix);
    let env = match creds {
        Credentials::Env => s3.env(),
        Credentials::File => {
            let file = s3.dir.path().join("credentials");
            std::fs::write(
                &file,
                format!(
                    "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                    s3.access_key, s3.secret_key
                ),
            )?;
            args.push("--s3-credentials-file".into());
            args.push(file.display().to_string());
            vec![]
        }
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let b = Berth::start_with_env(&args, &env).await?;
    let name = unique(&format!("s3-{}", &engine[..2]));
    b.create(&name, json!({"engine": engine})).await?;
    write_rows(&b, &name, engine, 1, 3).await?;

    let backup = b.cli_json(&["backup", "create", &name])?;
    assert_eq!(backup["state"], "succeeded", "{backup}");
    let id = backup["id"].as_str().context("id")?.to_owned();
    let key = backup["object"].as_str().context("object")?;
    // The bytes are in the bucket, under the prefix, and nowhere local.
    let file = s3.object_file(prefix, key);
    let bytes = std::fs::read(&file).with_context(|| format!("{}", file.display()))?;
    assert_eq!(Some(bytes.len() as u64), backup["size_bytes"].as_u64());
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        backup["sha256"].as_str().context("sha256")?
    );
    assert!(!b.data_dir().join("backups").join(key).exists());

    write_rows(&b, &name, engine, 4, 5).await?;
    let restored = unique(&format!("r3-{}", &engine[..2]));
    let rows = restore_rows(&b, &name, &restored, &id, engine).await?;
    assert_eq!(rows, ["1", "2", "3"]);

    // One byte flipped in the stored object: the restore fails by checksum.
    let mut bad = bytes.clone();
    bad[bytes.len() / 2] ^= 0x01;
    std::fs::write(&file, &bad)?;
    let broken = unique(&format!("x3-{}", &engine[..2]));
    let out = b.cli(&["restore", &name, "--to", &broken, "--backup", &id]);
    assert!(!out.status.success(), "a corrupt backup was restored");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checksum mismatch"), "{err}");
    let inst = b.get(&format!("/v1/instances/{broken}")).await?;
    assert_eq!(inst["status"], "failed", "{inst}");

    // Delete removes the object from the bucket.
    let out = b.cli(&["backup", "delete", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!file.exists(), "the object is gone from the bucket");
    assert!(
        !b.log().contains(&s3.secret_key),
        "the S3 secret is in the control plane's log"
    );
    Ok(())
}

/// A store that cannot be used stops `serve` at start with what to check, and the
/// secret is in no message.
#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_s3_store_is_refused_at_start() -> anyhow::Result<()> {
    let s3 = S3Server::start().await?;
    let refused = |args: Vec<String>, env: Vec<(&str, String)>| -> anyhow::Result<String> {
        let out = serve_refused(&args, &env)?;
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains(&s3.secret_key), "secret in: {err}");
        Ok(err)
    };
    // No such bucket.
    let mut args = s3.serve_args("x");
    args[1] = "s3://nosuchbucket/x".into();
    let err = refused(args, s3.env())?;
    assert!(err.contains("bucket nosuchbucket does not exist"), "{err}");
    // Nothing listens at the endpoint.
    let mut args = s3.serve_args("x");
    args[3] = "http://127.0.0.1:9".into();
    let err = refused(args, s3.env())?;
    assert!(err.contains("127.0.0.1:9"), "{err}");
    // Wrong secret.
    let env = vec![
        ("AWS_ACCESS_KEY_ID", s3.access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY", "wrong".to_owned()),
    ];
    let err = refused(s3.serve_args("x"), env)?;
    assert!(err.contains("refused these credentials"), "{err}");
    // No credentials at all.
    let err = refused(s3.serve_args("x"), vec![])?;
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    Ok(())
}
