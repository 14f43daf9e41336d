//! `berth metrics NAME`: an instance's metric history. One metric prints as a small
//! chart per member on a terminal (a table of points otherwise); all metrics print
//! as a summary table (last, min, max over the window); `-o json` prints what the
//! API returned.

use crate::output::{print_json, Format};
use crate::{Client, Result};
use berth_server::{MetricPoint, MetricSeries, MetricsView};
use comfy_table::presets::NOTHING;
use comfy_table::Table;
use std::io::IsTerminal;

/// What to print.
#[derive(Clone, Debug, Default)]
pub struct MetricsArgs {
    /// The instance.
    pub instance: String,
    /// One metric, or all.
    pub metric: Option<String>,
    /// How far back (an age like `1h`).
    pub since: Option<String>,
    /// Width of a point (an age like `1m`).
    pub step: Option<String>,
}

/// Runs `berth metrics`.
pub async fn metrics(client: &Client, args: &MetricsArgs, fmt: Format) -> Result<()> {
    let mut query = vec![];
    for (k, v) in [
        ("metric", &args.metric),
        ("since", &args.since),
        ("step", &args.step),
    ] {
        if let Some(v) = v {
            query.push(format!("{k}={v}"));
        }
    }
    let mut path = format!("/v1/instances/{}/metrics", args.instance);
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let view: MetricsView = client.get(&path).await?;
    match fmt {
        Format::Json => print_json(&serde_json::to_value(&view).unwrap_or_default()),
        Format::Table if args.metric.is_none() => summary(&view),
        Format::Table if std::io::stdout().is_terminal() => {
            for s in &view.series {
                println!("{}", chart(s, &view));
            }
            if view.series.is_empty() {
                println!("no samples in the window");
            }
        }
        Format::Table => points(&view),
    }
    Ok(())
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// `HH:MM:SS` (UTC) of a Unix time.
fn clock(t: i64) -> String {
    let s = t.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn summary(view: &MetricsView) {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["METRIC", "MEMBER", "LAST", "MIN", "MAX", "POINTS"]);
    for s in &view.series {
        let Some(last) = s.points.last() else {
            continue;
        };
        let min = s.points.iter().map(|p| p.min).fold(f64::INFINITY, f64::min);
        let max = s
            .points
            .iter()
            .map(|p| p.max)
            .fold(f64::NEG_INFINITY, f64::max);
        t.add_row(vec![
            s.metric.to_string(),
            s.member.to_string(),
            number(last.avg),
            number(min),
            number(max),
            s.points.len().to_string(),
        ]);
    }
    println!("{t}");
}

fn points(view: &MetricsView) {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["TIME", "METRIC", "MEMBER", "AVG", "MIN", "MAX"]);
    for s in &view.series {
        for p in &s.points {
            t.add_row(vec![
                clock(p.t),
                s.metric.to_string(),
                s.member.to_string(),
                number(p.avg),
                number(p.min),
                number(p.max),
            ]);
        }
    }
    println!("{t}");
}

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One line of bars from the window's start to now, one per step; a step with no
/// sample is a blank (missing data, not zero).
fn chart(s: &MetricSeries, view: &MetricsView) -> String {
    let (lo, hi) = s
        .points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.avg), hi.max(p.avg))
        });
    let step = view.step.max(1);
    let first = view.since.div_euclid(step) * step;
    let by_t: std::collections::HashMap<i64, &MetricPoint> =
        s.points.iter().map(|p| (p.t, p)).collect();
    let last = s.points.last().map(|p| p.t).unwrap_or(first);
    let line: String = (0..=((last - first) / step).min(200))
        .map(|i| match by_t.get(&(first + i * step)) {
            None => ' ',
            Some(p) if hi > lo => BARS[(((p.avg - lo) / (hi - lo)) * 7.0).round() as usize],
            Some(_) => BARS[0],
        })
        .collect();
    format!(
        "{} member {} (min {}, max {}, last {}, step {}s)\n{line}",
        s.metric,
        s.member,
        number(lo),
        number(hi),
        s.points.last().map(|p| number(p.avg)).unwrap_or_default(),
        step
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::metrics::Metric;

    fn point(t: i64, v: f64) -> MetricPoint {
        MetricPoint {
            t,
            avg: v,
            min: v,
            max: v,
            count: 1,
        }
    }

    #[test]
    fn a_chart_leaves_a_blank_where_no_sample_was_taken() {
        let s = MetricSeries {
            metric: Metric::Tps,
            member: 0,
            points: vec![point(100, 0.0), point(120, 7.0), point(130, 3.5)],
        };
        let view = MetricsView {
            instance: "db".into(),
            since: 95,
            step: 10,
            series: vec![s.clone()],
        };
        let c = chart(&s, &view);
        // 90: before the first sample; 110: a gap.
        assert_eq!(c.lines().nth(1), Some(" ▁ █▅"), "{c}");
        assert!(c.starts_with("tps member 0 (min 0, max 7"), "{c}");
        assert_eq!(clock(3661), "01:01:01");
    }
}
