//! `GET /status`: what the endpoint routes where and why. Unauthenticated: it holds
//! member names, roles, lag and counts, no secret.

use crate::proxy::Shared;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_model::endpoint::{EndpointStatus, STATUS_PATH};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;

pub(crate) fn status(shared: &Shared) -> EndpointStatus {
    let sel = shared.routes.borrow().clone();
    EndpointStatus {
        rw_target: sel.rw.clone(),
        rw_reason: sel.rw_reason.clone(),
        ro_targets: sel.ro.clone(),
        ro_fallback: sel.ro_fallback,
        ro_reason: sel.ro_reason.clone(),
        max_lag_ms: u64::try_from(shared.config.max_lag.as_millis()).unwrap_or(u64::MAX),
        members: sel.members.clone(),
        connections: shared.open_connections(),
        rounds: shared.rounds.load(Ordering::Relaxed),
    }
}

async fn get_status(State(shared): State<Arc<Shared>>) -> Json<EndpointStatus> {
    Json(status(&shared))
}

/// `POST /probe`: probe every member now rather than at the next tick (the control
/// plane calls it right after it moved the primary, so the switch is seen at once).
/// It only hurries what the endpoint does anyway: open, like `/status`.
async fn probe_now(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.probe_now.notify_one();
    StatusCode::ACCEPTED
}

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let app = Router::new()
        .route(STATUS_PATH, get(get_status))
        .route(berth_model::endpoint::PROBE_PATH, post(probe_now))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "endpoint status API stopped");
    }
}
