"""Remote code: a saved DI3CL folder loads through the Auto classes in a process where `di3cl_hf` cannot be imported."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from transformers import AutoModel, AutoModelForPreTraining, AutoModelForSemanticSegmentation

from di3cl_hf import DI3CLForPreTraining, DI3CLForSemanticSegmentation, DI3CLImageProcessor

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
    # The reference is the package's classes on the *same saved files*, loaded the same way: weights that
    # from_pretrained reads from safetensors sit at the file's tensor offsets (not 64-byte aligned), and
    # oneDNN/MKL take other vectorised paths (another summation order, ~1e-7 apart) for unaligned weights
    # than for the freshly allocated ones of the in-memory model. Same bytes + same layout = exact results.
    references = {
        "pretraining": AutoModelForPreTraining.from_pretrained(tmp_path / "pretraining", dtype=torch.float32),
        "encoder": AutoModel.from_pretrained(tmp_path / "pretraining", dtype=torch.float32),
        "segmentation": AutoModelForSemanticSegmentation.from_pretrained(
            tmp_path / "segmentation", dtype=torch.float32
        ),
    }
    # ... and the saved files hold the in-memory models' tensors bit for bit.
    for name, model in (("pretraining", pretraining), ("segmentation", segmentation)):
        loaded = references[name].state_dict()
        for key, value in model.state_dict().items():
            assert torch.equal(loaded[key], value), (name, key)
    with torch.no_grad():
        torch.testing.assert_close(
            results["last_hidden_state"],
            references["encoder"].eval()(inputs["pixel_values"]).last_hidden_state,
            rtol=0,
            atol=0,
        )
        torch.testing.assert_close(
            results["global_logits"], references["pretraining"].eval()(**inputs).global_logits, rtol=0, atol=0
        )
        torch.testing.assert_close(
            results["segmentation_logits"],
            references["segmentation"].eval()(inputs["pixel_values"]).logits,
            rtol=0,
            atol=0,
        )


PROMPT_CHILD = textwrap.dedent(
    """
    import sys

    import torch

    import di3cl_hf  # noqa: F401
    from transformers import AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation, pipeline

    torch.set_num_threads(1)
    folder = sys.argv[1]
    print("segmentation pipeline:", type(pipeline("image-segmentation", model=folder).model).__module__)
    print("features pipeline:", type(pipeline("image-feature-extraction", model=folder).model).__module__)
    print("AutoModel:", type(AutoModel.from_pretrained(folder)).__module__)
    print("AutoModelForSemanticSegmentation:", type(AutoModelForSemanticSegmentation.from_pretrained(folder)).__module__)
    print("AutoImageProcessor:", type(AutoImageProcessor.from_pretrained(folder)).__module__)
    print("ALL LOADED", flush=True)
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs a pseudo-terminal (pty)")
def test_registered_classes_win_over_auto_map_without_prompt(tiny_config, tmp_path):
    """Issue #16 item 8: with di3cl_hf imported, our saved folders (auto_map + code files) never ask
    "Do you wish to run the custom code? [y/N]", even with a terminal on stdin (where transformers prompts)."""
    folder = tmp_path / "model"
    DI3CLForSemanticSegmentation(tiny_config(num_labels=2)).save_pretrained(folder)
    DI3CLImageProcessor(num_channels=2).save_pretrained(folder)
    assert "AutoImageProcessor" in json.loads((folder / "preprocessor_config.json").read_text())["auto_map"]
    (tmp_path / "child.py").write_text(PROMPT_CHILD)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    pid, terminal = pty.fork()  # the child's stdin/stdout are a terminal, as in an interactive session
    if pid == 0:  # pragma: no cover - the child process
        os.chdir(tmp_path)
        os.execve(sys.executable, [sys.executable, str(tmp_path / "child.py"), str(folder)], env)
    output, deadline = b"", time.monotonic() + 240
    try:
        while time.monotonic() < deadline and b"[y/N]" not in output:
            ready, _, _ = select.select([terminal], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(terminal, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(terminal)
    text = output.decode(errors="replace")
    assert "[y/N]" not in text and "custom code" not in text, text[-3000:]
    assert "ALL LOADED" in text, f"child did not finish (hang or error):\n{text[-3000:]}"
    assert text.count("di3cl_hf.") >= 5 and "transformers_modules" not in text, text[-3000:]
