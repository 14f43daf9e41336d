//! End-to-end suites: the real `berth` binary, the real Docker engine, real
//! PostgreSQL. One test binary so the suites run in parallel, each with its own
//! installation (see `berth_e2e::Berth`).

/// reqwest is built with TLS but without a crypto provider of its own (the control
/// plane's S3 client needs it so), and features are shared across the workspace:
/// every process that builds an HTTP client installs the one Berth uses first.
#[ctor::ctor]
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

mod accounts;
mod alarms;
mod backup_alarms;
mod backups;
mod backups_crash;
mod backups_delete;
mod backups_s3;
mod backups_schedule;
mod backups_verify;
mod bad_input;
mod bootstrap;
mod cli_config;
mod endpoint;
mod events;
mod failover;
mod failover_control;
mod faults;
mod lifecycle;
mod many;
mod members;
mod members_load;
mod members_stale;
mod metrics;
mod monitor;
mod params;
mod repair;
mod replication_metrics;
mod resize;
mod resume;
mod role;
mod setup;
mod sites;
mod tasks;
mod tls;
