"""Released models by tag, end to end: the real huggingface_hub client lists and downloads from a
local Hub on 127.0.0.1 (tests/fake_hub.py) holding files named like the official ones, with random
weights in the released layouts. Nothing here touches the internet."""

from __future__ import annotations

import io
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
from lrformer.errors import CheckpointError
from lrformer.models import zoo
from lrformer.models.weights import read_checkpoint

from .fake_hub import FakeHub, fake_hub  # noqa: F401 (the fixture)
from .helpers import error_line, synthetic_photo

pytest.importorskip("huggingface_hub")

T_ADE = "lrformer-t-160k_ade20k_46.7.pth"
T_CITY = "lrformer-t-160k_cityscapes_80.7.pth"
DECOYS = {"README.md": b"# LRFormer models\n", "lrformer-s-160k_ade20k_50.0.pth": b"not read",
          "lrformer-t-plus-160k_ade20k-512x512_49.4.pth": b"not read", "logs/lrformer-t-ade20k.log": b"log"}  # fmt: skip


def released_bytes(num_classes: int, seed: int) -> tuple[bytes, dict[str, torch.Tensor]]:
    """A checkpoint as released: LRFormer-T's layout, fp16 weights under ``state_dict``, mmengine-style ``meta``."""
    torch.manual_seed(seed)
    state = {k: v.half() if v.is_floating_point() else v
             for k, v in lrformer.create_model("lrformer_t", num_classes=num_classes).state_dict().items()}  # fmt: skip
    buffer = io.BytesIO()
    torch.save({"meta": {"iter": 160000}, "state_dict": state}, buffer)
    return buffer.getvalue(), state


@pytest.fixture(scope="module")
def ade_file() -> tuple[bytes, dict[str, torch.Tensor]]:
    return released_bytes(150, seed=1)


@pytest.fixture()
def hub(fake_hub, ade_file) -> FakeHub:  # noqa: F811
    for path, data in DECOYS.items():
        fake_hub.add(path, data)
    fake_hub.add(T_ADE, ade_file[0])
    return fake_hub


def downloads(hub: FakeHub) -> list[str]:
    return [path for method, path in hub.requests if method == "GET" and "/resolve/" in path]


def assert_weights(model, state) -> None:
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value.float() if value.is_floating_point() else value), key


def test_a_tag_loads_its_file_and_describes_the_model(hub, ade_file):
    model = lrformer.create_model("lrformer_t.ade20k", pretrained=True)
    assert_weights(model, ade_file[1])
    assert downloads(hub) == [f"/yuhuan-wu/LRFormer-Models/resolve/main/{T_ADE}"]  # the decoys are never fetched
    assert model.config["tag"] == "lrformer_t.ade20k" and not model.training
    assert model.config["classes"][:3] == ["wall", "building", "sky"] and len(model.config["palette"]) == 150
    assert model.config["test"]["scale"] == [2048, 512]
    assert lrformer.create_model("lrformer_t", pretrained=True).config["tag"] == "lrformer_t.ade20k"  # default tag
    backbone = lrformer.create_model("lrformer_t.ade20k", pretrained=True, features_only=True, out_indices=(3,))
    key = "block4.2.mlp.fc2.weight"
    assert torch.equal(backbone.state_dict()[key], ade_file[1][f"backbone.{key}"].float())
    assert len(downloads(hub)) == 1  # the later loads came from the cache


def test_the_cache_serves_with_the_hub_stopped_and_offline(hub, ade_file, monkeypatch):
    lrformer.create_model("lrformer_t.ade20k", pretrained=True)
    hub.stop()
    assert_weights(lrformer.create_model("lrformer_t.ade20k", pretrained=True), ade_file[1])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_weights(lrformer.create_model("lrformer_t.ade20k", pretrained=True), ade_file[1])
    # offline without the cached listing: the Hub cache's files still say which file it is
    for listing in (Path(os.environ["LRFORMER_CACHE"]) / "hub-listings").rglob("*.json"):
        listing.unlink()
    assert_weights(lrformer.create_model("lrformer_t.ade20k", pretrained=True), ade_file[1])


def test_offline_with_nothing_cached_is_one_line(hub, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cv2.imwrite(str(tmp_path / "a.png"), synthetic_photo(40, 40))
    assert main(["predict", "--model", "lrformer_t.ade20k", str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]) == 2
    assert error_line(capsys) == (
        "lrformer predict: error: cannot list the Hub repository yuhuan-wu/LRFormer-Models: downloads are off "
        "(HF_HUB_OFFLINE=1) and nothing of it is cached; connect once without HF_HUB_OFFLINE so that its listing and "
        "files are cached, or download the file yourself and pass its path"
    )
    assert hub.requests == []


def test_predict_by_tag_names_the_classes(hub, tmp_path):
    city, _ = released_bytes(19, seed=2)
    hub.add(T_CITY, city)
    cv2.imwrite(str(tmp_path / "street.png"), synthetic_photo(64, 128, seed=4))
    out = tmp_path / "out"
    assert main(["predict", "--model", "lrformer_t.cityscapes", str(tmp_path / "street.png"), "--out", str(out),
                 "--json"]) == 0  # fmt: skip
    (summary,) = [json.loads(p.read_text()) for p in out.glob("*.json")]
    names = {row["name"] for row in summary["classes"]}
    assert names and names <= set(lrformer.palettes.CITYSCAPES_CLASSES)


def test_ambiguous_and_missing_names_are_one_line_with_the_fix(hub, capsys, tmp_path):
    hub.add("ade20k/lrformer_t.pth", b"x")
    with pytest.raises(CheckpointError) as info:
        lrformer.create_model("lrformer_t.ade20k", pretrained=True)
    assert str(info.value).startswith(
        f"2 files of yuhuan-wu/LRFormer-Models match lrformer_t.ade20k: ade20k/lrformer_t.pth, {T_ADE}; name the file"
    )
    with pytest.raises(CheckpointError, match=r"no file of yuhuan-wu/LRFormer-Models matches lrformer_t\.cocostuff "
                                              r"\(files of lrformer_t: .*\); name the file instead"):  # fmt: skip
        lrformer.create_model("lrformer_t.cocostuff", pretrained=True)
    # naming the file with hf-hub: is the way out, and keeps the tag's description
    model = lrformer.create_model("lrformer_t.ade20k", pretrained=f"hf-hub:yuhuan-wu/LRFormer-Models/{T_ADE}")
    assert model.config["classes"][0] == "wall"


def test_a_file_the_hub_no_longer_has_is_named(hub):
    hub.gone.add(T_ADE)
    with pytest.raises(CheckpointError, match=f"yuhuan-wu/LRFormer-Models has no file '{T_ADE}'"):
        lrformer.create_model("lrformer_t.ade20k", pretrained=True)


def test_a_truncated_download_is_not_kept_and_the_next_call_completes_it(hub, ade_file):
    hub.truncate[T_ADE] = len(ade_file[0]) // 3
    with pytest.raises(CheckpointError, match=r"^cannot get hf-hub:yuhuan-wu/LRFormer-Models/"):
        lrformer.create_model("lrformer_t.ade20k", pretrained=True)
    cache = Path(os.environ["HF_HUB_CACHE"])
    assert not [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size == len(ade_file[0])]
    del hub.truncate[T_ADE]
    assert_weights(lrformer.create_model("lrformer_t.ade20k", pretrained=True), ade_file[1])


def test_a_corrupted_download_is_named_never_loaded_and_deleting_it_fixes_it(hub, ade_file, monkeypatch):
    hub.corrupt.add(T_ADE)
    loaded = []
    with monkeypatch.context() as patch, pytest.raises(CheckpointError) as info:
        patch.setattr(torch, "load", lambda *a, **k: loaded.append(a))
        lrformer.create_model("lrformer_t.ade20k", pretrained=True)
    message = str(info.value)
    assert message.startswith(f"the downloaded hf-hub:yuhuan-wu/LRFormer-Models/{T_ADE} is damaged (sha256 ")
    assert loaded == []
    blob = Path(message.split("rm '")[1].split("'")[0])
    assert blob.is_file() and "blobs" in blob.parts
    hub.corrupt.clear()
    with pytest.raises(CheckpointError, match="is damaged"):  # still in the cache: still refused
        lrformer.create_model("lrformer_t.ade20k", pretrained=True)
    blob.unlink()  # the fix the message gives
    assert_weights(lrformer.create_model("lrformer_t.ade20k", pretrained=True), ade_file[1])


def test_a_cached_file_damaged_later_is_refused(hub, ade_file):
    path = read_checkpoint("lrformer_t.ade20k").path
    blob = Path(os.path.realpath(path))
    blob.write_bytes(blob.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=rf"is damaged .*delete it \(rm '{blob}'\)"):
        lrformer.create_model("lrformer_t.ade20k", pretrained=True)


def test_a_pinned_sha256_must_match(hub, monkeypatch):
    pinned = zoo.ReleasedModel("lrformer_t.ade20k", "ade20k", path=T_ADE, sha256="0" * 64)
    monkeypatch.setitem(zoo.RELEASED, "lrformer_t.ade20k", pinned)
    with pytest.raises(CheckpointError, match=r"is damaged \(sha256 .*expected 000000000000"):
        lrformer.create_model("lrformer_t.ade20k", pretrained=True)
    assert not any("/tree/" in path for _, path in hub.requests)  # a pinned path needs no listing
    monkeypatch.setitem(zoo.RELEASED, "lrformer_t.ade20k", zoo.ReleasedModel(
        "lrformer_t.ade20k", "ade20k", path=T_ADE, sha256=hub.sha256(T_ADE)))  # fmt: skip
    assert lrformer.create_model("lrformer_t.ade20k", pretrained=True).config["classes"][0] == "wall"


def test_a_file_of_another_dataset_is_refused_for_the_tag(hub, ade_file):
    hub.add(T_CITY, ade_file[0])  # named Cityscapes, holds 150 classes
    with pytest.raises(CheckpointError, match=r"holds a 150-class model, not the 19 classes of lrformer_t\.cityscapes "
                                              r"\(cityscapes\)"):  # fmt: skip
        lrformer.create_model("lrformer_t.cityscapes", pretrained=True)


def test_url_sha256_is_checked_before_the_file_enters_the_cache(hub, ade_file):
    url = f"{hub.endpoint}/yuhuan-wu/LRFormer-Models/resolve/main/{T_ADE}"
    cache = Path(os.environ["LRFORMER_CACHE"])
    with pytest.raises(CheckpointError, match=r"does not match its sha256 0000000000"):
        read_checkpoint(f"{url}#sha256={'0' * 64}")
    assert not cache.exists() or not [p for p in cache.iterdir() if p.is_file()]
    with pytest.raises(CheckpointError, match="must be sha256= and 64 hex digits"):
        read_checkpoint(f"{url}#md5=abc")
    checkpoint = read_checkpoint(f"{url}#sha256={hub.sha256(T_ADE)}")
    assert torch.equal(checkpoint.state_dict["decode_head.conv_seg.weight"], ade_file[1]["decode_head.conv_seg.weight"])
    checkpoint.path.write_bytes(b"damaged")
    with pytest.raises(CheckpointError, match=rf"is damaged .*rm '{checkpoint.path}'"):
        read_checkpoint(f"{url}#sha256={hub.sha256(T_ADE)}")
    with pytest.raises(CheckpointError, match=rf"cannot read {checkpoint.path}, the cached download of {url}: .*"
                                              rf"delete it \(rm '{checkpoint.path}'\)"):  # fmt: skip
        read_checkpoint(url)  # no sha256 to check: the damage shows when it is read


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--model", "lrformer_b.cityscape"], "unknown released model 'lrformer_b.cityscape'. Did you mean "
                                              "'lrformer_b.cityscapes'?"),
        (["--model", "lrformer_b.cityscapes", "--num-classes", "150"], "--model lrformer_b.cityscapes is a 19-class "
         "cityscapes model, not the 150 classes of --num-classes: use lrformer_b.ade20k, or drop --num-classes"),
    ],
)
def test_tag_mistakes_on_the_command_line_are_one_line(argv, expected, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), synthetic_photo(40, 40))
    assert main(["predict", *argv, str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]) == 2
    assert error_line(capsys).startswith(f"lrformer predict: error: {expected}")


def test_lrformer_models_lists_tags_files_and_the_cache(hub, capsys):
    assert main(["models", "lrformer_t", "--refresh"]) == 0
    table = capsys.readouterr().out.splitlines()
    (row,) = [line for line in table if line.startswith("lrformer_t.ade20k ")]
    assert row.split()[-2:] == ["no", T_ADE] and "46.7" in row.split()
    lrformer.create_model("lrformer_t.ade20k", pretrained=True)
    hub.stop()  # the listing is cached: no request needed
    assert main(["models", "lrformer_t.ade20k", "--json"]) == 0
    (entry,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # JSON lines only
    assert (entry["file"], entry["cached"], entry["classes"], entry["miou"]) == (T_ADE, True, 150, 46.7)


def test_eval_by_tag_and_a_dataset_of_other_classes(hub, tmp_path, capsys):
    ade = tmp_path / "data" / "ADEChallengeData2016"
    for folder in ("images", "annotations"):
        (ade / folder / "validation").mkdir(parents=True)
    for index in range(2):
        cv2.imwrite(str(ade / "images" / "validation" / f"{index}.jpg"), synthetic_photo(64, 96, seed=index))
        cv2.imwrite(str(ade / "annotations" / "validation" / f"{index}.png"), synthetic_photo(64, 96, seed=index)[..., 0] % 151)
    arguments = ["eval", "--model", "lrformer_t.ade20k", "--data-root", str(tmp_path / "data"), "--workers", "0"]
    assert main([*arguments, "--data", "ade20k"]) == 0
    assert "ade20k val: 2 images" in capsys.readouterr().out
    assert main([*arguments, "--data", "cityscapes"]) == 2
    assert error_line(capsys) == (
        "lrformer eval: error: --model lrformer_t.ade20k is a 150-class ade20k model, not the 19 classes of "
        "--data cityscapes: use lrformer_t.cityscapes"
    )


def test_a_download_killed_half_way_leaves_nothing_and_the_next_call_completes(hub, ade_file):
    url = f"{hub.endpoint}/yuhuan-wu/LRFormer-Models/resolve/main/{T_ADE}#sha256={hub.sha256(T_ADE)}"
    hub.stall.add(T_ADE)
    for source in ("lrformer_t.ade20k", url):
        hub.stalled.clear()
        code = f"from lrformer.models.weights import read_checkpoint; read_checkpoint({source!r})"
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert hub.stalled.wait(120), "the download never started"
        finally:
            child.kill()  # kill -9 half-way through the file
            child.wait()
    hub.stall.clear()
    complete = len(ade_file[0])
    for cache in (os.environ["HF_HUB_CACHE"], os.environ["LRFORMER_CACHE"]):  # nothing whole, nothing in place
        assert not [p for p in Path(cache).rglob("*") if p.is_file() and p.stat().st_size == complete]
        assert not [p for p in Path(cache).rglob("*.pth") if not p.name.startswith(".")]
    assert_weights(lrformer.create_model("lrformer_t.ade20k", pretrained=True), ade_file[1])
    left = [p for p in Path(os.environ["LRFORMER_CACHE"]).iterdir() if p.name.startswith(".")]
    assert left  # what the killed URL download left: removed by the next download once it is a day old
    for path in left:
        os.utime(path, (0, 0))
    assert torch.equal(read_checkpoint(url).state_dict["decode_head.conv_seg.bias"], ade_file[1]["decode_head.conv_seg.bias"])
    assert not [p for p in Path(os.environ["LRFORMER_CACHE"]).iterdir() if p.name.startswith(".")]


def test_a_file_replaced_on_the_hub_is_fetched_again(hub, ade_file):
    lrformer.create_model("lrformer_t.ade20k", pretrained=True)  # listed and cached
    newer, state = released_bytes(150, seed=5)
    hub.add(T_ADE, newer)  # the authors replace the file under the same name
    assert_weights(lrformer.create_model("lrformer_t.ade20k", pretrained=True), state)
    city, city_state = released_bytes(19, seed=6)
    hub.add(T_CITY, city)
    zoo.released_file(zoo.RELEASED["lrformer_t.cityscapes"], refresh=True)  # listed, not downloaded
    hub.remove(T_CITY)  # ... then moved: the cached listing is stale, so the repository is listed again
    hub.add(f"v2/{T_CITY}", city)
    assert_weights(lrformer.create_model("lrformer_t.cityscapes", pretrained=True), city_state)
    assert downloads(hub)[-1] == f"/yuhuan-wu/LRFormer-Models/resolve/main/v2/{T_CITY}"
    hub.add(f"{T_ADE[:-4]}.safetensors", b"the same weights in safetensors")  # two formats: one file
    assert zoo.released_file(zoo.RELEASED["lrformer_t.ade20k"], refresh=True).path.endswith(".safetensors")


def test_refresh_offline_keeps_the_cached_listing(hub, monkeypatch, capsys):
    assert main(["models", "lrformer_t.ade20k", "--refresh"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["models", "lrformer_t.ade20k", "--refresh", "--json"]) == 0
    (entry,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert entry["file"] == T_ADE


def test_tags_in_a_training_config(hub, ade_file, tmp_path):
    from lrformer.engine.config import load_config
    from lrformer.errors import ConfigError

    config = load_config("lrformer_t_ade20k", ["model.pretrained=lrformer_t.ade20k"])
    model = lrformer.create_model(config.model.name, num_classes=7, pretrained=config.model.pretrained)
    assert torch.equal(model.state_dict()["backbone.block4.2.mlp.fc2.weight"],
                       ade_file[1]["backbone.block4.2.mlp.fc2.weight"].float())  # fmt: skip
    with pytest.raises(ConfigError, match=r"model\.pretrained: unknown released model 'lrformer_t\.ade2k'"):
        load_config("lrformer_t_ade20k", ["model.pretrained=lrformer_t.ade2k"])
    with pytest.raises(ConfigError, match=r"model\.name lrformer_t\.ade20k is a released model's tag: set model\.name "
                                          r"lrformer_t and model\.pretrained lrformer_t\.ade20k"):  # fmt: skip
        load_config("lrformer_t_ade20k", ["model.name=lrformer_t.ade20k"])
