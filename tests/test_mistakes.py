"""Common mistakes: each is one line naming the problem and the fix, exit code 2, no traceback."""

from __future__ import annotations

import json
import os
import pickle

import cv2
import pytest
import torch

import lrformer.cli.main as cli_main
from lrformer.cli.main import main
from lrformer.data import synthetic
from lrformer.errors import LRFormerError

from .helpers import error_line, synthetic_photo

TINY = json.dumps({"embed_dims": [16, 32, 80, 64], "depths": [1, 1, 2, 1], "head_channels": 32})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Files the mistakes refer to: a dataset, photos, a config, bad checkpoints."""
    root = tmp_path_factory.mktemp("world")
    spec = synthetic.generate(root / "data", train=4, val=1, size=64)
    (root / "photos").mkdir()
    cv2.imwrite(str(root / "photos" / "a.png"), synthetic_photo(48, 64))
    (root / "a_file").write_text("x")
    (root / "quoted.yaml").write_text('optim:\n  lr: "0.001"\n')
    (root / "cycle_a.yaml").write_text("_base_: cycle_b.yaml\n")
    (root / "cycle_b.yaml").write_text("_base_: cycle_a.yaml\n")
    (root / "bad.yaml").write_text("optim: [unclosed\n")
    (root / "ok.yaml").write_text("{}\n")
    (root / "base5.yaml").write_text("_base_: 5\n")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "binary.yaml").write_bytes(b"\xff\xfe\x00\x01 not text")
    (root / "corrupt.pth").write_bytes(b"PK\x03\x04 not a whole zip")
    (root / "evil.pth").write_bytes(pickle.dumps(os.system))
    torch.save({"state_dict": {"backbone.x": torch.zeros(3)}}, root / "other.pth")
    return root, spec


def _train(world, *sets, config="ok.yaml", flags=()):
    root, spec = world
    base = [f"data.dataset={spec}", f"data.root={root / 'data'}", "train.device=cpu", "data.workers=0",
            f"model.overrides={TINY}", "data.crop_size=[64,64]"]  # fmt: skip
    argv = ["train", str(root / config), "--work-dir", str(root / "work"), *flags]
    return argv + [x for s in (*base, *sets) for x in ("--set", s)]


def _predict(world, *args, inputs=("photos",)):
    root, _ = world
    return ["predict", "--model", "lrformer_t", "--num-classes", "5", *[str(root / i) for i in inputs],
            "--workers", "0", *args]  # fmt: skip


MISTAKES = {
    "string lr": (lambda w: _train(w, "optim.lr=abc"), "optim.lr must be a number > 0, got the string 'abc'"),
    "quoted lr in YAML": (lambda w: _train(w, config="quoted.yaml"), "a quoted number: write it without quotes"),
    "malformed --set YAML": (lambda w: _train(w, "optim.lr=[1"), "is not valid YAML"),
    "--set without =": (lambda w: _train(w, "optim.lr"), "--set expects key=value"),
    "batch size 0": (lambda w: _train(w, "data.batch_size=0"), "data.batch_size must be"),
    "checkpoint interval 0": (lambda w: _train(w, "train.checkpoint_interval=0"), "train.checkpoint_interval must"),
    "log interval 0": (lambda w: _train(w, "train.log_interval=0"), "train.log_interval must be"),
    "no iterations": (lambda w: _train(w, "schedule.max_iters=0"), "schedule.max_iters must be"),
    "unknown amp": (lambda w: _train(w, "train.amp=fp32"), "train.amp must be null, bf16 or fp16"),
    "misspelt key": (lambda w: _train(w, "optim.weight_decy=0.1"), "Did you mean 'optim.weight_decay'?"),
    "old resize key": (lambda w: _train(w, "data.scale=[512,512]"), "Did you mean 'data.resize.scale'?"),
    "config not YAML": (lambda w: _train(w, config="bad.yaml"), "is not valid YAML at line"),
    "_base_ cycle": (lambda w: _train(w, config="cycle_a.yaml"), "_base_ cycle: cycle_a.yaml -> cycle_b.yaml"),
    "missing config": (lambda w: _train(w, config="nope.yaml"), "nope.yaml does not exist"),
    "missing data root": (lambda w: _train(w, "data.root=/nowhere"), "data root /nowhere does not exist"),
    "corrupt --resume": (lambda w: _train(w, flags=("--resume", str(w[0] / "corrupt.pth"))), "corrupt.pth cannot"),
    "unsafe --resume": (lambda w: _train(w, flags=("--resume", str(w[0] / "evil.pth"))), "evil.pth cannot be read"),
    "unreachable weights URL": (lambda w: _predict(w, "--weights", "http://127.0.0.1:9/w.pth", "--out",
                                                   str(w[0] / "o1")), "cannot download http://127.0.0.1:9/w.pth"),
    "missing weights file": (lambda w: _predict(w, "--weights", str(w[0] / "no.pth"), "--out", str(w[0] / "o2")),
                             "no.pth does not exist"),
    "weights of another model": (lambda w: _predict(w, "--weights", str(w[0] / "other.pth"), "--out",
                                                    str(w[0] / "o3")), "does not match the model (lrformer_t)"),
    "--out is a file": (lambda w: _predict(w, "--out", str(w[0] / "a_file")), "is a file: give a folder"),
    "--out inside the inputs": (lambda w: _predict(w, "--out", str(w[0] / "photos" / "seg")), "inside the input"),
    "no input images": (lambda w: _predict(w, "--out", str(w[0] / "o4"), inputs=("missing",)), "no input images"),
    "scale 0": (lambda w: _predict(w, "--out", str(w[0] / "o5"), "--scale", "0", "0"), "expected an integer >= 1"),
    "batch size 0 (predict)": (lambda w: _predict(w, "--out", str(w[0] / "o6"), "--batch-size", "0"), ">= 1, got 0"),
    "unknown dataset": (lambda w: ["eval", "--model", "lrformer_t", "--data", "pascal", "--data-root", "x"],
                        "unknown dataset 'pascal'"),
    "export over the weights": (lambda w: ["export", "--model", "lrformer_t", "--weights", str(w[0] / "other.pth"),
                                           "--size", "64", "64", "--out", str(w[0] / "other.pth")],
                                "would overwrite the input"),
    "eval --json is a folder": (lambda w: ["eval", "--model", "lrformer_t", "--data", "ade20k", "--data-root", "x",
                                           "--json", str(w[0] / "photos")], "--json"),
    "infinite lr": (lambda w: _train(w, "optim.lr=.inf"), "optim.lr must be a number > 0, got inf"),
    "bad model override": (lambda w: _train(w, "model.overrides={embed_dims: 5}"), "embed_dims must be 4 positive"),
    "test flag not a bool": (lambda w: _train(w, "test.flip=maybe"), "flip must be true or false"),
    "_base_ not a file name": (lambda w: _train(w, config="base5.yaml"), "_base_ in"),
    "binary config": (lambda w: _train(w, config="binary.yaml"), "is not a UTF-8 text file"),
    "--resume a folder": (lambda w: _train(w, flags=("--resume", str(w[0] / "photos"))), "is a folder"),
    "--resume with --force": (lambda w: _train(w, flags=("--resume", "--force")), "give one of them"),
    "--work-dir is a file": (lambda w: _train(w)[:2] + ["--work-dir", str(w[0] / "a_file")] + _train(w)[4:],
                             "is a file: give a folder"),
    "unknown device (predict)": (lambda w: _predict(w, "--out", str(w[0] / "o7"), "--device", "gpu"),
                                 "--device must be auto, cpu, cuda, cuda:N or mps"),
    "opset out of range": (lambda w: ["export", "--model", "lrformer_t", "--size", "64", "64", "--opset", "99",
                                      "--out", str(w[0] / "m.onnx")], "--opset 99"),
    "eval --json into the dataset": (lambda w: ["eval", "--model", "lrformer_t", "--data", str(w[1]), "--data-root",
                                                str(w[0] / "data"), "--json", str(w[0] / "data" / "m.json")],
                                     "is inside the input folder"),
    "neither --model nor --weights": (lambda w: ["predict", str(w[0] / "photos"), "--out", str(w[0] / "o8")],
                                      "give --weights (a checkpoint written by lrformer train"),
    "malformed hub name": (lambda w: _predict(w, "--weights", "hf-hub:owner/file.pth", "--out", str(w[0] / "o9")),
                           "a Hub name is hf-hub:OWNER/REPO/PATH[@REVISION]"),
    "released weights without --model": (lambda w: ["predict", "--weights", str(w[0] / "other.pth"),
                                                    str(w[0] / "photos"), "--out", str(w[0] / "o10")],
                                          "holds weights but no model description"),
    "strict not a bool": (lambda w: _train(w, "model.strict=maybe"), "model.strict must be true or false"),
    "export size below 32": (lambda w: ["export", "--model", "lrformer_t", "--dynamic", "--size", "20", "20",
                                        "--out", str(w[0] / "m2.onnx")], "LRFormer takes H, W >= 32"),
}  # fmt: skip
if not torch.cuda.is_available():
    MISTAKES["cuda without a GPU"] = (lambda w: _train(w, "train.device=cuda"), "use --set train.device=cpu")


MISTAKES.update({
    "unknown model": (lambda w: ["flops", "--model", "lrformer_ss"], "unknown model 'lrformer_ss'. Did you mean 'lrformer_s'?"),
    "missing model file": (lambda w: ["flops", "--model", str(w[0] / "nope.yaml")], "nope.yaml does not exist"),
    "model file not YAML": (lambda w: ["flops", "--model", str(w[0] / "bad.yaml")], "bad.yaml is not valid YAML at line"),
    "unknown model file key": (lambda w: ["flops", "--model", str(w[0] / "quoted.yaml")], "unknown key in"),
    "missing dataset file": (lambda w: ["eval", "--model", "lrformer_t", "--data", str(w[0] / "nope.yaml"),
                                        "--data-root", "x"], "dataset file"),
    "unknown dataset file key": (lambda w: ["eval", "--model", "lrformer_t", "--data", str(w[0] / "base5.yaml"),
                                            "--data-root", "x"], "unknown key in"),
    "dataset file not a mapping": (lambda w: ["eval", "--model", "lrformer_t", "--data", str(w[0] / "list.yaml"),
                                              "--data-root", "x"], "list.yaml must hold a mapping of img_dir"),
    "--tta-ratios without --tta": (lambda w: _predict(w, "--out", str(w[0] / "o11"), "--tta-ratios", "1"),
                                   "--tta-ratios needs --tta"),
    "unknown palette": (lambda w: _predict(w, "--out", str(w[0] / "o12"), "--palette", "pascal"),
                        "unknown palette 'pascal'"),
})  # fmt: skip


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_mistake_is_one_line_with_exit_code_2(name, world, capsys, monkeypatch):
    raised = []
    line = cli_main.error_line
    monkeypatch.setattr(cli_main, "error_line", lambda exc, debug=False: raised.append(exc) or line(exc, debug))
    argv, expected = MISTAKES[name]
    assert main(argv(world)) == 2
    assert expected in error_line(capsys)
    assert all(isinstance(exc, LRFormerError) for exc in raised), raised  # a user's mistake, not a bug
    # (argparse refuses some before any code runs: nothing is raised)


def test_anything_else_is_an_internal_error_with_the_debug_hint(monkeypatch, capsys):
    from lrformer.cli import flops

    bug = " (rerun with --debug for the traceback, and please report it)"
    for error, expected in [
        (KeyError("embed_dims"), "internal error: KeyError: 'embed_dims'" + bug),
        (ValueError("bad shape\nmore"), "internal error: ValueError: bad shape" + bug),
        (PermissionError(13, "Permission denied", "/x/y.pth"), "/x/y.pth: Permission denied"),  # the system's
        (OSError(28, "No space left on device"), "No space left on device"),
    ]:
        monkeypatch.setattr(flops, "run", lambda args, error=error: (_ for _ in ()).throw(error))
        assert main(["flops", "--model", "lrformer_t"]) == 2
        assert error_line(capsys) == f"lrformer flops: error: {expected}"
