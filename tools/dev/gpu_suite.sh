#!/usr/bin/env bash
# Entry of the prepared GPU run on the device machine (its python3 has torch
# and triton; mmengine and its small requirements come as carried wheels):
#
#   bash tools/dev/gpu_wheels.sh                    # here, once: fills .whl/
#   device run, carry ['.whl'], timeout_s 600:
#       bash tools/dev/gpu_suite.sh "$OUT" 480 [gpu_suite.py options]
#
# Results: $OUT/summary.md, $OUT/results.json, $OUT/suite.log (three files:
# the device returns at most eight).  See tools/dev/gpu_suite.py.
set -uo pipefail
OUT=${1:?usage: tools/dev/gpu_suite.sh OUT [BUDGET_S] [gpu_suite.py options]}
BUDGET=${2:-480}
shift $(( $# < 2 ? $# : 2 ))
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
if compgen -G '.whl/*.whl' >/dev/null; then
    SITE=${TMPDIR:-/tmp}/mmvb-site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl || { echo "gpu_suite.sh: installing .whl/ failed" >&2; exit 2; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c 'import torch, mmengine' || {
    echo "gpu_suite.sh: torch and mmengine must import; run tools/dev/gpu_wheels.sh and carry .whl" >&2
    exit 2; }
export PYTHONUNBUFFERED=1
exec "$PY" tools/dev/gpu_suite.py --out "$OUT" --budget-s "$BUDGET" "$@"
