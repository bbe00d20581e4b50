"""Click encodings: binary disk maps in network-input pixels."""

from __future__ import annotations

import torch


def disk_maps(points: torch.Tensor, height: int, width: int, radius: float) -> torch.Tensor:
    """Rasterise clicks as binary disks.

    ``points`` is ``B x N x 3`` with rows ``(y, x, label)``: label 1 positive,
    0 negative, -1 padding. Returns ``B x 2 x H x W`` float maps ``[positive, negative]``:
    1 where a pixel lies within ``radius`` (Euclidean) of a click of that polarity.
    """
    b = points.shape[0]
    if points.shape[1] == 0:
        return points.new_zeros(b, 2, height, width)
    ys = torch.arange(height, device=points.device, dtype=points.dtype).view(1, 1, height, 1)
    xs = torch.arange(width, device=points.device, dtype=points.dtype).view(1, 1, 1, width)
    py, px, label = (points[..., i].view(b, -1, 1, 1) for i in range(3))
    inside = (ys - py) ** 2 + (xs - px) ** 2 <= radius**2
    positive = (inside & (label == 1)).any(dim=1)
    negative = (inside & (label == 0)).any(dim=1)
    return torch.stack([positive, negative], dim=1).to(points.dtype)
