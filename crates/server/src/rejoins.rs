//! The event log's `member.rejoined`: a member whose agent brought its data
//! directory back to its primary's history (`rewound`, `cloned afresh`, or `follows
//! from its own position`), as the agent reports it in `/health`'s `rejoined`.
//!
//! Written when a failover brings its failed primary back, and by reconcile for any
//! member whose agent reports a rejoin the log does not have yet (a replica that
//! received more than the member promoted instead of it, and rewound). Each event
//! carries the agent's `at_unix`, so one rejoin is written once, across restarts of
//! `serve` too.

use crate::members;
use crate::steps;
use crate::Ctx;
use berth_model::{EventKind, InstanceRecord, MemberId, NewEvent};
use berth_store::EventFilter;

/// The event of a failover's former primary, brought back as a replica.
pub(crate) async fn former_primary(ctx: &Ctx, inst: &InstanceRecord, m: MemberId) {
    let Ok(ip) = steps::member_ip(ctx, inst, m).await else {
        return;
    };
    let rejoined = members::agent_health(ctx, inst, ip)
        .await
        .ok()
        .and_then(|h| h.rejoined);
    record(ctx, inst, m, rejoined.as_ref(), true).await;
}

/// Reconcile saw `m`'s agent report `rejoined`: written unless the log has it.
pub(crate) async fn observed(
    ctx: &Ctx,
    inst: &InstanceRecord,
    m: MemberId,
    rejoined: Option<&serde_json::Value>,
) {
    if rejoined.is_some() {
        record(ctx, inst, m, rejoined, false).await;
    }
}

async fn record(
    ctx: &Ctx,
    inst: &InstanceRecord,
    m: MemberId,
    rejoined: Option<&serde_json::Value>,
    former_primary: bool,
) {
    let display = berth_model::member::display_name(&inst.name, m);
    let at_unix = rejoined.and_then(|r| r["at_unix"].as_i64());
    if let Some(at) = at_unix {
        if logged(ctx, inst, &display, at).await {
            return;
        }
    }
    let (how, reason) = match rejoined {
        Some(r) => (
            r["how"].as_str().unwrap_or("followed").to_owned(),
            r["reason"].as_str().map(str::to_owned),
        ),
        None => ("followed".to_owned(), None),
    };
    let who = if former_primary {
        format!("{display}, the former primary,")
    } else {
        display.clone()
    };
    let message = match &reason {
        Some(why) => format!(
            "{who} rejoined as a replica: {how}, because {why}; what it held beyond the \
             primary was set aside"
        ),
        None => format!("{who} rejoined as a replica ({how})"),
    };
    let written = ctx
        .store
        .record_event(&NewEvent::instance(
            inst.id,
            inst.name.as_str(),
            EventKind::MemberRejoined,
            message,
            serde_json::json!({
                "member": display, "how": how, "reason": reason, "at_unix": at_unix,
            }),
        ))
        .await;
    if let (Ok(()), Some(at)) = (written, at_unix) {
        remember(ctx, &key(inst, &display, at));
    }
}

fn key(inst: &InstanceRecord, display: &str, at_unix: i64) -> String {
    format!("rejoin:{}:{display}:{at_unix}", inst.id)
}

fn remember(ctx: &Ctx, key: &str) {
    ctx.reported
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key.to_owned());
}

/// Whether the rejoin of `display` at `at_unix` is in the log: known to this
/// process, or found among the instance's events since then (once per process).
async fn logged(ctx: &Ctx, inst: &InstanceRecord, display: &str, at_unix: i64) -> bool {
    let key = key(inst, display, at_unix);
    if ctx
        .reported
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&key)
    {
        return true;
    }
    let since = time::OffsetDateTime::from_unix_timestamp(at_unix.saturating_sub(1))
        .map(berth_store::event_time)
        .ok();
    let filter = EventFilter {
        instance: Some(inst.name.to_string()),
        since,
        after: 0,
        limit: 10_000,
    };
    let Ok(events) = ctx.store.events(&filter).await else {
        // Unknown: not written now; the next pass asks again.
        return true;
    };
    let found = events.iter().any(|e| {
        e.kind == EventKind::MemberRejoined
            && e.details["member"] == display
            && e.details["at_unix"].as_i64() == Some(at_unix)
    });
    if found {
        remember(ctx, &key);
    }
    found
}
