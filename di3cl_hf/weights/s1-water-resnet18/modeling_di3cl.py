"""DI3CL models: encoder, backbone, pre-training model (MoCo v2 + contour consistency + dynamic instances) and a
UperNet semantic-segmentation model.

This file, ``configuration_di3cl.py`` and ``di3cl_layers.py`` are copied next to the weights by ``save_pretrained``
so that ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` works without this package; they import each
other only with single-dot relative imports.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from types import SimpleNamespace

import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align
from transformers import initialization as init
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import (
    BackboneOutput,
    BaseModelOutputWithPoolingAndNoAttention,
    ImageClassifierOutput,
    SemanticSegmenterOutput,
)
from transformers.modeling_utils import PreTrainedModel
from transformers.models.upernet.modeling_upernet import UperNetFCNHead, UperNetHead
from transformers.utils import ModelOutput

from .configuration_di3cl import STAGE_STRIDES, DI3CLConfig
from .di3cl_layers import (
    NO_SAMPLE,
    BatchNorm2dWithSingleValueFallback,
    ProjectionHead,
    check_pixel_values,
    check_pretraining_inputs,
    dice_loss,
    enqueue,
    fill_missing_queue_ids,
    info_nce_logits,
    info_nce_loss,
    momentum_update,
    own_sample_columns,
    regression_loss,
)

# Feature levels used by the pre-training tasks: contour consistency on stage3 (stride 16), global and instance
# tasks on stage4 (stride 32).
CONTOUR_STAGE = 3
GLOBAL_STAGE = 4

# The Auto classes written into ``auto_map`` of every saved DI3CL folder (remote code).
AUTO_MAP = {
    "AutoConfig": "configuration_di3cl.DI3CLConfig",
    "AutoModel": "modeling_di3cl.DI3CLModel",
    "AutoBackbone": "modeling_di3cl.DI3CLBackbone",
    "AutoModelForPreTraining": "modeling_di3cl.DI3CLForPreTraining",
    "AutoModelForSemanticSegmentation": "modeling_di3cl.DI3CLForSemanticSegmentation",
    "AutoModelForImageClassification": "modeling_di3cl.DI3CLForImageClassification",
}


def build_encoder(config: DI3CLConfig) -> nn.Module:
    """Build the timm feature encoder of ``config.backbone`` with random weights (five levels, strides 2..32)."""
    encoder = timm.create_model(
        config.backbone, features_only=True, in_chans=config.num_channels, pretrained=False
    )
    reductions = list(encoder.feature_info.reduction())
    if reductions != STAGE_STRIDES:
        raise ValueError(
            f"DI3CLConfig.backbone={config.backbone!r}: timm feature levels have strides {reductions}, expected "
            f"{STAGE_STRIDES} (a ResNet-like CNN such as resnet18/34/50/101)"
        )
    return encoder


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


@torch.no_grad()
def _concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """``[B, ...]`` on each of W processes -> ``[W * B, ...]`` (rank order); no gradient."""
    tensor = tensor.contiguous()
    gathered = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, tensor)
    return torch.cat(gathered, dim=0)


@dataclass
class DI3CLForPreTrainingOutput(ModelOutput):
    """Output of [`DI3CLForPreTraining`].

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            `global_loss_weight * global_loss + contour_loss_weight * contour_loss + instance_loss_weight *
            instance_loss` (float32).
        global_loss (`torch.FloatTensor` of shape `()`):
            InfoNCE of the stage4 (global) embeddings against the global queue.
        contour_loss (`torch.FloatTensor` of shape `()`):
            InfoNCE of the stage3 (contour consistency) embeddings against the contour queue.
        instance_loss (`torch.FloatTensor` of shape `()`):
            Mean `2 - 2 cos(prediction, key projection)` over the box pairs; exactly 0 when the batch has no boxes
            (see `num_boxes`).
        global_logits (`torch.FloatTensor` of shape `(batch_size, 1 + queue_size)`):
            Positive logit in column 0, then the negatives of the global queue (already divided by the temperature).
        contour_logits (`torch.FloatTensor` of shape `(batch_size, 1 + queue_size)`):
            The same for the contour task.
        global_accuracy (`torch.FloatTensor` of shape `()`):
            Fraction of queries whose positive key is the top-1 logit (global task).
        contour_accuracy (`torch.FloatTensor` of shape `()`):
            The same for the contour task.
        num_boxes (`torch.LongTensor` of shape `()`):
            Number of box pairs that entered the instance term.
    """

    loss: torch.FloatTensor | None = None
    global_loss: torch.FloatTensor | None = None
    contour_loss: torch.FloatTensor | None = None
    instance_loss: torch.FloatTensor | None = None
    global_logits: torch.FloatTensor | None = None
    contour_logits: torch.FloatTensor | None = None
    global_accuracy: torch.FloatTensor | None = None
    contour_accuracy: torch.FloatTensor | None = None
    num_boxes: torch.LongTensor | None = None


class DI3CLPreTrainedModel(PreTrainedModel):
    """Base class of the DI3CL models: weight initialisation, config class, remote-code ``auto_map``."""

    config_class = DI3CLConfig
    config: DI3CLConfig
    base_model_prefix = "di3cl"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False
    # Pre-training-only weights: expected in a pre-training folder, unused by the encoder and segmentation classes.
    _keys_to_ignore_on_load_unexpected = [
        r"momentum_",
        r"global_projector\.",
        r"contour_projector\.",
        r"instance_projector\.",
        r"instance_predictor\.",
        r"global_queue",
        r"contour_queue",
        r"queue_ptr",
        r"queue_ids",
    ]

    def _init_weights(self, module: nn.Module) -> None:
        """torchvision/timm ResNet initialisation (the default of transformers would be N(0, 0.02))."""
        if isinstance(module, nn.Conv2d) and getattr(module, "_di3cl_pixel_classifier", False):
            # Per-pixel classifiers of the segmentation heads start small (N(0, 0.01), zero bias, as in
            # mmsegmentation's decode heads); with the ReLU-fan init the first logits saturate the softmax.
            init.normal_(module.weight, std=0.01)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            # torch's own nn.Linear.reset_parameters
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.weight.shape[1]
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if module.weight is not None:
                init.ones_(module.weight)
                init.zeros_(module.bias)
            if module.running_mean is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, DI3CLForPreTraining):
            # Runs after the children: the momentum twins start as copies of the (new or loaded) query side,
            # the queues as random unit vectors. Loaded tensors carry `_is_hf_initialized` and are left alone.
            for key_tensor, query_tensor in module._momentum_pairs(include_buffers=True):
                init.copy_(key_tensor, query_tensor)
            for queue in (module.global_queue, module.contour_queue):
                init.copy_(queue, F.normalize(torch.randn(queue.shape, dtype=queue.dtype), dim=0))
            init.zeros_(module.queue_ptr)
            init.constant_(module.queue_ids, NO_SAMPLE)
            for momentum_module in module._momentum_modules():  # loaders may rebuild parameters as trainable
                momentum_module.requires_grad_(False)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, with every DI3CL Auto class in the config's ``auto_map``.

        The code files (``configuration_di3cl.py``, ``modeling_di3cl.py``, ``di3cl_layers.py``) are written next to the
        weights, so that any Auto class loads the folder with ``trust_remote_code=True`` without this package.
        """
        self.config.auto_map = dict(AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)


class DI3CLModel(DI3CLPreTrainedModel):
    """The DI3CL encoder alone (the query encoder of pre-training).

    Returns `last_hidden_state` (stage4 map, `[B, C4, H/32, W/32]`), `pooler_output` (its global average, `[B, C4]`)
    and, with `output_hidden_states=True`, the five stage maps (stem, stage1..stage4).
    """

    # the task heads of a fine-tuned folder: `AutoModel.from_pretrained(<segmentation folder>)` is its encoder
    _keys_to_ignore_on_load_unexpected = [
        *DI3CLPreTrainedModel._keys_to_ignore_on_load_unexpected,
        r"decode_head\.",
        r"auxiliary_head\.",
        r"classifier\.",
    ]

    def __init__(self, config: DI3CLConfig) -> None:
        super().__init__(config)
        self.encoder = build_encoder(config)
        self.num_features: list[int] = list(self.encoder.feature_info.channels())
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPoolingAndNoAttention | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised SAR images (see `DI3CLImageProcessor`).
            output_hidden_states (`bool`, *optional*):
                Whether to return the maps of all five stages.
            return_dict (`bool`, *optional*):
                Whether to return a `ModelOutput` instead of a tuple.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        check_pixel_values(pixel_values, self.config)
        feature_maps = self.encoder(pixel_values)
        last_hidden_state = feature_maps[-1]
        pooled = last_hidden_state.mean(dim=(2, 3))
        hidden_states = tuple(feature_maps) if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (last_hidden_state, pooled, hidden_states) if v is not None)
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=last_hidden_state, pooler_output=pooled, hidden_states=hidden_states
        )


class DI3CLBackbone(BackboneMixin, DI3CLPreTrainedModel):
    """The DI3CL encoder as a transformers backbone (`AutoBackbone.from_config`, `load_backbone`).

    `feature_maps` holds the stages of `config.out_features` (`stem`, `stage1`..`stage4`); `channels` their widths.
    """

    has_attentions = False

    def __init__(self, config: DI3CLConfig) -> None:
        super().__init__(config)
        self.encoder = build_encoder(config)
        self.num_features = list(self.encoder.feature_info.channels())
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BackboneOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised SAR images.
            output_hidden_states (`bool`, *optional*):
                Whether to also return the maps of all five stages.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        check_pixel_values(pixel_values, self.config)
        all_maps = self.encoder(pixel_values)
        feature_maps = tuple(all_maps[self.stage_names.index(name)] for name in self.out_features)
        hidden_states = tuple(all_maps) if output_hidden_states else None
        if not return_dict:
            return (feature_maps,) + ((hidden_states,) if hidden_states is not None else ())
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden_states, attentions=None)


class DI3CLForPreTraining(DI3CLPreTrainedModel):
    """DI3CL pre-training: MoCo v2 with contour consistency and dynamic instances (docs/method.md).

    The query encoder is `self.di3cl` (a [`DI3CLModel`]), so `DI3CLModel.from_pretrained(<this model's folder>)`
    yields it. Key side: `momentum_encoder`, `momentum_global_projector`, `momentum_contour_projector`,
    `momentum_instance_projector`, exponential moving averages of their query twins, never receiving gradients.
    Buffers: `global_queue` and `contour_queue` (`[projection_dim, queue_size]`, float32, unit columns),
    `queue_ptr` (`[1]`, long) and `queue_ids` (`[queue_size]`, long): the sample id of every queued key (-1: none).
    When `forward` is given `sample_ids`, a query never uses its own sample's queued keys as negatives (they are
    masked out of the logits): with a corpus not much larger than the queue, every image would otherwise meet
    itself among its negatives many times (docs/method.md, "Queues").

    In training mode each forward first updates the key side (EMA), then encodes the keys, and after the losses
    writes the (gathered) keys into both queues. In eval mode neither happens, so validation leaves the state
    untouched. With `torch.distributed` initialised and more than one process, the key batch is shuffled across
    processes for BatchNorm ("shuffle BN") and the keys of all processes are enqueued; every process must then
    have the same batch size (use `drop_last=True`). Un-shuffling gathers the key stage4 maps (so that each process
    ROI-aligns its own boxes): about `world_size * batch * C4 * (S/32)^2` values per step, ~0.8 MB per image for
    ResNet-50 at 448 px in bf16. Box batch indices must lie in `[0, batch_size)` (not checked, to avoid a device
    synchronisation per step).
    """

    def __init__(self, config: DI3CLConfig) -> None:
        super().__init__(config)
        self.di3cl = DI3CLModel(config)
        widths = self.di3cl.num_features
        contour_width, global_width = widths[CONTOUR_STAGE], widths[GLOBAL_STAGE]
        hidden, dim = config.projection_hidden_dim, config.projection_dim
        self.global_projector = ProjectionHead(global_width, hidden, dim)
        self.contour_projector = ProjectionHead(contour_width, hidden, dim)
        self.instance_projector = ProjectionHead(global_width, hidden, dim, use_batch_norm=True)
        self.instance_predictor = ProjectionHead(dim, hidden, dim, use_batch_norm=True)

        self.momentum_encoder = build_encoder(config)
        self.momentum_global_projector = ProjectionHead(global_width, hidden, dim)
        self.momentum_contour_projector = ProjectionHead(contour_width, hidden, dim)
        self.momentum_instance_projector = ProjectionHead(global_width, hidden, dim, use_batch_norm=True)
        for module in self._momentum_modules():
            module.requires_grad_(False)

        self.register_buffer("global_queue", F.normalize(torch.randn(dim, config.queue_size), dim=0))
        self.register_buffer("contour_queue", F.normalize(torch.randn(dim, config.queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("queue_ids", torch.full((config.queue_size,), NO_SAMPLE, dtype=torch.long))
        # checkpoints written before `queue_ids` existed load with an empty id record
        self._register_load_state_dict_pre_hook(fill_missing_queue_ids, with_module=True)
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`; the loaded momentum twins are then frozen again.

        transformers rebuilds loaded floating-point parameters as trainable; the key side must not be (an optimiser
        or DistributedDataParallel would otherwise expect gradients for it). Missing key-side weights (e.g. when
        starting from an encoder-only folder) are initialised as copies of the loaded query side.
        """
        result = super().from_pretrained(*args, **kwargs)
        model = result[0] if isinstance(result, tuple) else result
        for module in model._momentum_modules():
            module.requires_grad_(False)
        return result

    # ---- key encoder and queues: the only place outside `forward` that touches them (trainers call these) ----

    @torch.no_grad()
    def copy_query_encoder_to_key(self) -> None:
        """Re-initialise the key encoder as a copy of the query encoder (e.g. after loading ImageNet weights)."""
        self.momentum_encoder.load_state_dict(self.di3cl.encoder.state_dict())

    def export_encoder(self) -> DI3CLModel:
        """A standalone [`DI3CLModel`] holding the query encoder's weights (float32, on CPU, contiguous, eval)."""
        encoder = DI3CLModel(self.config)
        state = {
            key: value.detach().to("cpu", torch.float32) if value.is_floating_point() else value.cpu()
            for key, value in self.di3cl.state_dict().items()
        }
        encoder.load_state_dict(state, strict=True)
        return encoder.to(memory_format=torch.contiguous_format).eval()

    def queue_snapshot(self, num_keys: int) -> dict[str, torch.Tensor]:
        """Remember the queue columns the next forward (enqueuing `num_keys` keys) will overwrite, and the pointer,
        so that [`~DI3CLForPreTraining.restore_queues`] can undo that forward's enqueue (a skipped step)."""
        queue_size = self.global_queue.shape[1]
        columns = (torch.arange(num_keys, device=self.queue_ptr.device) + self.queue_ptr) % queue_size
        return {
            "queue_ptr": self.queue_ptr.clone(),
            "columns": columns,
            "global_queue": self.global_queue.index_select(1, columns).clone(),
            "contour_queue": self.contour_queue.index_select(1, columns).clone(),
            "queue_ids": self.queue_ids.index_select(0, columns).clone(),
        }

    @torch.no_grad()
    def restore_queues(self, snapshot: dict[str, torch.Tensor]) -> None:
        """Put back the queue columns and pointer saved by [`~DI3CLForPreTraining.queue_snapshot`]."""
        for name in ("global_queue", "contour_queue"):
            getattr(self, name).index_copy_(1, snapshot["columns"], snapshot[name])
        if "queue_ids" in snapshot:
            self.queue_ids.index_copy_(0, snapshot["columns"], snapshot["queue_ids"])
        self.queue_ptr.copy_(snapshot["queue_ptr"])

    def queue_digest(self) -> str:
        """SHA-256 digests of both queues and the pointer: equal strings mean bit-identical queue states (the
        trainer compares them across processes)."""

        def digest(tensor: torch.Tensor) -> str:
            array = tensor.detach().to("cpu").contiguous()
            return hashlib.sha256(
                array.view(torch.uint8).numpy().tobytes() if array.numel() else b""
            ).hexdigest()

        digests = f"{digest(self.global_queue)}{digest(self.contour_queue)}{digest(self.queue_ids)}"
        return f"{digests}@{int(self.queue_ptr)}"

    def _query_modules(self) -> list[nn.Module]:
        return [self.di3cl.encoder, self.global_projector, self.contour_projector, self.instance_projector]

    def _momentum_modules(self) -> list[nn.Module]:
        return [
            self.momentum_encoder,
            self.momentum_global_projector,
            self.momentum_contour_projector,
            self.momentum_instance_projector,
        ]

    def _momentum_pairs(self, include_buffers: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(key tensor, query tensor) pairs of the momentum twins: parameters, plus buffers if asked."""
        pairs = []
        for key_module, query_module in zip(self._momentum_modules(), self._query_modules(), strict=True):
            pairs += list(zip(key_module.parameters(), query_module.parameters(), strict=True))
            if include_buffers:
                pairs += list(zip(key_module.buffers(), query_module.buffers(), strict=True))
        return pairs

    @torch.no_grad()
    def momentum_update(self) -> None:
        """EMA of the key side: `key = momentum * key + (1 - momentum) * query` (parameters only, not BN buffers)."""
        pairs = self._momentum_pairs()
        key_params = [key for key, _ in pairs]
        for key in key_params:
            if key.requires_grad:  # e.g. after a loader rebuilt the parameters
                key.requires_grad_(False)
        momentum_update(key_params, [query.detach() for _, query in pairs], self.config.momentum)

    def _roi_features(self, feature_map: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """ROI-Align 1x1 of `boxes` (`[N, 5]`, input pixels) on a stage4 map -> `[N, C4]` (float32)."""
        return roi_align(
            feature_map.float(),
            boxes.float(),
            output_size=1,
            spatial_scale=1.0 / STAGE_STRIDES[GLOBAL_STAGE],
            sampling_ratio=0,
            aligned=True,
        ).flatten(1)

    @torch.no_grad()
    def _key_feature_maps(self, key_pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Key encoder -> (stage4 map `[B, C4, h, w]`, pooled stage3 `[B, C3]`), with shuffle BN across processes."""
        world_size = _world_size()
        if world_size == 1:
            maps = self.momentum_encoder(key_pixel_values)
            return maps[GLOBAL_STAGE], maps[CONTOUR_STAGE].mean(dim=(2, 3))
        rank = torch.distributed.get_rank()
        all_images = _concat_all_gather(key_pixel_values)
        shuffle = torch.randperm(all_images.shape[0], device=all_images.device)
        torch.distributed.broadcast(shuffle, src=0)
        unshuffle = torch.argsort(shuffle)
        maps = self.momentum_encoder(all_images[shuffle.view(world_size, -1)[rank]])
        # Un-shuffle: every process takes back the features of its own images.
        own = unshuffle.view(world_size, -1)[rank]
        global_map = _concat_all_gather(maps[GLOBAL_STAGE])[own]
        contour_pooled = _concat_all_gather(maps[CONTOUR_STAGE].mean(dim=(2, 3)))[own]
        return global_map, contour_pooled

    def _queue_logits(
        self, query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, sample_ids: torch.Tensor | None
    ) -> torch.Tensor:
        """InfoNCE logits against `queue` (cloned: the queues are overwritten in place before backward), with the
        queued keys of each query's own sample masked out when `sample_ids` are given."""
        logits = info_nce_logits(query, key, queue.clone(), self.config.temperature)
        if sample_ids is not None:
            logits = logits.masked_fill(own_sample_columns(sample_ids, self.queue_ids), float("-inf"))
        return logits

    @torch.no_grad()
    def _enqueue_keys(
        self, key_global: torch.Tensor, key_contour: torch.Tensor, sample_ids: torch.Tensor | None
    ) -> None:
        """Write the (gathered) keys into both queues and their sample ids (or `NO_SAMPLE`) into `queue_ids`."""
        keys = [key_global, key_contour]
        ids = sample_ids if sample_ids is not None else torch.full_like(self.queue_ptr, NO_SAMPLE)
        ids = ids.to(self.queue_ids.device, torch.long).expand(key_global.shape[0])
        if _world_size() > 1:
            keys = [_concat_all_gather(key) for key in keys]
            ids = _concat_all_gather(ids.contiguous())
        columns = enqueue([self.global_queue, self.contour_queue], keys, self.queue_ptr)
        self.queue_ids.index_copy_(0, columns.to(self.queue_ids.device), ids)

    def _query_embeddings(
        self, pixel_values: torch.Tensor, boxes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Query side: global (stage4) and contour (stage3) projections, and the instance predictions of `boxes`
        (`None` without boxes)."""
        maps = self.di3cl.encoder(pixel_values)
        global_map = maps[GLOBAL_STAGE]
        global_embedding = self.global_projector(global_map.mean(dim=(2, 3)))
        contour_embedding = self.contour_projector(maps[CONTOUR_STAGE].mean(dim=(2, 3)))
        if boxes.shape[0] == 0:
            return global_embedding, contour_embedding, None
        regions = self.instance_projector(self._roi_features(global_map, boxes))
        return global_embedding, contour_embedding, self.instance_predictor(regions)

    @torch.no_grad()
    def _key_embeddings(
        self, key_pixel_values: torch.Tensor, boxes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Key side (momentum encoder and projectors): global and contour keys, instance targets of `boxes`."""
        global_map, contour_pooled = self._key_feature_maps(key_pixel_values)
        global_key = self.momentum_global_projector(global_map.mean(dim=(2, 3)))
        contour_key = self.momentum_contour_projector(contour_pooled)
        if boxes.shape[0] == 0:
            return global_key, contour_key, None
        return (
            global_key,
            contour_key,
            self.momentum_instance_projector(self._roi_features(global_map, boxes)),
        )

    def _zero_instance_loss(self) -> torch.Tensor:
        """The instance term when no box pair exists: a zero that still touches the instance heads, so that every
        parameter takes part in the graph (DistributedDataParallel expects it) and its gradient is exactly zero."""
        heads = [*self.instance_projector.parameters(), *self.instance_predictor.parameters()]
        return sum(parameter.float().sum() for parameter in heads) * 0.0

    # The three DI3CL tasks read top to bottom in docs/method.md's order (query, key, global, contour, instance,
    # enqueue); input checks and the empty-box instance term are helpers.
    def forward(
        self,
        pixel_values: torch.Tensor,
        key_pixel_values: torch.Tensor,
        query_boxes: torch.Tensor | None = None,
        key_boxes: torch.Tensor | None = None,
        sample_ids: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DI3CLForPreTrainingOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                The query view (view 1).
            key_pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                The key view (view 2) of the same images.
            query_boxes (`torch.FloatTensor` of shape `(num_boxes, 5)`, *optional*):
                `(batch_index, x1, y1, x2, y2)` in input pixels of the query view. Row i pairs with row i of
                `key_boxes`. `num_boxes` may be 0 (no overlapping views): the instance term is then 0.
            key_boxes (`torch.FloatTensor` of shape `(num_boxes, 5)`, *optional*):
                The same physical regions in the key view.
            sample_ids (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Id of the source sample of each image (e.g. its index in the corpus; non-negative). Queued keys of
                the same sample are not used as negatives of its queries, and the ids are queued with the keys.
                Without them (and for queued keys that came without), every queued key is a negative.
            return_dict (`bool`, *optional*):
                Whether to return a `DI3CLForPreTrainingOutput` instead of a tuple.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        config = self.config
        query_boxes, key_boxes = check_pretraining_inputs(
            pixel_values, key_pixel_values, query_boxes, key_boxes, config
        )
        num_boxes = query_boxes.shape[0]

        query_global, query_contour, prediction = self._query_embeddings(pixel_values, query_boxes)
        # Key side: EMA first (MoCo's order), then the keys, without gradients.
        with torch.no_grad():
            if self.training:
                self.momentum_update()
            key_global, key_contour, key_instance = self._key_embeddings(key_pixel_values, key_boxes)

        # Losses in float32, whatever autocast is active.
        with torch.autocast(device_type=pixel_values.device.type, enabled=False):
            query_global = F.normalize(query_global.float(), dim=1)
            query_contour = F.normalize(query_contour.float(), dim=1)
            key_global = F.normalize(key_global.float(), dim=1)
            key_contour = F.normalize(key_contour.float(), dim=1)
            global_logits = self._queue_logits(query_global, key_global, self.global_queue, sample_ids)
            contour_logits = self._queue_logits(query_contour, key_contour, self.contour_queue, sample_ids)
            global_loss, global_accuracy = info_nce_loss(global_logits)
            contour_loss, contour_accuracy = info_nce_loss(contour_logits)
            has_boxes = num_boxes > 0
            instance_loss = (
                regression_loss(prediction, key_instance) if has_boxes else self._zero_instance_loss()
            )
            loss = (
                config.global_loss_weight * global_loss
                + config.contour_loss_weight * contour_loss
                + config.instance_loss_weight * instance_loss
            )

        if self.training:
            self._enqueue_keys(key_global, key_contour, sample_ids)

        output = DI3CLForPreTrainingOutput(
            loss=loss,
            global_loss=global_loss.detach(),
            contour_loss=contour_loss.detach(),
            instance_loss=instance_loss.detach(),
            global_logits=global_logits.detach(),
            contour_logits=contour_logits.detach(),
            global_accuracy=global_accuracy,
            contour_accuracy=contour_accuracy,
            num_boxes=torch.tensor(num_boxes, device=pixel_values.device),
        )
        return output if return_dict else output.to_tuple()


class DI3CLForSemanticSegmentation(DI3CLPreTrainedModel):
    """DI3CL encoder + UperNet decoder (transformers' `UperNetHead`) + auxiliary FCN head on stage3.

    `DI3CLForSemanticSegmentation.from_pretrained(<any DI3CL folder>, num_labels=..., id2label=...)` loads the
    (query) encoder and initialises the heads. Logits are upsampled to the input size. The loss is cross-entropy
    with `config.semantic_loss_ignore_index` (+ a soft Dice term with `segmentation_loss="ce+dice"`), plus
    `auxiliary_loss_weight` times the same loss of the auxiliary head.

    Batch of one in training mode: the pyramid-pooling branch of scale 1 sees a `[1, C, 1, 1]` map on which
    BatchNorm cannot compute statistics; that branch falls back to its running statistics instead of failing.
    """

    def __init__(self, config: DI3CLConfig) -> None:
        super().__init__(config)
        self.di3cl = DI3CLModel(config)
        in_channels = self.di3cl.num_features[1:]  # stage1..stage4
        head_config = SimpleNamespace(
            pool_scales=tuple(config.pool_scales),
            hidden_size=config.decoder_hidden_size,
            num_labels=config.num_labels,
            auxiliary_in_channels=None,
            auxiliary_channels=config.auxiliary_channels,
            auxiliary_num_convs=1,
            auxiliary_concat_input=False,
        )
        self.decode_head = UperNetHead(head_config, in_channels=in_channels)
        for block, scale in zip(self.decode_head.psp_modules.blocks, config.pool_scales, strict=True):
            if scale == 1:
                conv_module = block.layers[1]
                fallback = BatchNorm2dWithSingleValueFallback(conv_module.batch_norm.num_features)
                conv_module.batch_norm = fallback
        self.auxiliary_head = (
            UperNetFCNHead(head_config, in_channels=in_channels, in_index=2)
            if config.use_auxiliary_head
            else None
        )
        for head in (self.decode_head, self.auxiliary_head):
            if head is not None:
                head.classifier._di3cl_pixel_classifier = True  # read by _init_weights
        self.post_init()

    def _segmentation_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ignore_index = self.config.semantic_loss_ignore_index
        logits = logits.float()
        if (labels != ignore_index).any():
            loss = F.cross_entropy(logits, labels, ignore_index=ignore_index)
        else:  # every pixel ignored: cross_entropy would give NaN
            loss = logits.sum() * 0.0
        if self.config.segmentation_loss == "ce+dice":
            loss = loss + self.config.dice_loss_weight * dice_loss(logits, labels, ignore_index)
        return loss

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SemanticSegmenterOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised SAR images.
            labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
                Class index per pixel; `config.semantic_loss_ignore_index` marks pixels left out of the loss.
            output_hidden_states (`bool`, *optional*):
                Whether to return the encoder's five stage maps.
            return_dict (`bool`, *optional*):
                Whether to return a `SemanticSegmenterOutput` instead of a tuple.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if labels is not None and labels.shape != (pixel_values.shape[0], *pixel_values.shape[2:]):
            raise ValueError(
                f"labels: shape {tuple(labels.shape)}, expected [batch, height, width] = "
                f"{(pixel_values.shape[0], *pixel_values.shape[2:])}"
            )
        encoder_outputs = self.di3cl(pixel_values, output_hidden_states=True, return_dict=True)
        features = list(encoder_outputs.hidden_states[1:])  # stage1..stage4
        size = pixel_values.shape[2:]
        logits = F.interpolate(self.decode_head(features), size=size, mode="bilinear", align_corners=False)

        loss = None
        if labels is not None:
            labels = labels.long()
            loss = self._segmentation_loss(logits, labels)
            if self.auxiliary_head is not None:
                auxiliary_logits = F.interpolate(
                    self.auxiliary_head(features), size=size, mode="bilinear", align_corners=False
                )
                loss = loss + self.config.auxiliary_loss_weight * self._segmentation_loss(
                    auxiliary_logits, labels
                )

        hidden_states = encoder_outputs.hidden_states if output_hidden_states else None
        if not return_dict:
            output = (logits,) + ((hidden_states,) if hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return SemanticSegmenterOutput(loss=loss, logits=logits, hidden_states=hidden_states, attentions=None)


class DI3CLForImageClassification(DI3CLPreTrainedModel):
    """DI3CL encoder + global average pooling of the last stage + optional dropout + linear classifier.

    `DI3CLForImageClassification.from_pretrained(<any DI3CL folder>, num_labels=..., id2label=..., label2id=...)`
    reuses the (query) encoder and initialises the new linear head; label names travel in `config.id2label`, so
    `pipeline("image-classification", model=folder)` returns them. Dropout before the classifier is
    `config.classifier_dropout` (default 0; pass it to the config or to `from_pretrained`). With `labels` the loss is
    transformers' image-classification loss: cross-entropy for integer labels and `num_labels > 1` (regression or
    multi-label BCE when `config.problem_type` says so).
    """

    def __init__(self, config: DI3CLConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.di3cl = DI3CLModel(config)
        self.dropout = nn.Dropout(float(getattr(config, "classifier_dropout", None) or 0.0))
        hidden_size = self.di3cl.num_features[-1]
        self.classifier = (
            nn.Linear(hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised SAR images (see `DI3CLImageProcessor`).
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Class index per image in `[0, config.num_labels - 1]`.
            output_hidden_states (`bool`, *optional*):
                Whether to return the encoder's five stage maps.
            return_dict (`bool`, *optional*):
                Whether to return an `ImageClassifierOutput` instead of a tuple.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        encoder_outputs = self.di3cl(
            pixel_values, output_hidden_states=output_hidden_states, return_dict=True
        )
        logits = self.classifier(self.dropout(encoder_outputs.pooler_output))

        loss = None
        if labels is not None:
            if labels.shape[0] != pixel_values.shape[0]:
                raise ValueError(
                    f"labels: {labels.shape[0]} labels for a batch of {pixel_values.shape[0]} images"
                )
            loss = self.loss_function(labels, logits.float(), self.config)

        hidden_states = encoder_outputs.hidden_states
        if not return_dict:
            output = (logits,) + ((hidden_states,) if hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states, attentions=None)


DI3CLModel.register_for_auto_class("AutoModel")
DI3CLBackbone.register_for_auto_class("AutoBackbone")
DI3CLForPreTraining.register_for_auto_class("AutoModelForPreTraining")
DI3CLForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
DI3CLForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "DI3CLBackbone",
    "DI3CLForImageClassification",
    "DI3CLForPreTraining",
    "DI3CLForPreTrainingOutput",
    "DI3CLForSemanticSegmentation",
    "DI3CLModel",
    "DI3CLPreTrainedModel",
]
