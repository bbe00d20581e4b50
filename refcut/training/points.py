"""Initial training clicks (SimpleClick's ``MultiPointSampler``, single object, no hierarchy).

A geometric number of positive clicks is drawn uniformly inside the (usually eroded)
ground truth and a geometric number of negatives outside it, half of them in a band around
the object. Rows are ``(y, x, label)`` with label 1 positive, 0 negative, -1 padding.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from refcut.training.config import DataConfig

PAD_ROW = (-1.0, -1.0, -1.0)


def geometric_count(rng: np.random.Generator, count: int, gamma: float) -> int:
    """A value in ``[0, count)`` with probability proportional to ``gamma ** k``."""
    weights = gamma ** np.arange(count, dtype=np.float64)
    return int(rng.choice(count, p=weights / weights.sum()))


def _pick(rng: np.random.Generator, region: np.ndarray, count: int) -> np.ndarray:
    """``count`` distinct pixels ``(y, x)`` drawn uniformly from a boolean region (fewer if it is small)."""
    ys, xs = np.nonzero(region)
    if count <= 0 or len(ys) == 0:
        return np.zeros((0, 2), dtype=np.float32)
    chosen = rng.choice(len(ys), size=min(count, len(ys)), replace=False)
    return np.stack([ys[chosen], xs[chosen]], axis=1).astype(np.float32)


def sample_initial_points(
    gt_mask: np.ndarray,
    rng: np.random.Generator,
    max_points: int = 24,
    gamma: float = 0.8,
    erode_prob: float = 0.9,
    erode_iters: int = 3,
    border_prob: float = 0.5,
    border_ratio: float = 0.1,
) -> np.ndarray:
    """Initial clicks for one target: a ``(2 * max_points) x 3`` float32 array, padding rows ``-1``.

    Positives: ``1 + k`` (``k`` geometric over ``[0, max_points)``), uniform inside the GT,
    eroded ``erode_iters`` times with a 3x3 kernel with probability ``erode_prob`` (only if
    more than 10 px remain). Negatives: ``k`` geometric over ``[0, max_points]`` (zero is the
    most likely), each either in a band of width ``ceil(border_ratio * sqrt(area))`` around
    the GT (probability ``border_prob``) or anywhere outside it. An empty GT gets no positives.
    """
    gt = np.asarray(gt_mask).astype(bool)
    if gt.ndim != 2:
        raise ValueError(f"gt_mask must be HxW, got shape {gt.shape}")
    points = np.tile(np.asarray(PAD_ROW, dtype=np.float32), (2 * max_points, 1))
    num_positive = 1 + geometric_count(rng, max_points, gamma)
    num_negative = geometric_count(rng, max_points + 1, gamma)

    positive_region = gt
    if erode_iters > 0 and rng.random() < erode_prob:
        eroded = cv2.erode(gt.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=erode_iters).astype(bool)
        if eroded.sum() > 10:
            positive_region = eroded
    positives = _pick(rng, positive_region, num_positive)

    background = ~gt
    area = int(gt.sum())
    if area > 0:
        width = max(1, math.ceil(border_ratio * math.sqrt(area)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
        band = cv2.dilate(gt.astype(np.uint8), kernel).astype(bool) & background
    else:
        band = background
    if not band.any():
        band = background
    num_border = int((rng.random(num_negative) < border_prob).sum())
    negatives = np.concatenate([_pick(rng, band, num_border), _pick(rng, background, num_negative - num_border)])

    points[: len(positives), :2] = positives
    points[: len(positives), 2] = 1.0
    points[max_points : max_points + len(negatives), :2] = negatives
    points[max_points : max_points + len(negatives), 2] = 0.0
    return points


def training_points(
    gt_mask: np.ndarray, rng: np.random.Generator, data: "DataConfig", rows: int
) -> tuple[np.ndarray, bool]:
    """A training sample's click rows (``rows`` x 3, padding ``-1``) and whether it is a first-click sample.

    The initial clicks come from :func:`sample_initial_points` with the ``data`` config; with
    probability ``data.first_click_prob`` they are cut to their first positive click (the trainer
    then adds no simulated click to that sample). Otherwise, with probability
    ``data.click_sequence_prob``, they are cut the same way but the sample keeps the step's
    simulated clicks: a first click followed by corrections at the largest error, the sequence
    the evaluation and an annotator produce.
    """
    points = np.tile(np.asarray(PAD_ROW, dtype=np.float32), (rows, 1))
    points[: 2 * data.max_initial_points] = sample_initial_points(
        gt_mask, rng, data.max_initial_points, data.points_gamma, data.positive_erode_prob,
        data.positive_erode_iters, data.negative_border_prob, data.border_ratio,
    )
    first_click = data.first_click_prob > 0 and rng.random() < data.first_click_prob
    sequence = not first_click and data.click_sequence_prob > 0 and rng.random() < data.click_sequence_prob
    if first_click or sequence:
        points[1:] = PAD_ROW  # row 0 is the first positive
    return points, first_click


def hard_negative_click(gt_mask: np.ndarray, tokens: np.ndarray, rng: np.random.Generator, top: int = 3) -> tuple[float, float] | None:
    """A negative click ``(y, x)`` in view pixels on a token that looks like the target but lies outside it.

    ``tokens`` are the view's ``D x g x g`` encoder features, ``gt_mask`` its ``S x S`` target. The
    candidates are the token cells with no target pixel; one of the ``top`` with the highest
    cosine to the target's mean feature is drawn, and the click goes to its cell's centre. None
    when every cell touches the target.
    """
    d, g, _ = tokens.shape
    size = gt_mask.shape[0]
    cover = cv2.resize(gt_mask.astype(np.float32), (g, g), interpolation=cv2.INTER_AREA)
    outside = (cover == 0).ravel()
    if not outside.any() or not (cover > 0).any():
        return None
    flat = tokens.reshape(d, -1).astype(np.float32)
    unit = flat / np.maximum(np.linalg.norm(flat, axis=0, keepdims=True), 1e-6)
    prototype = (unit * cover.ravel()).sum(axis=1)
    prototype /= max(float(np.linalg.norm(prototype)), 1e-6)
    cosine = np.where(outside, prototype @ unit, -np.inf)
    best = np.argsort(-cosine)[: min(top, int(outside.sum()))]
    cell = int(best[int(rng.integers(len(best)))])
    step = size / g
    return (cell // g + 0.5) * step - 0.5, (cell % g + 0.5) * step - 0.5


def add_negative_click(points: np.ndarray, click: tuple[float, float], rows: int) -> None:
    """Write ``click`` as a negative into the first padding row among the first ``rows`` (in place; none free: no-op)."""
    free = np.nonzero(points[:rows, 2] < 0)[0]
    if len(free):
        points[free[0]] = (click[0], click[1], 0.0)
