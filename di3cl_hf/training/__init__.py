"""Training: DI3CL pre-training, fine-tuning and the paper's evaluation protocol (Accelerate loops).

- :mod:`.common`: run flags shared by every loop, precision for Accelerate, checkpoints (save / list / resume,
  no pickle), output-folder checks, trackers
- :mod:`.pretraining`: the pre-training loop (``examples/pretrain.py``); :mod:`.pretraining_data`: datasets,
  samplers, seeded two-view batches; :mod:`.augmentation`: views with tracked geometry; :mod:`.boxes`: box pairs
  inside the views' overlap and the collator
- :mod:`.finetuning`: segmentation fine-tuning (``examples/finetune.py``); :mod:`.segmentation_models`: UperNet on
  an encoder (conv1 adapted to another channel count), frozen encoders, linear probe; :mod:`.imagenet`: local
  ImageNet weights for either loop
- :mod:`.baselines`: classical water / flood baselines (fitted thresholds, Otsu per tile, log ratio), numpy only
  (``examples/evaluate_flood.py``)
- :mod:`.evaluation`: the grid (initialisation x label fraction x task), k-means, tables, plots
  (``examples/evaluate.py``); :mod:`.metrics`: OA, kappa, mIoU, F1, relaxed road scores

Modules are imported directly (``from di3cl_hf.training.pretraining import main``); this file imports nothing.
"""
