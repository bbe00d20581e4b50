"""Training augmentations (numpy / OpenCV), applied to target and reference independently.

Target: base resize (see :class:`~refcut.training.config.DataConfig`), uniform random
resize in ``scale_range``, horizontal flip, zero-pad to the input size, random crop keeping
at least ``min_object_area`` GT pixels when possible, colour jitter. Reference: resize to
the input square (not aspect-preserving, like the predictor), flip, colour jitter.
Images come out as float32 ``3 x S x S`` in [0, 1], masks as float32 ``S x S``.
"""

from __future__ import annotations

import cv2
import numpy as np

from refcut.training.config import DataConfig


def color_jitter(image: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
    """SimpleClick's colour steps on a float32 HxWx3 image in [0, 255].

    With probability ``prob`` each: brightness/contrast (``img * (1 + c) + 255 * b``,
    ``b`` in [-0.25, 0.25], ``c`` in [-0.15, 0.4]) and a per-channel shift in [-10, 10].
    """
    if rng.random() < prob:
        brightness = rng.uniform(-0.25, 0.25)
        contrast = rng.uniform(-0.15, 0.4)
        image = image * (1.0 + contrast) + 255.0 * brightness
    if rng.random() < prob:
        image = image + rng.uniform(-10.0, 10.0, size=3).astype(np.float32)
    return np.clip(image, 0.0, 255.0)


def _to_chw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.transpose(2, 0, 1) / 255.0, dtype=np.float32)


def _resize(image: np.ndarray, width: int, height: int, mask: bool = False) -> np.ndarray:
    if mask:
        return cv2.resize(image.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    shrinking = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _base_size(height: int, width: int, size: int, mode: str) -> tuple[int, int]:
    if mode == "square":
        return size, size
    if mode == "short":
        scale = size / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    return height, width


def augment_target(
    image: np.ndarray, gt_mask: np.ndarray, size: int, rng: np.random.Generator, config: DataConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one target: returns ``(image 3 x size x size float32 in [0,1], gt size x size float32)``."""
    image = np.asarray(image)
    gt = np.asarray(gt_mask).astype(bool)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != gt.shape:
        raise ValueError(f"target image {image.shape} and mask {gt.shape} do not match (need HxWx3 and HxW)")
    height, width = _base_size(*gt.shape, size, config.base_resize)
    low, high = config.scale_range
    scale = rng.uniform(low, high)
    height, width = max(1, round(height * scale)), max(1, round(width * scale))
    image = _resize(image, width, height).astype(np.float32)
    gt = _resize(gt, width, height, mask=True)
    if rng.random() < config.flip_prob:
        image, gt = image[:, ::-1], gt[:, ::-1]

    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if pad_h or pad_w:
        top, left = pad_h // 2, pad_w // 2
        image = cv2.copyMakeBorder(image, top, pad_h - top, left, pad_w - left, cv2.BORDER_CONSTANT, value=0)
        gt = np.pad(gt, ((top, pad_h - top), (left, pad_w - left)))
    height, width = gt.shape
    y0, x0 = _choose_crop(gt, size, rng, config)
    image = image[y0 : y0 + size, x0 : x0 + size]
    gt = gt[y0 : y0 + size, x0 : x0 + size]
    image = color_jitter(np.ascontiguousarray(image), rng, config.color_jitter_prob)
    return _to_chw(image), gt.astype(np.float32)


def _choose_crop(gt: np.ndarray, size: int, rng: np.random.Generator, config: DataConfig) -> tuple[int, int]:
    """Top-left corner of a random crop; retries until it keeps enough GT, else centres on the GT."""
    height, width = gt.shape
    max_y, max_x = height - size, width - size
    if max_y == 0 and max_x == 0:
        return 0, 0
    need = min(config.min_object_area, int(gt.sum()))
    integral = cv2.integral(gt.astype(np.uint8))
    y0 = x0 = 0
    for _ in range(max(1, config.max_augment_tries)):
        y0, x0 = int(rng.integers(0, max_y + 1)), int(rng.integers(0, max_x + 1))
        kept = integral[y0 + size, x0 + size] - integral[y0, x0 + size] - integral[y0 + size, x0] + integral[y0, x0]
        if need == 0 or kept >= need:
            return y0, x0
    ys, xs = np.nonzero(gt)
    cy, cx = (int(ys.mean()), int(xs.mean())) if len(ys) else (height // 2, width // 2)
    return int(np.clip(cy - size // 2, 0, max_y)), int(np.clip(cx - size // 2, 0, max_x))


def augment_reference(
    image: np.ndarray,
    positive_mask: np.ndarray | None,
    negative_mask: np.ndarray | None,
    size: int,
    rng: np.random.Generator,
    config: DataConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augment one reference: ``(image 3 x size x size, positive size x size, negative size x size)``.

    Masks are area-resized to soft float32 maps (so thin parts survive); an absent mask is zeros.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"reference image must be HxWx3, got {image.shape}")
    resized = _resize(image, size, size).astype(np.float32)
    masks = []
    for mask in (positive_mask, negative_mask):
        if mask is None:
            masks.append(np.zeros((size, size), np.float32))
            continue
        mask = np.asarray(mask)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"reference mask {mask.shape} does not match the reference image {image.shape[:2]}")
        masks.append(cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA))
    if rng.random() < config.flip_prob:
        resized = resized[:, ::-1]
        masks = [m[:, ::-1] for m in masks]
    resized = color_jitter(np.ascontiguousarray(resized), rng, config.color_jitter_prob)
    return _to_chw(resized), np.ascontiguousarray(masks[0]), np.ascontiguousarray(masks[1])
