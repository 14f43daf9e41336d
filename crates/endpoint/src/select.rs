//! Which member gets new connections: pure, no I/O, tested by table and property.
//!
//! Rules:
//! - the read-write target is the one member that answers, is ready and reports
//!   primary. Two such members choose none (writes never go to two nodes); none
//!   chooses none;
//! - open read-write connections may stay on [`Selection::rw_keep`]: the target, or,
//!   while there is no target, the previous one as long as it simply did not answer
//!   (a missed probe is not a demotion). Every other open read-write connection is
//!   cut: a member that says it is no longer the sole primary keeps no writer;
//! - read-only targets are the ready replicas whose lag is known and at most the
//!   maximum, weighted by [`weight`]; when none qualifies, read-only connections go
//!   to the read-write target (`ro_fallback`), with the reason.

use berth_model::agent::RoleReport;
use berth_model::endpoint::{MemberProbe, WeightedTarget};
use berth_model::member::Role;
use std::collections::BTreeMap;

/// One candidate's probe this round.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    /// The candidate's host name.
    pub member: String,
    /// Its agent's report, or why there was none (no DNS name, refused, timed out).
    pub outcome: Result<RoleReport, String>,
}

/// What the endpoint routes by until the next round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selection {
    /// Target of new read-write connections.
    pub rw: Option<String>,
    /// Why there is no read-write target.
    pub rw_reason: Option<String>,
    /// The one member whose open read-write connections may stay open.
    pub rw_keep: Option<String>,
    /// Targets of new read-only connections, with weights (each at least 1).
    pub ro: Vec<WeightedTarget>,
    /// Read-only connections go to the primary: no replica qualifies.
    pub ro_fallback: bool,
    /// Why read-only connections go to the primary, or nowhere.
    pub ro_reason: Option<String>,
    /// Every candidate, with why it gets no new connections when it gets none.
    pub members: Vec<MemberProbe>,
}

/// Weight of a replica that qualifies, from what it measured: the further behind,
/// the slower its probe query, the fuller its connection slots, the less it gets.
/// Between 1 and 1000.
pub fn weight(report: &RoleReport, max_lag_seconds: f64) -> u32 {
    let lag = report.lag_seconds.unwrap_or(0.0).max(0.0);
    let lag_f = if max_lag_seconds > 0.0 {
        (1.0 - lag / max_lag_seconds).clamp(0.1, 1.0)
    } else {
        1.0
    };
    // A local probe query takes well under a millisecond on an idle engine; at
    // 10 ms the member gets half, at 100 ms a tenth.
    let probe_f = report
        .probe_ms
        .map_or(1.0, |ms| (10.0 / (10.0 + ms.max(0.0))).clamp(0.05, 1.0));
    let conn_f = match (report.connections, report.max_connections) {
        (Some(c), Some(m)) if m > 0 => (1.0 - f64::from(c) / f64::from(m)).clamp(0.05, 1.0),
        _ => 1.0,
    };
    let w = (1000.0 * lag_f * probe_f * conn_f).round();
    if w.is_finite() {
        (w as u32).clamp(1, 1000)
    } else {
        1
    }
}

/// Chooses targets from this round's probes. `previous_keep` is the last round's
/// [`Selection::rw_keep`].
pub fn select(probes: &[Probe], max_lag_seconds: f64, previous_keep: Option<&str>) -> Selection {
    let primaries: Vec<&str> = probes
        .iter()
        .filter(|p| {
            p.outcome
                .as_ref()
                .is_ok_and(|r| r.ready && r.role == Some(Role::Primary))
        })
        .map(|p| p.member.as_str())
        .collect();
    let mut s = Selection::default();
    match primaries.as_slice() {
        [one] => s.rw = Some((*one).to_owned()),
        [] => s.rw_reason = Some("no member is a ready primary".to_owned()),
        many => {
            s.rw_reason = Some(format!(
                "{} members report primary ({}): writes go to none of them",
                many.len(),
                many.join(", ")
            ))
        }
    }
    s.rw_keep = s.rw.clone().or_else(|| {
        let prev = previous_keep?;
        let silent = probes
            .iter()
            .find(|p| p.member == prev)
            .is_none_or(|p| p.outcome.is_err());
        (silent && primaries.is_empty()).then(|| prev.to_owned())
    });

    let mut replicas = 0;
    for p in probes {
        let mut m = MemberProbe {
            member: p.member.clone(),
            ..MemberProbe::default()
        };
        match &p.outcome {
            Err(e) => m.excluded = Some(format!("no answer: {e}")),
            Ok(r) => {
                m.answered = true;
                m.role = r.role;
                m.ready = r.ready;
                m.lag_seconds = r.lag_seconds;
                m.lag_bytes = r.lag_bytes;
                m.probe_ms = r.probe_ms;
                m.connections = r.connections;
                m.max_connections = r.max_connections;
                m.excluded = match r.role {
                    None => Some(format!(
                        "the engine does not answer: {}",
                        r.reason.as_deref().unwrap_or("unknown")
                    )),
                    Some(Role::Primary) if s.rw.as_deref() == Some(p.member.as_str()) => None,
                    Some(Role::Primary) => Some(
                        s.rw_reason
                            .clone()
                            .filter(|_| r.ready)
                            .unwrap_or_else(|| "primary, not ready".to_owned()),
                    ),
                    Some(Role::Replica) => {
                        replicas += 1;
                        replica_exclusion(r, max_lag_seconds)
                    }
                };
                if r.role == Some(Role::Replica) && m.excluded.is_none() {
                    s.ro.push(WeightedTarget {
                        member: p.member.clone(),
                        weight: weight(r, max_lag_seconds),
                    });
                }
            }
        }
        s.members.push(m);
    }
    if s.ro.is_empty() {
        let why = if replicas == 0 {
            "the instance has no replica answering".to_owned()
        } else {
            format!("none of {replicas} replicas qualifies")
        };
        match &s.rw {
            Some(rw) => {
                s.ro.push(WeightedTarget {
                    member: rw.clone(),
                    weight: 1,
                });
                s.ro_fallback = true;
                s.ro_reason = Some(format!("{why}: read-only connections go to the primary"));
            }
            None => s.ro_reason = Some(format!("{why}, and there is no primary")),
        }
    }
    s
}

fn replica_exclusion(r: &RoleReport, max_lag_seconds: f64) -> Option<String> {
    if !r.ready {
        return Some(
            r.reason
                .clone()
                .unwrap_or_else(|| "replica, not ready".to_owned()),
        );
    }
    match r.lag_seconds {
        None => Some("replica, lag unknown".to_owned()),
        Some(lag) if lag > max_lag_seconds => Some(format!(
            "lag {lag:.1}s is above the maximum {max_lag_seconds:.1}s"
        )),
        Some(_) => None,
    }
}

/// Spreads new connections over weighted targets, smoothly (nginx's weighted
/// round-robin): over any run of `sum(weights)` picks each target gets exactly its
/// weight, interleaved rather than in bursts. Deterministic, so tests can count.
#[derive(Debug, Default)]
pub struct Spreader {
    current: BTreeMap<String, i64>,
}

impl Spreader {
    /// The next target, or `None` when there is none.
    pub fn pick(&mut self, targets: &[WeightedTarget]) -> Option<String> {
        self.current
            .retain(|k, _| targets.iter().any(|t| &t.member == k));
        let total: i64 = targets.iter().map(|t| i64::from(t.weight.max(1))).sum();
        let mut best: Option<(&str, i64)> = None;
        for t in targets {
            let c = self.current.entry(t.member.clone()).or_insert(0);
            *c += i64::from(t.weight.max(1));
            if best.is_none_or(|(_, b)| *c > b) {
                best = Some((&t.member, *c));
            }
        }
        let (member, _) = best?;
        let member = member.to_owned();
        if let Some(c) = self.current.get_mut(&member) {
            *c -= total;
        }
        Some(member)
    }
}

#[cfg(test)]
#[path = "select_tests.rs"]
mod tests;
