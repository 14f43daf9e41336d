//! The agent's HTTP API, on the instance's private network. Every route but `GET
//! /role` (open: role and lag only, for the endpoint, see [`crate::role`]), `GET
//! /clone` and `POST /failsafe` (other members, with the replication password) needs
//! the bearer token whose SHA-256 the control plane put in the agent's environment.

use crate::supervisor::HealthView;
use crate::{AgentConfig, Health};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

#[derive(Clone)]
struct AppState {
    token_sha256: String,
    health: Health,
    config: AgentConfig,
    reaper: crate::Reaper,
    fence: crate::switchover::Held,
    lease: crate::lease::Lease,
    dump_failures: crate::backup::Failures,
}

/// Compares in time independent of where the inputs differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(headers: &HeaderMap, expected_sha256: &str) -> bool {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let digest = hex::encode(Sha256::digest(token.as_bytes()));
    constant_time_eq(digest.as_bytes(), expected_sha256.as_bytes())
}

/// Every route but the open ones (`/role`, and `/clone` with its own password) needs
/// the control plane's token: checked once here, before any handler or body.
async fn require_token(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !authorized(request.headers(), &state.token_sha256) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    next.run(request).await
}

/// 409 with the reason when the data directory was refused and the engine never
/// started: nothing may be asked of it or written to the volume.
fn refused(state: &AppState) -> Option<Response> {
    state.health.view().reason.map(|reason| {
        (
            StatusCode::CONFLICT,
            format!("the engine is not started: {reason}"),
        )
            .into_response()
    })
}

#[derive(serde::Serialize)]
struct HealthBody {
    #[serde(flatten)]
    view: HealthView,
    /// Whether the engine answered a query just now.
    ready: bool,
    engine: String,
    version: String,
    /// The role Berth gave this member.
    role: &'static str,
}

async fn health(State(state): State<AppState>) -> Response {
    let mut view = state.health.view();
    view.rejoined = crate::rejoin::last(&state.config);
    view.elected = crate::elect::last(&state.config);
    let ready = view.state == crate::HealthState::Ready
        && state
            .config
            .engine()
            .check_ready(&state.config.layout)
            .await
            .is_ok();
    Json(HealthBody {
        view,
        ready,
        engine: state.config.engine.to_string(),
        version: state.config.version.to_string(),
        role: crate::replication::read(&state.config).map_or("primary", |r| r.role.as_str()),
    })
    .into_response()
}

/// `POST /settings`: new parameters (when given) and the container's current limits
/// become the engine's configuration; what can change live does.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsRequest {
    #[serde(default)]
    params: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(serde::Serialize)]
struct SettingsApplied {
    memory_mib: u64,
    cpu_millis: u32,
    /// Settings that take effect only after a restart.
    pending_restart: Vec<String>,
}

async fn settings(
    State(state): State<AppState>,
    body: Result<Json<SettingsRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    // Refused: nothing may be written to the volume.
    if let Some(refused) = refused(&state) {
        return refused;
    }
    let Ok(Json(req)) = body else {
        return (StatusCode::BAD_REQUEST, "malformed settings request").into_response();
    };
    let before = crate::current_settings(&state.config).params;
    let mut reset: Vec<String> = vec![];
    if let Some(params) = &req.params {
        reset = before
            .keys()
            .filter(|k| !params.contains_key(*k))
            .cloned()
            .collect();
        if let Err(e) = crate::store_params(&state.config, params) {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("keeping parameters: {e}"),
            )
                .into_response();
        }
    }
    let settings = crate::current_settings(&state.config);
    match state
        .config
        .engine()
        .apply_live(&state.config.layout, &settings, &reset)
        .await
    {
        Ok(pending_restart) => {
            tracing::info!(
                memory_mib = settings.resources.memory_mib,
                ?pending_restart,
                "settings applied"
            );
            Json(SettingsApplied {
                memory_mib: settings.resources.memory_mib,
                cpu_millis: settings.resources.cpu_millis,
                pending_restart,
            })
            .into_response()
        }
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}

/// `POST /tls`: install the certificate bundle the control plane just left on the
/// data volume; a changed one is reloaded by the engine without a restart.
async fn tls(State(state): State<AppState>) -> Response {
    match crate::tls::install_and_reload(&state.config).await {
        Ok(changed) => Json(serde_json::json!({ "changed": changed })).into_response(),
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}

/// `GET /metrics`: see [`crate::metrics`].
async fn metrics(State(state): State<AppState>) -> Response {
    let refused = state.health.view().reason;
    Json(crate::metrics::collect(&state.config, refused).await).into_response()
}

/// `POST /verify`: the engine's own consistency check of what this member holds and
/// a count of every table's rows (a restored backup's verification). Problems found
/// are in the 200 answer; 409 when the check could not run at all.
async fn verify(State(state): State<AppState>) -> Response {
    if let Some(refused) = refused(&state) {
        return refused;
    }
    let engine = state.config.engine();
    match engine.check_consistency(&state.config.layout).await {
        Ok(report) => {
            tracing::info!(
                tables = report.tables,
                rows = report.rows,
                problems = report.problems.len(),
                "consistency checked"
            );
            Json(report).into_response()
        }
        Err(e) => (
            StatusCode::CONFLICT,
            format!("the consistency check could not run: {e}"),
        )
            .into_response(),
    }
}

/// `POST /backup/logical`: see [`crate::backup`].
async fn backup_logical(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(refused) = refused(&state) {
        return refused;
    }
    let backup = headers
        .get("x-berth-backup")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    crate::backup::logical(
        &state.config,
        &state.reaper,
        state.dump_failures.clone(),
        backup,
    )
    .await
}

/// Which backup's failure `GET /backup/logical/failure` asks for.
#[derive(serde::Deserialize)]
struct FailureQuery {
    backup: String,
}

/// `GET /backup/logical/failure?backup=ID`: why that backup's dump failed (the
/// dump's own words), 404 when it did not (or is no longer remembered).
async fn backup_failure(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<FailureQuery>,
) -> Response {
    match state.dump_failures.of(&q.backup) {
        Some(why) => why.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `POST /restore/logical`: see [`crate::backup::restore_logical`].
async fn restore_logical(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let Some(expected) = headers
        .get("x-berth-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return (StatusCode::BAD_REQUEST, "x-berth-sha256 is required").into_response();
    };
    crate::backup::restore_logical(&state.config, &state.reaper, &expected, body).await
}

/// `GET /clone`: see [`crate::replication::clone_source`] (authorised by the
/// replication password, not the control plane's token: replicas call it).
async fn clone_source(State(state): State<AppState>, headers: HeaderMap) -> Response {
    crate::replication::clone_source(&state.config, &state.reaper, &headers).await
}

/// `POST /replication`: see [`crate::replication::set`].
async fn replication(
    State(state): State<AppState>,
    Json(repl): Json<berth_model::agent::Replication>,
) -> Response {
    if let Some(refused) = refused(&state) {
        return refused;
    }
    crate::replication::set(&state.config, &state.health, repl).await
}

async fn fence(State(state): State<AppState>) -> Response {
    crate::switchover::fence(&state.config, &state.fence).await
}

async fn caught_up(
    State(state): State<AppState>,
    Json(q): Json<crate::switchover::CaughtUpQuery>,
) -> Response {
    crate::switchover::caught_up(&state.config, q).await
}

async fn promote(
    State(state): State<AppState>,
    body: Option<Json<berth_model::agent::lease::Promote>>,
) -> Response {
    let p = body.map(|Json(p)| p).unwrap_or_default();
    crate::switchover::promote(&state.config, &state.lease, &p).await
}

/// `POST /lease`: see [`crate::lease::grant`].
async fn lease(
    State(state): State<AppState>,
    Json(g): Json<berth_model::agent::lease::Grant>,
) -> Response {
    crate::lease::grant(&state.config, &state.lease, &state.health, g).await
}

/// `POST /failsafe`: see [`crate::lease::confirm`] (the replication password).
async fn failsafe(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(f): Json<berth_model::agent::lease::Failsafe>,
) -> Response {
    crate::lease::confirm(&state.config, &state.lease, &headers, f).await
}

/// `GET /role`, the one open route: see [`crate::role`].
async fn role(State(state): State<AppState>) -> Response {
    crate::role::report(&state.config, &state.health, &state.lease)
        .await
        .into_response()
}

fn router(state: AppState) -> Router {
    let with_token = Router::new()
        .route("/fence", post(fence))
        .route("/caught-up", post(caught_up))
        .route("/promote", post(promote))
        .route(berth_model::agent::lease::LEASE_PATH, post(lease))
        .route("/replication", post(replication))
        .route("/health", get(health))
        .route("/settings", post(settings))
        .route("/tls", post(tls))
        .route("/metrics", get(metrics))
        .route("/backup/logical", post(backup_logical))
        .route("/backup/logical/failure", get(backup_failure))
        .route("/verify", post(verify))
        .route("/restore/logical", post(restore_logical))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .merge(with_token)
        .route("/clone", get(clone_source))
        .route(berth_model::agent::lease::FAILSAFE_PATH, post(failsafe))
        .route(berth_model::agent::ROLE_PATH, get(role))
        .with_state(state)
}

pub(crate) async fn serve(
    listener: TcpListener,
    config: AgentConfig,
    health: Health,
    reaper: crate::Reaper,
    lease: crate::lease::Lease,
) {
    let state = AppState {
        token_sha256: config.token_sha256.clone(),
        health,
        config,
        reaper,
        fence: Default::default(),
        dump_failures: Default::default(),
        lease,
    };
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!(error = %e, "agent API stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_hash() {
        let expected = hex::encode(Sha256::digest(b"tok"));
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, &expected));
        h.insert(
            header::AUTHORIZATION,
            "Bearer nope".parse().expect("header"),
        );
        assert!(!authorized(&h, &expected));
        h.insert(header::AUTHORIZATION, "Bearer tok".parse().expect("header"));
        assert!(authorized(&h, &expected));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
