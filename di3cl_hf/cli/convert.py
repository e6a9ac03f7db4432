"""``di3cl convert-original``: convert a checkpoint of the original DI3CL release (:mod:`di3cl_hf.hub.convert`)."""

from __future__ import annotations

import argparse

from ..hub.convert import convert_original_checkpoint, save_atomically


def _run_convert(args: argparse.Namespace) -> int:
    model = convert_original_checkpoint(args.checkpoint, num_channels=args.num_channels)
    out_dir = save_atomically(model, args.out_dir, overwrite=args.overwrite)
    config = model.config
    print(
        f"{args.checkpoint} -> {out_dir}: {config.backbone}, {config.num_channels} channel(s), "
        f"queue {config.projection_dim}x{config.queue_size}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``convert-original`` to the ``di3cl`` command line."""
    parser = subparsers.add_parser(
        "convert-original",
        help="convert a checkpoint of the original DI3CL release into a transformers folder",
        description=(
            "Read a checkpoint of the original DI3CL release (DDP, 'module.'-prefixed keys) with "
            "torch.load(weights_only=True), map every key into DI3CLForPreTraining and write it with save_pretrained."
        ),
    )
    parser.add_argument("checkpoint", help="the release's .pth file")
    parser.add_argument("out_dir", help="output folder (loadable with from_pretrained)")
    parser.add_argument(
        "--num-channels",
        type=int,
        choices=(1, 2, 3),
        default=None,
        help="adapt conv1 from the release's 3 replicated grey channels to 1 or 2 channels (default: keep 3)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    parser.set_defaults(func=_run_convert)


__all__ = ["register"]
