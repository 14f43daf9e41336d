//! A real S3-compatible server for backup tests: `s3s-fs` from crates.io, installed
//! once per machine by `scripts/s3-server.sh` (keyed by version under the cache) and
//! started per test on a free loopback port with its own directory; `Drop` kills it.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `s3s-fs` binary: `BERTH_S3S_FS`, else whatever `scripts/s3-server.sh` installs
/// (it builds it the first time on a machine, then only prints its path).
pub fn s3s_fs_bin() -> Result<PathBuf> {
    static BIN: std::sync::OnceLock<std::result::Result<PathBuf, String>> =
        std::sync::OnceLock::new();
    if let Some(p) = std::env::var_os("BERTH_S3S_FS") {
        return Ok(PathBuf::from(p));
    }
    crate::installed_by(&BIN, "s3-server.sh")
}

/// One running S3 server with one bucket.
pub struct S3Server {
    /// Its root: each bucket is a directory, each object a file under it.
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket made for the test.
    pub bucket: String,
    /// Credentials it accepts.
    pub access_key: String,
    /// The secret (tests check it is never logged).
    pub secret_key: String,
    child: Option<Child>,
}

impl S3Server {
    /// Starts a server with an empty bucket `backups` and waits until it listens.
    pub async fn start() -> Result<Self> {
        let bin = s3s_fs_bin()?;
        let dir = tempfile::Builder::new().prefix("berth-s3-").tempdir()?;
        let bucket = "backups".to_owned();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join(&bucket))?;
        let port = crate::free_port();
        let access_key = "berthtest".to_owned();
        let secret_key = format!(
            "s3cr3t-{}",
            rand::distr::SampleString::sample_string(
                &rand::distr::Alphanumeric,
                &mut rand::rng(),
                16
            )
        );
        let log = std::fs::File::create(dir.path().join("s3.log"))?;
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", &access_key, "--secret-key", &secret_key])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut s = Self {
            dir,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket,
            access_key,
            secret_key,
            child: Some(child),
        };
        let log = s.dir.path().join("s3.log");
        let log = || std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(child) = s.child.as_mut() {
            crate::until_listening(child, port, "s3s-fs", log).await?;
        }
        Ok(s)
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("s3.log")).unwrap_or_default()
    }

    /// The file holding `key` of the bucket (keys as `berth serve` sees them,
    /// under `prefix`).
    pub fn object_file(&self, prefix: &str, key: &str) -> PathBuf {
        self.dir
            .path()
            .join("root")
            .join(&self.bucket)
            .join(prefix)
            .join(key)
    }

    /// `berth serve` arguments for this bucket under `prefix`.
    pub fn serve_args(&self, prefix: &str) -> Vec<String> {
        vec![
            "--backup-store".into(),
            format!("s3://{}/{prefix}", self.bucket),
            "--s3-endpoint".into(),
            self.endpoint.clone(),
        ]
    }

    /// The credentials as the AWS environment variables.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `berth serve` on a fresh data directory with `args` and `env`, expecting it
/// to refuse to start; gives its output (fails if it is still up after 60s).
pub fn serve_refused(args: &[String], env: &[(&str, String)]) -> Result<std::process::Output> {
    let dir = tempfile::Builder::new().prefix("berth-e2e-").tempdir()?;
    let child = Command::new(crate::berth_bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", crate::free_port()),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("BERTH_CONFIG", dir.path().join("cli.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting berth serve")?;
    crate::exited_within(
        child,
        Duration::from_secs(60),
        &format!("berth serve {}", args.join(" ")),
    )
}
