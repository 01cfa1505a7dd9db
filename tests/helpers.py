"""Synthetic test images, an independent reference of the official test pipeline, and waiting
bounded by work, not by a guess of the machine's speed (subprocesses, conditions)."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Callable

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

SLOW_MACHINE_TIMEOUT = 1800
"""Seconds a test waits at most for a subprocess or a condition. Not a guess of how long the work
takes: a bound that a slow, busy but working machine does not reach (the README's fine-tuning
walkthrough took 348 s on two cores shared with other jobs), so reaching it means a hang."""


def _tail(output: str | bytes | None, size: int = 3000) -> str:
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    return (output or "")[-size:]


def run_bounded(command: list[str], timeout: float = SLOW_MACHINE_TIMEOUT, **kwargs) -> subprocess.CompletedProcess:
    """:func:`subprocess.run` bounded by ``timeout``; past it the test fails with the tail of the
    captured output (what the command was doing) instead of a bare ``TimeoutExpired``."""
    try:
        return subprocess.run(command, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as exc:
        stdout, stderr = exc.stdout, exc.stderr
    pytest.fail(f"still running after {timeout:g} s (a hang?): {command}\n"
                f"stdout: {_tail(stdout)}\nstderr: {_tail(stderr)}", pytrace=False)  # fmt: skip


def communicate_bounded(process: subprocess.Popen, timeout: float = SLOW_MACHINE_TIMEOUT) -> tuple:
    """:meth:`~subprocess.Popen.communicate` bounded by ``timeout``; past it the process is killed
    and the test fails with the tail of its output."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
    stdout, stderr = process.communicate()
    pytest.fail(f"still running after {timeout:g} s (a hang?): {process.args}\n"
                f"stdout: {_tail(stdout)}\nstderr: {_tail(stderr)}", pytrace=False)  # fmt: skip


def wait_until(condition: Callable[[], object], what: str, timeout: float = SLOW_MACHINE_TIMEOUT) -> None:
    """Poll ``condition()`` every 10 ms until it is true; fail naming ``what`` if it is still false
    after ``timeout`` s. Waiting on the condition, not sleeping a guessed time, keeps a test
    independent of the machine's speed."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"still waiting after {timeout:g} s: {what}", pytrace=False)
        time.sleep(0.01)


def synthetic_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like BGR uint8 image: smooth gradients, filled shapes and a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([
        128 + 100 * np.sin(xx / (7 + 13 * rng.random()) + rng.random() * 6),
        128 + 100 * np.cos(yy / (5 + 11 * rng.random())),
        255 * (xx + yy) / (height + width),
    ], axis=2)  # fmt: skip
    for _ in range(6):
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = int(rng.integers(4, max(5, min(height, width) // 2)))
        cv2.circle(image, center, radius, rng.integers(0, 256, 3).tolist(), -1)
    image += rng.normal(0, 6, image.shape)
    return image.clip(0, 255).astype(np.uint8)


def reference_scores(model, path: str, scale=(2048, 512), divisor: int = 32, pipeline: str = "align") -> torch.Tensor:
    """The official single-scale whole-image pipeline written out step by step: logits ``(C, H, W)``.

    ``align`` (LRFormer): keep-ratio resize, a second resize to multiples of ``divisor``, normalise.
    ``pad`` (LRFormer+): keep-ratio resize, normalise, zero-pad bottom/right to multiples of
    ``divisor``; the padding is cropped off the scores.
    """
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    h, w = bgr.shape[:2]
    f = min(max(scale) / max(h, w), min(scale) / min(h, w))
    new_w, new_h = int(w * f + 0.5), int(h * f + 0.5)
    resized = cv2.resize(bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    padded_h, padded_w = math.ceil(new_h / divisor) * divisor, math.ceil(new_w / divisor) * divisor
    if pipeline == "align":
        resized = cv2.resize(resized, (padded_w, padded_h), interpolation=cv2.INTER_LINEAR)
    rgb = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB).astype(np.float32)
    x = (rgb - np.array([123.675, 116.28, 103.53])) / np.array([58.395, 57.12, 57.375])
    x = torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)[None]
    if pipeline == "pad":
        x = F.pad(x, (0, padded_w - new_w, 0, padded_h - new_h))
    with torch.no_grad():
        logits = model(x)
    logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
    if pipeline == "pad":
        logits = logits[..., :new_h, :new_w]
    return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0]


def confident(scores: torch.Tensor, margin: float = 1e-3) -> torch.Tensor:
    """Pixels whose top-2 score margin exceeds ``margin``: ``(H, W)`` bool."""
    top2 = scores.topk(2, dim=0).values
    return (top2[0] - top2[1]) > margin


def error_line(capsys) -> str:
    """The one ``error:`` line a failed command printed on stderr (and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]
