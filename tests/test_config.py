"""Training configs: mmengine's merge rule for ``_base_`` files and ``--set`` alike, validation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

import lrformer
from lrformer.cli.main import main
from lrformer.engine.config import DEFAULTS, FREE_FORM, RULES, OptimSettings, TrainingConfig, load_config, merge
from lrformer.engine.optim import build_optimizer, lr_factor
from lrformer.engine.schema import leaves


def test_merge_is_key_by_key_unless_delete():
    base = {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "b": [1, 2]}
    assert merge(base, {"a": {"y": {"q": 3}}, "b": [3]}) == {"a": {"x": 1, "y": {"p": 1, "q": 3}}, "b": [3]}
    assert merge(base, {"a": {"y": {"_delete_": True, "r": 4}}}) == {"a": {"x": 1, "y": {"r": 4}}, "b": [1, 2]}
    assert merge(base, {"a": {"_delete_": True, "z": {"_delete_": True, "s": 5}}}) == {
        "a": {"z": {"s": 5}},
        "b": [1, 2],
    }
    assert base == {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "b": [1, 2]}  # not modified
    assert merge({"a": 1}, {"a": {"x": 2}}) == {"a": {"x": 2}}  # a mapping replaces a non-mapping


def test_set_changes_one_custom_key_and_keeps_the_others():
    config = load_config(None, ["optim.custom_keys.head.lr_mult=5"])
    assert config["optim"]["custom_keys"] == {"head": {"lr_mult": 5}, "norm": {"decay_mult": 0.0}}
    config = load_config(None, ['optim.custom_keys={"_delete_": true, "backbone": {"lr_mult": 0.1}}'])
    assert config["optim"]["custom_keys"] == {"backbone": {"lr_mult": 0.1}}
    config = load_config(None, ['optim.custom_keys={"query_embed": {"decay_mult": 0.0}}'])
    assert set(config["optim"]["custom_keys"]) == {"head", "norm", "query_embed"}


def test_base_chain_merges_in_order_with_the_same_rule(tmp_path):
    (tmp_path / "root.yaml").write_text(
        "optim:\n  custom_keys: {head: {lr_mult: 10.0}, norm: {decay_mult: 0.0}}\ndata:\n  batch_size: 8\n"
    )
    (tmp_path / "other.yaml").write_text("train:\n  seed: 3\n")
    (tmp_path / "mid.yaml").write_text(
        "_base_: [root.yaml, other.yaml]\noptim:\n  custom_keys: {head: {lr_mult: 5.0}}\n"
    )
    (tmp_path / "child.yaml").write_text("_base_: mid.yaml\ndata:\n  batch_size: 2\n")
    config = load_config(tmp_path / "child.yaml", ["train.seed=4"])
    assert config["optim"]["custom_keys"] == {"head": {"lr_mult": 5.0}, "norm": {"decay_mult": 0.0}}
    assert config["data"]["batch_size"] == 2 and config["train"]["seed"] == 4
    assert config["data"]["workers"] == DEFAULTS["data"]["workers"]


def test_delete_of_a_fixed_section_falls_back_to_the_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("optim:\n  _delete_: true\n  lr: 0.5\n")
    optim = load_config(tmp_path / "c.yaml")["optim"]
    assert optim["lr"] == 0.5 and {k: v for k, v in optim.items() if k != "lr"} == {
        k: v for k, v in DEFAULTS["optim"].items() if k != "lr"
    }


def test_switching_the_resize_type_needs_delete(tmp_path):
    (tmp_path / "bad.yaml").write_text("data:\n  resize: {type: RandomChoiceResize, scales: [256, 512]}\n")
    with pytest.raises(
        ValueError, match=r"data.resize: RandomChoiceResize takes scales, max_size, not scale, ratio_range"
    ):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "good.yaml").write_text(
        "data:\n  resize: {_delete_: true, type: RandomChoiceResize, scales: [256, 512]}\n"
    )
    assert load_config(tmp_path / "good.yaml")["data"]["resize"] == {"type": "RandomChoiceResize", "scales": [256, 512]}


def test_unknown_keys_and_cycles_are_named(tmp_path):
    with pytest.raises(KeyError, match="unknown config key 'data.scale'. Did you mean 'data.resize.scale'?"):
        load_config(None, ["data.scale=[512, 512]"])
    with pytest.raises(KeyError, match="'optim.custom_key'"):
        load_config(None, ["optim.custom_key.head.lr_mult=1"])
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ValueError, match=r"_base_ cycle: a.yaml -> b.yaml -> a.yaml"):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.custom_keys.head.lr_mul=5", "optim.custom_keys.head: unknown field 'lr_mul'. Did you mean 'lr_mult'?"),
        ("optim.custom_keys.head=null", "optim.custom_keys.head must be a mapping such as"),
        ('optim.custom_keys={"backbone.block{stg}": {lr_mult: 1}}', r"placeholders are \{stage\} and"),
        ('optim.custom_keys={"block{block}": {lr_mult: 1}}', r"placeholders are \{stage\} and"),
        ("optim.custom_keys.head.lr_mult=fast", "optim.custom_keys.head.lr_mult must be a number >= 0"),
        (
            "optim.clip_grad.max_norm=0.1",
            r"'optim.clip_grad' takes a single value, not the mapping \{'max_norm': 0.1\}",
        ),
        ("schedule.warmup_iters=1", "use 0 \\(no warm-up\\) or at least 2"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_list_elements_and_test_keys(tmp_path):
    assert load_config(None, ["data.crop_size.1=640"])["data"]["crop_size"] == [512, 640]
    assert load_config(None, ["test.scale=[2560, 640]"])["test"] == {"scale": [2560, 640]}
    with pytest.raises(KeyError, match="unknown config key 'test.scal'. Did you mean 'test.scale'?"):
        load_config(None, ["test.scal=[2560, 640]"])
    (tmp_path / "c.yaml").write_text("_base_: missing.yaml\n")
    with pytest.raises(FileNotFoundError, match=r"missing.yaml does not exist \(the _base_ of .*c.yaml\)"):
        load_config(tmp_path / "c.yaml")


def test_exponent_numbers_without_a_dot_are_numbers(tmp_path):
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 1e-3\n  eps: 1E-8\n")  # YAML 1.1 would read strings
    optim = load_config(tmp_path / "c.yaml")["optim"]
    assert (optim["lr"], optim["eps"]) == (1e-3, 1e-8)
    (tmp_path / "q.yaml").write_text('optim:\n  lr: "1e-3"\n')  # quoted: a string, named as such
    with pytest.raises(ValueError, match="a quoted number: write it without quotes"):
        load_config(tmp_path / "q.yaml")


def test_the_config_is_typed_and_still_reads_and_writes_as_a_mapping():
    config = load_config(None, ["optim.lr=1e-3", "data.crop_size.0=640"])
    assert isinstance(config, TrainingConfig) and isinstance(config.optim, OptimSettings)
    assert config.optim.lr == config["optim"]["lr"] == 1e-3 and config.data.crop_size == [640, 512]
    expected = copy.deepcopy(DEFAULTS)  # the plain tree, as checkpoints and config.yaml hold it
    expected["optim"]["lr"], expected["data"]["crop_size"] = 1e-3, [640, 512]
    assert config.to_dict() == expected and type(config.to_dict()["optim"]) is dict
    assert config.optim == expected["optim"] and {**config.schedule} == DEFAULTS["schedule"]
    config["schedule"]["max_iters"] = 3  # code written against the dict config keeps working
    config["model"].update(name="lrformer_t_plus", drop_path_rate=0.0)
    config["optim"] = {"lr": 0.5}  # a mapping for a section: checked, the other keys from the defaults
    assert (config.schedule.max_iters, config.model.name, config.optim.lr) == (3, "lrformer_t_plus", 0.5)
    assert config.optim.eps == DEFAULTS["optim"]["eps"]
    with pytest.raises(KeyError, match="unknown config key 'optim.weight_decy'. Did you mean 'optim.weight_decay'?"):
        config["optim"]["weight_decy"]
    with pytest.raises(KeyError, match="unknown config key 'train.sed'"):
        config["train"]["sed"] = 1
    assert config.get("nope") is None and "optim" in config and "lr" not in config


def test_every_key_is_declared_once_with_its_default_rule_and_doc():
    paths = [path for path, _, _ in leaves(TrainingConfig, DEFAULTS)]  # every value of the defaults tree
    assert sorted(paths) == sorted([*RULES, *FREE_FORM]) and len(paths) == len(set(paths))
    for path, key, _ in leaves(TrainingConfig, DEFAULTS):
        assert key.doc and "\n" not in key.doc, path
        assert key.kind is dict or key.rule.what, path
    assert TrainingConfig.from_dict(DEFAULTS) == TrainingConfig() == DEFAULTS


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda model: build_optimizer(model, {"lr": "fast"}), "optim.lr must be a number > 0, got the string 'fast'"),
        (lambda model: build_optimizer(model, {"lrr": 1}), "unknown config key 'optim.lrr'. Did you mean 'optim.lr'?"),
        (lambda model: lr_factor(0, {"warmup_iters": 1}), "schedule.warmup_iters is 1"),
    ],
)
def test_builders_check_a_plain_mapping_as_a_config(call, message):
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=message):
        call(model)


def test_a_section_mapping_fills_in_the_defaults():
    assert lr_factor(0, {"warmup_iters": 0}) == 1.0  # no warm-up: the full rate from the start
    optimizer = build_optimizer(torch.nn.Linear(2, 2), {"lr": 0.5})
    assert [g["lr"] for g in optimizer.param_groups] == [0.5] and optimizer.defaults["eps"] == 1e-8


CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.mark.parametrize(
    "path, overrides",
    [
        (None, []),
        (CONFIGS / "lrformer_t_plus_ade20k.yaml", []),  # another resize type and custom keys, by _delete_
        (Path(lrformer.__file__).parent / "configs" / "demo.yaml", ["data.dataset=d.yaml", "data.root=."]),
        (CONFIGS / "lrformer_t_ade20k.yaml", ["test.scale=[1024, 256]", "optim.custom_keys.head.decay_mult=0.5"]),
    ],
)
def test_dump_config_prints_every_key_and_reads_back_equal(path, overrides, tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    argv = ["train", str(path or empty), "--work-dir", str(tmp_path / "work"), "--dump-config"]
    assert main(argv + [x for o in overrides for x in ("--set", o)]) == 0
    assert not (tmp_path / "work").exists()  # no training
    dumped = capsys.readouterr().out
    (tmp_path / "dumped.yaml").write_text(dumped)
    config = load_config(path, overrides)
    assert load_config(tmp_path / "dumped.yaml") == config
    tree = yaml.safe_load(dumped)
    assert list(tree) == list(DEFAULTS)
    for name, section in tree.items():  # every key, defaults filled in
        if name != "test":
            assert list(section) == list(DEFAULTS[name]), name
    assert load_config(tmp_path / "dumped.yaml", ["optim.lr=0.5"]).optim.lr == 0.5
