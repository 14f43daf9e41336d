//! A real etcd for the lease-store tests, reachable from containers: it listens on
//! the host's address on Docker's default bridge (not 127.0.0.1, which containers
//! cannot reach, and not every interface). Installed by `scripts/etcd-server.sh`;
//! killed on drop, even when a test fails.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One etcd process with its own data directory.
pub struct Etcd {
    child: Option<Child>,
    /// `etcd://host:port`, for `berth serve --lease-store`.
    pub url: String,
    client: String,
    peer: String,
    name: String,
    dir: tempfile::TempDir,
    binary: PathBuf,
}

fn binary() -> Result<PathBuf> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/etcd-server.sh");
    let out = Command::new(script)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {script}"))?;
    if !out.status.success() {
        bail!(
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The host's address on Docker's default bridge.
fn bridge_gateway() -> Result<String> {
    let ip = crate::docker(&[
        "network",
        "inspect",
        "bridge",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
    ])
    .unwrap_or_default();
    let ip = ip.trim().to_owned();
    if !ip.is_empty() && ip != "<no value>" {
        return Ok(ip);
    }
    // Docker does not always record the gateway; the host's docker0 address is it.
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()
        .context("running ip")?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_owned)
        .context("Docker's bridge network has no gateway and docker0 no address")
}

fn free_port_on(ip: &str) -> Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub async fn start() -> Result<Etcd> {
        let ip = bridge_gateway()?;
        let (c, p) = (free_port_on(&ip)?, free_port_on(&ip)?);
        let mut etcd = Etcd {
            child: None,
            url: format!("etcd://{ip}:{c}"),
            client: format!("http://{ip}:{c}"),
            peer: format!("http://{ip}:{p}"),
            name: format!("berth-e2e-{}-{c}", std::process::id()),
            dir: tempfile::tempdir()?,
            binary: binary()?,
        };
        etcd.run().await?;
        Ok(etcd)
    }

    async fn run(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))?;
        let child = Command::new(&self.binary)
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.client])
            .args(["--advertise-client-urls", &self.client])
            .args(["--listen-peer-urls", &self.peer])
            .args(["--initial-advertise-peer-urls", &self.peer])
            .args(["--initial-cluster", &format!("{}={}", self.name, self.peer)])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd")?;
        self.child = Some(child);
        let http = reqwest::Client::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(r) = http.get(format!("{}/health", self.client)).send().await {
                if r.text().await.is_ok_and(|t| t.contains("\"true\"")) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "etcd did not answer within 30 s:\n{}",
            std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
        )
    }

    /// Kills etcd (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data and address.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        self.run().await
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
