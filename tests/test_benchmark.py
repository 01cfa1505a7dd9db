"""``lrformer benchmark`` runs and reports every size; ``--train`` a step without and with activation
checkpointing; ``--data`` the data pipeline per worker count (timings themselves are not asserted)."""

from __future__ import annotations

import csv

import pytest

from lrformer.cli.main import main
from lrformer.data import synthetic

from .helpers import error_line


def test_benchmark_cli_writes_a_row_per_size(tmp_path, tiny_model_file, capsys):
    out = tmp_path / "b.csv"
    rc = main(["benchmark", "--model", str(tiny_model_file), "--size", "64", "64", "--size", "64", "128",
               "--warmup", "1", "--iters", "2", "--csv", str(out)])  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["height"], r["width"]) for r in rows] == [("64", "64"), ("64", "128")]
    assert all(float(r["median_ms"]) > 0 and float(r["peak_mb"]) > 0 for r in rows)
    assert "64x128" in capsys.readouterr().out


def test_train_benchmark_writes_a_row_without_and_with_checkpointing(tmp_path, tiny_model_file, capsys):
    out = tmp_path / "train.csv"
    rc = main(["benchmark", "--train", "--model", str(tiny_model_file), "--size", "64", "64", "--batch", "2",
               "--device", "cpu", "--threads", "1", "--iters", "1", "--csv", str(out)])  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["grad_checkpointing"] for r in rows] == ["False", "True"]  # default: both
    for row in rows:
        assert (row["height"], row["width"], row["batch"], row["device"]) == ("64", "64", "2", "cpu")
        assert float(row["median_ms"]) > 0 and float(row["peak_mb"]) > float(row["added_mb"]) > 0, row
        assert float(row["baseline_mb"]) > 0 and row["note"] == ""
    printed = capsys.readouterr().out
    assert "checkpointing" in printed and "the added memory at" in printed


def test_data_benchmark_reports_a_row_per_worker_count(tmp_path, capsys):
    spec = synthetic.generate(tmp_path / "data", train=6, val=1, size=64)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"data:\n  dataset: {spec}\n  root: {tmp_path / 'data'}\n  crop_size: [64, 64]\n  batch_size: 2\n"
        "  resize: {type: RandomResize, scale: [128, 64], ratio_range: [0.5, 1.5]}\n"
    )
    out = tmp_path / "data.csv"
    rc = main(["benchmark", "--data", str(config), "--set", "data.batch_size=3", "--workers", "0", "1",
               "--batches", "2", "--csv", str(out)])  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["workers"], r["batch_size"], r["batches"]) for r in rows] == [("0", "3", "2"), ("1", "3", "2")]
    assert all(float(r["images_per_s"]) > 0 and float(r["images_per_s_per_worker"]) > 0 for r in rows)
    assert "images/s/worker" in capsys.readouterr().out


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--train", "--model", "lrformer_t", "--warmup", "0"], "--train needs --warmup 1 or more"),
        (["--train", "--model", "lrformer_tt", "--size", "64", "64", "--device", "cpu", "--grad-checkpoint", "off"],
         "unknown model 'lrformer_tt'. Did you mean 'lrformer_t'?"),
        (["--data", "missing.yaml", "--iters", "3"], "--iters is not used by --data"),
        (["--data", "missing.yaml"], "missing.yaml does not exist"),
        (["--model", "lrformer_t", "--grad-checkpoint", "on"], "add --train or leave it out"),
    ],
)  # fmt: skip
def test_benchmark_mistakes_are_one_line(arguments, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["benchmark", *arguments]) == 2
    assert message in error_line(capsys)
