"""The Hugging Face Hub: cards, staging and pushing, exports.

- :mod:`.cards`: every card the package writes (model, timm export, dataset) and the model-index results
- :mod:`.push`: staging a folder with the remote-code files, pushing models, datasets and the Space
- :mod:`.export`: timm weights + ``pretrained_cfg`` from any DI3CL folder
- :mod:`.convert`: the original release's checkpoints into a transformers folder

Modules are imported directly (``from di3cl_hf.hub.push import push_model``); this file imports nothing.
"""
