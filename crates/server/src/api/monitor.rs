//! `GET /v1/instances/{name}/metrics`: the metric history of an instance.

use super::problems::NotFound;
use crate::error::ApiError;
use crate::monitor::history::{self, MetricsView};
use crate::Ctx;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use berth_model::event::parse_age;
use berth_model::metrics::Metric;
use berth_model::ProjectId;
use serde::Deserialize;

/// Which series, over which window, at which step.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricsQuery {
    /// One metric (all when absent).
    #[param(value_type = Option<Metric>)]
    metric: Option<String>,
    /// How far back: an age like `10m`, `1h`, `7d` (default `1h`).
    #[param(pattern = r"^[0-9]{1,9}[smhdw]$")]
    since: Option<String>,
    /// Width of a point: an age like `10s`, `1m`, `1h` (default: about 120 points),
    /// rounded up to the resolution that keeps the window.
    #[param(pattern = r"^[0-9]{1,9}[smhdw]$")]
    step: Option<String>,
}

/// Points a window is split into when no step is given.
const DEFAULT_POINTS: i64 = 120;

fn age(what: &str, s: &str) -> Result<i64, ApiError> {
    match parse_age(s) {
        Ok(d) => Ok(d.as_secs() as i64),
        Err(_) => Err(ApiError::InvalidRequest(format!(
            "{what} {s:?} is not an age like 10s, 5m, 1h or 7d"
        ))),
    }
}

/// Metric history: one series per metric and member, gaps where no sample was taken.
#[utoipa::path(get, operation_id = "instance_metrics", path = "/v1/instances/{name}/metrics",
    params(("name" = String, Path), MetricsQuery), responses(
    (status = 200, body = MetricsView),
    NotFound,
))]
pub(crate) async fn show(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    q: Result<Query<MetricsQuery>, QueryRejection>,
) -> Result<Json<MetricsView>, ApiError> {
    let Query(q) = q?;
    let metrics = match q.metric.as_deref() {
        None => Metric::ALL.to_vec(),
        Some(m) => vec![m
            .parse::<Metric>()
            .map_err(|e| ApiError::InvalidRequest(e.to_string()))?],
    };
    let window = age("since", q.since.as_deref().unwrap_or("1h"))?;
    let step = match q.step.as_deref() {
        Some(s) => age("step", s)?,
        None => (window / DEFAULT_POINTS).max(1),
    };
    let inst = ctx
        .store
        .instance_by_name(&ProjectId::default_project(), &name)
        .await?;
    Ok(Json(
        history::read(&ctx, &inst, &metrics, window, step).await?,
    ))
}
