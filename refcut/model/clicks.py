"""Click encodings: binary disk maps in network-input pixels."""

from __future__ import annotations

import torch


def disk_maps(points: torch.Tensor, height: int, width: int, radius: float) -> torch.Tensor:
    """Rasterise clicks as binary disks.

    ``points`` is ``B x N x 3`` with rows ``(y, x, label)``: label 1 positive,
    0 negative, -1 padding. Returns ``B x 2 x H x W`` float maps ``[positive, negative]``:
    1 where a pixel lies within ``radius`` (Euclidean) of a click of that polarity.
    Each click only visits the pixels of its bounding square (the cost is per click, not per pixel).
    """
    b, n = points.shape[:2]
    out = points.new_zeros(b, 2, height, width)
    if n == 0:
        return out
    side = int(2 * radius) + 2  # covers [y - r, y + r] from floor(y - r)
    offsets = torch.arange(side, device=points.device, dtype=points.dtype)
    py, px, label = (points[..., i, None] for i in range(3))  # B x N x 1
    rows = torch.floor(py - radius) + offsets  # B x N x side
    cols = torch.floor(px - radius) + offsets
    inside = ((rows - py) ** 2)[..., :, None] + ((cols - px) ** 2)[..., None, :] <= radius**2
    inside &= ((rows >= 0) & (rows < height))[..., :, None] & ((cols >= 0) & (cols < width))[..., None, :]
    inside &= ((label == 1) | (label == 0))[..., None]
    channel = (label != 1).long()[..., None]  # 0 positive, 1 negative
    batch = torch.arange(b, device=points.device).view(b, 1, 1, 1)
    flat = ((batch * 2 + channel) * height + rows.long()[..., :, None]) * width + cols.long()[..., None, :]
    out.view(-1)[flat[inside]] = 1
    return out


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
