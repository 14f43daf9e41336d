//! Reading the history back: the resolution that answers a window and step
//! ([`berth_model::metrics::rollup::plan`]), its buckets merged into the step asked
//! for, one series per metric and member. Where no sample was taken there is no
//! point: a gap, never a zero.

use crate::error::ApiError;
use crate::Ctx;
use berth_model::metrics::rollup::{plan, rollup, Agg};
use berth_model::metrics::Metric;
use berth_model::InstanceRecord;
use serde::{Deserialize, Serialize};

/// One point of a series: the bucket's start and what it holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricPoint {
    /// The bucket's start, Unix seconds.
    pub t: i64,
    /// The mean of the samples in it.
    pub avg: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// How many samples.
    pub count: u64,
}

/// One metric of one member over the window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricSeries {
    /// Which metric.
    pub metric: Metric,
    /// Which member.
    pub member: u32,
    /// Points in time order; a missing bucket is a gap (no sample was taken).
    pub points: Vec<MetricPoint>,
}

/// Series of an instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricsView {
    /// The instance.
    pub instance: String,
    /// The window's start, Unix seconds.
    pub since: i64,
    /// The answer's step in seconds (what was asked, rounded up to the resolution
    /// that keeps the window).
    pub step: i64,
    /// One series per metric and member that has samples in the window.
    pub series: Vec<MetricSeries>,
}

/// The series of `metrics` over the last `window` seconds at `step` seconds.
pub(crate) async fn read(
    ctx: &Ctx,
    inst: &InstanceRecord,
    metrics: &[Metric],
    window: i64,
    step: i64,
) -> Result<MetricsView, ApiError> {
    let now = super::unix_now() as i64;
    let p = plan(&ctx.config.monitor.tiers, window, step);
    let since = now - window;
    let mut series = vec![];
    for &metric in metrics {
        let buckets = ctx
            .store
            .read_samples(inst.id, metric, p.tier.step, since)
            .await?;
        let mut by_member: std::collections::BTreeMap<u32, Vec<(i64, Agg)>> = Default::default();
        for b in buckets {
            by_member.entry(b.member).or_default().push((b.ts, b.agg));
        }
        for (member, points) in by_member {
            series.push(MetricSeries {
                metric,
                member,
                points: rollup(points, p.step)
                    .into_iter()
                    .map(|(t, a)| MetricPoint {
                        t,
                        avg: a.average(),
                        min: a.min,
                        max: a.max,
                        count: a.count,
                    })
                    .collect(),
            });
        }
    }
    Ok(MetricsView {
        instance: inst.name.to_string(),
        since,
        step: p.step,
        series,
    })
}
