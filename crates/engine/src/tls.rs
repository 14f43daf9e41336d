//! TLS on the engines' side: where the agent installs the member's certificate, and
//! the client configuration the control plane verifies engines with.
//!
//! Invariant: connections from outside the container use TLS; only the local socket
//! (the agent's) may be plaintext. Without certificate files the engines refuse every
//! network connection rather than fall back to plaintext.

use crate::{EngineError, Layout, Result};
use berth_model::EngineKind;
use std::path::PathBuf;
use std::sync::Arc;

/// The server certificate's file name in [`Layout::tls_dir`].
pub const TLS_CERT: &str = "server.crt";
/// The server key's file name in [`Layout::tls_dir`] (0600, the engine's user).
pub const TLS_KEY: &str = "server.key";
/// The CA certificate's file name in [`Layout::tls_dir`].
pub const TLS_CA: &str = "ca.crt";

impl Layout {
    /// Where the agent installs the certificate, key and CA for the engine (in the
    /// runtime directory: owned by the engine's user, rewritten at every start).
    pub fn tls_dir(&self) -> PathBuf {
        self.run_dir.join("tls")
    }

    /// A file in [`Layout::tls_dir`], as a string for configuration files.
    pub(crate) fn tls_file(&self, name: &str) -> String {
        self.tls_dir().join(name).display().to_string()
    }

    /// Whether the agent installed a certificate and key.
    pub(crate) fn tls_installed(&self) -> bool {
        let dir = self.tls_dir();
        dir.join(TLS_CERT).is_file() && dir.join(TLS_KEY).is_file()
    }
}

/// Makes ring rustls' process-wide crypto provider (for libraries that build their
/// own client configuration, like mysql_async). Call once at start; later calls and
/// a provider already chosen are fine.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A rustls client configuration that trusts only `ca_pem` (ring provider, TLS 1.2+).
pub(crate) fn client_config(engine: EngineKind, ca_pem: &str) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let bad = |reason: String| EngineError::NotReady { engine, reason };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| bad(format!("the CA certificate is unreadable: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("the CA certificate is unusable: {e}")))?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// A command as one shell line: environment assignments, then the program and its
/// arguments, each quoted for POSIX shells. The line holds secrets of the
/// environment: show it only where the password is shown anyway.
pub fn shell_line(spec: &crate::CommandSpec) -> String {
    fn quote(s: &str) -> String {
        if !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+".contains(&b))
        {
            s.to_owned()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    }
    spec.env
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .chain(std::iter::once(quote(&spec.program)))
        .chain(spec.args.iter().map(|a| quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_lines_quote_what_the_shell_would_split() {
        let spec = crate::CommandSpec {
            program: "psql".into(),
            args: vec!["-h".into(), "db host".into(), "it's".into()],
            env: vec![("PGPASSWORD".into(), "a b$c".into())],
            stdin: None,
        };
        assert_eq!(
            shell_line(&spec),
            r"PGPASSWORD='a b$c' psql -h 'db host' 'it'\''s'"
        );
    }

    #[test]
    fn a_ca_that_is_not_pem_is_refused() {
        assert!(client_config(EngineKind::Postgres, "").is_ok_and(|c| c.alpn_protocols.is_empty()));
        let garbage = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
        assert!(client_config(EngineKind::Postgres, garbage).is_err());
    }
}
