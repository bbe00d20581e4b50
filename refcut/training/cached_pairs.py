"""Training samples of the encode-once family, drawn from cached views (:mod:`refcut.training.view_cache`).

The pair rule is the paper's, through :meth:`refcut.data.TrainingPairSampler.sample_spec` (the
same targets, part subsets, references and 25% single-mask draws as the early-fusion trainer);
only the pixels differ: the target is one cached view of the target object (the full view with
probability ``data.full_view_prob``, else a crop that holds most of the target), the reference
a cached view of the reference object (the full view with probability ``data.reference_full_prob``).
Ground truth and reference masks come from the views' part label maps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from refcut.training.config import TrainConfig
from refcut.training.points import PAD_ROW, add_negative_click, hard_negative_click, training_points
from refcut.training.view_cache import CachedObject

MIN_CROP_COVERAGE = 0.8
"""A crop view serves a target when it holds at least this share of the target's pixels."""


def _target_area(obj: CachedObject, view: int, mask: np.ndarray) -> float:
    """Target area in source-image pixels, from a view's mask."""
    y0, y1, x0, x1 = obj.views[view].box
    return float(mask.sum()) * (y1 - y0 + 1) * (x1 - x0 + 1) / mask.size


def choose_target_view(obj: CachedObject, parts: tuple[str, ...], rng: np.random.Generator, full_prob: float,
                       min_area: int) -> tuple[int, np.ndarray]:
    """``(view index, S x S bool ground truth)``: the full view, or a crop holding most of the target."""
    full = obj.part_mask(0, parts)
    if rng.random() < full_prob or len(obj.views) == 1:
        return 0, full
    total = _target_area(obj, 0, full)
    candidates = []
    for view in range(1, len(obj.views)):
        mask = obj.part_mask(view, parts)
        if mask.sum() >= min_area and total > 0 and _target_area(obj, view, mask) >= MIN_CROP_COVERAGE * total:
            candidates.append((view, mask))
    if not candidates:
        return 0, full
    return candidates[int(rng.integers(len(candidates)))]


class CachedViewPairDataset(Dataset):
    """Sample ``index`` = one (target view, reference view) pair with initial clicks, from ``rng(seed, index)``."""

    def __init__(self, sampler, objects: dict[tuple[str, str], CachedObject], dataset_names: list[str],
                 config: TrainConfig, num_point_rows: int) -> None:
        self.sampler = sampler
        self.objects = objects
        self.names = dataset_names
        self.config = config
        self.rows = num_point_rows

    def __len__(self) -> int:
        return 2**62

    def _object(self, dataset_index: int, sample_id: str) -> CachedObject | None:
        return self.objects.get((self.names[dataset_index], sample_id))

    def __getitem__(self, index: int) -> dict[str, Any]:
        cfg, data = self.config, self.config.data
        rng = np.random.default_rng([cfg.seed, int(index)])
        for _ in range(50):
            spec = self.sampler.sample_spec(rng)
            target = self._object(spec.dataset_index, spec.target_id)
            if target is None:
                continue
            view, gt = choose_target_view(target, spec.target_parts, rng, data.full_view_prob, data.min_object_area)
            if gt.sum() >= data.min_object_area:
                break
        else:
            raise RuntimeError("the view cache holds no usable target: build it with `refcut cache-views`")
        points, first_click = training_points(gt, rng, data, self.rows)
        if data.hard_negative_prob > 0 and not first_click and rng.random() < data.hard_negative_prob:
            click = hard_negative_click(gt, target.features.tokens[view].float().numpy(), rng)
            if click is not None:
                add_negative_click(points, click, 2 * data.max_initial_points)
        reference = None if spec.reference_id is None or cfg.no_reference else self._object(spec.dataset_index, spec.reference_id)
        size = target.labels.shape[-1]
        positive = np.zeros((size, size), np.float32)
        negative = np.zeros((size, size), np.float32)
        if reference is not None:
            ref_view = 0 if rng.random() < data.reference_full_prob or len(reference.views) == 1 \
                else int(rng.integers(1, len(reference.views)))  # fmt: skip
            if spec.keep in ("both", "positive"):
                positive = reference.part_mask(ref_view, spec.positive_parts).astype(np.float32)
            if spec.keep in ("both", "negative"):
                negative = reference.part_mask(ref_view, spec.negative_parts).astype(np.float32)
            ref_tokens, ref_pixels = reference.features.tokens[ref_view], reference.pixels[ref_view]
        else:
            ref_tokens = torch.zeros_like(target.features.tokens[0])
            ref_pixels = np.zeros_like(target.pixels[0])
        if data.reference_only_prob > 0 and positive.any() and rng.random() < data.reference_only_prob:
            points[:] = PAD_ROW  # no click: the reference alone (no simulated clicks either)
            first_click = True
        as_chw = lambda pixels: torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float() / 255.0  # noqa: E731
        return {
            "index": int(index),
            "tokens": target.features.tokens[view],
            "edges4": target.features.edges4[view],
            "edges8": target.features.edges8[view],
            "image": as_chw(target.pixels[view]),
            "gt": torch.from_numpy(gt.astype(np.float32))[None],
            "points": torch.from_numpy(points),
            "first_click": first_click,
            "has_reference": reference is not None,
            "reference_tokens": ref_tokens,
            "reference_image": as_chw(ref_pixels),
            "positive_mask": torch.from_numpy(positive)[None],
            "negative_mask": torch.from_numpy(negative)[None],
            "target_id": spec.target_id,
            "reference_id": spec.reference_id if reference is not None else "",
        }
