"""Reading images with OpenCV's semantics; writing label maps and pictures atomically."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import Union

import cv2
import numpy as np
from PIL import Image

from ..errors import ConfigError, ImageReadError, ImageTooLargeError, InputError, PictureTooLargeError
from ..utils import write_bytes_atomic

ImageInput = Union[str, Path, np.ndarray, Image.Image]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jp2")

JPEG_MAX_SIDE = 65500
"""Largest side of a JPEG picture (:class:`~lrformer.errors.PictureTooLargeError` beyond)."""


MAX_PIXELS = 2**28
"""Largest image (width × height, 268 megapixels) decoded unless a ``max_pixels`` argument or
``LRFORMER_MAX_PIXELS`` says otherwise; a larger file is refused from its header, before its pixels
are decoded, so a small compressed file cannot make the process allocate gigabytes (a
decompression bomb)."""

_PIL_HEADER_LOCK = threading.Lock()


def pixel_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels`` when given, else ``LRFORMER_MAX_PIXELS`` when set,
    else :data:`MAX_PIXELS`. A limit that is not a positive integer is a ``ConfigError``."""
    if max_pixels is not None:
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
            raise ConfigError(f"max_pixels must be a positive integer (a pixel count), got {max_pixels!r}")
        return max_pixels
    text = os.environ.get("LRFORMER_MAX_PIXELS", "").strip()
    if not text:
        return MAX_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"LRFORMER_MAX_PIXELS={text!r} is not a pixel count: give a positive integer, e.g. 300000000")
    return value


max_pixels = pixel_limit
"""The former name of :func:`pixel_limit`."""


def header_size(data: np.ndarray | bytes) -> tuple[int, int] | None:
    """``(width, height)`` from an encoded image's header without decoding its pixels, or ``None``
    when Pillow cannot read the header. Pillow's own bomb limit is lifted meanwhile (it is a
    module global: another thread opening an image at that moment would not be checked by it)."""
    with _PIL_HEADER_LOCK:  # Pillow's own bomb limit is a module global: lift it while reading the header
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(io.BytesIO(memoryview(data))) as image:
                return image.size
        except Exception:
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def decode_image(data: np.ndarray | bytes, source: str, max_pixels: int | None = None) -> np.ndarray:
    """Decode encoded image bytes like :func:`read_image`, refusing images above
    :func:`pixel_limit` (``max_pixels``) from their header; ``source`` names the input in error messages."""
    data = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if data.size == 0:
        raise ImageReadError(f"{source}: the file is empty")
    size, limit = header_size(data), pixel_limit(max_pixels)
    if size is None:  # OpenCV may decode it, but nothing says how large it is before it does
        raise ImageReadError(
            f"{source}: not an image whose size can be read from its header (corrupt, or a format such as HDR "
            "that is not checked for decompression bombs); convert it to PNG, JPEG, TIFF, WebP or BMP"
        )
    if size[0] * size[1] > limit:
        raise ImageTooLargeError(
            f"{source}: {size[0]}x{size[1]} is {size[0] * size[1] / 1e6:.0f} megapixels, above the limit of "
            f"{limit / 1e6:.0f} (a decompression bomb?); if the image is genuine, raise the limit with "
            f"--max-pixels or LRFORMER_MAX_PIXELS"
        )
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except (cv2.error, MemoryError) as exc:
        raise ImageReadError(f"{source}: OpenCV cannot decode it ({str(exc).strip().splitlines()[-1]})") from None
    if image is None:
        raise ImageReadError(f"{source}: not an image OpenCV can decode (corrupt or unsupported format)")
    return image


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Decode a file like mmcv/OpenCV ``IMREAD_COLOR``: ``(H, W, 3)`` uint8 **BGR**.

    Grayscale is expanded to three channels, alpha dropped, 16-bit scaled to 8-bit, EXIF
    orientation applied. Images above :func:`pixel_limit` (``max_pixels``) are refused before decoding.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    return decode_image(data, str(path), max_pixels)


INPUT_FORMATS = ("rgb", "bgr")
"""Channel orders an image array may come in: ``rgb`` (PIL, matplotlib, torchvision) or ``bgr``
(OpenCV: ``cv2.imread``, ``cv2.VideoCapture``)."""


def to_bgr(image: ImageInput, input_format: str = "rgb", max_pixels: int | None = None) -> np.ndarray:
    """Any supported input → ``(H, W, 3)`` uint8 BGR, following ``IMREAD_COLOR``'s conversions.

    Paths are decoded with OpenCV and PIL images converted from RGB. Arrays are taken in
    ``input_format`` channel order: ``rgb`` (default; ``(H, W, 4)`` is RGBA) or ``bgr`` (frames
    from OpenCV; ``(H, W, 4)`` is BGRA). An ``(H, W)`` array is grayscale; uint16 arrays are
    scaled to 8 bits like OpenCV. ``max_pixels``: the limit of decoded files (:func:`pixel_limit`).
    """
    if input_format not in INPUT_FORMATS:
        raise ConfigError(f"input_format must be 'rgb' or 'bgr', got {input_format!r}")
    if isinstance(image, (str, Path)):
        return read_image(image, max_pixels)
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB") if image.mode not in ("L", "I;16", "I") else image)
        input_format = "rgb"
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a path, a PIL image or a numpy array, got {type(image).__name__}")
    if image.dtype == np.uint16 or image.dtype == np.int32:
        image = (image.astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise InputError(f"image arrays must be uint8 or uint16, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        image = image[:, :, :3]
    elif image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    else:
        raise InputError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {image.shape}")
    return np.ascontiguousarray(image[:, :, ::-1] if input_format == "rgb" else image)


def save_label_png(path: str | Path, label: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write a label map atomically: 8-bit palette PNG (≤ 256 classes) or 16-bit grayscale PNG."""
    write_bytes_atomic(path, encode_label_png(label, palette))


def encode_label_png(label: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """A label map ``(H, W)`` as PNG bytes: 8-bit carrying the palette (≤ 256 classes) or 16-bit gray."""
    if label.max(initial=0) > 255 or (palette is not None and len(palette) > 256):
        image = Image.fromarray(label.astype(np.uint16))
    else:
        image = Image.fromarray(label.astype(np.uint8))
        if palette is not None:  # turns the "L" image into a "P" image carrying the palette
            flat = np.zeros((256, 3), dtype=np.uint8)
            flat[: len(palette)] = palette
            image.putpalette(flat.flatten().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_image(path: str | Path, image_bgr: np.ndarray, quality: int = 90) -> None:
    """Write a BGR image atomically (format from the suffix; JPEG quality ``quality``)."""
    path = Path(path)
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    if jpeg and max(image_bgr.shape[:2]) > JPEG_MAX_SIDE:
        raise PictureTooLargeError(
            f"{path}: a {image_bgr.shape[1]}x{image_bgr.shape[0]} picture does not fit in a JPEG (at most "
            f"{JPEG_MAX_SIDE} pixels a side); it is not written (the label map is)"
        )
    write_bytes_atomic(path, encode_image(image_bgr, path.suffix, quality))


def encode_image(image_bgr: np.ndarray, suffix: str = ".jpg", quality: int = 90) -> bytes:
    """A BGR image encoded in the format of ``suffix`` (``.jpg``: quality ``quality``)."""
    jpeg = suffix.lower() in (".jpg", ".jpeg")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if jpeg else []
    ok, encoded = cv2.imencode(suffix, image_bgr, params)
    if not ok:
        raise OSError(f"cannot encode a {image_bgr.shape[1]}x{image_bgr.shape[0]} image as {suffix}")
    return encoded.tobytes()
