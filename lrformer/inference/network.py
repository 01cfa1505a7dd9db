"""The network seam of the predictor: whatever turns network inputs into class scores.

The predictor's test pipeline (views, whole / sliding windows, TTA, the long-side fallback,
merging) works only through :class:`Network`: ``network(x)`` maps ``(N, 3, h, w)`` float32 inputs
to ``(N, C, h, w)`` float32 class scores at the input size, what ``model(x)`` gives.
:class:`TorchNetwork` wraps a PyTorch model; :mod:`lrformer.deploy.runtimes` runs exported files
(ONNX Runtime, OpenVINO) behind the same interface.

Design notes: ``docs/design.md``, section 6 (the test pipelines).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..devices import autocast, autocast_dtype, check_device
from ..errors import ConfigError
from ..models.factory import model_description
from ..models.registry import VARIANTS
from ..models.reparameterize import reparameterize_model


class Network:
    """Class scores of network inputs, whatever runs them.

    Attributes:
        num_classes: the number of classes ``C``.
        device: where the inputs given to the network live (the runtimes take CPU tensors).
        description: the model description (:func:`lrformer.models.factory.model_description`:
            ``model`` (``create_model`` arguments), ``classes``, ``palette``, ``test``) and, for an
            exported model, the ``export`` entry (:mod:`lrformer.deploy.metadata`).
    """

    num_classes: int
    device: torch.device
    description: dict[str, Any]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, h, w)`` float32 normalised images → float32 class scores ``(N, C, h, w)``."""
        raise NotImplementedError

    def attention_elements(self, height: int, width: int) -> int:
        """Entries of the largest attention matrix of an ``h×w`` input (0: unknown, so the
        predictor's long-side fallback never triggers)."""
        return 0

    def check_size(self, height: int, width: int) -> None:
        """Raise :class:`~lrformer.errors.ConfigError` when the network cannot take an ``h×w``
        input (a fixed-size export fed another size); any size is fine by default."""


class TorchNetwork(Network):
    """A PyTorch segmentation model as a :class:`Network`.

    Args:
        model: an LRFormer or LRFormer+ segmentor (anything whose ``model(x)`` gives class scores
            at the input size and which has ``num_classes`` and ``attention_elements``).
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"``, ``"mps"``; default: where ``model`` is.
        fast: run a reparameterized copy (:func:`lrformer.reparameterize_model`); ``model`` itself
            is not modified.
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"`` (autocast); scores are returned in fp32.
    """

    def __init__(
        self, model: nn.Module, device: str | torch.device | None = None, fast: bool = True, precision: str = "fp32"
    ) -> None:
        if device is None:
            self.device = next(model.parameters()).device
        else:
            self.device = torch.device(check_device(device, "device", 'device="cpu"'))
        self.autocast_dtype = autocast_dtype(precision, self.device, "precision")
        self.num_classes = getattr(model, "num_classes", None)
        if not self.num_classes:
            raise ConfigError(
                "the model has no decode head, so it gives no class scores: create a segmentation model "
                "(e.g. lrformer_t or lrformer_xl_plus)"
            )
        self.description = module_description(model)
        self.module = (reparameterize_model(model) if fast else model.eval()).to(self.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        dtype = next(self.module.parameters()).dtype
        with autocast(self.device, self.autocast_dtype):
            scores = self.module(x.to(dtype))
        return scores.float()

    def attention_elements(self, height: int, width: int) -> int:
        return self.module.attention_elements(height, width)


def module_description(model: nn.Module) -> dict[str, Any]:
    """The description of a PyTorch model (:func:`~lrformer.models.factory.model_description`
    of its ``config``, with the classes, palette and test settings a checkpoint gave it); a model
    built without a variant name is described by its class count alone."""
    config = getattr(model, "config", None) or {}
    classes, palette, test = config.get("classes"), config.get("palette"), config.get("test")
    if config.get("name"):
        return model_description(model, classes, palette, test)
    arguments = {"num_classes": getattr(model, "num_classes", None)}
    return {"model": arguments, "classes": classes, "palette": palette, "test": test}


def variant_test_settings(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The test pipeline (``test_pipeline``) and bound (``test_scale``) of the variant a
    description names in its ``model`` arguments, where the variant has its own ({} otherwise)."""
    variant = VARIANTS.get(str(arguments.get("name")), {})
    return {key: variant[key] for key in ("test_pipeline", "test_scale") if key in variant}
