"""The one precision resolver (di3cl_hf/runtime.py): bf16 only where it is native (issue #13 item 1)."""

from __future__ import annotations

import pytest
import torch

from di3cl_hf import runtime


def _cpu(monkeypatch, *, avx512_bf16: bool, amx: bool, onednn: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn, raising=False)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "onednn", "expected"),
    [
        (True, False, True, "bf16"),  # AMD Zen 4 / Intel Cooper Lake: AVX512_BF16
        (False, True, True, "bf16"),  # Sapphire Rapids and newer: AMX tiles
        (True, True, True, "bf16"),
        (False, False, True, "fp32"),  # AVX-512 without BF16: oneDNN would only emulate bf16
        (False, False, False, "fp32"),  # no AVX-512 at all
    ],
)
def test_auto_on_cpu_picks_bf16_only_where_native(monkeypatch, avx512_bf16, amx, onednn, expected):
    _cpu(monkeypatch, avx512_bf16=avx512_bf16, amx=amx, onednn=onednn)
    assert runtime.resolve_precision("auto", "cpu", log=False) == expected


def test_auto_on_an_avx512_cpu_without_bf16_gives_fp32(monkeypatch):
    _cpu(monkeypatch, avx512_bf16=False, amx=False, onednn=True)
    native, reason = runtime.native_bf16("cpu")
    assert not native and "emulate" in reason
    assert runtime.resolve_precision("auto", torch.device("cpu"), log=False) == "fp32"
    assert runtime.autocast_dtype("fp32") is None


@pytest.mark.parametrize(("supported", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_follows_is_bf16_supported(monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "test card")
    assert runtime.resolve_precision("auto", "cuda", log=False) == expected


def test_probe_errors_count_as_unsupported(monkeypatch):
    def broken():
        raise RuntimeError("no cpuinfo")

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", broken, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", broken, raising=False)
    assert runtime.cpu_capability() == {
        "avx512_bf16": False,
        "amx_tile": False,
        "onednn_bf16_incl_emulated": False,
    }
    assert runtime.resolve_precision("auto", "cpu", log=False) == "fp32"


@pytest.mark.parametrize("explicit", ["bf16", "fp16", "fp32"])
def test_explicit_values_pass_through(monkeypatch, explicit):
    _cpu(monkeypatch, avx512_bf16=False, amx=False, onednn=False)
    assert runtime.resolve_precision(explicit, "cpu", log=False) == explicit


def test_no_is_read_as_fp32_and_spelled_no_for_accelerate():
    assert runtime.normalise_precision("no") == "fp32"
    assert runtime.resolve_precision("no", "cpu", log=False) == "fp32"
    assert runtime.accelerate_mixed_precision("fp32") == "no"
    assert runtime.accelerate_mixed_precision("bf16") == "bf16"
    assert runtime.autocast_dtype("bf16") is torch.bfloat16


@pytest.mark.parametrize("bad", ["fp64", "BF16", "", "float32"])
def test_bad_values_raise(bad):
    with pytest.raises(ValueError, match="precision must be one of"):
        runtime.resolve_precision(bad, "cpu", log=False)


def test_choice_and_reason_are_logged_once(monkeypatch, caplog):
    _cpu(monkeypatch, avx512_bf16=False, amx=False, onednn=True)
    runtime._LOGGED.clear()
    with caplog.at_level("INFO", logger="di3cl_hf.runtime"):
        runtime.resolve_precision("auto", "cpu")
        runtime.resolve_precision("auto", "cpu")
    lines = [r.getMessage() for r in caplog.records if "precision" in r.getMessage()]
    assert len(lines) == 1 and "fp32" in lines[0] and "AVX512_BF16" in lines[0]


def test_cpu_flags_and_description_read_cpuinfo(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Test Xeon\nflags\t\t: fpu avx2 avx512f\n")
    real_open = open

    def fake_open(path, *args, **kwargs):
        return real_open(cpuinfo if path == "/proc/cpuinfo" else path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    _cpu(monkeypatch, avx512_bf16=False, amx=False, onednn=True)
    assert runtime.cpu_model() == "Test Xeon"
    assert runtime.cpu_flags() == {
        "avx2": True,
        "avx512f": True,
        "avx512_bf16": False,
        "amx_tile": False,
        "amx_bf16": False,
    }
    description = runtime.cpu_description()
    assert description.startswith("Test Xeon; avx512f yes, avx512_bf16 no, amx no;")


def test_cpu_description_counts_what_torch_sees(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_flags", lambda names=runtime.CPU_FLAGS: dict.fromkeys(names, False))
    _cpu(monkeypatch, avx512_bf16=False, amx=True, onednn=True)
    assert "avx512_bf16 no, amx yes" in runtime.cpu_description()
