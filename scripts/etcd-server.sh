#!/usr/bin/env bash
# Installs etcd for the lease tests (crates/lease/tests/etcd.rs) and prints the path
# of the `etcd` binary. Debian's `etcd-server` package (3.4 on bookworm) is installed
# when no `etcd` is on PATH; a second run finds it and does nothing.
#
# Only the binary is wanted: each test starts its own etcd on free loopback ports
# with a temporary data directory. The package's own service is never used; if
# installing it here started one under systemd, it is stopped and disabled again so
# that it holds no port and no data.
set -euo pipefail

find_etcd() {
  command -v etcd 2>/dev/null || { [ -x /usr/bin/etcd ] && echo /usr/bin/etcd; } || true
}

bin="$(find_etcd)"
if [ -z "$bin" ]; then
  echo "installing etcd-server (etcd for the lease tests)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    $sudo systemctl disable --now etcd.service >/dev/null 2>&1 || true
  fi
  bin="$(find_etcd)"
fi
if [ -z "$bin" ]; then
  echo "error: etcd is still not on PATH after installing etcd-server" >&2
  exit 1
fi
echo "$bin"
