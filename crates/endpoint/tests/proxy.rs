//! A component test of the endpoint itself: the real proxy, in-process, against
//! stand-in members on loopback addresses (127.0.0.11, .12, .13: one host name
//! each, the same engine and agent ports on all, as in an instance's network). Each
//! stand-in's "engine" writes its name on every new connection and holds it open;
//! its "agent" answers `GET /role` with whatever report the test sets.

/// reqwest has TLS without a crypto provider of its own in this workspace (see the
/// server's S3 client): the test process installs Berth's before any client exists.
#[ctor::ctor]
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use berth_endpoint::{Endpoint, EndpointConfig};
use berth_model::agent::RoleReport;
use berth_model::endpoint::EndpointStatus;
use berth_model::member::Role;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MEMBERS: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];

type Reports = Arc<Mutex<BTreeMap<String, RoleReport>>>;

struct Cluster {
    reports: Reports,
    endpoint: Endpoint,
    http: reqwest::Client,
}

/// Binds every stand-in's engine and agent on the same two ports (retrying with
/// other ports when one is taken), then starts the endpoint over them.
async fn cluster(primary: usize) -> Cluster {
    let reports: Reports = Arc::new(Mutex::new(BTreeMap::new()));
    for (i, m) in MEMBERS.iter().enumerate() {
        let r = if i == primary {
            RoleReport::example(Role::Primary, true, None)
        } else {
            RoleReport::example(Role::Replica, true, Some(0.0))
        };
        reports.lock().expect("lock").insert((*m).to_owned(), r);
    }
    let mut bound = None;
    for _ in 0..20 {
        if let Some(b) = bind_all().await {
            bound = Some(b);
            break;
        }
    }
    let (engine_port, agent_port, listeners) = bound.expect("free ports on 127.0.0.11-13");
    for (member, engine, agent) in listeners {
        tokio::spawn(fake_engine(member.clone(), engine));
        let app = Router::new()
            .route("/role", get(role))
            .with_state((member, reports.clone()));
        tokio::spawn(async move { axum::serve(agent, app).await });
    }
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let endpoint = Endpoint::start(EndpointConfig {
        members: MEMBERS.iter().map(|m| (*m).to_owned()).collect(),
        engine_port,
        agent_port,
        max_lag: Duration::from_secs(10),
        probe_interval: Duration::from_millis(50),
        // Longer than a round (the next waits for it): a loaded machine must not
        // turn a slow answer into a routing change mid-test.
        probe_timeout: Duration::from_millis(500),
        hold: Duration::from_millis(1500),
        rw_listen: local,
        ro_listen: local,
        status_listen: local,
    })
    .await
    .expect("endpoint starts");
    let c = Cluster {
        reports,
        endpoint,
        http: reqwest::Client::new(),
    };
    c.until("the first round", |s| s.rounds > 0).await;
    c
}

type Bound = (u16, u16, Vec<(String, TcpListener, TcpListener)>);

async fn bind_all() -> Option<Bound> {
    let first = TcpListener::bind((MEMBERS[0], 0)).await.ok()?;
    let engine_port = first.local_addr().ok()?.port();
    let first_agent = TcpListener::bind((MEMBERS[0], 0)).await.ok()?;
    let agent_port = first_agent.local_addr().ok()?.port();
    let mut out = vec![(MEMBERS[0].to_owned(), first, first_agent)];
    for m in &MEMBERS[1..] {
        let e = TcpListener::bind((*m, engine_port)).await.ok()?;
        let a = TcpListener::bind((*m, agent_port)).await.ok()?;
        out.push(((*m).to_owned(), e, a));
    }
    Some((engine_port, agent_port, out))
}

async fn role(State((member, reports)): State<(String, Reports)>) -> Json<RoleReport> {
    Json(reports.lock().expect("lock")[&member].clone())
}

async fn fake_engine(member: String, listener: TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let name = format!("{member}\n");
        tokio::spawn(async move {
            let _ = s.write_all(name.as_bytes()).await;
            let mut buf = [0u8; 64];
            // Hold the session until the client (or the endpoint) closes it.
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        });
    }
}

impl Cluster {
    fn set(&self, member: usize, r: RoleReport) {
        self.reports
            .lock()
            .expect("lock")
            .insert(MEMBERS[member].to_owned(), r);
    }

    async fn status(&self) -> EndpointStatus {
        self.http
            .get(format!("http://{}/status", self.endpoint.status_addr))
            .send()
            .await
            .expect("status answers")
            .json()
            .await
            .expect("status parses")
    }

    /// Polls the status until `check` holds (at most 5 s).
    async fn until(&self, what: &str, check: impl Fn(&EndpointStatus) -> bool) -> EndpointStatus {
        for _ in 0..100 {
            let s = self.status().await;
            if check(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what} did not happen within 5s: {:?}", self.status().await);
    }

    /// Opens a connection and returns it with the member it reached.
    async fn open(&self, addr: SocketAddr) -> (TcpStream, String) {
        let mut s = TcpStream::connect(addr).await.expect("endpoint accepts");
        let name = tokio::time::timeout(Duration::from_secs(3), read_line(&mut s))
            .await
            .expect("a member answers within 3s")
            .expect("the member writes its name");
        (s, name)
    }

    async fn spread(
        &self,
        addr: SocketAddr,
        n: usize,
    ) -> (Vec<TcpStream>, BTreeMap<String, usize>) {
        let mut held = vec![];
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let (s, m) = self.open(addr).await;
            *counts.entry(m).or_insert(0) += 1;
            held.push(s);
        }
        (held, counts)
    }
}

async fn read_line(s: &mut TcpStream) -> Option<String> {
    let mut out = vec![];
    let mut b = [0u8; 1];
    while s.read(&mut b).await.ok()? == 1 {
        if b[0] == b'\n' {
            return String::from_utf8(out).ok();
        }
        out.push(b[0]);
    }
    None
}

/// Whether the endpoint closes the connection within 3 s.
async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 8];
    matches!(
        tokio::time::timeout(Duration::from_secs(3), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_follow_the_primary_and_old_sessions_are_cut() {
    let c = cluster(0).await;
    let rw = c.endpoint.rw_addr;
    let (mut held, reached) = c.open(rw).await;
    assert_eq!(reached, MEMBERS[0]);
    let s = c
        .until("the session is counted", |s| {
            s.connections.get(MEMBERS[0]).is_some_and(|n| n.rw == 1)
        })
        .await;
    assert_eq!(s.rw_target.as_deref(), Some(MEMBERS[0]));

    // Switchover: m0 becomes a replica, m1 the primary.
    c.set(0, RoleReport::example(Role::Replica, true, Some(0.0)));
    c.set(1, RoleReport::example(Role::Primary, true, None));
    assert!(
        closed(&mut held).await,
        "a session stayed on the old primary"
    );
    let (_s, reached) = c.open(rw).await;
    assert_eq!(reached, MEMBERS[1]);

    // Two members say primary: writes go to neither, and the open session is cut.
    let (mut on_m1, _) = c.open(rw).await;
    c.set(2, RoleReport::example(Role::Primary, true, None));
    assert!(
        closed(&mut on_m1).await,
        "a session stayed with two primaries"
    );
    let s = c
        .until("no read-write target", |s| s.rw_target.is_none())
        .await;
    assert!(s
        .rw_reason
        .as_deref()
        .is_some_and(|r| r.contains("2 members")));
    let mut refused = TcpStream::connect(rw).await.expect("accepts");
    assert!(
        closed(&mut refused).await,
        "a write session was let in with two primaries"
    );

    // A connection that arrives in the gap is held until a primary is back.
    c.set(2, RoleReport::example(Role::Replica, true, Some(0.0)));
    let (_s, reached) = c.open(rw).await;
    assert_eq!(reached, MEMBERS[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_spread_by_weight_skip_a_lagging_replica_and_fall_back() {
    let c = cluster(0).await;
    let ro = c.endpoint.ro_addr;
    // Lag 7.5 s of 10 leaves m2 a quarter of m1's weight.
    c.set(2, RoleReport::example(Role::Replica, true, Some(7.5)));
    let s = c
        .until("weights follow lag", |s| {
            s.ro_targets.iter().map(|t| t.weight).collect::<Vec<_>>() == [1000, 250]
        })
        .await;
    assert!(!s.ro_fallback);
    let (_held, counts) = c.spread(ro, 50).await;
    assert_eq!(counts.get(MEMBERS[1]), Some(&40), "{counts:?}");
    assert_eq!(counts.get(MEMBERS[2]), Some(&10), "{counts:?}");
    let s = c
        .until("sessions counted", |s| {
            s.connections.get(MEMBERS[1]).is_some_and(|n| n.ro == 40)
        })
        .await;
    assert_eq!(s.connections.get(MEMBERS[2]).map(|n| n.ro), Some(10));

    // m2 falls 30 s behind: no new sessions reach it, until it catches up.
    c.set(2, RoleReport::example(Role::Replica, true, Some(30.0)));
    let s = c.until("m2 excluded", |s| s.ro_targets.len() == 1).await;
    let m2 = s
        .members
        .iter()
        .find(|m| m.member == MEMBERS[2])
        .expect("m2");
    assert!(
        m2.excluded.as_deref().is_some_and(|e| e.contains("lag")),
        "{m2:?}"
    );
    let (_held2, counts) = c.spread(ro, 10).await;
    assert_eq!(counts.keys().collect::<Vec<_>>(), [MEMBERS[1]]);
    c.set(2, RoleReport::example(Role::Replica, true, Some(0.0)));
    c.until("m2 back", |s| s.ro_targets.len() == 2).await;
    let (_held3, counts) = c.spread(ro, 10).await;
    assert_eq!(counts.get(MEMBERS[2]), Some(&5), "{counts:?}");

    // No replica qualifies: reads go to the primary, and the status says so.
    c.set(1, RoleReport::example(Role::Replica, false, Some(0.0)));
    c.set(2, RoleReport::example(Role::Replica, true, Some(60.0)));
    let s = c.until("fallback", |s| s.ro_fallback).await;
    assert!(s
        .ro_reason
        .as_deref()
        .is_some_and(|r| r.contains("primary")));
    let (_held4, counts) = c.spread(ro, 3).await;
    assert_eq!(counts.keys().collect::<Vec<_>>(), [MEMBERS[0]]);
}
