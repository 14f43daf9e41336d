//! `GET /metrics`: the whole page parses as the Prometheus text format, instance
//! series carry their labels and real values from Docker, the control plane's own
//! series count what happened, and a scrape needs a token.

use anyhow::{bail, Context, Result};
use berth_e2e::{unique, Berth};
use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};
use serde_json::json;
use std::collections::HashMap;

type Page = MetricsExposition<PrometheusType, PrometheusValue>;

/// Scrapes with the admin token and parses the whole body (a line the grammar
/// refuses fails the test).
async fn scrape(b: &Berth) -> Result<Page> {
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", b.url))
        .bearer_auth(&b.token)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.text().await?;
    if status != 200 {
        bail!("GET /metrics answered {status}: {body}");
    }
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    parse_prometheus(&body).map_err(|e| anyhow::anyhow!("/metrics does not parse: {e:?}\n{body}"))
}

/// The samples of a family, each with its labels by name.
fn samples(page: &Page, family: &str) -> Vec<(HashMap<String, String>, PrometheusValue)> {
    // A family with no series this scrape is not written at all.
    let Some(f) = page.families.get(family) else {
        return vec![];
    };
    f.iter_samples()
        .map(|s| {
            let labels = s
                .get_labelset()
                .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            (labels, s.value.clone())
        })
        .collect()
}

fn number(v: &PrometheusValue) -> f64 {
    match v {
        PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
        PrometheusValue::Counter(c) => c.value.as_f64(),
        PrometheusValue::Histogram(h) => h.count.map(|c| c as f64).unwrap_or(f64::NAN),
        PrometheusValue::Summary(s) => s.count.map(|c| c as f64).unwrap_or(f64::NAN),
    }
}

/// The one value of `family` whose labels include all of `want`.
fn value(page: &Page, family: &str, want: &[(&str, &str)]) -> Option<f64> {
    samples(page, family)
        .iter()
        .find(|(l, _)| {
            want.iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| number(v))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_carry_instance_labels() -> Result<()> {
    let b = Berth::start_with(&["--sample-interval", "1s"]).await?;
    let name = unique("met");
    b.create(&name, json!({"memory": "256MiB"})).await?;

    let page = scrape(&b).await?;
    let member = [
        ("instance", name.as_str()),
        ("member", "0"),
        ("project", "default"),
        ("engine", "postgres"),
    ];
    let used = value(&page, "berth_instance_memory_working_set_bytes", &member)
        .context("no working-set series for the instance")?;
    let limit = value(&page, "berth_instance_memory_limit_bytes", &member)
        .context("no memory-limit series for the instance")?;
    assert_eq!(limit, 256.0 * 1024.0 * 1024.0);
    assert!(used > 0.0 && used <= limit, "working set {used} of {limit}");
    let cpu = value(&page, "berth_instance_cpu_usage_seconds_total", &member)
        .context("no CPU series for the instance")?;
    assert!(cpu > 0.0, "the engine started, so it used CPU: {cpu}");
    let available = [("instance", name.as_str()), ("status", "available")];
    assert_eq!(value(&page, "berth_instance_status", &available), Some(1.0));

    // What the monitor samples of the engine is there too, with the same labels. A
    // value is the mean of the newest 10-s bucket, so the bucket the engine started
    // in may say it was up half the time: the next one says all of it.
    let mut sampled = None;
    for _ in 0..80 {
        let page = scrape(&b).await?;
        let up = value(&page, "berth_member_engine_up", &member);
        let connections = value(&page, "berth_member_connections", &member);
        let max = value(&page, "berth_member_connections_max", &member);
        if let (Some(up), Some(c), Some(max)) = (up, connections, max) {
            sampled = Some((up, c, max));
            if up == 1.0 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let (up, connections, max) = sampled.context("no sampled engine series within 40 s")?;
    assert_eq!(up, 1.0, "the engine answers for a whole bucket");
    assert!(
        connections >= 0.0 && connections <= max && max > 0.0,
        "{connections} of {max}"
    );

    let created = value(&page, "berth_tasks_begun_total", &[("kind", "create")]);
    assert!(created >= Some(1.0), "create tasks begun: {created:?}");
    let succeeded = value(&page, "berth_tasks_succeeded_total", &[("kind", "create")]);
    assert!(
        succeeded >= Some(1.0),
        "create tasks succeeded: {succeeded:?}"
    );
    let posts = value(
        &page,
        "berth_api_request_duration_seconds",
        &[
            ("method", "POST"),
            ("route", "/v1/instances"),
            ("status", "2xx"),
        ],
    );
    assert!(posts >= Some(1.0), "timed creates: {posts:?}");
    let gets = value(
        &page,
        "berth_api_request_duration_seconds",
        &[
            ("method", "GET"),
            ("route", "/v1/tasks/{id}"),
            ("status", "2xx"),
        ],
    );
    assert!(gets >= Some(1.0), "timed task polls: {gets:?}");
    assert!(
        value(&page, "berth_reconcile_passes_total", &[("outcome", "ok")]) >= Some(1.0),
        "reconcile runs at start"
    );
    assert!(
        value(&page, "berth_build_info", &[]) == Some(1.0),
        "build info"
    );

    // A stopped member has no usage: its series are left out, not zero, while the
    // status says why.
    b.cli_json(&["stop", &name])?;
    let page = scrape(&b).await?;
    assert_eq!(
        value(&page, "berth_instance_memory_working_set_bytes", &member),
        None
    );
    let stopped = [("instance", name.as_str()), ("status", "stopped")];
    assert_eq!(value(&page, "berth_instance_status", &stopped), Some(1.0));

    // The series name every instance: a scrape needs a token like the API.
    let anon = reqwest::Client::new()
        .get(format!("{}/metrics", b.url))
        .send()
        .await?;
    assert_eq!(anon.status().as_u16(), 401);
    let wrong = reqwest::Client::new()
        .get(format!("{}/metrics", b.url))
        .bearer_auth("berth_not-a-token")
        .send()
        .await?;
    assert_eq!(wrong.status().as_u16(), 401);
    Ok(())
}
