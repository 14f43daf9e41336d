//! Alarm notifications by email: the SMTP relay `berth serve --smtp` names (checked
//! when it starts), and the message an alarm's state change becomes. The relay's
//! account comes from the environment, never from the URL, and is never logged.

use berth_model::Secret;
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

/// How long one delivery to the relay may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The From address when none is given.
pub const DEFAULT_FROM: &str = "Berth <berth@localhost>";

/// The SMTP relay alarm emails go out through.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    /// `smtp://HOST[:PORT]` (plain; `?tls=required` for STARTTLS) or
    /// `smtps://HOST[:PORT]` (TLS from the start), without an account.
    url: String,
    /// Who the emails are from.
    from: Mailbox,
    /// The relay's account, when it wants one.
    account: Option<(String, Secret)>,
}

impl SmtpConfig {
    /// Checks `--smtp`, `--smtp-from` and the account (from `BERTH_SMTP_USERNAME` and
    /// `BERTH_SMTP_PASSWORD`); the error says what to write instead.
    pub fn parse(
        url: &str,
        from: Option<&str>,
        username: Option<String>,
        password: Option<String>,
    ) -> Result<Self, String> {
        // The URL is never repeated in an error: a mistyped one may hold a password.
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            format!("the SMTP URL is not a URL ({e}); write smtp://HOST:PORT or smtps://HOST:PORT")
        })?;
        if !matches!(parsed.scheme(), "smtp" | "smtps")
            || parsed.host_str().is_none_or(str::is_empty)
        {
            return Err(format!(
                "the SMTP URL is not smtp:// or smtps:// with a host (its scheme is {:?}); write \
                 smtp://HOST:PORT (add ?tls=required for STARTTLS) or smtps://HOST:PORT",
                parsed.scheme()
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(
                "the SMTP URL must not hold an account (it would show in process lists and logs); \
                 put it in BERTH_SMTP_USERNAME and BERTH_SMTP_PASSWORD"
                    .into(),
            );
        }
        // What lettre makes of it (the TLS mode, a port) is checked now, not at the
        // first alarm.
        AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("the SMTP URL cannot be used: {e}"))?;
        let encrypted = parsed.scheme() == "smtps"
            || parsed
                .query_pairs()
                .any(|(k, v)| k == "tls" && v == "required");
        let from_text = from.unwrap_or(DEFAULT_FROM);
        let from = from_text.parse::<Mailbox>().map_err(|e| {
            format!("--smtp-from {from_text:?} is not an email address ({e}); write like Berth <berth@example.com>")
        })?;
        let account =
            match (username, password) {
                (Some(_), Some(_)) if !encrypted => return Err(
                    "the relay's account would cross the network in clear: use smtps://HOST:PORT, \
                     or add ?tls=required to the smtp:// URL"
                        .into(),
                ),
                (Some(u), Some(p)) if !u.is_empty() => Some((u, Secret::new(p))),
                (None, None) => None,
                _ => {
                    return Err(
                        "give both BERTH_SMTP_USERNAME and BERTH_SMTP_PASSWORD, or neither".into(),
                    )
                }
            };
        Ok(Self {
            url: url.to_owned(),
            from,
            account,
        })
    }

    /// Sends `subject` and `text` to `to`; the relay's refusal as the error.
    pub(crate) async fn send(&self, to: &str, subject: &str, text: String) -> Result<(), String> {
        let to = to
            .parse::<Mailbox>()
            .map_err(|e| format!("{to:?} is not an email address: {e}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(text)
            .map_err(|e| format!("could not write the email: {e}"))?;
        let mut transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&self.url)
            .map_err(|e| format!("the SMTP URL cannot be used: {e}"))?
            .timeout(Some(SEND_TIMEOUT));
        if let Some((user, password)) = &self.account {
            transport =
                transport.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        transport
            .build()
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("the SMTP relay did not take the email: {e}"))
    }
}

/// Whether `address` is one an email can go to; the error says what is wrong.
pub fn check_address(address: &str) -> Result<(), String> {
    address.parse::<lettre::Address>().map(|_| ()).map_err(|e| {
        format!("{address:?} is not an email address ({e}); write like ops@example.com")
    })
}

/// The subject and text of the email for a notification body (the JSON a webhook
/// gets, which the text ends with).
pub fn message(body: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    let (name, instance) = (s(&v["alarm"]["name"]), s(&v["alarm"]["instance"]));
    let (from, to) = (s(&v["from"]), s(&v["to"]));
    let subject = format!("[Berth] {to}: {name} on {instance}");
    let text = format!(
        "The alarm {name} of instance {instance} went from {from} to {to}.\n\n\
         Why: {}\nAt: {} (Unix time)\n\n\
         `berth alarms show {}` shows it and every notification of it.\n\n{body}\n",
        s(&v["reason"]),
        v["at"],
        s(&v["alarm"]["id"]),
    );
    (subject, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_smtp_url_is_checked_and_never_holds_an_account() {
        let ok = SmtpConfig::parse("smtp://127.0.0.1:2525", None, None, None).expect("plain");
        assert_eq!(ok.from.to_string(), DEFAULT_FROM);
        SmtpConfig::parse(
            "smtps://mail.example.com",
            Some("ops@example.com"),
            None,
            None,
        )
        .expect("tls");
        for (bad, says) in [
            ("http://mail.example.com", "not smtp:// or smtps://"),
            ("mail.example.com:25", "not smtp:// or smtps://"),
            (
                "smtp://user:pw@mail.example.com",
                "must not hold an account",
            ),
        ] {
            let e = SmtpConfig::parse(bad, None, None, None).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("pw@"), "the password is not repeated: {e}");
        }
        let e =
            SmtpConfig::parse("smtp://m", Some("not an address"), None, None).expect_err("from");
        assert!(e.contains("--smtp-from"), "{e}");
        let e = SmtpConfig::parse("smtp://m", None, Some("u".into()), None).expect_err("half");
        assert!(e.contains("both"), "{e}");
        let account = || (Some("u".to_owned()), Some("s3cret".to_owned()));
        let (u, p) = account();
        let e = SmtpConfig::parse("smtp://m", None, u, p).expect_err("in clear");
        assert!(e.contains("in clear"), "{e}");
        let (u, p) = account();
        let e = SmtpConfig::parse("htp://u:s3cret@m", None, u, p).expect_err("scheme");
        assert!(!e.contains("s3cret"), "{e}");
        let (u, p) = account();
        let with = SmtpConfig::parse("smtp://m:587?tls=required", None, u, p).expect("account");
        assert!(!format!("{with:?}").contains("s3cret"), "{with:?}");
    }

    #[test]
    fn addresses_are_checked() {
        assert!(check_address("ops@example.com").is_ok());
        for bad in ["", "ops", "ops@", "@example.com", "a b@example.com"] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_email_says_what_changed_and_carries_the_body() {
        let body = serde_json::json!({
            "alarm": {"id": "al-1", "name": "connections-high", "instance": "shop"},
            "from": "OK", "to": "ALARM", "reason": "3 of 3 above 80", "at": 1700000000,
        })
        .to_string();
        let (subject, text) = message(&body);
        assert_eq!(subject, "[Berth] ALARM: connections-high on shop");
        assert!(text.contains("went from OK to ALARM"), "{text}");
        assert!(text.contains("3 of 3 above 80"), "{text}");
        assert!(text.contains("berth alarms show al-1"), "{text}");
        assert!(text.ends_with(&format!("{body}\n")), "{text}");
    }
}
