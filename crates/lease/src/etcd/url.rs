//! `etcd://h1:2379,h2:2379` and `http://h:2379`: where the etcd members are.

use crate::{LeaseError, Result};
use std::fmt;

/// etcd's client port, used when an endpoint names none.
pub const DEFAULT_PORT: u16 = 2379;

/// One etcd member's client address (plain HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdEndpoint {
    host: String,
    port: u16,
}

impl EtcdEndpoint {
    /// The gateway's base URL, `http://host:port`.
    pub fn base_url(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for EtcdEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}", self.host, self.port)
    }
}

/// Reads `etcd://host[:port][,host[:port]…]` or `http://` with the same list (the
/// port defaults to 2379; IPv6 hosts in brackets). Refused, each with a message that
/// says what to write: other schemes (TLS to etcd is not supported yet), credentials
/// in the URL (never echoed), paths, queries, empty or malformed hosts and ports.
pub fn parse_etcd_url(url: &str) -> Result<Vec<EtcdEndpoint>> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid(
            "expected etcd://host:port[,host:port…] or http://host:port",
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "etcd" | "http" => {}
        "https" | "etcds" => {
            return Err(invalid(
                "TLS to etcd is not supported yet; use http:// on a trusted network",
            ))
        }
        _ => {
            return Err(invalid(format!(
                "the scheme must be etcd:// or http://, not {scheme:?}"
            )))
        }
    }
    // Checked before anything else is quoted back: what precedes an `@` may be a
    // password.
    if rest.contains('@') {
        return Err(invalid(
            "credentials in the URL are not supported (etcd authentication is not implemented)",
        ));
    }
    // Not quoted back either: a query may carry a token.
    if rest.contains(['/', '?', '#']) {
        return Err(invalid(
            "no path or query may follow the hosts (the key prefix is configured on its own)",
        ));
    }
    rest.split(',').map(endpoint).collect()
}

fn endpoint(part: &str) -> Result<EtcdEndpoint> {
    if part.is_empty() {
        return Err(invalid(
            "an empty host in the list (two commas, or one at an end?)",
        ));
    }
    let (host, port) = if let Some(bracketed) = part.strip_prefix('[') {
        let Some((v6, after)) = bracketed.split_once(']') else {
            return Err(invalid(format!(
                "{part:?}: an IPv6 address needs its closing ]"
            )));
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid(format!("{part:?}: {v6:?} is not an IPv6 address")));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Err(invalid(format!("{part:?}: expected :port after ]"))),
            },
        };
        (format!("[{v6}]"), port)
    } else {
        let (host, port) = match part.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (part, None),
        };
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
        if !valid {
            return Err(invalid(format!(
                "{part:?}: the host must be a name or an address (IPv6 in brackets)"
            )));
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port != 0 && text.chars().all(|c| c.is_ascii_digit()) => port,
            _ => {
                return Err(invalid(format!(
                    "{part:?}: the port must be a number from 1 to 65535"
                )))
            }
        },
    };
    Ok(EtcdEndpoint { host, port })
}

fn invalid(reason: impl Into<String>) -> LeaseError {
    LeaseError::InvalidUrl(reason.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn urls(list: &str) -> Vec<String> {
        match parse_etcd_url(list) {
            Ok(endpoints) => endpoints.iter().map(EtcdEndpoint::base_url).collect(),
            Err(e) => panic!("{list}: {e}"),
        }
    }

    #[test]
    fn lists_and_single_endpoints_are_read() {
        assert_eq!(
            urls("etcd://h1:2379,h2:2380"),
            ["http://h1:2379", "http://h2:2380"]
        );
        assert_eq!(urls("http://127.0.0.1:2379"), ["http://127.0.0.1:2379"]);
        assert_eq!(urls(" ETCD://Etcd-1 "), ["http://etcd-1:2379"]);
        assert_eq!(
            urls("etcd://[::1]:23790,[fd00::2]"),
            ["http://[::1]:23790", "http://[fd00::2]:2379"]
        );
    }

    #[test]
    fn bad_urls_are_refused_with_what_to_write() {
        for (url, says) in [
            ("", "expected etcd://"),
            ("h1:2379", "expected etcd://"),
            ("https://h1:2379", "TLS to etcd is not supported"),
            ("ftp://h1", "etcd:// or http://"),
            ("etcd://", "an empty host"),
            ("etcd://h1,,h2", "an empty host"),
            ("etcd://h1,", "an empty host"),
            ("etcd://h1:0", "from 1 to 65535"),
            ("etcd://h1:65536", "from 1 to 65535"),
            ("etcd://h1:+80", "from 1 to 65535"),
            ("etcd://h1:", "from 1 to 65535"),
            ("etcd://:2379", "must be a name or an address"),
            ("etcd://h 1:2379", "must be a name or an address"),
            ("etcd://::1:2379", "must be a name or an address"),
            ("etcd://[::1", "closing ]"),
            ("etcd://[::g]:1", "not an IPv6 address"),
            ("etcd://[::1]2379", "expected :port"),
            ("etcd://h1:2379/berth", "no path or query"),
            ("etcd://h1:2379?x=1", "no path or query"),
        ] {
            match parse_etcd_url(url) {
                Err(LeaseError::InvalidUrl(message)) => {
                    assert!(message.contains(says), "{url}: {message}")
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn credentials_are_refused_without_being_repeated() {
        let Err(err) = parse_etcd_url("etcd://root:hunter2@h1:2379/x?token=s3cret") else {
            panic!("accepted");
        };
        let message = format!("{err:?} {err}");
        assert!(message.contains("credentials"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        let Err(err) = parse_etcd_url("etcd://h1:2379/?token=s3cret") else {
            panic!("accepted");
        };
        assert!(!format!("{err:?} {err}").contains("s3cret"), "{err}");
    }

    proptest! {
        #[test]
        fn any_input_is_read_or_refused_without_panic(url in ".{0,40}") {
            let _ = parse_etcd_url(&url);
        }

        #[test]
        fn every_read_endpoint_prints_back_to_itself(
            hosts in prop::collection::vec(("[a-z][a-z0-9-]{0,10}", 1..=65535u16), 1..4)
        ) {
            let list = hosts.iter().map(|(h, p)| format!("{h}:{p}")).collect::<Vec<_>>().join(",");
            let read = parse_etcd_url(&format!("etcd://{list}")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let expected: Vec<String> = hosts.iter().map(|(h, p)| format!("http://{h}:{p}")).collect();
            prop_assert_eq!(read.iter().map(EtcdEndpoint::base_url).collect::<Vec<_>>(), expected);
        }
    }
}
