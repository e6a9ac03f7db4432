"""``di3cl push {model,dataset,space}`` and ``di3cl export-timm``: the Hub commands.

The work is :mod:`di3cl_hf.hub.push` (staging + upload) and :mod:`di3cl_hf.hub.export` (timm weights);
this module holds only their ``argparse`` front end.
"""

from __future__ import annotations

import argparse

from ..hub.cards import DEFAULT_LICENSE, read_json
from ..hub.export import export_timm
from ..hub.push import push_dataset, push_model, push_space, stage_model, stage_space


def _cmd_push(args: argparse.Namespace) -> int:
    kind = args.kind
    if kind == "model":
        run_info = read_json(args.run_info) if args.run_info else None
        card_kwargs = dict(
            evaluation=args.evaluation,
            license=args.license,
            datasets=args.dataset or None,
            base_model=args.base_model,
            run_info=run_info,
        )
        if args.stage_only:
            stage_model(
                args.source,
                args.stage_only,
                include_code=not args.no_code,
                repo_id=args.repo_id,
                **card_kwargs,
            )
            print(f"staged {args.source} for {args.repo_id} in {args.stage_only} (nothing uploaded)")
            return 0
        info = push_model(
            args.source,
            args.repo_id,
            token=args.token,
            private=args.private,
            include_code=not args.no_code,
            commit_message=args.commit_message or "Upload DI3CL model",
            **card_kwargs,
        )
    elif kind == "dataset":
        info = push_dataset(
            args.source,
            args.repo_id,
            token=args.token,
            private=args.private,
            commit_message=args.commit_message or "Upload SAR dataset (Parquet)",
        )
    else:
        if args.stage_only:
            stage_space(args.source, args.stage_only, models_dir=args.models)
            print(f"staged {args.source} for {args.repo_id} in {args.stage_only} (nothing uploaded)")
            return 0
        info = push_space(
            args.source,
            args.repo_id,
            token=args.token,
            private=args.private,
            models_dir=args.models,
            commit_message=args.commit_message or "Upload DI3CL Gradio Space",
        )
    print(getattr(info, "commit_url", info))
    return 0


def _cmd_export_timm(args: argparse.Namespace) -> int:
    out = export_timm(args.model, args.out, architecture=args.arch)
    print(f"wrote timm weights to {out}; load with timm.create_model('local-dir:{out}', pretrained=True)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``di3cl push {model,dataset,space}`` and ``di3cl export-timm`` to the ``di3cl`` command."""
    push = subparsers.add_parser(
        "push",
        help="push a model, a Parquet dataset or the Gradio Space to the Hub (HF_ENDPOINT selects the server)",
        description="Push to the Hugging Face Hub with huggingface_hub (create_repo + upload_folder, one commit).",
    )
    push.add_argument("kind", choices=("model", "dataset", "space"), help="what to push")
    push.add_argument(
        "source", help="model folder (save_pretrained), Parquet folder (di3cl export-parquet), or space/"
    )
    push.add_argument("repo_id", help="target repository, org/name")
    push.add_argument("--token", default=None, help="write token (default: HF_TOKEN / the saved login)")
    push.add_argument("--private", action="store_true", default=None, help="create the repository private")
    push.add_argument("--commit-message", default=None)
    push.add_argument(
        "--license", default=None, help="license id (default apache-2.0 models, cc-by-4.0 data)"
    )
    push.add_argument("--evaluation", default=None, help="model: evaluation JSON for the model-index")
    push.add_argument(
        "--dataset", action="append", default=[], help="model: Hub id of training data (repeatable)"
    )
    push.add_argument("--base-model", default=None, help="model: Hub id of the pre-trained encoder")
    push.add_argument("--run-info", default=None, help="model: JSON of run facts shown in the card")
    push.add_argument("--no-code", action="store_true", help="model: leave out the remote-code files")
    push.add_argument(
        "--models", default=None, help="space: folder with landcover/water/roads models to bundle"
    )
    push.add_argument(
        "--stage-only", default=None, metavar="DIR", help="write what would be pushed to DIR; no upload"
    )

    def run_push(args: argparse.Namespace) -> int:
        if args.license is None and args.kind == "model":
            args.license = DEFAULT_LICENSE
        return _cmd_push(args)

    push.set_defaults(func=run_push)

    export = subparsers.add_parser(
        "export-timm",
        help="write the encoder as timm weights + pretrained_cfg",
        description="Export a DI3CL encoder as a timm ResNet folder (model.safetensors + config.json).",
    )
    export.add_argument("model", help="a saved DI3CL model folder")
    export.add_argument("out", help="output folder")
    export.add_argument("--arch", default=None, help="timm architecture (default: the config's backbone)")
    export.set_defaults(func=_cmd_export_timm)


__all__ = ["register"]
