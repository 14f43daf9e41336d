//! Alarm evaluation after every sampling round: each alarm's last N complete
//! periods are read from the finest resolution (members merged), judged by
//! [`berth_model::metrics::alarm::evaluate`], and a change is written with its event
//! and its notifications in one transaction. A silenced alarm still changes state
//! (and writes the event); only the notification is held back.

use crate::Ctx;
use berth_model::metrics::alarm::{defaults, evaluate, AlarmRecord, AlarmState};
use berth_model::metrics::rollup::{bucket, rollup};
use berth_model::{EventKind, InstanceId, InstanceRecord, NewEvent};
use std::collections::{HashMap, HashSet};
use tracing::{info, warn};

/// How long a notification is retried before it is given up.
pub(crate) const NOTIFICATION_EXPIRES: i64 = 24 * 3600;

/// The default alarms of an instance, new (state INSUFFICIENT_DATA).
pub(crate) fn default_alarms(inst: &InstanceRecord) -> Vec<AlarmRecord> {
    defaults()
        .into_iter()
        .map(|(name, rule)| new_alarm(inst, name, rule))
        .collect()
}

/// A new alarm of an instance.
pub(crate) fn new_alarm(
    inst: &InstanceRecord,
    name: &str,
    rule: berth_model::metrics::alarm::AlarmRule,
) -> AlarmRecord {
    AlarmRecord {
        id: uuid::Uuid::new_v4().to_string(),
        instance_id: inst.id,
        instance: inst.name.to_string(),
        name: name.to_owned(),
        rule,
        state: AlarmState::InsufficientData,
        reason: "not evaluated yet".into(),
        state_since: berth_store::now(),
        silenced_until: None,
    }
}

/// Evaluates every alarm of the live instances; `ensured` remembers which
/// instances got their default alarms in this process.
pub(crate) async fn evaluate_all(
    ctx: &Ctx,
    instances: &HashMap<String, InstanceRecord>,
    ensured: &mut HashSet<InstanceId>,
) {
    for inst in instances.values() {
        if ensured.contains(&inst.id) {
            continue;
        }
        match ctx.store.ensure_alarms(&default_alarms(inst)).await {
            Ok(()) => {
                ensured.insert(inst.id);
            }
            Err(e) => {
                warn!(instance = %inst.name, error = %e, "could not add default alarms; will retry")
            }
        }
    }
    let alarms = match ctx.store.alarms(None).await {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "could not read alarms; not evaluated this round");
            return;
        }
    };
    let now = super::unix_now() as i64;
    for alarm in alarms {
        if !instances.contains_key(&alarm.instance_id.to_string()) {
            continue;
        }
        if let Err(e) = evaluate_one(ctx, &alarm, now).await {
            warn!(alarm = %alarm.name, instance = %alarm.instance, error = %e, "alarm not evaluated");
        }
    }
}

async fn evaluate_one(
    ctx: &Ctx,
    alarm: &AlarmRecord,
    now: i64,
) -> Result<(), berth_store::StoreError> {
    let r = &alarm.rule;
    let finest = ctx.config.monitor.tiers[0].step;
    let end = bucket(now, r.period);
    let start = end - i64::from(r.evaluation_periods) * r.period;
    let buckets = ctx
        .store
        .read_samples(alarm.instance_id, r.metric, finest, start)
        .await?;
    let merged: HashMap<i64, _> = rollup(
        buckets
            .into_iter()
            .filter(|b| b.ts < end)
            .map(|b| (b.ts, b.agg)),
        r.period,
    )
    .into_iter()
    .collect();
    let periods: Vec<Option<f64>> = (0..i64::from(r.evaluation_periods))
        .map(|k| {
            merged
                .get(&(start + k * r.period))
                .map(|a| a.statistic(r.statistic))
        })
        .collect();
    let to = evaluate(r, &periods, alarm.state);
    if to == alarm.state {
        return Ok(());
    }
    let shown: Vec<String> = periods
        .iter()
        .map(|p| p.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into()))
        .collect();
    let reason = format!(
        "{} {:?} of the last {} periods of {}s: [{}], threshold {:?} {}",
        r.metric,
        r.statistic,
        r.evaluation_periods,
        r.period,
        shown.join(", "),
        r.comparison,
        r.threshold
    );
    let silenced = alarm.silenced_until.is_some_and(|u| u > now);
    let event = NewEvent::instance(
        alarm.instance_id,
        &alarm.instance,
        EventKind::AlarmStateChanged,
        format!(
            "alarm {} of {} went from {} to {}{}",
            alarm.name,
            alarm.instance,
            alarm.state,
            to,
            if silenced {
                " (silenced: no notification)"
            } else {
                ""
            }
        ),
        serde_json::json!({
            "alarm": alarm.id, "name": alarm.name, "from": alarm.state, "to": to,
            "reason": reason, "silenced": silenced,
        }),
    );
    let body = serde_json::json!({
        "alarm": { "id": alarm.id, "name": alarm.name, "instance": alarm.instance, "rule": r },
        "from": alarm.state,
        "to": to,
        "reason": reason,
        "at": now,
    })
    .to_string();
    let notify = (!silenced).then_some(body.as_str());
    if ctx
        .store
        .change_alarm_state(
            &alarm.id,
            alarm.state,
            to,
            &reason,
            &event,
            notify,
            now,
            now + NOTIFICATION_EXPIRES,
        )
        .await?
    {
        info!(alarm = %alarm.name, instance = %alarm.instance, from = %alarm.state, %to, silenced, "alarm changed state");
    }
    Ok(())
}
