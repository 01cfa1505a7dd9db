"""Images decoded and prepared in ``DataLoader`` workers, for ``lrformer predict`` and the evaluator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..errors import ImageReadError
from ..image.pipeline import InferenceConfig
from .predictor import PreparedImage, prepare


@dataclass
class PreparedItem:
    """Item ``index`` of :class:`PreparedImages`: the image at ``path`` prepared, or why it could not be."""

    index: int
    path: str | Path  # as given to PreparedImages
    prepared: PreparedImage | None  # None when ``error`` says why
    error: str | None = None  # one line naming the file, with ``return_errors`` only


class PreparedImages(torch.utils.data.Dataset):
    """Decodes each image file and builds its network inputs (:func:`~lrformer.inference.prepare`)
    in loader workers, so that the main process only runs the network.

    Use with ``DataLoader(..., collate_fn=list)``: a batch is a list of :class:`PreparedItem`.

    Args:
        paths: the image files.
        config: the test-time settings the inputs are built for.
        keep_image: keep the decoded ``(H, W, 3)`` BGR image in ``PreparedImage.bgr`` (to draw on).
        max_pixels: larger images are refused from their header (see :func:`~lrformer.image.io.pixel_limit`).
        return_errors: a file that cannot be read or prepared gives an item with ``error`` set instead
            of raising, so one bad file does not stop a run over many.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        config: InferenceConfig,
        keep_image: bool = False,
        max_pixels: int | None = None,
        return_errors: bool = False,
    ) -> None:
        self.paths, self.config, self.keep_image = list(paths), config, keep_image
        self.max_pixels, self.return_errors = max_pixels, return_errors

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> PreparedItem:
        path = self.paths[index]
        try:
            prepared = prepare(path, self.config, keep_image=self.keep_image, max_pixels=self.max_pixels)
        except Exception as exc:  # with return_errors, a failure of one file must not stop the run
            if not self.return_errors:
                raise
            error = str(exc) if isinstance(exc, ImageReadError) else f"{path}: {type(exc).__name__}: {exc}"
            return PreparedItem(index, path, None, error)
        return PreparedItem(index, path, prepared)
