"""The training recipes ship inside the package and are reachable by name: ``lrformer configs``,
``lrformer train NAME``, ``_base_: NAME``, and an installed wheel (no clone) that trains one."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import pytest
import torch
import yaml

import lrformer
from lrformer.cli.main import main
from lrformer.engine.config import load_config
from lrformer.engine.recipes import list_recipes, recipe_folder, recipe_path, resolve_config_argument
from lrformer.errors import MissingFileError, UnknownNameError

from .fake_hub import FakeHub
from .helpers import error_line, run_bounded, synthetic_photo

REPO = Path(__file__).resolve().parent.parent

EXPECTED = {
    "ade20k_base": (None, "ade20k"),
    "plus_ade20k_base": (None, "ade20k"),
    "plus_ade20k_640_base": (None, "ade20k"),
    "demo": ("lrformer_t", None),
    "lrformer_t_ade20k": ("lrformer_t", "ade20k"),
    "lrformer_s_ade20k": ("lrformer_s", "ade20k"),
    "lrformer_b_ade20k": ("lrformer_b", "ade20k"),
    "lrformer_l_ade20k": ("lrformer_l", "ade20k"),
    "lrformer_t_plus_ade20k": ("lrformer_t_plus", "ade20k"),
    "lrformer_s_plus_ade20k": ("lrformer_s_plus", "ade20k"),
    "lrformer_b_plus_ade20k": ("lrformer_b_plus", "ade20k"),
    "lrformer_l_plus_ade20k": ("lrformer_l_plus", "ade20k"),
    "lrformer_l_plus_ade20k_640": ("lrformer_l_plus", "ade20k"),
    "lrformer_xl_plus_ade20k_640": ("lrformer_xl_plus", "ade20k"),
    "lrformer_t_cityscapes": ("lrformer_t", "cityscapes"),
    "lrformer_t_cocostuff": ("lrformer_t", "cocostuff"),
}
"""Recipe name → (model variant, dataset) its ``_base_`` chain sets, written out by hand."""

TINY = [
    "data.resize.scale=[128,64]", "data.crop_size=[64,64]", "data.batch_size=2", "data.workers=0",
    "train.device=cpu", "train.val_interval=0", "train.checkpoint_interval=2", "schedule.max_iters=2",
    "schedule.warmup_iters=0", "test.scale=[96,64]",
    'model.overrides={"embed_dims": [16, 32, 80, 64], "depths": [1, 1, 2, 1], "head_channels": 32}',
]  # fmt: skip
"""``--set`` overrides that make a recipe train a tiny LRFormer-T for 2 iterations on CPU in seconds."""


def test_the_recipes_live_in_the_package_and_configs_links_to_them():
    folder = recipe_folder()
    assert folder == Path(lrformer.__file__).parent / "configs"
    link = REPO / "configs"
    assert link.is_symlink() and os.readlink(link) == os.path.join("lrformer", "configs")  # relative: clones work
    assert link.resolve() == folder.resolve()


def test_list_recipes_covers_every_file_with_its_model_and_dataset():
    recipes = {r.name: r for r in list_recipes()}
    assert set(recipes) == {p.stem for p in recipe_folder().glob("*.yaml")} == set(EXPECTED)
    assert {name: (r.variant, r.dataset) for name, r in recipes.items()} == EXPECTED
    assert {name for name, r in recipes.items() if r.is_base} == {"ade20k_base", "plus_ade20k_base",
                                                                  "plus_ade20k_640_base"}  # fmt: skip
    assert [name for name, r in recipes.items() if r.is_demo] == ["demo"] and recipes["demo"].kind == "demo"
    assert recipes["lrformer_t_ade20k"].kind == "recipe" and recipes["ade20k_base"].kind == "base"
    assert recipes["lrformer_t_cityscapes"].description == "LRFormer-T on Cityscapes (19 classes)"
    assert recipes["lrformer_t_ade20k"].description == "LRFormer-T on ADE20K, 512x512 (official recipe)"
    assert all(r.description and "\n" not in r.description for r in recipes.values())
    assert all(r.path == recipe_folder() / f"{name}.yaml" for name, r in recipes.items())


@pytest.mark.parametrize("name", ["lrformer_t_ade20k", "lrformer_t_ade20k.yaml"])
def test_a_recipe_name_loads_the_recipe_file(name):
    assert load_config(name).to_dict() == load_config("configs/lrformer_t_ade20k.yaml").to_dict()
    assert recipe_path(name) == recipe_folder() / "lrformer_t_ade20k.yaml"


def test_an_unknown_name_says_the_closest_and_where_to_look():
    closest = r"unknown recipe 'lrformer_t_ade2k'\. Did you mean 'lrformer_t_ade20k'\?"
    with pytest.raises(UnknownNameError, match=closest):
        load_config("lrformer_t_ade2k")
    with pytest.raises(UnknownNameError, match="`lrformer configs` lists the recipes"):
        recipe_path("nothing_like_it")


def test_a_file_wins_over_a_name_and_a_missing_path_is_a_missing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("lrformer_t_ade20k.yaml").write_text("model: {name: lrformer_b}\n")
    assert resolve_config_argument("lrformer_t_ade20k.yaml") == Path("lrformer_t_ade20k.yaml")
    assert load_config("lrformer_t_ade20k.yaml").model.name == "lrformer_b"
    assert load_config("lrformer_t_ade20k").model.name == "lrformer_t"  # no such file: the recipe
    for text in ("mine/lrformer_t_ade20k", "lrformer_t_ade2k.yml"):  # looks like a path
        with pytest.raises(MissingFileError, match=f"config {tmp_path / text} does not exist; give the path"):
            resolve_config_argument(text)


def test_base_may_name_a_recipe_from_anywhere(tmp_path):
    mine = tmp_path / "elsewhere" / "mine.yaml"
    mine.parent.mkdir()
    mine.write_text("_base_: lrformer_s_ade20k\noptim: {lr: 1.0e-4}\n")
    want = load_config("lrformer_s_ade20k", ["optim.lr=1e-4"])
    assert load_config(mine) == want and want.optim.lr == 1e-4 and want.model.name == "lrformer_s"
    mine.write_text("_base_: [lrformer_s_ade20k.yaml]\noptim: {lr: 1.0e-4}\n")
    assert load_config(mine) == want


def test_a_file_next_to_the_config_wins_over_a_recipe_of_that_name(tmp_path):
    (tmp_path / "lrformer_s_ade20k.yaml").write_text("model: {name: lrformer_b}\n")
    (tmp_path / "mine.yaml").write_text("_base_: lrformer_s_ade20k.yaml\n")
    assert load_config(tmp_path / "mine.yaml").model.name == "lrformer_b"
    (tmp_path / "other.yaml").write_text("_base_: not_a_recipe.yaml\n")
    with pytest.raises(MissingFileError, match=r"not_a_recipe.yaml does not exist \(the _base_ of .*other.yaml\)"):
        load_config(tmp_path / "other.yaml")


def test_configs_lists_the_recipes_and_how_to_use_one(capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:4] for line in out.splitlines()[1 : len(EXPECTED) + 1]}
    assert rows == {name: [v or "-", d or "-", "base" if name.endswith("_base") else "demo" if name == "demo"
                           else "recipe"] for name, (v, d) in EXPECTED.items()}  # fmt: skip
    assert "lrformer train lrformer_t_ade20k" in out and "_base_: lrformer_t_ade20k" in out


def test_listing_the_recipes_does_not_load_pytorch():
    code = (
        "import contextlib, io, sys\nfrom lrformer.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['configs']) == 0\n"
        "print([m for m in ('torch', 'cv2', 'numpy') if m in sys.modules])"
    )
    assert _run([sys.executable, "-c", code]).stdout.strip() == "[]"


def test_configs_filters_by_pattern(capsys):
    assert main(["configs", "*xl*"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:2]] == ["lrformer_xl_plus_ade20k_640"]
    assert main(["configs", "cityscapes"]) == 0  # a plain word: names containing it
    assert capsys.readouterr().out.splitlines()[1].startswith("lrformer_t_cityscapes ")
    assert main(["configs", "*cityscape"]) == 2
    assert "no recipe matches '*cityscape'" in error_line(capsys)


def test_dump_writes_a_yaml_that_loads_to_the_recipe(tmp_path, capsys):
    assert main(["configs", "--dump", "lrformer_t_plus_ade20k"]) == 0
    dumped = capsys.readouterr().out
    assert dumped.startswith("# lrformer_t_plus_ade20k, resolved by `lrformer configs --dump`")
    assert "# LRFormer-T+ on ADE20K" in dumped and "# from plus_ade20k_base.yaml:" in dumped
    assert "# from ade20k_base.yaml:" in dumped
    (tmp_path / "mine.yaml").write_text(dumped)
    assert load_config(tmp_path / "mine.yaml") == load_config("lrformer_t_plus_ade20k")
    assert "_base_" not in yaml.safe_load(dumped)  # self-contained


def test_dump_to_a_file_is_atomic_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "mine.yaml"
    assert main(["configs", "--dump", "lrformer_s_ade20k", "-o", str(out)]) == 0
    assert load_config(out) == load_config("lrformer_s_ade20k")
    out.write_text("edited\n")
    capsys.readouterr()
    assert main(["configs", "--dump", "lrformer_s_ade20k", "-o", str(out)]) == 2
    assert f"-o {out} exists: add --force to replace it" in error_line(capsys)
    assert out.read_text() == "edited\n"
    assert main(["configs", "--dump", "lrformer_t_ade20k", "--set", "optim.lr=1e-4", "-o", str(out), "--force"]) == 0
    assert load_config(out) == load_config("lrformer_t_ade20k", ["optim.lr=1e-4"])
    assert [p.name for p in tmp_path.iterdir()] == ["mine.yaml"]  # no temporary file left behind


def test_dump_refuses_to_write_into_the_packaged_recipes(capsys):
    before = sorted(recipe_folder().iterdir())
    for target in (recipe_folder() / "mine.yaml", REPO / "configs" / "lrformer_t_ade20k.yaml"):
        assert main(["configs", "--dump", "lrformer_t_ade20k", "-o", str(target), "--force"]) == 2
        assert "is inside the packaged recipes" in error_line(capsys)
    assert sorted(recipe_folder().iterdir()) == before


def test_configs_mistakes_are_one_line(capsys):
    assert main(["configs", "-o", "x.yaml"]) == 2
    assert "go with --dump NAME" in error_line(capsys)
    assert main(["configs", "--dump", "lrformer_t_ade2k"]) == 2
    assert "Did you mean 'lrformer_t_ade20k'?" in error_line(capsys)
    assert main(["configs", "plus", "--dump", "lrformer_t_ade20k"]) == 2
    assert "give a pattern to list recipes or --dump NAME, not both" in error_line(capsys)


def test_train_takes_a_recipe_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "lrformer_t_ade20k", "--set", "data.root=DATA", "--dump-config"]) == 0
    tree = yaml.safe_load(capsys.readouterr().out)
    assert tree["model"]["name"] == "lrformer_t" and tree["data"]["root"] == "DATA"
    assert not (tmp_path / "work_dirs").exists()


def test_wheel_ships_recipes(tmp_path):
    """Build the wheel, install it alone (no clone on the path), list, dump and train a recipe by name,
    and predict with a released model by its tag."""
    pytest.importorskip("setuptools", reason="building the wheel without a network needs setuptools installed")
    source = tmp_path / "source"  # a copy, so the build leaves the checkout untouched
    ignore = ("*.egg-info", "__pycache__", "build", "dist", "work_dirs", "tests", ".*")
    _copy_tree(REPO, source, ignore)
    assert (source / "configs").is_symlink()  # the build meets the link, as in a clone
    built = _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                  "--no-index", "-w", str(tmp_path / "wheel")], cwd=tmp_path)  # fmt: skip
    (wheel,) = (tmp_path / "wheel").glob("lrformer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n for n in names if n.endswith(".yaml"))
    assert shipped == sorted(f"lrformer/configs/{name}.yaml" for name in EXPECTED), built.stdout
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
         cwd=tmp_path)  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}

    def lrformer_command(*argv: str) -> str:
        return _run([sys.executable, "-m", "lrformer", *argv], cwd=run, env=env).stdout

    where = _run([sys.executable, "-c", "import lrformer; print(lrformer.__file__)"], cwd=run, env=env).stdout
    assert Path(where.strip()) == site / "lrformer" / "__init__.py"  # the wheel's copy, not the checkout's
    listed = lrformer_command("configs")
    assert all(name in listed for name in EXPECTED) and str(site) not in listed
    dumped = lrformer_command("configs", "--dump", "lrformer_t_ade20k")
    assert yaml.safe_load(dumped)["model"]["name"] == "lrformer_t"
    from lrformer.data import synthetic

    spec = synthetic.generate(tmp_path / "shapes", train=4, val=1, size=64)
    sets = [f"data.dataset={spec}", f"data.root={spec.parent}", *TINY]
    lrformer_command("train", "demo", *[a for s in sets for a in ("--set", s)])
    assert (run / "work_dirs" / "demo" / "iter_2.pth").is_file()  # the default work dir: the recipe's name
    # a released model by its tag, from a local Hub holding a file named like the official ones
    released = io.BytesIO()
    torch.save({"state_dict": lrformer.create_model("lrformer_t").state_dict()}, released)
    cv2.imwrite(str(run / "photo.png"), synthetic_photo(48, 64, seed=1))
    with FakeHub({"lrformer-t-160k_ade20k_46.7.pth": released.getvalue()}) as hub:
        env.update(HF_ENDPOINT=hub.endpoint, HF_HUB_CACHE=str(tmp_path / "hf"), LRFORMER_CACHE=str(tmp_path / "lc"))
        env.pop("HF_HUB_OFFLINE", None)
        listed = lrformer_command("models", "lrformer_t.ade20k", "--refresh")
        assert "lrformer-t-160k_ade20k_46.7.pth" in listed
        lrformer_command("predict", "--model", "lrformer_t.ade20k", "photo.png", "--out", "out", "--json")
    (summary,) = [json.loads(p.read_text()) for p in (run / "out").glob("*.json")]
    assert {row["name"] for row in summary["classes"]} <= set(lrformer.palettes.ADE20K_CLASSES)


def _copy_tree(source: Path, target: Path, ignore: tuple[str, ...]) -> None:
    """``source`` copied to ``target`` without the ``ignore`` patterns, symbolic links kept as links."""
    import shutil

    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns(*ignore))


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``command`` run to completion (bounded), its output captured; a failure shows its output."""
    done = run_bounded(command, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done
