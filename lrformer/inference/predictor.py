"""The predictor: images in, label maps out, with the official test pipeline.

Design notes: ``docs/design.md``, section 6 (the test pipelines).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..image.io import INPUT_FORMATS, ImageInput, to_bgr
from ..image.pipeline import MMSEG_TTA_RATIOS as MMSEG_TTA_RATIOS  # re-exported: defined with the settings
from ..image.pipeline import InferenceConfig
from ..image.transforms import (
    align_resize,
    keep_ratio_resize,
    normalize,
    pad_to_multiple,
    rescale_size,
    resize_bilinear,
)
from ..image.video import VideoReader
from ..models.layers import resize
from .network import Network, TorchNetwork, module_description, variant_test_settings
from .sliding import long_side_windows, slide

logger = logging.getLogger(__name__)


@dataclass
class View:
    """One network input derived from an image (a scale and flip of it)."""

    image: torch.Tensor  # (3, h, w) normalised, padded when pipeline == "pad"
    valid: tuple[int, int]  # (h, w) before padding
    flip: bool
    scores: torch.Tensor | None = field(default=None, repr=False)  # (C, h_valid, w_valid)


@dataclass
class PreparedImage:
    """An image decoded and turned into its network inputs (picklable: made in loader workers)."""

    views: list[View]
    size: tuple[int, int]  # original (H, W)
    bgr: np.ndarray | None = field(default=None, repr=False)  # the decoded image, when kept


def prepare(
    image: ImageInput,
    config: InferenceConfig,
    keep_image: bool = False,
    input_format: str = "rgb",
    max_pixels: int | None = None,
) -> PreparedImage:
    """Decode ``image`` (arrays in ``input_format`` order, see :func:`~lrformer.image.to_bgr`; files
    above ``max_pixels``, default :func:`~lrformer.image.io.pixel_limit`, are refused) and build its
    network inputs: one per scale ratio and flip.

    ``align`` (LRFormer, mmseg 0.x): ``AlignResize`` to ``scale × ratio``. ``pad`` (LRFormer+,
    mmseg 1.x): keep-ratio resize to ``scale`` (with TTA: by ``ratio`` of the original size, as
    mmseg 1.x's ``tta_pipeline``), normalise, then flip, then pad bottom/right to ``size_divisor``.
    """
    bgr = to_bgr(image, input_format, max_pixels)
    views = []
    for ratio in config.tta_ratios:
        if config.pipeline == "align":
            scale = (int(config.scale[0] * ratio), int(config.scale[1] * ratio))
            tensor = normalize(align_resize(bgr, scale, config.size_divisor))
        elif config.is_tta:
            height, width = bgr.shape[:2]
            tensor = normalize(
                resize_bilinear(bgr, max(1, int(height * ratio + 0.5)), max(1, int(width * ratio + 0.5)))
            )
        else:
            tensor = normalize(keep_ratio_resize(bgr, config.scale))
        valid = tuple(tensor.shape[-2:])
        for flip in (False, True) if config.flip else (False,):
            flipped = tensor.flip(-1) if flip else tensor
            if config.pipeline == "pad":
                flipped = pad_to_multiple(flipped, config.size_divisor)
            views.append(View(flipped, valid, flip))
    return PreparedImage(views, bgr.shape[:2], bgr if keep_image else None)


def view_shapes(size: tuple[int, int], config: InferenceConfig) -> list[tuple[int, int]]:
    """The network-input shapes ``(h, w)`` :func:`prepare` makes for an image of ``size`` ``(H, W)``
    (one per scale ratio and flip, padded where the pipeline pads), known without decoding it."""
    height, width = size
    shapes = []
    for ratio in config.tta_ratios:
        if config.pipeline == "align":
            h, w = rescale_size(height, width, (int(config.scale[0] * ratio), int(config.scale[1] * ratio)))
            h, w = (math.ceil(n / config.size_divisor) * config.size_divisor for n in (h, w))
        elif config.is_tta:
            h, w = max(1, int(height * ratio + 0.5)), max(1, int(width * ratio + 0.5))
        else:
            h, w = rescale_size(height, width, config.scale)
        if config.pipeline == "pad":
            h, w = (math.ceil(n / config.size_divisor) * config.size_divisor for n in (h, w))
        shapes += [(h, w)] * (2 if config.flip else 1)
    return shapes


def model_defaults(model: nn.Module | Network, base: InferenceConfig | None = None) -> InferenceConfig:
    """``base`` (default settings, or a dataset's) adapted to the model (a PyTorch model or a
    :class:`~lrformer.inference.network.Network`, e.g. an exported one): its test pipeline
    (``pad`` for LRFormer+) and, where ``base`` has the standard 512 bound, the model's own test
    scale (LRFormer-L: ``(2560, 640)``). Without ``base``, a model loaded from a self-describing
    checkpoint or export uses the test settings it was trained and validated with."""
    description = model.description if isinstance(model, Network) else module_description(model)
    if base is None and description.get("test"):
        return InferenceConfig.from_dict(description["test"])
    base = base or InferenceConfig()
    settings = variant_test_settings(description.get("model") or {})
    changes: dict = {"pipeline": settings.get("test_pipeline", base.pipeline)}
    if settings.get("test_scale") and base.scale == InferenceConfig.scale:
        changes["scale"] = tuple(settings["test_scale"])
    return replace(base, **changes)


class Predictor:
    """Semantic segmentation of images with an LRFormer model, as the official test pipeline.

    Example::

        predictor = Predictor(create_model("lrformer_t", pretrained="lrformer_t_ade20k.pth"))
        label = predictor("photo.jpg")              # (H, W) uint8 label map at the original size
        labels = predictor.predict(["a.jpg", "b.png"], batch_size=4)

        for label in predictor.predict_video("clip.mp4", batch_size=8):  # one (H, W) map per frame
            ...

    Inputs are paths (decoded by OpenCV, ``IMREAD_COLOR``), PIL images or ``(H, W[, 3|4])`` uint8
    arrays in ``input_format`` channel order: ``"rgb"`` (default: PIL, matplotlib) or ``"bgr"``
    (OpenCV: ``cv2.imread``, ``cv2.VideoCapture`` frames). ``config`` fields may also be given as
    keyword arguments. With ``fast`` (default) the predictor runs a reparameterized copy of
    ``model`` (:func:`lrformer.reparameterize_model`; same outputs, faster, less memory); ``model``
    itself is not modified. Pass a model reparameterized in place to avoid holding two copies.

    The network's output is ``model(x)``: class scores at the input size for every variant
    (:class:`~lrformer.models.LRFormerSegmentor`), converted to float32 before they are merged.
    ``model`` may also be any :class:`~lrformer.inference.network.Network`, e.g. an exported
    model run by ONNX Runtime or OpenVINO (:func:`lrformer.deploy.load_network`): the same test
    pipeline wraps it, only the network call changes.

    Args:
        model: a segmentation model (LRFormer or LRFormer+) with a decode head, or a ``Network``.
        config: test-time settings (default: the model's, see :func:`model_defaults`).
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda[:N]"``, ``"mps"``;
            default: where ``model`` is. A ``Network`` runs where it was loaded.
        fast: run the reparameterized inference structure (PyTorch models).
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"`` (autocast, PyTorch models); scores are
            converted to fp32 before they are resized and merged.
        input_format: channel order of array inputs, ``"rgb"`` or ``"bgr"``.

    Attributes:
        network: the :class:`~lrformer.inference.network.Network` run (a
            :class:`~lrformer.inference.network.TorchNetwork` for a PyTorch model).
        model: the PyTorch module run (the fast copy), or the ``Network`` for any other network.
    """

    def __init__(
        self,
        model: nn.Module | Network,
        config: InferenceConfig | None = None,
        device: str | torch.device | None = None,
        fast: bool = True,
        precision: str = "fp32",
        input_format: str = "rgb",
        **settings,
    ) -> None:
        if input_format not in INPUT_FORMATS:
            raise ConfigError(f"input_format must be 'rgb' or 'bgr', got {input_format!r}")
        self.input_format = input_format
        if isinstance(model, Network):
            _check_network_options(model, device, fast, precision)
            self.network = model
        else:
            self.network = TorchNetwork(model, device, fast, precision)
        self.config = config if config is not None else model_defaults(self.network)
        self.config = replace(self.config, **settings) if settings else self.config
        self.device, self.num_classes = self.network.device, self.network.num_classes

    @property
    def model(self) -> nn.Module | Network:
        return self.network.module if isinstance(self.network, TorchNetwork) else self.network

    # ---------------------------------------------------------------- network
    def _network(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, h, w)`` → ``model(x)``, the class scores at the input size ``(N, C, h, w)``, in fp32."""
        self.network.check_size(*x.shape[-2:])
        return self.network(x)

    @torch.no_grad()
    def scores(self, x: torch.Tensor, batch_size: int = 1) -> torch.Tensor:
        """Scores of a batch of network inputs ``(B, 3, h, w)`` at the input size, in the configured
        mode; whole mode falls back to windows along the long side for extreme aspect ratios."""
        x = x.to(self.device)
        height, width = x.shape[-2:]
        if self.config.mode == "slide":
            return slide(x, self._network, self.config.crop, self.config.stride, batch_size)
        attention = self.network.attention_elements
        fallback = long_side_windows(height, width, attention, self.config.max_attention_elements)
        if fallback is not None:
            crop, stride = fallback
            logger.warning(
                "input %dx%d: aspect ratio %.1f needs %.1f GB of attention in one pass; using %dx%d windows "
                "(stride %d) along the long side instead",
                height, width, max(height, width) / min(height, width),
                attention(height, width) * 4 / 1e9, *crop, max(stride),
            )  # fmt: skip
            return slide(x, self._network, crop, stride, batch_size)
        return self._network(x)

    def _run_views(self, views: list[View], batch_size: int) -> None:
        """Fill ``view.scores`` (cropped to the valid region), batching views of equal shape."""
        by_shape: dict[tuple, list[View]] = {}
        for view in views:
            by_shape.setdefault(tuple(view.image.shape), []).append(view)
        for group in by_shape.values():
            for i in range(0, len(group), batch_size):
                chunk = group[i : i + batch_size]
                out = self.scores(torch.stack([v.image for v in chunk]), batch_size).float().cpu()
                for view, scores in zip(chunk, out):
                    view.scores = scores[:, : view.valid[0], : view.valid[1]]

    # ---------------------------------------------------------------- merging
    def _merged_rows(self, views: list[View], size: tuple[int, int], rows: slice) -> torch.Tensor:
        """Scores of output rows ``rows`` at the original ``size``: a single view's resized scores,
        or the mean of the views' softmax probabilities (TTA)."""
        merged = None
        for view in views:
            scores = resize_rows(view.scores, size, rows)
            if view.flip:
                scores = scores.flip(-1)
            if len(views) > 1:
                scores = scores.softmax(dim=0)
            merged = scores if merged is None else merged + scores
        return merged / len(views) if len(views) > 1 else merged

    def _labels(self, views: list[View], size: tuple[int, int]) -> np.ndarray:
        dtype = np.uint8 if self.num_classes <= 256 else np.uint16
        label = np.empty(size, dtype=dtype)
        step = max(1, (64 << 20) // (4 * self.num_classes * size[1]))  # ~64 MB of scores at a time
        for start in range(0, size[0], step):
            rows = slice(start, min(start + step, size[0]))
            label[rows] = self._merged_rows(views, size, rows).argmax(dim=0).numpy().astype(dtype)
        return label

    # ---------------------------------------------------------------- public API
    def predict_prepared(self, prepared: Sequence[PreparedImage], batch_size: int = 1) -> list[np.ndarray]:
        """Label maps of already prepared images (see :func:`prepare`), views batched together."""
        self._run_views([v for p in prepared for v in p.views], batch_size)
        labels = [self._labels(p.views, p.size) for p in prepared]
        for p in prepared:  # free the scores
            for view in p.views:
                view.scores = None
        return labels

    def predict(self, images: Iterable[ImageInput], batch_size: int = 1) -> list[np.ndarray]:
        """Label maps ``(H, W)`` (uint8, or uint16 above 256 classes) at each image's original size."""
        return list(self.predict_frames(images, batch_size))

    def predict_frames(
        self, frames: Iterable[ImageInput], batch_size: int = 1, input_format: str | None = None
    ) -> Iterator[np.ndarray]:
        """Label maps of a stream of images (e.g. frames of a camera), yielded one by one as
        ``batch_size`` of them have gone through the network together; only a batch is held in
        memory. ``input_format`` overrides the predictor's for arrays."""
        chunk: list[PreparedImage] = []
        for frame in frames:
            chunk.append(prepare(frame, self.config, input_format=input_format or self.input_format))
            if len(chunk) == batch_size:
                yield from self.predict_prepared(chunk, batch_size)
                chunk = []
        if chunk:
            yield from self.predict_prepared(chunk, batch_size)

    def predict_video(self, path: str | Path, batch_size: int = 1) -> Iterator[np.ndarray | None]:
        """Label maps ``(H, W)`` of a video's frames, in order, decoded one at a time by OpenCV
        (BGR, whatever ``input_format`` says); the video is never held in memory. The ``n``-th
        item is frame ``n``: ``None`` for a frame the decoder could not read (logged)."""
        with VideoReader(path) as video:
            lost: set[int] = set()
            frames = (frame for index, frame in video if frame is not None or lost.add(index))
            labels = self.predict_frames(frames, batch_size, input_format="bgr")
            index = 0
            for label in labels:
                while index in lost:
                    yield None
                    index += 1
                yield label
                index += 1
            for problem in video.errors + video.notes:
                logger.warning(problem)

    def predict_scores(self, image: ImageInput) -> torch.Tensor:
        """Scores ``(C, H, W)`` at the original size: ``model(x)``'s (LRHead logits, LRFormer+ summed
        class probabilities) resized, or with TTA the averaged softmax probabilities."""
        prepared = prepare(image, self.config, input_format=self.input_format)
        self._run_views(prepared.views, 1)
        return self._merged_rows(prepared.views, prepared.size, slice(0, prepared.size[0]))

    def __call__(self, image: ImageInput | Sequence[ImageInput]) -> np.ndarray | list[np.ndarray]:
        if isinstance(image, (list, tuple)):
            return self.predict(image)
        return self.predict([image])[0]


def _check_network_options(network: Network, device: str | torch.device | None, fast: bool, precision: str) -> None:
    """Refuse PyTorch-only options for a :class:`Network` (it runs where and as it was loaded)."""
    if precision != "fp32" or not fast:
        option = f"precision={precision!r}" if precision != "fp32" else "fast=False"
        raise ConfigError(f"{option} applies to a PyTorch model only: leave it out for {type(network).__name__}")
    if device is not None and str(device) not in ("auto", str(network.device)):
        raise ConfigError(
            f"the network runs on {network.device}, not {device}: choose the device when loading it, or leave "
            "device out"
        )


def resize_rows(scores: torch.Tensor, size: tuple[int, int], rows: slice) -> torch.Tensor:
    """Rows ``rows`` of ``resize(scores, size)`` (bilinear, ``align_corners=False``) without
    building the whole resized map. ``scores``: ``(C, h, w)`` → ``(C, len(rows), W)``."""
    height, width = size
    if rows.start == 0 and rows.stop == height:
        return resize(scores[None], size)[0]
    in_h = scores.shape[1]
    scale = in_h / height
    src = ((torch.arange(rows.start, rows.stop, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    top = src.floor().long().clamp(max=in_h - 1)
    bottom = (top + 1).clamp(max=in_h - 1)
    weight = (src - top).view(1, -1, 1)
    strip = scores[:, top] * (1 - weight) + scores[:, bottom] * weight
    return resize(strip[None], (strip.shape[1], width))[0]
