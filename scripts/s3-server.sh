#!/usr/bin/env bash
# Installs the S3-compatible server the backup tests run against: `s3s-fs` from
# crates.io, built with its `binary` feature, once per version under the cache
# (a second run finds it and does nothing). Prints the binary's path.
#
# 0.14.1 is the newest release that builds with the toolchain here (0.15 needs
# Rust 1.96). The e2e harness (tests/src/lib.rs) starts one per test.
set -euo pipefail
version="0.14.1"
root="${XDG_CACHE_HOME:-$HOME/.cache}/berth/tools/s3s-fs-$version"
bin="$root/bin/s3s-fs"
if [ ! -x "$bin" ]; then
  echo "installing s3s-fs $version (the local S3 server for backup tests) into $root" >&2
  # Its own target directory: the workspace's is not polluted, and a failed build
  # leaves no half-installed binary behind (cargo install writes the binary last).
  CARGO_TARGET_DIR="$root.build" cargo install -q s3s-fs --version "=$version" \
    --features binary --locked --root "$root"
  rm -rf "$root.build"
fi
echo "$bin"
