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


def compact_points(points: torch.Tensor) -> torch.Tensor:
    """Drop padding: per sample the real clicks first (order kept), then only as many rows as the fullest sample.

    ``points`` is ``B x N x 3`` rows ``(y, x, label)`` with label -1 for padding. Encodings that
    reduce over the clicks (disks, max affinities) give the same result on the compacted tensor.
    """
    valid = points[..., 2] >= 0
    count = int(valid.sum(dim=1).max()) if points.shape[1] else 0
    if count == points.shape[1]:
        return points
    order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices[:, :count]
    return torch.gather(points, 1, order[..., None].expand(-1, -1, points.shape[2]))
