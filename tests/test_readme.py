"""Every Python snippet in README.md runs as written, and the model file example loads."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import lrformer

from .fake_hub import FakeHub
from .helpers import run_bounded, synthetic_photo

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of each fenced block of ``language``."""
    text = README.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(2)) for m in BLOCK.finditer(text) if m.group(1) == language]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The files the snippets name: an LRFormer-T checkpoint in the released layout and a photo."""
    folder = tmp_path_factory.mktemp("readme")
    torch.manual_seed(0)
    model = lrformer.create_model("lrformer_t")
    torch.save({"state_dict": model.state_dict()}, folder / "lrformer_t_ade20k.pth")
    run = lrformer.create_model("lrformer_t", num_classes=3)  # what lrformer train writes
    description = lrformer.models.factory.model_description(
        run, ["sky", "road", "car"], [[0, 0, 255]] * 3, {"scale": [512, 128]}
    )
    (folder / "work_dirs" / "my_run").mkdir(parents=True)
    torch.save({"state_dict": run.state_dict(), "lrformer": description}, folder / "work_dirs/my_run/iter_20000.pth")
    cv2.imwrite(str(folder / "photo.jpg"), synthetic_photo(96, 128, seed=7))
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (128, 96))
    for seed in range(3):
        writer.write(synthetic_photo(96, 128, seed=seed))
    writer.release()
    ade = folder / "data" / "ADEChallengeData2016"
    for index in range(2):
        (ade / "images" / "validation").mkdir(parents=True, exist_ok=True)
        (ade / "annotations" / "validation").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(ade / "images" / "validation" / f"{index}.jpg"), synthetic_photo(64, 80, seed=index))
        cv2.imwrite(
            str(ade / "annotations" / "validation" / f"{index}.png"),
            (np.arange(64 * 80) % 151).reshape(64, 80).astype(np.uint8),
        )
    return folder


def test_the_readme_has_python_snippets():
    assert len(blocks("python")) >= 4


@pytest.fixture(scope="module")
def released_hub(workspace):
    """A local Hub (127.0.0.1) with LRFormer-T's ADE20K file under an official-style name, for the
    snippets that load released models by tag."""
    with FakeHub({"lrformer-t-160k_ade20k_46.7.pth": (workspace / "lrformer_t_ade20k.pth").read_bytes()}) as hub:
        yield hub


@pytest.mark.parametrize("line, code", blocks("python"), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_python_snippet_runs(line, code, workspace, released_hub, monkeypatch):
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("HF_ENDPOINT", released_hub.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(workspace / "hf-cache"))
    monkeypatch.setenv("LRFORMER_CACHE", str(workspace / "lrformer-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "readme"})


def test_the_model_file_example_loads(tmp_path, monkeypatch):
    (example,) = [code for _, code in blocks("yaml") if code.startswith("name:")]
    (tmp_path / "my_model.yaml").write_text(example)
    settings = lrformer.models.factory.read_model_file(tmp_path / "my_model.yaml")
    torch.manual_seed(1)
    weights = lrformer.create_model(settings.pop("name"), **{k: v for k, v in settings.items() if k != "pretrained"})
    torch.save(weights.state_dict(), tmp_path / "tiny.pth")
    monkeypatch.chdir(tmp_path.parent)  # the relative `pretrained` is found next to the file, not in the cwd
    model = lrformer.create_model(tmp_path / "my_model.yaml")
    assert model.num_classes == 5 and not model.training
    for key, value in weights.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


def test_the_fine_tuning_walkthrough_runs(tmp_path):
    """The README's "Fine-tune on your own dataset" commands, with 2 iterations instead of 100."""
    text = README.read_text()
    section = text[text.index("## Fine-tune on your own dataset") :]
    script = BLOCK.search(section).group(2)
    script = script.replace("iters 100", "iters 2").replace("max_iters=100", "max_iters=2")
    script = script.replace("iter_100", "iter_2").replace("lrformer/configs/", f"{README.parent}/lrformer/configs/")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = run_bounded(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "re-initialised decode_head.conv_seg.bias [5] -> [7]" in result.stderr
    for folder in ("predictions", "predictions_fp16"):
        assert len(list((tmp_path / folder).glob("*.png"))) == 50
    assert (tmp_path / "mine.safetensors").stat().st_size < (tmp_path / "work_dirs/mine/iter_2.pth").stat().st_size / 4
