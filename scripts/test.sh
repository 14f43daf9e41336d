#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, end-to-end suites against the
# real Docker engine and both engines, and the provisioning, switchover and failover benchmarks
# (figures only; the switchover and failover benchmarks fail only if an acknowledged
# commit is lost).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/prereqs.sh

# Expensive things are cached outside the checkout, keyed by their inputs: Cargo's
# build directory (Cargo tracks its own inputs) and, inside Berth, the Debian root
# file system and the Docker image (keyed by a hash of the image recipe).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/berth/target}"
export CARGO_TERM_COLOR=never

# The suite must leave a user's CLI configuration (from ./scripts/start.sh, say)
# exactly as it was: every test installation has its own.
user_cli_config="${XDG_CONFIG_HOME:-$HOME/.config}/berth/config.json"
cli_config_before="$(sha256sum "$user_cli_config" 2>/dev/null || echo absent)"
check_cli_config() {
  if [ "$(sha256sum "$user_cli_config" 2>/dev/null || echo absent)" != "$cli_config_before" ]; then
    echo "error: the test suite changed $user_cli_config" >&2
    exit 1
  fi
}

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy -q --all-targets -- -D warnings

echo "== build"
cargo build -q -p berth
berth="$CARGO_TARGET_DIR/debug/berth"

echo "== engine images (built once from Debian packages, then cached)"
"$berth" image build postgres
"$berth" image build mariadb

echo "== unit and end-to-end tests"
# Three at a time on two cores: the end-to-end tests mostly wait (on engines,
# Docker, timers), and each runs its own installation with its own names and ports.
RUST_TEST_THREADS="${RUST_TEST_THREADS:-3}" cargo test -q --workspace --no-fail-fast

check_cli_config

echo "== API contract: Schemathesis against /v1/openapi.json (a throwaway berth serve)"
./scripts/api-contract.sh "$berth"

echo "== provisioning benchmark (release build; figures in target/bench/provision.json, not asserted)"
cargo build -q --release -p berth
BERTH_BIN="$CARGO_TARGET_DIR/release/berth" BERTH_BENCH_N="${BERTH_BENCH_N:-3}" \
  cargo bench -q -p berth-e2e --bench provision

echo "== switchover benchmark (figures in target/bench/switchover.json; fails only if an acknowledged commit is lost)"
BERTH_BIN="$CARGO_TARGET_DIR/release/berth" BERTH_BENCH_SWITCHOVERS="${BERTH_BENCH_SWITCHOVERS:-10}" \
  cargo bench -q -p berth-e2e --bench switchover

echo "== failover benchmark (figures in target/bench/failover.json; fails only if an acknowledged commit is lost)"
# Both lease stores: the embedded one, and etcd (the members elect).
BERTH_BIN="$CARGO_TARGET_DIR/release/berth" BERTH_BENCH_FAILOVERS="${BERTH_BENCH_FAILOVERS:-10}" \
  BERTH_BENCH_LEASE_STORES="${BERTH_BENCH_LEASE_STORES:-embedded,etcd}" \
  cargo bench -q -p berth-e2e --bench failover
check_cli_config
