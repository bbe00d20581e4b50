"""Reference perturbations: polygon masks and downscaling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from refcut.data.perturb import downscale_reference, polygonize_mask


def disk_with_hole() -> np.ndarray:
    m = np.zeros((120, 140), np.uint8)
    cv2.circle(m, (70, 60), 45, 1, -1)
    cv2.circle(m, (70, 60), 15, 0, -1)
    m[55:65, 65:75] = 1  # an island inside the hole
    m[3:6, 3:9] = 1
    return m.astype(bool)


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_polygonize_step_one_is_exact_and_coarser_steps_degrade():
    mask = disk_with_hole()
    assert np.array_equal(polygonize_mask(mask, 1), mask)
    ious = [iou(polygonize_mask(mask, s), mask) for s in (2, 8, 32)]
    assert all(0.6 < v < 1.0 for v in ious)
    assert ious[0] > ious[2]
    coarse = polygonize_mask(mask, 8)
    assert not coarse[60, 58]  # the hole stays a hole
    assert coarse[60, 70]      # and the island inside it stays
    assert not polygonize_mask(np.zeros((5, 5), bool), 4).any()


def test_polygonize_rejects_bad_step():
    for step in (0, -1, 1.5):
        with pytest.raises(ValueError):
            polygonize_mask(disk_with_hole(), step)


def test_downscale_reference():
    image = np.random.default_rng(0).integers(0, 255, (100, 60, 3), dtype=np.uint8)
    mask = np.zeros((100, 60), bool)
    mask[20:60, 10:50] = True
    small, (pos, neg) = downscale_reference(image, [mask, None], 0.25)
    assert small.shape == (25, 15, 3) and small.dtype == np.uint8
    assert pos.shape == (25, 15) and pos.dtype == bool and neg is None
    assert abs(pos.sum() - mask.sum() / 16) <= 15
    same, (m,) = downscale_reference(image, [mask], 1.0)
    assert np.array_equal(same, image) and np.array_equal(m, mask)
    for factor in (0, -0.5, 1.5):
        with pytest.raises(ValueError):
            downscale_reference(image, [mask], factor)
    with pytest.raises(ValueError):
        downscale_reference(image, [np.zeros((10, 10), bool)], 0.5)
