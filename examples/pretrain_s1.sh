#!/usr/bin/env bash
# Real-Sentinel-1 pre-training recipe (issue #24): a one-channel ResNet-18 on every real S1 image available for
# pre-training, on a 2-core CPU in <= 90 min.
#
#   bash examples/pretrain_s1.sh SCENES_DIR ETCI_DIR OMBRIA_DIR WORK_DIR [OBJECTIVE] [extra pretrain.py flags]
#
# OBJECTIVE: di3cl (default) or mocov2 (the ablation baseline: global InfoNCE only, same corpus and budget).
# Step 1 (examples/prepare_s1_corpus.py) builds WORK_DIR/data/corpus (whole 1024² VH scenes, ETCI train-block
# tiles one band per image with nodata 255, OMBRIA train before/after images; no evaluation image) and
# WORK_DIR/data/monitor (ETCI validation blocks, water masks) for the online probe.
# Step 2 pre-trains: random 256² crops of every image (a scene is drawn once per 256² of its area per epoch),
# 128-px views (preset `speckle`: flips, 90° rotations, scale, Gamma speckle, no gain/contrast jitter), batch 32,
# queue 2048 (< the 2,276 distinct images; a query's own image is masked out of its negatives), SGD lr 0.06,
# cosine, key momentum 0.99, one torch thread, bf16 autocast where native. The online linear probe on the
# monitor folder runs every 200 updates; the best encoder by it is WORK_DIR/<objective>/best-encoder.
set -euo pipefail
if [ "$#" -lt 4 ]; then
  sed -n 2,15p "$0"; exit 2
fi
SCENES=$1; ETCI=$2; OMBRIA=$3; WORK=$4; OBJECTIVE=${5:-di3cl}
shift 4; [ "$#" -gt 0 ] && shift
PYTHON=${PYTHON:-python}
MAX_STEPS=${MAX_STEPS:-2800}

"$PYTHON" examples/prepare_s1_corpus.py --scenes "$SCENES" --etci "$ETCI" --ombria "$OMBRIA" --output "$WORK/data"

OMP_NUM_THREADS=1 "$PYTHON" examples/pretrain.py \
  --data_dir "$WORK/data/corpus" --output_dir "$WORK/$OBJECTIVE" --objective "$OBJECTIVE" \
  --backbone resnet18 --num_channels 1 --image_size 128 --sample_crop_size 256 --augmentation_preset speckle \
  --queue_size 2048 --per_device_batch_size 32 --max_steps "$MAX_STEPS" --learning_rate 0.06 --warmup_steps 100 \
  --momentum 0.99 --num_workers 1 --logging_steps 20 --save_steps 200 --save_total_limit 2 \
  --statistics_samples 2000 --monitor_data_dir "$WORK/data/monitor" --monitor_steps 200 \
  --dataset_cache_dir "$WORK/hf-cache" --disable_tqdm "$@"
