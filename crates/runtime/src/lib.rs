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

pub use agent_volume::AGENT_MOUNT;
pub use containers::{working_set, ContainerObservation, MemberContainer};

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

    /// Docker answered 409: a conflict (the object exists, or is in use).
    pub fn is_conflict(&self) -> bool {
        matches!(self, RuntimeError::Docker(e) if status(e) == Some(409))
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
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Containers only: whether it runs.
    pub running: bool,
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
            Ok(_) => return Ok(Outcome::AlreadyThere),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
        let req = bollard::models::NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            labels: Some(labels),
            ..Default::default()
        };
        match self.docker.create_network(req).await {
            Ok(_) => Ok(Outcome::Done),
            // Created concurrently by a resumed task: that is what we wanted.
            Err(e) if status(&e) == Some(409) => Ok(Outcome::AlreadyThere),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the network if it exists.
    pub async fn remove_network(&self, name: &str) -> Result<Outcome> {
        match self.docker.remove_network(name).await {
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
        match self.docker.inspect_volume(name).await {
            Ok(_) => return Ok(Outcome::AlreadyThere),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
        let req = bollard::models::VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..Default::default()
        };
        self.docker.create_volume(req).await?;
        Ok(Outcome::Done)
    }

    /// Whether the volume exists.
    pub async fn volume_exists(&self, name: &str) -> Result<bool> {
        match self.docker.inspect_volume(name).await {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the volume if it exists.
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
                name: c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                labels: c.labels.unwrap_or_default(),
                running: c.state.map(|s| s.to_string() == "running").unwrap_or(false),
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
                name: n.name.unwrap_or_default(),
                labels: n.labels.unwrap_or_default(),
                running: false,
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
                name: v.name,
                labels: v.labels,
                running: false,
            })
            .collect())
    }
}

fn disk_free_mib(path: &str) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64 / (1024 * 1024))
}
