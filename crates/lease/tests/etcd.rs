//! [`EtcdLeases`] against a real etcd: each test starts its own `etcd` process on
//! free loopback ports with a temporary data directory, and kills it when done (on
//! a panic too). `scripts/etcd-server.sh` installs etcd when it is missing; when
//! that fails, the tests fail and say so — they never skip.
//!
//! The etcd runs with a 10 ms heartbeat so that its smallest lease TTL is 1 s (etcd
//! grants at least 1.5 election timeouts); it checks for expired leases about every
//! 500 ms, so a lease is gone within TTL + 1.5 s here.

mod common;

use berth_lease::{EtcdLeases, LeaseError, LeaseStore};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// reqwest has TLS without a crypto provider of its own in this workspace (see the
/// endpoint's tests): the test process installs Berth's before any client exists.
#[ctor::ctor]
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How long after its last renewal etcd has certainly ended a lease.
fn expiry(ttl: Duration) -> Duration {
    ttl + Duration::from_millis(1500)
}

/// The etcd binary, installed by `scripts/etcd-server.sh` if need be (once per test
/// process).
fn etcd_binary() -> PathBuf {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BINARY.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/etcd-server.sh");
        let out = Command::new(script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("could not run {script}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{script} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    match found {
        Ok(path) => path.clone(),
        Err(e) => panic!(
            "etcd is needed for these tests and could not be installed: {e}\n\
             install Debian's etcd-server (apt-get install etcd-server) or put `etcd` on PATH"
        ),
    }
}

/// A running etcd of this test's own; killed (and its data removed) on drop.
struct Etcd {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

impl Etcd {
    /// Starts etcd and waits until it answers (trying other ports when the ones
    /// picked were taken meanwhile).
    async fn start() -> Etcd {
        let binary = etcd_binary();
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(&binary).await {
                Ok(etcd) => return etcd,
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "etcd ({}) did not start:\n{}",
            binary.display(),
            failures.join("\n---\n")
        );
    }

    async fn try_start(binary: &PathBuf) -> Result<Etcd, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let name = format!("berth-lease-test-{}-{client}", std::process::id());
        let log = std::fs::File::create(dir.path().join("etcd.log")).map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .arg("--name")
            .arg(&name)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&url)
            .arg("--advertise-client-urls")
            .arg(&url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("{name}={peer_url}"))
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("could not run etcd: {e}"))?;
        let mut etcd = Etcd { child, url, dir };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = etcd.child.try_wait() {
                return Err(format!("etcd exited ({status}):\n{}", etcd.log_tail()));
            }
            let health = http.get(format!("{}/health", etcd.url)).send().await;
            if let Ok(answer) = health {
                if answer.text().await.is_ok_and(|t| t.contains("\"true\"")) {
                    return Ok(etcd);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "etcd did not answer within 30 s:\n{}",
            etcd.log_tail()
        ))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn leases(&self) -> EtcdLeases {
        EtcdLeases::from_url(&self.url, "/berth-test").expect("a valid URL")
    }
}

#[tokio::test]
async fn etcd_leases_behave_as_a_lease_store() {
    let etcd = Etcd::start().await;
    let store = etcd.leases();
    let ttl = Duration::from_secs(3);
    let sleep = |by: Duration| Box::pin(tokio::time::sleep(by)) as _;
    common::behaves_as_a_lease_store(&store, "instance-1", ttl, expiry(ttl), &sleep).await;
}

#[tokio::test]
async fn a_lease_not_renewed_ends_after_its_ttl_and_the_next_holder_gets_the_next_term() {
    let etcd = Etcd::start().await;
    let store = etcd.leases();
    let ttl = Duration::from_secs(1);
    let sent = Instant::now();
    let a = store
        .acquire("i", "a", ttl)
        .await
        .expect("acquire")
        .expect("free");
    assert_eq!((a.term, a.ttl), (1, ttl));
    assert!(store
        .acquire("i", "b", ttl)
        .await
        .expect("acquire")
        .is_none());
    while store.read("i").await.expect("read").is_some() {
        assert!(
            sent.elapsed() < expiry(ttl) + Duration::from_secs(1),
            "never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sent.elapsed() >= ttl,
        "ended after {:?}, before its TTL",
        sent.elapsed()
    );
    assert_eq!(store.renew("i", "a", 1, ttl).await.expect("renew"), None);
    let b = store
        .acquire("i", "b", ttl)
        .await
        .expect("acquire")
        .expect("expired");
    assert_eq!((b.holder.as_str(), b.term), ("b", 2));
}

#[tokio::test]
async fn a_renewed_lease_outlives_its_ttl_and_keeps_others_out() {
    let etcd = Etcd::start().await;
    let store = etcd.leases();
    let ttl = Duration::from_secs(2);
    let a = store
        .acquire("i", "a", ttl)
        .await
        .expect("acquire")
        .expect("free");
    let until = Instant::now() + ttl * 2 + Duration::from_secs(1);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let renewed = store.renew("i", "a", a.term, ttl).await.expect("renew");
        assert_eq!(renewed.map(|l| l.term), Some(a.term), "renewal lost");
        assert!(store
            .acquire("i", "b", ttl)
            .await
            .expect("acquire")
            .is_none());
    }
}

#[tokio::test]
async fn of_two_concurrent_acquirers_exactly_one_wins() {
    let etcd = Etcd::start().await;
    let (one, two) = (etcd.leases(), etcd.leases());
    let ttl = Duration::from_secs(10);
    for round in 1..=20u64 {
        let (a, b) = tokio::join!(one.acquire("i", "a", ttl), two.acquire("i", "b", ttl));
        let winners: Vec<_> = [a.expect("acquire"), b.expect("acquire")]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let winner = &winners[0];
        assert_eq!(winner.term, round, "one term per tenure");
        assert!(one
            .release("i", &winner.holder, winner.term)
            .await
            .expect("release"));
    }
}

#[tokio::test]
async fn asking_for_a_longer_ttl_keeps_the_tenure() {
    let etcd = Etcd::start().await;
    let store = etcd.leases();
    let a = store
        .acquire("i", "a", Duration::from_secs(1))
        .await
        .expect("acquire")
        .expect("free");
    let longer = Duration::from_secs(5);
    let renewed = store
        .renew("i", "a", a.term, longer)
        .await
        .expect("renew")
        .expect("held");
    assert_eq!((renewed.term, renewed.ttl), (a.term, longer));
    tokio::time::sleep(expiry(Duration::from_secs(1))).await;
    let read = store.read("i").await.expect("read").expect("still held");
    assert_eq!((read.holder.as_str(), read.term), ("a", a.term));
    assert!(store.release("i", "a", a.term).await.expect("release"));
    assert_eq!(store.read("i").await.expect("read"), None);
}

#[tokio::test]
async fn a_dead_endpoint_is_passed_over_and_none_alive_is_a_clear_error() {
    let etcd = Etcd::start().await;
    let dead = free_port();
    let live = etcd.url.trim_start_matches("http://");
    let store = EtcdLeases::from_url(&format!("etcd://127.0.0.1:{dead},{live}"), "/b")
        .expect("a valid URL");
    let lease = store
        .acquire("i", "a", Duration::from_secs(5))
        .await
        .expect("acquire");
    assert_eq!(lease.map(|l| l.term), Some(1));

    let nobody =
        EtcdLeases::from_url(&format!("etcd://127.0.0.1:{dead}"), "/b").expect("a valid URL");
    match nobody.read("i").await {
        Err(e @ LeaseError::Unreachable { .. }) => {
            let message = e.to_string();
            assert!(message.contains(&format!("127.0.0.1:{dead}")), "{message}");
            assert!(message.contains("check that it runs"), "{message}");
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
}
