#!/usr/bin/env bash
# Starts Berth with embedded defaults: SQLite under ~/.local/share/berth, the local
# Docker engine, images built from Debian packages on first use.
# Extra arguments go to `berth serve` (see `berth serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/prereqs.sh
cargo build --release -q -p berth
exec target/release/berth serve "$@"
