//! A fault injector in front of the real Docker engine, for tests only.
//!
//! `berth serve` is pointed at this proxy's Unix socket (`DOCKER_HOST`); every
//! request goes on to the real `/var/run/docker.sock` unchanged, except that a test
//! can make Docker *refuse* requests that match (answered with Docker's own error
//! shape, as the daemon does when it refuses) or make the engine *unreachable*
//! (the socket stops answering). Nothing is faked beyond that: containers,
//! networks and volumes are real.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// What the proxy does to requests.
#[derive(Clone, Default)]
struct Faults {
    /// Requests whose `METHOD path` contains one of these are refused with a 500.
    refuse: Vec<String>,
}

/// A running proxy; dropping it stops it.
pub struct DockerProxy {
    dir: tempfile::TempDir,
    faults: Arc<Mutex<Faults>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl DockerProxy {
    /// Starts a proxy on a fresh socket.
    pub fn start() -> std::io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("berth-dockerproxy-")
            .tempdir()?;
        let listener = UnixListener::bind(dir.path().join("docker.sock"))?;
        let faults: Arc<Mutex<Faults>> = Arc::default();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (f, t) = (faults.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let conn = tokio::spawn(serve(client, f.clone()));
                t.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            }
        });
        tasks.lock().unwrap_or_else(|p| p.into_inner()).push(accept);
        Ok(Self { dir, faults, tasks })
    }

    /// `DOCKER_HOST` for a client of this proxy.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// From now on, requests whose `METHOD path` contains `pattern` (like
    /// `POST` + `/update`) are refused by "Docker" with a 500.
    pub fn refuse(&self, pattern: &str) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refuse
            .push(pattern.to_owned());
    }

    /// The engine becomes unreachable: the socket is gone and open connections drop.
    pub fn cut(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Relays one client connection, request by request (HTTP/1.1, one request in
/// flight at a time, as Docker clients do).
async fn serve(mut client: UnixStream, faults: Arc<Mutex<Faults>>) {
    let Ok(upstream) = UnixStream::connect(DOCKER_SOCKET).await else {
        return;
    };
    let (mut up_read, mut up_write) = upstream.into_split();
    let (mut client_read, client_write) = client.split();
    let client_write = Arc::new(tokio::sync::Mutex::new(client_write));
    let down = {
        let w = client_write.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match up_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if w.lock().await.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    };
    let up = async move {
        let mut pending: Vec<u8> = vec![];
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // Read one request head.
            let head_end = loop {
                if let Some(i) = find(&pending, b"\r\n\r\n") {
                    break i + 4;
                }
                match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                }
            };
            let head = String::from_utf8_lossy(&pending[..head_end]).to_string();
            let request_line = head.lines().next().unwrap_or("").to_owned();
            let lower = head.to_ascii_lowercase();
            if lower.contains("transfer-encoding: chunked") || lower.contains("upgrade:") {
                // Streams: relay everything from here on unchanged.
                if up_write.write_all(&pending).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy(&mut client_read, &mut up_write).await;
                return;
            }
            let length: usize = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while pending.len() < head_end + length {
                match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                }
            }
            let request: Vec<u8> = pending.drain(..head_end + length).collect();
            let refused = {
                let f = faults.lock().unwrap_or_else(|p| p.into_inner());
                f.refuse.iter().any(|p| request_line.contains(p.as_str()))
            };
            if refused {
                let body = r#"{"message":"refused by the test's fault injector"}"#;
                let resp = format!(
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if client_write
                    .lock()
                    .await
                    .write_all(resp.as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            if up_write.write_all(&request).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = down => {}
        _ = up => {}
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
