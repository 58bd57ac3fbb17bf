#!/usr/bin/env bash
# Runs every test: pytest (pure-Python units, the loop against a scripted LLM, the real local
# model end to end) and the pgTAP suite. Each suite starts its own throwaway cluster.
# Called by `make test` after `make deps`. Prints one closing "N passed, N failed" line.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

echo "== pytest"
.venv/bin/python -m pytest -q -p no:cacheprovider --junitxml="$results/pytest.xml" tests/python
py_rc=$?
[ $py_rc -eq 5 ] && { echo "pytest collected no tests: that is a failure here"; py_rc=1; }

echo "== pgTAP"
bash scripts/run-pgtap.sh 2>&1 | tee "$results/pgtap.txt"
tap_rc=${PIPESTATUS[0]}

read -r py_pass py_fail < <(/usr/bin/python3 - "$results/pytest.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    s = ET.parse(sys.argv[1]).getroot()
    s = s if s.tag == "testsuite" else s.find("testsuite")
    t, f, e, k = (int(s.get(x, 0)) for x in ("tests", "failures", "errors", "skipped"))
    print(t - f - e - k, f + e)
except Exception:
    print(0, 1)
PY
)
tap_total=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' "$results/pgtap.txt" | tail -n1)
tap_failed=$(grep -E '^Failed [0-9]+/[0-9]+ subtests' "$results/pgtap.txt" | awk '{split($2,a,"/"); s+=a[1]} END {print s+0}')
tap_total=${tap_total:-0}
[ "$tap_rc" -ne 0 ] && [ "$tap_failed" -eq 0 ] && tap_failed=1
passed=$((py_pass + tap_total - tap_failed))
failed=$((py_fail + tap_failed))
echo
echo "pytest: rc=$py_rc, pgTAP: rc=$tap_rc"
echo "$passed passed, $failed failed"
[ $py_rc -eq 0 ] && [ $tap_rc -eq 0 ] && [ $failed -eq 0 ]
