"""The released-model table and the rule that finds a tag's file by its name (no network: listings are given)."""

from __future__ import annotations

import pytest

import lrformer
from lrformer.errors import CheckpointError, ConfigError, UnknownNameError
from lrformer.models.hub import HubFile
from lrformer.models.zoo import RELEASED, choose_file, default_tag, is_tag, matches, name_words, released_model

OFFICIAL_LIKE = {
    # names in the style of the official release (lrformer-l-160k_ade20k_52.6.pth), one per tag
    "lrformer_t.ade20k": "lrformer-t-160k_ade20k_46.7.pth",
    "lrformer_t.cocostuff": "lrformer-t-80k_cocostuff164k_43.9.pth",
    "lrformer_t.cityscapes": "lrformer-t-160k_cityscapes-1024x1024_80.7.pth",
    "lrformer_t.in1k": "imagenet/lrformer_t_in1k.pth",
    "lrformer_s.ade20k": "lrformer-s-160k_ade20k_50.0.pth",
    "lrformer_s.cocostuff": "lrformer-s-80k_coco-stuff164k_46.4.pth",
    "lrformer_s.cityscapes": "lrformer-s-160k_cityscapes_81.9.pth",
    "lrformer_s.in1k": "imagenet/lrformer_s_in1k.pth",
    "lrformer_b.ade20k": "lrformer-b-160k_ade20k_51.0.pth",
    "lrformer_b.cocostuff": "lrformer-b-80k_cocostuff_47.2.pth",
    "lrformer_b.cityscapes": "lrformer-b-160k_cityscapes_83.0.pth",
    "lrformer_b.in1k": "imagenet/lrformer_b_in1k.pth",
    "lrformer_l.ade20k": "lrformer-l-160k_ade20k_52.6.pth",
    "lrformer_l.ade20k_in22k": "lrformer-l-in22k-160k_ade20k_54.2.pth",
    "lrformer_l.cocostuff": "lrformer-l-80k_cocostuff_47.9.pth",
    "lrformer_l.cityscapes": "lrformer-l-160k_cityscapes_83.2.pth",
    "lrformer_l.in1k": "imagenet/lrformer_l_in1k.pth",
    "lrformer_l.in22k": "imagenet/lrformer_l_in22k.pth",
    "lrformer_xl.in22k": "imagenet/lrformer_xl_in22k.pth",
    "lrformer_t_plus.ade20k": "lrformer-t-plus-160k_ade20k-512x512_49.4.pth",
    "lrformer_s_plus.ade20k": "lrformer-s-plus-160k_ade20k-512x512_51.3.pth",
    "lrformer_b_plus.ade20k": "lrformer-b-plus-160k_ade20k-512x512_53.7.pth",
    "lrformer_l_plus.ade20k_in22k": "lrformer-l-plus-in22k-160k_ade20k-640x640_55.8.pth",
    "lrformer_xl_plus.ade20k_in22k": "lrformer-xl-plus-in22k-160k_ade20k-640x640_58.1.pth",
}
LISTING = [HubFile(path) for path in [*OFFICIAL_LIKE.values(), "README.md", ".gitattributes", "logs/lrformer-t.log"]]


def test_every_released_model_is_in_the_table_with_the_paper_figures():
    assert set(OFFICIAL_LIKE) == set(RELEASED)
    assert [m.miou for m in RELEASED.values() if m.dataset == "ade20k" and m.pretraining == "in1k"] == [
        46.7, 50.0, 51.0, 52.6, 49.4, 51.3, 53.7]  # fmt: skip
    cityscapes = RELEASED["lrformer_b.cityscapes"]
    assert (cityscapes.num_classes, cityscapes.flops, cityscapes.miou, cityscapes.test["mode"]) == (19, 555, 83.0, "slide")
    assert RELEASED["lrformer_xl_plus.ade20k_in22k"].test["pipeline"] == "pad"
    assert RELEASED["lrformer_l.ade20k"].test["scale"] == [2560, 640]


@pytest.mark.parametrize("tag", list(OFFICIAL_LIKE))
def test_each_tag_finds_exactly_its_file_among_all_released_names(tag):
    assert choose_file(RELEASED[tag], LISTING).path == OFFICIAL_LIKE[tag]


@pytest.mark.parametrize(
    "path, tag",
    [
        ("LRFormer-T+_ADE20K.safetensors", "lrformer_t_plus.ade20k"),  # "+" is the word plus
        ("ade20k/lrformer_b.pth", "lrformer_b.ade20k"),  # the dataset named by a folder
        ("lrformer-l-160k_ade20k_54.2.pth", "lrformer_l.ade20k_in22k"),  # L's file with the L† figure, no 22k word
        ("lrformer_xl_imagenet22k.pth.tar", None),  # not a checkpoint suffix
        ("lrformer-t-160k_ade20k_cityscapes.pth", None),  # two datasets
        ("lrformer-t-160k_ade20k_50.0.pth", None),  # another model's figure
        ("segformer-b0_ade20k.pth", None),
    ],
)
def test_the_naming_rule(path, tag):
    found = [m.tag for m in RELEASED.values() if matches(m, path)]
    assert found == ([tag] if tag else [])


def test_words_of_a_name():
    assert name_words("LRFormer-L+_in22K/ade20k.640x640_55.8.pth") == [
        "lrformer", "l", "plus", "in22k", "ade20k", "640x640", "55", "8", "pth"]  # fmt: skip


def test_no_file_or_several_is_one_line_listing_the_candidates():
    with pytest.raises(CheckpointError) as info:
        choose_file(RELEASED["lrformer_t.ade20k"], [HubFile("lrformer-t-ade20k.pth"), HubFile("ade/lrformer_t.pth")])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("2 files of yuhuan-wu/LRFormer-Models match lrformer_t.ade20k: lrformer-t-ade20k.pth, ")
    assert "--weights hf-hub:yuhuan-wu/LRFormer-Models/lrformer-t-ade20k.pth --model lrformer_t.ade20k" in message
    with pytest.raises(CheckpointError) as info:
        choose_file(RELEASED["lrformer_t.cityscapes"], [HubFile("lrformer-t-ade20k.pth"), HubFile("lrformer-s.pth")])
    assert str(info.value).startswith(
        "no file of yuhuan-wu/LRFormer-Models matches lrformer_t.cityscapes (files of lrformer_t: lrformer-t-ade20k.pth)"
    )


def test_a_pinned_path_wins_over_the_rule():
    pinned = RELEASED["lrformer_t.ade20k"].__class__("lrformer_t.ade20k", "ade20k", path="odd/name.bin", sha256="ab")
    assert choose_file(pinned, LISTING) == HubFile("odd/name.bin", None, "ab")


def test_tags_names_and_defaults():
    assert is_tag("lrformer_t.ade20k") and is_tag("lrformer_t.nonsense")
    assert not is_tag("lrformer_t") and not is_tag("weights/lrformer_t.pth") and not is_tag("model.yaml")
    assert not is_tag("lrformer_t.pth") and not is_tag("lrformer_t.onnx") and not is_tag("lrformer_t.ade20k/x")
    assert default_tag("lrformer_t") == "lrformer_t.ade20k"
    assert default_tag("lrformer_xl") == "lrformer_xl.in22k"
    assert default_tag("lrformer_l_plus") == "lrformer_l_plus.ade20k_in22k"
    assert released_model("lrformer_b") is RELEASED["lrformer_b.ade20k"]
    with pytest.raises(UnknownNameError, match=r"unknown released model 'lrformer_t\.ade2k'\. Did you mean 'lrformer_t\.ade20k'"):
        released_model("lrformer_t.ade2k")
    assert lrformer.list_models("lrformer_t*", pretrained=True) == [
        "lrformer_t.ade20k", "lrformer_t.cocostuff", "lrformer_t.cityscapes", "lrformer_t.in1k", "lrformer_t_plus.ade20k"]  # fmt: skip
    assert lrformer.list_models("lrformer_t*") == ["lrformer_t", "lrformer_t_plus"]


def test_a_tag_without_weights_describes_its_model():
    model = lrformer.create_model("lrformer_t.cityscapes")
    assert model.config["num_classes"] == 19 and model.config["tag"] == "lrformer_t.cityscapes"
    assert model.config["classes"][:3] == ["road", "sidewalk", "building"]
    assert model.config["test"]["mode"] == "slide" and "pretrained" not in model.config
    assert lrformer.create_model("lrformer_t.cityscapes", num_classes=5).config.get("classes") is None


def test_pretrained_true_needs_a_name_with_released_weights(tmp_path):
    with pytest.raises(ConfigError, match="pretrained=True loads a released model"):
        lrformer.create_model(str(tmp_path / "weights.pth"), pretrained=True)
    with pytest.raises(ConfigError, match="holds lrformer_t weights, not lrformer_s's"):
        lrformer.create_model("lrformer_s", pretrained="lrformer_t.ade20k")
    for weights in ("lrformer_s.ade20k", "lrformer_t.cityscapes"):  # refused before any download
        with pytest.raises(ConfigError, match=f"{weights} does not fit lrformer_t.ade20k"):
            lrformer.create_model("lrformer_t.ade20k", pretrained=weights)
    (tmp_path / "model.yaml").write_text("name: lrformer_t.cityscapes\n")  # a tag in a model file
    assert lrformer.create_model(tmp_path / "model.yaml").config["classes"][0] == "road"


def test_every_recipe_a_tag_names_trains_that_variant_on_that_dataset():
    from lrformer.engine.recipes import list_recipes

    recipes = {recipe.name: recipe for recipe in list_recipes()}
    named = [m for m in RELEASED.values() if m.recipe]
    assert len(named) == 11
    for model in named:
        assert (recipes[model.recipe].variant, recipes[model.recipe].dataset) == (model.variant, model.dataset)
