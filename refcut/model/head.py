"""All-MLP segmentation head (SegFormer style) giving one logit map at the finest pyramid level."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from refcut.model.layers import ConvReLU


class SegmentationHead(nn.Module):
    """Project every level to ``channels`` (1x1 + ReLU), resize to the finest, fuse, predict 1 logit."""

    def __init__(self, in_channels: tuple[int, ...], channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.convs = nn.ModuleList(ConvReLU(c, channels) for c in in_channels)
        self.fusion_conv = ConvReLU(channels * len(in_channels), channels)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        size = levels[0].shape[-2:]
        projected = [
            F.interpolate(conv(level), size=size, mode="bilinear", align_corners=False) if i else conv(level)
            for i, (conv, level) in enumerate(zip(self.convs, levels))
        ]
        fused = self.fusion_conv(torch.cat(projected, dim=1))
        return self.conv_seg(self.dropout(fused))
