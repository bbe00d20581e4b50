"""Normalized focal loss (SimpleClick's ``NormalizedFocalLossSigmoid``)."""

from __future__ import annotations

import torch


def normalized_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.5,
    gamma: float = 2.0,
    eps: float = 1e-12,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample NFL (shape ``B``) for ``B x 1 x H x W`` logits and a {0, 1} target.

    ``p = sigmoid(logit)``, ``pt = 1 - |target - p|``, ``beta = (1 - pt)^gamma`` rescaled per
    sample by the *detached* factor ``Σvalid / (Σbeta + eps)`` (so the focal weights sum to the
    number of valid pixels); ``loss = -alpha_t * beta * log(min(pt + eps, 1))`` with
    ``alpha_t = alpha`` on foreground and ``1 - alpha`` elsewhere, summed over valid pixels and
    divided by their count. ``valid`` (same shape, bool) excludes pixels; default all valid.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits shape {tuple(logits.shape)} differs from target shape {tuple(target.shape)}")
    logits = logits.float()
    target = target.float()
    weight = torch.ones_like(target) if valid is None else valid.to(target.dtype)
    prob = torch.sigmoid(logits)
    pt = 1.0 - (target - prob).abs()
    alpha_t = torch.where(target > 0.5, torch.full_like(target, alpha), torch.full_like(target, 1.0 - alpha))
    beta = (1.0 - pt) ** gamma * weight
    dims = tuple(range(1, logits.dim()))
    valid_count = weight.sum(dim=dims, keepdim=True)
    scale = (valid_count / (beta.sum(dim=dims, keepdim=True) + eps)).detach()
    beta = beta * scale
    loss = -alpha_t * beta * torch.log(torch.clamp(pt + eps, max=1.0)) * weight
    return loss.sum(dim=dims) / valid_count.flatten().clamp_min(1.0)
