"""FLOPs (multiply-accumulates) and parameters: the paper's table and a hand count."""

from __future__ import annotations

import pytest
from torch import nn

import lrformer
from lrformer.cli.main import main

# (variant, size, classes, seed table G MACs, fvcore-style count on the official model)
ROWS = [
    ("lrformer_t", (512, 512), 150, 17, 16.7),
    ("lrformer_s", (512, 512), 150, 40, 40.0),
    ("lrformer_l", (640, 640), 150, 183, 181.9),
    ("lrformer_t", (1024, 2048), 19, 122, 119.1),
]


@pytest.mark.parametrize("name,size,classes,seed,official", ROWS, ids=lambda v: str(v))
def test_flops_reproduce_the_seed_table(name, size, classes, seed, official):
    result = lrformer.count_flops(lrformer.create_model(name, num_classes=classes), size)
    assert abs(result.macs / 1e9 - seed) / seed < 0.03
    assert result.macs / 1e9 == pytest.approx(official, abs=0.051)


def test_count_matches_a_hand_computed_small_model():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 32 * 32, 10))
    result = lrformer.count_flops(model, (32, 32))
    conv = 32 * 32 * 8 * 3 * 9
    bn = 2 * 8 * 32 * 32  # eval BatchNorm: 2 per element (fvcore)
    linear = 8 * 32 * 32 * 10
    assert result.macs == conv + bn + linear
    assert result.params == result.learnable_params + 8 + 8 + 1


def test_flops_cli(capsys):
    assert main(["flops", "--model", "lrformer_t", "--size", "512", "512"]) == 0
    out = capsys.readouterr().out
    assert "MACs:   16.69 G" in out and "13,268,167 state-dict elements" in out
    assert main(["flops", "--model", "lrformer_x"]) == 2
    assert "Did you mean" in capsys.readouterr().err
