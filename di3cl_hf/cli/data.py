"""``di3cl make-synthetic`` and ``di3cl export-parquet``: write synthetic SAR, export a folder to Parquet."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.classes import SEGMENTATION_PRESETS
from ..data.parquet import export_parquet
from ..data.sarsense import load_sarsense
from ..data.segmentation import load_segmentation
from ..data.synthetic import generate_sarsense, generate_scene, generate_segmentation_sets


def _make_synthetic(args: argparse.Namespace) -> int:
    out = Path(args.output_dir)
    if args.kind in ("sarsense", "all"):
        paths = generate_sarsense(
            out / "sarsense", args.num_patches, args.size, args.polarisations, args.seed, args.looks
        )
        print(f"wrote {len(paths)} synthetic SARSense patches to {out / 'sarsense'}")
    if args.kind in ("segmentation", "all"):
        folders = generate_segmentation_sets(
            out / "segmentation", args.num_patches, args.size, args.seed, args.polarisations, args.looks
        )
        print(f"wrote synthetic segmentation sets: {', '.join(str(f) for f in folders.values())}")
    if args.kind in ("scene", "all"):
        path = generate_scene(
            out / "scene.tif",
            args.scene_size,
            args.scene_size,
            seed=args.seed,
            polarisations=args.polarisations,
            looks=args.looks,
            labels_path=out / "scene_landcover.tif",
        )
        print(f"wrote a {args.scene_size}x{args.scene_size} synthetic scene to {path}")
    return 0


def _export_parquet(args: argparse.Namespace) -> int:
    if args.task:
        dataset = load_segmentation(
            args.data_dir, args.task, strict=args.strict, cache_dir=args.cache_dir, decode=False
        )
    else:
        dataset = load_sarsense(
            args.data_dir, metadata=args.metadata, strict=args.strict, cache_dir=args.cache_dir, decode=False
        )
    files = export_parquet(
        dataset, args.output_dir, num_shards=args.num_shards, pretty_name=args.name, synthetic=args.synthetic
    )
    print(f"wrote {len(files)} Parquet shard(s) and README.md to {args.output_dir}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``make-synthetic`` and ``export-parquet`` to the ``di3cl`` command line."""
    make = subparsers.add_parser(
        "make-synthetic", help="write synthetic SAR patches, segmentation sets and a scene"
    )
    make.add_argument("output_dir", help="output folder")
    make.add_argument("--kind", choices=("sarsense", "segmentation", "scene", "all"), default="all")
    make.add_argument("--num-patches", type=int, default=64)
    make.add_argument("--size", type=int, default=256, help="patch size in pixels")
    make.add_argument("--polarisations", type=int, choices=(1, 2), default=2)
    make.add_argument("--looks", type=float, default=4.4, help="equivalent number of looks of the speckle")
    make.add_argument("--scene-size", type=int, default=2048, help="rows and columns of the synthetic scene")
    make.add_argument("--seed", type=int, default=0)
    make.set_defaults(func=_make_synthetic)

    export = subparsers.add_parser(
        "export-parquet", help="export a SAR patch folder (or segmentation set) to Parquet + dataset card"
    )
    export.add_argument("data_dir", help="folder of SAR patches (or of images/ + masks/ with --task)")
    export.add_argument("output_dir", help="output folder (data/*.parquet + README.md)")
    export.add_argument(
        "--task", choices=sorted(SEGMENTATION_PRESETS), default=None, help="export a segmentation set"
    )
    export.add_argument("--metadata", default=None, help="metadata CSV/JSON (SARSense)")
    export.add_argument("--num-shards", type=int, default=None)
    export.add_argument("--name", default="SAR patches", help="dataset card title")
    export.add_argument("--cache-dir", default=None)
    export.add_argument(
        "--strict", action="store_true", help="fail on unreadable files instead of skipping them"
    )
    export.add_argument(
        "--synthetic",
        action="store_true",
        default=None,
        help="mark the card as synthetic data (default: detected from the sensor/source_dataset columns)",
    )
    export.set_defaults(func=_export_parquet)


__all__ = ["register"]
