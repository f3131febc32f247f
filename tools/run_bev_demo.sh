#!/usr/bin/env bash
# The BEV demo: install what is missing, generate a small nuScenes-format
# multi-camera dataset (v1.0-mini tables and scene names, six cameras) and
# its BEVFormer info files, evaluate the untrained model, train a small
# BEVFormer with a small VMamba on the CPU, and evaluate it with mmdet3d's
# NuScenesMetric (the real nuscenes-devkit): NDS and mAP before and after.
# Idempotent: a second run reuses the venv, pip's wheel cache and the data.
#
#   BEV_DEMO_EPOCHS=32 bash tools/run_bev_demo.sh     # longer schedule
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash tools/setup_env.sh
# shellcheck disable=SC1091
. "${VENV:-$ROOT/.venv}/bin/activate"

CONFIG=configs/demo/bevformer_vmamba-demo_nus-demo.py
WORK=${BEV_DEMO_WORK_DIR:-work_dirs/demo_bevformer}
EPOCHS=${BEV_DEMO_EPOCHS:-16}

mkdir -p "$(dirname "$WORK")"
python tools/make_demo_data.py --out data/demo --nuscenes --frames-per-scene 16 --cam-size 320 180
metric() { grep -o "NuScenes/$1: [0-9.]*" "$2" | tail -1 | awk '{print $2}'; }

echo "[bev-demo] evaluating the model at its initialisation (the baseline)"
python tools/test.py "$CONFIG" --untrained --work-dir "$WORK/untrained" 2>&1 | tee "$WORK.untrained.log"
start=$(date +%s)
python tools/train.py "$CONFIG" --work-dir "$WORK" \
    --cfg-options train_cfg.max_epochs="$EPOCHS" train_cfg.val_interval="$EPOCHS" \
    default_hooks.checkpoint.interval="$EPOCHS"
trained=$(date +%s)
python tools/test.py "$CONFIG" "$(cat "$WORK/last_checkpoint")" --work-dir "$WORK" 2>&1 \
    | tee "$WORK.trained.log"
echo "[bev-demo] trained $EPOCHS epochs in $((trained - start)) s"
echo "[bev-demo] untrained: NDS $(metric NDS "$WORK.untrained.log")  mAP $(metric mAP "$WORK.untrained.log")"
echo "[bev-demo] trained:   NDS $(metric NDS "$WORK.trained.log")  mAP $(metric mAP "$WORK.trained.log")"
