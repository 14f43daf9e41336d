//! A member's Docker objects, derived from the stored instance: one function says
//! what the container must look like, so create and repair build the same thing.

use crate::Ctx;
use berth_engine::engine;
use berth_model::agent::{env, AGENT_DIR, AGENT_PORT, DATA_DIR};
use berth_model::{labels, InstanceRecord, MemberId};
use berth_runtime::{MemberContainer, MemberKey};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;

pub(crate) fn instance_labels(ctx: &Ctx, inst: &InstanceRecord) -> HashMap<String, String> {
    ctx.runtime.labels(&[
        (labels::INSTANCE, inst.id.to_string()),
        (labels::INSTANCE_NAME, inst.name.to_string()),
        (labels::PROJECT, inst.project.to_string()),
    ])
}

pub(crate) fn member_labels(
    ctx: &Ctx,
    inst: &InstanceRecord,
    member: MemberId,
) -> HashMap<String, String> {
    let mut l = instance_labels(ctx, inst);
    l.insert(labels::MEMBER.to_owned(), member.to_string());
    l
}

pub(crate) fn container_name(inst: &InstanceRecord, member: MemberId) -> String {
    labels::container_name(&inst.name, inst.id, member)
}

/// How Docker objects of the member are found: by labels, never by name alone.
pub(crate) fn key(inst: &InstanceRecord, member: MemberId) -> MemberKey {
    MemberKey {
        instance: inst.id,
        member,
    }
}

/// The current primary's key.
pub(crate) fn primary_key(inst: &InstanceRecord) -> MemberKey {
    key(inst, inst.topology.primary)
}

pub(crate) fn network_name(inst: &InstanceRecord) -> String {
    labels::network_name(&inst.name, inst.id)
}

pub(crate) fn volume_name(inst: &InstanceRecord, member: MemberId) -> String {
    labels::volume_name(&inst.name, inst.id, member)
}

/// The member container for an instance, given its image and agent volume.
pub(crate) fn member_container(
    ctx: &Ctx,
    inst: &InstanceRecord,
    member: MemberId,
    image: &str,
    agent_volume: &str,
) -> MemberContainer {
    let eng = engine(inst.spec.engine);
    let token_sha = hex::encode(Sha256::digest(inst.agent_token.expose().as_bytes()));
    let mut env = vec![
        format!("{}={}", env::ENGINE, inst.spec.engine),
        format!("{}={}", env::VERSION, inst.spec.version),
        format!("{}={}", env::MEMORY_MIB, inst.spec.memory.mib()),
        format!("{}={}", env::CPU_MILLIS, inst.spec.cpus.millis()),
        format!("{}={}", env::TOKEN_SHA256, token_sha),
    ];
    if let Some(url) = &ctx.config.lease_store {
        env.push(format!("{}={url}", env::LEASE_STORE));
        env.push(format!(
            "{}={}",
            env::LEASE_PREFIX,
            crate::failover::lease_prefix(&ctx.site)
        ));
        env.push(format!("{}={}", env::LEASE_NAME, inst.id));
    }
    env.extend(
        eng.bootstrap_env(&inst.superuser_password)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}")),
    );
    let memory = inst.spec.memory.bytes();
    MemberContainer {
        key: key(inst, member).into(),
        name: container_name(inst, member),
        image: image.to_owned(),
        labels: member_labels(ctx, inst, member),
        env,
        entrypoint: vec![format!("{AGENT_DIR}/berth"), "agent".into()],
        network: network_name(inst),
        data_volume: Some((volume_name(inst, member), DATA_DIR.into())),
        agent_volume: (agent_volume.to_owned(), AGENT_DIR.into()),
        nano_cpus: inst.spec.cpus.nano_cpus(),
        memory_bytes: i64::try_from(memory).unwrap_or(i64::MAX),
        // Parallel query and hash joins use POSIX shared memory; Docker's default
        // 64MiB /dev/shm is too small beyond toy sizes.
        shm_bytes: i64::try_from((memory / 4).max(64 * 1024 * 1024)).unwrap_or(i64::MAX),
        // Clients come through the endpoint; members are on the instance's network.
        publish: vec![],
        expose: vec![AGENT_PORT],
        stop_timeout: 60,
    }
}

/// The instance's endpoint container: `berth endpoint` from the engine's image and
/// the agent volume, on the instance's network, publishing the read-write and
/// read-only ports fixed at create. It finds the members by their container names
/// (Docker's DNS), probing every possible member, so scaling never changes it.
pub(crate) fn endpoint_container(
    ctx: &Ctx,
    inst: &InstanceRecord,
    image: &str,
    agent_volume: &str,
) -> MemberContainer {
    use berth_model::endpoint::{env as ep, RO_PORT, RW_PORT, STATUS_PORT};
    let candidates: Vec<String> = (0..berth_model::member::MAX_MEMBERS)
        .map(|m| container_name(inst, MemberId(m)))
        .collect();
    let mut labels = instance_labels(ctx, inst);
    labels.insert(labels::ENDPOINT.to_owned(), "true".to_owned());
    let host = ctx.config.publish_address.clone();
    MemberContainer {
        key: berth_runtime::ContainerKey::Endpoint(inst.id),
        name: labels::endpoint_container_name(&inst.name, inst.id),
        image: image.to_owned(),
        labels,
        env: vec![
            format!("{}={}", ep::MEMBERS, candidates.join(",")),
            format!(
                "{}={}",
                ep::ENGINE_PORT,
                engine(inst.spec.engine).client_port()
            ),
            format!("{}={}", ep::MAX_LAG_MS, inst.topology.max_lag_ms),
        ],
        entrypoint: vec![format!("{AGENT_DIR}/berth"), "endpoint".into()],
        network: network_name(inst),
        data_volume: None,
        agent_volume: (agent_volume.to_owned(), AGENT_DIR.into()),
        nano_cpus: 500_000_000,
        memory_bytes: 128 * 1024 * 1024,
        shm_bytes: 64 * 1024 * 1024,
        publish: vec![
            (RW_PORT, host.clone(), inst.port),
            (RO_PORT, host, inst.ro_port),
        ],
        expose: vec![STATUS_PORT],
        stop_timeout: 5,
    }
}

/// What the endpoint says it routes to, if it answers.
pub(crate) async fn endpoint_status(
    ctx: &Ctx,
    inst: &InstanceRecord,
) -> Option<berth_model::endpoint::EndpointStatus> {
    let obs = ctx
        .runtime
        .inspect_member(berth_runtime::ContainerKey::Endpoint(inst.id))
        .await
        .ok()
        .flatten()
        .filter(|o| o.running)?;
    let url = format!(
        "http://{}{}",
        std::net::SocketAddr::new(obs.ip?, berth_model::endpoint::STATUS_PORT),
        berth_model::endpoint::STATUS_PATH
    );
    ctx.http
        .get(url)
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Asks the endpoint to probe the members now (roles just changed); best effort:
/// it probes every second anyway.
pub(crate) async fn nudge_endpoint(ctx: &Ctx, inst: &InstanceRecord) {
    let Ok(Some(obs)) = ctx
        .runtime
        .inspect_member(berth_runtime::ContainerKey::Endpoint(inst.id))
        .await
    else {
        return;
    };
    let Some(ip) = obs.ip.filter(|_| obs.running) else {
        return;
    };
    let url = format!(
        "http://{}{}",
        std::net::SocketAddr::new(ip, berth_model::endpoint::STATUS_PORT),
        berth_model::endpoint::PROBE_PATH
    );
    let _ = ctx
        .http
        .post(url)
        .timeout(std::time::Duration::from_secs(1))
        .send()
        .await;
}

/// Whether the member's container is not running (stopped, or gone): what Docker
/// says, and `false` when Docker does not answer.
pub(crate) async fn not_running(ctx: &Ctx, inst: &InstanceRecord, m: MemberId) -> bool {
    match ctx.runtime.inspect_member(key(inst, m)).await {
        Ok(seen) => !seen.is_some_and(|o| o.running),
        Err(_) => false,
    }
}

/// What a member's agent says about its engine.
#[derive(Clone, Debug, serde::Deserialize)]
pub(crate) struct AgentHealth {
    pub ready: bool,
    pub state: String,
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub last_exit: Option<String>,
    /// Why the agent refuses to start the engine (state `refused`).
    #[serde(default)]
    pub reason: Option<String>,
    /// On a primary: why synchronous commits are not confirmed as asked.
    #[serde(default)]
    pub sync_degraded: Option<String>,
    /// How the member last rejoined after being a primary (`how`, `reason`).
    #[serde(default)]
    pub rejoined: Option<serde_json::Value>,
    /// With an external lease store: how the member last elected itself primary.
    #[serde(default)]
    pub elected: Option<serde_json::Value>,
    /// With an external lease store: why the member, finding the lease free, did
    /// not take it.
    #[serde(default)]
    pub declined: Option<String>,
}

impl AgentHealth {
    /// The agent will not start the engine on its data directory: waiting is useless.
    pub(crate) fn refusal(&self) -> Option<String> {
        (self.state == "refused").then(|| {
            format!(
                "the agent refuses to start the engine: {}",
                self.reason.as_deref().unwrap_or("no reason given")
            )
        })
    }
}

/// Asks the member's agent for its health.
pub(crate) async fn agent_health(
    ctx: &Ctx,
    inst: &InstanceRecord,
    ip: IpAddr,
) -> Result<AgentHealth, String> {
    let url = format!(
        "http://{}/health",
        std::net::SocketAddr::new(ip, AGENT_PORT)
    );
    let resp = ctx
        .http
        .get(url)
        .bearer_auth(inst.agent_token.expose())
        .timeout(std::time::Duration::from_secs(3))
        .send()
        .await
        .map_err(|e| format!("agent does not answer: {}", without_url(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("agent answered {}", resp.status()));
    }
    resp.json::<AgentHealth>().await.map_err(|e| {
        format!(
            "agent sent an unreadable health report: {}",
            without_url(&e)
        )
    })
}

/// What the agent reports after applying settings.
#[derive(Clone, Debug, serde::Deserialize)]
pub(crate) struct SettingsApplied {
    pub pending_restart: Vec<String>,
}

/// Asks the member's agent to apply its settings: the container's current limits and,
/// when given, new parameters.
pub(crate) async fn apply_settings(
    ctx: &Ctx,
    inst: &InstanceRecord,
    ip: IpAddr,
    params: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<SettingsApplied, String> {
    let url = format!(
        "http://{}/settings",
        std::net::SocketAddr::new(ip, AGENT_PORT)
    );
    let body = match params {
        Some(p) => serde_json::json!({ "params": p }),
        None => serde_json::json!({}),
    };
    let resp = ctx
        .http
        .post(url)
        .bearer_auth(inst.agent_token.expose())
        .json(&body)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("agent does not answer: {}", without_url(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(format!(
            "agent could not apply the settings ({status}): {text}"
        ));
    }
    resp.json::<SettingsApplied>()
        .await
        .map_err(|e| format!("agent sent an unreadable answer: {}", without_url(&e)))
}

pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "agent");
    }
    s
}

/// What a member is told about its replication: its role, whom it follows (the
/// primary's container name on the instance's network) and, on the primary, whom it
/// serves.
pub(crate) fn replication_for(
    inst: &InstanceRecord,
    member: MemberId,
) -> berth_model::agent::Replication {
    use berth_model::member::Role;
    let t = &inst.topology;
    let role = if member == t.primary {
        Role::Primary
    } else {
        Role::Replica
    };
    berth_model::agent::Replication {
        member,
        role,
        source: (role == Role::Replica).then(|| {
            (
                container_name(inst, t.primary),
                engine(inst.spec.engine).client_port(),
            )
        }),
        password: inst.replication_password.clone(),
        replicas: if role == Role::Primary {
            t.replicas().collect()
        } else {
            vec![]
        },
        replica_hosts: if role == Role::Primary {
            t.replicas().map(|m| container_name(inst, m)).collect()
        } else {
            vec![]
        },
        members: t
            .members
            .iter()
            .map(|m| (*m, container_name(inst, *m)))
            .collect(),
        auto_failover: t.fails_over_automatically(),
        max_failover_lag: t.max_failover_lag,
        sync: t.sync,
        sync_mode: t.sync_mode,
        server_name: Some(berth_model::tls::internal_name(inst.id)),
    }
}

/// Sends a member its replication settings; the agent keeps them and applies them
/// to the running engine.
pub(crate) async fn send_replication(
    ctx: &Ctx,
    inst: &InstanceRecord,
    ip: IpAddr,
    repl: &berth_model::agent::Replication,
) -> Result<(), String> {
    let url = format!(
        "http://{}/replication",
        std::net::SocketAddr::new(ip, AGENT_PORT)
    );
    let resp = ctx
        .http
        .post(url)
        .bearer_auth(inst.agent_token.expose())
        .json(repl)
        .timeout(std::time::Duration::from_secs(60))
        .send()
        .await
        .map_err(|e| format!("agent does not answer: {}", without_url(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(format!(
            "agent could not apply replication ({status}): {text}"
        ));
    }
    Ok(())
}

/// Posts `body` to one of the member's agent routes; the answer as JSON (`null` when
/// it had no body).
pub(crate) async fn agent_post(
    ctx: &Ctx,
    inst: &InstanceRecord,
    ip: IpAddr,
    path: &str,
    body: &serde_json::Value,
    timeout: std::time::Duration,
) -> Result<serde_json::Value, String> {
    let url = format!("http://{}{path}", std::net::SocketAddr::new(ip, AGENT_PORT));
    let resp = ctx
        .http
        .post(url)
        .bearer_auth(inst.agent_token.expose())
        .json(body)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("agent does not answer: {}", without_url(&e)))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!("agent answered {status}: {text}"));
    }
    if text.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| format!("agent sent an unreadable answer: {e}"))
}

/// What a member's agent says of its role just now (`GET /role`), if it answers.
pub(crate) async fn role_report(
    ctx: &Ctx,
    inst: &InstanceRecord,
    m: MemberId,
) -> Option<berth_model::agent::RoleReport> {
    let ip = crate::steps::member_ip(ctx, inst, m).await.ok()?;
    role_report_at(ctx, ip).await
}

/// `GET /role` of the agent at `ip` (its address already known), if it answers.
pub(crate) async fn role_report_at(
    ctx: &Ctx,
    ip: IpAddr,
) -> Option<berth_model::agent::RoleReport> {
    let url = format!(
        "http://{}{}",
        std::net::SocketAddr::new(ip, AGENT_PORT),
        berth_model::agent::ROLE_PATH
    );
    let resp = ctx
        .http
        .get(url)
        .timeout(std::time::Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    resp.json().await.ok()
}
