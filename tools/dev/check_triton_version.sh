#!/usr/bin/env bash
# Run the Triton kernel tests -- interpreter (TRITON_INTERPRET=1, forward and
# every gradient against the references) and the ahead-of-time sm_90 compile --
# against another triton release, without touching .venv: the release is
# installed into a side folder put first on PYTHONPATH.
#
#   bash tools/dev/check_triton_version.sh 3.6.0            # the GPU box's triton
#   bash tools/dev/check_triton_version.sh 3.6.0 2.2.6      # ... with numpy 2.2.6
#
# triton 3.6's *interpreter* converts scalars with int() on 1-element arrays,
# which numpy >= 2.4 refuses; pass a numpy < 2.4 for the interpreter tests.
# Compiled kernels on a GPU do not go through that code.
set -euo pipefail
VER=${1:?usage: tools/dev/check_triton_version.sh TRITON_VERSION [NUMPY_VERSION]}
NP=${2:-}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=$ROOT/.venv/bin/python
[ -x "$PY" ] || { echo "no $PY: run bash tools/setup_env.sh first" >&2; exit 1; }
DIR=${TMPDIR:-/tmp}/mmvb-triton-$VER${NP:+-numpy-$NP}
PKGS=("triton==$VER")
[ -n "$NP" ] && PKGS+=("numpy==$NP")
[ -d "$DIR/triton" ] || "$PY" -m pip install -q --no-deps --target "$DIR" "${PKGS[@]}"
cd "$ROOT"
PYTHONPATH="$DIR" "$PY" -c 'import triton, numpy; print("triton", triton.__version__, "numpy", numpy.__version__)'
PYTHONPATH="$DIR" "$PY" -m pytest -q tests/ops -k "triton or Triton"
