#!/usr/bin/env bash
# Which DI3CL term costs transfer, at full length? Three runs with the main runs' schedule (examples/pretrain_s1.sh:
# cosine over 3,000 planned updates, warm-up 100, seed 0) scored at update 1,800 like the main runs' last
# checkpoints (update 1,801): DI3CL without dynamic instances, DI3CL without contour consistency, and DI3CL again
# with pre-training seed 1 (how much two DI3CL pre-trainings differ). Run from the repository root after
# examples/prepare_s1_corpus.py has made runs/s1/data (see ../README.md); the three share the CPU, one thread each.
#   ETCI=<data>/s1-flood-etci OMBRIA=<data>/s1-flood-ombria PYTHON=python bash results/real/pretrain-s1-v2/terms/pretrain_terms_full.sh
set -euo pipefail
PYTHON=${PYTHON:-python}
ETCI=${ETCI:?set ETCI=<data>/s1-flood-etci}; OMBRIA=${OMBRIA:?set OMBRIA=<data>/s1-flood-ombria}
"$PYTHON" - <<'PY'
from di3cl_hf import DI3CLConfig
base = dict(backbone="resnet18", num_channels=1, image_size=128, projection_dim=128, projection_hidden_dim=2048,
            queue_size=2048, momentum=0.99, temperature=0.2, boxes_per_image=10, min_box_size=32)
DI3CLConfig(**base, global_loss_weight=0.8, contour_loss_weight=0.2, instance_loss_weight=0.0).save_pretrained("runs/terms/cfg-noDI")
DI3CLConfig(**base, global_loss_weight=0.8, contour_loss_weight=0.0, instance_loss_weight=5.0).save_pretrained("runs/terms/cfg-noCC")
PY
for n in noDI noCC di3cl-seed1; do
  case $n in
    di3cl-seed1) extra="--objective di3cl --seed 1" ;;
    *) extra="--config_name runs/terms/cfg-$n --seed 0" ;;
  esac
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
# export the query encoder of each checkpoint-1800 as runs/full/<name>/encoder-1800
"$PYTHON" - <<'PY'
from safetensors.torch import load_file
from di3cl_hf import DI3CLImageProcessor, DI3CLModel
for name in ("noDI", "noCC", "di3cl-seed1"):
    run = f"runs/full/{name}"
    model = DI3CLModel.from_pretrained(f"{run}/best-encoder")
    state = load_file(f"{run}/checkpoints/checkpoint-1800/model.safetensors")
    model.load_state_dict({k[len("di3cl."):]: v.float() if v.is_floating_point() else v
                           for k, v in state.items() if k.startswith("di3cl.")}, strict=True)
    model.save_pretrained(f"{run}/encoder-1800")
    DI3CLImageProcessor.from_pretrained(f"{run}/best-encoder").save_pretrained(f"{run}/encoder-1800")
PY
# fine-tuning: frozen encoder, 10 % labels, seeds 0-2, protocol B, on ETCI and OMBRIA after-only; then the seed-1 DI3CL
# also at 1 % (seeds 0-5) and 10 % (seeds 3-5) on OMBRIA after-only, as the goal table's 6-seed cells
B="--modes frozen --no_classical --max_steps 200 --crop_size 128 --batch_size 8 --learning_rate 5e-4
   --decoder_hidden_size 128 --segmentation_loss ce+dice --backbone_learning_rate_scale 0.1
   --foreground_crop_probability 0.5"
INITS="--init di3cl-noDI-1800=runs/full/noDI/encoder-1800 --init di3cl-noCC-1800=runs/full/noCC/encoder-1800
       --init di3cl-seed1-1800=runs/full/di3cl-seed1/encoder-1800"
export OMP_NUM_THREADS=1
"$PYTHON" examples/evaluate_flood.py --etci_dir "$ETCI" --tasks etci $INITS $B --fractions 0.1 --seeds 0 1 2 \
  --output_dir runs/flood-v2/terms-full-etci-frozen &
"$PYTHON" examples/evaluate_flood.py --ombria_dir "$OMBRIA" --tasks ombria-after $INITS $B --fractions 0.1 --seeds 0 1 2 \
  --output_dir runs/flood-v2/terms-full-ombria-after-frozen &
wait
SEED1="--init di3cl-seed1-1800=runs/full/di3cl-seed1/encoder-1800"
"$PYTHON" examples/evaluate_flood.py --ombria_dir "$OMBRIA" --tasks ombria-after $SEED1 $B --fractions 0.01 \
  --seeds 0 1 2 3 4 5 --output_dir runs/flood-v2/terms-full-ombria-after-frozen-1pct &
"$PYTHON" examples/evaluate_flood.py --ombria_dir "$OMBRIA" --tasks ombria-after $SEED1 $B --fractions 0.1 \
  --seeds 3 4 5 --output_dir runs/flood-v2/terms-full-ombria-after-frozen-s345 &
wait
# merged with the other protocol-B folders: python examples/evaluate_flood.py --merge runs/flood-v2/* --output_dir ...
