//! An instance's containers: its members, and its endpoint.

use crate::{status, Outcome, Result, Runtime};
use berth_model::{labels, InstanceId, MemberId};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, Mount, MountType, NetworkingConfig,
    PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, RemoveContainerOptionsBuilder,
    StartContainerOptions, StopContainerOptionsBuilder,
};
use std::collections::HashMap;
use std::net::IpAddr;

/// Which member container: Berth finds it by its site, instance and member labels,
/// never by name alone, so another installation's container of the same name is
/// never adopted, stopped or removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberKey {
    /// The instance.
    pub instance: InstanceId,
    /// The member.
    pub member: MemberId,
}

/// Which of an instance's containers: a member, or the endpoint (found by its
/// `io.berth.endpoint` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerKey {
    /// A member's container.
    Member(MemberKey),
    /// The instance's endpoint container.
    Endpoint(InstanceId),
}

impl From<MemberKey> for ContainerKey {
    fn from(k: MemberKey) -> Self {
        Self::Member(k)
    }
}

impl std::fmt::Display for ContainerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Member(k) => write!(f, "member {} of instance {}", k.member, k.instance),
            Self::Endpoint(i) => write!(f, "the endpoint of instance {i}"),
        }
    }
}

/// Everything that defines one of an instance's containers.
#[derive(Clone, Debug)]
pub struct MemberContainer {
    /// Whose container it is (its labels say so too).
    pub key: ContainerKey,
    /// `berth-<instance>-<id>-<n>`.
    pub name: String,
    /// Engine image.
    pub image: String,
    /// Labels (site, instance, member, project).
    pub labels: HashMap<String, String>,
    /// `KEY=value` environment.
    pub env: Vec<String>,
    /// The agent binary inside the container.
    pub entrypoint: Vec<String>,
    /// The instance's network.
    pub network: String,
    /// Data volume and where it is mounted (none for the endpoint).
    pub data_volume: Option<(String, String)>,
    /// Agent volume and where it is mounted (read-only).
    pub agent_volume: (String, String),
    /// CPU limit in nano-CPUs.
    pub nano_cpus: i64,
    /// Memory limit in bytes (swap is not allowed beyond it).
    pub memory_bytes: i64,
    /// `/dev/shm` size in bytes.
    pub shm_bytes: i64,
    /// Container ports published to clients, with the host address and port (none
    /// for members: they are reached on the instance's network, through the endpoint).
    pub publish: Vec<(u16, String, u16)>,
    /// Other ports the container listens on (the agent's).
    pub expose: Vec<u16>,
    /// Seconds Docker waits after SIGTERM before SIGKILL.
    pub stop_timeout: i64,
}

/// What Docker says about a member container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerObservation {
    /// Docker's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Running right now.
    pub running: bool,
    /// Docker's status word (`running`, `exited`, `restarting`, …).
    pub status: String,
    /// Exit code of the last run.
    pub exit_code: Option<i64>,
    /// Address on the instance network.
    pub ip: Option<IpAddr>,
    /// Host port the client port is published on.
    pub host_port: Option<u16>,
}

impl Runtime {
    /// The id of the container, found by this site's labels.
    pub async fn find_member(&self, key: impl Into<ContainerKey>) -> Result<Option<String>> {
        let mut wanted = vec![format!("{}={}", labels::SITE, self.site())];
        match key.into() {
            ContainerKey::Member(k) => wanted.extend([
                format!("{}={}", labels::INSTANCE, k.instance),
                format!("{}={}", labels::MEMBER, k.member),
            ]),
            ContainerKey::Endpoint(i) => wanted.extend([
                format!("{}={i}", labels::INSTANCE),
                format!("{}=true", labels::ENDPOINT),
            ]),
        }
        let filters = HashMap::from([("label".to_owned(), wanted)]);
        let opts = bollard::query_parameters::ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        Ok(self
            .docker()
            .list_containers(Some(opts))
            .await?
            .into_iter()
            .find_map(|c| c.id))
    }

    /// The member's container id, or an error that says it is missing.
    async fn member_id(&self, key: impl Into<ContainerKey>) -> Result<String> {
        let key = key.into();
        self.find_member(key)
            .await?
            .ok_or(crate::RuntimeError::NoContainer(key))
    }

    /// Creates the member container unless it exists (found by its labels).
    pub async fn ensure_container(&self, spec: &MemberContainer) -> Result<Outcome> {
        if self.find_member(spec.key).await?.is_some() {
            return Ok(Outcome::AlreadyThere);
        }
        let mut exposed: Vec<String> = spec.expose.iter().map(|p| format!("{p}/tcp")).collect();
        let mut port_bindings = HashMap::new();
        for (client_port, host_ip, host_port) in &spec.publish {
            exposed.push(format!("{client_port}/tcp"));
            port_bindings.insert(
                format!("{client_port}/tcp"),
                Some(vec![PortBinding {
                    host_ip: Some(host_ip.clone()),
                    host_port: Some(host_port.to_string()),
                }]),
            );
        }
        let mount = |(source, target): &(String, String), read_only: bool| Mount {
            source: Some(source.clone()),
            target: Some(target.clone()),
            typ: Some(MountType::VOLUME),
            read_only: Some(read_only),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: Some(spec.entrypoint.clone()),
            cmd: Some(vec![]),
            env: Some(spec.env.clone()),
            labels: Some(spec.labels.clone()),
            hostname: Some(spec.name.clone()),
            exposed_ports: Some(exposed),
            stop_timeout: Some(spec.stop_timeout),
            host_config: Some(HostConfig {
                nano_cpus: Some(spec.nano_cpus),
                memory: Some(spec.memory_bytes),
                memory_swap: Some(spec.memory_bytes),
                shm_size: Some(spec.shm_bytes),
                port_bindings: Some(port_bindings),
                mounts: Some(
                    spec.data_volume
                        .iter()
                        .map(|v| mount(v, false))
                        .chain([mount(&spec.agent_volume, true)])
                        .collect(),
                ),
                // Databases come back after a reboot or a dockerd restart without
                // the control plane (DESIGN principle 1); a user's stop is kept.
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                network_mode: Some(spec.network.clone()),
                init: Some(false),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    spec.network.clone(),
                    EndpointSettings::default(),
                )])),
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        match self.docker().create_container(Some(opts), body).await {
            Ok(_) => Ok(Outcome::Done),
            // The name is taken: by our own container made concurrently, or by
            // someone else's, which we never adopt.
            Err(e) if status(&e) == Some(409) => match self.find_member(spec.key).await? {
                Some(_) => Ok(Outcome::AlreadyThere),
                None => Err(crate::RuntimeError::NotOurs {
                    kind: "container",
                    name: spec.name.clone(),
                }),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// What Docker says about the member's container, `None` if it has none.
    pub async fn inspect_member(
        &self,
        key: impl Into<ContainerKey>,
    ) -> Result<Option<ContainerObservation>> {
        match self.find_member(key).await? {
            Some(id) => self.inspect_container(&id).await,
            None => Ok(None),
        }
    }

    /// What Docker says about a container by id, `None` if there is none.
    async fn inspect_container(&self, id: &str) -> Result<Option<ContainerObservation>> {
        let info = match self
            .docker()
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => i,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let state = info.state.unwrap_or_default();
        let net = info.network_settings.unwrap_or_default();
        let ip = net
            .networks
            .unwrap_or_default()
            .values()
            .filter_map(|n| n.ip_address.as_deref())
            .find(|s| !s.is_empty())
            .and_then(|s| s.parse().ok());
        let host_port = net
            .ports
            .unwrap_or_default()
            .values()
            .flatten()
            .flatten()
            .filter_map(|b| b.host_port.as_deref().and_then(|p| p.parse().ok()))
            .next();
        Ok(Some(ContainerObservation {
            id: info.id.unwrap_or_else(|| id.to_owned()),
            name: info
                .name
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default(),
            running: state.running.unwrap_or(false),
            status: state.status.map(|s| s.to_string()).unwrap_or_default(),
            exit_code: state.exit_code,
            ip,
            host_port,
        }))
    }

    /// Starts the member's container if it is not running.
    pub async fn ensure_running(&self, key: impl Into<ContainerKey>) -> Result<Outcome> {
        let id = self.member_id(key).await?;
        match self
            .docker()
            .start_container(&id, None::<StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(Outcome::Done),
            Err(e) if status(&e) == Some(304) => Ok(Outcome::AlreadyThere),
            Err(e) => Err(e.into()),
        }
    }

    /// Stops the container (SIGTERM to the agent, which shuts the engine down
    /// cleanly) if it runs; absent counts as stopped.
    pub async fn ensure_stopped(
        &self,
        key: impl Into<ContainerKey>,
        timeout_secs: i32,
    ) -> Result<Outcome> {
        let Some(id) = self.find_member(key).await? else {
            return Ok(Outcome::AlreadyThere);
        };
        let opts = StopContainerOptionsBuilder::new().t(timeout_secs).build();
        match self.docker().stop_container(&id, Some(opts)).await {
            Ok(()) => Ok(Outcome::Done),
            Err(e) if matches!(status(&e), Some(304) | Some(404)) => Ok(Outcome::AlreadyThere),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the member's container (forcibly) if it exists.
    pub async fn remove_member(&self, key: impl Into<ContainerKey>) -> Result<Outcome> {
        match self.find_member(key).await? {
            Some(id) => self.remove_container(&id).await,
            None => Ok(Outcome::AlreadyThere),
        }
    }

    /// Removes a container (forcibly) by id, as found by label, if it exists.
    pub async fn remove_container(&self, id: &str) -> Result<Outcome> {
        let opts = RemoveContainerOptionsBuilder::new().force(true).build();
        match self.docker().remove_container(id, Some(opts)).await {
            Ok(()) => Ok(Outcome::Done),
            Err(e) if status(&e) == Some(404) => Ok(Outcome::AlreadyThere),
            // "removal already in progress": another caller is removing it.
            Err(e) if status(&e) == Some(409) => Ok(Outcome::AlreadyThere),
            Err(e) => Err(e.into()),
        }
    }
}

/// Memory a container really uses: Docker's usage less the page cache the kernel can
/// drop at will (`inactive_file`, v2; `total_inactive_file`, v1). Shared memory, like
/// PostgreSQL's shared buffers, stays counted.
pub fn working_set(usage: u64, stats: &HashMap<String, u64>) -> u64 {
    let reclaimable = stats
        .get("inactive_file")
        .or_else(|| stats.get("total_inactive_file"))
        .copied()
        .unwrap_or(0);
    usage.saturating_sub(reclaimable)
}

impl Runtime {
    /// Changes a container's CPU and memory limits in place (no restart).
    pub async fn update_limits(
        &self,
        key: MemberKey,
        nano_cpus: i64,
        memory_bytes: i64,
    ) -> Result<()> {
        let id = self.member_id(key).await?;
        let body = bollard::models::ContainerUpdateBody {
            nano_cpus: Some(nano_cpus),
            memory: Some(memory_bytes),
            memory_swap: Some(memory_bytes),
            ..Default::default()
        };
        self.docker().update_container(&id, body).await?;
        Ok(())
    }

    /// The container's limits as Docker has them now: (nano-CPUs, memory bytes).
    pub async fn limits(&self, key: MemberKey) -> Result<Option<(i64, i64)>> {
        let Some(id) = self.find_member(key).await? else {
            return Ok(None);
        };
        match self
            .docker()
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => {
                let hc = i.host_config.unwrap_or_default();
                Ok(Some((hc.nano_cpus.unwrap_or(0), hc.memory.unwrap_or(0))))
            }
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The memory a running container uses now, in bytes (see [`working_set`]).
    pub async fn memory_in_use(&self, key: MemberKey) -> Result<Option<u64>> {
        use futures_util::StreamExt;
        let Some(id) = self.find_member(key).await? else {
            return Ok(None);
        };
        let opts = bollard::query_parameters::StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stream = self.docker().stats(&id, Some(opts));
        match stream.next().await {
            Some(Ok(s)) => Ok(s
                .memory_stats
                .and_then(|m| Some(working_set(m.usage?, &m.stats.unwrap_or_default())))),
            Some(Err(e)) if status(&e) == Some(404) => Ok(None),
            Some(Err(e)) => Err(e.into()),
            None => Ok(None),
        }
    }
}

impl Runtime {
    /// Writes a file into a container's file system (a mounted volume included),
    /// whether the container runs or not.
    pub async fn put_file(
        &self,
        key: MemberKey,
        dir: &str,
        name: &str,
        contents: &[u8],
    ) -> Result<()> {
        let mut archive = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        archive
            .append_data(&mut header, name, contents)
            .map_err(|source| crate::RuntimeError::Io {
                what: format!("packing {name}"),
                source,
            })?;
        let tar = archive
            .into_inner()
            .map_err(|source| crate::RuntimeError::Io {
                what: format!("packing {name}"),
                source,
            })?;
        let container = self.member_id(key).await?;
        self.docker()
            .upload_to_container(
                &container,
                Some(
                    bollard::query_parameters::UploadToContainerOptionsBuilder::new()
                        .path(dir)
                        .build(),
                ),
                bollard::body_full(tar.into()),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_set_leaves_out_reclaimable_cache_only() {
        let v2 = HashMap::from([("inactive_file".to_owned(), 100), ("shmem".to_owned(), 300)]);
        assert_eq!(working_set(1000, &v2), 900);
        let v1 = HashMap::from([("total_inactive_file".to_owned(), 250)]);
        assert_eq!(working_set(1000, &v1), 750);
        assert_eq!(working_set(10, &v1), 0);
        assert_eq!(working_set(10, &HashMap::new()), 10);
    }
}
