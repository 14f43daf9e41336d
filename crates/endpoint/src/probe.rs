//! The probe loop: every interval, `GET /role` on every candidate's agent at once,
//! each bounded, then one [`select`](crate::select::select) and one publication.

use crate::proxy::Shared;
use crate::select::{select, Probe, Selection};
use berth_model::agent::{RoleReport, ROLE_PATH};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::{info, warn};

pub(crate) async fn run(shared: Arc<Shared>) {
    let config = &shared.config;
    // Members are on the instance's network: never through an HTTP_PROXY the
    // container may have inherited.
    let http = match reqwest::Client::builder()
        .no_proxy()
        // Plain HTTP: no certificate roots to load (the image has none).
        .tls_certs_only(Vec::new())
        .timeout(config.probe_timeout)
        .connect_timeout(config.probe_timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            // Only a broken TLS backend fails here, and none is configured.
            warn!(error = %e, "no HTTP client; the endpoint will route nothing");
            return;
        }
    };
    let max_lag = config.max_lag.as_secs_f64();
    let mut ticks = tokio::time::interval(config.probe_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Every interval, or at once when told roles just changed.
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shared.probe_now.notified() => ticks.reset(),
        }
        let probes = futures_util::future::join_all(
            config
                .members
                .iter()
                .map(|m| probe_one(&http, m, config.agent_port)),
        )
        .await;
        let before = shared.routes.borrow().clone();
        let after = select(&probes, max_lag, before.rw_keep.as_deref());
        log_changes(&before, &after);
        shared.routes.send_replace(Arc::new(after));
        shared.rounds.fetch_add(1, Ordering::Relaxed);
    }
}

async fn probe_one(http: &reqwest::Client, member: &str, agent_port: u16) -> Probe {
    let url = format!("http://{member}:{agent_port}{ROLE_PATH}");
    let outcome = async {
        let resp = http.get(&url).send().await.map_err(brief)?;
        let status = resp.status();
        // A 503 carries a report too (`role: null` and the reason).
        resp.json::<RoleReport>()
            .await
            .map_err(|_| format!("agent answered HTTP {status} without a role report"))
    }
    .await;
    Probe {
        member: member.to_owned(),
        outcome,
    }
}

/// The reason without reqwest's URL prefix, which the member name already gives.
fn brief(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect (not running, or its name does not resolve)".to_owned()
    } else {
        e.without_url().to_string()
    }
}

/// A step of the story when routing changes; not every round.
fn log_changes(before: &Selection, after: &Selection) {
    if before.rw != after.rw {
        match &after.rw {
            Some(rw) => info!(from = ?before.rw, to = %rw, "read-write target changed"),
            None => warn!(
                from = ?before.rw,
                reason = after.rw_reason.as_deref().unwrap_or(""),
                "no read-write target"
            ),
        }
    }
    let names = |s: &Selection| s.ro.iter().map(|t| t.member.clone()).collect::<Vec<_>>();
    if names(before) != names(after) || before.ro_fallback != after.ro_fallback {
        info!(
            targets = ?names(after),
            fallback = after.ro_fallback,
            reason = after.ro_reason.as_deref().unwrap_or(""),
            "read-only targets changed"
        );
    }
}
