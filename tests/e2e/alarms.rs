//! Alarms and webhooks (issue 11): a connections alarm fires when the test opens
//! connections past its threshold and clears when they close; two webhook receivers
//! (real HTTP servers in this test) get both notifications with a valid
//! HMAC-SHA256 signature, one only after failing the first attempts (each attempt
//! recorded); an email recipient gets each as an email through a real SMTP server
//! (aiosmtpd); a silence holds back the notification but not the state change; a
//! webhook URL that is not http or https, and an address that is none, are refused.

use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use berth_e2e::smtp::SmtpServer;
use berth_e2e::{unique, Berth};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FAST: &[&str] = &[
    "--sample-interval",
    "1s",
    "--metric-resolutions",
    "1s:1h,10s:1d",
];

/// What a receiver got about the alarm `conns`: each body with its signature header.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, String)>>>,
    /// Requests about `conns` to answer 500 before answering.
    fail_first: Arc<Mutex<u32>>,
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    // Default alarms notify too; the test's alarm is `conns`.
    if !body.contains("\"conns\"") {
        return StatusCode::NO_CONTENT;
    }
    {
        let mut left = r.fail_first.lock().expect("lock");
        if *left > 0 {
            *left -= 1;
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    let sig = headers
        .get("x-berth-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    r.got.lock().expect("lock").push((body, sig));
    StatusCode::NO_CONTENT
}

/// Starts a receiver on a free local port; returns its URL.
async fn start_receiver(r: Receiver) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(r);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/hook"))
}

/// HMAC-SHA256 (RFC 2104), written here again so the test checks Berth's.
fn hmac(key: &[u8], msg: &[u8]) -> String {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    hex::encode(
        Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize(),
    )
}

/// The states notified so far, each signature checked.
fn notified(r: &Receiver, secret: &str) -> Vec<String> {
    r.got
        .lock()
        .expect("lock")
        .iter()
        .map(|(body, sig)| {
            assert_eq!(
                sig,
                &format!("sha256={}", hmac(secret.as_bytes(), body.as_bytes())),
                "bad signature on {body}"
            );
            let v: Value = serde_json::from_str(body).expect("json body");
            assert_eq!(v["alarm"]["name"], "conns");
            v["to"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

async fn alarm_state(b: &Berth, id: &str) -> Result<String> {
    Ok(b.get(&format!("/v1/alarms/{id}")).await?["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

async fn until_state(b: &Berth, id: &str, want: &str) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if alarm_state(b, id).await? == want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bail!(
        "alarm {id} did not become {want} in 60s: {}",
        b.get(&format!("/v1/alarms/{id}")).await?
    )
}

async fn until_notified(r: &Receiver, secret: &str, want: &[&str]) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if notified(r, secret) == want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("receiver got {:?}, not {want:?}", notified(r, secret))
}

/// The subjects of the emails about the alarm `conns`, in the order received.
fn mailed(smtp: &SmtpServer) -> Vec<String> {
    smtp.messages()
        .iter()
        .filter_map(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .filter(|s| s.contains(": conns on "))
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn a_connections_alarm_fires_clears_and_notifies_signed_webhooks_and_email() -> Result<()> {
    let smtp = SmtpServer::start().await?;
    let mut args = FAST.to_vec();
    args.extend([
        "--smtp",
        smtp.url.as_str(),
        "--smtp-from",
        "Berth <berth@example.com>",
    ]);
    let b = Berth::start_with(&args).await?;

    // Email recipients: an address or nothing; one of each.
    let (status, p) = b
        .request(
            Method::POST,
            "/v1/email-recipients",
            Some(json!({"address": "ops@@example"})),
        )
        .await?;
    assert!(status == 400 || status == 422, "{status} {p}");
    assert_eq!(p["_content_type"], "application/problem+json");
    let added = b.cli_json(&["alarms", "email", "add", "ops@example.com"])?;
    let recipient = added["id"].as_str().context("recipient id")?.to_owned();
    let again = b.cli(&["alarms", "email", "add", "ops@example.com"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Only http and https.
    for bad in ["ftp://example.com/hook", "file:///etc/passwd", "not a url"] {
        let (status, p) = b
            .request(Method::POST, "/v1/webhooks", Some(json!({"url": bad})))
            .await?;
        assert_eq!(status, 400, "{bad}: {p}");
        assert_eq!(p["_content_type"], "application/problem+json");
    }

    let steady = Receiver::default();
    let flaky = Receiver {
        fail_first: Arc::new(Mutex::new(2)),
        ..Default::default()
    };
    let mut secrets = vec![];
    for r in [&steady, &flaky] {
        let url = start_receiver(r.clone()).await?;
        let (status, w) = b
            .request(Method::POST, "/v1/webhooks", Some(json!({"url": url})))
            .await?;
        assert_eq!(status, 201, "{w}");
        secrets.push(w["secret"].as_str().context("secret")?.to_owned());
    }
    let listed = b.get("/v1/webhooks").await?;
    assert!(listed.to_string().find("secret").is_none(), "{listed}");

    let name = unique("alarm");
    b.create(&name, json!({})).await?;
    let defaults = b.get(&format!("/v1/instances/{name}/alarms")).await;
    // Default alarms appear with the first sampling round.
    b.eventually("default alarms", Duration::from_secs(20), || async {
        b.get(&format!("/v1/instances/{name}/alarms"))
            .await
            .is_ok_and(|v| v.to_string().contains("connections-high"))
    })
    .await?;
    drop(defaults);
    let rule = json!({
        "metric": "connections", "statistic": "maximum", "period": 2,
        "evaluation_periods": 2, "datapoints_to_alarm": 2,
        "threshold": 3, "comparison": "greater_than", "missing_data": "missing"
    });
    let (status, bad) = b
        .request(
            Method::POST,
            &format!("/v1/instances/{name}/alarms"),
            Some(
                json!({"name": "bad", "rule": {"metric": "connections", "period": 2,
                "evaluation_periods": 2, "datapoints_to_alarm": 3, "threshold": 3,
                "comparison": "greater_than"}}),
            ),
        )
        .await?;
    assert_eq!(status, 422, "{bad}");
    let (status, alarm) = b
        .request(
            Method::POST,
            &format!("/v1/instances/{name}/alarms"),
            Some(json!({"name": "conns", "rule": rule})),
        )
        .await?;
    assert_eq!(status, 201, "{alarm}");
    let id = alarm["id"].as_str().context("id")?.to_owned();
    until_state(&b, &id, "OK").await?;
    until_notified(&steady, &secrets[0], &["OK"]).await?;

    // Past the threshold: ALARM, notified; closed again: OK, notified.
    let mut held = vec![];
    for _ in 0..6 {
        held.push(b.pg(&name).await?);
    }
    until_state(&b, &id, "ALARM").await?;
    until_notified(&steady, &secrets[0], &["OK", "ALARM"]).await?;
    drop(held);
    until_state(&b, &id, "OK").await?;
    until_notified(&steady, &secrets[0], &["OK", "ALARM", "OK"]).await?;
    // The flaky receiver got them all too, after failed attempts, each recorded.
    until_notified(&flaky, &secrets[1], &["OK", "ALARM", "OK"]).await?;
    // And the recipient got each as an email, through the SMTP server.
    let started = Instant::now();
    while mailed(&smtp).len() < 3 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let subjects = mailed(&smtp);
    assert_eq!(
        subjects,
        ["OK", "ALARM", "OK"].map(|to| format!("[Berth] {to}: conns on {name}")),
        "{}",
        smtp.log()
    );
    let mail = smtp
        .messages()
        .into_iter()
        .find(|m| m.contains(": conns on "))
        .context("a mail")?;
    assert!(
        mail.contains("To: ops@example.com") && mail.contains("From: Berth <berth@example.com>"),
        "{mail}"
    );
    let shown = b.get(&format!("/v1/alarms/{id}")).await?;
    let all_attempts = shown["attempts"].as_array().context("attempts")?;
    let (emails, attempts): (Vec<&Value>, Vec<&Value>) =
        all_attempts.iter().partition(|a| a["channel"] == "email");
    assert_eq!(emails.len(), 3, "{shown}");
    assert!(
        emails
            .iter()
            .all(|a| a["target"] == recipient.as_str() && a["error"].is_null()),
        "{shown}"
    );
    let failed = attempts.iter().filter(|a| a["status"] == 500).count();
    assert_eq!(failed, 2, "{shown}");
    assert_eq!(attempts.len(), 6 + failed, "{shown}");

    // The CLI lists it and shows its attempts.
    let listed = b.cli_json(&["alarms", "list", &name])?;
    assert!(listed.to_string().contains("\"conns\""), "{listed}");
    let shown_text = b.cli(&["alarms", "show", &id]);
    let shown_text = String::from_utf8_lossy(&shown_text.stdout);
    assert!(
        shown_text.contains("conns of") && shown_text.contains("500"),
        "{shown_text}"
    );

    // Silenced: the state still changes (and is an event), nobody is notified.
    let s = b.cli_json(&["alarms", "silence", &id, "--for", "1h"])?;
    assert!(s[0]["silenced_until"].as_i64().is_some(), "{s}");
    let mut held = vec![];
    for _ in 0..6 {
        held.push(b.pg(&name).await?);
    }
    until_state(&b, &id, "ALARM").await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(notified(&steady, &secrets[0]), ["OK", "ALARM", "OK"]);
    assert_eq!(mailed(&smtp).len(), 3, "a silenced alarm mails nobody");
    drop(held);
    let events = b
        .get(&format!("/v1/events?instance={name}&limit=1000"))
        .await?;
    let changes: Vec<&Value> = events["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter(|e| e["kind"] == "alarm.state-changed" && e["details"]["name"] == "conns")
        .collect();
    assert_eq!(changes.len(), 4, "{changes:?}");
    assert_eq!(changes[3]["details"]["silenced"], true);
    let all = b.get("/v1/events?limit=1000").await?;
    let tried = all["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter(|e| e["kind"] == "notification.attempted" && e["details"]["alarm"] == id.as_str())
        .count();
    assert_eq!(tried, all_attempts.len());

    // Removed, a recipient is listed no more.
    b.cli(&["alarms", "email", "delete", &recipient]);
    let listed = b.cli_json(&["alarms", "email", "list"])?;
    assert_eq!(listed, json!([]), "{listed}");
    Ok(())
}
