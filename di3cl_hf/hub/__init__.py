"""The Hugging Face Hub: cards, staging and pushing, exports.

- :mod:`.cards`: model and timm cards, the model-index results and the results tables (the paper's Table II layout)
- :mod:`.dataset_card`: the dataset card of a Parquet folder (written by :func:`di3cl_hf.data.export_parquet`)
- :mod:`.push`: staging a folder with the remote-code files, pushing models, datasets and the Space
- :mod:`.export`: timm weights + ``pretrained_cfg`` from any DI3CL folder
- :mod:`.convert`: the original release's checkpoints into a transformers folder
- :mod:`.ship`: a fine-tuned model as the package's shipped folder (fp16 weights loaded as fp32, card, checks)

``hub`` imports neither :mod:`di3cl_hf.data` nor :mod:`di3cl_hf.training` (they call it for their cards). Modules are
imported directly (``from di3cl_hf.hub.push import push_model``); this file imports nothing.
"""
