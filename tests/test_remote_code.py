"""Remote code: a saved DI3CL folder loads through the Auto classes in a process where `di3cl_hf` cannot be imported."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import torch

from di3cl_hf import DI3CLForPreTraining, DI3CLForSemanticSegmentation

CODE_FILES = {"configuration_di3cl.py", "modeling_di3cl.py", "di3cl_layers.py"}

BLOCKER = textwrap.dedent(
    """
    import sys


    class _BlockDI3CL:
        def find_spec(self, name, path=None, target=None):
            if name == "di3cl_hf" or name.startswith("di3cl_hf."):
                raise ImportError("di3cl_hf is blocked in this process (remote-code test)")
            return None


    sys.meta_path.insert(0, _BlockDI3CL())
    """
)

CHILD = textwrap.dedent(
    """
    import sys

    import torch

    try:
        import di3cl_hf  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the import blocker did not work")

    from transformers import AutoModel, AutoModelForPreTraining, AutoModelForSemanticSegmentation

    torch.set_num_threads(1)
    pretraining_folder, segmentation_folder, inputs_path, outputs_path = sys.argv[1:5]
    inputs = torch.load(inputs_path)
    results = {}
    with torch.no_grad():
        encoder = AutoModel.from_pretrained(pretraining_folder, trust_remote_code=True, dtype=torch.float32).eval()
        results["encoder_class"] = type(encoder).__module__ + "." + type(encoder).__name__
        results["last_hidden_state"] = encoder(inputs["pixel_values"]).last_hidden_state
        pretraining = AutoModelForPreTraining.from_pretrained(
            pretraining_folder, trust_remote_code=True, dtype=torch.float32
        ).eval()
        results["global_logits"] = pretraining(**inputs).global_logits
        segmentation = AutoModelForSemanticSegmentation.from_pretrained(
            segmentation_folder, trust_remote_code=True, dtype=torch.float32
        ).eval()
        results["segmentation_logits"] = segmentation(inputs["pixel_values"]).logits
    torch.save(results, outputs_path)
    """
)


def test_saved_folder_has_flat_code_files_and_auto_map(tiny_config, tmp_path):
    DI3CLForPreTraining(tiny_config()).save_pretrained(tmp_path)
    assert CODE_FILES <= {path.name for path in tmp_path.iterdir()}
    for name in CODE_FILES:
        source = (tmp_path / name).read_text()
        imports = re.findall(r"^\s*(?:from|import)\s+\S+", source, flags=re.M)
        assert imports and not any("di3cl_hf" in line for line in imports), name
        assert not re.search(r"^\s*from\s+\.\.", source, flags=re.M), name
        assert not re.search(r"^\s*from\s+\.\s+import", source, flags=re.M), name
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoConfig"] == "configuration_di3cl.DI3CLConfig"
    assert auto_map["AutoModel"] == "modeling_di3cl.DI3CLModel"
    assert auto_map["AutoBackbone"] == "modeling_di3cl.DI3CLBackbone"
    assert auto_map["AutoModelForPreTraining"] == "modeling_di3cl.DI3CLForPreTraining"
    assert auto_map["AutoModelForSemanticSegmentation"] == "modeling_di3cl.DI3CLForSemanticSegmentation"


def test_remote_code_load_without_the_package(tiny_config, tmp_path):
    config = tiny_config()
    pretraining = DI3CLForPreTraining(config).eval()
    pretraining.save_pretrained(tmp_path / "pretraining")
    segmentation = DI3CLForSemanticSegmentation(tiny_config(num_labels=3)).eval()
    segmentation.save_pretrained(tmp_path / "segmentation")
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "pixel_values": torch.randn(2, 2, 64, 64, generator=generator),
        "key_pixel_values": torch.randn(2, 2, 64, 64, generator=generator),
        "query_boxes": torch.tensor([[0.0, 0.0, 0.0, 32.0, 32.0], [1.0, 8.0, 8.0, 60.0, 50.0]]),
        "key_boxes": torch.tensor([[0.0, 4.0, 4.0, 40.0, 40.0], [1.0, 0.0, 8.0, 50.0, 50.0]]),
    }
    torch.save(inputs, tmp_path / "inputs.pt")
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    (tmp_path / "child.py").write_text(CHILD)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "blocker"), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    env["HF_HUB_OFFLINE"] = "1"
    completed = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "child.py"),
            str(tmp_path / "pretraining"),
            str(tmp_path / "segmentation"),
            str(tmp_path / "inputs.pt"),
            str(tmp_path / "outputs.pt"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = torch.load(tmp_path / "outputs.pt")
    assert results["encoder_class"].startswith("transformers_modules.")
    assert results["encoder_class"].endswith("modeling_di3cl.DI3CLModel")
    with torch.no_grad():
        torch.testing.assert_close(
            results["last_hidden_state"],
            pretraining.di3cl(inputs["pixel_values"]).last_hidden_state,
            rtol=0,
            atol=0,
        )
        torch.testing.assert_close(
            results["global_logits"], pretraining(**inputs).global_logits, rtol=0, atol=0
        )
        torch.testing.assert_close(
            results["segmentation_logits"], segmentation(inputs["pixel_values"]).logits, rtol=0, atol=0
        )
