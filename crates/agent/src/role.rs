//! `GET /role`: the member's role, readiness, lag and load, for the instance's
//! endpoint to route by. Unauthenticated on purpose (like Patroni's REST checks): the
//! answer holds no secret, only role, lag and counts, and the endpoint holds no
//! agent token. It answers 200 when the engine answered the probe (ready or not:
//! `ready` says), and 503 with the same body shape (`role: null`, `ready: false`,
//! `reason`) when the engine is not running or did not answer within the probe's
//! bound — so a plain HTTP health check can use the status alone.

use crate::{AgentConfig, Health, HealthState};
use axum::http::StatusCode;
use axum::Json;
use berth_model::agent::RoleReport;

pub(crate) async fn report(
    config: &AgentConfig,
    health: &Health,
    lease: &crate::lease::Lease,
) -> (StatusCode, Json<RoleReport>) {
    let view = health.view();
    if view.state != HealthState::Ready {
        let reason = view
            .reason
            .or_else(|| lease.fenced())
            .unwrap_or_else(|| format!("the engine is {}", state_word(view.state)));
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(RoleReport::unknown(reason)),
        );
    }
    match config.engine().probe_role(&config.layout).await {
        Ok(mut report) => {
            let term = lease.term();
            report.term = (term > 0).then_some(term);
            // A primary that no longer holds its lease is about to be fenced: no
            // new session goes to it.
            if !crate::lease::may_run(config, lease) {
                report.ready = false;
                report.reason = Some("this primary's lease ran out".into());
            }
            (StatusCode::OK, Json(report))
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(RoleReport::unknown(e.to_string())),
        ),
    }
}

fn state_word(state: HealthState) -> &'static str {
    match state {
        HealthState::Starting => "starting",
        HealthState::Ready => "ready",
        HealthState::Restarting => "restarting",
        HealthState::Stopping => "stopping",
        HealthState::Refused => "refused",
        HealthState::WaitingForLease => "waiting for the leader lease",
        HealthState::Rejoining => "rejoining as a replica",
    }
}
