//! The two TCP listeners: each accepted client is joined to the target the current
//! selection names, and bytes are copied both ways until either side closes — or,
//! on the read-write listener, until the target may no longer take writes.

use crate::select::{Selection, Spreader};
use crate::EndpointConfig;
use berth_model::endpoint::TargetConnections;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, warn};

/// Bound of a connection attempt to a member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the probe loop, the listeners and the status page share.
pub(crate) struct Shared {
    pub config: EndpointConfig,
    /// The current selection; every listener and read-write connection watches it.
    pub routes: watch::Sender<Arc<Selection>>,
    /// Probe rounds done.
    pub rounds: AtomicU64,
    /// Wakes the prober for a round now (`POST /probe`: the control plane just
    /// moved the primary).
    pub probe_now: tokio::sync::Notify,
    spreader: Mutex<Spreader>,
    open: Mutex<BTreeMap<String, TargetConnections>>,
}

/// Locks, going on with the data when another thread panicked holding the lock
/// (every value here stays consistent between statements).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(crate) fn new(config: EndpointConfig) -> Self {
        let (routes, _) = watch::channel(Arc::new(Selection {
            rw_reason: Some("no probe round has finished yet".to_owned()),
            ro_reason: Some("no probe round has finished yet".to_owned()),
            ..Selection::default()
        }));
        Self {
            config,
            routes,
            rounds: AtomicU64::new(0),
            probe_now: tokio::sync::Notify::new(),
            spreader: Mutex::new(Spreader::default()),
            open: Mutex::new(BTreeMap::new()),
        }
    }

    /// Open connections per member (members with none left out).
    pub(crate) fn open_connections(&self) -> BTreeMap<String, TargetConnections> {
        lock(&self.open)
            .iter()
            .filter(|(_, c)| c.rw + c.ro > 0)
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Which listener a connection came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listener {
    ReadWrite,
    ReadOnly,
}

/// Counts one open connection for as long as it lives.
struct Counted {
    shared: Arc<Shared>,
    member: String,
    listener: Listener,
}

impl Counted {
    fn new(shared: Arc<Shared>, member: String, listener: Listener) -> Self {
        Self::add(&shared, &member, listener, 1);
        Self {
            shared,
            member,
            listener,
        }
    }

    fn add(shared: &Shared, member: &str, listener: Listener, n: i64) {
        let mut open = lock(&shared.open);
        let c = open.entry(member.to_owned()).or_default();
        let slot = match listener {
            Listener::ReadWrite => &mut c.rw,
            Listener::ReadOnly => &mut c.ro,
        };
        *slot = slot.saturating_add_signed(n);
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        Self::add(&self.shared, &self.member, self.listener, -1);
    }
}

pub(crate) async fn serve(listener: TcpListener, kind: Listener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(handle(client, peer, kind, shared.clone()));
            }
            Err(e) => {
                // Out of descriptors, say: pause instead of spinning.
                warn!(error = %e, ?kind, "accepting a connection failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The target for a new connection, waiting up to the hold time for one.
async fn target(kind: Listener, shared: &Shared) -> Option<String> {
    let deadline = tokio::time::Instant::now() + shared.config.hold;
    let mut rx = shared.routes.subscribe();
    loop {
        let pick = {
            let sel = rx.borrow_and_update();
            match kind {
                Listener::ReadWrite => sel.rw.clone(),
                Listener::ReadOnly => lock(&shared.spreader).pick(&sel.ro),
            }
        };
        if pick.is_some() {
            return pick;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return None,
        }
    }
}

/// Resolves when `member` may no longer hold read-write connections.
async fn demoted(mut rx: watch::Receiver<Arc<Selection>>, member: &str) {
    loop {
        if rx.borrow_and_update().rw_keep.as_deref() != Some(member) {
            return;
        }
        if rx.changed().await.is_err() {
            // The endpoint is stopping; the process ends the connection.
            std::future::pending::<()>().await;
        }
    }
}

async fn handle(
    mut client: TcpStream,
    peer: std::net::SocketAddr,
    kind: Listener,
    shared: Arc<Shared>,
) {
    let Some(member) = target(kind, &shared).await else {
        debug!(%peer, ?kind, "no target within the hold time; closing");
        return;
    };
    let port = shared.config.engine_port;
    let mut upstream =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((member.as_str(), port)))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                warn!(%member, error = %e, ?kind, "connecting to the member failed");
                return;
            }
            Err(_) => {
                warn!(%member, ?kind, "connecting to the member timed out");
                return;
            }
        };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _counted = Counted::new(shared.clone(), member.clone(), kind);
    match kind {
        Listener::ReadOnly => {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
        Listener::ReadWrite => {
            let rx = shared.routes.subscribe();
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                _ = demoted(rx, &member) => {
                    debug!(%peer, %member, "closing a read-write connection: the member no longer takes writes");
                }
            }
        }
    }
}
