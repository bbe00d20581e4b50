"""Reference perturbations for the paper's ablations: coarse polygon masks and small references."""

from __future__ import annotations

import cv2
import numpy as np


def polygonize_mask(mask: np.ndarray, step: int) -> np.ndarray:
    """Degrade a mask to polygons keeping every ``step``-th boundary point of each contour.

    Contours come from ``cv2.findContours`` (all boundary pixels, full hierarchy); each is
    subsampled (points 0, step, 2*step, ...) and refilled, outer boundaries with 1 and holes
    with 0 in nesting order. ``step=1`` gives back the mask exactly.
    """
    if int(step) != step or step < 1:
        raise ValueError(f"polygon step must be an integer >= 1, got {step}")
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, np.uint8)
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return out.astype(bool)
    parents = hierarchy[0][:, 3]

    def depth(i: int) -> int:
        d = 0
        while parents[i] >= 0:
            i, d = parents[i], d + 1
        return d

    for i in sorted(range(len(contours)), key=depth):
        points = np.ascontiguousarray(contours[i][:: int(step)])
        if depth(i) % 2 == 0:
            cv2.fillPoly(out, [points], 1)
            cv2.polylines(out, [points], True, 1)
        else:  # a hole: clear inside, keep the object pixels that trace it
            cv2.fillPoly(out, [points], 0)
            cv2.polylines(out, [points], True, 1)
    return out.astype(bool)


def downscale_reference(
    image: np.ndarray, masks: list[np.ndarray | None], factor: float
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Shrink a reference image and its masks by ``factor`` (0 < factor <= 1; new side = round(side * factor)).

    The image uses area interpolation; each mask is area-averaged and thresholded at 0.5.
    ``None`` masks stay ``None``.
    """
    if not 0 < factor <= 1:
        raise ValueError(f"downscale factor must be in (0, 1], got {factor}")
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    out_masks: list[np.ndarray | None] = []
    for mask in masks:
        if mask is None:
            out_masks.append(None)
            continue
        if mask.shape[:2] != (height, width):
            raise ValueError(f"mask shape {mask.shape} differs from reference image shape {image.shape[:2]}")
        resized = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        out_masks.append(resized >= 0.5)
    return small, out_masks
