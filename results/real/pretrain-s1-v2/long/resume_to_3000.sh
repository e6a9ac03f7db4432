#!/usr/bin/env bash
# Longer pre-training (issue #24): the two main runs (runs/s1/{di3cl,mocov2}, stopped at update 1,801 of a cosine
# planned over 3,000) resumed to the end of their schedule in copies (runs/long/*: the originals, whose encoders
# the other tables use, are left as they are). Same flags as examples/pretrain_s1.sh with MAX_STEPS=3000, one
# thread each; the final encoders land in runs/long/<objective>/encoder. Run from the repository root.
set -euo pipefail
PYTHON=${PYTHON:-python}
mkdir -p runs/long
for objective in di3cl mocov2; do
  if [ ! -e runs/long/$objective ]; then
    mkdir runs/long/$objective
    cp -r runs/s1/$objective/.di3cl-run runs/s1/$objective/trainer_state.json runs/s1/$objective/best-encoder \
      runs/long/$objective/
    mkdir runs/long/$objective/checkpoints
    cp -r runs/s1/$objective/checkpoints/checkpoint-1801 runs/long/$objective/checkpoints/
  fi
  OMP_NUM_THREADS=1 "$PYTHON" examples/pretrain.py \
    --data_dir runs/s1/data/corpus --output_dir runs/long/$objective --objective $objective \
    --backbone resnet18 --num_channels 1 --image_size 128 --sample_crop_size 256 --augmentation_preset speckle \
    --queue_size 2048 --per_device_batch_size 32 --max_steps 3000 --learning_rate 0.06 --warmup_steps 100 \
    --momentum 0.99 --num_workers 1 --logging_steps 20 --save_steps 200 --save_total_limit 2 \
    --statistics_samples 2000 --monitor_data_dir runs/s1/data/monitor --monitor_steps 200 \
    --dataset_cache_dir runs/s1/hf-cache --disable_tqdm --resume_from_checkpoint latest \
    > runs/long/$objective.log 2>&1 &
done
wait
