"""The part adjacency rule used for "pair" episodes.

Two parts A and B are *adjacent* when A dilated by ``adjacency_px`` pixels with a square
``(2*adjacency_px+1)``-wide kernel overlaps B, i.e. some pixel of A and some pixel of B are at
Chebyshev distance <= ``adjacency_px`` (overlapping parts are adjacent; ``adjacency_px=0`` means
"overlap only"; 1 means "touch, diagonals included"). The rule is symmetric. Work is limited to
bounding-box crops, so a part is only dilated inside its own box grown by ``adjacency_px``.
"""

from __future__ import annotations

import cv2
import numpy as np


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def masks_touch(mask_a: np.ndarray, mask_b: np.ndarray, adjacency_px: int = 2) -> bool:
    """True when ``mask_a`` dilated by ``adjacency_px`` (square kernel) overlaps ``mask_b``."""
    return bool(adjacent_part_pairs({"a": mask_a, "b": mask_b}, adjacency_px))


def adjacent_part_pairs(masks: dict[str, np.ndarray], adjacency_px: int = 2) -> list[tuple[str, str]]:
    """All sorted name pairs ``(a, b)``, a < b, of parts adjacent under the module's rule."""
    if adjacency_px < 0:
        raise ValueError(f"adjacency_px must be >= 0, got {adjacency_px}")
    names = sorted(masks)
    boxes = {name: _bbox(np.asarray(masks[name], dtype=bool)) for name in names}
    names = [n for n in names if boxes[n] is not None]
    kernel = np.ones((2 * adjacency_px + 1, 2 * adjacency_px + 1), np.uint8)
    pairs: list[tuple[str, str]] = []
    for i, a in enumerate(names):
        y0, y1, x0, x1 = boxes[a]
        height, width = masks[a].shape[:2]
        wy0, wy1 = max(0, y0 - adjacency_px), min(height, y1 + adjacency_px)
        wx0, wx1 = max(0, x0 - adjacency_px), min(width, x1 + adjacency_px)
        grown = None
        for b in names[i + 1:]:
            by0, by1, bx0, bx1 = boxes[b]
            if by0 >= wy1 or by1 <= wy0 or bx0 >= wx1 or bx1 <= wx0:
                continue  # boxes too far apart to touch
            if grown is None:
                crop = np.asarray(masks[a][wy0:wy1, wx0:wx1], dtype=np.uint8)
                grown = cv2.dilate(crop, kernel) > 0 if adjacency_px > 0 else crop > 0
            if np.any(grown & np.asarray(masks[b][wy0:wy1, wx0:wx1], dtype=bool)):
                pairs.append((a, b))
    return pairs
