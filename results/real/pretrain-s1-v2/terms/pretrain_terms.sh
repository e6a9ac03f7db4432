#!/usr/bin/env bash
# Which DI3CL term costs transfer? Three 400-update runs beside views/speckle (full DI3CL, same settings):
# MoCo v2 (global InfoNCE only), DI3CL without the dynamic-instance term, DI3CL without contour consistency.
# Run from the repository root; runs/s1/data is made by examples/prepare_s1_corpus.py (see ../README.md).
set -euo pipefail
PYTHON=${PYTHON:-python}
"$PYTHON" - <<'PY'
from di3cl_hf import DI3CLConfig
base = dict(backbone="resnet18", num_channels=1, image_size=128, projection_dim=128, projection_hidden_dim=2048,
            queue_size=2048, momentum=0.99, temperature=0.2, boxes_per_image=10, min_box_size=32)
DI3CLConfig(**base, global_loss_weight=0.8, contour_loss_weight=0.2, instance_loss_weight=0.0).save_pretrained("runs/terms/cfg-noDI")
DI3CLConfig(**base, global_loss_weight=0.8, contour_loss_weight=0.0, instance_loss_weight=5.0).save_pretrained("runs/terms/cfg-noCC")
PY
for n in mocov2 noDI noCC; do
  if [ "$n" = mocov2 ]; then extra="--objective mocov2"; else extra="--config_name runs/terms/cfg-$n"; fi
  OMP_NUM_THREADS=1 "$PYTHON" examples/pretrain.py \
    --data_dir runs/s1/data/corpus --output_dir runs/terms/$n $extra \
    --backbone resnet18 --num_channels 1 --image_size 128 --sample_crop_size 256 --augmentation_preset speckle \
    --queue_size 2048 --per_device_batch_size 32 --max_steps 400 --learning_rate 0.06 --warmup_steps 40 \
    --momentum 0.99 --num_workers 1 --logging_steps 20 --save_steps 200 --save_total_limit 1 \
    --statistics_samples 2000 --monitor_data_dir runs/s1/data/monitor --monitor_steps 100 \
    --dataset_cache_dir runs/s1/hf-cache --disable_tqdm --seed 0 > runs/terms/$n.log 2>&1 &
done
wait
# fine-tuning: OMBRIA after-only, frozen encoder, 10 % labels, seeds 0-2, protocol B
OMP_NUM_THREADS=1 "$PYTHON" examples/evaluate_flood.py --ombria_dir "${OMBRIA:?set OMBRIA=<data>/s1-flood-ombria}" \
  --tasks ombria-after --modes frozen --fractions 0.1 --seeds 0 1 2 --no_classical \
  --init di3cl-400=runs/views/speckle/encoder --init mocov2-400=runs/terms/mocov2/encoder \
  --init di3cl-noDI-400=runs/terms/noDI/encoder --init di3cl-noCC-400=runs/terms/noCC/encoder \
  --max_steps 200 --crop_size 128 --batch_size 8 --learning_rate 5e-4 --decoder_hidden_size 128 \
  --segmentation_loss ce+dice --backbone_learning_rate_scale 0.1 --foreground_crop_probability 0.5 \
  --output_dir runs/flood-v2/terms
