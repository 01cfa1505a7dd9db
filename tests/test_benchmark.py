"""``lrformer benchmark`` runs and reports every size (timings themselves are not asserted)."""

from __future__ import annotations

import csv

from lrformer.cli.main import main


def test_benchmark_cli_writes_a_row_per_size(tmp_path, tiny_model_file, capsys):
    out = tmp_path / "b.csv"
    rc = main(["benchmark", "--model", str(tiny_model_file), "--size", "64", "64", "--size", "64", "128",
               "--warmup", "1", "--iters", "2", "--csv", str(out)])  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["height"], r["width"]) for r in rows] == [("64", "64"), ("64", "128")]
    assert all(float(r["median_ms"]) > 0 and float(r["peak_mb"]) > 0 for r in rows)
    assert "64x128" in capsys.readouterr().out
