"""The description an exported model carries, so that it can be used on its own.

It is the model description of a self-describing checkpoint
(:func:`lrformer.models.factory.model_description`: the ``create_model`` arguments, class names,
palette and test settings) plus an ``export`` entry saying what the file computes::

    {
      "format": 1,
      "model": {"name": "lrformer_t", "num_classes": 150, ...},
      "classes": [...], "palette": [[r, g, b], ...], "test": {...InferenceConfig fields...},
      "export": {
        "runtime": "onnx" | "openvino",
        "input": "image", "output": "scores",
        "input_size": [H, W] | null,        # null: dynamic height and width
        "min_size": 33,                     # smallest H, W of a dynamic export
        "batch": 1,
        "precision": "fp32" | "int8",
        "quantization": null | {"tool": "nncf", ...: how it was quantised}
      }
    }

It is stored as one JSON string under the key :data:`METADATA_KEY`: in an ONNX file's
``metadata_props``, and in an OpenVINO IR's ``rt_info`` (``<rt_info><lrformer value="..."/>``).
The input ``image`` is ``(B, 3, H, W)`` float32, normalised as the test pipeline does; the output
``scores`` is ``(B, num_classes, H, W)`` float32, the class scores at the input size (``model(x)``).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from ..errors import CheckpointError

METADATA_KEY = "lrformer"
"""Key of the JSON description in ``metadata_props`` (ONNX) and ``rt_info`` (OpenVINO)."""

EXPORT_FIELDS = ("runtime", "input", "output", "input_size", "min_size", "batch", "precision", "quantization")
"""Keys of the ``export`` entry."""


def export_entry(
    runtime: str,
    input_size: tuple[int, int] | None,
    min_size: int,
    batch: int = 1,
    precision: str = "fp32",
    quantization: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``export`` entry: what the exported graph takes and computes (``input_size`` None: dynamic)."""
    return {
        "runtime": runtime,
        "input": "image",
        "output": "scores",
        "input_size": list(input_size) if input_size is not None else None,
        "min_size": int(min_size),
        "batch": int(batch),
        "precision": precision,
        "quantization": dict(quantization) if quantization is not None else None,
    }


def encode(description: Mapping[str, Any], export: Mapping[str, Any]) -> str:
    """The JSON string stored in the exported file: ``description`` with ``export`` added."""
    return json.dumps({**dict(description), "export": dict(export)}, separators=(",", ":"))


def decode(text: str | None, source: str) -> dict[str, Any] | None:
    """The description stored in an exported file (``None`` when it has none: a file exported
    elsewhere); ``source`` names the file in the error for a damaged entry."""
    if text is None or text == "":
        return None
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        raise CheckpointError(
            f"{source}: its '{METADATA_KEY}' metadata is not valid JSON; export the model again with lrformer export"
        ) from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("model"), dict)
        or not isinstance(data.get("export"), dict)
    ):
        raise CheckpointError(
            f"{source}: its '{METADATA_KEY}' metadata lacks the model or export entry; export it again with "
            "lrformer export"
        )
    return data
