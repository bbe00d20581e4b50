"""The click loop and the baselines: oracle NoC 1, empty NoC 20, GrabCut in between."""

from __future__ import annotations

import numpy as np
import pytest

from refcut.clicker import Clicker
from refcut.evaluation.baselines import (
    EmptyPredictor,
    GrabCutPredictor,
    NoReferencePredictor,
    OraclePredictor,
    load_predictor,
)
from refcut.evaluation.metrics import summarize
from refcut.evaluation.protocol import EpisodeData, evaluate_episode, iou, iter_episode
from refcut.predictor.base import InteractivePredictor, PredictionResult
from refcut.predictor.baselines import grabcut_refine
from refcut.weights.native import DEFAULT_MODEL_DIR


def shapes_episode(seed: int, size: int = 120) -> EpisodeData:
    """A two-part object on a noisy background: the target part and a neighbouring part of a similar colour."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size + 20, 3), 90, np.float64)
    colour = rng.integers(150, 230, 3).astype(np.float64)
    split = 55 + seed % 10
    image[25:95, 20:split] = colour  # target part
    image[25:95, split:120] = colour + 12  # neighbouring part, slightly brighter
    image += rng.normal(0, 10, image.shape)
    image = image.clip(0, 255).astype(np.uint8)
    gt = np.zeros(image.shape[:2], bool)
    gt[25:95, 20:split] = True
    return EpisodeData(episode_id=f"shape{seed}", kind="single", image=image, gt_mask=gt)


class RecordingPredictor:
    """Answers with a fixed probability map and records every call."""

    def __init__(self, prob: np.ndarray) -> None:
        self.prob = prob.astype(np.float32)
        self.calls: list[tuple] = []

    def set_reference(self, image, positive_mask, negative_mask=None):
        self.calls.append(("set_reference", image, positive_mask, negative_mask))

    def clear_reference(self):
        self.calls.append(("clear_reference",))

    def set_image(self, image):
        self.calls.append(("set_image", image.shape))

    def predict(self, point_coords, point_labels, prev_mask=None):
        self.calls.append(("predict", point_coords.copy(), point_labels.copy(), prev_mask))
        return PredictionResult(mask=self.prob > 0.49, prob=self.prob)


def test_baselines_implement_the_protocol():
    for predictor in (EmptyPredictor(), OraclePredictor(), GrabCutPredictor(), NoReferencePredictor(EmptyPredictor())):
        assert isinstance(predictor, InteractivePredictor)


def test_oracle_needs_one_click_and_empty_needs_all():
    episodes = [shapes_episode(seed) for seed in range(4)]
    oracle = [evaluate_episode(OraclePredictor(), ep, reference_mode="none").ious for ep in episodes]
    empty = [evaluate_episode(EmptyPredictor(), ep, reference_mode="none").ious for ep in episodes]
    assert all(len(ious) == 20 for ious in oracle + empty)  # full curves without a target IoU
    oracle_summary, empty_summary = summarize(oracle), summarize(empty)
    assert oracle_summary["NoC@80"] == oracle_summary["NoC@90"] == 1.0
    assert empty_summary["NoC@80"] == empty_summary["NoC@90"] == 20.0
    assert empty_summary["NoF@90"] == 4 and oracle_summary["NoF@90"] == 0


def test_grabcut_lies_between_oracle_and_empty():
    episodes = [shapes_episode(seed) for seed in range(4)]
    curves = [evaluate_episode(GrabCutPredictor(), ep, reference_mode="none", max_clicks=8).ious for ep in episodes]
    summary = summarize(curves, max_clicks=8)
    # similar-coloured neighbouring parts: GrabCut needs several clicks, but gets there
    assert 1.0 < summary["NoC@85"] < 8.0
    assert summary["IoU&1"] < 0.9
    assert summary["mIoU@k"][-1] > 0.85


def test_grabcut_is_deterministic_and_handles_no_positive_click():
    episode = shapes_episode(3)
    first = evaluate_episode(GrabCutPredictor(), episode, reference_mode="none", max_clicks=3)
    second = evaluate_episode(GrabCutPredictor(), episode, reference_mode="none", max_clicks=3)
    assert first.ious == second.ious
    predictor = GrabCutPredictor()
    predictor.set_image(episode.image)
    result = predictor.predict(np.array([[5, 5]]), np.array([0]))
    assert not result.mask.any() and result.prob.shape == episode.gt_mask.shape


def test_loop_passes_all_clicks_previous_probability_and_threshold():
    episode = shapes_episode(1)
    prob = np.full(episode.gt_mask.shape, 0.49, np.float32)  # 0.49 is NOT foreground (prob > 0.49)
    prob[episode.gt_mask] = 0.495
    predictor = RecordingPredictor(prob)
    result = evaluate_episode(predictor, episode, max_clicks=3, reference_mode="none")
    assert result.ious == [1.0, 1.0, 1.0]
    predicts = [c for c in predictor.calls if c[0] == "predict"]
    assert [len(c[1]) for c in predicts] == [1, 2, 3]  # every click so far
    assert predicts[0][3] is None and np.array_equal(predicts[1][3], prob)  # previous probabilities
    # the clicks are the clicker's: first positive at the target centre, then negatives at (0,0) ...
    clicker = Clicker(episode.gt_mask)
    expected_first = clicker.make_next_click(np.zeros_like(episode.gt_mask))
    assert predicts[0][1].tolist() == [[expected_first.x, expected_first.y]] and predicts[0][2].tolist() == [1]
    assert [c.is_positive for c in result.clicks] == [True, False, False]
    assert result.seconds > 0 and result.seconds_per_click == pytest.approx(result.seconds / 3)


def test_target_iou_stops_early():
    episode = shapes_episode(0)
    result = evaluate_episode(OraclePredictor(), episode, target_iou=0.9, reference_mode="none")
    assert result.ious == [1.0]


def test_reference_modes_pass_the_right_masks():
    episode = shapes_episode(2)
    ref_image = np.zeros((30, 40, 3), np.uint8)
    positive = np.zeros((30, 40), bool)
    positive[5:10, 5:10] = True
    negative = np.zeros((30, 40), bool)
    negative[20:25, 20:25] = True
    episode.reference_image, episode.positive_mask, episode.negative_mask = ref_image, positive, negative
    expected = {"positive": (True, False), "negative": (False, True), "both": (True, True)}
    for mode, (has_pos, has_neg) in expected.items():
        predictor = RecordingPredictor(episode.gt_mask.astype(np.float32))
        evaluate_episode(predictor, episode, max_clicks=1, reference_mode=mode)
        call = predictor.calls[0]
        assert call[0] == "set_reference" and call[1] is ref_image
        assert (call[2] is not None) == has_pos and (call[3] is not None) == has_neg
        assert [c[0] for c in predictor.calls].count("set_reference") == 1  # once per episode
    predictor = RecordingPredictor(episode.gt_mask.astype(np.float32))
    evaluate_episode(predictor, episode, max_clicks=1, reference_mode="none")
    assert predictor.calls[0] == ("clear_reference",)
    # mode negative with an empty negative mask: nothing to give, the reference is cleared
    episode.negative_mask = np.zeros_like(negative)
    predictor = RecordingPredictor(episode.gt_mask.astype(np.float32))
    evaluate_episode(predictor, episode, max_clicks=1, reference_mode="negative")
    assert predictor.calls[0] == ("clear_reference",)
    with pytest.raises(ValueError, match="reference mode"):
        evaluate_episode(predictor, episode, reference_mode="sideways")


def test_no_reference_wrapper_clears_instead():
    inner = RecordingPredictor(np.zeros((4, 4), np.float32))
    wrapped = NoReferencePredictor(inner)
    wrapped.set_reference(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), bool))
    assert inner.calls == [("clear_reference",)]


def test_iou_excludes_ignored_pixels():
    gt = np.zeros((4, 4), bool)
    gt[:2] = True  # 8 pixels
    pred = np.zeros_like(gt)
    pred[:3] = True  # 12 pixels: 8 shared, 4 false positives on row 2
    assert iou(pred, gt) == pytest.approx(8 / 12)
    ignore = np.zeros_like(gt)
    ignore[2] = True  # the false positives lie in the ignore band
    assert iou(pred, gt, ignore) == 1.0
    episode = EpisodeData("e", "object", np.zeros((4, 4, 3), np.uint8), gt, ignore_mask=ignore)
    assert evaluate_episode(RecordingPredictor(pred.astype(np.float32)), episode, max_clicks=1,
                            reference_mode="none").ious == [1.0]


def test_load_predictor_specs(tmp_path):
    assert isinstance(load_predictor("grabcut"), GrabCutPredictor)
    assert isinstance(load_predictor("oracle"), OraclePredictor)
    assert isinstance(load_predictor("empty"), EmptyPredictor)
    with pytest.raises(FileNotFoundError, match="neither a baseline"):
        load_predictor(str(tmp_path / "missing-model"))
    for suffix in ("grabcut", "grabcut-band", "grabcut-guarded", "grabcut-fine", "guided"):  # a model path + boundary step
        assert load_predictor(f"{DEFAULT_MODEL_DIR}+{suffix}").refine == suffix
    with pytest.raises(FileNotFoundError, match="neither a baseline"):
        load_predictor(f"{DEFAULT_MODEL_DIR}+unknown-step")


def test_band_limited_grabcut_moves_the_boundary_only_near_it():
    rng = np.random.default_rng(0)
    image = np.full((120, 160, 3), 60, np.uint8)
    image[30:90, 20:140] = (200, 40, 40)  # one red region; the network claims only its left part
    image = np.clip(image.astype(int) + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8)
    prob = np.zeros((120, 160), np.float32)
    prob[32:88, 20:70] = 1.0
    clicks, labels = np.array([[45, 60]]), np.array([1])
    free = grabcut_refine(image, prob, clicks, labels)
    banded = grabcut_refine(image, prob, clicks, labels, band_fraction=0.05)  # 8 px at 160 px
    assert free[60, 88] == 1  # unconstrained, GrabCut takes the same-coloured region around its box
    assert banded[60, 88] == 0 and banded[60, 40] == 1
    assert banded[30:90, 70:78].mean() > 0.5 and banded[:, 90:].sum() == 0  # grown within the band only
    assert banded[30, 40] == 1 and banded[29, 40] == 0  # and snapped to the colour edge inside it


def test_region_scaled_grabcut_keeps_a_small_object_at_full_resolution():
    rng = np.random.default_rng(0)
    image = np.full((960, 960, 3), 60, np.uint8)
    yy, xx = np.mgrid[:960, :960]
    target = (yy - 500) ** 2 / 21.0**2 + (xx - 430) ** 2 / 13.0**2 <= 1  # a small ellipse, 3% of the side
    image[target] = (200, 40, 40)
    image = np.clip(image.astype(int) + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8)
    prob = ((yy - 502) ** 2 / 19.0**2 + (xx - 432) ** 2 / 12.0**2 <= 1).astype(np.float32)  # the network, 2 px off
    clicks, labels = np.array([[430, 500], [900, 40]]), np.array([1, 0])  # the negative click lies outside the region

    def iou(mask):
        return (mask.astype(bool) & target).sum() / (mask.astype(bool) | target).sum()

    whole = grabcut_refine(image, prob, clicks, labels, band_fraction=0.03)  # works at 320 px: a 3x coarser grid
    fine = grabcut_refine(image, prob, clicks, labels, band_fraction=0.03, region_scale=True)
    assert iou(fine) > 0.95 and iou(fine) > iou(whole) + 0.03
    assert not fine[:, :300].any() and not fine[700:].any()  # pasted back in place, nothing outside the region
    assert not grabcut_refine(image, np.zeros_like(prob), clicks[1:], labels[1:], band_fraction=0.03,
                              region_scale=True).any()  # no mask, no positive click: nothing
    with pytest.raises(ValueError, match="region_scale needs band_fraction"):
        grabcut_refine(image, prob, clicks, labels, region_scale=True)


def test_grabcut_keeps_unclicked_pieces_of_the_network_mask_only_when_asked():
    image = np.full((80, 120, 3), 60, np.uint8)
    image[20:60, 10:40] = image[20:60, 80:110] = (200, 40, 40)  # a target in two pieces (two shoes)
    prob = np.zeros((80, 120), np.float32)
    prob[22:58, 12:38] = prob[22:58, 82:108] = 1.0
    clicks, labels = np.array([[25, 40]]), np.array([1])  # one click, on the left piece
    clicked = grabcut_refine(image, prob, clicks, labels, band_fraction=0.03)
    pieces = grabcut_refine(image, prob, clicks, labels, band_fraction=0.03, clicked_only=False)
    assert clicked[40, 25] == 1 and clicked[40, 95] == 0
    assert pieces[40, 25] == 1 and pieces[40, 95] == 1 and pieces[20:60, 80:110].mean() > 0.9


def test_guarded_grabcut_keeps_the_network_mask_when_grabcut_drops_most_of_it(monkeypatch):
    import refcut.predictor.baselines as baselines

    image = np.full((60, 80, 3), 50, np.uint8)
    prob = np.zeros((60, 80), np.float32)
    prob[10:50, 20:60] = 0.9
    clicks, labels = np.array([[40, 30]]), np.array([1])

    def only_the_click(image, gc_mask, *args, **kwargs):  # GrabCut overruling the network
        kept = np.zeros(gc_mask.shape, np.uint8)
        kept[28:33, 38:43] = 1
        return kept

    monkeypatch.setattr(baselines, "grabcut_in_roi", only_the_click)
    assert grabcut_refine(image, prob, clicks, labels, band_fraction=0.03).sum() == 25
    guarded = grabcut_refine(image, prob, clicks, labels, band_fraction=0.03, min_kept=0.5)
    assert np.array_equal(guarded, (prob > 0.5).astype(np.float32))
    monkeypatch.setattr(baselines, "grabcut_in_roi", lambda image, gc_mask, *a, **k: (gc_mask % 2).astype(np.uint8))
    sharpened = grabcut_refine(image, prob, clicks, labels, band_fraction=0.03, min_kept=0.5)
    assert sharpened.sum() == (prob > 0.5).sum()  # GrabCut kept the foreground labels: its result stands


def test_iter_episode_yields_every_click_like_evaluate_episode():
    episode = shapes_episode(4)
    steps = list(iter_episode(GrabCutPredictor(), episode, max_clicks=3, reference_mode="none"))
    result = evaluate_episode(GrabCutPredictor(), episode, max_clicks=3, reference_mode="none")
    assert [s.iou for s in steps] == result.ious
    assert list(steps[-1].clicks) == result.clicks and [len(s.clicks) for s in steps] == [1, 2, 3]
    for step in steps:
        assert np.array_equal(step.pred, step.prob > 0.49) and step.iou == iou(step.pred, episode.gt_mask)
    first = Clicker(episode.gt_mask).make_next_click(np.zeros_like(episode.gt_mask))
    assert steps[0].clicks == (first,)  # interior-most point first
    with pytest.raises(ValueError, match="max_clicks"):  # checked at the call, not at the first step
        iter_episode(GrabCutPredictor(), episode, max_clicks=0)
    with pytest.raises(ValueError, match="reference mode"):
        iter_episode(GrabCutPredictor(), episode, reference_mode="sideways")
