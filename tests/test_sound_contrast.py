"""Issue #24: id-masked negatives, crops from whole scenes, the queue/corpus warning and the online monitor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from di3cl_hf import DI3CLForPreTraining
from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor
from di3cl_hf.modeling_di3cl import NO_SAMPLE
from di3cl_hf.training.monitor import ProbeMonitor, cell_labels, load_probe_data, ridge_probe_iou
from di3cl_hf.training.pretraining_data import (
    MapPretrainingDataset,
    crops_per_image,
    random_crop,
    seeded_rng,
    warn_queue_vs_corpus,
)


def _views(batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.randn(batch_size, 1, 64, 64, generator=generator),
        "key_pixel_values": torch.randn(batch_size, 1, 64, 64, generator=generator),
    }


def test_a_sample_is_never_its_own_negative(tiny_config):
    model = DI3CLForPreTraining(tiny_config(num_channels=1)).train()  # queue 64, batch 4
    ids = [torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7]), torch.tensor([0, 1, 8, 9])]
    for step, sample_ids in enumerate(ids[:2]):
        model(**_views(4, step), sample_ids=sample_ids)
    assert model.queue_ids[:8].tolist() == list(range(8)) and (model.queue_ids[8:] == NO_SAMPLE).all()
    out = model(**_views(4, 2), sample_ids=ids[2])
    for logits in (out.global_logits, out.contour_logits):
        negatives = logits[:, 1:]
        # queries of samples 0 and 1 lose exactly their own queued key; 8 and 9 have none queued
        assert torch.isneginf(negatives[0, 0]) and torch.isneginf(negatives[1, 1])
        assert torch.isneginf(negatives).sum() == 2
        assert torch.isfinite(logits[:, 0]).all()  # the positive is never masked
    assert torch.isfinite(out.loss)
    # the masked key changes the loss: without ids the same state gives another (lower-logit-free) value
    assert model.queue_ids[8:12].tolist() == [0, 1, 8, 9]


def test_masking_changes_the_loss_only_through_own_keys(tiny_config):
    torch.manual_seed(0)
    model = DI3CLForPreTraining(tiny_config(num_channels=1)).eval()
    model.queue_ids[:4] = torch.tensor([5, 6, 7, 8])
    batch = _views(4, 1)
    unrelated = model(**batch, sample_ids=torch.tensor([0, 1, 2, 3]))
    plain = model(**batch)
    torch.testing.assert_close(unrelated.global_logits, plain.global_logits)  # no id matches: no change
    own = model(**batch, sample_ids=torch.tensor([5, 6, 7, 8]))
    assert own.global_loss < plain.global_loss  # a masked negative can only lower the InfoNCE loss
    # eval mode leaves the queue and its ids alone
    assert model.queue_ids[:4].tolist() == [5, 6, 7, 8] and int(model.queue_ptr) == 0


def test_skipped_step_restores_queue_ids(tiny_config):
    model = DI3CLForPreTraining(tiny_config(num_channels=1)).train()
    snapshot = model.queue_snapshot(4)
    before = model.queue_digest()
    model(**_views(4, 0), sample_ids=torch.tensor([1, 2, 3, 4]))
    assert model.queue_digest() != before
    model.restore_queues(snapshot)
    assert model.queue_digest() == before


def test_state_without_queue_ids_loads(tiny_config, tmp_path):
    model = DI3CLForPreTraining(tiny_config(num_channels=1))
    state = {k: v for k, v in model.state_dict().items() if k != "queue_ids"}
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "old.safetensors")
    fresh = DI3CLForPreTraining(tiny_config(num_channels=1))
    fresh.queue_ids.fill_(3)
    fresh.load_state_dict(load_file(tmp_path / "old.safetensors"), strict=True)
    assert (fresh.queue_ids == NO_SAMPLE).all()


def test_crops_follow_area_and_stay_inside():
    assert crops_per_image([(1, 1024, 1024), (1, 256, 256), (1, 100, 90), (2, 300, 256)], 256) == [
        16,
        1,
        1,
        2,
    ]
    assert crops_per_image([(1, 1024, 1024)], 0) == [1]
    image = np.arange(1 * 40 * 50, dtype=np.float32).reshape(1, 40, 50)
    valid = np.ones((40, 50), bool)
    with seeded_rng(3):
        crop, crop_valid = random_crop(image, valid, 16)
    with seeded_rng(3):
        again, _ = random_crop(image, valid, 16)
    assert crop.shape == (1, 16, 16) and crop_valid.shape == (16, 16)
    np.testing.assert_array_equal(crop, again)  # seeded: a resumed run cuts the same crop
    top, left = divmod(int(crop[0, 0, 0]), 50)
    np.testing.assert_array_equal(crop[0], image[0, top : top + 16, left : left + 16])
    small, _ = random_crop(image, None, 64)
    assert small.shape == (1, 40, 50)


def test_draws_carry_their_image_as_sample_id():
    dataset = [{"image": i} for i in range(3)]
    views = MapPretrainingDataset(
        dataset, lambda example, seed: {"x": example["image"]}, seed=0, draws=[2, 1, 3]
    )
    assert len(views) == 6 and views.num_images == 3
    ids = [views[(0, draw)][1]["sample_id"] for draw in range(6)]
    assert ids == [0, 0, 1, 2, 2, 2]
    assert [views[(0, draw)][1]["x"] for draw in range(6)] == ids


def test_queue_larger_than_corpus_warns():
    assert warn_queue_vs_corpus(2048, 2276, masked=True) is None
    with pytest.warns(UserWarning, match="4096 > 1600 distinct images.*among its negatives"):
        warn_queue_vs_corpus(4096, 1600, masked=False)
    with pytest.warns(UserWarning, match="masked out"):
        warn_queue_vs_corpus(4096, 1600, masked=True)


def test_cell_labels_majority_and_ignore():
    label = np.zeros((32, 32), np.int64)
    label[:16, :16] = 1  # a full water cell
    label[:16, 16:] = 255  # an unlabelled cell
    label[16:, :16][:10] = 1  # 10 of 16 rows water: majority water
    label[16:, 16:][:4] = 1  # 4 of 16 rows: land
    assert cell_labels(label).tolist() == [[1, -1], [1, 0]]


def test_ridge_probe_separates_a_linear_feature():
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(8, 4, 4, generator=generator) > 0.7).long()
    features = torch.randn(8, 6, 4, 4, generator=generator) * 0.1
    features[:, 2] += labels.float() * 2  # one feature carries the label
    fit = torch.arange(8) % 2 == 0
    assert ridge_probe_iou(features, labels, fit) == pytest.approx(1.0)
    noise = torch.randn(8, 6, 4, 4, generator=generator)
    assert ridge_probe_iou(noise, labels, fit) < 0.9


class _Encoder(torch.nn.Module):
    """A stand-in `features_only` encoder whose stage3 features are the input's mean (times ``gain``)."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1, bias=False)
        self.gain = gain

    def forward(self, x):
        stage3 = torch.nn.functional.avg_pool2d(x, 16) * self.gain
        noise = torch.randn(stage3.shape, generator=torch.Generator().manual_seed(1))
        return [stage3 + noise, torch.nn.functional.avg_pool2d(stage3, 2)]


def _probe_folder(tmp_path):
    from di3cl_hf.data.sario import write_geotiff

    rng = np.random.default_rng(0)
    for index in range(6):
        label = np.zeros((64, 64), np.uint8)
        label[: 16 * (index % 3 + 1), :32] = 1
        image = np.where(label == 1, 20, 180).astype(np.uint8)[None] + rng.integers(
            0, 20, (1, 64, 64), np.uint8
        )
        write_geotiff(tmp_path / "images" / f"t{index}.tif", image)
        write_geotiff(tmp_path / "masks" / f"t{index}.tif", label[None])
    return tmp_path


def test_monitor_keeps_the_best_step(tmp_path):
    data = load_probe_data(_probe_folder(tmp_path), DI3CLImageProcessor(num_channels=1))
    assert data.pixel_values.shape == (6, 1, 64, 64) and data.cell_labels.shape == (6, 4, 4)
    monitor = ProbeMonitor(data, every=100)
    assert monitor.due(100, 1000) and monitor.due(1000, 1000) and not monitor.due(150, 1000)
    good, improved = monitor.score(_Encoder(gain=10.0), step=100)
    assert improved and good > 0.8
    collapsed, improved = monitor.score(_Encoder(gain=0.0), step=200)  # features carry nothing any more
    assert not improved and collapsed < good
    assert monitor.best_step == 100 and monitor.best_score == good
    restored = ProbeMonitor(data, every=100)
    restored.load_state_dict(monitor.state_dict())
    assert restored.best_step == 100 and restored.history == monitor.history
    _, improved = restored.score(_Encoder(gain=0.0), step=300)
    assert not improved and restored.best_step == 100
    assert math.isfinite(restored.best_score)


def test_image_shapes_follow_chunks_and_selections():
    import datasets

    from di3cl_hf.data.parquet import encode_array
    from di3cl_hf.training.pretraining_data import image_shapes

    rows = [{"image": encode_array(np.zeros((1, 4, 5 + i), np.uint8))} for i in range(3)]
    dataset = datasets.concatenate_datasets([datasets.Dataset.from_list(rows)] * 2)  # two Arrow chunks
    assert image_shapes(dataset, "image") == [(1, 4, 5), (1, 4, 6), (1, 4, 7)] * 2
    assert image_shapes(dataset.select([2, 0]), "image") == [(1, 4, 7), (1, 4, 5)]
