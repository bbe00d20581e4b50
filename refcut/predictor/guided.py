"""An edge-aware boundary step: the guided filter (He et al., 2010) with the image as guide.

The decoder's logits live on a grid 4x coarser than its view (84 x 84 cells at 336 px), so on a
large view a cell covers ~10 image pixels and thin or ragged boundaries (hair, straps, fingers)
come out blurred. The guided filter fits, in every window, the probability as an affine function
of the image's colour and averages the fits: the output follows the image's edges where the
probability changes and stays smooth elsewhere. Unlike GrabCut it only moves the probability
locally (within the filter's radius), so it cannot drop a whole piece the network found (e.g. the
legs of a ``skin`` target whose colour GrabCut confuses with the background).

The filter runs on the box around the probability's support, with window sizes measured in
decoder cells, at a resolution subsampled so that the window is a few pixels wide (the "fast
guided filter": the affine coefficients are smooth, so they are computed coarse and upsampled).
"""

from __future__ import annotations

import cv2
import numpy as np

from refcut.predictor.baselines import GRABCUT_STEPS, grabcut_refine
from refcut.predictor.transforms import mask_box

GUIDED_STEPS: dict[str, dict[str, float | str]] = {
    "guided": {"radius_cells": 1.0, "eps": 1e-3},
    # A soft vote with GrabCut: 0.25 * (grabcut-fine's mask) + 0.75 * (guided probability), so GrabCut
    # decides where the filtered network is unsure (0.35 < p < 0.65) and cannot overrule it elsewhere.
    "guided-grabcut": {"radius_cells": 1.0, "eps": 1e-3, "grabcut": "grabcut-fine", "grabcut_weight": 0.25},
    # Ablations (docs/results/guided_train_split/): window, edge threshold, vote weight, GrabCut's input.
    "guided-r05": {"radius_cells": 0.5, "eps": 1e-3},
    "guided-r2": {"radius_cells": 2.0, "eps": 1e-3},
    "guided-e2": {"radius_cells": 1.0, "eps": 1e-2},
    "guided-grabcut-w20": {"radius_cells": 1.0, "eps": 1e-3, "grabcut": "grabcut-fine", "grabcut_weight": 0.2},
    "guided-grabcut-w30": {"radius_cells": 1.0, "eps": 1e-3, "grabcut": "grabcut-fine", "grabcut_weight": 0.3},
    "guided-grabcut-on-guided": {"radius_cells": 1.0, "eps": 1e-3, "grabcut": "grabcut-fine", "grabcut_weight": 0.25,
                                 "grabcut_on_guided": 1.0},
    # The vote's GrabCut weight scaled by the reference: 0 when the positive mask's boundary in the
    # reference is a weak colour edge (median contrast <= lo, CIELAB units), the full weight from hi
    # on (e.g. a car door against the fender, same paint, vs. a shirt against trousers).
    "guided-grabcut-adaptive": {"radius_cells": 1.0, "eps": 1e-3, "grabcut": "grabcut-fine", "grabcut_weight": 0.25,
                                "contrast_lo": 5.0, "contrast_hi": 15.0},
    "guided-grabcut-adaptive-10-20": {"radius_cells": 1.0, "eps": 1e-3, "grabcut": "grabcut-fine",
                                      "grabcut_weight": 0.25, "contrast_lo": 10.0, "contrast_hi": 20.0},
    "guided-grabcut-adaptive-15-25": {"radius_cells": 1.0, "eps": 1e-3, "grabcut": "grabcut-fine",
                                      "grabcut_weight": 0.25, "contrast_lo": 15.0, "contrast_hi": 25.0},
}
"""Named settings of :func:`guided_refine` (``RefCutPredictor(refine=...)``, ``MODEL+STEP`` in ``refcut eval``)."""

CONTRAST_WORKING_SIDE = 512
"""The reference is measured at this longer side (so the contrast does not depend on its resolution)."""

SUPPORT_THRESHOLD = 0.02
"""Pixels with a lower probability and farther than the filter's reach from any higher one stay untouched."""


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a ``(2r+1)^2`` window (reflected borders), per channel."""
    return cv2.blur(x, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float, subsample: int = 1) -> np.ndarray:
    """Colour guided filter: ``guide`` HxWx3 float32 in [0, 1], ``source`` HxW float32 -> HxW float32.

    ``radius`` (full-resolution pixels) is the window's half side, ``eps`` the regulariser (a colour
    variance below it counts as flat: the output there is the window mean of ``source``).
    ``subsample`` > 1 computes the affine coefficients at 1/``subsample`` resolution (fast guided filter).
    """
    if guide.ndim != 3 or guide.shape[2] != 3 or guide.shape[:2] != source.shape:
        raise ValueError(f"guide must be HxWx3 and source HxW of the same size, got {guide.shape} and {source.shape}")
    height, width = source.shape
    small_size = (max(1, round(width / subsample)), max(1, round(height / subsample)))
    if subsample > 1:
        small_guide = cv2.resize(guide, small_size, interpolation=cv2.INTER_AREA)
        small_source = cv2.resize(source, small_size, interpolation=cv2.INTER_AREA)
    else:
        small_guide, small_source = guide, source
    r = max(1, round(radius / subsample))
    mean_i = _box(small_guide, r)
    mean_p = _box(small_source, r)
    cov_ip = _box(small_guide * small_source[..., None], r) - mean_i * mean_p[..., None]
    # The window's colour covariance (6 distinct entries) + eps on the diagonal, inverted in closed form.
    pairs = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
    products = np.stack([small_guide[..., i] * small_guide[..., j] for i, j in pairs], axis=-1)
    second = _box(products, r)
    var = {}
    for k, (i, j) in enumerate(pairs):
        var[i, j] = var[j, i] = second[..., k] - mean_i[..., i] * mean_i[..., j] + (eps if i == j else 0.0)
    # Adjugate of the symmetric 3x3 matrix (both orders of every index pair, like ``var``).
    adj = {
        (0, 0): var[1, 1] * var[2, 2] - var[1, 2] ** 2,
        (0, 1): var[0, 2] * var[1, 2] - var[0, 1] * var[2, 2],
        (0, 2): var[0, 1] * var[1, 2] - var[0, 2] * var[1, 1],
        (1, 1): var[0, 0] * var[2, 2] - var[0, 2] ** 2,
        (1, 2): var[0, 1] * var[0, 2] - var[0, 0] * var[1, 2],
        (2, 2): var[0, 0] * var[1, 1] - var[0, 1] ** 2,
    }
    adj.update({(j, i): value for (i, j), value in list(adj.items())})
    det = var[0, 0] * adj[0, 0] + var[0, 1] * adj[0, 1] + var[0, 2] * adj[0, 2]
    a = np.stack([sum(adj[i, j] * cov_ip[..., j] for j in range(3)) for i in range(3)], axis=-1) / det[..., None]
    b = mean_p - np.einsum("hwc,hwc->hw", a, mean_i)
    mean_a, mean_b = _box(a.astype(np.float32), r), _box(b.astype(np.float32), r)
    if subsample > 1:
        mean_a = cv2.resize(mean_a, (width, height), interpolation=cv2.INTER_LINEAR)
        mean_b = cv2.resize(mean_b, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.einsum("hwc,hwc->hw", mean_a, guide) + mean_b


def guided_refine(
    image: np.ndarray, prob: np.ndarray, cell_px: float, radius_cells: float = 1.0, eps: float = 1e-3
) -> np.ndarray:
    """The probability ``prob`` (HxW) filtered with ``image`` (HxWx3 uint8) as guide; HxW float32 in [0, 1].

    ``cell_px`` is the size of one decoder cell in image pixels (the view's side / the logits' side);
    the window's half side is ``radius_cells`` cells. Only the box around ``prob > SUPPORT_THRESHOLD``
    (grown by the filter's reach) is filtered.
    """
    if image.shape[:2] != prob.shape:
        raise ValueError(f"image {image.shape[:2]} and probability {prob.shape} differ in size")
    out = np.clip(prob, 0.0, 1.0).astype(np.float32)
    support = mask_box(out > SUPPORT_THRESHOLD)
    if support is None:
        return out
    radius = max(1, round(radius_cells * cell_px))
    subsample = max(1, radius // 4)
    margin = 2 * radius + 2 * subsample
    y0, y1, x0, x1 = support
    top, bottom = max(0, y0 - margin), min(prob.shape[0], y1 + margin + 1)
    left, right = max(0, x0 - margin), min(prob.shape[1], x1 + margin + 1)
    guide = image[top:bottom, left:right].astype(np.float32) / 255.0
    filtered = guided_filter(guide, out[top:bottom, left:right], radius, eps, subsample)
    out[top:bottom, left:right] = np.clip(filtered, 0.0, 1.0)
    return out


def boundary_contrast(image: np.ndarray, mask: np.ndarray, band_fraction: float = 0.01) -> float | None:
    """Median CIELAB colour difference across ``mask``'s boundary in ``image`` (HxWx3 uint8); None if it has none.

    At every boundary pixel, the mean colour of the mask within ``band_fraction`` of the longer side
    inside the boundary is compared with the mean colour just outside, over a window of twice that
    size: high where the boundary is a colour edge, low where the mask meets something of its own colour.
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    if not mask.any() or mask.all():
        return None
    scale = CONTRAST_WORKING_SIDE / max(mask.shape)
    size = (max(1, round(mask.shape[1] * scale)), max(1, round(mask.shape[0] * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    inside = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    band = max(2, round(band_fraction * CONTRAST_WORKING_SIDE))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    inner = (inside & (1 - cv2.erode(inside, disk))).astype(np.float32)
    outer = (cv2.dilate(inside, disk) & (1 - inside)).astype(np.float32)
    contour = (inside & (1 - cv2.erode(inside, np.ones((3, 3), np.uint8)))).astype(bool)
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    window = (4 * band + 1, 4 * band + 1)

    def local_mean(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        share = cv2.blur(weights, window)
        return cv2.blur(lab * weights[..., None], window) / np.maximum(share, 1e-6)[..., None], share

    mean_in, share_in = local_mean(inner)
    mean_out, share_out = local_mean(outer)
    measured = contour & (share_in > 0.02) & (share_out > 0.02)
    if not measured.any():
        return None
    return float(np.median(np.linalg.norm(mean_in - mean_out, axis=-1)[measured]))


def guided_step(
    name: str, image: np.ndarray, prob: np.ndarray, coords_xy: np.ndarray, labels: np.ndarray, cell_px: float,
    reference_contrast: float | None = None,
) -> np.ndarray:
    """Apply the named :data:`GUIDED_STEPS` entry: the guided filter, then the vote with GrabCut when it has one.

    The vote is ``w * grabcut + (1 - w) * guided``: GrabCut (run on the network's ``prob``, or on the
    filtered one with ``grabcut_on_guided``) only decides where the filtered probability is within
    ``w`` of the threshold, so it sharpens unsure boundaries but cannot drop a piece the network is
    sure of (nor add one it is sure is not there). Steps with ``contrast_lo`` / ``contrast_hi`` scale
    ``w`` linearly from 0 to full by ``reference_contrast`` (:func:`boundary_contrast` of the
    reference's positive mask); without one (no reference) ``w`` stays full.
    """
    settings = dict(GUIDED_STEPS[name])
    grabcut = settings.pop("grabcut", None)
    weight = float(settings.pop("grabcut_weight", 0.0))
    on_guided = bool(settings.pop("grabcut_on_guided", 0.0))
    low, high = settings.pop("contrast_lo", None), settings.pop("contrast_hi", None)
    if low is not None and high is not None and reference_contrast is not None:
        weight *= float(np.clip((reference_contrast - float(low)) / (float(high) - float(low)), 0.0, 1.0))
    guided = guided_refine(image, prob, cell_px, **settings)
    if grabcut is None or weight == 0.0:
        return guided
    cut = grabcut_refine(image, guided if on_guided else prob, coords_xy, labels, **GRABCUT_STEPS[str(grabcut)])
    return (weight * cut + (1.0 - weight) * guided).astype(np.float32)
