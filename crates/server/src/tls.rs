//! Berth's certificate authority and the server certificates it gives instances.
//!
//! On first start the control plane makes a CA in `<data-dir>/ca/` (`ca.key` 0600,
//! `ca.crt` for everyone); later starts load it. Every instance gets a certificate for
//! its endpoint host, the loopback names and its internal name (what the control plane
//! verifies when it connects by address), kept in `<data-dir>/tls/<instance>.json`
//! (0600) and delivered to the member's data volume by the `ensure_tls` step. The
//! decision to renew is pure (`model::tls::renewal_due`); reconcile starts a
//! `reconfigure` task for an instance whose certificate is due, which the engine
//! reloads without a restart.
//!
//! Private keys never reach a log, an error message or a container's environment.

use crate::steps::StepError;
use crate::{Ctx, ServeError};
use berth_model::tls::{self as model_tls, Bundle, Issued};
use berth_model::{InstanceRecord, InstanceStatus, SiteId, TaskKind, TaskOptions};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

/// How long the CA is valid.
const CA_DAYS: i64 = 3650;

/// The CA: its certificate (public) and key (only in memory and in `ca.key`).
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    sha256: String,
    dir: PathBuf,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("sha256", &self.sha256).finish()
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> ServeError {
    move |source| ServeError::Io { what, source }
}

fn tls_err(what: &str, e: rcgen::Error) -> ServeError {
    ServeError::Io {
        what: what.to_owned(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// The CA's subject: the same for a site at every start, so a loaded key signs as
/// the certificate that was written.
fn ca_params(site: SiteId) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Berth");
    dn.push(DnType::CommonName, format!("Berth CA {site}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

impl Ca {
    /// Loads the CA from `<data_dir>/ca`, making it on first start.
    pub fn load_or_create(data_dir: &Path, site: SiteId) -> Result<Self, ServeError> {
        let dir = data_dir.join("ca");
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        let (cert_pem, key) = if key_path.is_file() && cert_path.is_file() {
            let key_pem = std::fs::read_to_string(&key_path)
                .map_err(io(format!("reading {}", key_path.display())))?;
            let key = KeyPair::from_pem(&key_pem)
                .map_err(|e| tls_err(&format!("reading {}", key_path.display()), e))?;
            let cert = std::fs::read_to_string(&cert_path)
                .map_err(io(format!("reading {}", cert_path.display())))?;
            (cert, key)
        } else {
            let key = KeyPair::generate().map_err(|e| tls_err("making the CA key", e))?;
            let mut params = ca_params(site);
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::hours(1);
            params.not_after = now + time::Duration::days(CA_DAYS);
            params.serial_number = Some(random_serial());
            let cert = params
                .self_signed(&key)
                .map_err(|e| tls_err("making the CA certificate", e))?;
            crate::auth::write_private(&key_path, &key.serialize_pem())
                .map_err(io(format!("writing {}", key_path.display())))?;
            write_public(&cert_path, &cert.pem())?;
            info!(path = %cert_path.display(), "created the certificate authority");
            (cert.pem(), key)
        };
        let sha256 = hex::encode(Sha256::digest(cert_pem.as_bytes()));
        Ok(Self {
            cert_pem,
            issuer: Issuer::new(ca_params(site), key),
            sha256,
            dir,
        })
    }

    /// The CA certificate, PEM.
    pub fn certificate(&self) -> &str {
        &self.cert_pem
    }

    /// Where the CA certificate is on this machine.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Issues a server certificate for `names`, valid from now for
    /// [`model_tls::SERVER_CERT_DAYS`].
    pub fn issue(&self, names: &[String], now: i64) -> Result<(Bundle, Issued), String> {
        let fail = |e: rcgen::Error| format!("could not issue a server certificate: {e}");
        let mut params = CertificateParams::new(names.to_vec()).map_err(fail)?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = dn;
        let start = time::OffsetDateTime::from_unix_timestamp(now).map_err(|e| e.to_string())?;
        params.not_before = start - time::Duration::hours(1);
        params.not_after = start + time::Duration::days(model_tls::SERVER_CERT_DAYS);
        params.serial_number = Some(random_serial());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(fail)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(fail)?;
        Ok((
            Bundle {
                cert: cert.pem(),
                key: key.serialize_pem(),
                ca: self.cert_pem.clone(),
            },
            Issued {
                names: names.to_vec(),
                not_after: params.not_after.unix_timestamp(),
                ca_sha256: self.sha256.clone(),
            },
        ))
    }
}

fn write_public(path: &Path, contents: &str) -> Result<(), ServeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).map_err(io(format!("writing {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(io(format!("writing {}", path.display())))
}

/// An instance's certificate as the control plane keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    issued: Issued,
    bundle: Bundle,
}

fn stored_path(ctx: &Ctx, inst: &InstanceRecord) -> PathBuf {
    ctx.config
        .data_dir
        .join("tls")
        .join(format!("{}.json", inst.id))
}

fn load(ctx: &Ctx, inst: &InstanceRecord) -> Option<Stored> {
    let text = std::fs::read_to_string(stored_path(ctx, inst)).ok()?;
    serde_json::from_str(&text).ok()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The names an instance's certificate must carry.
fn wanted_names(ctx: &Ctx, inst: &InstanceRecord) -> Vec<String> {
    model_tls::server_names(
        &ctx.config.endpoint_host,
        &model_tls::internal_name(inst.id),
    )
}

/// Why the instance's certificate must be replaced, if it must.
fn due(ctx: &Ctx, inst: &InstanceRecord) -> Option<model_tls::Renewal> {
    let stored = load(ctx, inst);
    model_tls::renewal_due(
        stored.as_ref().map(|s| &s.issued),
        &wanted_names(ctx, inst),
        &ctx.ca.sha256,
        now(),
    )
}

/// The instance's certificate as kept, issued or renewed first when due; and why it
/// was, if it was.
fn current(
    ctx: &Ctx,
    inst: &InstanceRecord,
) -> Result<(Stored, Option<model_tls::Renewal>), StepError> {
    let names = wanted_names(ctx, inst);
    match (load(ctx, inst), due(ctx, inst)) {
        (Some(s), None) => Ok((s, None)),
        (_, Some(why)) => {
            let (bundle, issued) = ctx.ca.issue(&names, now()).map_err(StepError::Fatal)?;
            let s = Stored { issued, bundle };
            let path = stored_path(ctx, inst);
            let body = serde_json::to_string(&s).unwrap_or_default();
            crate::auth::write_private(&path, &body).map_err(|e| {
                StepError::Retry(format!(
                    "could not keep the certificate in {}: {e}",
                    path.display()
                ))
            })?;
            Ok((s, Some(why)))
        }
        (None, None) => Err(StepError::Fatal("no certificate and none due".into())),
    }
}

/// Puts the bundle on the member's volume and, when it runs, has its engine use it.
/// Whether a running engine reloaded a changed certificate.
async fn install(
    ctx: &Ctx,
    inst: &InstanceRecord,
    member: berth_model::MemberId,
    stored: &Stored,
) -> Result<bool, StepError> {
    let key = crate::members::key(inst, member);
    let body = serde_json::to_vec(&stored.bundle).unwrap_or_default();
    ctx.runtime
        .put_file(
            key,
            berth_model::agent::DATA_DIR,
            model_tls::BUNDLE_FILE,
            &body,
        )
        .await?;
    let ip = ctx
        .runtime
        .inspect_member(key)
        .await?
        .filter(|o| o.running)
        .and_then(|o| o.ip);
    match ip {
        Some(ip) => reload(ctx, inst, ip).await.map_err(StepError::Retry),
        None => Ok(false),
    }
}

/// One member (a new replica) gets the instance's certificate before it starts.
pub(crate) async fn ensure_member_tls(
    ctx: &Ctx,
    inst: &InstanceRecord,
    member: berth_model::MemberId,
) -> Result<(), StepError> {
    let (stored, _) = current(ctx, inst)?;
    install(ctx, inst, member, &stored).await.map(|_| ())
}

/// Step `ensure_tls`: every member's volume holds a valid certificate (issued or
/// renewed when due) and running engines use it.
pub(crate) async fn ensure_tls(ctx: &Ctx, inst: &InstanceRecord) -> Result<String, StepError> {
    let (stored, why) = current(ctx, inst)?;
    let mut reloaded = false;
    for m in &inst.topology.members {
        // Members without a container yet (replicas a create makes later) get it
        // when they are made.
        if ctx
            .runtime
            .find_member(crate::members::key(inst, *m))
            .await?
            .is_none()
        {
            continue;
        }
        reloaded |= install(ctx, inst, *m, &stored).await?;
    }
    let live = if reloaded {
        "; the engine reloaded it without a restart"
    } else {
        ""
    };
    let until = time::OffsetDateTime::from_unix_timestamp(stored.issued.not_after)
        .map(|t| t.date().to_string())
        .unwrap_or_default();
    // A create's first certificate is part of "instance created"; a later one is news.
    if let (Some(why), false) = (&why, inst.status == InstanceStatus::Creating) {
        let event = berth_model::NewEvent::instance(
            inst.id,
            inst.name.as_str(),
            berth_model::EventKind::CertificateRenewed,
            format!("server certificate renewed ({why}), valid until {until}"),
            serde_json::json!({ "names": stored.issued.names, "not_after": until, "reason": why.to_string() }),
        );
        ctx.store.record_event(&event).await?;
    }
    Ok(match why {
        Some(why) => format!(
            "issued a server certificate for {} valid until {until} ({why}){live}",
            stored.issued.names.join(", ")
        ),
        None => format!("the member's server certificate is valid until {until}{live}"),
    })
}

/// Asks the member's agent to install the bundle and, when it changed, make the
/// running engine use it. Whether it changed.
async fn reload(ctx: &Ctx, inst: &InstanceRecord, ip: std::net::IpAddr) -> Result<bool, String> {
    #[derive(serde::Deserialize)]
    struct Installed {
        changed: bool,
    }
    let url = format!(
        "http://{}/tls",
        std::net::SocketAddr::new(ip, berth_model::agent::AGENT_PORT)
    );
    let resp = ctx
        .http
        .post(url)
        .bearer_auth(inst.agent_token.expose())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("agent does not answer: {}", e.without_url()))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(format!(
            "agent could not install the certificate ({status}): {text}"
        ));
    }
    resp.json::<Installed>()
        .await
        .map(|i| i.changed)
        .map_err(|e| format!("agent sent an unreadable answer: {}", e.without_url()))
}

/// Drops the instance's kept certificate (its instance is gone).
pub(crate) fn forget(ctx: &Ctx, inst: &InstanceRecord) {
    let _ = std::fs::remove_file(stored_path(ctx, inst));
}

/// Starts a `reconfigure` task for every available instance whose certificate is due
/// (nearing its end, or its names changed): the user sees the renewal as a task.
pub(crate) async fn renew_due(ctx: &Ctx) {
    let Ok(instances) = ctx.store.list_instances(None).await else {
        return;
    };
    for inst in instances
        .iter()
        .filter(|i| i.status == InstanceStatus::Available)
    {
        let Some(why) = due(ctx, inst) else { continue };
        match crate::tasks::begin(ctx, inst, TaskKind::Reconfigure, TaskOptions::default()).await {
            Ok((_, task)) => {
                info!(instance = %inst.name, task = %task.id, "renewing the server certificate: {why}")
            }
            Err(e) => warn!(instance = %inst.name, "not renewing the certificate now: {e}"),
        }
    }
}

/// How often [`renew_due`] looks.
pub(crate) const RENEW_CHECK: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_key_private_and_signs_after_a_reload() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("berth-ca-test-{}", rand::random::<u64>()));
        let site = SiteId::new_random();
        let ca = Ca::load_or_create(&dir, site).expect("create");
        let mode = std::fs::metadata(dir.join("ca/ca.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Ca::load_or_create(&dir, site).expect("load");
        assert_eq!(ca.certificate(), again.certificate());
        let names = model_tls::server_names("db.example", "x.berth.internal");
        let (bundle, issued) = again.issue(&names, now()).expect("issue");
        assert!(bundle.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(bundle.key.contains("PRIVATE KEY"));
        assert_eq!(issued.ca_sha256, ca.sha256);
        assert_eq!(
            model_tls::renewal_due(Some(&issued), &names, &ca.sha256, now()),
            None
        );
        assert!(!format!("{again:?}").contains("PRIVATE"));

        // A client trusting the first CA accepts the certificate the reloaded CA
        // issued, for each of its names, and rejects a name it does not carry.
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.certificate().as_bytes()).expect("ca"))
            .expect("root");
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let leaf = CertificateDer::from_pem_slice(bundle.cert.as_bytes()).expect("leaf");
        let check = |name: &str| {
            verifier.verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from(name.to_owned()).expect("name"),
                &[],
                UnixTime::now(),
            )
        };
        for name in &names {
            assert!(check(name).is_ok(), "{name}: {:?}", check(name));
        }
        let wrong = check("elsewhere.example").expect_err("a name it does not carry");
        assert!(wrong.to_string().contains("not valid for name"), "{wrong}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
