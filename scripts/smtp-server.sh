#!/usr/bin/env bash
# Installs the SMTP server the alarm e2e test mails to: aiosmtpd from PyPI, in a
# virtualenv under the cache keyed by its version and the interpreter (a second
# run finds it and does nothing). Prints the virtualenv's python.
#
# The e2e harness (tests/src/smtp.rs) starts one per test with its Mailbox handler,
# so every message it accepts is a file in a Maildir the test reads.
set -euo pipefail
version="1.4.6"
python="$(command -v python3.11 || command -v python3)"
key="$(printf '%s %s' "$version" "$("$python" --version)" | sha256sum | cut -c1-16)"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/berth/tools/aiosmtpd-$key"
if [ ! -f "$venv/.complete" ]; then
  echo "installing aiosmtpd $version (the local SMTP server for alarm emails) into $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "aiosmtpd==$version" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
