#!/usr/bin/env bash
# The test job: same install step as the demo, then the whole test suite.
#   bash tools/run_tests.sh [extra pytest args]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash tools/setup_env.sh
# shellcheck disable=SC1091
. "${VENV:-$ROOT/.venv}/bin/activate"
exec python -m pytest tests -q -p no:cacheprovider "$@"
