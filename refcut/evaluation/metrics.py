"""Click-protocol metrics: NoC, NoF, mean IoU per click, IoU after one click, seconds per click.

Conventions (those of RITM / SimpleClick / GraCo ``compute_noc_metric``):

- NoC@t of one target is the 1-based index of the first click whose IoU is >= t, or
  ``max_clicks`` when the threshold is never reached. The dataset value is the mean.
- NoF@t ("``>=20@t``") counts targets whose NoC@t equals ``max_clicks``. Off-by-one quirk of
  the field, kept on purpose: a target that first reaches t exactly at the last click also
  counts as a failure.
- mIoU@k is the mean over targets of the IoU after click k, for k up to the shortest IoU
  curve (all curves are full length unless the run stopped early at a target IoU).
- The thresholds are the nominal 0.80 / 0.85 / 0.90. (The reference code builds them with
  ``np.arange(0.8, 0.951, 0.05)``, i.e. 0.8500000000000001 and 0.9000000000000001, so an IoU
  of exactly 0.85 or 0.90 does not count there; it counts here.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NOC_THRESHOLDS: tuple[float, ...] = (0.80, 0.85, 0.90)
NOF_THRESHOLDS: tuple[float, ...] = (0.85, 0.90)


def threshold_label(threshold: float) -> str:
    """``0.85`` → ``"85"``."""
    return f"{round(threshold * 100):d}"


def number_of_clicks(ious: Sequence[float], threshold: float, max_clicks: int = 20) -> int:
    """1-based index of the first click with IoU >= ``threshold``; ``max_clicks`` if never reached."""
    reached = np.asarray(ious, dtype=np.float64) >= threshold
    if reached.any():
        return int(np.argmax(reached)) + 1
    return int(max_clicks)


def noc_per_target(all_ious: Sequence[Sequence[float]], threshold: float, max_clicks: int = 20) -> np.ndarray:
    """NoC at ``threshold`` of every target, as an int array."""
    return np.array([number_of_clicks(ious, threshold, max_clicks) for ious in all_ious], dtype=np.int64)


def mean_iou_curve(all_ious: Sequence[Sequence[float]]) -> list[float]:
    """mIoU@k for k = 1..(length of the shortest curve)."""
    if not all_ious:
        return []
    shortest = min(len(ious) for ious in all_ious)
    stacked = np.array([list(ious)[:shortest] for ious in all_ious], dtype=np.float64)
    return [float(v) for v in stacked.mean(axis=0)]


def summarize(
    all_ious: Sequence[Sequence[float]],
    max_clicks: int = 20,
    total_seconds: float | None = None,
) -> dict:
    """All protocol metrics of one set of targets.

    Returns ``count``, ``NoC@80/85/90`` (mean), ``NoC@..._std``, ``NoF@85/90`` (counts),
    ``IoU&1`` (mean IoU after click 1), ``mIoU@k`` (list, k = 1..) and, when
    ``total_seconds`` is given, ``seconds_per_click`` = total time / total clicks.
    """
    all_ious = [list(ious) for ious in all_ious]
    if any(len(ious) == 0 for ious in all_ious):
        raise ValueError("every target needs at least one IoU value (one click)")
    result: dict = {"count": len(all_ious)}
    for thr in NOC_THRESHOLDS:
        nocs = noc_per_target(all_ious, thr, max_clicks)
        label = threshold_label(thr)
        result[f"NoC@{label}"] = float(nocs.mean()) if len(nocs) else float("nan")
        result[f"NoC@{label}_std"] = float(nocs.std()) if len(nocs) else float("nan")
    for thr in NOF_THRESHOLDS:
        nocs = noc_per_target(all_ious, thr, max_clicks)
        result[f"NoF@{threshold_label(thr)}"] = int((nocs == max_clicks).sum())
    curve = mean_iou_curve(all_ious)
    result["IoU&1"] = curve[0] if curve else float("nan")
    result["mIoU@k"] = curve
    if total_seconds is not None:
        total_clicks = sum(len(ious) for ious in all_ious)
        result["seconds_per_click"] = float(total_seconds / total_clicks) if total_clicks else float("nan")
    return result
