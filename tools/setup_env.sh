#!/usr/bin/env bash
# Idempotent environment setup for mmvisbackbones.
#
# Creates (or reuses) a virtual environment and installs exactly what the
# plugin, its demo and its tests need.  Safe to run any number of times: a
# second run finds everything installed and only re-links the package.
#
#   VENV=/path/to/venv   where the venv lives        (default: <repo>/.venv)
#   PYTHON=python3.11    interpreter used to create it (default: python3)
#
# torch is installed only when absent.  If the base interpreter already has a
# torch (e.g. a CUDA build on a GPU machine) the venv is created with
# --system-site-packages so that torch is reused.  Otherwise the CPU wheel
# torch==2.13.0 is installed -- never a bare `torch`, which would pull
# several GB of CUDA packages.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

log() { printf '[setup_env] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
    if "$PYTHON" -c 'import torch' >/dev/null 2>&1; then
        log "base interpreter has torch: creating $VENV with --system-site-packages"
        "$PYTHON" -m venv --system-site-packages "$VENV"
    else
        log "creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1

pip_q() { python -m pip install --progress-bar off -q "$@"; }

if ! python -c 'import torch' >/dev/null 2>&1; then
    log "installing $TORCH_SPEC"
    pip_q "$TORCH_SPEC"
fi

# mmcv 2.1.0 ships no wheel for this torch: build it from source with its
# compiled ops (RoIAlign, NMS, deformable attention).  Its setup.py imports
# pkg_resources, hence setuptools<70.  pip caches the built wheel, so later
# installs (fresh venvs included) take seconds instead of ~11 minutes.
if ! python -c 'import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != "2.1.0")' >/dev/null 2>&1; then
    log "installing mmcv 2.1.0 with ops (first build from source takes ~11 min on 2 cores)"
    pip_q "setuptools<70" wheel ninja
    MMCV_WITH_OPS=1 python -m pip install --progress-bar off -q --no-build-isolation "mmcv==2.1.0"
fi
# The build's old setuptools must not stay behind: torch 2.13 requires
# setuptools>=77.0.3, and mmengine and mim import pkg_resources at run time,
# which setuptools 81 drops.  Checked on every run, so an older venv is mended.
if ! python - >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
major = int(version('setuptools').split('.')[0])
sys.exit(0 if 77 <= major < 81 else 1)
PY
then
    log "setting setuptools to >=77.0.3,<81 (after the mmcv build)"
    pip_q "setuptools>=77.0.3,<81"
fi

pip_q "mmengine==0.10.7" "mmdet==3.3.0" "mmsegmentation==1.2.2" \
      pycocotools ftfy regex triton pytest onnx onnxruntime
# The BEV detector (mmvisbackbones.detectors.bevformer) needs mmdet3d 1.4.0
# and nuscenes-devkit 1.2.0. Both are installed without their declared
# dependencies, on purpose:
#  - mmdet3d's metadata asks for open3d and tensorboard (neither is used by
#    the camera path; open3d is only try-imported) and its mim extra for
#    mmdet<3.3, while its own import check accepts mmdet <3.4;
#  - nuscenes-devkit 1.2.0 pins numpy<2, yet its detection evaluation runs on
#    numpy 2 (tested here through mmdet3d's NuScenesMetric), and pip would
#    otherwise downgrade numpy under torch and mmcv;
#  - mmdet3d.evaluation imports lyft_dataset_sdk at import time, whose
#    metadata pulls black/flake8/pytest/plotly for nothing.
# What their code imports is listed explicitly instead.
pip_q --no-deps "mmdet3d==1.4.0" "nuscenes-devkit==1.2.0" "lyft_dataset_sdk==0.0.8"
pip_q pyquaternion "shapely~=2.0.3" cachetools descartes fire matplotlib scikit-learn \
      scipy tqdm pandas numba trimesh scikit-image plyfile networkx
# mim (`mim train mmvisbackbones CONFIG` from an installed package) without
# its dependencies: openmim 0.3.9 asks for opendatalab -> openxlab, which pins
# setuptools 60, requests 2.28 and rich 13.4 and is only used by `mim download`
# of OpenDataLab datasets.  What mim's train / test / list / search import:
pip_q --no-deps "openmim==0.3.9" "model-index==0.1.11"
pip_q click colorama tabulate requests ordered-set markdown pyyaml rich pandas
# pip check: expected lines start
# openmim 0.3.9 requires opendatalab, which is not installed.
# lyft-dataset-sdk 0.0.8 requires black, which is not installed.
# lyft-dataset-sdk 0.0.8 requires flake8, which is not installed.
# lyft-dataset-sdk 0.0.8 requires plotly, which is not installed.
# nuscenes-devkit 1.2.0 requires opencv-python-headless, which is not installed.
# nuscenes-devkit 1.2.0 requires parameterized, which is not installed.
# mmdet3d 1.4.0 requires open3d, which is not installed.
# mmdet3d 1.4.0 requires tensorboard, which is not installed.
# nuscenes-devkit 1.2.0 has requirement numpy<2.0.0,>=1.22.0, but you have numpy 2.*.
# pip check: expected lines end
# Those are the --no-deps installs above, on purpose (opencv: mmcv brings
# opencv-python, which provides the same cv2); `pip check` reports nothing
# else (tests/test_packaging.py).
# the plugin itself, editable, without touching the pinned stack
pip_q --no-build-isolation --no-deps -e "$ROOT"
python - <<'PY'
import torch, mmcv, mmengine, mmdet, mmseg, mmdet3d, nuscenes, mmvisbackbones
import mmdet3d.evaluation.metrics  # noqa: F401  (imports lyft_dataset_sdk, pandas, numba)
print(f"[setup_env] torch {torch.__version__}, mmcv {mmcv.__version__}, "
      f"mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, "
      f"mmseg {mmseg.__version__}, mmdet3d {mmdet3d.__version__}, "
      f"nuscenes-devkit {nuscenes.__version__ if hasattr(nuscenes, '__version__') else '1.2.0'}, "
      f"mmvisbackbones {mmvisbackbones.__version__}")
PY
