"""Invertible geometry of the predictor: zoom-in crops and coordinate maps.

Boxes are ``(y0, y1, x0, x1)`` with inclusive ends, in image pixels. A crop is
resized to the network's square input (not aspect-preserving) with
``align_corners=True`` and a point ``(y, x)`` maps to
``(S·(y − y0)/(y1 − y0 + 1), S·(x − x0)/(x1 − x0 + 1))`` — SimpleClick's convention.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

Box = tuple[int, int, int, int]

OBJECT_CROP_MIN_SIZE = 200
"""The smallest side in pixels of a crop around an object: the training cache's object and part
views and the predictor's ``reference_crop``."""


@dataclass(frozen=True)
class ZoomInSettings:
    """SimpleClick's evaluation zoom-in (``skip_clicks=-1``): the first click sees the whole image."""

    enabled: bool = True
    expansion_ratio: float = 1.4
    min_crop_size: int = 200
    recompute_iou: float = 0.5
    mask_threshold: float = 0.5


def as_zoom_in_settings(value: bool | ZoomInSettings | dict) -> ZoomInSettings:
    """``True`` / ``False``, settings, or a dict of their fields (a model's ``config.json``) -> settings."""
    if isinstance(value, ZoomInSettings):
        return value
    if isinstance(value, dict):
        known = {f.name for f in fields(ZoomInSettings)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"zoom_in: unknown field(s) {unknown}; known: {sorted(known)}")
        return ZoomInSettings(**value)
    if isinstance(value, bool):
        return ZoomInSettings(enabled=value)
    raise TypeError(f"zoom_in must be a bool, ZoomInSettings or dict, got {type(value).__name__}")


def full_box(height: int, width: int) -> Box:
    """The box covering the whole image."""
    return (0, height - 1, 0, width - 1)


def mask_box(mask: np.ndarray) -> Box | None:
    """The tight inclusive box of a HxW bool mask, or None when it is empty."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(rows):
        return None
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def expand_box(box: Box, ratio: float, min_size: int, height: int, width: int) -> Box:
    """Scale ``box`` about its centre by ``ratio``, make each side at least ``min_size``, clamp to the image."""
    y0, y1, x0, x1 = box
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    half_h = max((y1 - y0 + 1) * ratio, min_size) / 2
    half_w = max((x1 - x0 + 1) * ratio, min_size) / 2
    ny0, ny1 = int(round(cy - half_h)), int(round(cy + half_h))
    nx0, nx1 = int(round(cx - half_w)), int(round(cx + half_w))
    return (max(0, ny0), min(height - 1, ny1), max(0, nx0), min(width - 1, nx1))


def box_iou(a: Box, b: Box) -> float:
    """IoU of two inclusive boxes."""
    inter_h = min(a[1], b[1]) - max(a[0], b[0]) + 1
    inter_w = min(a[3], b[3]) - max(a[2], b[2]) + 1
    if inter_h <= 0 or inter_w <= 0:
        return 0.0
    inter = inter_h * inter_w
    area = lambda r: (r[1] - r[0] + 1) * (r[3] - r[2] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def zoom_in_box(
    prev_prob: np.ndarray | None,
    positive_yx: np.ndarray,
    stored: Box | None,
    settings: ZoomInSettings,
) -> Box | None:
    """The crop for the next prediction, or None for the whole image.

    Candidate = bbox of ``prev_prob > 0.5`` and the positive clicks, expanded. The
    stored box is kept unless a positive click falls outside it or its IoU with the
    candidate drops below ``recompute_iou``.
    """
    if not settings.enabled or prev_prob is None:
        return None
    fg = prev_prob > settings.mask_threshold
    if not fg.any():
        return None
    height, width = prev_prob.shape
    y0, y1, x0, x1 = mask_box(fg)
    ys = np.concatenate([[y0, y1], positive_yx[:, 0]]) if len(positive_yx) else np.array([y0, y1])
    xs = np.concatenate([[x0, x1], positive_yx[:, 1]]) if len(positive_yx) else np.array([x0, x1])
    candidate = expand_box(
        (int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())),
        settings.expansion_ratio,
        settings.min_crop_size,
        height,
        width,
    )
    if stored is not None:
        y0, y1, x0, x1 = stored
        inside = all(y0 <= y <= y1 and x0 <= x <= x1 for y, x in positive_yx)
        if inside and box_iou(candidate, stored) >= settings.recompute_iou:
            return stored
    return candidate


def crop_resize(tensor: torch.Tensor, box: Box, size: int) -> torch.Tensor:
    """Crop ``B x C x H x W`` to ``box`` and resize to ``size x size`` (bilinear, align_corners=True)."""
    y0, y1, x0, x1 = box
    crop = tensor[..., y0 : y1 + 1, x0 : x1 + 1]
    if crop.shape[-2:] == (size, size):
        return crop
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=True)


def view_resize(tensor: torch.Tensor, box: Box, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Crop ``B x C x H x W`` to ``box`` and resize to ``size x size`` as the encode-once family's views are made.

    Bilinear with antialiasing (``align_corners=False``) for images, ``mode="nearest"`` for label maps.
    """
    y0, y1, x0, x1 = box
    crop = tensor[..., y0 : y1 + 1, x0 : x1 + 1]
    if crop.shape[-2:] == (size, size):
        return crop
    if mode == "nearest":
        return F.interpolate(crop, size=(size, size), mode="nearest")
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def points_to_network(points_yx: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Image ``(y, x)`` -> network-input coordinates inside the crop ``box``."""
    y0, y1, x0, x1 = box
    scale = np.array([size / (y1 - y0 + 1), size / (x1 - x0 + 1)])
    return (points_yx - np.array([y0, x0])) * scale


def paste_back(prob: torch.Tensor, box: Box, height: int, width: int) -> torch.Tensor:
    """Resize a ``S x S`` map to ``box`` and paste it into a zero ``H x W`` canvas."""
    y0, y1, x0, x1 = box
    resized = F.interpolate(prob[None, None], size=(y1 - y0 + 1, x1 - x0 + 1), mode="bilinear", align_corners=True)[0, 0]
    if (y0, y1, x0, x1) == full_box(height, width):
        return resized
    canvas = prob.new_zeros(height, width)
    canvas[y0 : y1 + 1, x0 : x1 + 1] = resized
    return canvas
