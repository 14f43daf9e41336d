//! The per-instance endpoint (`berth endpoint`): the address clients keep while
//! members come, go and change roles.
//!
//! It runs in a container of its own on the instance's private network. About every
//! second it asks every candidate member's agent `GET /role` (concurrently, each
//! bounded), chooses targets with the pure [`select`] module, and publishes the
//! choice to two TCP listeners through a watch channel:
//! - read-write ([`berth_model::endpoint::RW_PORT`]): the one ready primary. When the
//!   choice changes, every open read-write connection to a member that may no longer
//!   take writes is closed at once (see [`select::Selection::rw_keep`]);
//! - read-only ([`berth_model::endpoint::RO_PORT`]): new connections are spread over
//!   fresh replicas by weight, or go to the primary when none qualifies.
//!
//! A connection that arrives while there is no target waits up to the hold time
//! (2 s by default) for one — a switchover's gap is shorter than that — and is
//! closed if none comes. Bytes are forwarded as they are: TLS runs end to end
//! between the client and the engine. `GET /status` on the status port says what is
//! routed where and why. The endpoint keeps no state across restarts: the first
//! probe round rebuilds it.

mod probe;
mod proxy;
pub mod select;
mod status;

use berth_model::endpoint::{self as contract, env};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Errors that stop the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// A variable is missing or malformed.
    #[error("endpoint configuration: {0}")]
    Config(String),
    /// A listener could not be opened.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Result of endpoint operations.
pub type Result<T> = std::result::Result<T, EndpointError>;

/// What the endpoint needs to know.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Candidate members' host names, probed every round.
    pub members: Vec<String>,
    /// The engine's client port on every member.
    pub engine_port: u16,
    /// The agent's port on every member.
    pub agent_port: u16,
    /// A replica further behind gets no new read-only connections.
    pub max_lag: Duration,
    /// Time between the starts of two probe rounds.
    pub probe_interval: Duration,
    /// Bound of one probe of one member.
    pub probe_timeout: Duration,
    /// How long a new connection waits for a target before it is closed.
    pub hold: Duration,
    /// Read-write listener.
    pub rw_listen: SocketAddr,
    /// Read-only listener.
    pub ro_listen: SocketAddr,
    /// Status listener.
    pub status_listen: SocketAddr,
}

impl EndpointConfig {
    /// Reads the configuration from the environment (the contract in
    /// [`berth_model::endpoint::env`]); listens on the contract's ports.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Reads the configuration from `var` (the environment, or a test's table).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let members: Vec<String> = var(env::MEMBERS)
            .ok_or_else(|| EndpointError::Config(format!("{} is not set", env::MEMBERS)))?
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect();
        if members.is_empty() {
            return Err(EndpointError::Config(format!(
                "{} names no member",
                env::MEMBERS
            )));
        }
        let number = |k: &str, default: Option<u64>| -> Result<u64> {
            match (var(k), default) {
                (Some(v), _) => v.trim().parse().map_err(|_| {
                    EndpointError::Config(format!("{k} is not a whole number: {v:?}"))
                }),
                (None, Some(d)) => Ok(d),
                (None, None) => Err(EndpointError::Config(format!("{k} is not set"))),
            }
        };
        let port = |k: &str, default: Option<u64>| -> Result<u16> {
            u16::try_from(number(k, default)?)
                .map_err(|_| EndpointError::Config(format!("{k} is not a port")))
        };
        let ms = |k: &str, default: u64| number(k, Some(default)).map(Duration::from_millis);
        let interval = ms(env::PROBE_INTERVAL_MS, contract::DEFAULT_PROBE_INTERVAL_MS)?;
        let any = |p: u16| SocketAddr::from(([0, 0, 0, 0], p));
        Ok(Self {
            members,
            engine_port: port(env::ENGINE_PORT, None)?,
            agent_port: port(
                env::AGENT_PORT,
                Some(u64::from(berth_model::agent::AGENT_PORT)),
            )?,
            max_lag: ms(env::MAX_LAG_MS, contract::DEFAULT_MAX_LAG_MS)?,
            probe_interval: interval.max(Duration::from_millis(10)),
            // A probe never outlasts its round.
            probe_timeout: Duration::from_millis(contract::DEFAULT_PROBE_TIMEOUT_MS)
                .min(interval.mul_f64(0.8)),
            hold: ms(env::HOLD_MS, contract::DEFAULT_HOLD_MS)?,
            rw_listen: any(contract::RW_PORT),
            ro_listen: any(contract::RO_PORT),
            status_listen: any(contract::STATUS_PORT),
        })
    }
}

/// A running endpoint.
pub struct Endpoint {
    /// Where the read-write listener is bound.
    pub rw_addr: SocketAddr,
    /// Where the read-only listener is bound.
    pub ro_addr: SocketAddr,
    /// Where the status listener is bound.
    pub status_addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl Endpoint {
    /// Opens the listeners and starts probing and serving.
    pub async fn start(config: EndpointConfig) -> Result<Self> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| EndpointError::Listen { addr, source })
        };
        let rw = bind(config.rw_listen).await?;
        let ro = bind(config.ro_listen).await?;
        let st = bind(config.status_listen).await?;
        let local = |l: &TcpListener, addr| {
            l.local_addr()
                .map_err(|source| EndpointError::Listen { addr, source })
        };
        let (rw_addr, ro_addr, status_addr) = (
            local(&rw, config.rw_listen)?,
            local(&ro, config.ro_listen)?,
            local(&st, config.status_listen)?,
        );
        tracing::info!(
            %rw_addr, %ro_addr, %status_addr,
            members = ?config.members,
            max_lag_ms = config.max_lag.as_millis() as u64,
            "endpoint listening"
        );
        let shared = Arc::new(proxy::Shared::new(config));
        let mut tasks = JoinSet::new();
        tasks.spawn(probe::run(shared.clone()));
        tasks.spawn(proxy::serve(rw, proxy::Listener::ReadWrite, shared.clone()));
        tasks.spawn(proxy::serve(ro, proxy::Listener::ReadOnly, shared.clone()));
        tasks.spawn(status::serve(st, shared));
        Ok(Self {
            rw_addr,
            ro_addr,
            status_addr,
            tasks,
        })
    }

    /// Stops probing and accepting. Open client connections end with the process.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Runs the endpoint until `shutdown` resolves.
pub async fn run(
    config: EndpointConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let endpoint = Endpoint::start(config).await?;
    shutdown.await;
    tracing::info!("endpoint stopping");
    endpoint.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<EndpointConfig> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        EndpointConfig::from_vars(|k| vars.get(k).cloned())
    }

    #[test]
    fn the_environment_contract_has_defaults_and_refuses_nonsense() {
        let c = config(&[(env::MEMBERS, "a, b,,c"), (env::ENGINE_PORT, "5432")]).expect("valid");
        assert_eq!(c.members, ["a", "b", "c"]);
        assert_eq!(c.max_lag, Duration::from_secs(10));
        assert_eq!(c.agent_port, berth_model::agent::AGENT_PORT);
        assert_eq!(c.rw_listen.port(), contract::RW_PORT);
        assert!(c.probe_timeout < c.probe_interval);
        let fast = config(&[
            (env::MEMBERS, "a"),
            (env::ENGINE_PORT, "3306"),
            (env::PROBE_INTERVAL_MS, "100"),
        ])
        .expect("valid");
        assert_eq!(fast.probe_timeout, Duration::from_millis(80));
        assert!(config(&[(env::MEMBERS, " , "), (env::ENGINE_PORT, "1")]).is_err());
        assert!(config(&[(env::MEMBERS, "a")]).is_err());
        assert!(config(&[(env::MEMBERS, "a"), (env::ENGINE_PORT, "70000")]).is_err());
        let e = config(&[
            (env::MEMBERS, "a"),
            (env::ENGINE_PORT, "1"),
            (env::MAX_LAG_MS, "10s"),
        ])
        .expect_err("refused");
        assert!(e.to_string().contains(env::MAX_LAG_MS));
    }
}
