"""Training: DI3CL pre-training, fine-tuning and scoring models on labelled sets (Accelerate loops).

- :mod:`.common`: what every loop shares: run flags, ``build_accelerator`` (the one device rule), the run-folder
  layout, checkpoints (save / list / resume, no pickle), output-folder checks, trackers
- :mod:`.pretraining`: the pre-training loop (``di3cl pretrain``, ``examples/pretrain.py``); its arguments in
  :mod:`.pretraining_args`; :mod:`.pretraining_data`: datasets, samplers, seeded two-view batches;
  :mod:`.augmentation`: views with tracked geometry; :mod:`.boxes`: box pairs inside the views' overlap and the
  collator; :mod:`.monitor`: the online linear-probe monitor; :mod:`.statistics`: input mean / std
- :mod:`.finetuning`: the segmentation fine-tuning loop (``di3cl finetune``, ``examples/finetune.py``); its
  arguments in :mod:`.finetuning_args`; :mod:`.segmentation_models`: full, frozen-encoder or linear-probe training
- :mod:`.run_outputs`: what a run leaves behind (saved models, model cards, the Hub upload)
- :mod:`.evaluation` (arguments in :mod:`.evaluation_args`): ``di3cl evaluate``'s ``model`` and ``grid`` modes
  (``examples/evaluate.py``), k-means, tables, plots; :mod:`.probing`: its ``probe`` mode, frozen encoders on
  labelled chips; :mod:`.metrics`: OA, kappa, mIoU, F1, relaxed road scores
- :mod:`.baselines`: classical water / flood baselines (fitted thresholds, Otsu per tile, log ratio), numpy only
  (``examples/evaluate_flood.py``)

Weights enter through :mod:`di3cl_hf.loading` (an encoder under a new head, local ImageNet files). Modules are
imported directly (``from di3cl_hf.training.pretraining import main``); this file imports nothing.
"""
