//! End-to-end suites: the real `berth` binary, the real Docker engine, real
//! PostgreSQL. One test binary so the suites run in parallel, each with its own
//! installation (see `berth_e2e::Berth`).

mod accounts;
mod alarms;
mod backups;
mod backups_crash;
mod bad_input;
mod bootstrap;
mod cli_config;
mod events;
mod faults;
mod lifecycle;
mod many;
mod metrics;
mod monitor;
mod params;
mod repair;
mod resize;
mod resume;
mod setup;
mod sites;
mod tls;
