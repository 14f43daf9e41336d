//! The agent's part of a switchover, each a route the control plane calls in turn:
//! fence the old primary (`POST /fence`), ask the target whether it has caught up
//! (`POST /caught-up`), promote it (`POST /promote`).

use crate::AgentConfig;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::{Arc, Mutex};

/// The fence the old primary holds until its container stops.
#[derive(Clone, Default)]
pub(crate) struct Held(Arc<Mutex<Option<berth_engine::Fence>>>);

/// `POST /fence`: no more writes commit here; answers the position written so far.
pub(crate) async fn fence(config: &AgentConfig, held: &Held) -> Response {
    match config.engine().fence(&config.layout).await {
        Ok(fence) => {
            let position = fence.as_ref().map(|f| f.position.clone());
            *held.0.lock().unwrap_or_else(|p| p.into_inner()) = fence;
            tracing::warn!(?position, "fenced: this member takes no more writes");
            Json(serde_json::json!({ "position": position })).into_response()
        }
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct CaughtUpQuery {
    position: Option<String>,
}

/// `POST /caught-up`: whether this replica applied everything up to the position.
pub(crate) async fn caught_up(config: &AgentConfig, q: CaughtUpQuery) -> Response {
    match config
        .engine()
        .caught_up(&config.layout, q.position.as_deref())
        .await
    {
        Ok(done) => Json(serde_json::json!({ "caught_up": done })).into_response(),
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}

/// `POST /promote`: this replica becomes the primary, holding the lease granted
/// with it — unless it promised its old primary, through the failsafe, not to.
pub(crate) async fn promote(
    config: &AgentConfig,
    lease: &crate::lease::Lease,
    p: &berth_model::agent::lease::Promote,
) -> Response {
    if let Err(why) = crate::lease::may_promote(lease, p.old_primary_stopped) {
        return (StatusCode::CONFLICT, why).into_response();
    }
    if let Some(taken) = crate::elect::take_for_promotion(config, lease).await {
        if let Err(why) = taken {
            return (StatusCode::CONFLICT, why).into_response();
        }
    } else if p.ttl_ms > 0 {
        use berth_model::agent::lease as contract;
        let grant = contract::Grant {
            term: p.term,
            ttl_ms: p.ttl_ms,
            sent_unix_ms: p.sent_unix_ms,
        };
        // Counted from when it was sent: a promotion that waited in this agent's
        // socket (frozen, say) is refused rather than taken late.
        let sent = contract::sent_at(
            std::time::Instant::now(),
            contract::unix_ms_now(),
            p.sent_unix_ms,
            std::time::Duration::from_millis(p.ttl_ms),
        );
        if let Err(why) = sent.and_then(|sent| lease.grant(&grant, sent)) {
            return (StatusCode::CONFLICT, why).into_response();
        }
    }
    match crate::rejoin::promote(config).await {
        Ok(()) => {
            tracing::warn!("promoted: this member is now the primary");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}
