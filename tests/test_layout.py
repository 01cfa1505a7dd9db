"""Released layouts: key sets, shapes and parameter counts of every variant."""

from __future__ import annotations

import json

import pytest
import torch

import lrformer

from .conftest import DATA

RELEASED_PARAMS = {
    "lrformer_t": 13_268_167,
    "lrformer_s": 32_228_543,
    "lrformer_b": 67_511_879,
    "lrformer_l": 110_987_823,
    "lrformer_xl": 184_724_421,
}
LAYOUT = json.loads((DATA / "released_layout.json").read_text())


@pytest.mark.parametrize("name", sorted(RELEASED_PARAMS))
def test_state_dict_equals_released_layout(name):
    with torch.device("meta"):
        model = lrformer.create_model(name)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    expected = LAYOUT[name]["segmentor_keys"]
    assert sorted(set(ours) - set(expected)) == []
    assert sorted(set(expected) - set(ours)) == []
    assert {k: s for k, s in ours.items() if expected[k] != s} == {}


@pytest.mark.parametrize("name", sorted(RELEASED_PARAMS))
def test_parameter_count_matches_spec(name):
    with torch.device("meta"):
        model = lrformer.create_model(name)
    assert sum(v.numel() for v in model.state_dict().values()) == RELEASED_PARAMS[name]


def test_xl_pre_norm_only_in_stage3_blocks_7_and_15():
    with torch.device("meta"):
        model = lrformer.create_model("lrformer_xl")
    with_pre_norm = [
        (s, i)
        for s in range(1, 5)
        for i, b in enumerate(getattr(model.backbone, f"block{s}"))
        if b.pre_norm is not None
    ]
    assert with_pre_norm == [(3, 7), (3, 15)]
    assert model.decode_head is None


def test_layer_scale_only_in_stages_3_and_4():
    with torch.device("meta"):
        model = lrformer.create_model("lrformer_t")
    for s, expected in zip(range(1, 5), (False, False, True, True)):
        for block in getattr(model.backbone, f"block{s}"):
            assert (block.layer_scale_1 is not None) is expected
