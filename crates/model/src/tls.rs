//! Server certificates of instances: which names they carry and when they are renewed.
//!
//! The control plane's CA signs one certificate per instance. Deciding whether the one
//! a member has is still good is pure (this module); issuing and delivering it is I/O
//! (`server::tls`, the agent).

use serde::{Deserialize, Serialize};

/// How long a server certificate is valid.
pub const SERVER_CERT_DAYS: i64 = 90;

/// A certificate with fewer days than this left is renewed.
pub const RENEW_WITHIN_DAYS: i64 = 30;

/// Where the control plane leaves the member's certificate bundle on its data volume
/// (a file name in [`crate::agent::DATA_DIR`]); the agent installs it at every start.
pub const BUNDLE_FILE: &str = "berth-tls.json";

/// What a member's TLS bundle holds: its certificate and key (PEM) and the CA's
/// certificate. The key is secret: the bundle is written 0600 and never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// The server certificate.
    pub cert: String,
    /// The server's private key.
    pub key: String,
    /// The CA that signed it (clients verify against it).
    pub ca: String,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle").field("key", &"***").finish()
    }
}

/// The name the control plane verifies when it connects to a member by its address:
/// stable for the instance's life, never resolved through DNS.
pub fn internal_name(instance: crate::InstanceId) -> String {
    format!("{instance}.berth.internal")
}

/// The names a member's certificate must carry: the endpoint host users connect to,
/// the loopback names (clients on this machine) and the internal name. In order,
/// without repeats.
pub fn server_names(endpoint_host: &str, internal: &str) -> Vec<String> {
    let mut names: Vec<String> = vec![];
    for n in [endpoint_host, "localhost", "127.0.0.1", "::1", internal] {
        let n = n.trim().trim_start_matches('[').trim_end_matches(']');
        if !n.is_empty() && !names.iter().any(|m| m.eq_ignore_ascii_case(n)) {
            names.push(n.to_owned());
        }
    }
    names
}

/// What is known about a certificate that was issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// Names it carries.
    pub names: Vec<String>,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// SHA-256 (hex) of the CA certificate that signed it.
    pub ca_sha256: String,
}

/// Why a new certificate is needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// None was issued yet.
    Missing,
    /// It ends within [`RENEW_WITHIN_DAYS`] (or has ended).
    Expiring {
        /// Whole days left (negative once expired).
        days_left: i64,
    },
    /// The names it must carry changed (the endpoint host was reconfigured).
    NamesChanged,
    /// Another CA signed it.
    OtherCa,
}

impl std::fmt::Display for Renewal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => f.write_str("it has none yet"),
            Self::Expiring { days_left } if *days_left < 0 => f.write_str("it expired"),
            Self::Expiring { days_left } => write!(f, "it expires in {days_left} days"),
            Self::NamesChanged => f.write_str("its host names changed"),
            Self::OtherCa => f.write_str("another CA signed it"),
        }
    }
}

/// Whether the certificate an instance has must be replaced, and why.
pub fn renewal_due(
    current: Option<&Issued>,
    wanted_names: &[String],
    ca_sha256: &str,
    now: i64,
) -> Option<Renewal> {
    let Some(c) = current else {
        return Some(Renewal::Missing);
    };
    if c.ca_sha256 != ca_sha256 {
        return Some(Renewal::OtherCa);
    }
    if c.names != wanted_names {
        return Some(Renewal::NamesChanged);
    }
    let days_left = (c.not_after - now).div_euclid(86_400);
    (c.not_after - now < RENEW_WITHIN_DAYS * 86_400).then_some(Renewal::Expiring { days_left })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn issued(not_after: i64) -> Issued {
        Issued {
            names: server_names("db.example", "x.berth.internal"),
            not_after,
            ca_sha256: "ca1".into(),
        }
    }

    #[test]
    fn names_cover_endpoint_loopback_and_internal_once() {
        assert_eq!(
            server_names("127.0.0.1", "i.berth.internal"),
            ["127.0.0.1", "localhost", "::1", "i.berth.internal"]
        );
        assert_eq!(
            server_names("[::1]", "i")[..3],
            ["::1", "localhost", "127.0.0.1"]
        );
        assert_eq!(server_names("DB.example", "i")[0], "DB.example");
        assert_eq!(server_names("", "i").len(), 4);
    }

    #[test]
    fn renews_when_missing_expiring_renamed_or_from_another_ca() {
        let now = 1_000_000_000;
        let names = server_names("db.example", "x.berth.internal");
        assert_eq!(
            renewal_due(None, &names, "ca1", now),
            Some(Renewal::Missing)
        );
        let fresh = issued(now + SERVER_CERT_DAYS * DAY);
        assert_eq!(renewal_due(Some(&fresh), &names, "ca1", now), None);
        let boundary = issued(now + RENEW_WITHIN_DAYS * DAY);
        assert_eq!(renewal_due(Some(&boundary), &names, "ca1", now), None);
        let soon = issued(now + RENEW_WITHIN_DAYS * DAY - 1);
        assert_eq!(
            renewal_due(Some(&soon), &names, "ca1", now),
            Some(Renewal::Expiring { days_left: 29 })
        );
        let expired = issued(now - 1);
        let r = renewal_due(Some(&expired), &names, "ca1", now);
        assert_eq!(r, Some(Renewal::Expiring { days_left: -1 }));
        assert_eq!(r.map(|r| r.to_string()).as_deref(), Some("it expired"));
        let other = server_names("db2.example", "x.berth.internal");
        assert_eq!(
            renewal_due(Some(&fresh), &other, "ca1", now),
            Some(Renewal::NamesChanged)
        );
        assert_eq!(
            renewal_due(Some(&fresh), &names, "ca2", now),
            Some(Renewal::OtherCa)
        );
    }

    #[test]
    fn a_bundle_never_shows_its_key() {
        let b = Bundle {
            cert: "C".into(),
            key: "PRIVATE".into(),
            ca: "A".into(),
        };
        assert!(!format!("{b:?}").contains("PRIVATE"));
    }
}
