"""Building blocks of DI3CL: projection heads, losses, the negative-key queue, conv1 channel adaptation and the
linear probe of a frozen encoder.

Small, config-free modules and functions; tensor shapes are given in the docstrings. Imported relatively by
``modeling_di3cl.py`` (and therefore shipped with remote code): only torch / timm imports here, and
transformers' output classes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SemanticSegmenterOutput


class BatchNormWithSingleValueFallback(nn.BatchNorm1d):
    """``BatchNorm1d`` that uses its running statistics when a training batch has a single value per channel.

    Plain BatchNorm raises on such a batch ("Expected more than 1 value per channel when training"); DI3CL's instance
    head sees one box when only one pair of views overlaps. Batch statistics of one sample are meaningless, so the
    running statistics are used for that step (and not updated). The state dict is that of ``nn.BatchNorm1d``.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.training and input.numel() // max(input.shape[1], 1) <= 1:
            return F.batch_norm(
                input, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(input)


class BatchNorm2dWithSingleValueFallback(nn.BatchNorm2d):
    """``BatchNorm2d`` with the same single-value fallback as :class:`BatchNormWithSingleValueFallback`.

    Used in the UperNet pyramid-pooling branch of scale 1, whose output is ``[B, C, 1, 1]``: with a training batch of
    one image it would otherwise fail.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.training and input.numel() // max(input.shape[1], 1) <= 1:
            return F.batch_norm(
                input, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(input)


class ProjectionHead(nn.Module):
    """Two-layer MLP ``Linear -> [BatchNorm1d] -> ReLU -> Linear``.

    Without BatchNorm (the global and contour projectors) the layers are ``net.0`` (Linear), ``net.1`` (ReLU),
    ``net.2`` (Linear); with it (instance projector and predictor) ``net.0``, ``net.1`` (BatchNorm1d), ``net.2``
    (ReLU), ``net.3`` — the released checkpoint's names.

    Args:
        input_dim: Size of the input vectors.
        hidden_dim: Hidden size.
        output_dim: Output size.
        use_batch_norm: Whether to put a BatchNorm1d after the first Linear.

    Shapes: ``[N, input_dim] -> [N, output_dim]``.
    """

    def __init__(
        self, input_dim: int, hidden_dim: int, output_dim: int, use_batch_norm: bool = False
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(input_dim, hidden_dim)]
        if use_batch_norm:
            layers.append(BatchNormWithSingleValueFallback(hidden_dim))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, output_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def info_nce_logits(query: torch.Tensor, positive_key: torch.Tensor, queue: torch.Tensor, temperature: float):
    """MoCo logits: the positive similarity in column 0, the queue's negatives after it.

    Args:
        query: ``[B, D]`` L2-normalised query embeddings.
        positive_key: ``[B, D]`` L2-normalised key embeddings (row i is the positive of query row i).
        queue: ``[D, K]`` L2-normalised negative keys.
        temperature: Softmax temperature.

    Returns:
        ``[B, 1 + K]`` float32 logits; the target class is 0 for every row.
    """
    query = query.float()
    positive = torch.einsum("bd,bd->b", query, positive_key.float()).unsqueeze(1)  # [B, 1]
    negatives = torch.einsum("bd,dk->bk", query, queue.float())  # [B, K]
    return torch.cat([positive, negatives], dim=1) / temperature


def info_nce_loss(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of MoCo logits with target 0, and the top-1 accuracy (fraction in [0, 1]).

    Args:
        logits: ``[B, 1 + K]`` logits from :func:`info_nce_logits`.

    Returns:
        ``(loss, accuracy)``, two scalar float32 tensors.
    """
    targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    loss = F.cross_entropy(logits.float(), targets)
    accuracy = (logits.argmax(dim=1) == 0).float().mean()
    return loss, accuracy


def regression_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL regression loss ``2 - 2 cos(prediction, target)``, averaged over rows.

    Args:
        prediction: ``[N, D]`` predictor outputs (query side).
        target: ``[N, D]`` key-side projections (no gradient expected).

    Returns:
        Scalar float32 loss; for ``N == 0`` the caller must not call this (the mean would be NaN).
    """
    prediction = F.normalize(prediction.float(), dim=1)
    target = F.normalize(target.float(), dim=1)
    return (2.0 - 2.0 * (prediction * target).sum(dim=1)).mean()


@torch.no_grad()
def enqueue(queues: list[torch.Tensor], keys: list[torch.Tensor], pointer: torch.Tensor) -> torch.Tensor:
    """Write each ``keys[i]`` into ``queues[i]`` at the shared ``pointer``, wrapping around, in place.

    Args:
        queues: ``[D, K]`` float buffers sharing one pointer (DI3CL: the global and the contour queue).
        keys: ``[N, D]`` new keys for each queue, ``N <= K`` (cast to the queue's dtype, fp32 in DI3CL).
        pointer: ``[1]`` long buffer, the next column to write; advanced by ``N`` modulo ``K``.

    Returns:
        The ``N`` columns written (e.g. to record what each key belongs to in a buffer of the same ``K``).
    """
    queue_size = queues[0].shape[1]
    num_keys = keys[0].shape[0]
    if num_keys > queue_size:
        raise ValueError(
            f"enqueue: {num_keys} keys do not fit a queue of {queue_size} columns; raise queue_size"
        )
    # Pointer arithmetic stays on the device: no host synchronisation per step.
    columns = (torch.arange(num_keys, device=pointer.device) + pointer) % queue_size
    for queue, new_keys in zip(queues, keys, strict=True):
        queue.index_copy_(1, columns.to(queue.device), new_keys.detach().to(queue.dtype).t())
    pointer.copy_((pointer + num_keys) % queue_size)
    return columns


@torch.no_grad()
def momentum_update(
    key_tensors: list[torch.Tensor], query_tensors: list[torch.Tensor], momentum: float
) -> None:
    """In-place EMA ``key = momentum * key + (1 - momentum) * query`` over matching lists of tensors."""
    if not key_tensors:
        return
    torch._foreach_mul_(key_tensors, momentum)
    torch._foreach_add_(key_tensors, query_tensors, alpha=1.0 - momentum)


def adapt_input_conv_weight(weight: torch.Tensor, num_channels: int) -> torch.Tensor:
    """Adapt a first-conv kernel ``[O, I, kh, kw]`` to ``num_channels`` input channels (timm's rule).

    1 channel: the kernels are summed over the input channels; other counts: the kernels are repeated and rescaled
    by ``I / num_channels`` so that the output scale is kept. Wraps :func:`timm.models.adapt_input_conv`.
    """
    from timm.models import adapt_input_conv

    return adapt_input_conv(num_channels, weight)


NO_SAMPLE = -1
"""`queue_ids` value of a queued key whose sample is unknown (never masked)."""


def own_sample_columns(sample_ids: torch.Tensor, queue_ids: torch.Tensor) -> torch.Tensor:
    """`[B, 1 + K]` mask of the logits to drop: the queued keys (columns 1..K) that came from each query's own
    sample. Column 0 (the positive) is never masked; ids of `NO_SAMPLE` never match."""
    sample_ids = sample_ids.to(queue_ids.device, torch.long).reshape(-1, 1)
    own = (queue_ids.unsqueeze(0) == sample_ids) & (sample_ids != NO_SAMPLE)
    return torch.cat([torch.zeros_like(own[:, :1]), own], dim=1)


def fill_missing_queue_ids(module, state_dict, prefix, *args) -> None:
    """`load_state_dict` pre-hook: a state without `queue_ids` (written before it existed) gets an empty one."""
    key = f"{prefix}queue_ids"
    queue = state_dict.get(f"{prefix}global_queue")
    if key not in state_dict and queue is not None:
        state_dict[key] = torch.full((queue.shape[1],), NO_SAMPLE, dtype=torch.long)


def dice_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, smooth: float = 1.0
) -> torch.Tensor:
    """Soft multi-class Dice loss, ignoring pixels labelled `ignore_index`.

    Args:
        logits: `[B, L, H, W]` class scores.
        labels: `[B, H, W]` integer labels.
        ignore_index: Label value that is left out.
        smooth: Additive smoothing of numerator and denominator.

    Returns:
        Scalar float32: `1 - mean over classes of (2 |P ∩ T| + s) / (|P| + |T| + s)`.
    """
    num_labels = logits.shape[1]
    valid = (labels != ignore_index).unsqueeze(1).float()  # [B, 1, H, W]
    probabilities = logits.float().softmax(dim=1) * valid
    targets = F.one_hot(torch.where(labels == ignore_index, 0, labels), num_labels)  # [B, H, W, L]
    targets = targets.permute(0, 3, 1, 2).float() * valid
    dims = (0, 2, 3)
    intersection = (probabilities * targets).sum(dims)
    cardinality = probabilities.sum(dims) + targets.sum(dims)
    return 1.0 - ((2.0 * intersection + smooth) / (cardinality + smooth)).mean()


def check_pixel_values(pixel_values: torch.Tensor, config, name: str = "pixel_values") -> None:
    """Raise ValueError unless `pixel_values` is `[batch, config.num_channels, height, width]`."""
    if pixel_values.ndim != 4 or pixel_values.shape[1] != config.num_channels:
        raise ValueError(
            f"{name}: shape {tuple(pixel_values.shape)}, expected [batch, {config.num_channels}, height, width] "
            f"(config.num_channels={config.num_channels})"
        )


def check_pretraining_inputs(
    pixel_values: torch.Tensor,
    key_pixel_values: torch.Tensor,
    query_boxes: torch.Tensor | None,
    key_boxes: torch.Tensor | None,
    config,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check both views and the paired boxes of a pre-training forward; missing boxes become `[0, 5]` tensors."""
    check_pixel_values(pixel_values, config)
    check_pixel_values(key_pixel_values, config, "key_pixel_values")
    if key_pixel_values.shape != pixel_values.shape:
        raise ValueError(
            f"key_pixel_values: shape {tuple(key_pixel_values.shape)}, expected the shape of pixel_values "
            f"{tuple(pixel_values.shape)}"
        )
    empty = pixel_values.new_zeros((0, 5), dtype=torch.float32)
    query_boxes = empty if query_boxes is None else query_boxes
    key_boxes = empty if key_boxes is None else key_boxes
    for name, boxes in (("query_boxes", query_boxes), ("key_boxes", key_boxes)):
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise ValueError(f"{name}: shape {tuple(boxes.shape)}, expected [num_boxes, 5]")
    if query_boxes.shape[0] != key_boxes.shape[0]:
        raise ValueError(
            f"query_boxes has {query_boxes.shape[0]} rows and key_boxes {key_boxes.shape[0]}: they must pair up"
        )
    return query_boxes, key_boxes


class LinearProbeHead(nn.Module):
    """BatchNorm + 1x1 convolution on the deepest encoder features, upsampled bilinearly: the linear
    probe of the frozen encoder. Shapes: ``[B, C4, h, w] -> [B, num_labels, h, w]``."""

    def __init__(self, in_channels: int, num_labels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels, affine=False)
        self.classifier = nn.Conv2d(in_channels, num_labels, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.norm(features))


class LinearProbeModel(nn.Module):
    """A frozen DI3CL segmentation model's encoder (``model.base_model``) + :class:`LinearProbeHead`, returning
    ``SemanticSegmenterOutput`` with logits at the input size (cross-entropy with ``labels``, ignoring
    ``config.semantic_loss_ignore_index``)."""

    def __init__(self, model: nn.Module, head: LinearProbeHead) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.ignore_index = model.config.semantic_loss_ignore_index

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
        with torch.no_grad():
            features = self.model.base_model(pixel_values=pixel_values).last_hidden_state
        logits = F.interpolate(self.head(features.float()), size=pixel_values.shape[-2:], mode="bilinear")
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits, labels, ignore_index=self.ignore_index)
        return SemanticSegmenterOutput(loss=loss, logits=logits)


__all__ = [
    "check_pixel_values",
    "check_pretraining_inputs",
    "BatchNorm2dWithSingleValueFallback",
    "BatchNormWithSingleValueFallback",
    "LinearProbeHead",
    "LinearProbeModel",
    "NO_SAMPLE",
    "ProjectionHead",
    "adapt_input_conv_weight",
    "dice_loss",
    "enqueue",
    "fill_missing_queue_ids",
    "info_nce_logits",
    "info_nce_loss",
    "momentum_update",
    "own_sample_columns",
    "regression_loss",
]
