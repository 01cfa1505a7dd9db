"""The overlay of a large photo costs no whole-image float arithmetic: ``lrformer predict`` with the
overlay peaks within 1.5× of the same run without it (a 12000×12000 photo used to take 7.7 GB
against 1.15 GB; this test uses 4000×4000 to stay fast, where whole-image blending took ~2.5×)."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads the peak resident set of a Linux process")

PEAK = (
    "import resource, sys\n"
    "from lrformer.cli.main import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rc)\n"
)


def _peak_kb(*argv: str) -> int:
    done = subprocess.run([sys.executable, "-c", PEAK, *argv], capture_output=True, text=True, check=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith("PEAK_KB"))
    _, peak, rc = line.split()
    assert rc == "0", done.stdout + done.stderr
    return int(peak)


def test_overlay_of_a_large_photo_stays_within_1_5x_of_no_overlay(tmp_path, tiny_model_file):
    yy, xx = np.mgrid[0:4000, 0:4000].astype(np.float32)
    photo = np.stack([(xx / 31) % 255, (yy / 37) % 255, ((xx + yy) / 53) % 255], axis=-1).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "big.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, 80])
    del photo, yy, xx
    common = ("predict", "--model", str(tiny_model_file), str(tmp_path / "big.jpg"), "--workers", "0")
    without = _peak_kb(*common, "--out", str(tmp_path / "plain"), "--no-overlay")
    with_overlay = _peak_kb(*common, "--out", str(tmp_path / "drawn"))
    assert cv2.imread(str(tmp_path / "drawn" / "big_overlay.jpg")).shape == (4000, 4000, 3)
    assert with_overlay <= 1.5 * without, (with_overlay, without)
