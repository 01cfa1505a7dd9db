"""The page of ``lrformer serve`` in a real browser (headless Chromium, the Debian ``chromium``
package, driven by Playwright): upload a photo, wait for the overlay and the legend, and check
the legend's text and the overlay's pixels against the API's own answer.

Skipped where Chromium is absent. ``LRFORMER_SCREENSHOT=path.png`` also saves a screenshot of the
page (the README's is made this way).
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from .helpers import SLOW_MACHINE_TIMEOUT, synthetic_photo

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# a user's machine without Chromium skips; CI (.ci/run installs Debian's chromium) must run it
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not IN_CI,
    reason="no Chromium here (Debian: apt install chromium); the page is tested where it is",
)


def test_ci_has_chromium():
    """In CI the browser test must run, not skip: .ci/run installs Chromium."""
    assert CHROMIUM is not None, "CI=true but no chromium on PATH: .ci/run should have installed Debian's chromium"

NAMES = ["sky", "tree", "water", "sand", "road"]
PALETTE = [[250, 10, 10], [10, 250, 10], [10, 10, 250], [240, 200, 20], [90, 20, 160]]


def test_upload_shows_the_overlay_and_the_legend(tmp_path, tiny_model_file):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (in lrformer[dev])")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from serve_load import free_port, post, start_server

    dataset = tmp_path / "beach.yaml"
    dataset.write_text(yaml.safe_dump({"img_dir": "i", "ann_dir": "a", "classes": NAMES, "palette": PALETTE}))
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), synthetic_photo(240, 320, seed=11))
    port = free_port()
    argv = ["--model", str(tiny_model_file), "--palette", str(dataset), "--device", "cpu"]
    server = start_server([*argv, "--timeout", str(SLOW_MACHINE_TIMEOUT)], port, timeout=SLOW_MACHINE_TIMEOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        status, body, _ = post(f"{url}/predict", photo.read_bytes())
        assert status == 200
        label = np.asarray(Image.open(io.BytesIO(body)))
        with urllib.request.urlopen(f"{url}/predict?format=json", data=photo.read_bytes()) as response:
            import json

            classes = json.loads(response.read())["classes"]
        with sync_api.sync_playwright() as playwright:
            bound_ms = SLOW_MACHINE_TIMEOUT * 1000  # waits end on their condition; this bound only catches a hang
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], timeout=bound_ms)
            page = browser.new_page(viewport={"width": 900, "height": 700})
            page.set_default_timeout(bound_ms)
            page.goto(url)
            page.set_input_files("#file", str(photo))
            page.wait_for_selector("body[data-done='1']")
            rows = page.eval_on_selector_all(
                "#legend tbody tr", "rows => rows.map(r => [...r.cells].slice(1).map(c => c.textContent))"
            )
            assert rows == [[c["name"], f"{100 * c['fraction']:.1f}%"] for c in classes]
            pixels = page.evaluate(
                "() => Array.from(document.getElementById('canvas').getContext('2d').getImageData(0, 0, 320, 240).data)"
            )
            drawn = np.asarray(pixels, dtype=np.float32).reshape(240, 320, 4)[..., :3]
            image = cv2.imread(str(photo))[:, :, ::-1].astype(np.float32)
            blended = image * 0.5 + np.asarray(PALETTE, dtype=np.float32)[label] * 0.5
            assert np.abs(drawn - blended).max() <= 2  # the overlay at the default opacity 0.5
            page.fill("#opacity", "0")
            page.dispatch_event("#opacity", "input")
            plain = page.evaluate(
                "() => Array.from(document.getElementById('canvas').getContext('2d').getImageData(0, 0, 320, 240).data)"
            )
            assert np.abs(np.asarray(plain, np.float32).reshape(240, 320, 4)[..., :3] - image).max() <= 1
            assert page.get_attribute("#download", "download") == "photo_label.png"
            if os.environ.get("LRFORMER_SCREENSHOT"):
                page.fill("#opacity", "0.6")
                page.dispatch_event("#opacity", "input")
                page.screenshot(path=os.environ["LRFORMER_SCREENSHOT"], full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(SLOW_MACHINE_TIMEOUT)
