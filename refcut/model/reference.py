"""Reference Prompt Generator: masked average pooling of reference features + two MLPs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def masked_average_pool(features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``R = Σ(F·M) / ΣM`` per sample.

    ``features`` is ``B x D x h x w``; ``mask`` is ``B x 1 x H x W`` in [0, 1] at
    any resolution and is area-resized to the feature grid first. Returns
    ``(R: B x D, has_mask: B bool)``; ``R`` is 0 where the resized mask is empty.
    """
    weights = F.interpolate(mask.to(features.dtype), size=features.shape[-2:], mode="area")
    total = weights.sum(dim=(1, 2, 3))
    pooled = (features * weights).sum(dim=(2, 3)) / total.clamp_min(1e-6)[:, None]
    has_mask = total > 0
    return pooled * has_mask[:, None].to(pooled.dtype), has_mask


class PromptMLP(nn.Module):
    """Two-layer MLP ``D -> hidden -> out_dim`` (default ``D``); the last layer starts at zero."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_dim or dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ReferencePromptGenerator(nn.Module):
    """Turns reference features and masks into the prompt ``P_r+ + P_r-`` added to every target token.

    An empty or absent mask gives a zero prompt for that polarity (the MLP is not
    applied), so "positive only", "negative only" and "no reference" are all
    expressed by which masks are given. Both MLPs' last layers are zero-initialised:
    a model fine-tuned from a no-reference checkpoint starts out identical to it.
    ``out_dim`` (default: the feature dimension) is the width of the tokens the prompt is
    added to (the encode-once decoder's width).
    """

    def __init__(self, dim: int, hidden: int | None = None, out_dim: int | None = None) -> None:
        super().__init__()
        hidden = hidden or dim
        self.out_dim = out_dim or dim
        self.positive_mlp = PromptMLP(dim, hidden, self.out_dim)
        self.negative_mlp = PromptMLP(dim, hidden, self.out_dim)

    def forward(
        self, features: torch.Tensor, positive_mask: torch.Tensor | None, negative_mask: torch.Tensor | None
    ) -> torch.Tensor:
        pooled = [None if mask is None else masked_average_pool(features, mask) for mask in (positive_mask, negative_mask)]
        return self.from_pooled(features, *pooled)

    def from_pooled(
        self,
        features: torch.Tensor,
        positive: tuple[torch.Tensor, torch.Tensor] | None,
        negative: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        """The prompt from already pooled ``(R, has_mask)`` pairs (None: that mask is absent).

        ``features`` (the reference features) only give the batch size, dtype and device.
        """
        prompt = features.new_zeros(features.shape[0], self.out_dim)
        for pooled, mlp in ((positive, self.positive_mlp), (negative, self.negative_mlp)):
            if pooled is None:
                continue
            features, has_mask = pooled
            prompt = prompt + mlp(features) * has_mask[:, None].to(prompt.dtype)
        return prompt
