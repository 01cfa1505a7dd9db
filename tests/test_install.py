"""The light core install: inference without the training extras, training asking for them by
name, and peak memory read correctly on every OS."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from lrformer import utils
from lrformer.errors import MissingExtraError

from .helpers import run_bounded

WITHOUT_TRAIN_EXTRA = """
import sys
for name in ("scipy", "tensorboard", "onnx", "onnxruntime", "psutil"):
    sys.modules[name] = None  # `import name` now raises ImportError, as when it is not installed
"""


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_bounded(
        [sys.executable, "-c", WITHOUT_TRAIN_EXTRA + textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True
    )


def test_inference_runs_without_the_training_and_export_extras(tmp_path, tiny_model_file):
    result = run_python(
        f"""
        import numpy as np
        import lrformer
        model = lrformer.create_model({str(tiny_model_file)!r})
        label = lrformer.Predictor(model)(np.full((40, 60, 3), 128, np.uint8))
        print(label.shape, sorted(m for m in ("scipy", "tensorboard") if sys.modules.get(m) is not None))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(40, 60) []"


def test_training_asks_for_the_train_extra_by_name(tmp_path):
    config = tmp_path / "run.yaml"
    base = Path(utils.__file__).parent / "configs" / "demo.yaml"
    config.write_text(json.dumps({"_base_": str(base), "data": {"dataset": "ade20k", "root": str(tmp_path)}}))
    result = run_python(
        f"""
        from lrformer.cli.main import main
        sys.exit(main(["train", {str(config)!r}, "--work-dir", {str(tmp_path / "work")!r}]))
        """,
        tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        'lrformer train: error: training (TensorBoard logs) needs tensorboard: pip install "lrformer[train]"'
    ]
    assert not (tmp_path / "work").exists()  # refused before anything was written


def test_hungarian_matching_asks_for_scipy_by_name(monkeypatch):
    import torch

    from lrformer.models.mask2former.matcher import linear_assignment

    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    with pytest.raises(MissingExtraError, match=r'Hungarian matching\) needs scipy: pip install "lrformer\[train\]"'):
        linear_assignment(torch.zeros(2, 2))


def test_export_asks_for_the_export_extra_by_name(monkeypatch, tmp_path):
    from torch import nn

    from lrformer.export import export_onnx

    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(MissingExtraError, match=r'ONNX export needs onnxscript: pip install "lrformer\[export\]"'):
        export_onnx(nn.Conv2d(3, 1, 1), (1, 3, 32, 32), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_peak_memory_on_linux_equals_the_kernels_high_water_mark():
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    vm_hwm_mb = int(status["VmHWM"].split()[0]) / 1024  # kB
    assert utils.peak_memory_mb("cpu") == pytest.approx(vm_hwm_mb, rel=0.05)


def test_peak_memory_on_macos_reads_bytes(monkeypatch):
    import resource

    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(resource, "getrusage", lambda who: types.SimpleNamespace(ru_maxrss=3 * 2**30))
    assert utils.peak_memory_mb("cpu") == 3072.0  # 3 GiB given in bytes


def test_peak_memory_on_windows_uses_psutil_or_says_unknown(monkeypatch):
    monkeypatch.setitem(sys.modules, "resource", None)  # Windows has no resource module
    process = types.SimpleNamespace(memory_info=lambda: types.SimpleNamespace(peak_wset=512 * 2**20, rss=1))
    monkeypatch.setitem(sys.modules, "psutil", types.SimpleNamespace(Process=lambda: process))
    assert utils.peak_memory_mb("cpu") == 512.0
    monkeypatch.setitem(sys.modules, "psutil", None)
    assert utils.peak_memory_mb("cpu") != utils.peak_memory_mb("cpu")  # NaN: unknown, not a wrong number
