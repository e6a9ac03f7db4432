"""Pre-train DI3CL on SAR patches: ``python examples/pretrain.py ...`` or ``accelerate launch examples/pretrain.py ...``.

Every argument is a field of :class:`di3cl_hf.training.pretraining_args.PretrainingArguments` (``--help`` lists them); a
single ``.json`` file with those fields works too. ``di3cl pretrain`` takes the same arguments. Examples::

    # one process (CPU or one GPU), a SARSense folder, release defaults (ResNet-50, 448 px, SGD, cosine)
    python examples/pretrain.py --data_dir sarsense/ --output_dir runs/r50

    # 8 GPUs, Parquet shards, streamed (each process reads its own shards)
    accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/pretrain.py \
        --data_files 'shards/*.parquet' --streaming --max_steps 100000 --per_device_batch_size 32

    # continue after a pre-emption (SIGTERM saved a checkpoint)
    accelerate launch ... examples/pretrain.py <same arguments> --resume_from_checkpoint latest

A non-empty ``--output_dir`` that no DI3CL run wrote (no ``.di3cl-run`` file) is refused before any work unless
``--overwrite_output_dir`` (its files may be replaced; checkpoints already there are kept) or
``--resume_from_checkpoint``; ``--save_total_limit`` only ever deletes checkpoints this run family wrote.

Short run on synthetic data (CPU, ~5 min; measured on the 2-core development machine, one thread)::

    python -c "from di3cl_hf.data.synthetic import generate_sarsense; generate_sarsense('synthetic-sarsense', 512, size=96)"
    OMP_NUM_THREADS=1 python examples/pretrain.py --data_dir synthetic-sarsense --output_dir runs/synthetic \
        --backbone resnet18 --image_size 64 --min_box_size 16 --queue_size 256 --projection_hidden_dim 512 \
        --per_device_batch_size 16 --max_steps 400 --learning_rate 0.05 --warmup_steps 10 --momentum 0.99 \
        --num_workers 1 --logging_steps 10

Chance top-1 is 1/(K+1) = 0.4 %. Mean top-1 per 10-update window (global / contour): 11 % / 7 % at update 20
(the queue has just been filled with real keys), 65 % / 27 % at update 70, 64 % / 44 % at update 160, then
slowly down to 16-25 % / 15-25 % at update 300-400 while the instance loss keeps falling (1.5 -> 0.2); the same
rise-then-fall appears with the instance term off, so it comes from the contrastive task on this small,
homogeneous synthetic set, not from the instance head. ~20-30 images/s with bf16 autocast (a CPU with native
bf16, AVX512_BF16; elsewhere `auto` runs fp32).
"""

import sys

from di3cl_hf.training.common import check_output_dir
from di3cl_hf.training.pretraining import main, parse_args

if __name__ == "__main__":
    arguments = parse_args()
    try:  # a refused --output_dir is one line, before any work (see check_output_dir)
        check_output_dir(
            arguments.output_dir,
            overwrite_output_dir=arguments.overwrite_output_dir,
            resume_from_checkpoint=arguments.resume_from_checkpoint,
        )
    except ValueError as error:
        sys.exit(f"pretrain.py: error: {error}")
    sys.exit(main(arguments))
