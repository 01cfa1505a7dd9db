"""Point sampling for the Mask2Former losses (mmcv ``point_sample``, detectron2/mmdet importance sampling)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import ConfigError


def point_sample(inputs: torch.Tensor, points: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """Bilinearly sample ``inputs`` at normalised coordinates (mmcv ``point_sample``).

    Points outside the map read zero (``grid_sample`` zero padding).

    Args:
        inputs: maps ``(N, C, H, W)``.
        points: ``(N, P, 2)`` ``(x, y)`` coordinates in ``[0, 1] × [0, 1]`` (``(0, 0)`` the top-left
            corner of the top-left pixel with ``align_corners=False``).

    Returns:
        ``(N, C, P)`` sampled values.
    """
    grid = points.unsqueeze(2) * 2.0 - 1.0
    return F.grid_sample(inputs, grid.to(inputs.dtype), align_corners=align_corners).squeeze(3)


def random_points(
    batch: int, num_points: int, device: torch.device | str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``(batch, num_points, 2)`` coordinates uniform in ``[0, 1)``.

    Drawn with ``generator`` on its own device (e.g. a CPU generator) and moved to ``device``.
    """
    draw_device = generator.device if generator is not None else device
    return torch.rand(batch, num_points, 2, generator=generator, device=draw_device).to(device)


@torch.no_grad()
def uncertain_point_coords_with_randomness(
    mask_logits: torch.Tensor,
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Importance-sampled points (``get_uncertain_point_coords_with_randomness`` of mmdet/detectron2).

    Draws ``int(num_points * oversample_ratio)`` random points per mask, keeps the
    ``int(importance_sample_ratio * num_points)`` most uncertain ones (uncertainty ``-|logit|`` of the
    *interpolated* logit) and fills up with fresh uniform points.

    Args:
        mask_logits: class-agnostic mask logits ``(N, 1, H, W)``.
        num_points: points per mask.

    Returns:
        ``(N, num_points, 2)`` coordinates in ``[0, 1]``.
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ConfigError(
            f"need oversample_ratio >= 1 and 0 <= importance_sample_ratio <= 1, got {oversample_ratio} and "
            f"{importance_sample_ratio}"
        )
    batch, device = mask_logits.shape[0], mask_logits.device
    num_sampled = int(num_points * oversample_ratio)
    coords = random_points(batch, num_sampled, device, generator)
    uncertainty = -point_sample(mask_logits, coords)[:, 0].abs()  # (N, num_sampled)
    num_uncertain = int(importance_sample_ratio * num_points)
    idx = uncertainty.topk(num_uncertain, dim=1).indices
    coords_uncertain = coords.gather(1, idx.unsqueeze(-1).expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        coords_random = random_points(batch, num_random, device, generator)
        coords_uncertain = torch.cat([coords_uncertain, coords_random], dim=1)
    return coords_uncertain
