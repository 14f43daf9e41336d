//! What a user asks for, and the validated spec Berth stores.

use crate::engine::{UnknownEngine, UnknownVersion};
use crate::name::NameError;
use crate::{CpuMillis, EngineKind, EngineVersion, InstanceName, MemoryMib, SizeError, StorageMib};
use serde::{Deserialize, Serialize};

/// The body of `POST /v1/instances`, as sent: every field is text (or a number for
/// `cpus`) so that validation, not deserialisation, explains what is wrong.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// Instance name: lowercase letters, digits and hyphens, starting with a letter.
    #[schema(schema_with = crate::schema::instance_name)]
    pub name: String,
    /// The engine.
    #[schema(schema_with = crate::schema::engine)]
    pub engine: String,
    /// Major version; the engine's newest when absent. A version of another engine
    /// is refused with 422.
    #[serde(default)]
    #[schema(schema_with = crate::schema::optional_version)]
    pub version: Option<String>,
    /// CPU cores, like `0.5`, `2` or `1500m` (a JSON number works too). Default 1.
    #[serde(default)]
    #[schema(schema_with = crate::schema::optional_cpus)]
    pub cpus: Option<Quantity>,
    /// Memory, like `512MiB` or `2GiB`. Default 1GiB.
    #[serde(default)]
    #[schema(schema_with = crate::schema::optional_size)]
    pub memory: Option<String>,
    /// Storage, like `10GiB`. Default 10GiB.
    #[serde(default)]
    #[schema(schema_with = crate::schema::optional_size)]
    pub storage: Option<String>,
    /// Parameter group to attach (same engine and version).
    #[serde(default)]
    #[schema(schema_with = crate::schema::optional_group)]
    pub params: Option<String>,
    /// Host port of the endpoint, fixed for the instance's life (1024–65535); a
    /// free one is picked when absent.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 1024, maximum = 65535)]
    pub port: Option<u16>,
    /// Members: a primary and `members - 1` replicas, each its own container and
    /// volume (1–5). Default 1.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 1, maximum = 5)]
    pub members: Option<u16>,
    /// How many replicas must have a commit before it returns (fewer than
    /// `members`; MariaDB waits for one at most). Default 0: asynchronous.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 0, maximum = 4)]
    pub sync: Option<u8>,
    /// While a synchronous replica is missing: `strict` (the default) makes commits
    /// wait, `available` lets them go on asynchronously.
    #[serde(default)]
    pub sync_mode: Option<crate::member::SyncMode>,
    /// A replica further behind than this many milliseconds gets no new read-only
    /// connections (default 10000).
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 100, maximum = 86400000)]
    pub max_lag_ms: Option<u64>,
    /// `auto` (the default): a replica is promoted when the primary fails;
    /// `manual`: only `berth failover` promotes, a failed primary is restarted in
    /// place.
    #[serde(default)]
    pub failover: Option<crate::member::FailoverMode>,
    /// Asynchronous instances: how far (bytes of the primary's change stream) a
    /// replica may be behind and still be promoted automatically, like `512kB` or
    /// `4MB`. Default 1MiB.
    #[serde(default)]
    #[schema(schema_with = crate::schema::optional_bytes)]
    pub max_failover_lag: Option<String>,
    /// The backup policy to start with (the server's defaults when absent); the same
    /// as `PUT /v1/instances/{name}/backup-policy` afterwards.
    #[serde(default)]
    pub backup_policy: Option<crate::backup::BackupPolicyRequest>,
}

/// A number or its text: `"cpus": 2` and `"cpus": "2"` mean the same.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    /// Given as a JSON number.
    Number(serde_json::Number),
    /// Given as text.
    Text(String),
}

impl Quantity {
    /// The quantity as text, whichever way it was sent. A number within the range
    /// the API document states becomes thousandths (`0.1234` → `123m`), so any number
    /// the document allows parses; others keep their text and are refused by the parser.
    pub fn text(&self) -> String {
        match self {
            Quantity::Number(n) => match n.as_f64() {
                Some(f) if (crate::schema::CPUS_MIN..=crate::schema::CPUS_MAX).contains(&f) => {
                    format!("{:.0}m", f * 1000.0)
                }
                _ => n.to_string(),
            },
            Quantity::Text(s) => s.clone(),
        }
    }
}

/// What the Docker host can give; validation refuses a spec that cannot fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostCapacity {
    /// Cores the host has.
    pub cpus: CpuMillis,
    /// Memory the host has, in MiB.
    pub memory_mib: u64,
    /// Free disk where Docker keeps volumes, in MiB.
    pub disk_free_mib: u64,
}

/// A validated instance spec: what Berth stores and converges towards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceSpec {
    /// The engine.
    pub engine: EngineKind,
    /// Its major version.
    #[schema(value_type = String)]
    pub version: EngineVersion,
    /// CPU limit in thousandths of a core.
    pub cpus: CpuMillis,
    /// Memory limit in MiB.
    pub memory: MemoryMib,
    /// Storage size in MiB.
    pub storage: StorageMib,
}

/// Why a create request was refused. Every message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Bad name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Bad size.
    #[error(transparent)]
    Size(#[from] SizeError),
    /// Unknown engine.
    #[error(transparent)]
    Engine(#[from] UnknownEngine),
    /// Unknown version.
    #[error(transparent)]
    Version(#[from] UnknownVersion),
    /// Bad member count or sync setting.
    #[error(transparent)]
    Members(#[from] crate::member::MemberError),
    /// The request does not fit the host.
    #[error("{what} {asked} is more than this host has ({host}); ask for at most {host}")]
    BeyondHost {
        /// Which resource.
        what: &'static str,
        /// What was asked, formatted.
        asked: String,
        /// What the host has, formatted.
        host: String,
    },
}

/// Default CPU limit: one core.
pub const DEFAULT_CPUS: u32 = 1000;
/// Default memory: 1 GiB.
pub const DEFAULT_MEMORY_MIB: u64 = 1024;
/// Default storage: 10 GiB.
pub const DEFAULT_STORAGE_MIB: u64 = 10 * 1024;

impl CreateRequest {
    /// Validates the request against the engine catalog and the host. Defaults that do
    /// not fit a small host shrink to what it has, rather than fail a request that
    /// asked for nothing in particular.
    pub fn validate(&self, host: &HostCapacity) -> Result<(InstanceName, InstanceSpec), SpecError> {
        let name = InstanceName::try_from(self.name.as_str())?;
        let engine: EngineKind = self.engine.parse()?;
        let version = match &self.version {
            Some(v) => engine.version(v)?,
            None => engine.default_version(),
        };
        let cpus = match &self.cpus {
            Some(q) => q.text().parse::<CpuMillis>()?,
            None => CpuMillis::from_millis(DEFAULT_CPUS.min(host.cpus.millis()))?,
        };
        if cpus > host.cpus {
            return Err(SpecError::BeyondHost {
                what: "cpus",
                asked: cpus.to_string(),
                host: host.cpus.to_string(),
            });
        }
        let memory = match &self.memory {
            Some(m) => m.parse::<MemoryMib>()?,
            None => MemoryMib::from_mib(DEFAULT_MEMORY_MIB.min(host.memory_mib / 2))?,
        };
        if memory.mib() > host.memory_mib {
            return Err(SpecError::BeyondHost {
                what: "memory",
                asked: memory.to_string(),
                host: format!("{}MiB", host.memory_mib),
            });
        }
        let storage = match &self.storage {
            Some(s) => s.parse::<StorageMib>()?,
            None => StorageMib::from_mib(DEFAULT_STORAGE_MIB.min(host.disk_free_mib))?,
        };
        if storage.mib() > host.disk_free_mib {
            return Err(SpecError::BeyondHost {
                what: "storage",
                asked: storage.to_string(),
                host: format!("{}MiB free", host.disk_free_mib),
            });
        }
        Ok((
            name,
            InstanceSpec {
                engine,
                version,
                cpus,
                memory,
                storage,
            },
        ))
    }
}

impl CreateRequest {
    /// The members asked for, checked for the engine.
    pub fn topology(
        &self,
        engine: EngineKind,
    ) -> Result<crate::member::Topology, crate::member::MemberError> {
        let members = self.members.unwrap_or(1);
        let sync = self.sync.unwrap_or(0);
        crate::member::check(engine, members, sync)?;
        let mut t = crate::member::Topology::new(members, sync, self.sync_mode.unwrap_or_default());
        if let Some(ms) = self.max_lag_ms {
            t.max_lag_ms = crate::member::check_max_lag(ms)?;
        }
        t.failover = self.failover.unwrap_or_default();
        if let Some(lag) = &self.max_failover_lag {
            t.max_failover_lag = crate::bytes::parse_max_failover_lag(lag)?;
        }
        Ok(t)
    }
}

/// The body of `POST /v1/instances/{name}/scale`: what changes, each optional.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// How many members the instance has afterwards (1–5): replicas are added or
    /// removed, never the primary.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 1, maximum = 5)]
    pub members: Option<u16>,
    /// How many replicas confirm a commit afterwards.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 0, maximum = 4)]
    pub sync: Option<u8>,
    /// `strict` or `available`.
    #[serde(default)]
    pub sync_mode: Option<crate::member::SyncMode>,
    /// `auto` or `manual`: whether a replica is promoted by itself when the
    /// primary fails.
    #[serde(default)]
    pub failover: Option<crate::member::FailoverMode>,
    /// How far behind (bytes, like `512kB` or `4MB`) a replica of an asynchronous
    /// instance may be and still be promoted automatically.
    #[serde(default)]
    #[schema(schema_with = crate::schema::optional_bytes)]
    pub max_failover_lag: Option<String>,
    /// Also remove the volumes of removed replicas.
    #[serde(default)]
    pub purge: bool,
}

/// A resize, as sent: each field optional, each validated like at creation.
#[derive(Clone, Debug, Default)]
pub struct ResizeRequest {
    /// New CPU limit.
    pub cpus: Option<String>,
    /// New memory limit.
    pub memory: Option<String>,
    /// New storage size.
    pub storage: Option<String>,
}

impl ResizeRequest {
    /// The spec after the resize, validated against the host; fields not given keep
    /// their current values.
    pub fn apply(
        &self,
        current: &InstanceSpec,
        host: &HostCapacity,
    ) -> Result<InstanceSpec, SpecError> {
        let mut next = current.clone();
        if let Some(c) = &self.cpus {
            next.cpus = c.parse()?;
            if next.cpus > host.cpus {
                return Err(SpecError::BeyondHost {
                    what: "cpus",
                    asked: next.cpus.to_string(),
                    host: host.cpus.to_string(),
                });
            }
        }
        if let Some(m) = &self.memory {
            next.memory = m.parse()?;
            if next.memory.mib() > host.memory_mib {
                return Err(SpecError::BeyondHost {
                    what: "memory",
                    asked: next.memory.to_string(),
                    host: format!("{}MiB", host.memory_mib),
                });
            }
        }
        if let Some(s) = &self.storage {
            next.storage = s.parse()?;
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostCapacity {
        HostCapacity {
            cpus: CpuMillis::from_millis(2000).expect("valid"),
            memory_mib: 24 * 1024,
            disk_free_mib: 50 * 1024,
        }
    }

    fn req(name: &str) -> CreateRequest {
        CreateRequest {
            name: name.into(),
            engine: "postgres".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_fill_in() {
        let (name, spec) = req("db1").validate(&host()).expect("valid");
        assert_eq!(name.as_str(), "db1");
        assert_eq!(spec.version.as_str(), "15");
        assert_eq!(spec.cpus.millis(), 1000);
        assert_eq!(spec.memory.mib(), 1024);
        assert_eq!(spec.storage.mib(), 10 * 1024);
    }

    #[test]
    fn cpus_as_number_or_text() {
        let mut r = req("db1");
        r.cpus = Some(serde_json::from_str("0.5").expect("json"));
        assert_eq!(r.validate(&host()).expect("valid").1.cpus.millis(), 500);
        r.cpus = Some(Quantity::Text("1500m".into()));
        assert_eq!(r.validate(&host()).expect("valid").1.cpus.millis(), 1500);
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut r = req("Bad_Name");
        assert!(matches!(r.validate(&host()), Err(SpecError::Name(_))));
        r = req("db1");
        r.engine = "oracle".into();
        assert!(matches!(r.validate(&host()), Err(SpecError::Engine(_))));
        r = req("db1");
        r.version = Some("8".into());
        assert!(matches!(r.validate(&host()), Err(SpecError::Version(_))));
        r = req("db1");
        r.memory = Some("lots".into());
        assert!(matches!(r.validate(&host()), Err(SpecError::Size(_))));
        r = req("db1");
        r.cpus = Some(Quantity::Text("64".into()));
        let err = r.validate(&host()).expect_err("beyond host");
        assert_eq!(
            err.to_string(),
            "cpus 64 is more than this host has (2); ask for at most 2"
        );
        r = req("db1");
        r.memory = Some("100GiB".into());
        assert!(matches!(
            r.validate(&host()),
            Err(SpecError::BeyondHost { what: "memory", .. })
        ));
        r = req("db1");
        r.storage = Some("1TiB".into());
        assert!(matches!(
            r.validate(&host()),
            Err(SpecError::BeyondHost {
                what: "storage",
                ..
            })
        ));
    }

    #[test]
    fn resize_keeps_what_is_not_given_and_checks_the_rest() {
        let (_, spec) = req("db1").validate(&host()).expect("valid");
        let r = ResizeRequest {
            memory: Some("2GiB".into()),
            ..Default::default()
        };
        let next = r.apply(&spec, &host()).expect("valid");
        assert_eq!(next.memory.mib(), 2048);
        assert_eq!(next.cpus, spec.cpus);
        let r = ResizeRequest {
            cpus: Some("8".into()),
            ..Default::default()
        };
        assert!(matches!(
            r.apply(&spec, &host()),
            Err(SpecError::BeyondHost { what: "cpus", .. })
        ));
        let r = ResizeRequest {
            memory: Some("lots".into()),
            ..Default::default()
        };
        assert!(matches!(r.apply(&spec, &host()), Err(SpecError::Size(_))));
    }

    #[test]
    fn failover_mode_and_lag_reach_the_topology() {
        let mut r = req("db1");
        r.members = Some(2);
        let t = r.topology(EngineKind::Postgres).expect("valid");
        assert_eq!(t.failover, crate::member::FailoverMode::Auto);
        assert_eq!(t.max_failover_lag, crate::member::DEFAULT_MAX_FAILOVER_LAG);
        r.failover = Some(crate::member::FailoverMode::Manual);
        r.max_failover_lag = Some("4MB".into());
        let t = r.topology(EngineKind::Postgres).expect("valid");
        assert_eq!(t.failover, crate::member::FailoverMode::Manual);
        assert_eq!(t.max_failover_lag, 4 * 1024 * 1024);
        assert!(!t.failover_paused);
        r.max_failover_lag = Some("0".into());
        let e = r.topology(EngineKind::Postgres).expect_err("zero");
        assert!(e.to_string().contains("--max-failover-lag"), "{e}");
        let body = r#"{"name":"a","engine":"postgres","failover":"sometimes"}"#;
        assert!(serde_json::from_str::<CreateRequest>(body).is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<CreateRequest, _> =
            serde_json::from_str(r#"{"name":"a","engine":"postgres","memroy":"1G"}"#);
        assert!(r.is_err());
    }
}
