"""One episode of the standard click protocol: the automatic user clicks, the predictor answers.

The loop (RITM / SimpleClick ``evaluate_sample``, plus the reference): set the reference
once (or clear it), set the target image, then for up to ``max_clicks`` clicks: the
:class:`~refcut.clicker.Clicker` places the next click from the current boolean prediction,
the predictor gets all clicks so far and the previous probability map, the new prediction
is ``prob > threshold`` (0.49) and its IoU with the ground truth (ignored pixels excluded)
is recorded. The loop stops early only when ``target_iou`` is given and reached, so by
default every curve is ``max_clicks`` long (needed for mIoU@k).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from refcut.clicker import Click, Clicker
from refcut.predictor.base import InteractivePredictor

REFERENCE_MODES: tuple[str, ...] = ("none", "positive", "negative", "both")
PREDICTION_THRESHOLD = 0.49


@dataclass
class EpisodeData:
    """Everything one episode needs, already loaded: target image + ground truth, reference image + masks.

    Masks are HxW bool in the coordinates of their image. ``reference_image`` is None when
    the episode has no reference.
    """

    episode_id: str
    kind: str
    image: np.ndarray
    gt_mask: np.ndarray
    ignore_mask: np.ndarray | None = None
    reference_image: np.ndarray | None = None
    positive_mask: np.ndarray | None = None
    negative_mask: np.ndarray | None = None


@dataclass
class EpisodeResult:
    """IoU after every click, the clicks, and the wall time (reference + image + all clicks)."""

    ious: list[float]
    clicks: list[Click]
    seconds: float
    seconds_per_click: float = field(init=False)

    def __post_init__(self) -> None:
        self.seconds_per_click = self.seconds / len(self.ious) if self.ious else float("nan")


def iou(pred_mask: np.ndarray, gt_mask: np.ndarray, ignore_mask: np.ndarray | None = None) -> float:
    """Intersection over union of two boolean masks, pixels of ``ignore_mask`` excluded (1.0 if both empty)."""
    pred = np.asarray(pred_mask, dtype=bool)
    gt = np.asarray(gt_mask, dtype=bool)
    if ignore_mask is None:
        intersection = np.count_nonzero(pred & gt)
        union = np.count_nonzero(pred | gt)
    else:
        valid = ~np.asarray(ignore_mask, dtype=bool)
        intersection = np.count_nonzero(pred & gt & valid)
        union = np.count_nonzero((pred | gt) & valid)
    return float(intersection / union) if union else 1.0


def _non_empty(mask: np.ndarray | None) -> np.ndarray | None:
    if mask is None or not np.any(mask):
        return None
    return np.asarray(mask, dtype=bool)


def apply_reference(predictor: InteractivePredictor, data: EpisodeData, reference_mode: str) -> bool:
    """Give the predictor the reference the mode asks for; returns whether a reference was set.

    ``none`` clears it; ``positive`` / ``negative`` / ``both`` pass the matching masks (an
    empty mask is passed as None). When the episode has no reference image or every mask
    the mode asks for is empty, the reference is cleared.
    """
    if reference_mode not in REFERENCE_MODES:
        raise ValueError(f"unknown reference mode {reference_mode!r}; expected one of {REFERENCE_MODES}")
    positive = _non_empty(data.positive_mask) if reference_mode in ("positive", "both") else None
    negative = _non_empty(data.negative_mask) if reference_mode in ("negative", "both") else None
    if reference_mode == "none" or data.reference_image is None or (positive is None and negative is None):
        predictor.clear_reference()
        return False
    predictor.set_reference(data.reference_image, positive, negative)
    return True


@dataclass(frozen=True)
class ClickStep:
    """The state after one click of an episode: the clicks so far, the probability map, the mask and its IoU."""

    clicks: tuple[Click, ...]
    prob: np.ndarray
    pred: np.ndarray
    iou: float


def iter_episode(
    predictor: InteractivePredictor,
    data: EpisodeData,
    max_clicks: int = 20,
    threshold: float = PREDICTION_THRESHOLD,
    reference_mode: str = "both",
) -> Iterator[ClickStep]:
    """The click protocol of :func:`evaluate_episode`, one :class:`ClickStep` per click (stop iterating to stop early).

    The arguments are checked at once; the predictor is first called when the first step is asked for.
    """
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    gt = np.asarray(data.gt_mask, dtype=bool)
    if gt.shape != data.image.shape[:2]:
        raise ValueError(f"episode {data.episode_id}: gt mask {gt.shape} does not match image {data.image.shape[:2]}")
    if reference_mode not in REFERENCE_MODES:
        raise ValueError(f"unknown reference mode {reference_mode!r}; expected one of {REFERENCE_MODES}")
    return _steps(predictor, data, gt, max_clicks, threshold, reference_mode)


def _steps(
    predictor: InteractivePredictor, data: EpisodeData, gt: np.ndarray, max_clicks: int, threshold: float,
    reference_mode: str,
) -> Iterator[ClickStep]:
    set_ground_truth = getattr(predictor, "set_ground_truth", None)
    if callable(set_ground_truth):
        set_ground_truth(gt)
    apply_reference(predictor, data, reference_mode)
    predictor.set_image(data.image)
    clicker = Clicker(gt, data.ignore_mask)
    pred = np.zeros_like(gt)
    prev_prob: np.ndarray | None = None
    for _ in range(max_clicks):
        clicker.make_next_click(pred)
        coords, labels = clicker.coords_and_labels()
        result = predictor.predict(coords, labels, prev_mask=prev_prob)
        prev_prob = np.asarray(result.prob, dtype=np.float32)
        pred = prev_prob > threshold
        yield ClickStep(tuple(clicker.clicks), prev_prob, pred, iou(pred, gt, data.ignore_mask))


def evaluate_episode(
    predictor: InteractivePredictor,
    data: EpisodeData,
    max_clicks: int = 20,
    threshold: float = PREDICTION_THRESHOLD,
    target_iou: float | None = None,
    reference_mode: str = "both",
) -> EpisodeResult:
    """Run the click protocol on one episode (see the module doc); :func:`iter_episode` gives every step.

    Predictors that need the ground truth (the oracle baseline) expose
    ``set_ground_truth(mask)``; it is called before anything else.
    """
    start = time.perf_counter()
    ious: list[float] = []
    clicks: tuple[Click, ...] = ()
    for step in iter_episode(predictor, data, max_clicks, threshold, reference_mode):
        ious.append(step.iou)
        clicks = step.clicks
        if target_iou is not None and ious[-1] >= target_iou:
            break
    return EpisodeResult(ious=ious, clicks=list(clicks), seconds=time.perf_counter() - start)
