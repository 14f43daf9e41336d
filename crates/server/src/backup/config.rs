//! Where `berth serve` keeps backups: `--backup-store` and its S3 settings, parsed
//! into plain values, then opened as one `ObjectStore` (local or S3, same calls).

use super::BackupError;
use berth_model::Secret;
use object_store::ObjectStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `--backup-store`: the embedded local directory, or an S3-compatible bucket.
#[derive(Clone, Debug, Default)]
pub enum BackupStoreConfig {
    /// `<data-dir>/backups`.
    #[default]
    Local,
    /// An S3-compatible object store.
    S3(S3Config),
}

/// An S3-compatible store: `s3://bucket/prefix` with its endpoint and credentials.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// The bucket (it must exist).
    pub bucket: String,
    /// Keys are put under this prefix (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// The endpoint URL for a non-AWS server (like `http://127.0.0.1:9000`).
    pub endpoint: Option<String>,
    /// The region (S3-compatible servers mostly ignore it).
    pub region: String,
    /// Address buckets as `endpoint/bucket` rather than `bucket.endpoint`.
    pub path_style: bool,
    /// Credentials (from the usual AWS environment variables or a file). Always
    /// given: without them the S3 client would ask the cloud's instance metadata
    /// service, which is not what a self-hosted store wants.
    pub credentials: S3Credentials,
}

/// An access key pair. The secret prints as `***`.
#[derive(Clone, Debug)]
pub struct S3Credentials {
    /// Access key id (not secret, but not logged either).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token, for temporary credentials.
    pub session_token: Option<Secret>,
}

impl BackupStoreConfig {
    /// Parses `--backup-store`: `local` (or empty) or `s3://bucket[/prefix]`, with
    /// the credentials an S3 store needs (asked for only then). Endpoint, region and
    /// addressing style are the caller's to set.
    pub fn parse_location(
        s: &str,
        credentials: impl FnOnce() -> Result<S3Credentials, String>,
    ) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s == "local" {
            return Ok(Self::Local);
        }
        let Some(rest) = s.strip_prefix("s3://") else {
            return Err(format!(
                "backup store {s:?} is neither `local` nor `s3://BUCKET/PREFIX`"
            ));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
        if !valid_bucket {
            return Err(format!(
                "{bucket:?} is not an S3 bucket name (3 to 63 lower-case letters, digits, `-` and `.`); give --backup-store s3://BUCKET/PREFIX"
            ));
        }
        let credentials = credentials()?;
        Ok(Self::S3(S3Config {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            endpoint: None,
            region: "us-east-1".to_owned(),
            path_style: false,
            credentials,
        }))
    }
}

impl S3Credentials {
    /// From `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Ok(Self {
                access_key_id: id,
                secret_access_key: Secret::new(secret),
                session_token: var("AWS_SESSION_TOKEN").map(Secret::new),
            }),
            _ => Err(
                "an S3 backup store needs credentials: set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, or give --s3-credentials-file"
                    .into(),
            ),
        }
    }

    /// Reads an AWS shared-credentials style file: `aws_access_key_id`,
    /// `aws_secret_access_key` and optionally `aws_session_token`, as `key = value`
    /// lines, from its `[default]` section (or the file's only one). Errors name the
    /// file and the missing key, never a value.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading the S3 credentials file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("the S3 credentials file {}: {e}", path.display()))
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut section: Option<&str> = None;
        let mut sections = 0;
        let (mut id, mut secret, mut token) = (None, None, None);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = Some(name.trim());
                sections += 1;
                continue;
            }
            // Keys before any section, in [default], or in a file with one section.
            if section.is_some_and(|s| s != "default") && sections > 1 {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err("a line is not `key = value`".into());
            };
            let v = v.trim().to_owned();
            match k.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(Secret::new(v)),
                "aws_session_token" => token = Some(Secret::new(v)),
                _ => {}
            }
        }
        Ok(Self {
            access_key_id: id.ok_or("no aws_access_key_id")?,
            secret_access_key: secret.ok_or("no aws_secret_access_key")?,
            session_token: token,
        })
    }
}

/// How long opening a store may take before `serve` gives up on it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Opens the configured store and checks that it answers (S3: the bucket exists
/// and these credentials may list it), so a wrong setting stops `serve` at once.
pub(super) async fn open(
    config: &BackupStoreConfig,
    data_dir: &Path,
) -> Result<Arc<dyn ObjectStore>, BackupError> {
    match config {
        BackupStoreConfig::Local => {
            let dir: PathBuf = data_dir.join("backups");
            std::fs::create_dir_all(&dir).map_err(|source| BackupError::Dir {
                path: dir.clone(),
                source,
            })?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)?
                .with_automatic_cleanup(true);
            Ok(Arc::new(fs))
        }
        BackupStoreConfig::S3(s3) => {
            // HTTPS to the store uses the process's rustls provider (ring).
            berth_engine::install_crypto_provider();
            let store = s3_store(s3)?;
            probe(&*store, s3).await?;
            Ok(store)
        }
    }
}

fn s3_store(s3: &S3Config) -> Result<Arc<dyn ObjectStore>, BackupError> {
    use object_store::aws::AmazonS3Builder;
    let c = &s3.credentials;
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(&s3.bucket)
        .with_region(&s3.region)
        .with_virtual_hosted_style_request(!s3.path_style)
        .with_retry(object_store::RetryConfig {
            max_retries: 4,
            retry_timeout: Duration::from_secs(60),
            ..Default::default()
        });
    if let Some(endpoint) = &s3.endpoint {
        b = b
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    b = b
        .with_access_key_id(&c.access_key_id)
        .with_secret_access_key(c.secret_access_key.expose());
    if let Some(t) = &c.session_token {
        b = b.with_token(t.expose());
    }
    let s3_store = b.build()?;
    Ok(if s3.prefix.is_empty() {
        Arc::new(s3_store)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(
            s3_store,
            s3.prefix.as_str(),
        ))
    })
}

async fn probe(store: &dyn ObjectStore, s3: &S3Config) -> Result<(), BackupError> {
    let place = format!(
        "s3://{}/{} at {}",
        s3.bucket,
        s3.prefix,
        s3.endpoint.as_deref().unwrap_or("AWS")
    );
    match tokio::time::timeout(PROBE_TIMEOUT, store.list_with_delimiter(None)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            let why = super::chain(&e);
            let hint = if why.contains("NoSuchBucket") {
                format!("the bucket {} does not exist; create it first", s3.bucket)
            } else if [
                "SignatureDoesNotMatch",
                "InvalidAccessKeyId",
                "AccessDenied",
                "403",
            ]
            .iter()
            .any(|c| why.contains(c))
            {
                "the store refused these credentials; check AWS_ACCESS_KEY_ID/\
                 AWS_SECRET_ACCESS_KEY or --s3-credentials-file"
                    .to_owned()
            } else {
                "check that the bucket exists, the endpoint (--s3-endpoint) and the \
                 credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or --s3-credentials-file)"
                    .to_owned()
            };
            Err(BackupError::Unusable(format!(
                "the backup store {place} cannot be used: {hint} ({why})"
            )))
        }
        Err(_) => Err(BackupError::Unusable(format!(
            "the backup store {place} did not answer within {}s; check --s3-endpoint",
            PROBE_TIMEOUT.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Result<S3Credentials, String> {
        S3Credentials::parse("aws_access_key_id=A\naws_secret_access_key=B\n")
    }

    #[test]
    fn locations_parse_and_bad_ones_say_what_to_give() {
        let parse = |s| BackupStoreConfig::parse_location(s, creds);
        let no_creds = || -> Result<S3Credentials, String> { Err("no credentials".into()) };
        assert!(matches!(
            BackupStoreConfig::parse_location("local", no_creds),
            Ok(BackupStoreConfig::Local)
        ));
        let Ok(BackupStoreConfig::S3(s3)) = parse("s3://bk-1/a/b/") else {
            panic!("s3 location")
        };
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("bk-1", "a/b"));
        let Ok(BackupStoreConfig::S3(s3)) = parse("s3://bk1") else {
            panic!("s3 location")
        };
        assert_eq!(s3.prefix, "");
        for bad in ["/tmp/x", "s3://", "s3://B", "gs://b/x"] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains("s3://"), "{err}");
        }
        let err = BackupStoreConfig::parse_location("s3://bk1", no_creds).expect_err("creds");
        assert_eq!(err, "no credentials");
    }

    #[test]
    fn credentials_files_read_the_default_section_and_never_show_the_secret() {
        let c = S3Credentials::parse(
            "[other]\naws_access_key_id = nope\n[default]\naws_access_key_id = AK\naws_secret_access_key = s3cr3t\n",
        )
        .expect("parsed");
        assert_eq!(c.access_key_id, "AK");
        assert_eq!(c.secret_access_key.expose(), "s3cr3t");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let c = S3Credentials::parse("aws_access_key_id=A\naws_secret_access_key=B\n")
            .expect("no section");
        assert_eq!(c.access_key_id, "A");
        let err = S3Credentials::parse("aws_access_key_id = A\n").expect_err("no secret");
        assert_eq!(err, "no aws_secret_access_key");
        let err = S3Credentials::parse("aws_secret_access_key s3cr3t\n").expect_err("bad");
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}
