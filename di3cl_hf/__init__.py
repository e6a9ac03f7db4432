"""di3cl_hf: DI3CL, the self-supervised SAR land-cover foundation model, as a Hugging Face-native package.

Importing the package registers the DI3CL classes with the transformers Auto classes (`AutoConfig`, `AutoModel`,
`AutoBackbone`, `AutoModelForPreTraining`, `AutoModelForSemanticSegmentation`, `AutoModelForImageClassification`,
`AutoImageProcessor`), so saved DI3CL folders load with these local classes and never prompt to run the folder's
remote code.
"""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    AutoModelForSemanticSegmentation,
    AutoVideoProcessor,
)

from .configuration_di3cl import DI3CLConfig
from .image_processing_di3cl import DI3CLImageProcessor
from .modeling_di3cl import (
    DI3CLBackbone,
    DI3CLForImageClassification,
    DI3CLForPreTraining,
    DI3CLForPreTrainingOutput,
    DI3CLForSemanticSegmentation,
    DI3CLModel,
    DI3CLPreTrainedModel,
)

AutoConfig.register(DI3CLConfig.model_type, DI3CLConfig, exist_ok=True)
AutoModel.register(DI3CLConfig, DI3CLModel, exist_ok=True)
AutoBackbone.register(DI3CLConfig, DI3CLBackbone, exist_ok=True)
AutoModelForPreTraining.register(DI3CLConfig, DI3CLForPreTraining, exist_ok=True)
AutoModelForSemanticSegmentation.register(DI3CLConfig, DI3CLForSemanticSegmentation, exist_ok=True)
AutoModelForImageClassification.register(DI3CLConfig, DI3CLForImageClassification, exist_ok=True)
AutoImageProcessor.register(DI3CLConfig, slow_image_processor_class=DI3CLImageProcessor, exist_ok=True)
# DI3CL has no video processor: registered as an empty mapping so that transformers finds *local* code for
# DI3CLConfig. Without it, `pipeline(...)` (which tries a video processor for every model) derives
# "image_processing_di3cl.DI3CLVideoProcessor" from the saved folder's AutoImageProcessor auto_map, finds no
# local class and asks "Do you wish to run the custom code? [y/N]" (issue #16, item 8).
AutoVideoProcessor.register(DI3CLConfig, video_processor_classes={}, exist_ok=True)

__all__ = [
    "DI3CLBackbone",
    "DI3CLConfig",
    "DI3CLForImageClassification",
    "DI3CLForPreTraining",
    "DI3CLForPreTrainingOutput",
    "DI3CLForSemanticSegmentation",
    "DI3CLImageProcessor",
    "DI3CLModel",
    "DI3CLPreTrainedModel",
]
