"""Weights by name: hf-hub: names resolved offline from a Hub cache, safetensors files, slim copies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch

import lrformer
from lrformer.cli.main import main
from lrformer.errors import CheckpointError, MissingExtraError
from lrformer.models.weights import parse_hub_name, read_checkpoint, save_weights

from .helpers import error_line, run_bounded, synthetic_photo

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path, repo: str, files: dict[str, Path], ref: str = "main") -> Path:
    """A Hugging Face Hub cache holding ``files`` (path in the repository → local file) at one
    commit, in the Hub's layout: ``models--OWNER--REPO/{blobs,refs,snapshots}``."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / ref).write_text(COMMIT)
    for index, (path, source) in enumerate(files.items()):
        blob = folder / "blobs" / f"{index:040x}"
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(source.read_bytes())
        pointer = folder / "snapshots" / COMMIT / path
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    return root


def run_offline(code: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HOME": str(cache / "home")}
    return run_bounded([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_hub_names_resolve_offline_from_the_cache_with_the_same_strictness(tmp_path, tiny_cases, tiny_checkpoint):
    wrong = tmp_path / "wrong.pth"  # the tiny weights with one key missing
    state = torch.load(tiny_checkpoint, weights_only=True)["state_dict"]
    torch.save({"state_dict": {k: v for k, v in state.items() if k != "decode_head.conv_seg.bias"}}, wrong)
    cache = hub_cache(tmp_path / "hub", "owner/LRFormer-Models",
                      {"ade20k/tiny.pth": tiny_checkpoint, "wrong.pth": wrong})  # fmt: skip
    config = json.dumps(tiny_cases["config"])
    expected = lrformer.create_model("lrformer_t", **tiny_cases["config"], pretrained=tiny_checkpoint).state_dict()
    torch.save(expected, tmp_path / "expected.pt")
    result = run_offline(
        f"""
import json, torch, lrformer
from lrformer.models.weight_loading import CheckpointMismatchError
config = json.loads({config!r})
expected = torch.load({str(tmp_path / "expected.pt")!r})
for name in ("hf-hub:owner/LRFormer-Models/ade20k/tiny.pth", "hf-hub:owner/LRFormer-Models/ade20k/tiny.pth@main",
             "hf-hub:owner/LRFormer-Models/ade20k/tiny.pth@{COMMIT}"):
    model = lrformer.create_model("lrformer_t", **config, pretrained=name)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items()), name
    assert model.config["pretrained"] == name
try:
    lrformer.create_model("lrformer_t", **config, pretrained="hf-hub:owner/LRFormer-Models/wrong.pth")
except CheckpointMismatchError as exc:
    print("strict:", exc.summary.split(": ")[0])
for name in ("hf-hub:owner/LRFormer-Models/missing.pth", "hf-hub:owner/LRFormer-Models/ade20k/tiny.pth@v2"):
    try:
        lrformer.create_model("lrformer_t", **config, pretrained=name)
    except Exception as exc:
        print(type(exc).__name__, str(exc))
""",
        cache,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "strict: checkpoint hf-hub:owner/LRFormer-Models/wrong.pth does not match the model (lrformer_t)"
    for line, name in zip(lines[1:], ("missing.pth", "ade20k/tiny.pth@v2")):
        assert line.startswith(
            f"CheckpointError cannot get hf-hub:owner/LRFormer-Models/{name}: it is not in the local"
        )
        assert "HF_HUB_OFFLINE" in line


@pytest.mark.parametrize(
    "name, parsed",
    [
        ("hf-hub:a/b/c.pth", ("a/b", "c.pth", None)),
        ("hf-hub:a/b/dir/c.safetensors@v1.0", ("a/b", "dir/c.safetensors", "v1.0")),
    ],
)
def test_hub_name_parts(name, parsed):
    assert parse_hub_name(name) == parsed


@pytest.mark.parametrize("name", ["hf-hub:a/b", "hf-hub:a//c.pth", "hf-hub:a/b/c.pth@"])
def test_a_malformed_hub_name_says_the_form(name):
    with pytest.raises(CheckpointError, match=r"hf-hub:OWNER/REPO/PATH\[@REVISION\]"):
        read_checkpoint(name)


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("LocalEntryNotFoundError", "it is not in the local Hub cache and downloads are off"),
        ("GatedRepoError", "owner/repo needs you to log in and accept its terms"),  # a RepositoryNotFoundError too
        ("RepositoryNotFoundError", "no repository owner/repo (or it is private)"),
        ("RevisionNotFoundError", "owner/repo has no revision 'v9'"),
        ("EntryNotFoundError", "owner/repo has no file 'dir/w.pth'"),
        (None, "the network is down"),
    ],
)
def test_hub_failures_are_told_apart_by_exception_class(kind, reason, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub import utils

    # a message naming another kind: only the class may decide
    error_type = getattr(utils, kind) if kind else ConnectionError
    error = error_type.__new__(error_type, "the network is down (RepositoryNotFoundError? offline?)")

    def download(**kwargs):
        raise error

    monkeypatch.setattr(hub, "hf_hub_download", download)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint("hf-hub:owner/repo/dir/w.pth@v9")
    assert str(info.value).startswith(f"cannot get hf-hub:owner/repo/dir/w.pth@v9: {reason}")
    assert info.value.__cause__ is error


def test_hub_names_ask_for_the_hub_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingExtraError, match=r'needs huggingface_hub: pip install "lrformer\[hub\]"'):
        read_checkpoint("hf-hub:a/b/c.pth")


def test_a_safetensors_copy_predicts_bit_identically_without_pickle(tmp_path, tiny_cases, tiny_checkpoint, monkeypatch):
    copy = tmp_path / "tiny.safetensors"
    assert main(["convert", "weights", str(tiny_checkpoint), str(copy)]) == 0
    image = synthetic_photo(90, 120, seed=3)
    original = lrformer.create_model("lrformer_t", **tiny_cases["config"], pretrained=tiny_checkpoint)
    expected = lrformer.Predictor(original).predict_scores(image)

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load used for a safetensors file")

    monkeypatch.setattr(torch, "load", no_pickle)
    model = lrformer.create_model("lrformer_t", **tiny_cases["config"], pretrained=copy)
    assert torch.equal(lrformer.Predictor(model).predict_scores(image), expected)
    for key, value in original.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_convert_weights_keeps_the_description_drops_training_state_and_halves(tmp_path, tiny_cases):
    model = lrformer.create_model("lrformer_t", **tiny_cases["config"])
    description = lrformer.models.factory.model_description(
        model, ["a", "b", "c", "d", "e"], [[1, 2, 3]] * 5, {"scale": [64, 32]}
    )
    training = tmp_path / "iter_4.pth"
    torch.save({"state_dict": model.state_dict(), "optimizer": {"state": {0: torch.zeros(10_000)}},
                "rng": [{"cpu": torch.zeros(5000, dtype=torch.uint8)}], "lrformer": description}, training)  # fmt: skip
    for out in (tmp_path / "slim.pth", tmp_path / "slim.safetensors"):
        assert main(["convert", "weights", str(training), str(out), "--fp16"]) == 0
        checkpoint = read_checkpoint(out)
        assert checkpoint.description == description
        assert set(checkpoint.state_dict) == set(model.state_dict())
        for key, value in model.state_dict().items():
            stored = checkpoint.state_dict[key]
            assert stored.dtype == (torch.float16 if value.is_floating_point() else value.dtype)
            assert torch.equal(stored, value.half() if value.is_floating_point() else value)
    assert "optimizer" not in torch.load(tmp_path / "slim.pth", weights_only=True)
    assert (tmp_path / "slim.pth").stat().st_size < 0.6 * training.stat().st_size  # fp16, no optimiser state


def test_convert_weights_never_overwrites_its_input(tmp_path, tiny_checkpoint, capsys):
    copy = tmp_path / "w.pth"
    copy.write_bytes(tiny_checkpoint.read_bytes())
    (tmp_path / "link.pth").symlink_to(copy)
    assert main(["convert", "weights", str(copy), str(tmp_path / "link.pth")]) == 2
    assert "would overwrite the input" in error_line(capsys)
    assert copy.read_bytes() == tiny_checkpoint.read_bytes()


def test_a_damaged_safetensors_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    cv2.imwrite(str(tmp_path / "a.png"), synthetic_photo(40, 40))
    assert main(["predict", "--weights", str(bad), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]) == 2
    assert error_line(capsys) == (
        f"lrformer predict: error: cannot read {bad} as a safetensors file: it is damaged or not safetensors"
    )


def test_save_weights_writes_atomically_and_round_trips(tmp_path):
    state = {"w": torch.arange(6.0).view(2, 3), "n": torch.tensor(3)}
    save_weights(tmp_path / "x.safetensors", state, {"format": 1, "model": {"name": "lrformer_t"}})
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]
    back = read_checkpoint(tmp_path / "x.safetensors")
    assert back.description["model"]["name"] == "lrformer_t"
    assert all(torch.equal(back.state_dict[k], v) for k, v in state.items())
