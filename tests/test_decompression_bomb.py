"""Images above the pixel limit are refused from their header, before any pixel is decoded: a
20000×20000 PNG of a few hundred KB (400 megapixels, 1.2 GB decoded) costs nothing."""

from __future__ import annotations

import os
import resource
import struct
import sys
import zlib

import cv2
import numpy as np
import pytest

from lrformer.cli.main import main
from lrformer.errors import ImageTooLargeError
from lrformer.image.io import ImageReadError, decode_image, header_size, read_image

from .helpers import error_line, synthetic_photo


def png_bomb(path, width: int = 20000, height: int = 20000) -> None:
    """A valid grayscale PNG of ``width × height`` zeros, compressed row by row (small on disk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row, parts = zlib.compressobj(9), b"\x00" * (width + 1), []
    for _ in range(height):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    png_bomb(path)
    return path


def test_the_header_is_read_without_decoding(bomb):
    assert bomb.stat().st_size < 2_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert header_size(np.fromfile(bomb, dtype=np.uint8)) == (20000, 20000)
    with pytest.raises(ImageTooLargeError, match="20000x20000 is 400 megapixels, above the limit of 268") as error:
        read_image(bomb)
    assert isinstance(error.value, ImageReadError) and isinstance(error.value, ValueError)  # what callers catch
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert sys.platform != "linux" or grown_mb < 100  # decoding would take 400 MB (gray) to 1.2 GB (BGR)


def test_predict_refuses_the_bomb_and_segments_the_rest(bomb, tmp_path, tiny_model_file, capsys):
    cv2.imwrite(str(tmp_path / "photo.png"), synthetic_photo(48, 64))
    out = tmp_path / "out"
    rc = main(["predict", "--model", str(tiny_model_file), str(bomb), str(tmp_path / "photo.png"), "--out",
               str(out), "--workers", "1"])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 1 and "segmented 1 image(s)" in printed and "(a decompression bomb?)" in printed
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["manifest.jsonl", "photo.png", "photo_overlay.jpg"]


def test_the_limit_can_be_set(tmp_path, tiny_model_file, capsys, monkeypatch):
    cv2.imwrite(str(tmp_path / "photo.png"), synthetic_photo(48, 64))
    monkeypatch.setenv("LRFORMER_MAX_PIXELS", "3000")
    with pytest.raises(ImageReadError, match="64x48 is 0 megapixels, above the limit of 0"):
        decode_image(np.fromfile(tmp_path / "photo.png", dtype=np.uint8), "photo.png")
    monkeypatch.delenv("LRFORMER_MAX_PIXELS")
    args = ["predict", "--model", str(tiny_model_file), str(tmp_path / "photo.png"), "--workers", "0"]
    assert main([*args, "--out", str(tmp_path / "a"), "--max-pixels", "3000"]) == 1
    assert "above the limit" in capsys.readouterr().out
    monkeypatch.setenv("LRFORMER_MAX_PIXELS", "lots")
    assert main([*args, "--out", str(tmp_path / "b")]) == 2
    assert "LRFORMER_MAX_PIXELS='lots' is not a pixel count" in error_line(capsys)
    assert not (tmp_path / "b").exists()


def test_max_pixels_is_an_argument_that_reaches_the_loader_workers(tmp_path, tiny_model_file, capsys, monkeypatch):
    cv2.imwrite(str(tmp_path / "photo.png"), synthetic_photo(48, 64))  # 3072 pixels
    data = np.fromfile(tmp_path / "photo.png", dtype=np.uint8)
    monkeypatch.setenv("LRFORMER_MAX_PIXELS", "100000")
    with pytest.raises(ImageTooLargeError, match="above the limit"):  # the argument wins over the variable
        decode_image(data, "photo.png", max_pixels=3000)
    assert decode_image(data, "photo.png", max_pixels=3072).shape == (48, 64, 3)
    monkeypatch.delenv("LRFORMER_MAX_PIXELS")
    args = ["predict", "--model", str(tiny_model_file), str(tmp_path / "photo.png"), "--workers", "1"]
    assert main([*args, "--out", str(tmp_path / "a"), "--max-pixels", "3000"]) == 1  # decoded in a worker process
    assert "64x48 is 0 megapixels, above the limit of 0" in capsys.readouterr().out
    assert "LRFORMER_MAX_PIXELS" not in os.environ  # passed as an argument, not through the environment
    assert main([*args, "--out", str(tmp_path / "b"), "--max-pixels", "3072"]) == 0
    assert (tmp_path / "b" / "photo.png").is_file()
