"""The benchmarks' stand-in for the official implementation (``benchmarks/official_reference.py``)
still reproduces the official outputs, so the "official" timings in the README stay true."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

REFERENCE = Path(__file__).resolve().parent.parent / "benchmarks" / "official_reference.py"


def load_reference():
    spec = importlib.util.spec_from_file_location("official_reference", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_official_structure_reproduces_the_parity_outputs(tiny_cases, tiny_checkpoint):
    state = torch.load(tiny_checkpoint, weights_only=True)["state_dict"]
    model = load_reference().EncoderDecoder({**tiny_cases["config"], "name": "lrformer_t"})
    model.load_state_dict({k: v.float() for k, v in state.items()})  # strict: the released layout
    model.eval()
    assert tiny_cases["cases"][0]["features"] is not None
    with torch.inference_mode():
        for case in tiny_cases["cases"]:
            features = model.backbone(case["input"].float())
            for ours, official in zip(features, case["features"] or ()):  # kept for the first case only
                torch.testing.assert_close(ours, official, rtol=0, atol=1e-4)
            torch.testing.assert_close(model.decode_head(features), case["logits"], rtol=0, atol=1e-4)
            x = case["input"].float()  # forward: encode_decode, the logits resized to the input
            expected = F.interpolate(case["logits"].float(), x.shape[-2:], mode="bilinear", align_corners=False)
            torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-4)
