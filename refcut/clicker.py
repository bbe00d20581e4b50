"""The automatic user: the one click simulator of the project.

:class:`Clicker` is the evaluation clicker the whole interactive-segmentation field uses
(RITM, SimpleClick, GraCo): the next click goes to the pixel deepest inside the larger of
the false-negative and false-positive regions of the current prediction.

Rules, exactly:

1. ``fn = gt & ~pred & valid`` and ``fp = ~gt & pred & valid`` (``valid`` = not ignored).
2. Both masks are padded by 1 px of zeros, so the image border counts as boundary; an exact
   Euclidean distance transform (``cv2.DIST_L2`` with ``cv2.DIST_MASK_PRECISE``) runs on
   them and the padding is cropped off.
3. Distances at already clicked pixels are set to 0.
4. The click is positive iff ``max(fn_dt) > max(fp_dt)`` (a tie gives a negative click).
5. The click lands on the first pixel, in row-major order, attaining the maximum of the
   chosen distance map.

The first click on an empty prediction therefore lands at the interior-most pixel of the
target. :func:`sample_training_click` is the randomised variant used during training.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Click:
    """One click in image pixel coordinates (``x`` = column, ``y`` = row)."""

    x: int
    y: int
    is_positive: bool


def _as_bool_mask(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a 2-D HxW mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def border_distance(mask: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance of every mask pixel to the nearest non-mask pixel or image border.

    Pixels outside the mask get 0; an isolated mask pixel gets 1.
    """
    # Only the mask's bounding box is transformed: the nearest non-mask pixel of any pixel inside
    # it lies within one pixel of the box (clamping a point to a box containing p never moves it
    # further from p), so the result is exact and costs the box's size, not the image's.
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    dist = np.zeros(mask.shape, np.float32)
    if not len(rows):
        return dist
    box = np.s_[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    padded = np.pad(mask[box].astype(np.uint8), 1, mode="constant", constant_values=0)
    dist[box] = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    return dist


def error_distance_maps(
    pred_mask: np.ndarray, gt_mask: np.ndarray, valid_mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distance maps of the false-negative and false-positive regions (rules 1-2 of the module doc)."""
    pred = _as_bool_mask(pred_mask, "pred_mask")
    gt = _as_bool_mask(gt_mask, "gt_mask")
    if pred.shape != gt.shape:
        raise ValueError(f"pred_mask shape {pred.shape} differs from gt_mask shape {gt.shape}")
    fn = gt & ~pred
    fp = ~gt & pred
    if valid_mask is not None:
        fn &= valid_mask
        fp &= valid_mask
    return border_distance(fn), border_distance(fp)


class Clicker:
    """The field's automatic user for one target: call :meth:`make_next_click` after each prediction.

    ``ignore_mask`` (HxW bool, True = ignored) marks pixels that are never an error.
    """

    def __init__(self, gt_mask: np.ndarray, ignore_mask: np.ndarray | None = None) -> None:
        self.gt_mask = _as_bool_mask(gt_mask, "gt_mask")
        if ignore_mask is None:
            self.valid_mask = None
        else:
            ignore = _as_bool_mask(ignore_mask, "ignore_mask")
            if ignore.shape != self.gt_mask.shape:
                raise ValueError(f"ignore_mask shape {ignore.shape} differs from gt_mask shape {self.gt_mask.shape}")
            self.valid_mask = ~ignore
        self.clicks: list[Click] = []
        self._not_clicked = np.ones(self.gt_mask.shape, dtype=bool)

    def reset(self) -> None:
        """Forget all clicks."""
        self.clicks = []
        self._not_clicked[:] = True

    def add_click(self, click: Click) -> None:
        """Record a click (also excludes its pixel from future clicks)."""
        self.clicks.append(click)
        self._not_clicked[click.y, click.x] = False

    def make_next_click(self, pred_mask: np.ndarray) -> Click:
        """Choose, record and return the next click given the current boolean prediction."""
        fn_dt, fp_dt = error_distance_maps(pred_mask, self.gt_mask, self.valid_mask)
        fn_dt = fn_dt * self._not_clicked
        fp_dt = fp_dt * self._not_clicked
        fn_max = fn_dt.max()
        fp_max = fp_dt.max()
        is_positive = bool(fn_max > fp_max)
        chosen, chosen_max = (fn_dt, fn_max) if is_positive else (fp_dt, fp_max)
        # np.flatnonzero is row-major, so [0] is the first pixel attaining the maximum.
        flat_index = int(np.flatnonzero(chosen == chosen_max)[0])
        y, x = divmod(flat_index, chosen.shape[1])
        click = Click(x=int(x), y=int(y), is_positive=is_positive)
        self.add_click(click)
        return click

    def coords_and_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Clicks so far as ``(N,2)`` int ``(x, y)`` coordinates and ``(N,)`` int labels (1 positive, 0 negative)."""
        coords = np.array([[c.x, c.y] for c in self.clicks], dtype=np.int64).reshape(-1, 2)
        labels = np.array([1 if c.is_positive else 0 for c in self.clicks], dtype=np.int64)
        return coords, labels


def sample_training_click(
    pred_mask: np.ndarray,
    gt_mask: np.ndarray,
    rng: np.random.Generator,
    ignore_mask: np.ndarray | None = None,
) -> Click | None:
    """Training-time click: deep inside the largest error region, at a random spot.

    The polarity follows the larger maximum error distance (tie → negative, as in
    :class:`Clicker`); the click is drawn uniformly among the pixels of the chosen error
    map whose distance exceeds half its maximum. Returns None when the prediction has no
    error at all.
    """
    valid = None if ignore_mask is None else ~_as_bool_mask(ignore_mask, "ignore_mask")
    fn_dt, fp_dt = error_distance_maps(pred_mask, gt_mask, valid)
    fn_max = float(fn_dt.max())
    fp_max = float(fp_dt.max())
    if fn_max == 0.0 and fp_max == 0.0:
        return None
    is_positive = fn_max > fp_max
    chosen, chosen_max = (fn_dt, fn_max) if is_positive else (fp_dt, fp_max)
    candidates = np.flatnonzero(chosen > chosen_max / 2.0)  # row-major, as np.nonzero
    y, x = divmod(int(candidates[int(rng.integers(len(candidates)))]), chosen.shape[1])
    return Click(x=x, y=y, is_positive=bool(is_positive))
