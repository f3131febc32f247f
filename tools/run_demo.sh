#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, generate the demo
# datasets, train a small VMamba Mask R-CNN on the COCO-format demo data on
# the CPU and evaluate it with mmdet's CocoMetric (bbox and segm AP).
# Idempotent: a second run reuses the venv, pip's wheel cache and the data.
#
#   DEMO_EPOCHS=24 bash tools/run_demo.sh     # longer schedule
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash tools/setup_env.sh
# shellcheck disable=SC1091
. "${VENV:-$ROOT/.venv}/bin/activate"

CONFIG=configs/demo/mask-rcnn_vmamba-demo_fpn_coco-demo.py
WORK=${DEMO_WORK_DIR:-work_dirs/demo_maskrcnn}
EPOCHS=${DEMO_EPOCHS:-12}

python tools/make_demo_data.py --out data/demo --num-train 256 --num-val 48
start=$(date +%s)
python tools/train.py "$CONFIG" --work-dir "$WORK" \
    --cfg-options train_cfg.max_epochs="$EPOCHS" train_cfg.val_interval="$EPOCHS" \
    default_hooks.checkpoint.interval="$EPOCHS"
trained=$(date +%s)
python tools/test.py "$CONFIG" "$(cat "$WORK/last_checkpoint")" --work-dir "$WORK"
echo "[demo] trained $EPOCHS epochs in $((trained - start)) s; evaluation above (coco/bbox_mAP, coco/segm_mAP)"
