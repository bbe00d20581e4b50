"""Normalized focal loss against a direct transcription of SimpleClick's formula."""

from __future__ import annotations

import numpy as np
import torch

from refcut.training.losses import far_from_clicks_weight, normalized_focal_loss


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


def test_far_from_clicks_weight_grows_with_distance_and_keeps_the_loss_size():
    points = torch.tensor([[[2.0, 2.0, 1.0], [0.0, 0.0, -1.0]], [[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]]])
    weight = far_from_clicks_weight(points, (4, 4), view_size=16, weight=2.0, radius=0.5)
    assert weight.shape == (2, 1, 4, 4)
    first = weight[0, 0]
    # Cell (0, 0) is centred at view pixel (1.5, 1.5), next to the click; (3, 3) at (13.5, 13.5), past the radius (8 px).
    assert first[0, 0] < first[1, 1] < first[3, 3]
    assert torch.isclose(first[3, 3], first[3, 2]) and torch.isclose(first.mean(), torch.tensor(1.0))
    expected = 1 + 2 * min(1.0, float(np.hypot(5.5 - 2, 1.5 - 2)) / 8)
    assert torch.isclose(first[1, 0] / first[0, 0], torch.tensor(expected / (1 + 2 * float(np.hypot(0.5, 0.5)) / 8)))
    assert torch.equal(weight[1], torch.ones(1, 4, 4))  # the padding-only sample has no click: plain weights
    # Weighting moves the loss to far pixels: a mistake there costs more than the same mistake near the click.
    target = torch.zeros(1, 1, 4, 4)
    near, far = torch.full((1, 1, 4, 4), -4.0), torch.full((1, 1, 4, 4), -4.0)
    near[0, 0, 0, 0], far[0, 0, 3, 3] = 4.0, 4.0
    w = weight[:1]
    assert normalized_focal_loss(far, target, pixel_weight=w) > normalized_focal_loss(near, target, pixel_weight=w)
    assert torch.isclose(normalized_focal_loss(far, target), normalized_focal_loss(near, target))
