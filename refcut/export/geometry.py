"""Mask <-> polygon conversion shared by the polygon formats.

Coordinate conventions
----------------------
* :func:`mask_to_polygons` and :func:`polygons_to_mask` use *pixel-index* coordinates: the centre of
  pixel ``(row r, column c)`` is the point ``(x=c, y=r)``. This is what OpenCV (``findContours`` /
  ``fillPoly``), labelme (PIL ``ImageDraw.polygon``) and Ultralytics YOLO (``cv2.fillPoly``) use,
  so a polygon traced through boundary pixel centres rasterises back to the same pixels.
* COCO polygons are rasterised by pycocotools with *pixel-edge* coordinates: pixel ``(r, c)`` is the
  unit square ``[c, c+1] x [r, r+1]``. :func:`to_coco_polygon` moves a pixel-index polygon half a
  pixel outwards so pycocotools reproduces the boundary pixels instead of shaving them off.

Holes: polygon formats (COCO polygons, YOLO-seg, LabelMe) cannot represent holes. Every one of
their readers *unions* the polygons of an instance, so a hole ring would be filled anyway. We
therefore trace outer boundaries only (``RETR_EXTERNAL``): holes are filled in these formats. Use
COCO RLE or PNG to keep holes exactly.
"""

from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np


def _as_bool_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (HxW), got shape {mask.shape}")
    return mask if mask.dtype == bool else mask != 0


def polygon_area(points: np.ndarray) -> float:
    """Absolute area of a closed polygon given as (N, 2) x, y points (shoelace formula)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return 0.0
    return float(abs(cv2.contourArea(pts.astype(np.float32))))


def mask_to_polygons(mask: np.ndarray, tolerance: float = 1.0, min_area: float = 4.0) -> list[np.ndarray]:
    """Outer boundary polygons of a mask, one per connected component (8-connectivity).

    Returns (N, 2) float64 arrays of x, y pixel-index coordinates (see module doc), N >= 3.
    ``tolerance`` is the Douglas-Peucker distance in pixels (``cv2.approxPolyDP``; 0 keeps every
    boundary corner). Polygons whose area is below ``min_area`` px^2 (specks, 1-pixel-wide lines)
    are dropped, so a tiny mask can produce no polygon at all. Holes are not represented.
    """
    binary = _as_bool_mask(mask).astype(np.uint8)
    if not binary.any():
        return []
    method = cv2.CHAIN_APPROX_NONE if tolerance > 0 else cv2.CHAIN_APPROX_SIMPLE
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, method)
    polygons: list[np.ndarray] = []
    for contour in contours:
        if tolerance > 0:
            contour = cv2.approxPolyDP(contour, float(tolerance), True)
        points = contour.reshape(-1, 2).astype(np.float64)
        if len(points) < 3 or polygon_area(points) < min_area:
            continue
        polygons.append(points)
    # Deterministic order: top-most, then left-most component first.
    polygons.sort(key=lambda p: (float(p[:, 1].min()), float(p[:, 0].min())))
    return polygons


def polygons_to_mask(polygons: Iterable[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterise pixel-index polygons ((N, 2) x, y or flat [x1, y1, ...]) into an HxW bool mask (union)."""
    canvas = np.zeros((int(height), int(width)), dtype=np.uint8)
    for polygon in polygons:
        pts = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if len(pts) < 3:
            raise ValueError(f"a polygon needs at least 3 points, got {len(pts)}")
        # One call per polygon: fillPoly with several contours uses even-odd filling,
        # which would cut overlapping parts out instead of uniting them.
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    return canvas.astype(bool)


def to_coco_polygon(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Convert a pixel-index polygon to COCO pixel-edge coordinates, offset half a pixel outwards.

    The outward offset uses mitred vertex normals (clamped at sharp spikes); for axis-aligned
    boundaries the result traces the pixel edges exactly. Output is clipped to [0, W] x [0, H].
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) + 0.5
    keep = np.any(np.abs(pts - np.roll(pts, 1, axis=0)) > 1e-9, axis=1)
    pts = pts[keep]
    if len(pts) < 3:
        return np.clip(pts, 0, [width, height])
    x, y = pts[:, 0], pts[:, 1]
    signed_area = 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
    edges = np.roll(pts, -1, axis=0) - pts  # edge i goes from vertex i to vertex i+1
    lengths = np.linalg.norm(edges, axis=1, keepdims=True)
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1) / lengths
    if signed_area < 0:
        normals = -normals
    incoming = np.roll(normals, 1, axis=0)  # normal of the edge ending at vertex i
    outgoing = normals
    dot = np.sum(incoming * outgoing, axis=1, keepdims=True)
    miter = (incoming + outgoing) / np.maximum(1.0 + dot, 1e-6)
    miter = np.where(1.0 + dot < 1e-6, outgoing, miter)  # the boundary folds back on itself
    norms = np.linalg.norm(miter, axis=1, keepdims=True)
    max_len = 2.0  # in units of the offset; caps the spike at very acute vertices
    miter = np.where(norms > max_len, miter / np.maximum(norms, 1e-12) * max_len, miter)
    shifted = pts + 0.5 * miter
    return np.clip(shifted, 0, [width, height])
