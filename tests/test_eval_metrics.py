"""NoC / NoF / mIoU@k / IoU&1 / seconds per click on hand-made IoU curves."""

from __future__ import annotations

import math

import pytest

from refcut.evaluation.metrics import mean_iou_curve, noc_per_target, number_of_clicks, summarize


def test_number_of_clicks_is_one_based_first_reach():
    ious = [0.5, 0.79, 0.81, 0.86, 0.84, 0.95]
    assert number_of_clicks(ious, 0.80) == 3
    assert number_of_clicks(ious, 0.85) == 4
    assert number_of_clicks(ious, 0.90) == 6
    assert number_of_clicks([0.9], 0.80) == 1
    assert number_of_clicks([0.1, 0.2], 0.80, max_clicks=20) == 20  # never reached: max clicks
    assert number_of_clicks([0.85], 0.85) == 1  # reaching exactly counts (>=)


def test_noc_and_nof_with_the_off_by_one_quirk():
    never = [0.3] * 20
    at_last = [0.3] * 19 + [0.95]  # reaches 0.90 exactly at click 20: still a "failure" for NoF
    quick = [0.86, 0.91] + [0.95] * 18
    result = summarize([never, at_last, quick], max_clicks=20)
    # NoC@85: 20, 20, 1 -> mean 41/3; NoC@90: 20, 20, 2 -> 42/3; NoC@80: 20, 20, 1
    assert result["NoC@80"] == pytest.approx(41 / 3)
    assert result["NoC@85"] == pytest.approx(41 / 3)
    assert result["NoC@90"] == pytest.approx(42 / 3)
    assert result["NoF@85"] == 2 and result["NoF@90"] == 2
    assert result["count"] == 3
    assert noc_per_target([never, at_last, quick], 0.90).tolist() == [20, 20, 2]


def test_miou_curve_and_iou_at_one():
    a = [0.2, 0.6, 0.9]
    b = [0.4, 0.86, 1.0]
    assert mean_iou_curve([a, b]) == pytest.approx([0.3, 0.73, 0.95])
    # early-stopped (shorter) curves truncate every curve to the shortest one
    assert mean_iou_curve([a, [0.6]]) == pytest.approx([0.4])
    result = summarize([a, b], max_clicks=3, total_seconds=3.0)
    assert result["IoU&1"] == pytest.approx(0.3)
    assert result["mIoU@k"] == pytest.approx([0.3, 0.73, 0.95])
    assert result["seconds_per_click"] == pytest.approx(3.0 / 6)  # 6 clicks in total
    # with max_clicks=3 both reach 0.90 only at their last click: NoF counts both; at 0.85 only a fails (b reaches it at click 2)
    assert result["NoF@90"] == 2 and result["NoC@90"] == pytest.approx(3.0)
    assert result["NoF@85"] == 1 and result["NoC@85"] == pytest.approx((3 + 2) / 2)


def test_empty_inputs():
    result = summarize([], max_clicks=20)
    assert result["count"] == 0 and math.isnan(result["NoC@85"]) and result["mIoU@k"] == []
    with pytest.raises(ValueError, match="at least one IoU"):
        summarize([[]])
