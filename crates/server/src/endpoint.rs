//! The `ensure_endpoint` step: every instance's endpoint container runs on the two
//! host ports fixed at create, and routes writes to the current primary before the
//! step is done.

use crate::members::{self, container_name};
use crate::steps::{self, StepError};
use crate::Ctx;
use berth_model::InstanceRecord;
use berth_runtime::{ContainerKey, MemberContainer, Outcome};
use std::time::{Duration, Instant};

/// How long a new endpoint may take to find the primary.
const ROUTING: Duration = Duration::from_secs(60);

/// The endpoint container exists and runs (it probes on its own); its spec, the
/// record (with its read-only port), and whether it was made now. Also called by
/// `ensure_running`, so the endpoint starts while the engine does.
pub(crate) async fn start_endpoint(
    ctx: &Ctx,
    inst: &InstanceRecord,
) -> Result<(MemberContainer, InstanceRecord, Outcome), StepError> {
    let mut inst = inst.clone();
    if inst.ro_port == 0 {
        // Made before endpoints: its read-only port is chosen now, once.
        let port = crate::api::instances::allocate_port_besides(ctx, inst.port)
            .await
            .map_err(|e| StepError::Retry(e.to_string()))?;
        ctx.store.set_ro_port(inst.id, port).await?;
        inst.ro_port = port;
    }
    let tag = steps::image_tag(ctx, &inst);
    let agent_volume = berth_model::labels::agent_volume_name(&ctx.agent.sha256);
    let spec = members::endpoint_container(ctx, &inst, &tag, &agent_volume);
    let made = ctx.runtime.ensure_container(&spec).await?;
    ctx.runtime
        .ensure_running(ContainerKey::Endpoint(inst.id))
        .await?;
    Ok((spec, inst, made))
}

/// Step `ensure_endpoint`.
pub(crate) async fn ensure_endpoint(ctx: &Ctx, inst: &InstanceRecord) -> Result<String, StepError> {
    let (spec, inst, made) = start_endpoint(ctx, inst).await?;
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
