# Real-SAR pre-training run (issue #15 item 3), started 2026-12-02 with the training loop of commit d2f3e7c
# (identical DI3CL math; run before the restructure landed). Tiles: 100 S1 VH scenes cut into 1,600 256² tiles.
# PRERUN: a checkout of that commit (git worktree add --detach "$PRERUN" d2f3e7c); tiles in runs/s1/tiles.
OMP_NUM_THREADS=1 PYTHONPATH="$PRERUN" .venv/bin/python examples/pretrain.py \
  --data_dir runs/s1/tiles --output_dir runs/s1/r18-s1 --backbone resnet18 --num_channels 1 \
  --image_size 128 --queue_size 4096 --per_device_batch_size 32 --max_steps 2400 --learning_rate 0.06 \
  --warmup_steps 100 --momentum 0.99 --num_workers 1 --logging_steps 20 --save_steps 400 --disable_tqdm
