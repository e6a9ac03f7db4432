#!/usr/bin/env bash
# Which DI3CL term costs transfer, at full length, and how much do pre-training seeds matter? Runs with the main
# runs' schedule (examples/pretrain_s1.sh: cosine over 3,000 planned updates, warm-up 100), each stopped once its
# checkpoint at update 1,800 is written (like the main runs' last checkpoints, update 1,801), exported as
# runs/full/<name>/encoder-1800 and scored: frozen encoder, 10 % labels, seeds 0-2, protocol B, ETCI and OMBRIA
# after-only. Run names: noDI / noCC (DI3CL without dynamic instances / contour consistency, seed 0) and
# <objective>-seed<k> (di3cl or mocov2 with pre-training seed k). Run from the repository root after
# examples/prepare_s1_corpus.py has made runs/s1/data (see ../README.md); the runs share the CPU, one thread each.
#   ETCI=<data>/s1-flood-etci OMBRIA=<data>/s1-flood-ombria PYTHON=python bash results/real/pretrain-s1-v2/terms/pretrain_terms_full.sh
#   RUNS="di3cl-seed2 mocov2-seed1" OUT=seeds ETCI=... OMBRIA=... bash results/real/pretrain-s1-v2/terms/pretrain_terms_full.sh
set -euo pipefail
PYTHON=${PYTHON:-python}
ETCI=${ETCI:?set ETCI=<data>/s1-flood-etci}; OMBRIA=${OMBRIA:?set OMBRIA=<data>/s1-flood-ombria}
RUNS=${RUNS:-noDI noCC di3cl-seed1}; OUT=${OUT:-terms-full}
"$PYTHON" - <<'PY'
from di3cl_hf import DI3CLConfig
base = dict(backbone="resnet18", num_channels=1, image_size=128, projection_dim=128, projection_hidden_dim=2048,
            queue_size=2048, momentum=0.99, temperature=0.2, boxes_per_image=10, min_box_size=32)
DI3CLConfig(**base, global_loss_weight=0.8, contour_loss_weight=0.2, instance_loss_weight=0.0).save_pretrained("runs/terms/cfg-noDI")
DI3CLConfig(**base, global_loss_weight=0.8, contour_loss_weight=0.0, instance_loss_weight=5.0).save_pretrained("runs/terms/cfg-noCC")
PY
mkdir -p runs/full
INITS=""
for n in $RUNS; do
  case $n in
    noDI|noCC) extra="--config_name runs/terms/cfg-$n --seed 0"; label=di3cl-$n ;;
    *-seed*) extra="--objective ${n%-seed*} --seed ${n##*-seed}"; label=$n ;;
  esac
  INITS="$INITS --init $label-1800=runs/full/$n/encoder-1800"
  OMP_NUM_THREADS=1 "$PYTHON" examples/pretrain.py \
    --data_dir runs/s1/data/corpus --output_dir runs/full/$n $extra \
    --backbone resnet18 --num_channels 1 --image_size 128 --sample_crop_size 256 --augmentation_preset speckle \
    --queue_size 2048 --per_device_batch_size 32 --max_steps 3000 --learning_rate 0.06 --warmup_steps 100 \
    --momentum 0.99 --num_workers 1 --logging_steps 20 --save_steps 200 --save_total_limit 2 \
    --statistics_samples 2000 --monitor_data_dir runs/s1/data/monitor --monitor_steps 200 \
    --dataset_cache_dir runs/s1/hf-cache --disable_tqdm > runs/full/$n.log 2>&1 &
  pid=$!
  # stop it once its checkpoint at update 1,800 is in place (checkpoints are renamed in whole; SIGTERM saves, exits)
  ( until [ -d runs/full/$n/checkpoints/checkpoint-1800 ]; do sleep 20; done; kill -TERM $pid ) &
done
wait
# export the query encoder of each checkpoint-1800 as runs/full/<name>/encoder-1800 (DI3CLForPreTraining.export_encoder)
RUNS="$RUNS" "$PYTHON" - <<'PY'
import os
from safetensors.torch import load_file
from di3cl_hf import DI3CLConfig, DI3CLForPreTraining, DI3CLImageProcessor
for name in os.environ["RUNS"].split():
    run = f"runs/full/{name}"
    model = DI3CLForPreTraining(DI3CLConfig.from_pretrained(f"{run}/best-encoder"))
    model.load_state_dict(load_file(f"{run}/checkpoints/checkpoint-1800/model.safetensors"), strict=True)
    model.export_encoder().save_pretrained(f"{run}/encoder-1800")
    DI3CLImageProcessor.from_pretrained(f"{run}/best-encoder").save_pretrained(f"{run}/encoder-1800")
PY
# fine-tuning: frozen encoder, 10 % labels, seeds 0-2, protocol B, on ETCI and OMBRIA after-only
B="--modes frozen --no_classical --max_steps 200 --crop_size 128 --batch_size 8 --learning_rate 5e-4
   --decoder_hidden_size 128 --segmentation_loss ce+dice --backbone_learning_rate_scale 0.1
   --foreground_crop_probability 0.5"
export OMP_NUM_THREADS=1
"$PYTHON" examples/evaluate_flood.py --etci_dir "$ETCI" --tasks etci $INITS $B --fractions 0.1 --seeds 0 1 2 \
  --output_dir runs/flood-v2/$OUT-etci-frozen &
"$PYTHON" examples/evaluate_flood.py --ombria_dir "$OMBRIA" --tasks ombria-after $INITS $B --fractions 0.1 --seeds 0 1 2 \
  --output_dir runs/flood-v2/$OUT-ombria-after-frozen &
wait
# the seed-1 DI3CL also at 1 % (seeds 0-5) and 10 % (seeds 3-5) on OMBRIA after-only, as the goal table's 6-seed cells
if [[ " $RUNS " == *" di3cl-seed1 "* ]]; then
  SEED1="--init di3cl-seed1-1800=runs/full/di3cl-seed1/encoder-1800"
  "$PYTHON" examples/evaluate_flood.py --ombria_dir "$OMBRIA" --tasks ombria-after $SEED1 $B --fractions 0.01 \
    --seeds 0 1 2 3 4 5 --output_dir runs/flood-v2/$OUT-ombria-after-frozen-1pct &
  "$PYTHON" examples/evaluate_flood.py --ombria_dir "$OMBRIA" --tasks ombria-after $SEED1 $B --fractions 0.1 \
    --seeds 3 4 5 --output_dir runs/flood-v2/$OUT-ombria-after-frozen-s345 &
  wait
fi
# merged with the other protocol-B folders: python examples/evaluate_flood.py --merge runs/flood-v2/* --output_dir ...
