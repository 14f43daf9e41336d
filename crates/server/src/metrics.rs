//! The control plane's own metrics (tasks, API latency, reconcile passes, build)
//! and the per-instance series read at scrape time, encoded in the Prometheus text
//! format (0.0.4) for `GET /metrics`.
//!
//! No global registry: [`Metrics`] lives in `Ctx`; its handles are cheap clones of
//! shared atomics. Each scrape builds a fresh registry holding those handles plus
//! the instance series it just read, so an instance that was deleted, or whose
//! member did not answer this time, is simply absent — never a stale or zero value.

use berth_model::metrics::Metric;
use berth_model::{InstanceStatus, TaskKind, TaskState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// `Content-Type` of what [`Metrics::encode`] writes.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// One API call: the route's template (`/v1/instances/{name}`), never the path
/// itself, so the number of series stays bounded by the routes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ApiLabels {
    pub(crate) method: String,
    pub(crate) route: String,
    pub(crate) status: String,
}

/// Which member of which instance a series is about.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MemberLabels {
    pub(crate) instance: String,
    pub(crate) member: String,
    pub(crate) project: String,
    pub(crate) engine: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    instance: String,
    project: String,
    engine: String,
    status: String,
}

type Seconds = Gauge<f64, AtomicU64>;
type LatencyFamily = Family<ApiLabels, Histogram, fn() -> Histogram>;

/// API latencies from 5 ms to about 10 s (a create answers at once; a slow call is
/// the store or Docker).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

/// The control plane's metrics, shared by handlers, the task runner and reconcile.
#[derive(Clone)]
pub struct Metrics {
    tasks_begun: Family<KindLabels, Counter>,
    tasks_succeeded: Family<KindLabels, Counter>,
    tasks_failed: Family<KindLabels, Counter>,
    tasks_running: Gauge,
    api_latency: LatencyFamily,
    reconcile_passes: Family<OutcomeLabels, Counter>,
    reconcile_last_pass: Seconds,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            tasks_begun: Family::default(),
            tasks_succeeded: Family::default(),
            tasks_failed: Family::default(),
            tasks_running: Gauge::default(),
            api_latency: Family::new_with_constructor(latency_histogram),
            reconcile_passes: Family::default(),
            reconcile_last_pass: Seconds::default(),
        }
    }
}

/// Holds one running task in `berth_tasks_running` while it lives.
pub struct RunningTask(Gauge);

impl Drop for RunningTask {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// A task started running in this process (a resumed one too: every task that
    /// starts here ends here with [`Metrics::task_ended`], unless serve stops first).
    pub fn task_begun(&self, kind: TaskKind) {
        self.tasks_begun.get_or_create(&kind_labels(kind)).inc();
    }

    /// A task runs in this process until the guard is dropped.
    pub fn task_running(&self) -> RunningTask {
        self.tasks_running.inc();
        RunningTask(self.tasks_running.clone())
    }

    /// A task ended in `state` (succeeded or failed).
    pub fn task_ended(&self, kind: TaskKind, state: TaskState) {
        let family = match state {
            TaskState::Succeeded => &self.tasks_succeeded,
            TaskState::Failed => &self.tasks_failed,
            _ => return,
        };
        family.get_or_create(&kind_labels(kind)).inc();
    }

    /// A reconcile pass ended after `took`.
    pub fn reconcile_pass(&self, took: Duration, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.reconcile_passes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
        self.reconcile_last_pass.set(took.as_secs_f64());
    }

    /// An API call was answered after `took`.
    pub(crate) fn api_call(&self, labels: &ApiLabels, took: Duration) {
        self.api_latency
            .get_or_create(labels)
            .observe(took.as_secs_f64());
    }

    /// The whole page: these metrics and the instances' series read just now.
    pub fn encode(&self, instances: &InstanceSeries) -> Result<String, std::fmt::Error> {
        let mut r = Registry::with_prefix("berth");
        r.register(
            "build",
            "This control plane's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register(
            "tasks_begun",
            "Tasks this control plane started running (resumed ones included), by kind",
            self.tasks_begun.clone(),
        );
        r.register(
            "tasks_succeeded",
            "Tasks that succeeded, by kind",
            self.tasks_succeeded.clone(),
        );
        r.register(
            "tasks_failed",
            "Tasks that failed, by kind",
            self.tasks_failed.clone(),
        );
        r.register(
            "tasks_running",
            "Tasks running in this control plane now",
            self.tasks_running.clone(),
        );
        r.register_with_unit(
            "api_request_duration",
            "API calls by method, route template and status class",
            Unit::Seconds,
            self.api_latency.clone(),
        );
        r.register(
            "reconcile_passes",
            "Reconcile passes, by outcome",
            self.reconcile_passes.clone(),
        );
        r.register_with_unit(
            "reconcile_last_pass_duration",
            "How long the last reconcile pass took",
            Unit::Seconds,
            self.reconcile_last_pass.clone(),
        );
        instances.register(&mut r);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &r)?;
        Ok(out)
    }
}

fn kind_labels(kind: TaskKind) -> KindLabels {
    KindLabels {
        kind: kind.to_string(),
    }
}

/// The `2xx`…`5xx` class of a status code: enough to tell failures apart without a
/// series per code.
pub(crate) fn status_class(status: u16) -> String {
    format!("{}xx", status / 100)
}

/// The instances' series of one scrape.
#[derive(Default)]
pub struct InstanceSeries {
    cpu: Family<MemberLabels, Counter<f64, AtomicU64>>,
    throttled: Family<MemberLabels, Counter<f64, AtomicU64>>,
    working_set: Family<MemberLabels, Gauge>,
    limit: Family<MemberLabels, Gauge>,
    status: Family<StatusLabels, Gauge>,
    /// What the monitor last sampled of each member, by metric.
    sampled: std::sync::Mutex<std::collections::BTreeMap<Metric, Family<MemberLabels, Seconds>>>,
}

impl InstanceSeries {
    /// One answering member's usage.
    pub(crate) fn member(&self, labels: &MemberLabels, s: &berth_runtime::MemberStats) {
        self.cpu.get_or_create(labels).inc_by(s.cpu_seconds);
        if let Some(t) = s.cpu_throttled_seconds {
            self.throttled.get_or_create(labels).inc_by(t);
        }
        self.working_set
            .get_or_create(labels)
            .set(clamp_i64(s.memory_working_set));
        if let Some(l) = s.memory_limit {
            self.limit.get_or_create(labels).set(clamp_i64(l));
        }
    }

    /// A member's latest sampled value of `metric` (the monitor's newest bucket).
    pub(crate) fn sampled(&self, labels: &MemberLabels, metric: Metric, value: f64) {
        self.sampled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(metric)
            .or_default()
            .get_or_create(labels)
            .set(value);
    }

    /// An instance's status as a state set: one series per status, 1 for the one
    /// it is in, so a query can select any state without knowing the others.
    pub(crate) fn status(&self, instance: &str, project: &str, engine: &str, now: InstanceStatus) {
        for s in InstanceStatus::ALL {
            let labels = StatusLabels {
                instance: instance.into(),
                project: project.into(),
                engine: engine.into(),
                status: s.to_string(),
            };
            self.status.get_or_create(&labels).set(i64::from(s == now));
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register_with_unit(
            "instance_cpu_usage",
            "CPU time a member container used since it started",
            Unit::Seconds,
            self.cpu.clone(),
        );
        r.register_with_unit(
            "instance_cpu_throttled",
            "CPU time a member container was held back by its CPU limit",
            Unit::Seconds,
            self.throttled.clone(),
        );
        r.register_with_unit(
            "instance_memory_working_set",
            "Memory a member container really uses (usage less reclaimable page cache)",
            Unit::Bytes,
            self.working_set.clone(),
        );
        r.register_with_unit(
            "instance_memory_limit",
            "A member container's memory limit",
            Unit::Bytes,
            self.limit.clone(),
        );
        r.register(
            "instance_status",
            "1 for the status an instance is in, 0 for the others",
            self.status.clone(),
        );
        let sampled = self.sampled.lock().unwrap_or_else(|p| p.into_inner());
        for (metric, family) in sampled.iter() {
            // The name carries the unit (`_bytes`, `_seconds`, `_percent`, `_per_second`).
            r.register(
                format!("member_{}", metric.as_str()),
                format!(
                    "A member's {} as the monitor last sampled it (the mean of its newest \
                     bucket; `berth metrics --metric {}` has the history)",
                    metric.as_str().replace('_', " "),
                    metric.as_str()
                ),
                family.clone(),
            );
        }
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> MemberLabels {
        MemberLabels {
            instance: "db1".into(),
            member: "0".into(),
            project: "default".into(),
            engine: "postgres".into(),
        }
    }

    #[test]
    fn control_plane_metrics_encode_as_prometheus_text() {
        let m = Metrics::default();
        m.task_begun(TaskKind::Create);
        m.task_ended(TaskKind::Create, TaskState::Succeeded);
        m.task_ended(TaskKind::Create, TaskState::Running);
        let running = m.task_running();
        m.api_call(
            &ApiLabels {
                method: "GET".into(),
                route: "/v1/instances/{name}".into(),
                status: status_class(404),
            },
            Duration::from_millis(3),
        );
        m.reconcile_pass(Duration::from_millis(1500), true);
        let text = m.encode(&InstanceSeries::default()).expect("encodes");
        for line in [
            "# TYPE berth_tasks_begun_total counter",
            "berth_tasks_begun_total{kind=\"create\"} 1",
            "berth_tasks_succeeded_total{kind=\"create\"} 1",
            "berth_tasks_running 1",
            "# TYPE berth_api_request_duration_seconds histogram",
            "berth_api_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/instances/{name}\",status=\"4xx\",le=\"0.005\"} 1",
            "berth_api_request_duration_seconds_count{method=\"GET\",route=\"/v1/instances/{name}\",status=\"4xx\"} 1",
            "berth_reconcile_passes_total{outcome=\"ok\"} 1",
            "berth_reconcile_last_pass_duration_seconds 1.5",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(
            text.contains(&format!(
                "berth_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        // A task that is still running was not counted as ended.
        assert!(!text.contains("berth_tasks_failed_total{"), "{text}");
        drop(running);
        let text = m.encode(&InstanceSeries::default()).expect("encodes");
        assert!(text.lines().any(|l| l == "berth_tasks_running 0"), "{text}");
    }

    #[test]
    fn instance_series_carry_their_labels_and_units() {
        let s = InstanceSeries::default();
        s.member(
            &labels(),
            &berth_runtime::MemberStats {
                cpu_seconds: 2.5,
                cpu_throttled_seconds: None,
                memory_working_set: 90 << 20,
                memory_limit: Some(256 << 20),
            },
        );
        s.status("db1", "default", "postgres", InstanceStatus::Available);
        s.sampled(&labels(), Metric::Tps, 12.5);
        s.sampled(&labels(), Metric::ReplicationLagBytes, 4096.0);
        let text = Metrics::default().encode(&s).expect("encodes");
        let l = "instance=\"db1\",member=\"0\",project=\"default\",engine=\"postgres\"";
        for line in [
            format!("berth_member_tps{{{l}}} 12.5"),
            format!("berth_member_replication_lag_bytes{{{l}}} 4096.0"),
            "# TYPE berth_member_tps gauge".into(),
            format!("berth_instance_cpu_usage_seconds_total{{{l}}} 2.5"),
            format!("berth_instance_memory_working_set_bytes{{{l}}} 94371840"),
            format!("berth_instance_memory_limit_bytes{{{l}}} 268435456"),
            "berth_instance_status{instance=\"db1\",project=\"default\",engine=\"postgres\",status=\"available\"} 1".into(),
            "berth_instance_status{instance=\"db1\",project=\"default\",engine=\"postgres\",status=\"failed\"} 0".into(),
        ] {
            assert!(text.lines().any(|x| x == line), "no {line:?} in\n{text}");
        }
        // No answer about throttling: no series, not a zero; nor for a metric the
        // monitor did not sample.
        assert!(
            !text.contains("berth_instance_cpu_throttled_seconds_total{"),
            "{text}"
        );
        assert!(!text.contains("berth_member_connections"), "{text}");
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(202), "2xx");
        assert_eq!(status_class(422), "4xx");
        assert_eq!(status_class(503), "5xx");
    }
}
