"""Fine-tune DI3CL for SAR segmentation: ``python examples/finetune.py ...`` or ``accelerate launch examples/finetune.py ...``.

Every argument is a field of :class:`di3cl_hf.training.finetuning_args.FinetuneArguments` (``--help`` lists them); a
single ``.json`` file with those fields works too. ``di3cl finetune`` takes the same arguments. Examples::

    # water bodies, 10 % of the labels, from a DI3CL checkpoint (pre-training output or converted release)
    python examples/finetune.py --data_dir synthetic-seg --task water --label_fraction 0.1 \
        --init di3cl --model_name_or_path runs/r50/encoder --output_dir runs/water-10

    # roads from random initialisation, Dice added to cross-entropy, frozen-encoder variant
    python examples/finetune.py --data_dir synthetic-seg --task roads --init random --backbone resnet50 \
        --segmentation_loss ce+dice --mode frozen --output_dir runs/roads-random

    # ImageNet initialisation from a local timm file (never downloaded)
    python examples/finetune.py --data_dir synthetic-seg --init imagenet \
        --imagenet_weights resnet50.safetensors --output_dir runs/landcover-imagenet

A non-empty ``--output_dir`` that no DI3CL run wrote (no ``.di3cl-run`` file) is refused before any work unless
``--overwrite_output_dir`` or ``--resume_from_checkpoint``; checkpoint rotation never deletes another run's.
"""

import sys

from di3cl_hf.training.common import check_output_dir
from di3cl_hf.training.finetuning import finetune, metrics_summary, parse_args


def main() -> int:
    arguments = parse_args()
    try:  # a refused --output_dir is one line, before any work (see check_output_dir)
        check_output_dir(
            arguments.output_dir,
            overwrite_output_dir=arguments.overwrite_output_dir,
            resume_from_checkpoint=arguments.resume_from_checkpoint,
        )
    except ValueError as error:
        print(f"finetune.py: error: {error}", file=sys.stderr)
        return 2
    results = finetune(arguments)
    print(metrics_summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
