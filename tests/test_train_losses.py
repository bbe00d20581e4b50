"""Normalized focal loss against a direct transcription of SimpleClick's formula."""

from __future__ import annotations

import numpy as np
import torch

from refcut.training.losses import normalized_focal_loss


def _reference_nfl(logits: np.ndarray, target: np.ndarray, alpha: float, gamma: float, eps: float = 1e-12):
    losses = []
    for logit, label in zip(logits, target):
        p = 1 / (1 + np.exp(-logit))
        pt = 1 - np.abs(label - p)
        beta = (1 - pt) ** gamma
        beta = beta * (label.size / (beta.sum() + eps))
        alpha_t = np.where(label > 0.5, alpha, 1 - alpha)
        losses.append((-alpha_t * beta * np.log(np.minimum(pt + eps, 1.0))).sum() / label.size)
    return np.array(losses)


def test_matches_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 1, 8, 8)) * 3
    target = (rng.random((3, 1, 8, 8)) > 0.6).astype(np.float64)
    for alpha, gamma in ((0.5, 2.0), (0.25, 1.0)):
        ours = normalized_focal_loss(torch.tensor(logits), torch.tensor(target), alpha, gamma).numpy()
        np.testing.assert_allclose(ours, _reference_nfl(logits, target, alpha, gamma), rtol=1e-5)


def test_normaliser_is_detached():
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(size=(2, 1, 6, 6)), requires_grad=True)
    target = torch.tensor((rng.random((2, 1, 6, 6)) > 0.5).astype(np.float64))
    normalized_focal_loss(logits, target).sum().backward()
    # Same loss with the per-sample scale computed outside autograd.
    with torch.no_grad():
        p = torch.sigmoid(logits)
        beta = (1 - (1 - (target - p).abs())) ** 2
        scale = 36 / (beta.sum(dim=(1, 2, 3), keepdim=True) + 1e-12)
    leaf = logits.detach().clone().requires_grad_(True)
    p = torch.sigmoid(leaf)
    pt = 1 - (target - p).abs()
    loss = (-0.5 * (1 - pt) ** 2 * scale * torch.log(torch.clamp(pt + 1e-12, max=1.0))).sum(dim=(1, 2, 3)) / 36
    loss.sum().backward()
    torch.testing.assert_close(logits.grad, leaf.grad)


def test_good_predictions_cost_less_and_valid_mask_excludes_pixels():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    good = normalized_focal_loss(target * 8 - 4, target)
    bad = normalized_focal_loss(4 - target * 8, target)
    assert float(good) < float(bad)
    logits = target * 8 - 4
    logits[..., 0, 0] = -10  # a wrong pixel, then ignored
    valid = torch.ones_like(target, dtype=torch.bool)
    valid[..., 0, 0] = False
    masked = normalized_focal_loss(logits, target, valid=valid)
    assert float(masked) < float(normalized_focal_loss(logits, target))
