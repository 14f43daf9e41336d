//! `GET /metrics` for Prometheus, and the layer that times API calls.
//!
//! `/metrics` is not part of `/v1` (not in the OpenAPI document): it answers in the
//! Prometheus text format, not JSON. It needs an API token like everything else
//! (`Authorization: Bearer`, which Prometheus sends with `authorization:
//! credentials_file:`): the series name every instance and project.
//!
//! Instance series are read at scrape time and the read is bounded: each member
//! container's stats call has [`PER_MEMBER`], the whole read [`WHOLE_SCRAPE`], at
//! most [`CONCURRENT`] calls at once. A member that does not answer in time is left
//! out of that scrape (Prometheus shows a gap), never reported as zero.

use crate::error::ApiError;
use crate::metrics::{status_class, ApiLabels, InstanceSeries, MemberLabels, CONTENT_TYPE};
use crate::Ctx;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_model::InstanceRecord;
use berth_runtime::{MemberContainerRef, MemberStats};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// How long one member's stats may take.
const PER_MEMBER: Duration = Duration::from_secs(2);
/// How long reading all members may take (Prometheus' default scrape timeout is 10 s).
const WHOLE_SCRAPE: Duration = Duration::from_secs(5);
/// Stats calls in flight at once, so a scrape of many instances stays light on Docker.
const CONCURRENT: usize = 8;

/// The metrics page.
pub(crate) async fn metrics(State(ctx): State<Ctx>) -> Response {
    let series = match instance_series(&ctx).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    match ctx.metrics.encode(&series) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => ApiError::Internal("encoding the metrics failed; see the serve log".into())
            .into_response(),
    }
}

/// Every live instance's status, and each running member's usage that answered in
/// time. The store must answer (else the scrape fails as a whole: there is nothing
/// to label series with); Docker need not (then there are no usage series).
async fn instance_series(ctx: &Ctx) -> Result<InstanceSeries, ApiError> {
    let series = InstanceSeries::default();
    let instances = ctx.store.list_instances(None).await?;
    let by_id: HashMap<String, &InstanceRecord> =
        instances.iter().map(|i| (i.id.to_string(), i)).collect();
    for i in &instances {
        series.status(
            i.name.as_str(),
            i.project.as_str(),
            &i.spec.engine.to_string(),
            i.status,
        );
    }
    sampled_series(ctx, &series, &by_id).await;
    let members = match tokio::time::timeout(WHOLE_SCRAPE, ctx.runtime.list_containers()).await {
        Ok(Ok(c)) => MemberContainerRef::running_members(c),
        Ok(Err(e)) => {
            warn!(error = %e, "metrics: cannot list member containers; no usage series this scrape");
            return Ok(series);
        }
        Err(_) => {
            warn!("metrics: listing member containers timed out; no usage series this scrape");
            return Ok(series);
        }
    };
    let deadline = tokio::time::Instant::now() + WHOLE_SCRAPE;
    let mut reads = futures_util::stream::iter(
        members
            .into_iter()
            .filter_map(|m| Some((member_labels(by_id.get(&m.instance)?, &m), m.id))),
    )
    .map(|(labels, id)| async move {
        let read = tokio::time::timeout(PER_MEMBER, ctx.runtime.container_stats(&id)).await;
        (labels, read)
    })
    .buffer_unordered(CONCURRENT);
    loop {
        match tokio::time::timeout_at(deadline, reads.next()).await {
            Ok(Some((labels, read))) => record(&series, &labels, read),
            Ok(None) => break,
            Err(_) => {
                warn!("metrics: the scrape's time ran out; members not read yet are left out");
                break;
            }
        }
    }
    Ok(series)
}

/// What the monitor sampled last of every live instance's members (connections,
/// TPS, replication lag, …): buckets of its finest resolution no older than three
/// sampling rounds, so a member that stopped answering is left out, never shown
/// with an old value. A store that does not answer leaves these series out.
async fn sampled_series(
    ctx: &Ctx,
    series: &InstanceSeries,
    by_id: &HashMap<String, &InstanceRecord>,
) {
    let Some(finest) = ctx.config.monitor.tiers.first() else {
        return;
    };
    let interval = ctx.config.monitor.sample_interval.as_secs().max(1) as i64;
    let since = crate::monitor::unix_now() as i64 - 3 * interval.max(finest.step);
    match ctx.store.latest_samples(finest.step, since).await {
        Ok(latest) => {
            for l in latest {
                let Some(inst) = by_id.get(&l.instance) else {
                    continue;
                };
                let labels = MemberLabels {
                    instance: inst.name.as_str().to_owned(),
                    member: l.member.to_string(),
                    project: inst.project.as_str().to_owned(),
                    engine: inst.spec.engine.to_string(),
                };
                series.sampled(&labels, l.metric, l.value);
            }
        }
        Err(e) => warn!(error = %e, "metrics: the sampled series are unreadable; left out"),
    }
}

fn member_labels(inst: &InstanceRecord, m: &MemberContainerRef) -> MemberLabels {
    MemberLabels {
        instance: inst.name.as_str().to_owned(),
        member: m.member.clone(),
        project: inst.project.as_str().to_owned(),
        engine: inst.spec.engine.to_string(),
    }
}

type Read =
    Result<Result<Option<MemberStats>, berth_runtime::RuntimeError>, tokio::time::error::Elapsed>;

/// Adds one member's answer; a member without one is left out (and said so at
/// debug level: a stopped container is normal).
fn record(series: &InstanceSeries, labels: &MemberLabels, read: Read) {
    match read {
        Ok(Ok(Some(stats))) => series.member(labels, &stats),
        Ok(Ok(None)) => debug!(instance = %labels.instance, "metrics: member not running"),
        Ok(Err(e)) => {
            warn!(instance = %labels.instance, member = %labels.member, error = %e, "metrics: member stats unreadable; left out")
        }
        Err(_) => {
            warn!(instance = %labels.instance, member = %labels.member, "metrics: member stats took longer than {PER_MEMBER:?}; left out")
        }
    }
}

/// Times every API call by method, route template and status class. Runs inside
/// the router (a route layer), where the matched route's template is known.
pub(crate) async fn time_api_call(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let resp = next.run(req).await;
    let labels = ApiLabels {
        method,
        route,
        status: status_class(resp.status().as_u16()),
    };
    ctx.metrics.api_call(&labels, started.elapsed());
    resp
}

/// Standard methods by name; any other is `other`, so a client cannot make a
/// series per invented method.
fn method_label(m: &Method) -> String {
    match *m {
        Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE => {
            m.as_str().to_owned()
        }
        Method::HEAD | Method::OPTIONS => m.as_str().to_owned(),
        _ => "other".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        let odd = Method::from_bytes(b"BREW").expect("a method");
        assert_eq!(method_label(&odd), "other");
    }
}
