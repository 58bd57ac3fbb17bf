#!/usr/bin/env bash
# Run the pgTAP suite (tests/sql/*.sql) against a throwaway PostgreSQL 15 cluster.
#
#   bash scripts/run-pgtap.sh                        # all files in tests/sql/
#   bash scripts/run-pgtap.sh tests/sql/02_*.sql     # some files
#   PG_PROVE_ARGS=--verbose bash scripts/run-pgtap.sh
#
# The extension must be installed first (`make install`). The cluster lives in a fresh
# /tmp directory and is stopped and removed on exit. Exits with pg_prove's status.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON=/usr/bin/python3
DBNAME="${PGTAP_DB:-pgagent_tap}"

if [ "$#" -gt 0 ]; then
    TESTS=("$@")
else
    cd "$ROOT"   # so pg_prove reports tests/sql/NN_name.sql
    shopt -s nullglob
    TESTS=(tests/sql/*.sql)
    shopt -u nullglob
fi
if [ "${#TESTS[@]}" -eq 0 ]; then
    echo "run-pgtap: no test files found in $ROOT/tests/sql" >&2
    exit 1
fi
command -v pg_prove >/dev/null || { echo "run-pgtap: pg_prove not found (apt-get install libtap-parser-sourcehandler-pgtap-perl)" >&2; exit 1; }

CLUSTER_DIR="$(mktemp -d /tmp/pgagent-pgtap-XXXXXX)"
cleanup() {
    local rc=$?
    if ! "$PYTHON" "$ROOT/scripts/pgcluster.py" stop --dir "$CLUSTER_DIR" >/dev/null 2>&1; then
        echo "run-pgtap: could not stop the cluster in $CLUSTER_DIR cleanly" >&2
    fi
    rm -rf -- "$CLUSTER_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! vars="$("$PYTHON" "$ROOT/scripts/pgcluster.py" start --dir "$CLUSTER_DIR")"; then
    echo "run-pgtap: could not start a cluster" >&2
    exit 1
fi
eval "$vars"   # PGHOST PGPORT PGUSER PGDATABASE PGCLUSTER_DIR PGCLUSTER_LOG
export PGHOST PGPORT PGUSER

psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE \"$DBNAME\""
if ! psql -X -q -v ON_ERROR_STOP=1 -d "$DBNAME" \
        -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION pgagent CASCADE'; then
    echo "run-pgtap: CREATE EXTENSION failed (did you run 'make install'?)" >&2
    exit 1
fi

set +e
# shellcheck disable=SC2086  # PG_PROVE_ARGS is a list of options
pg_prove --host "$PGHOST" --port "$PGPORT" --username "$PGUSER" --dbname "$DBNAME" \
    ${PG_PROVE_ARGS:-} "${TESTS[@]}"
status=$?
set -e
if [ "$status" -ne 0 ] && [ -n "${PGCLUSTER_LOG:-}" ] && [ -f "$PGCLUSTER_LOG" ]; then
    echo "--- server log tail ($PGCLUSTER_LOG) ---" >&2
    tail -n 30 "$PGCLUSTER_LOG" >&2 || true
fi
exit "$status"
