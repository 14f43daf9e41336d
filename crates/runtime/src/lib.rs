//! The runtime: Berth's only door to Docker.
//!
//! Every operation is idempotent and named for what it ensures: calling
//! `ensure_volume` twice creates one volume; removing what is absent succeeds. Each
//! reports an [`Outcome`] so task logs say what was found and what was done.
//!
//! Every object carries the `io.berth.site` label of the installation that made it,
//! and every listing filters on it: two installations (or two test runs) sharing a
//! Docker engine never see, let alone remove, each other's objects.

mod agent_volume;
mod catalog;
mod containers;
pub mod image;
mod stats;

pub use agent_volume::AGENT_MOUNT;
pub use containers::{working_set, ContainerKey, ContainerObservation, MemberContainer, MemberKey};
pub use stats::{member_stats, MemberContainerRef, MemberStats};

use berth_model::{labels, CpuMillis, HostCapacity, SiteId};
use bollard::Docker;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Errors from the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The Docker engine could not be reached.
    #[error(
        "cannot reach the Docker engine ({0}); is dockerd running and is its socket readable?"
    )]
    Unreachable(String),
    /// Docker refused or failed an operation.
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    /// Building an image failed.
    #[error("building image {tag}: {reason}")]
    ImageBuild {
        /// The image being built.
        tag: String,
        /// Why it failed.
        reason: String,
    },
    /// An object of the name Berth wanted exists but is not this instance's (another
    /// installation's, or made by hand): Berth never adopts or touches it.
    #[error("a Docker {kind} named {name} exists but does not belong to this Berth installation's instance; \
             Berth will not use or remove it: rename or remove it yourself if it is not needed")]
    NotOurs {
        /// `container`, `network` or `volume`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The container is not there (it was removed behind Berth's back).
    #[error("{0} has no container")]
    NoContainer(ContainerKey),
    /// Local I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// Docker answered 404: the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::Docker(e) if status(e) == Some(404))
    }

    /// The engine could not be reached (connection refused or dropped, socket gone,
    /// timeout): worth trying again, unlike an answer that refused the request.
    pub fn is_unreachable(&self) -> bool {
        use bollard::errors::Error as B;
        match self {
            RuntimeError::Unreachable(_) => true,
            RuntimeError::Docker(e) => matches!(
                e,
                B::IOError { .. }
                    | B::HyperResponseError { .. }
                    | B::HyperLegacyError { .. }
                    | B::RequestTimeoutError
                    | B::SocketNotFoundError(_)
            ),
            _ => false,
        }
    }

    /// Docker answered 409: a conflict (the object exists, or is in use).
    pub fn is_conflict(&self) -> bool {
        matches!(self, RuntimeError::Docker(e) if status(e) == Some(409))
    }

    /// Docker could not start a container because a host port it publishes is
    /// taken (by another container, or by a program): that port.
    pub fn host_port_taken(&self) -> Option<u16> {
        match self {
            RuntimeError::Docker(bollard::errors::Error::DockerResponseServerError {
                message,
                ..
            }) => port_taken_in(message),
            _ => None,
        }
    }
}

/// The host port named by Docker's answer when publishing it failed, as dockerd
/// words it: "Bind for 0.0.0.0:PORT failed: port is already allocated" (another
/// container has it), "listen tcp4 0.0.0.0:PORT: bind: address already in use" (a
/// program has it; up to Docker 27), "failed to bind host port 0.0.0.0:PORT/tcp:
/// address already in use" or "failed to bind host port for
/// 0.0.0.0:PORT:172.17.0.2:5432/tcp: address already in use" (Docker 28).
fn port_taken_in(message: &str) -> Option<u16> {
    if let Some(i) = message.find("failed to bind host port ") {
        let rest = &message[i + "failed to bind host port ".len()..];
        let (spec, host_first) = match rest.strip_prefix("for ") {
            Some(spec) => (spec, true),
            None => (rest, false),
        };
        let spec = spec.split([' ', ',']).next()?.trim_end_matches(':');
        let spec = spec.split('/').next()?;
        // The host address may be IPv6 in brackets; the port follows it.
        let after_host = match spec.strip_prefix('[') {
            Some(v6) => v6.split_once("]:")?.1,
            None => spec.split_once(':')?.1,
        };
        let port = if host_first {
            after_host.split(':').next()?
        } else {
            after_host
        };
        return port.parse().ok();
    }
    let before = [
        " failed: port is already allocated",
        ": bind: address already in use",
    ]
    .iter()
    .find_map(|tail| message.find(tail).map(|i| &message[..i]))?;
    let addr = before.split_whitespace().next_back()?;
    addr.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod port_tests {
    use super::port_taken_in;

    #[test]
    fn the_taken_port_is_read_from_dockerds_words() {
        let allocated =
            "driver failed programming external connectivity on endpoint berth-x-endpoint \
             (e5d5): Bind for 0.0.0.0:34969 failed: port is already allocated";
        assert_eq!(port_taken_in(allocated), Some(34969));
        let in_use = "driver failed programming external connectivity on endpoint x (ab): \
             Error starting userland proxy: listen tcp4 127.0.0.1:41000: bind: address already in use";
        assert_eq!(port_taken_in(in_use), Some(41000));
        let v6 = "Bind for [::]:5432 failed: port is already allocated";
        assert_eq!(port_taken_in(v6), Some(5432));
        let docker28 = "driver failed programming external connectivity on endpoint x (ab): \
             failed to bind host port 0.0.0.0:3306/tcp: address already in use";
        assert_eq!(port_taken_in(docker28), Some(3306));
        let docker28_for = "failed to bind host port for 0.0.0.0:8000:172.31.0.2:5432/tcp: \
             address already in use";
        assert_eq!(port_taken_in(docker28_for), Some(8000));
        let docker28_v6 = "failed to bind host port for [::]:8001:172.31.0.2:5432/tcp: \
             address already in use";
        assert_eq!(port_taken_in(docker28_v6), Some(8001));
        assert_eq!(port_taken_in("No such image: berth/postgres"), None);
        assert_eq!(port_taken_in("port is already allocated"), None);
    }
}

fn status(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Result of runtime operations.
pub type Result<T> = std::result::Result<T, RuntimeError>;

/// What an idempotent operation found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It was already as asked.
    AlreadyThere,
    /// It was made so.
    Done,
}

impl Outcome {
    /// The task-log sentence for this outcome: `done` when work was done,
    /// `already` when there was nothing to do.
    pub fn say(self, done: impl Into<String>, already: impl Into<String>) -> String {
        match self {
            Outcome::AlreadyThere => already.into(),
            Outcome::Done => done.into(),
        }
    }
}

/// A Docker object Berth labelled, as listed for reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labelled {
    /// Docker's id for containers and networks; the name for volumes.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Containers only: whether it runs.
    pub running: bool,
    /// Containers only: whether it is paused (frozen: it should run, and answers
    /// nothing).
    pub paused: bool,
}

/// Handle to the Docker engine for one site.
#[derive(Clone)]
pub struct Runtime {
    docker: Docker,
    site: SiteId,
    /// Serialises agent-volume population within this process.
    agent_lock: Arc<Mutex<Option<String>>>,
}

impl Runtime {
    /// Connects to the local Docker engine and agrees on an API version.
    pub async fn connect(site: SiteId) -> Result<Self> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?
            .negotiate_version()
            .await
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?;
        Ok(Self {
            docker,
            site,
            agent_lock: Arc::new(Mutex::new(None)),
        })
    }

    /// The site this runtime labels objects with.
    pub fn site(&self) -> SiteId {
        self.site
    }

    /// The underlying client, for the image builder.
    pub(crate) fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Labels every object of this site carries, plus `extra`.
    pub fn labels(&self, extra: &[(&str, String)]) -> HashMap<String, String> {
        let mut l: HashMap<String, String> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        l.insert(labels::SITE.to_owned(), self.site.to_string());
        l
    }

    /// Whether an object with `found` labels is the one `wanted` describes: same
    /// site and, where `wanted` names them, the same instance and member.
    fn owns(&self, found: &HashMap<String, String>, wanted: &HashMap<String, String>) -> bool {
        [labels::SITE, labels::INSTANCE, labels::MEMBER]
            .iter()
            .all(|k| match (wanted.get(*k), found.get(*k)) {
                (None, _) => *k != labels::SITE,
                (Some(w), Some(f)) => w == f,
                (Some(_), None) => false,
            })
            && found.get(labels::SITE) == Some(&self.site.to_string())
    }

    fn site_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            vec![format!("{}={}", labels::SITE, self.site)],
        )])
    }

    /// What the Docker host has: cores, memory, and free disk where Docker keeps data.
    pub async fn host_capacity(&self) -> Result<HostCapacity> {
        let info = self.docker.info().await?;
        let cpus = u32::try_from(info.ncpu.unwrap_or(1))
            .unwrap_or(1)
            .saturating_mul(1000);
        let memory_mib = u64::try_from(info.mem_total.unwrap_or(0)).unwrap_or(0) / (1024 * 1024);
        let root = info
            .docker_root_dir
            .unwrap_or_else(|| "/var/lib/docker".into());
        let disk_free_mib = disk_free_mib(&root)
            .or_else(|| disk_free_mib("/"))
            .unwrap_or(u64::MAX / 2);
        let cpus =
            CpuMillis::from_millis(cpus.clamp(CpuMillis::MIN, CpuMillis::MAX)).map_err(|e| {
                RuntimeError::Unreachable(format!("docker info reported odd CPUs: {e}"))
            })?;
        Ok(HostCapacity {
            cpus,
            memory_mib,
            disk_free_mib,
        })
    }

    /// Creates the network if it does not exist.
    pub async fn ensure_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<Outcome> {
        match self
            .docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(n) if self.owns(n.labels.as_ref().unwrap_or(&HashMap::new()), &labels) => {
                return Ok(Outcome::AlreadyThere)
            }
            Ok(_) => return Err(not_ours("network", name)),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
        let req = bollard::models::NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            labels: Some(labels.clone()),
            ..Default::default()
        };
        match self.docker.create_network(req).await {
            Ok(_) => Ok(Outcome::Done),
            // Created concurrently by a resumed task: check it is ours.
            Err(e) if status(&e) == Some(409) => Box::pin(self.ensure_network(name, labels)).await,
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the network if it exists and is the one `owner` describes (labels
    /// as given to [`Runtime::ensure_network`]); another's network of that name is
    /// left alone, and ours counts as gone.
    pub async fn remove_network(
        &self,
        name: &str,
        owner: &HashMap<String, String>,
    ) -> Result<Outcome> {
        let id = match self
            .docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(n) if self.owns(n.labels.as_ref().unwrap_or(&HashMap::new()), owner) => {
                n.id.unwrap_or_else(|| name.to_owned())
            }
            Ok(_) => return Ok(Outcome::AlreadyThere),
            Err(e) if status(&e) == Some(404) => return Ok(Outcome::AlreadyThere),
            Err(e) => return Err(e.into()),
        };
        self.remove_listed_network(&id).await
    }

    /// Removes a network found in this site's listing, by id.
    pub async fn remove_listed_network(&self, id: &str) -> Result<Outcome> {
        match self.docker.remove_network(id).await {
            Ok(()) => Ok(Outcome::Done),
            Err(e) if status(&e) == Some(404) => Ok(Outcome::AlreadyThere),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the volume if it does not exist.
    pub async fn ensure_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<Outcome> {
        if self.volume_exists(name, &labels).await? {
            return Ok(Outcome::AlreadyThere);
        }
        let req = bollard::models::VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..Default::default()
        };
        self.docker.create_volume(req).await?;
        Ok(Outcome::Done)
    }

    /// Whether the volume exists and is the one `owner` describes. One of the same
    /// name that is not ours is an error: a container would mount it as ours.
    pub async fn volume_exists(&self, name: &str, owner: &HashMap<String, String>) -> Result<bool> {
        match self.docker.inspect_volume(name).await {
            Ok(v) if self.owns(&v.labels, owner) => Ok(true),
            Ok(_) => Err(not_ours("volume", name)),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the volume if it exists and is the one `owner` describes; another's
    /// volume of that name is never removed.
    pub async fn remove_owned_volume(
        &self,
        name: &str,
        owner: &HashMap<String, String>,
    ) -> Result<Outcome> {
        match self.docker.inspect_volume(name).await {
            Ok(v) if self.owns(&v.labels, owner) => self.remove_volume(name).await,
            Ok(_) => Ok(Outcome::AlreadyThere),
            Err(e) if status(&e) == Some(404) => Ok(Outcome::AlreadyThere),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a volume found by label (this site's listing, or agent volumes).
    pub async fn remove_volume(&self, name: &str) -> Result<Outcome> {
        match self
            .docker
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
        {
            Ok(()) => Ok(Outcome::Done),
            Err(e) if status(&e) == Some(404) => Ok(Outcome::AlreadyThere),
            Err(e) => Err(e.into()),
        }
    }

    /// This site's labelled containers (running or not).
    pub async fn list_containers(&self) -> Result<Vec<Labelled>> {
        let opts = bollard::query_parameters::ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&self.site_filter())
            .build();
        Ok(self
            .docker
            .list_containers(Some(opts))
            .await?
            .into_iter()
            .map(|c| Labelled {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                labels: c.labels.unwrap_or_default(),
                running: c.state.is_some_and(|s| s.to_string() == "running"),
                paused: c.state.is_some_and(|s| s.to_string() == "paused"),
            })
            .collect())
    }

    /// This site's labelled networks.
    pub async fn list_networks(&self) -> Result<Vec<Labelled>> {
        let opts = bollard::query_parameters::ListNetworksOptionsBuilder::new()
            .filters(&self.site_filter())
            .build();
        Ok(self
            .docker
            .list_networks(Some(opts))
            .await?
            .into_iter()
            .map(|n| Labelled {
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                labels: n.labels.unwrap_or_default(),
                running: false,
                paused: false,
            })
            .collect())
    }

    /// This site's labelled volumes.
    pub async fn list_volumes(&self) -> Result<Vec<Labelled>> {
        let opts = bollard::query_parameters::ListVolumesOptionsBuilder::new()
            .filters(&self.site_filter())
            .build();
        Ok(self
            .docker
            .list_volumes(Some(opts))
            .await?
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| Labelled {
                id: v.name.clone(),
                name: v.name,
                labels: v.labels,
                running: false,
                paused: false,
            })
            .collect())
    }
}

fn not_ours(kind: &'static str, name: &str) -> RuntimeError {
    RuntimeError::NotOurs {
        kind,
        name: name.to_owned(),
    }
}

fn disk_free_mib(path: &str) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64 / (1024 * 1024))
}
