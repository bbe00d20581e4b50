"""Training augmentations: geometry, ranges, independence of target and reference."""

from __future__ import annotations

import numpy as np
import pytest

from refcut.training.augment import augment_reference, augment_target
from refcut.training.config import DataConfig


def _scene(h=48, w=40):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), bool)
    mask[10:20, 5:15] = True
    return image, mask


def test_identity_settings_give_flipped_input():
    image, mask = _scene(32, 32)
    config = DataConfig(base_resize="none", scale_range=[1.0, 1.0], flip_prob=1.0, color_jitter_prob=0.0)
    out, gt = augment_target(image, mask, 32, np.random.default_rng(0), config)
    np.testing.assert_allclose(out, image[:, ::-1].transpose(2, 0, 1) / 255.0, atol=1e-6)
    np.testing.assert_array_equal(gt, mask[:, ::-1])


def test_pad_and_crop_to_size_keeps_object():
    image, mask = _scene()
    rng = np.random.default_rng(3)
    for base in ("square", "short", "none"):
        for _ in range(20):
            out, gt = augment_target(image, mask, 64, rng, DataConfig(base_resize=base))
            assert out.shape == (3, 64, 64) and gt.shape == (64, 64)
            assert out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0
            assert gt.sum() >= 16


def test_scale_range_is_respected():
    image, mask = _scene(40, 40)
    config = DataConfig(base_resize="none", scale_range=[0.75, 1.4], flip_prob=0.0, color_jitter_prob=0.0)
    areas = [augment_target(image, mask, 96, np.random.default_rng(s), config)[1].sum() for s in range(30)]
    assert 100 * 0.75**2 * 0.8 <= min(areas) and max(areas) <= 100 * 1.4**2 * 1.2
    assert max(areas) > 1.5 * min(areas)


def test_reference_resized_to_square_with_soft_masks():
    image, mask = _scene(30, 50)
    out, pos, neg = augment_reference(image, mask, None, 64, np.random.default_rng(0), DataConfig(flip_prob=0.0))
    assert out.shape == (3, 64, 64) and pos.shape == neg.shape == (64, 64)
    assert neg.max() == 0 and 0 < pos.max() <= 1
    assert pos.sum() == pytest.approx(mask.sum() * (64 * 64) / (30 * 50), rel=0.05)
    with pytest.raises(ValueError):
        augment_reference(image, mask[:10], None, 64, np.random.default_rng(0), DataConfig())


def test_colour_jitter_changes_pixels_only_sometimes():
    image, mask = _scene(32, 32)
    config = DataConfig(base_resize="none", scale_range=[1.0, 1.0], flip_prob=0.0)
    changed = [
        not np.allclose(augment_target(image, mask, 32, np.random.default_rng(s), config)[0],
                        image.transpose(2, 0, 1) / 255.0, atol=1e-6)
        for s in range(40)
    ]
    assert 0 < sum(changed) < 40


def test_bad_input_raises():
    image, mask = _scene()
    with pytest.raises(ValueError):
        augment_target(image, mask[:5], 32, np.random.default_rng(0), DataConfig())
