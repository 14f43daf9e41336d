//! Berth's domain model: the values every other crate speaks in.
//!
//! Architecture invariant: this crate does no I/O. It depends on no async runtime,
//! no Docker client and no SQL driver, so everything here is unit-tested in memory.

pub mod account;
pub mod agent;
pub mod backup;
pub mod bytes;
pub mod endpoint;
pub mod engine;
pub mod event;
pub mod failover;
pub mod ids;
pub mod labels;
pub mod member;
pub mod metrics;
pub mod name;
pub mod params;
pub mod record;
pub mod schema;
pub mod secret;
pub mod size;
pub mod spec;
pub mod status;
pub mod task;
pub mod tls;
pub mod verify;
pub mod whole;

pub use engine::{EngineKind, EngineVersion};
pub use event::{Event, EventKind, NewEvent};
pub use ids::{InstanceId, MemberId, ProjectId, SiteId, TaskId};
pub use name::InstanceName;
pub use record::{InstanceRecord, ParamGroup, TaskRecord};
pub use secret::Secret;
pub use size::{CpuMillis, MemoryMib, SizeError, StorageMib};
pub use spec::{CreateRequest, HostCapacity, InstanceSpec, SpecError};
pub use status::{InstanceEvent, InstanceStatus, InvalidTransition};
pub use task::{StepName, StepState, StepStatus, TaskKind, TaskOptions, TaskState};
