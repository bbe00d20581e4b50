"""Shared in-test fixtures for the trainer tests: a synthetic pair source and a tiny config."""

from __future__ import annotations

import numpy as np

from refcut.data.pairs import TrainingPair
from refcut.training.config import TrainConfig


def _image_with_box(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = (int(v) for v in rng.integers(40, 72, size=2))
    image = rng.integers(0, 80, size=(h, w, 3), dtype=np.uint8)
    y0, x0 = int(rng.integers(2, h // 2)), int(rng.integers(2, w // 2))
    part_a = np.zeros((h, w), bool)
    part_a[y0 : y0 + h // 4, x0 : x0 + w // 3] = True
    part_b = np.zeros((h, w), bool)
    part_b[y0 + h // 4 : y0 + h // 2, x0 : x0 + w // 3] = True
    image[part_a] = (200, 40, 40)
    image[part_b] = (40, 200, 40)
    return image, part_a, part_b


class FakePairSource:
    """Pairs of images with two coloured box 'parts'; counts the samples it drew."""

    def __init__(self, reference_prob: float = 0.8) -> None:
        self.reference_prob = reference_prob
        self.count = 0

    def sample(self, rng: np.random.Generator) -> TrainingPair:
        self.count += 1
        image, a, b = _image_with_box(rng)
        gt = a if rng.random() < 0.5 else a | b
        if rng.random() >= self.reference_prob:
            return TrainingPair(image, gt, None, None, None, f"t{self.count}", None)
        ref, ra, rb = _image_with_box(rng)
        positive = ra if gt is a else ra | rb
        negative = rb if gt is a else None
        return TrainingPair(image, gt, ref, positive, negative, f"t{self.count}", f"r{self.count}")


def tiny_config(**overrides) -> TrainConfig:
    """A tiny_test-model config that trains in seconds on CPU."""
    base = {
        "model.preset": "tiny_test",
        "model.init": "scratch",
        "steps": 4,
        "batch_size": 2,
        "data.max_initial_points": 4,
        "data.num_workers": 0,
        "device": "cpu",
        "precision": "fp32",
        "checkpoint_every": 2,
        "dump_every": 2,
        "log_every": 1,
        "optim.lr": 1e-3,
    }
    base.update(overrides)
    return TrainConfig().with_overrides({k: str(v) if not isinstance(v, str) else v for k, v in base.items()})
