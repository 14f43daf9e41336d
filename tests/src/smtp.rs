//! A real SMTP server for the alarm emails: aiosmtpd from PyPI, installed once per
//! machine by `scripts/smtp-server.sh` and started per test on a free loopback
//! port with its Mailbox handler: every message it accepts is a file in a Maildir.
//! `Drop` kills it.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The python of aiosmtpd's virtualenv (installed the first time on a machine).
fn python() -> Result<PathBuf> {
    static PY: std::sync::OnceLock<std::result::Result<PathBuf, String>> =
        std::sync::OnceLock::new();
    crate::installed_by(&PY, "smtp-server.sh")
}

/// One running SMTP server.
pub struct SmtpServer {
    dir: tempfile::TempDir,
    /// `smtp://127.0.0.1:PORT`, for `berth serve --smtp`.
    pub url: String,
    child: Option<Child>,
}

impl SmtpServer {
    /// Starts one and waits until it listens.
    pub async fn start() -> Result<Self> {
        let python = python()?;
        let dir = tempfile::Builder::new().prefix("berth-smtp-").tempdir()?;
        let port = crate::free_port();
        let log = std::fs::File::create(dir.path().join("smtp.log"))?;
        let child = Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.path().join("mail"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting aiosmtpd with {}", python.display()))?;
        let mut s = Self {
            url: format!("smtp://127.0.0.1:{port}"),
            dir,
            child: Some(child),
        };
        let log = s.dir.path().join("smtp.log");
        let log = || std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(child) = s.child.as_mut() {
            crate::until_listening(child, port, "aiosmtpd", log).await?;
        }
        Ok(s)
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("smtp.log")).unwrap_or_default()
    }

    /// Every message received so far, as written (headers and body), oldest first.
    pub fn messages(&self) -> Vec<String> {
        let new = self.dir.path().join("mail").join("new");
        let mut files: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(new)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let at = e.metadata().ok()?.modified().ok()?;
                Some((at, std::fs::read_to_string(e.path()).ok()?))
            })
            .collect();
        files.sort();
        files.into_iter().map(|(_, m)| m).collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
