"""The interface every interactive predictor offers (RefCut, baselines, oracles)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class PredictionResult:
    """Output of one prediction step, in the coordinates of the image given to ``set_image``."""

    mask: np.ndarray
    """HxW bool: ``prob > threshold``."""
    prob: np.ndarray
    """HxW float32 probabilities in [0, 1]."""


@runtime_checkable
class InteractivePredictor(Protocol):
    """Anything evaluation, training helpers and the app can drive with clicks."""

    def set_reference(
        self, image: np.ndarray, positive_mask: np.ndarray | None, negative_mask: np.ndarray | None = None
    ) -> None: ...

    def clear_reference(self) -> None: ...

    def set_image(self, image: np.ndarray) -> None: ...

    def predict(
        self, point_coords: np.ndarray, point_labels: np.ndarray, prev_mask: np.ndarray | None = None
    ) -> PredictionResult: ...
