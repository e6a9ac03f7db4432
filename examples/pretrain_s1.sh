#!/usr/bin/env bash
# Real-SAR pre-training recipe (issue #15 item 3): DI3CL ResNet-18 on all 100 Sentinel-1 IW GRD VH scenes of
# ../shared/data/s1-vh-scenes (1024² px, 10 m, uint8 quick-looks), on a 2-core CPU in <= 90 min.
#
#   bash examples/pretrain_s1.sh [SCENES_DIR] [WORK_DIR]      # defaults: ../shared/data/s1-vh-scenes runs/s1
#
# Step 1 cuts every scene into 16 georeferenced 256² tiles (1,600 tiles; di3cl_hf.demo.tile_scenes, rasterio
# windows). Step 2 pre-trains on them: 128-px views, batch 32, queue 4096, 2,400 updates (48 epochs), one
# channel (VH), one torch thread (fastest on a small shared CPU), bf16 autocast where the CPU runs it natively
# (AVX512_BF16 / AMX), fp32 otherwise. Output: WORK_DIR/r18-s1/encoder (DI3CLModel + image processor with the
# corpus image_mean/image_std measured on 2,000 sampled tiles + model card); TensorBoard logs in WORK_DIR/r18-s1.
# STATISTICS_SAMPLES=0 keeps the nominal normalisation, as the recorded run in results/real/pretrain-s1 did.
set -euo pipefail
SCENES=${1:-../shared/data/s1-vh-scenes}
WORK=${2:-runs/s1}
PYTHON=${PYTHON:-python}
STATISTICS_SAMPLES=${STATISTICS_SAMPLES:-2000}

"$PYTHON" -c 'import sys; from di3cl_hf.demo import tile_scenes; print(len(tile_scenes(sys.argv[1], sys.argv[2], 256)), "tiles")' \
  "$SCENES" "$WORK/tiles"

OMP_NUM_THREADS=1 "$PYTHON" examples/pretrain.py \
  --data_dir "$WORK/tiles" --output_dir "$WORK/r18-s1" --backbone resnet18 --num_channels 1 \
  --image_size 128 --queue_size 4096 --per_device_batch_size 32 --max_steps 2400 --learning_rate 0.06 \
  --warmup_steps 100 --momentum 0.99 --num_workers 1 --logging_steps 20 --save_steps 400 \
  --statistics_samples "$STATISTICS_SAMPLES" --disable_tqdm
