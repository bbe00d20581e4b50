"""Predictors that are not RefCut networks: empty, oracle, click-driven GrabCut, and a no-reference wrapper.

They follow the same :class:`~refcut.predictor.base.InteractivePredictor` protocol, so the app,
the scripts and the evaluation drive them like a model.
"""

from __future__ import annotations

import cv2
import numpy as np

from refcut.predictor.base import InteractivePredictor, PredictionResult


def _result_from_mask(mask: np.ndarray) -> PredictionResult:
    mask = np.asarray(mask, dtype=bool)
    return PredictionResult(mask=mask, prob=mask.astype(np.float32))


class _ReferenceIgnoringPredictor:
    """Shared plumbing of the baselines: references are accepted and ignored."""

    def __init__(self) -> None:
        self._image_shape: tuple[int, int] | None = None

    def set_reference(
        self, image: np.ndarray, positive_mask: np.ndarray | None, negative_mask: np.ndarray | None = None
    ) -> None:
        """Accepted and ignored: this baseline does not use references."""

    def clear_reference(self) -> None:
        """Nothing to clear."""

    def set_image(self, image: np.ndarray) -> None:
        """Remember the target image (only its size for most baselines)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 image, got shape {image.shape}")
        self._image_shape = image.shape[:2]

    def _require_image(self) -> tuple[int, int]:
        if self._image_shape is None:
            raise RuntimeError("call set_image() before predict()")
        return self._image_shape


class EmptyPredictor(_ReferenceIgnoringPredictor):
    """Predicts nothing, whatever the clicks (NoC = max clicks everywhere)."""

    def predict(
        self, point_coords: np.ndarray, point_labels: np.ndarray, prev_mask: np.ndarray | None = None
    ) -> PredictionResult:
        return _result_from_mask(np.zeros(self._require_image(), dtype=bool))


class OraclePredictor(_ReferenceIgnoringPredictor):
    """Returns the ground truth (NoC = 1 everywhere). The protocol hands it over via ``set_ground_truth``."""

    def __init__(self) -> None:
        super().__init__()
        self._gt: np.ndarray | None = None

    def set_ground_truth(self, gt_mask: np.ndarray) -> None:
        """The mask to return for the next episode."""
        self._gt = np.asarray(gt_mask, dtype=bool).copy()

    def predict(
        self, point_coords: np.ndarray, point_labels: np.ndarray, prev_mask: np.ndarray | None = None
    ) -> PredictionResult:
        shape = self._require_image()
        if self._gt is None:
            raise RuntimeError("OraclePredictor needs set_ground_truth() before predict()")
        if self._gt.shape != shape:
            raise ValueError(f"ground truth {self._gt.shape} does not match the image {shape}")
        return _result_from_mask(self._gt)


GRABCUT_STEPS: dict[str, dict[str, float | bool]] = {
    "grabcut": {},
    "grabcut-band": {"band_fraction": 0.03},
    "grabcut-guarded": {"band_fraction": 0.03, "min_kept": 0.5},
    "grabcut-fine": {"band_fraction": 0.03, "region_scale": True, "clicked_only": False, "iterations": 1},
    # Session-9 ablations of grabcut-fine (docs/results/grabcut_fine_train_split/):
    "grabcut-region": {"band_fraction": 0.03, "region_scale": True},
    "grabcut-pieces": {"band_fraction": 0.03, "clicked_only": False},
    "grabcut-fine-it2": {"band_fraction": 0.03, "region_scale": True, "clicked_only": False, "iterations": 2},
    "grabcut-fine-it4": {"band_fraction": 0.03, "region_scale": True, "clicked_only": False},
    "grabcut-fine240": {"band_fraction": 0.03, "region_scale": True, "clicked_only": False, "max_side": 240},
    "grabcut-fine200": {"band_fraction": 0.03, "region_scale": True, "clicked_only": False, "max_side": 200},
}
"""The predictors' GrabCut boundary steps by name (``refine=``), as :func:`grabcut_refine` options:
``band_fraction``, the band (fraction of the longer side) within which the step may move the
network's boundary (absent: anywhere); ``min_kept``, below which share of the network's mask
kept the step is undone; ``region_scale``, downscale only the region around the mask to
``max_side`` (small objects keep their full resolution) instead of the whole image;
``clicked_only=False``, keep every piece of the mask, not only those holding a positive click;
``iterations``, GrabCut's (4 by default; one is enough inside the band and a third of the cost)."""


def grabcut_in_roi(
    image: np.ndarray, gc_mask: np.ndarray, iterations: int, min_grow: int, grow_fraction: float = 0.5
) -> np.ndarray:
    """Run GrabCut (``GC_INIT_WITH_MASK``) inside the box around the (probable) foreground; HxW uint8 result.

    The box is grown by ``grow_fraction`` of its size on each side (at least ``min_grow`` px);
    pixels outside it are background. The RNG is re-seeded first, so results do not depend on
    call order.
    """
    height, width = gc_mask.shape
    foreground = np.zeros((height, width), np.uint8)
    ys, xs = np.nonzero(np.isin(gc_mask, (cv2.GC_FGD, cv2.GC_PR_FGD)))
    if not len(ys):
        return foreground
    grow_y = max(min_grow, int((ys.max() - ys.min() + 1) * grow_fraction))
    grow_x = max(min_grow, int((xs.max() - xs.min() + 1) * grow_fraction))
    top, bottom = max(0, ys.min() - grow_y), min(height, ys.max() + grow_y + 1)
    left, right = max(0, xs.min() - grow_x), min(width, xs.max() + grow_x + 1)
    roi_mask = np.ascontiguousarray(gc_mask[top:bottom, left:right])
    if np.any(np.isin(roi_mask, (cv2.GC_BGD, cv2.GC_PR_BGD))) and np.any(np.isin(roi_mask, (cv2.GC_FGD, cv2.GC_PR_FGD))):
        bgd_model = np.zeros((1, 65), np.float64)
        fgd_model = np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)
        roi_image = np.ascontiguousarray(image[top:bottom, left:right])
        cv2.grabCut(roi_image, roi_mask, None, bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_MASK)
    foreground[top:bottom, left:right] = np.isin(roi_mask, (cv2.GC_FGD, cv2.GC_PR_FGD))
    return foreground


def keep_clicked_components(foreground: np.ndarray, xy: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """HxW bool: the 8-connected components of ``foreground`` that hold a positive click (``xy`` integer pixels)."""
    _, components = cv2.connectedComponents(foreground.astype(np.uint8), connectivity=8)
    keep = {int(components[y, x]) for (x, y), label in zip(xy, labels) if label == 1}
    keep.discard(0)
    return np.isin(components, list(keep))


def grabcut_refine(
    image: np.ndarray, prob: np.ndarray, coords_xy: np.ndarray, labels: np.ndarray, max_side: int = 320,
    iterations: int = 4, seed_fraction: float = 0.01, band_fraction: float | None = None, min_kept: float = 0.0,
    region_scale: bool = False, clicked_only: bool = True,
) -> np.ndarray:
    """Sharpen a probability map's boundary with GrabCut; returns an HxW float32 {0, 1} mask.

    Initialisation: ``prob > 0.5`` probable foreground, the rest of the box around it (grown by
    half its size) probable background, outside it background, click disks (1% of the longer
    side) definite fore/background. With ``band_fraction``, GrabCut may only move the boundary
    within a band of that fraction of the longer side around ``prob > 0.5`` (inside it definite
    foreground, outside definite background), so it sharpens edges but cannot swap regions.
    Works on a copy whose longer side is at most ``max_side``; only components holding a
    positive click are kept (all of them with ``clicked_only=False``: a target in several
    pieces, e.g. two shoes, keeps the pieces the network found). When GrabCut keeps less than
    ``min_kept`` of the network's mask (it overruled the network rather than sharpening it, e.g.
    dark hair over a dark jacket), the network's mask ``prob > 0.5`` is returned instead. With
    ``region_scale`` (needs ``band_fraction``) only the region GrabCut works in (the mask and the
    positive clicks, grown by twice the band and a seed radius) is cut out and downscaled to
    ``max_side``, so small objects keep their resolution; band and seed sizes stay fractions of
    the whole image's side.
    """
    height, width = prob.shape
    coords_xy = np.asarray(coords_xy, np.float64).reshape(-1, 2)
    labels = np.asarray(labels)
    top, bottom, left, right = 0, height, 0, width
    if region_scale:
        if band_fraction is None:
            raise ValueError("region_scale needs band_fraction (the region is the band around the mask)")
        box = _refine_region(prob > 0.5, coords_xy[labels == 1], 2 * band_fraction + seed_fraction)
        if box is None:
            return np.zeros((height, width), np.float32)
        top, bottom, left, right = box
        x, y = coords_xy[:, 0], coords_xy[:, 1]
        in_crop = (x >= left) & (x < right) & (y >= top) & (y < bottom)  # negative clicks may lie outside
        coords_xy, labels = coords_xy[in_crop] - [left, top], labels[in_crop]
    crop_h, crop_w = bottom - top, right - left
    crop_image = np.ascontiguousarray(image[top:bottom, left:right])
    crop_prob = prob[top:bottom, left:right].astype(np.float32)
    scale = min(1.0, max_side / max(crop_h, crop_w))
    size = (max(1, round(crop_w * scale)), max(1, round(crop_h * scale)))
    small = cv2.resize(crop_image, size, interpolation=cv2.INTER_AREA) if scale < 1 else crop_image
    small_prob = cv2.resize(crop_prob, size, interpolation=cv2.INTER_LINEAR) if scale < 1 else crop_prob
    small_h, small_w = small_prob.shape
    # Seed and band sizes are fractions of the whole image's longer side, in the copy's pixels.
    side = max(height, width) * scale if region_scale else max(small_h, small_w)
    xy = np.clip(np.round((coords_xy + 0.5) * scale - 0.5), 0, [small_w - 1, small_h - 1]).astype(int)
    gc_mask = np.full((small_h, small_w), cv2.GC_PR_BGD, np.uint8)
    inside = small_prob > 0.5
    gc_mask[inside] = cv2.GC_PR_FGD
    radius = max(2, round(seed_fraction * side))
    grow, grow_fraction = radius, 0.5
    if band_fraction is not None:  # the box only needs the band (and a band's width of background around it)
        width_px = max(1, round(band_fraction * side))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width_px + 1, 2 * width_px + 1))
        gc_mask[cv2.erode(inside.astype(np.uint8), kernel) > 0] = cv2.GC_FGD
        gc_mask[cv2.dilate(inside.astype(np.uint8), kernel) == 0] = cv2.GC_BGD
        grow, grow_fraction = 2 * width_px, 0.0
    for (x, y), label in zip(xy, labels):
        cv2.circle(gc_mask, (int(x), int(y)), radius, int(cv2.GC_FGD if label == 1 else cv2.GC_BGD), thickness=-1)
    foreground = grabcut_in_roi(np.ascontiguousarray(small), gc_mask, iterations, grow, grow_fraction)
    if clicked_only:
        foreground = keep_clicked_components(foreground, xy, labels)
    foreground = foreground.astype(np.float32)
    if min_kept > 0 and np.count_nonzero(foreground.astype(bool) & inside) < min_kept * np.count_nonzero(inside):
        return (prob > 0.5).astype(np.float32)
    if scale < 1:
        foreground = (cv2.resize(foreground, (crop_w, crop_h), interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.float32)
    if (crop_h, crop_w) == (height, width):
        return foreground
    result = np.zeros((height, width), np.float32)
    result[top:bottom, left:right] = foreground
    return result


def _refine_region(
    inside: np.ndarray, positive_xy: np.ndarray, margin_fraction: float
) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` (ends exclusive): the box around ``inside`` and the positive clicks,
    grown by ``margin_fraction`` of the longer side (+2 px); None when both are empty."""
    height, width = inside.shape
    ys, xs = np.nonzero(inside)
    ys = np.concatenate([ys, np.clip(np.round(positive_xy[:, 1]), 0, height - 1).astype(int)])
    xs = np.concatenate([xs, np.clip(np.round(positive_xy[:, 0]), 0, width - 1).astype(int)])
    if not len(ys):
        return None
    margin = int(np.ceil(margin_fraction * max(height, width))) + 2
    return (max(0, ys.min() - margin), min(height, ys.max() + margin + 1),
            max(0, xs.min() - margin), min(width, xs.max() + margin + 1))


class GrabCutPredictor(_ReferenceIgnoringPredictor):
    """Classic click-driven GrabCut (OpenCV), the non-learned baseline.

    Design, per prediction (all on a copy downscaled so its longer side is at most
    ``max_side`` px, the result upsampled bilinearly and thresholded at 0.5):

    - Seeds: a disk of radius ``seed_radius`` (1% of the longer side, at least 2 px) around
      every click, definite foreground for positive clicks, definite background for negative.
    - Initial mask, everything else: probable background, except the probable-foreground
      region, which is the previous prediction when there is one, plus a disk of radius
      ``region_radius`` (15% of the longer side) around every positive click that the
      previous prediction does not already cover (on the first click: just that disk), minus, for
      every negative click, the pixels within ``region_radius`` of it that are closer to it
      than to any positive click.
    - GrabCut runs only inside the box around the probable foreground and positive seeds,
      grown by half its size on each side (at least ``region_radius``); outside is
      background. This keeps the colour models local and the cost low.
    - ``iterations`` GrabCut iterations from that mask (``GC_INIT_WITH_MASK``); the RNG is
      re-seeded before each call so results do not depend on the order of episodes.
    - Only the connected components of the foreground that contain a positive click are
      kept (GrabCut otherwise grabs similarly coloured regions anywhere in the image).
    - No positive click yet → empty prediction.
    """

    def __init__(self, max_side: int = 256, iterations: int = 2, seed_fraction: float = 0.01,
                 region_fraction: float = 0.15) -> None:
        super().__init__()
        self.max_side = max_side
        self.iterations = iterations
        self.seed_fraction = seed_fraction
        self.region_fraction = region_fraction
        self._small: np.ndarray | None = None
        self._scale = 1.0

    def set_image(self, image: np.ndarray) -> None:
        super().set_image(image)
        height, width = image.shape[:2]
        self._scale = min(1.0, self.max_side / max(height, width))
        if self._scale < 1.0:
            size = (max(1, round(width * self._scale)), max(1, round(height * self._scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        else:
            small = image
        self._small = np.ascontiguousarray(small, dtype=np.uint8)

    def predict(
        self, point_coords: np.ndarray, point_labels: np.ndarray, prev_mask: np.ndarray | None = None
    ) -> PredictionResult:
        full_shape = self._require_image()
        assert self._small is not None
        coords = np.asarray(point_coords, dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(point_labels).reshape(-1)
        if not np.any(labels == 1):
            return _result_from_mask(np.zeros(full_shape, dtype=bool))
        small_h, small_w = self._small.shape[:2]
        # Pixel centres map as (x + 0.5) * scale - 0.5.
        small_xy = np.clip(np.round((coords + 0.5) * self._scale - 0.5), 0, [small_w - 1, small_h - 1]).astype(int)
        longer = max(small_h, small_w)
        seed_radius = max(2, round(self.seed_fraction * longer))
        region_radius = max(seed_radius + 1, round(self.region_fraction * longer))

        probable_fg = np.zeros((small_h, small_w), dtype=np.uint8)
        if prev_mask is not None:
            prev_small = cv2.resize(np.asarray(prev_mask, dtype=np.float32), (small_w, small_h),
                                    interpolation=cv2.INTER_LINEAR)
            probable_fg[prev_small > 0.49] = 1
        for (x, y), label in zip(small_xy, labels):
            if label == 1 and not probable_fg[y, x]:
                cv2.circle(probable_fg, (int(x), int(y)), region_radius, 1, thickness=-1)
        if np.any(labels != 1):
            # A negative click removes the pixels near it (within region_radius) that are closer
            # to it than to every positive click.
            grid_y, grid_x = np.mgrid[0:small_h, 0:small_w]
            positives = small_xy[labels == 1]
            to_positive = np.min([np.hypot(grid_x - px, grid_y - py) for px, py in positives], axis=0)
            for (x, y), label in zip(small_xy, labels):
                if label != 1:
                    to_negative = np.hypot(grid_x - x, grid_y - y)
                    probable_fg[(to_negative <= region_radius) & (to_negative < to_positive)] = 0

        gc_mask = np.full((small_h, small_w), cv2.GC_PR_BGD, dtype=np.uint8)
        gc_mask[probable_fg > 0] = cv2.GC_PR_FGD
        for (x, y), label in zip(small_xy, labels):
            value = cv2.GC_FGD if label == 1 else cv2.GC_BGD
            cv2.circle(gc_mask, (int(x), int(y)), seed_radius, int(value), thickness=-1)

        foreground = grabcut_in_roi(self._small, gc_mask, self.iterations, region_radius)
        foreground = keep_clicked_components(foreground, small_xy, labels).astype(np.float32)

        if self._scale < 1.0:
            prob = cv2.resize(foreground, (full_shape[1], full_shape[0]), interpolation=cv2.INTER_LINEAR)
        else:
            prob = foreground
        prob = (prob > 0.5).astype(np.float32)
        return PredictionResult(mask=prob > 0.5, prob=prob)


class NoReferencePredictor:
    """Wraps a predictor and ignores every reference: "the same network, no reference"."""

    def __init__(self, inner: InteractivePredictor) -> None:
        self.inner = inner

    def set_reference(
        self, image: np.ndarray, positive_mask: np.ndarray | None, negative_mask: np.ndarray | None = None
    ) -> None:
        """Ignored: the inner predictor's reference is cleared instead."""
        self.inner.clear_reference()

    def clear_reference(self) -> None:
        self.inner.clear_reference()

    def set_image(self, image: np.ndarray) -> None:
        self.inner.set_image(image)

    def predict(
        self, point_coords: np.ndarray, point_labels: np.ndarray, prev_mask: np.ndarray | None = None
    ) -> PredictionResult:
        return self.inner.predict(point_coords, point_labels, prev_mask=prev_mask)
