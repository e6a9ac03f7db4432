"""Measured input statistics (di3cl_hf/training/statistics.py): the estimator, pre-training saving them with the
processor of the encoder, fine-tuning re-estimating them on the labelled set (``--estimate_statistics``)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest

from di3cl_hf.data.parquet import encode_array
from di3cl_hf.image_processing_di3cl import DI3CLImageProcessor
from di3cl_hf.training.statistics import (
    estimate_statistics,
    measure_statistics,
    processor_statistics,
    sample_rows,
)


def _images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    images = [rng.normal(-14.0, 4.0, size=(2, 32, 32)).astype(np.float32) for _ in range(count)]
    images[0][:, :4, :4] = np.nan  # nodata pixels are left out
    return images


def test_measure_matches_processor_fit_statistics_on_every_pixel():
    processor = DI3CLImageProcessor(num_channels=2)
    images = _images(5)
    measured = measure_statistics(processor, images, pixel_stride=1)
    reference = DI3CLImageProcessor(num_channels=2)
    mean, std = reference.fit_statistics(images)
    np.testing.assert_allclose(measured.image_mean, mean, rtol=1e-9)
    np.testing.assert_allclose(measured.image_std, std, rtol=1e-9)
    assert measured.num_images == 5 and measured.num_pixels == 5 * 32 * 32 - 16
    # -14 dB in the nominal -30..5 range is 16/35 = 0.457 in [0, 1]; 4 dB spread is 0.114
    np.testing.assert_allclose(measured.image_mean, [16 / 35] * 2, atol=0.01)
    np.testing.assert_allclose(measured.image_std, [4 / 35] * 2, atol=0.01)


def test_measure_rejects_images_without_valid_pixels():
    with pytest.raises(ValueError, match="no valid pixel"):
        measure_statistics(DI3CLImageProcessor(num_channels=1), [np.full((1, 8, 8), np.nan, np.float32)])


def test_estimate_sets_the_processor_and_save_pretrained_keeps_them(tmp_path: Path):
    rows = [{"image": encode_array(image)} for image in _images(6)]
    dataset = datasets.Dataset.from_list(rows)
    processor = DI3CLImageProcessor(num_channels=2)
    nominal = processor_statistics(processor)
    measured = estimate_statistics(processor, dataset, max_images=4, seed=3, pixel_stride=1)
    assert measured.num_images == 4
    assert processor_statistics(processor) == {
        "image_mean": measured.image_mean,
        "image_std": measured.image_std,
    }
    assert processor.image_mean != nominal["image_mean"]
    processor.save_pretrained(tmp_path)
    reloaded = DI3CLImageProcessor.from_pretrained(tmp_path)
    assert reloaded.image_mean == measured.image_mean and reloaded.image_std == measured.image_std


def test_sample_rows_seeded_subset_and_streamed_prefix():
    rows = [
        {"image": np.full((1, 2, 2), float(i), np.float32), "valid_mask": np.ones((2, 2), bool)}
        for i in range(10)
    ]
    dataset = datasets.Dataset.from_list(rows).with_format("numpy")
    first = [float(image[0, 0, 0]) for image, _ in sample_rows(dataset, "image", 4, seed=1)]
    again = [float(image[0, 0, 0]) for image, _ in sample_rows(dataset, "image", 4, seed=1)]
    assert first == again and len(set(first)) == 4
    assert all(mask.dtype == bool for _, mask in sample_rows(dataset, "image", 2))
    streamed = datasets.Dataset.from_list(rows).to_iterable_dataset()
    assert [float(np.asarray(image)[0, 0, 0]) for image, _ in sample_rows(streamed, "image", 3)] == [
        0.0,
        1.0,
        2.0,
    ]


def test_pretraining_saves_corpus_statistics_with_the_encoder(tmp_path: Path, fresh_accelerate):
    from di3cl_hf.data.sarsense import load_sarsense
    from di3cl_hf.data.synthetic import generate_sarsense
    from di3cl_hf.training import pretraining

    data = tmp_path / "data"
    generate_sarsense(data, 8, size=64, seed=0)
    options = dict(
        data_dir=str(data), backbone="resnet18", num_channels=1, image_size=64, queue_size=16,
        projection_hidden_dim=32, projection_dim=16, per_device_batch_size=4, min_box_size=16, num_workers=0,
        report_to="none", disable_tqdm=True, max_steps=1, dataset_cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    assert (
        pretraining.main(pretraining.PretrainingArguments(output_dir=str(tmp_path / "run"), **options)) == 0
    )
    saved = json.loads((tmp_path / "run" / "encoder" / "preprocessor_config.json").read_text())
    expected = measure_statistics(
        DI3CLImageProcessor(num_channels=1),
        (row["image"] for row in load_sarsense(data, cache_dir=str(tmp_path / "c2"))),
    )
    np.testing.assert_allclose(saved["image_mean"], expected.image_mean, rtol=1e-6)
    np.testing.assert_allclose(saved["image_std"], expected.image_std, rtol=1e-6)
    card = (tmp_path / "run" / "encoder" / "README.md").read_text()
    assert "measured on up to 2000 sampled patches" in card
    # regression: the card was titled after the temporary folder it was written in (".tmp-encoder-<pid>")
    assert "\n# run\n" in card and ".tmp-" not in card
    # --statistics_samples 0 keeps the nominal values
    args = pretraining.PretrainingArguments(
        output_dir=str(tmp_path / "nominal"), statistics_samples=0, **options
    )
    assert pretraining.main(args) == 0
    nominal = json.loads((tmp_path / "nominal" / "encoder" / "preprocessor_config.json").read_text())
    assert nominal["image_mean"] == DI3CLImageProcessor(num_channels=1).image_mean


def test_finetuning_reestimates_statistics_on_the_labelled_set_only_when_asked(
    tmp_path: Path, fresh_accelerate
):
    from di3cl_hf.data.synthetic import generate_segmentation_sets
    from di3cl_hf.training.finetuning import FinetuneArguments, finetune

    generate_segmentation_sets(tmp_path / "seg", 8, size=64, seed=0)
    common = dict(
        data_dir=str(tmp_path / "seg"), task="water", init="random", backbone="resnet18", num_channels=1,
        crop_size=64, batch_size=2, max_steps=1, decoder_hidden_size=16, report_to="none", disable_tqdm=True,
    )  # fmt: skip
    nominal = processor_statistics(DI3CLImageProcessor(num_channels=1))
    kept = finetune(FinetuneArguments(output_dir=str(tmp_path / "kept"), **common))
    assert kept["input_statistics"] == {"encoder": nominal}
    assert processor_statistics(kept["processor"]) == nominal
    refit = finetune(
        FinetuneArguments(output_dir=str(tmp_path / "refit"), estimate_statistics=True, **common)
    )
    labelled = refit["input_statistics"]["labelled"]
    assert refit["input_statistics"]["encoder"] == nominal and labelled["num_images"] >= 1
    assert processor_statistics(refit["processor"]) == {k: labelled[k] for k in ("image_mean", "image_std")}
    saved = json.loads((tmp_path / "refit" / "preprocessor_config.json").read_text())
    assert saved["image_mean"] == labelled["image_mean"]
