"""Simple feature pyramid (ViTDet style): four scales from the single 1/patch map."""

from __future__ import annotations

import torch
from torch import nn


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(1, channels)


class SimpleFeaturePyramid(nn.Module):
    """Maps ``B x D x h x w`` to maps at 4x, 2x, 1x and 0.5x the token grid (SimpleClick's ``SimpleFPN`` layout)."""

    def __init__(self, in_dim: int, out_dims: tuple[int, int, int, int]) -> None:
        super().__init__()
        c4 = max(2 * out_dims[0], in_dim // 2)
        c8 = max(out_dims[1], in_dim // 2)
        c32 = max(out_dims[3], in_dim * 2)
        self.down_4 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c4, 2, stride=2), _gn(c4), nn.GELU(),
            nn.ConvTranspose2d(c4, c4 // 2, 2, stride=2), _gn(c4 // 2),
            nn.Conv2d(c4 // 2, out_dims[0], 1), _gn(out_dims[0]), nn.GELU(),
        )  # fmt: skip
        self.down_8 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c8, 2, stride=2), _gn(c8),
            nn.Conv2d(c8, out_dims[1], 1), _gn(out_dims[1]), nn.GELU(),
        )  # fmt: skip
        self.down_16 = nn.Sequential(nn.Conv2d(in_dim, out_dims[2], 1), _gn(out_dims[2]), nn.GELU())
        self.down_32 = nn.Sequential(
            nn.Conv2d(in_dim, c32, 2, stride=2), _gn(c32),
            nn.Conv2d(c32, out_dims[3], 1), _gn(out_dims[3]), nn.GELU(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.down_4(x), self.down_8(x), self.down_16(x), self.down_32(x)]
