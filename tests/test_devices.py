"""Device and precision choices: ``auto`` picks CUDA, then MPS, then the CPU; fp16/bf16 run under
autocast with fp32 scores; a device or precision this machine lacks is one line with the fix."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from lrformer import Predictor, devices
from lrformer.cli.main import main
from lrformer.errors import ConfigError

from .helpers import error_line, synthetic_photo


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    assert devices.resolve_device("auto") == "mps"
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    assert devices.resolve_device("auto") == "cpu"
    assert devices.resolve_device("cuda:1") == "cuda:1"  # explicit names are kept


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_missing_gpu_is_one_line_with_the_fix(tmp_path, tiny_model_file, capsys):
    assert devices.check_device("auto") == ("mps" if devices.mps_available() else "cpu")
    cv2.imwrite(str(tmp_path / "a.png"), synthetic_photo(40, 40))
    for command in (
        ["predict", "--model", str(tiny_model_file), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")],
        ["benchmark", "--model", "lrformer_t", "--size", "64", "64"],
        ["export", "--model", str(tiny_model_file), "--size", "64", "64", "--out", str(tmp_path / "m.onnx")],
    ):
        assert main([*command, "--device", "cuda:0"]) == 2
        line = error_line(capsys)
        assert "--device is 'cuda:0' but PyTorch sees no CUDA GPU" in line and line.endswith("use --device cpu")
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.onnx").exists()


def test_unknown_precision_and_device_names():
    with pytest.raises(ConfigError, match="--precision must be one of fp32, fp16, bf16"):
        devices.autocast_dtype("fp8", "cpu")
    with pytest.raises(ConfigError, match="must be auto, cpu, cuda, cuda:N or mps"):
        devices.check_device("gpu")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_scores_are_fp32_and_close(tiny_model, precision):
    image = synthetic_photo(96, 128, seed=7)
    exact = Predictor(tiny_model, device="auto").predict_scores(image)
    half = Predictor(tiny_model, device="auto", precision=precision).predict_scores(image)
    assert half.dtype == torch.float32 and half.shape == exact.shape
    assert not torch.equal(half, exact)  # autocast did run the network in half precision
    assert (half - exact).abs().max() < 0.1 * exact.abs().max()
    agree = (half.argmax(0) == exact.argmax(0)).float().mean()
    assert agree > 0.95


def test_predict_and_eval_run_the_network_in_the_precision_asked(tmp_path, tiny_model_file, capsys, monkeypatch):
    from lrformer.inference import network as network_module

    used = []

    def recording_autocast(device, dtype):
        used.append(dtype)
        return devices.autocast(device, dtype)

    monkeypatch.setattr(network_module, "autocast", recording_autocast)
    cv2.imwrite(str(tmp_path / "a.png"), synthetic_photo(64, 80, seed=2))
    out = tmp_path / "o"
    assert main(["predict", "--model", str(tiny_model_file), str(tmp_path / "a.png"), "--out", str(out),
                 "--precision", "bf16", "--workers", "0", "--no-overlay"]) == 0  # fmt: skip
    assert Image.open(out / "a.png").size == (80, 64)
    assert used == [torch.bfloat16]
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    (root / "ann").mkdir()
    cv2.imwrite(str(root / "img" / "s.jpg"), synthetic_photo(64, 96, seed=1))
    Image.fromarray((np.arange(64 * 96) % 5).reshape(64, 96).astype(np.uint8)).save(root / "ann" / "s.png")
    spec = tmp_path / "set.yaml"
    spec.write_text("img_dir: img\nann_dir: ann\nclasses: [a, b, c, d, e]\n")
    assert main(["eval", "--model", str(tiny_model_file), "--data", str(spec), "--data-root", str(root),
                 "--precision", "fp16", "--workers", "0"]) == 0  # fmt: skip
    assert used == [torch.bfloat16, torch.float16]
    assert main(["eval", "--model", str(tiny_model_file), "--data", "ade20k", "--data-root", "x",
                 "--precision", "fp8"]) == 2  # fmt: skip
    assert "invalid choice: 'fp8'" in error_line(capsys)


@pytest.mark.parametrize("enabled", [True, False])
def test_cudnn_autotuning_is_set_for_cuda_only(enabled, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", not enabled)
    assert devices.set_cudnn_autotuning("cpu", enabled) is False
    assert torch.backends.cudnn.benchmark is (not enabled)  # the CPU leaves the flag alone
    assert devices.set_cudnn_autotuning(torch.device("cuda", 1), enabled) is enabled  # a name, not a GPU, is needed
    assert torch.backends.cudnn.benchmark is enabled
