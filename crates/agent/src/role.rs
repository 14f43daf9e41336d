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
) -> (StatusCode, Json<RoleReport>) {
    let view = health.view();
    if view.state != HealthState::Ready {
        let reason = view
            .reason
            .unwrap_or_else(|| format!("the engine is {}", state_word(view.state)));
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(RoleReport::unknown(reason)),
        );
    }
    match config.engine().probe_role(&config.layout).await {
        Ok(report) => (StatusCode::OK, Json(report)),
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
    }
}
