"""Shared fixtures: the parity data (trimmed copies in tests/data, full files in ../shared when present)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"
SHARED_PARITY = Path(__file__).resolve().parents[2] / "shared" / "parity"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_cases() -> dict:
    return torch.load(DATA / "tiny_cases.pt", weights_only=True)


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    return DATA / "tiny_released_layout.pth"


@pytest.fixture()
def tiny_model_file(tmp_path, tiny_cases, tiny_checkpoint) -> Path:
    """A model JSON file naming the tiny parity config and its weights (what users pass as --model)."""
    import json

    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({**tiny_cases["config"], "name": "lrformer_t", "pretrained": str(tiny_checkpoint)}))
    return path


@pytest.fixture()
def tiny_model(tiny_cases, tiny_checkpoint):
    """The tiny parity model with the released-layout weights, float32, eval mode."""
    import lrformer

    model = lrformer.create_model("lrformer_t", **tiny_cases["config"])
    lrformer.load_checkpoint(model, tiny_checkpoint)
    return model.eval()
