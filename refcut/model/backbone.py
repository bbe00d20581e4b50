"""Plain ViT backbone with SimpleClick's windowed/global attention schedule."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from refcut.model.config import ModelConfig
from refcut.model.layers import Block, PatchEmbed


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize the patch part of ``1 x (1 + G*G) x D`` (class slot first) to ``1 x h x w x D``, bicubic."""
    patch = pos_embed[:, 1:]
    side = int(round(patch.shape[1] ** 0.5))
    if side * side != patch.shape[1]:
        raise ValueError(f"position embedding with {patch.shape[1]} patch tokens is not a square grid")
    patch = patch.reshape(1, side, side, -1)
    if (side, side) == tuple(grid):
        return patch
    resized = F.interpolate(patch.permute(0, 3, 1, 2).float(), size=grid, mode="bicubic", align_corners=False)
    return resized.to(pos_embed.dtype).permute(0, 2, 3, 1)


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``B x h x w x D`` -> ``(B*nW) x window² x D``, zero-padding the grid to a multiple of ``window``."""
    b, h, w, d = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.reshape(b, hp // window, window, wp // window, window, d).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, d), (hp, wp)


def window_unpartition(x: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`."""
    hp, wp = padded
    d = x.shape[-1]
    b = x.shape[0] // ((hp // window) * (wp // window))
    x = x.reshape(b, hp // window, wp // window, window, window, d).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hp, wp, d)[:, : size[0], : size[1]]


class PlainViT(nn.Module):
    """Patch embedding, position embedding and transformer blocks; no class token is used.

    ``forward_tokens`` takes already-summed token embeddings (image + extras) of
    shape ``B x h x w x D`` and returns the feature map ``B x D x h x w``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.patch_embed = PatchEmbed(config.patch_size, 3, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.pos_embed_grid**2, d))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            Block(d, config.num_heads, config.mlp_ratio, config.qkv_bias, config.layer_scale_init)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(d, eps=1e-6) if config.final_norm else nn.Identity()
        self._global = set(config.global_blocks)
        self.apply(_init_linear)

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        b, h, w, d = tokens.shape
        x = tokens + interpolate_pos_embed(self.pos_embed, (h, w))
        window = self.config.window_size
        for index, block in enumerate(self.blocks):
            if window is None or index in self._global:
                x = block(x.reshape(b, h * w, d)).reshape(b, h, w, d)
            else:
                windows, padded = window_partition(x, window)
                x = window_unpartition(block(windows), window, padded, (h, w))
        return self.norm(x).permute(0, 3, 1, 2)


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
