#!/usr/bin/env bash
# Wheels the device machine lacks (its image has torch, triton, pytest, numpy,
# opencv, matplotlib, pyyaml, rich; see /work/.library/device/KINDS.md), for
# CPython 3.12 x86-64, into .whl/ (ignored by git, carried by the run):
#
#   bash tools/dev/gpu_wheels.sh            # here, once (needs pip's index)
#   device run, carry ['.whl']:  bash tools/dev/gpu_suite.sh "$OUT" 480
#
# mmengine is all that `import mmvisbackbones` needs beyond torch; the rest
# are its pure-Python requirements the image does not have.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
WHEELS=(mmengine==0.10.7 addict==2.4.0 termcolor==3.3.0 yapf==0.43.0 platformdirs==4.14.9)
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_17_x86_64 -d .whl "${WHEELS[@]}"
ls -l .whl
