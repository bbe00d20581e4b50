"""Initial click sampling (SimpleClick's MultiPointSampler, single object)."""

from __future__ import annotations

import cv2
import numpy as np

from refcut.training.points import sample_initial_points


def _gt() -> np.ndarray:
    gt = np.zeros((64, 64), bool)
    gt[16:40, 20:48] = True
    return gt


def test_positives_inside_negatives_outside():
    gt = _gt()
    rng = np.random.default_rng(0)
    for _ in range(50):
        points = sample_initial_points(gt, rng, max_points=6, erode_prob=0.0)
        assert points.shape == (12, 3)
        positives = points[points[:, 2] == 1]
        negatives = points[points[:, 2] == 0]
        assert len(positives) >= 1
        assert gt[positives[:, 0].astype(int), positives[:, 1].astype(int)].all()
        assert not gt[negatives[:, 0].astype(int), negatives[:, 1].astype(int)].any()
        assert (points[points[:, 2] == -1] == -1).all()


def test_counts_are_geometric():
    rng = np.random.default_rng(1)
    pos, neg = [], []
    for _ in range(800):
        points = sample_initial_points(_gt(), rng, max_points=24, gamma=0.8)
        pos.append(int((points[:, 2] == 1).sum()))
        neg.append(int((points[:, 2] == 0).sum()))
    assert min(pos) == 1 and np.bincount(pos).argmax() == 1
    assert np.bincount(neg).argmax() == 0
    # geometric mean of k over [0, 24) with ratio 0.8 is about 3.9
    assert 3.0 < np.mean(neg) < 4.8


def test_erosion_and_border_band():
    gt = _gt()
    eroded = cv2.erode(gt.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=3).astype(bool)
    rng = np.random.default_rng(2)
    border_width = int(np.ceil(0.1 * np.sqrt(gt.sum())))
    for _ in range(30):
        points = sample_initial_points(gt, rng, max_points=8, erode_prob=1.0, border_prob=1.0, gamma=0.99)
        positives = points[points[:, 2] == 1].astype(int)
        negatives = points[points[:, 2] == 0].astype(int)
        assert eroded[positives[:, 0], positives[:, 1]].all()
        ys, xs = negatives[:, 0], negatives[:, 1]
        dy = np.maximum(np.maximum(16 - ys, ys - 39), 0)
        dx = np.maximum(np.maximum(20 - xs, xs - 47), 0)
        assert (np.hypot(dy, dx) <= border_width + 1).all()


def test_empty_ground_truth_gives_no_positive():
    points = sample_initial_points(np.zeros((16, 16), bool), np.random.default_rng(0), max_points=4)
    assert not (points[:, 2] == 1).any()


def test_hard_negative_click_takes_the_outside_token_most_like_the_target():
    from refcut.training.points import add_negative_click, hard_negative_click

    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(8, 4, 4)).astype(np.float32)
    gt = np.zeros((56, 56), bool)
    gt[:14, :14] = True  # exactly token cell (0, 0)
    tokens[:, 3, 3] = 2 * tokens[:, 0, 0]  # an outside cell with the target's feature
    tokens[:, 0, 1] = tokens[:, 0, 0]  # as similar, but its cell touches the target
    gt[5, 20] = True
    y, x = hard_negative_click(gt, tokens, rng, top=1)
    assert (y, x) == (3.5 * 14 - 0.5, 3.5 * 14 - 0.5) and not gt[int(y), int(x)]
    assert hard_negative_click(np.ones((56, 56), bool), tokens, rng) is None  # no cell outside
    assert hard_negative_click(np.zeros((56, 56), bool), tokens, rng) is None  # no target
    points = np.array([[3, 3, 1], [-1, -1, -1], [-1, -1, -1]], np.float32)
    add_negative_click(points, (y, x), rows=2)
    assert points[1].tolist() == [y, x, 0] and points[2].tolist() == [-1, -1, -1]
    add_negative_click(points, (1, 1), rows=2)  # no free row among the first two: unchanged
    assert points[2].tolist() == [-1, -1, -1]
