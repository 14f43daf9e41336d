#!/usr/bin/env bash
# The API document is the contract: Schemathesis generates requests from
# /v1/openapi.json (valid ones and ones the document forbids) against a throwaway
# `berth serve`, and checks that the server answers each as the document says:
# no 5xx, only documented statuses and content types, bodies matching their schemas,
# forbidden requests refused, allowed ones not refused as malformed (400).
#
# Usage: scripts/api-contract.sh [BERTH_BINARY]   (default: $CARGO_TARGET_DIR/debug/berth)
# For a deeper run by hand: BERTH_CONTRACT_EXAMPLES=500 BERTH_CONTRACT_SECONDS=1800.
# Exits non-zero on a contract failure; the last line is a one-line summary.
set -euo pipefail
cd "$(dirname "$0")/.."
here="scripts/api-contract"
berth="${1:-${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/berth/target}/debug/berth}"
[ -x "$berth" ] || { echo "api-contract: no berth binary at $berth; run cargo build -p berth" >&2; exit 2; }

# Schemathesis in a virtualenv cached outside the checkout, keyed by the pinned
# requirements and the interpreter: a new pin makes a new venv, an unchanged one is
# reused. The stamp is written last, so a broken install is never reused.
req="$here/requirements.txt"
python="$(command -v python3.11 || command -v python3)"
key="$( (cat "$req"; "$python" --version) | sha256sum | cut -c1-16)"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/berth/venv-schemathesis-$key"
if [ ! -f "$venv/.complete" ]; then
  echo "api-contract: installing schemathesis into $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  touch "$venv/.complete"
fi

# A throwaway installation: own data dir, own CLI config (never ~/.config), own port.
tmp="$(mktemp -d -t berth-contract-XXXXXX)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
serve_pid=""
site=""

cleanup() {
  local rc=$?
  if [ -n "$serve_pid" ]; then
    kill "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
  fi
  # Every Docker object this installation made carries its site label. A Docker
  # call serve had in flight can still land after it is stopped, so sweep until a
  # sweep finds nothing (bounded).
  if [ -n "$site" ]; then
    local f="label=io.berth.site=$site" round
    for round in 1 2 3 4 5 6 7 8 9 10; do
      docker ps -aq --filter "$f" | xargs -r docker rm -f >/dev/null 2>&1 || true
      docker network ls -q --filter "$f" | xargs -r docker network rm >/dev/null 2>&1 || true
      docker volume ls -q --filter "$f" | xargs -r docker volume rm -f >/dev/null 2>&1 || true
      sleep 1
      if [ -z "$(docker ps -aq --filter "$f")$(docker network ls -q --filter "$f")$(docker volume ls -q --filter "$f")" ]; then
        break
      fi
      [ "$round" -lt 10 ] || echo "api-contract: Docker objects of site $site are left; remove them with docker ... --filter $f" >&2
    done
  fi
  if [ "$rc" -ne 0 ] && [ -f "$tmp/serve.log" ]; then
    echo "api-contract: last lines of the berth serve log:" >&2
    tail -n 20 "$tmp/serve.log" >&2 || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT INT TERM

BERTH_CONFIG="$tmp/cli.json" BERTH_LOG=info "$berth" serve \
  --listen "127.0.0.1:$port" --data-dir "$tmp/data" --reconcile-interval 2s \
  >/dev/null 2>"$tmp/serve.log" &
serve_pid=$!
for _ in $(seq 1 300); do
  curl -fsS "$url/healthz" >/dev/null 2>&1 && break
  kill -0 "$serve_pid" 2>/dev/null || { echo "api-contract: berth serve exited" >&2; exit 1; }
  sleep 0.2
done
token="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$tmp/cli.json")"
auth="Authorization: Bearer $token"
site="$(curl -fsS -H "$auth" "$url/v1/info" | python3 -c 'import json,sys; print(json.load(sys.stdin)["site"])')"
echo "api-contract: berth serve on $url, site $site"

# Something to find: a small running instance and a parameter group, so that the
# operations pinned to them in schemathesis.toml meet a real engine. Creating the
# instance needs the engine image (scripts/test.sh builds it before this runs).
export BERTH_CONTRACT_INSTANCE=contract-db BERTH_CONTRACT_GROUP=contract-pg
curl -fsS -H "$auth" -H 'content-type: application/json' -o /dev/null "$url/v1/instances" \
  -d "{\"name\":\"$BERTH_CONTRACT_INSTANCE\",\"engine\":\"postgres\",\"cpus\":\"0.5\",\"memory\":\"256MiB\",\"storage\":\"1GiB\"}"
curl -fsS -H "$auth" -H 'content-type: application/json' -o /dev/null "$url/v1/parameter-groups" \
  -d "{\"name\":\"$BERTH_CONTRACT_GROUP\",\"engine\":\"postgres\"}"
instance_status() {
  curl -fsS -H "$auth" "$url/v1/instances/$BERTH_CONTRACT_INSTANCE" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])'
}
for _ in $(seq 1 180); do
  st="$(instance_status)"
  [ "$st" = available ] && break
  [ "$st" = failed ] && { echo "api-contract: the seed instance failed to start; is the postgres image built (berth image build postgres)?" >&2; exit 1; }
  sleep 1
done
[ "$st" = available ] || { echo "api-contract: the seed instance is $st after 180s" >&2; exit 1; }

checks="not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection,positive_data_acceptance"
common=(
  --checks "$checks"
  -H "$auth"
  --phases examples,coverage,fuzzing
  --generation-deterministic
  # One worker: Hypothesis describes its strategies with ast.parse, which in
  # CPython 3.11 fails at random ("AST constructor recursion depth mismatch") when
  # threads run it at once.
  --workers 1
  --request-timeout 60
  --suppress-health-check too_slow,filter_too_much
  --no-color
  # The event stream never ends by design (server-sent events); its query is the
  # one of list_events, which is checked.
  --exclude-operation-id stream_events
)
status=0

# Pass 1, everything but the positive creates (schemathesis.toml restricts create to
# negative cases): bounded examples per operation and a wall-clock limit.
timeout "${BERTH_CONTRACT_SECONDS:-300}" "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" \
  run "$url/v1/openapi.json" "${common[@]}" --max-examples "${BERTH_CONTRACT_EXAMPLES:-40}" || status=$?

# Pass 2, creates that the document allows: each may start a real container on a
# 2-core machine, so only a handful, from random generation only (the coverage phase
# would enumerate boundary values, each a container). Valid creates that exceed the
# host are answered 422, which the contract allows. Same checks, without the
# negative-only restriction and the pinned names of schemathesis.toml.
sed '/^\[\[operations\]\]/,$d' "$here/schemathesis.toml" >"$tmp/creates.toml"
if [ "$status" -eq 0 ]; then
  timeout 180 "$venv/bin/schemathesis" --config-file "$tmp/creates.toml" run "$url/v1/openapi.json" \
    "${common[@]}" --phases fuzzing --mode positive --max-examples 4 \
    --include-operation-id create_instance || status=$?
fi

if [ "$status" -eq 124 ]; then
  echo "api-contract: FAIL: Schemathesis ran out of its time limit"
elif [ "$status" -eq 0 ]; then
  echo "api-contract: PASS: the server answered every generated request as /v1/openapi.json says"
else
  echo "api-contract: FAIL (exit $status): the server and /v1/openapi.json disagree; see the failures above"
fi
exit "$status"
