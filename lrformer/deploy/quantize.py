"""int8 post-training static quantisation of the OpenVINO IR with NNCF.

NNCF inserts int8 quantise/dequantise pairs on the inputs of the convolutions and matrix products
(weights per channel, activations per tensor) with ranges from the calibration images; OpenVINO
then runs those layers in int8. What stays in float is chosen by measurement on the demo's trained
LRFormer-T (``benchmarks/int8_accuracy.py``; the figures are in ``benchmarks/README.md``):
:data:`FLOAT_MODULES` and :data:`FLOAT_TYPES`, on top of NNCF's transformer rules
(``ModelType.TRANSFORMER``: LayerNorm, softmax and the element-wise operations in float, SmoothQuant
on the matrix products).

ONNX Runtime's ``quantize_static`` (QDQ) was measured too and not kept: its int8 LRFormer-T ran no
faster than its float32 one (0.64 s vs 0.67 s at 512×512 on 2 threads), while OpenVINO's int8 ran
faster than OpenVINO's float32, itself the fastest float runtime; ``--int8`` writes an OpenVINO IR.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from ..utils import require_extra

FLOAT_MODULES: tuple[str, ...] = (
    r"backbone\.patch_embed1\.conv1\.0",  # the first convolution, on the normalised image
    r"decode_head\.conv_seg",  # the classifier, whose outputs are the scores
)
"""Module names (regular expressions, matched at the start of the node names the ONNX export
gives: ``module.path/node``) whose layers stay in float."""

FLOAT_TYPES: tuple[str, ...] = ("Interpolate",)
"""OpenVINO operation types that stay in float (beyond NNCF's transformer rules): the bilinear
resizes (LRSA's upsampling back to full resolution, the head's fusion), which cost 0.06 mIoU in int8
on the demo's model and save no time."""


@dataclass(frozen=True)
class Int8Settings:
    """How NNCF quantises (stored in the export's ``quantization`` entry).

    Attributes:
        preset: ``"performance"`` (symmetric activations) or ``"mixed"`` (asymmetric activations).
        model_type: ``"transformer"`` (NNCF's transformer rules) or ``None``.
        float_modules: module-name patterns kept in float (:data:`FLOAT_MODULES`).
        float_types: operation types kept in float (:data:`FLOAT_TYPES`).
        fast_bias_correction: NNCF's fast bias correction (else its slower full one).
    """

    preset: str = "performance"
    model_type: str | None = "transformer"
    float_modules: tuple[str, ...] = FLOAT_MODULES
    float_types: tuple[str, ...] = FLOAT_TYPES
    fast_bias_correction: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    """Further ``AdvancedQuantizationParameters`` fields (e.g. ``smooth_quant_alpha``)."""

    def entry(self, images: int) -> dict[str, Any]:
        """The export's ``quantization`` entry: the tool, its version, these settings, the image count."""
        nncf = nncf_module()
        settings = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}
        return {"tool": "nncf", "version": nncf.__version__, **settings, "calibration_images": int(images)}


def nncf_module():
    """The ``nncf`` package, or a one-line ``pip install "lrformer[deploy]"`` error."""
    return require_extra("nncf", "deploy", "int8 quantisation")


def quantize_openvino(
    ov_model: Any,
    items: Iterable[Any],
    transform: Callable[[Any], np.ndarray],
    count: int,
    settings: Int8Settings = Int8Settings(),
) -> Any:
    """``ov_model`` (float) quantised to int8 with NNCF: an ``openvino.Model``.

    Args:
        ov_model: the float ``openvino.Model`` (:func:`lrformer.deploy.openvino.convert`).
        items: the calibration items (e.g. image paths), iterated once or more.
        transform: item → network input ``(B, 3, H, W)`` float32
            (:func:`lrformer.deploy.calibration.network_input`).
        count: how many items ``items`` holds (all are used).
        settings: :class:`Int8Settings`.
    """
    nncf = nncf_module()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    # activations per tensor: with per-channel activation ranges NNCF can put a range on a spatial axis
    # (the height at calibration) where a layout change precedes a depthwise conv; the IR then fails at
    # other sizes
    per_tensor = QuantizationParameters(per_channel=False)
    options: dict[str, Any] = {
        "subset_size": int(count),
        "preset": nncf.QuantizationPreset(settings.preset),
        "fast_bias_correction": settings.fast_bias_correction,
    }
    if settings.model_type:
        options["model_type"] = nncf.ModelType(settings.model_type)
    if settings.float_modules or settings.float_types:
        patterns = [f"^(?:{module})/.*" for module in settings.float_modules]
        options["ignored_scope"] = nncf.IgnoredScope(
            patterns=patterns, types=list(settings.float_types), validate=False
        )
    options["advanced_parameters"] = AdvancedQuantizationParameters(
        activations_quantization_params=per_tensor, **settings.extra
    )
    with _quiet_nncf():
        return nncf.quantize(ov_model, nncf.Dataset(items, transform), **options)


class _quiet_nncf:
    """NNCF's progress bars and info lines off (its warnings stay) while quantising."""

    def __enter__(self) -> None:
        import logging

        self.logger = logging.getLogger("nncf")
        self.level = self.logger.level
        self.logger.setLevel(logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        self.logger.setLevel(self.level)
