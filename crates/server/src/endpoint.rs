//! The `ensure_endpoint` step: every instance's endpoint container runs on the two
//! host ports fixed at create, and routes writes to the current primary before the
//! step is done.

use crate::api::instances::{allocate_port, allocate_port_besides};
use crate::members::{self, container_name};
use crate::steps::{self, StepError};
use crate::Ctx;
use berth_model::{InstanceRecord, InstanceStatus, TaskKind, TaskRecord};
use berth_runtime::{ContainerKey, MemberContainer, Outcome};
use std::time::{Duration, Instant};

/// How long a new endpoint may take to find the primary.
const ROUTING: Duration = Duration::from_secs(60);

/// Which of an instance's host ports Berth may pick again when the host took one
/// before the endpoint first started (another program, or another Berth on the host,
/// bound it between the pick and the start). Once the instance has been available
/// its ports never move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Repick {
    /// Neither: the instance has been available.
    Neither,
    /// The read-only port only: the user asked for the read-write one.
    ReadOnly,
    /// Both: Berth picked both.
    Both,
}

impl Repick {
    /// What a step of `task` may move.
    pub(crate) fn for_task(task: &TaskRecord) -> Self {
        match task.kind {
            TaskKind::Create if task.options.picked_port => Repick::Both,
            TaskKind::Create => Repick::ReadOnly,
            _ => Repick::Neither,
        }
    }
}

/// How many times a create picks new ports before it gives up.
const REPICKS: u32 = 5;

/// The endpoint container exists and runs (it probes on its own); its spec, the
/// record (with its read-only port), and whether it was made now. Also called by
/// `ensure_running`, so the endpoint starts while the engine does.
pub(crate) async fn start_endpoint(
    ctx: &Ctx,
    inst: &InstanceRecord,
    repick: Repick,
) -> Result<(MemberContainer, InstanceRecord, Outcome), StepError> {
    let mut inst = inst.clone();
    if inst.ro_port == 0 {
        // Made before endpoints: its read-only port is chosen now, once.
        let port = allocate_port_besides(ctx, inst.port)
            .await
            .map_err(|e| StepError::Retry(e.to_string()))?;
        ctx.store.set_ro_port(inst.id, port).await?;
        inst.ro_port = port;
    }
    let tag = steps::image_tag(ctx, &inst);
    let agent_volume = berth_model::labels::agent_volume_name(&ctx.agent.sha256);
    let mut repicked = 0;
    loop {
        let spec = members::endpoint_container(ctx, &inst, &tag, &agent_volume);
        let made = ctx.runtime.ensure_container(&spec).await?;
        let taken = match ctx
            .runtime
            .ensure_running(ContainerKey::Endpoint(inst.id))
            .await
        {
            Ok(_) => return Ok((spec, inst, made)),
            Err(e) => match e.host_port_taken() {
                Some(port) => port,
                None => return Err(e.into()),
            },
        };
        let movable = inst.status == InstanceStatus::Creating
            && match repick {
                Repick::Neither => false,
                Repick::ReadOnly => taken == inst.ro_port,
                Repick::Both => true,
            };
        if !movable || repicked == REPICKS {
            return Err(StepError::Fatal(format!(
                "host port {taken}, which the endpoint of {} publishes, is taken by another program \
                 or container on this host; free it and try again{}",
                inst.name,
                if movable {
                    ""
                } else if inst.status == InstanceStatus::Creating {
                    " (it is the port asked for: delete the instance and create it with another \
                     --port, or without one to get a free port)"
                } else {
                    " (an instance's ports never move once it has been available)"
                }
            )));
        }
        repicked += 1;
        // Made with the taken port: made again with the new ones.
        ctx.runtime
            .remove_member(ContainerKey::Endpoint(inst.id))
            .await?;
        let moved = move_ports(ctx, &inst, taken, repick).await?;
        tracing::info!(
            instance = %inst.name, taken, port = moved.0, ro_port = moved.1,
            "the host took a port picked for the endpoint before it started: picked again"
        );
        (inst.port, inst.ro_port) = moved;
    }
}

/// New ports for `inst` in place of the taken one(s), stored.
async fn move_ports(
    ctx: &Ctx,
    inst: &InstanceRecord,
    taken: u16,
    repick: Repick,
) -> Result<(u16, u16), StepError> {
    let again = |e: crate::error::ApiError| StepError::Retry(e.to_string());
    let port = if repick == Repick::Both && taken == inst.port {
        allocate_port(ctx).await.map_err(again)?
    } else {
        inst.port
    };
    let ro_port = allocate_port_besides(ctx, port).await.map_err(again)?;
    ctx.store.move_ports(inst.id, port, ro_port).await?;
    Ok((port, ro_port))
}

/// Step `ensure_endpoint`.
pub(crate) async fn ensure_endpoint(
    ctx: &Ctx,
    inst: &InstanceRecord,
    repick: Repick,
) -> Result<String, StepError> {
    let (spec, inst, made) = start_endpoint(ctx, inst, repick).await?;
    // It may have probed before the primary was ready: a round now, not at its tick.
    members::nudge_endpoint(ctx, &inst).await;
    let primary = container_name(&inst, inst.topology.primary);
    let started = Instant::now();
    let mut why = String::from("no answer yet");
    while started.elapsed() < ROUTING {
        match members::endpoint_status(ctx, &inst).await {
            Some(s) if s.rw_target.as_deref() == Some(primary.as_str()) => {
                return Ok(format!(
                    "{} {} routes writes on port {} to {primary} and reads on port {}{}",
                    spec.name,
                    made.say("started and", "already"),
                    inst.port,
                    inst.ro_port,
                    if s.ro_fallback {
                        " (to the primary: no replica qualifies yet)"
                    } else {
                        ""
                    }
                ));
            }
            Some(s) => {
                why = s
                    .rw_reason
                    .unwrap_or_else(|| format!("it routes writes to {:?}", s.rw_target))
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(StepError::Fatal(format!(
        "the endpoint {} did not route writes to {primary} within {}s ({why}); `docker logs {}` tells why",
        spec.name,
        ROUTING.as_secs(),
        spec.name
    )))
}
