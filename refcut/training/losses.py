"""Normalized focal loss (SimpleClick's ``NormalizedFocalLossSigmoid``) and pixel weights for it."""

from __future__ import annotations

import torch


def normalized_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.5,
    gamma: float = 2.0,
    eps: float = 1e-12,
    valid: torch.Tensor | None = None,
    pixel_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample NFL (shape ``B``) for ``B x 1 x H x W`` logits and a {0, 1} target.

    ``p = sigmoid(logit)``, ``pt = 1 - |target - p|``, ``beta = (1 - pt)^gamma`` rescaled per
    sample by the *detached* factor ``Σvalid / (Σbeta + eps)`` (so the focal weights sum to the
    number of valid pixels); ``loss = -alpha_t * beta * log(min(pt + eps, 1))`` with
    ``alpha_t = alpha`` on foreground and ``1 - alpha`` elsewhere, summed over valid pixels and
    divided by their count. ``valid`` (same shape, bool) excludes pixels; default all valid.
    ``pixel_weight`` (same shape, >= 0) scales each pixel's term after the focal normalisation.
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
    if pixel_weight is not None:
        loss = loss * pixel_weight.to(loss.dtype)
    return loss.sum(dim=dims) / valid_count.flatten().clamp_min(1.0)


def far_from_clicks_weight(points: torch.Tensor, shape: tuple[int, int], view_size: int, weight: float,
                           radius: float) -> torch.Tensor:
    """``B x 1 x h x w`` loss weights ``∝ 1 + weight * min(1, d / (radius * view_size))`` on an ``h x w`` grid.

    ``d`` is a cell centre's distance in view pixels to the nearest click of ``points``
    (``B x N x 3`` rows ``(y, x, label)``, label -1 = padding). Each sample's weights are scaled to
    mean 1 (the loss keeps its size; only where it falls moves); a sample without clicks gets 1.
    """
    b = points.shape[0]
    h, w = shape
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * (view_size / h) - 0.5
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * (view_size / w) - 0.5
    pts = points.float()
    dy = ys.view(1, 1, h, 1) - pts[..., 0].view(b, -1, 1, 1)
    dx = xs.view(1, 1, 1, w) - pts[..., 1].view(b, -1, 1, 1)
    dist = torch.sqrt(dy * dy + dx * dx)  # B x N x h x w
    dist = torch.where((pts[..., 2] >= 0).view(b, -1, 1, 1), dist, torch.full_like(dist, float("inf")))
    nearest = dist.amin(dim=1, keepdim=True) if pts.shape[1] else torch.full((b, 1, h, w), float("inf"))
    far = torch.clamp(nearest / (radius * view_size), max=1.0)
    far = torch.where(torch.isfinite(nearest), far, torch.zeros_like(far))
    pixel_weight = 1.0 + weight * far
    return pixel_weight / pixel_weight.mean(dim=(2, 3), keepdim=True)
