//! Notification delivery. To a webhook, every notification is POSTed as JSON with
//! `X-Berth-Signature: sha256=<hex HMAC-SHA256 of the body with the webhook's
//! secret>`; to an email recipient it is mailed through the SMTP relay
//! (`super::email`). Either is retried with exponential backoff (1 s doubling, at
//! most 5 min) until delivered or its expiry. Every attempt is a row and an event.

use crate::Ctx;
use berth_model::{EventKind, NewEvent};
use berth_store::{DueNotification, Target, Webhook};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tracing::{info, warn};

/// How often due notifications are looked for.
const POLL: Duration = Duration::from_secs(1);
/// How long a receiver may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between attempts, in seconds.
const MAX_BACKOFF: i64 = 300;

/// HMAC-SHA256 (RFC 2104) of `msg` with `key`.
pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// The wait after attempt `n` (1-based) failed.
fn backoff(n: i64) -> i64 {
    1i64.checked_shl(n.saturating_sub(1).clamp(0, 20) as u32)
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF)
}

/// POSTs the notification to the webhook, signed: the status it answered, and what
/// went wrong.
async fn post(ctx: &Ctx, w: &Webhook, n: &DueNotification) -> (Option<i64>, Option<String>) {
    let signature = hex::encode(hmac_sha256(w.secret.expose().as_bytes(), n.body.as_bytes()));
    let sent = ctx
        .http
        .post(&w.url)
        .header("content-type", "application/json")
        .header("x-berth-signature", format!("sha256={signature}"))
        .header("x-berth-delivery", n.id.to_string())
        .timeout(ATTEMPT_TIMEOUT)
        .body(n.body.clone())
        .send()
        .await;
    match &sent {
        Ok(r) if r.status().is_success() => (Some(i64::from(r.status().as_u16())), None),
        Ok(r) => (
            Some(i64::from(r.status().as_u16())),
            Some(format!("the receiver answered {}", r.status())),
        ),
        Err(e) => (None, Some(crate::members::without_url(e))),
    }
}

/// Delivers until the control plane stops.
pub(crate) async fn run_forever(ctx: Ctx) {
    let mut stopping = ctx.stopping.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stopping.changed() => return,
        }
        let now = super::unix_now() as i64;
        let due = match ctx.store.due_notifications(now).await {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "could not read due notifications; will retry");
                continue;
            }
        };
        for n in due {
            attempt(&ctx, &n).await;
        }
    }
}

async fn attempt(ctx: &Ctx, n: &DueNotification) {
    let (status, error) = match &n.target {
        Target::Webhook(w) => post(ctx, w, n).await,
        Target::Email(r) => match &ctx.config.smtp {
            Some(smtp) => {
                let (subject, text) = super::email::message(&n.body);
                (None, smtp.send(&r.address, &subject, text).await.err())
            }
            None => (
                None,
                Some(
                    "berth serve has no SMTP relay (start it with --smtp smtp://HOST:PORT)".into(),
                ),
            ),
        },
    };
    let number = n.attempts + 1;
    let (channel, target) = (n.target.channel().as_str(), n.target.id());
    let next = error
        .as_ref()
        .map(|_| super::unix_now() as i64 + backoff(number));
    let outcome = if error.is_none() {
        "delivered"
    } else {
        "failed"
    };
    let event = NewEvent {
        instance_id: None,
        instance_name: None,
        kind: EventKind::NotificationAttempted,
        message: format!(
            "notification {} to {channel} {target}: attempt {number} {outcome}{}",
            n.id,
            error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ),
        details: serde_json::json!({
            "notification": n.id, "alarm": n.alarm_id, "channel": channel, "target": target,
            "attempt": number, "status": status, "outcome": outcome,
        }),
    };
    match ctx
        .store
        .record_attempt(n, status, error.as_deref(), next, &event)
        .await
    {
        Ok(()) if error.is_none() => info!(
            notification = n.id,
            attempt = number,
            "notification delivered"
        ),
        Ok(()) => warn!(
            notification = n.id,
            attempt = number,
            error = error.as_deref().unwrap_or(""),
            "notification not delivered; will retry"
        ),
        Err(e) => warn!(notification = n.id, error = %e, "could not record a notification attempt"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // A key longer than a block is hashed first (RFC 4231 case 6).
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn retries_back_off_to_five_minutes() {
        assert_eq!((1..=4).map(backoff).collect::<Vec<_>>(), vec![1, 2, 4, 8]);
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
