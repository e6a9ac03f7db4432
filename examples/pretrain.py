"""Pre-train DI3CL on SAR patches: ``python examples/pretrain.py ...`` or ``accelerate launch examples/pretrain.py ...``.

Every argument is a field of :class:`di3cl_hf.pretraining.PretrainingArguments` (``--help`` lists them); a single
``.json`` file with those fields works too. Examples::

    # one process (CPU or one GPU), a SARSense folder, release defaults (ResNet-50, 448 px, SGD, cosine)
    python examples/pretrain.py --data_dir sarsense/ --output_dir runs/r50

    # 8 GPUs, Parquet shards, streamed (each process reads its own shards)
    accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/pretrain.py \
        --data_files 'shards/*.parquet' --streaming --max_steps 100000 --per_device_batch_size 32

    # continue after a pre-emption (SIGTERM saved a checkpoint)
    accelerate launch ... examples/pretrain.py <same arguments> --resume_from_checkpoint latest
"""

import sys

from di3cl_hf.pretraining import main, parse_args

if __name__ == "__main__":
    sys.exit(main(parse_args()))
