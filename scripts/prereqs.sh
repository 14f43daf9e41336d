#!/usr/bin/env bash
# Installs what Berth needs on a Debian machine (idempotent; quiet when all is there):
# mmdebstrap builds engine images without a registry, psql backs `berth connect`,
# Python runs the API contract test.
set -euo pipefail

missing=()
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v mariadb >/dev/null || missing+=(mariadb-client)
command -v cc >/dev/null || missing+=(gcc)
# The API contract test (scripts/api-contract.sh): curl, and a Python that can make
# a virtualenv for Schemathesis.
command -v curl >/dev/null || missing+=(curl)
py="$(command -v python3.11 || command -v python3 || true)"
{ [ -n "$py" ] && "$py" -c 'import ensurepip, venv' 2>/dev/null; } || missing+=(python3-venv)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "error: the Docker engine does not answer \`docker info\`; start dockerd (and make its socket readable) first" >&2
  exit 1
fi

# The S3-compatible server the backup tests run against (built once, then cached).
"$(dirname "$0")/s3-server.sh" >/dev/null

# The SMTP server the alarm emails go to (aiosmtpd from PyPI, in a cached venv).
"$(dirname "$0")/smtp-server.sh" >/dev/null

# etcd for the lease tests (Debian's etcd-server; only its binary is used).
"$(dirname "$0")/etcd-server.sh" >/dev/null
