"""The guided-filter boundary step (refcut.predictor.guided) and its use by the predictor."""

import cv2
import numpy as np
import pytest

from refcut.predictor.baselines import GRABCUT_STEPS
from refcut.predictor.guided import GUIDED_STEPS, boundary_contrast, guided_filter, guided_refine, guided_step
from refcut.predictor.predictor import REFINEMENTS, RefCutPredictor


def two_tone(height=80, width=120, edge=50):
    """A dark / bright image split at column ``edge``, a little noise."""
    rng = np.random.default_rng(0)
    image = np.full((height, width, 3), 40, np.uint8)
    image[:, edge:] = (220, 200, 60)
    return np.clip(image.astype(int) + rng.integers(-4, 5, image.shape), 0, 255).astype(np.uint8)


def test_on_a_flat_guide_the_filter_is_the_window_mean():
    guide = np.full((40, 50, 3), 0.5, np.float32)
    source = np.random.default_rng(1).random((40, 50)).astype(np.float32)
    mean = cv2.blur(cv2.blur(source, (7, 7), borderType=cv2.BORDER_REFLECT), (7, 7), borderType=cv2.BORDER_REFLECT)
    np.testing.assert_allclose(guided_filter(guide, source, 3, 1e-3), mean, atol=1e-4)


def test_a_soft_boundary_a_few_pixels_off_snaps_to_the_image_edge():
    image = two_tone()  # the edge at column 50
    network = np.zeros((80, 120), np.float32)
    network[:, 53:] = 1.0
    network = cv2.GaussianBlur(network, (0, 0), 3)  # a coarse network's soft boundary, 3 px off
    refined = guided_refine(image, network, cell_px=6.0)
    assert ((network > 0.5).sum(axis=1) == 67).all()
    assert ((refined > 0.5).sum(axis=1) == 70).all()  # columns 50..119
    assert refined[:, 50].min() - refined[:, 49].max() > 0.4  # a sharp step at the edge
    assert refined.dtype == np.float32 and 0.0 <= refined.min() and refined.max() <= 1.0


def test_the_fast_filter_is_close_to_the_full_one():
    image = two_tone().astype(np.float32) / 255.0
    source = cv2.GaussianBlur((np.arange(120)[None].repeat(80, 0) > 50).astype(np.float32), (0, 0), 5)
    full = guided_filter(image, source, 8, 1e-3)
    fast = guided_filter(image, source, 8, 1e-3, subsample=2)
    assert np.abs(full - fast).mean() < 0.02


def test_refine_keeps_every_piece_and_leaves_the_rest_untouched():
    image = np.full((100, 160, 3), 30, np.uint8)
    image[20:40, 20:40] = 230
    image[60:80, 110:130] = 230  # two bright squares the network found, far apart
    prob = np.zeros((100, 160), np.float32)
    prob[18:42, 18:42] = 0.8
    prob[58:82, 108:132] = 0.8
    refined = guided_refine(image, prob, cell_px=2.0)
    assert refined[30, 30] > 0.5 and refined[70, 120] > 0.5
    assert refined[19, 19] < 0.5  # the soft margin outside the square drops
    assert refined[:, 60:90].max() == 0.0  # nothing appears between the pieces
    assert not guided_refine(image, np.zeros_like(prob), cell_px=2.0).any()


def test_refine_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="differ in size"):
        guided_refine(np.zeros((10, 12, 3), np.uint8), np.zeros((12, 10), np.float32), cell_px=2.0)
    with pytest.raises(ValueError, match="HxWx3"):
        guided_filter(np.zeros((10, 12), np.float32), np.zeros((10, 12), np.float32), 2, 1e-3)


def test_predictor_refines_with_the_guided_step_and_feeds_its_own_probability_back(tiny_model, rng, monkeypatch):
    assert set(GUIDED_STEPS) <= set(REFINEMENTS)
    predictor = RefCutPredictor(tiny_model, refine="guided")
    seen = []
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    predictor.set_image(image)
    first = predictor.predict(np.array([[40, 30]]), np.array([1]))
    assert first.prob.shape == (64, 96) and 0.0 <= first.prob.min() and first.prob.max() <= 1.0
    raw = predictor._last_raw
    assert first.prob is predictor._last_refined and raw is not first.prob and not np.array_equal(raw, first.prob)
    monkeypatch.setattr("refcut.predictor.predictor._as_prev", lambda prev, shape: seen.append(prev) or prev)
    predictor.predict(np.array([[40, 30], [10, 10]]), np.array([1, 0]), prev_mask=first.prob)
    assert seen == [raw]  # the network got its own (unrefined) probability back


@pytest.mark.parametrize("cut_value", [0.0, 1.0])
def test_the_vote_lets_grabcut_decide_only_where_the_network_is_unsure(monkeypatch, cut_value):
    image = np.full((60, 60, 3), 128, np.uint8)  # a flat guide: the filter only smooths
    prob = np.zeros((60, 60), np.float32)
    prob[10:50, 5:20] = 0.9  # sure
    prob[10:50, 25:40] = 0.45  # unsure
    calls = []
    monkeypatch.setattr("refcut.predictor.guided.grabcut_refine",
                        lambda image, p, coords, labels, **kw: calls.append(kw) or np.full_like(p, cut_value))
    refined = guided_step("guided-grabcut", image, prob, np.array([[10, 30]]), np.array([1]), cell_px=1.0)
    assert calls == [GRABCUT_STEPS["grabcut-fine"]]
    assert refined[30, 12] > 0.49  # GrabCut cannot drop the sure piece
    assert (refined[30, 32] > 0.49) == bool(cut_value)  # it decides the unsure one
    assert not (refined[:, 50:] > 0.49).any()  # nor add where the network is sure of the background


def square_on(background, square=(200, 40, 40), size=200):
    """A ``size`` x ``size`` image of ``background`` with a square of colour ``square`` in its middle, and the square's mask."""
    image = np.full((size, size, 3), background, np.uint8)
    mask = np.zeros((size, size), bool)
    mask[60:140, 50:150] = True
    image[mask] = square
    return image, mask


def test_boundary_contrast_is_high_on_a_colour_edge_and_low_on_the_same_colour():
    on_blue = boundary_contrast(*square_on((40, 40, 200)))
    on_red = boundary_contrast(*square_on((200, 40, 40)))
    on_dark_red = boundary_contrast(*square_on((170, 40, 40)))
    assert on_red is not None and on_red < 1.0
    assert on_red < on_dark_red < on_blue and on_blue > 50
    image, mask = square_on((0, 0, 0))
    assert boundary_contrast(image, np.zeros_like(mask)) is None and boundary_contrast(image, np.ones_like(mask)) is None
    with pytest.raises(ValueError, match="differ in size"):
        boundary_contrast(image, mask[:-1])


@pytest.mark.parametrize("contrast, grabcut_used", [(None, True), (5.0, False), (30.0, True)])
def test_the_adaptive_vote_drops_grabcut_when_the_reference_boundary_is_no_colour_edge(monkeypatch, contrast,
                                                                                       grabcut_used):
    image = np.full((60, 60, 3), 128, np.uint8)
    prob = np.zeros((60, 60), np.float32)
    prob[10:50, 25:40] = 0.45  # unsure: only GrabCut (here: "all foreground") could make it foreground
    monkeypatch.setattr("refcut.predictor.guided.grabcut_refine", lambda image, p, coords, labels, **kw: np.ones_like(p))
    refined = guided_step("guided-grabcut-adaptive", image, prob, np.array([[30, 30]]), np.array([1]), cell_px=1.0,
                          reference_contrast=contrast)
    assert (refined[30, 32] > 0.49) == grabcut_used


def test_the_predictor_measures_the_reference_boundary_for_the_adaptive_step(tiny_model):
    predictor = RefCutPredictor(tiny_model, refine="guided-grabcut-adaptive")
    image, mask = square_on((40, 40, 200))
    predictor.set_reference(image, mask, ~mask)
    assert predictor._reference_contrast == pytest.approx(boundary_contrast(image, mask))
    predictor.clear_reference()
    assert predictor._reference_contrast is None
