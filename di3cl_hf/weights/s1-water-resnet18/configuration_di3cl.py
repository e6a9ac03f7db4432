"""DI3CL model configuration."""

from __future__ import annotations

import timm
from transformers.backbone_utils import BackboneConfigMixin
from transformers.configuration_utils import PreTrainedConfig

# The five feature levels of a ResNet-like timm encoder and their strides (reduction factors).
STAGE_NAMES = ["stem", "stage1", "stage2", "stage3", "stage4"]
STAGE_STRIDES = [2, 4, 8, 16, 32]
SEGMENTATION_LOSSES = ("ce", "ce+dice")
BOX_SAMPLING_MODES = ("grid", "uniform")
# Upper bounds of every size a config.json sets, checked before anything is allocated: a hostile or mistyped
# config (num_labels=10**9, queue_size=10**11, ...) is refused in one line instead of stalling for minutes or
# allocating gigabytes. Each is far above what DI3CL uses (release: queue 65536, decoder 512, 4 pool scales).
SIZE_LIMITS = {
    "num_labels": 1000,
    "image_size": 8192,
    "projection_dim": 8192,
    "projection_hidden_dim": 16384,
    "queue_size": 1 << 20,
    "boxes_per_image": 1024,
    "min_box_size": 8192,
    "decoder_hidden_size": 4096,
    "auxiliary_channels": 4096,
    "pool_scale": 64,
    "pool_scales": 8,
}


class DI3CLConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of the DI3CL models ([`DI3CLModel`], [`DI3CLBackbone`], [`DI3CLForPreTraining`] and
    [`DI3CLForSemanticSegmentation`]): a timm CNN encoder for SAR images pre-trained with MoCo v2 plus contour
    consistency (a second contrastive task on the stride-16 stage) and dynamic instances (box-level BYOL-style
    regression between the two views).

    Args:
        backbone (`str`, *optional*, defaults to `"resnet50"`):
            Name of a timm CNN whose `features_only` version has five feature levels with strides 2, 4, 8, 16, 32
            (`resnet18`, `resnet34`, `resnet50`, `resnet101`, ...). The encoder is always built with random weights;
            head widths are read from its `feature_info`.
        num_channels (`int`, *optional*, defaults to 2):
            Number of input channels: 1 = single polarisation (VV), 2 = dual polarisation (VV, VH), 3 = the original
            release's grey SAR replicated to three channels.
        image_size (`int`, *optional*, defaults to 448):
            Side of the square pre-training views, in pixels (the release uses 448).
        projection_dim (`int`, *optional*, defaults to 128):
            Output size of the global, contour and instance projectors (and of the queues' embeddings).
        projection_hidden_dim (`int`, *optional*, defaults to 2048):
            Hidden size of the projectors and of the instance predictor.
        queue_size (`int`, *optional*, defaults to 65536):
            Number of negative keys in each of the two queues (global and contour). It must be a multiple of the
            keys enqueued per forward (`per_device_batch_size x processes`), as in the release: every key then stays
            exactly `queue_size / global_batch` forwards and each write is one contiguous block. The pre-training
            loop checks this before it starts (`di3cl_hf.training.pretraining.check_queue_and_batch`).
        momentum (`float`, *optional*, defaults to 0.999):
            Momentum of the key-side exponential moving average: `key = momentum * key + (1 - momentum) * query`.
        temperature (`float`, *optional*, defaults to 0.2):
            InfoNCE temperature. The released code defaults to 0.07 while its README's launch command asks for 0.2
            (MoCo v2's value); 0.2 is used here.
        global_loss_weight (`float`, *optional*, defaults to 0.8):
            Weight of the global (stage4) InfoNCE term in the total loss.
        contour_loss_weight (`float`, *optional*, defaults to 0.2):
            Weight of the contour-consistency (stage3) InfoNCE term.
        instance_loss_weight (`float`, *optional*, defaults to 5.0):
            Weight of the dynamic-instance regression term (`2 - 2 cos`).
        boxes_per_image (`int`, *optional*, defaults to 10):
            Number of box pairs sampled per image inside the intersection of the two views.
        min_box_size (`int`, *optional*, defaults to 32):
            Minimum box side in output pixels; intersections smaller than this give no boxes.
        box_iou_threshold (`float`, *optional*, defaults to 0.5):
            A sampled box is re-drawn while its IoU with an accepted box of the same image reaches this value.
        box_sampling (`str`, *optional*, defaults to `"grid"`):
            Box sampling scheme: `"grid"` (the release's: random grid, random cell, random box inside it) or
            `"uniform"` (boxes drawn uniformly inside the intersection).
        box_jitter (`float`, *optional*, defaults to 0.0):
            Relative jitter applied to each view's box (0 disables it, as in the release).
        out_features (`list[str]`, *optional*):
            Stages returned by [`DI3CLBackbone`], among `"stem"`, `"stage1"`, `"stage2"`, `"stage3"`, `"stage4"`
            (strides 2, 4, 8, 16, 32). Defaults to the last stage, or to the stages of `out_indices`.
        out_indices (`list[int]`, *optional*):
            Indices of the stages returned by [`DI3CLBackbone`] (0 = `"stem"`). Must agree with `out_features` when
            both are set.
        decoder_hidden_size (`int`, *optional*, defaults to 512):
            Channels of the UperNet decoder of [`DI3CLForSemanticSegmentation`].
        pool_scales (`tuple[int]`, *optional*, defaults to `(1, 2, 3, 6)`):
            Output sizes of the pyramid pooling module of the UperNet decoder.
        use_auxiliary_head (`bool`, *optional*, defaults to `True`):
            Whether [`DI3CLForSemanticSegmentation`] trains an auxiliary FCN head on stage3.
        auxiliary_loss_weight (`float`, *optional*, defaults to 0.4):
            Weight of the auxiliary head's loss.
        auxiliary_channels (`int`, *optional*, defaults to 256):
            Channels of the auxiliary FCN head.
        semantic_loss_ignore_index (`int`, *optional*, defaults to 255):
            Label value ignored by the segmentation loss (unlabelled or nodata pixels).
        segmentation_loss (`str`, *optional*, defaults to `"ce"`):
            `"ce"` (cross-entropy) or `"ce+dice"` (cross-entropy plus a soft Dice term, which helps thin structures
            such as roads).
        dice_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the Dice term when `segmentation_loss="ce+dice"`.

    Example:

    ```python
    >>> from di3cl_hf import DI3CLConfig, DI3CLForPreTraining

    >>> config = DI3CLConfig(backbone="resnet18", num_channels=2, queue_size=256, projection_hidden_dim=256)
    >>> model = DI3CLForPreTraining(config)
    >>> model.config.backbone
    'resnet18'
    ```
    """

    model_type = "di3cl"

    backbone: str = "resnet50"
    num_channels: int = 2
    image_size: int = 448
    projection_dim: int = 128
    projection_hidden_dim: int = 2048
    queue_size: int = 65536
    momentum: float = 0.999
    temperature: float = 0.2
    global_loss_weight: float = 0.8
    contour_loss_weight: float = 0.2
    instance_loss_weight: float = 5.0
    boxes_per_image: int = 10
    min_box_size: int = 32
    box_iou_threshold: float = 0.5
    box_sampling: str = "grid"
    box_jitter: float = 0.0
    decoder_hidden_size: int = 512
    pool_scales: list[int] | tuple[int, ...] = (1, 2, 3, 6)
    use_auxiliary_head: bool = True
    auxiliary_loss_weight: float = 0.4
    auxiliary_channels: int = 256
    semantic_loss_ignore_index: int = 255
    segmentation_loss: str = "ce"
    dice_loss_weight: float = 1.0

    def __post_init__(self, **kwargs):
        self.stage_names = list(STAGE_NAMES)
        kwargs.pop("stage_names", None)
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        self._check_num_labels(kwargs.get("num_labels"))
        self._check_pool_scales()
        self.pool_scales = [int(scale) for scale in self.pool_scales]
        self._check_values()
        super().__post_init__(**kwargs)

    def _check_num_labels(self, num_labels: object) -> None:
        """Refuse a label count above :data:`SIZE_LIMITS` before transformers builds ``id2label`` from it."""
        limit = SIZE_LIMITS["num_labels"]
        for name, value in (("num_labels", num_labels), ("id2label", self.id2label)):
            count = len(value) if isinstance(value, dict) else value
            if count is None:
                continue
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"DI3CLConfig: num_labels={count!r}, expected a positive integer")
            if count > limit:
                raise ValueError(
                    f"DI3CLConfig: {name} gives {count} labels, above the limit of {limit}; "
                    "check num_labels / id2label in config.json"
                )

    def _check_pool_scales(self) -> None:
        scales = self.pool_scales
        if not isinstance(scales, list | tuple) or len(scales) > SIZE_LIMITS["pool_scales"]:
            raise ValueError(
                f"DI3CLConfig: pool_scales must be a list of at most {SIZE_LIMITS['pool_scales']} integers, "
                f"got {str(scales)[:80]}"
            )
        for scale in scales:
            if (
                isinstance(scale, bool)
                or not isinstance(scale, int)
                or not 1 <= scale <= SIZE_LIMITS["pool_scale"]
            ):
                raise ValueError(
                    f"DI3CLConfig: pool_scales={str(list(scales))[:80]}, expected integers from 1 to "
                    f"{SIZE_LIMITS['pool_scale']}"
                )

    def _check_values(self) -> None:
        """Raise ValueError naming the argument when a value is out of range."""
        if not isinstance(self.backbone, str) or not timm.is_model(self.backbone):
            raise ValueError(
                f"DI3CLConfig: backbone={self.backbone!r} is not a timm model name (expected e.g. 'resnet50')"
            )
        if self.num_channels not in (1, 2, 3):
            raise ValueError(
                f"DI3CLConfig: num_channels={self.num_channels!r}, expected 1 (VV), 2 (VV, VH) or 3 (replicated grey)"
            )
        positive_ints = {
            "image_size": self.image_size,
            "projection_dim": self.projection_dim,
            "projection_hidden_dim": self.projection_hidden_dim,
            "queue_size": self.queue_size,
            "boxes_per_image": self.boxes_per_image,
            "min_box_size": self.min_box_size,
            "decoder_hidden_size": self.decoder_hidden_size,
            "auxiliary_channels": self.auxiliary_channels,
        }
        for name, value in positive_ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DI3CLConfig: {name}={value!r}, expected a positive integer")
            if value > SIZE_LIMITS[name]:
                raise ValueError(
                    f"DI3CLConfig: {name}={value}, above the limit of {SIZE_LIMITS[name]}; check config.json"
                )
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"DI3CLConfig: momentum={self.momentum!r}, expected a value in [0, 1]")
        if not self.temperature > 0.0:
            raise ValueError(f"DI3CLConfig: temperature={self.temperature!r}, expected a value > 0")
        weights = {
            "global_loss_weight": self.global_loss_weight,
            "contour_loss_weight": self.contour_loss_weight,
            "instance_loss_weight": self.instance_loss_weight,
            "auxiliary_loss_weight": self.auxiliary_loss_weight,
            "dice_loss_weight": self.dice_loss_weight,
        }
        for name, value in weights.items():
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"DI3CLConfig: {name}={value!r}, expected a number >= 0")
        if not 0.0 < self.box_iou_threshold <= 1.0:
            raise ValueError(
                f"DI3CLConfig: box_iou_threshold={self.box_iou_threshold!r}, expected a value in (0, 1]"
            )
        if self.box_sampling not in BOX_SAMPLING_MODES:
            raise ValueError(
                f"DI3CLConfig: box_sampling={self.box_sampling!r}, expected one of {BOX_SAMPLING_MODES}"
            )
        if not 0.0 <= self.box_jitter < 1.0:
            raise ValueError(f"DI3CLConfig: box_jitter={self.box_jitter!r}, expected a value in [0, 1)")
        if not self.pool_scales:
            raise ValueError(f"DI3CLConfig: pool_scales={self.pool_scales!r}, expected positive integers")
        if self.segmentation_loss not in SEGMENTATION_LOSSES:
            raise ValueError(
                f"DI3CLConfig: segmentation_loss={self.segmentation_loss!r}, expected one of {SEGMENTATION_LOSSES}"
            )
        if not isinstance(self.semantic_loss_ignore_index, int):
            raise ValueError(
                f"DI3CLConfig: semantic_loss_ignore_index={self.semantic_loss_ignore_index!r}, expected an integer"
            )


DI3CLConfig.register_for_auto_class()

__all__ = ["SIZE_LIMITS", "DI3CLConfig"]
