"""Baselines driven by the same click protocol: oracle, empty, click-driven GrabCut, no-reference wrapper.

:func:`load_predictor` turns a method spec of the CLI (``grabcut``, ``oracle``, ``empty`` or
a model path) into a predictor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from refcut.predictor.base import InteractivePredictor, PredictionResult

BASELINE_METHODS: tuple[str, ...] = ("grabcut", "oracle", "empty")


def _result_from_mask(mask: np.ndarray) -> PredictionResult:
    mask = np.asarray(mask, dtype=bool)
    return PredictionResult(mask=mask, prob=mask.astype(np.float32))


class _ReferenceIgnoringPredictor:
    """Shared plumbing of the baselines: references are accepted and ignored."""

    def __init__(self) -> None:
        self._image_shape: tuple[int, int] | None = None

    def set_reference(
        self, image: np.ndarray, positive_mask: np.ndarray | None, negative_mask: np.ndarray | None = None
    ) -> None:
        """Accepted and ignored: this baseline does not use references."""

    def clear_reference(self) -> None:
        """Nothing to clear."""

    def set_image(self, image: np.ndarray) -> None:
        """Remember the target image (only its size for most baselines)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 image, got shape {image.shape}")
        self._image_shape = image.shape[:2]

    def _require_image(self) -> tuple[int, int]:
        if self._image_shape is None:
            raise RuntimeError("call set_image() before predict()")
        return self._image_shape


class EmptyPredictor(_ReferenceIgnoringPredictor):
    """Predicts nothing, whatever the clicks (NoC = max clicks everywhere)."""

    def predict(
        self, point_coords: np.ndarray, point_labels: np.ndarray, prev_mask: np.ndarray | None = None
    ) -> PredictionResult:
        return _result_from_mask(np.zeros(self._require_image(), dtype=bool))


class OraclePredictor(_ReferenceIgnoringPredictor):
    """Returns the ground truth (NoC = 1 everywhere). The protocol hands it over via ``set_ground_truth``."""

    def __init__(self) -> None:
        super().__init__()
        self._gt: np.ndarray | None = None

    def set_ground_truth(self, gt_mask: np.ndarray) -> None:
        """The mask to return for the next episode."""
        self._gt = np.asarray(gt_mask, dtype=bool).copy()

    def predict(
        self, point_coords: np.ndarray, point_labels: np.ndarray, prev_mask: np.ndarray | None = None
    ) -> PredictionResult:
        shape = self._require_image()
        if self._gt is None:
            raise RuntimeError("OraclePredictor needs set_ground_truth() before predict()")
        if self._gt.shape != shape:
            raise ValueError(f"ground truth {self._gt.shape} does not match the image {shape}")
        return _result_from_mask(self._gt)


class GrabCutPredictor(_ReferenceIgnoringPredictor):
    """Classic click-driven GrabCut (OpenCV), the non-learned baseline.

    Design, per prediction (all on a copy downscaled so its longer side is at most
    ``max_side`` px, the result upsampled bilinearly and thresholded at 0.5):

    - Seeds: a disk of radius ``seed_radius`` (1% of the longer side, at least 2 px) around
      every click, definite foreground for positive clicks, definite background for negative.
    - Initial mask, everything else: probable background, except the probable-foreground
      region, which is the previous prediction when there is one, plus a disk of radius
      ``region_radius`` (15% of the longer side) around every positive click that the
      previous prediction does not already cover (on the first click: just that disk), minus, for
      every negative click, the pixels within ``region_radius`` of it that are closer to it
      than to any positive click.
    - GrabCut runs only inside the box around the probable foreground and positive seeds,
      grown by half its size on each side (at least ``region_radius``); outside is
      background. This keeps the colour models local and the cost low.
    - ``iterations`` GrabCut iterations from that mask (``GC_INIT_WITH_MASK``); the RNG is
      re-seeded before each call so results do not depend on the order of episodes.
    - Only the connected components of the foreground that contain a positive click are
      kept (GrabCut otherwise grabs similarly coloured regions anywhere in the image).
    - No positive click yet → empty prediction.
    """

    def __init__(self, max_side: int = 256, iterations: int = 2, seed_fraction: float = 0.01,
                 region_fraction: float = 0.15) -> None:
        super().__init__()
        self.max_side = max_side
        self.iterations = iterations
        self.seed_fraction = seed_fraction
        self.region_fraction = region_fraction
        self._small: np.ndarray | None = None
        self._scale = 1.0

    def set_image(self, image: np.ndarray) -> None:
        super().set_image(image)
        height, width = image.shape[:2]
        self._scale = min(1.0, self.max_side / max(height, width))
        if self._scale < 1.0:
            size = (max(1, round(width * self._scale)), max(1, round(height * self._scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        else:
            small = image
        self._small = np.ascontiguousarray(small, dtype=np.uint8)

    def predict(
        self, point_coords: np.ndarray, point_labels: np.ndarray, prev_mask: np.ndarray | None = None
    ) -> PredictionResult:
        full_shape = self._require_image()
        assert self._small is not None
        coords = np.asarray(point_coords, dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(point_labels).reshape(-1)
        if not np.any(labels == 1):
            return _result_from_mask(np.zeros(full_shape, dtype=bool))
        small_h, small_w = self._small.shape[:2]
        # Pixel centres map as (x + 0.5) * scale - 0.5.
        small_xy = np.clip(np.round((coords + 0.5) * self._scale - 0.5), 0, [small_w - 1, small_h - 1]).astype(int)
        longer = max(small_h, small_w)
        seed_radius = max(2, round(self.seed_fraction * longer))
        region_radius = max(seed_radius + 1, round(self.region_fraction * longer))

        probable_fg = np.zeros((small_h, small_w), dtype=np.uint8)
        if prev_mask is not None:
            prev_small = cv2.resize(np.asarray(prev_mask, dtype=np.float32), (small_w, small_h),
                                    interpolation=cv2.INTER_LINEAR)
            probable_fg[prev_small > 0.49] = 1
        for (x, y), label in zip(small_xy, labels):
            if label == 1 and not probable_fg[y, x]:
                cv2.circle(probable_fg, (int(x), int(y)), region_radius, 1, thickness=-1)
        if np.any(labels != 1):
            # A negative click removes the pixels near it (within region_radius) that are closer
            # to it than to every positive click.
            grid_y, grid_x = np.mgrid[0:small_h, 0:small_w]
            positives = small_xy[labels == 1]
            to_positive = np.min([np.hypot(grid_x - px, grid_y - py) for px, py in positives], axis=0)
            for (x, y), label in zip(small_xy, labels):
                if label != 1:
                    to_negative = np.hypot(grid_x - x, grid_y - y)
                    probable_fg[(to_negative <= region_radius) & (to_negative < to_positive)] = 0

        gc_mask = np.full((small_h, small_w), cv2.GC_PR_BGD, dtype=np.uint8)
        gc_mask[probable_fg > 0] = cv2.GC_PR_FGD
        for (x, y), label in zip(small_xy, labels):
            value = cv2.GC_FGD if label == 1 else cv2.GC_BGD
            cv2.circle(gc_mask, (int(x), int(y)), seed_radius, int(value), thickness=-1)

        # Work inside the box around the probable foreground and the positive seeds, grown by half
        # its size on each side (at least region_radius): pixels outside it are background.
        ys, xs = np.nonzero(np.isin(gc_mask, (cv2.GC_FGD, cv2.GC_PR_FGD)))
        grow_y = max(region_radius, (ys.max() - ys.min() + 1) // 2)
        grow_x = max(region_radius, (xs.max() - xs.min() + 1) // 2)
        top, bottom = max(0, ys.min() - grow_y), min(small_h, ys.max() + grow_y + 1)
        left, right = max(0, xs.min() - grow_x), min(small_w, xs.max() + grow_x + 1)
        roi_mask = np.ascontiguousarray(gc_mask[top:bottom, left:right])
        if np.any(np.isin(roi_mask, (cv2.GC_BGD, cv2.GC_PR_BGD))):
            bgd_model = np.zeros((1, 65), np.float64)
            fgd_model = np.zeros((1, 65), np.float64)
            cv2.setRNGSeed(0)
            roi_image = np.ascontiguousarray(self._small[top:bottom, left:right])
            cv2.grabCut(roi_image, roi_mask, None, bgd_model, fgd_model, self.iterations, cv2.GC_INIT_WITH_MASK)
        foreground = np.zeros((small_h, small_w), np.uint8)
        foreground[top:bottom, left:right] = np.isin(roi_mask, (cv2.GC_FGD, cv2.GC_PR_FGD))

        _, components = cv2.connectedComponents(foreground, connectivity=8)
        keep = {int(components[y, x]) for (x, y), label in zip(small_xy, labels) if label == 1}
        keep.discard(0)
        foreground = np.isin(components, list(keep)).astype(np.float32)

        if self._scale < 1.0:
            prob = cv2.resize(foreground, (full_shape[1], full_shape[0]), interpolation=cv2.INTER_LINEAR)
        else:
            prob = foreground
        prob = (prob > 0.5).astype(np.float32)
        return PredictionResult(mask=prob > 0.5, prob=prob)


class NoReferencePredictor:
    """Wraps a predictor and ignores every reference: "the same network, no reference"."""

    def __init__(self, inner: InteractivePredictor) -> None:
        self.inner = inner

    def set_reference(
        self, image: np.ndarray, positive_mask: np.ndarray | None, negative_mask: np.ndarray | None = None
    ) -> None:
        """Ignored: the inner predictor's reference is cleared instead."""
        self.inner.clear_reference()

    def clear_reference(self) -> None:
        self.inner.clear_reference()

    def set_image(self, image: np.ndarray) -> None:
        self.inner.set_image(image)

    def predict(
        self, point_coords: np.ndarray, point_labels: np.ndarray, prev_mask: np.ndarray | None = None
    ) -> PredictionResult:
        return self.inner.predict(point_coords, point_labels, prev_mask=prev_mask)


_METHOD_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True)
class MethodSpec:
    """A ``--method`` value: ``[NAME=]SOURCE[@MODE+MODE...]``.

    ``SOURCE`` is a baseline name or a model path; ``NAME`` labels it in tables (default: the
    baseline name or the model folder's name); ``@none`` or ``@positive+both`` restricts the
    reference modes it runs (e.g. a no-reference baseline model only needs ``none``).
    """

    source: str
    name: str | None = None
    modes: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, text: str, known_modes: tuple[str, ...] = ()) -> "MethodSpec":
        """Split a command-line value; ``@`` and ``=`` only count when what they mark is valid."""
        if not text.strip():
            raise ValueError("empty --method value")
        modes = None
        head, at, tail = text.rpartition("@")
        if at and head and tail and all(mode in known_modes for mode in tail.split("+")):
            text, modes = head, tuple(dict.fromkeys(tail.split("+")))
        name, eq, source = text.partition("=")
        if eq and source and _METHOD_NAME.match(name):
            return cls(source=source, name=name, modes=modes)
        return cls(source=text, modes=modes)

    @property
    def spec(self) -> str:
        """``NAME=SOURCE`` (or ``SOURCE``): what configurations and records store as the method."""
        return f"{self.name}={self.source}" if self.name else self.source


def method_source(spec: str) -> str:
    """The baseline name or model path of a stored method spec (drops ``NAME=``)."""
    return MethodSpec.parse(spec).source


def method_label(spec: str) -> str:
    """Short display name: the given NAME, else baselines by name and models by their folder/file name."""
    parsed = MethodSpec.parse(spec)
    if parsed.name:
        return parsed.name
    return parsed.source if not is_model_method(spec) else Path(parsed.source).name or parsed.source


def is_model_method(spec: str) -> bool:
    """True for a model path (reference modes apply), False for the baselines."""
    return method_source(spec) not in BASELINE_METHODS


def load_predictor(spec: str, device: str = "cpu") -> InteractivePredictor:
    """``"grabcut"``, ``"oracle"``, ``"empty"`` or a model path/dir (→ ``RefCutPredictor.from_pretrained``)."""
    spec = method_source(spec)
    if spec == "grabcut":
        return GrabCutPredictor()
    if spec == "oracle":
        return OraclePredictor()
    if spec == "empty":
        return EmptyPredictor()
    if not Path(spec).exists():
        raise FileNotFoundError(
            f"method {spec!r} is neither a baseline ({', '.join(BASELINE_METHODS)}) nor an existing model path"
        )
    from refcut import RefCutPredictor  # lazy: the baselines need no torch

    return RefCutPredictor.from_pretrained(spec, device=device)
