"""The RefCut network: SimpleClick's plain-ViT click model plus the reference prompt branch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from refcut.model.backbone import PlainViT
from refcut.model.clicks import disk_maps
from refcut.model.config import ModelConfig
from refcut.model.head import SegmentationHead
from refcut.model.layers import PatchEmbed
from refcut.model.neck import SimpleFeaturePyramid
from refcut.model.reference import ReferencePromptGenerator


class RefCutModel(nn.Module):
    """``F_e = E_img(I) + E_ext([prev, pos, neg]) + P_r+ + P_r-`` -> ViT -> pyramid -> head -> logits.

    Images are ``B x 3 x H x W`` floats in [0, 1] (normalised inside), with H and W
    multiples of the patch size. Module names follow SimpleClick's checkpoints
    (``backbone.*``, ``patch_embed_coords.*``, ``neck.*``, ``head.*``); the reference
    branch lives under ``reference.*``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = PlainViT(config)
        self.patch_embed_coords = PatchEmbed(config.patch_size, 3, config.embed_dim)
        self.neck = SimpleFeaturePyramid(config.embed_dim, config.neck_dims)
        self.head = SegmentationHead(config.neck_dims, config.head_channels, config.head_dropout)
        self.reference = ReferencePromptGenerator(config.embed_dim, config.prompt_hidden_dim)
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)

    def _normalize(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.image_mean) / self.image_std

    def encode_reference(self, image: torch.Tensor) -> torch.Tensor:
        """Reference features ``F_r`` (``B x D x h x w``): same ``E_img`` and backbone, no click embedding."""
        return self.backbone.forward_tokens(self.backbone.patch_embed(self._normalize(image)))

    def reference_prompt(
        self, features: torch.Tensor, positive_mask: torch.Tensor | None, negative_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``P_r+ + P_r-`` (``B x D``) from reference features and masks (``B x 1 x H x W``, any size).

        An empty or absent mask contributes a zero prompt.
        """
        return self.reference(features, positive_mask, negative_mask)

    def forward(
        self,
        image: torch.Tensor,
        prev_mask: torch.Tensor,
        points: torch.Tensor,
        prompt: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``B x 1 x H x W``.

        ``prev_mask`` is ``B x 1 x H x W`` (previous probability, zeros at the first
        click); ``points`` is ``B x N x 3`` rows ``(y, x, label)`` in input pixels
        (label 1 positive, 0 negative, -1 padding); ``prompt`` is ``B x D`` (or
        ``1 x D``, broadcast) from :meth:`reference_prompt`, or None for no reference.
        """
        height, width = image.shape[-2:]
        clicks = disk_maps(points.to(image.dtype), height, width, self.config.click_radius)
        coord_features = torch.cat([prev_mask.to(image.dtype), clicks], dim=1)
        tokens = self.backbone.patch_embed(self._normalize(image)) + self.patch_embed_coords(coord_features)
        if prompt is not None:
            tokens = tokens + prompt[:, None, None, :].to(tokens.dtype)
        features = self.backbone.forward_tokens(tokens)
        logits = self.head(self.neck(features))
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=True)


def build_model(config: ModelConfig) -> RefCutModel:
    """A freshly initialised RefCut network for ``config``."""
    return RefCutModel(config)
