"""The evaluation grid: initialisation x label fraction x task, one comparison table and label-efficiency curves.

Every argument is a field of :class:`di3cl_hf.training.evaluation_args.EvaluationGridArguments` (``--help`` lists
them); ``di3cl evaluate grid`` takes the same arguments (``di3cl evaluate`` also scores one saved model, ``model``,
and frozen encoders on labelled chips, ``probe``).
Writes ``evaluation.json``, ``evaluation.md`` and ``label_efficiency.png`` under ``--output_dir`` and prints the
comparison table. Example (the command behind ``results/evaluation.md``)::

    python examples/evaluate.py --data_dir synthetic-seg --pretrained_model runs/pretrain/encoder \
        --output_dir runs/grid --initialisations di3cl random --label_fractions 0.01 0.1
"""

import sys

from di3cl_hf.training.evaluation import comparison_table, parse_grid_args, run_evaluation_grid


def main() -> int:
    summary = run_evaluation_grid(parse_grid_args())
    print(comparison_table(summary))
    print(f"{summary['arguments']['output_dir']}: evaluation.json, evaluation.md, label_efficiency.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
