"""The automatic user: every rule of the field's clicker, on hand-made masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from refcut.clicker import Click, Clicker, sample_training_click


def brute_force_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each mask pixel to the nearest non-mask pixel, the 1-px ring outside the image included."""
    height, width = mask.shape
    outside = [(y, x) for y in range(-1, height + 1) for x in range(-1, width + 1)
               if not (0 <= y < height and 0 <= x < width) or not mask[y, x]]
    dist = np.zeros(mask.shape)
    for y, x in itertools.product(range(height), range(width)):
        if mask[y, x]:
            dist[y, x] = min(np.hypot(y - oy, x - ox) for oy, ox in outside)
    return dist


def first_argmax(dist: np.ndarray) -> tuple[int, int]:
    """(x, y) of the first pixel in row-major order attaining the maximum."""
    y, x = divmod(int(np.argmax(dist)), dist.shape[1])  # np.argmax returns the first maximum
    return x, y


def test_first_click_is_interior_most_point_of_a_square():
    gt = np.zeros((7, 9), bool)
    gt[1:6, 2:7] = True  # 5x5 square, rows 1..5, cols 2..6: its centre is (x=4, y=3)
    click = Clicker(gt).make_next_click(np.zeros_like(gt))
    assert click == Click(x=4, y=3, is_positive=True)


def test_first_click_matches_brute_force_on_an_irregular_shape():
    gt = np.zeros((12, 15), bool)
    gt[2:10, 1:6] = True
    gt[4:8, 6:14] = True
    gt[9, 10] = True
    expected = first_argmax(brute_force_distance(gt))
    click = Clicker(gt).make_next_click(np.zeros_like(gt))
    assert (click.x, click.y) == expected and click.is_positive


def test_image_border_counts_as_boundary():
    # The target fills rows 0..4 and columns 0..6 of a 5x12 image. With the border as a boundary the
    # distance is min(y+1, 5-y, x+1, 7-x): maximum 3 on row 2 at x = 2, 3, 4, so the click is (2, 2).
    # Without the padding the deepest pixels would be in column 0 or row 0.
    gt = np.zeros((5, 12), bool)
    gt[:, :7] = True
    click = Clicker(gt).make_next_click(np.zeros_like(gt))
    assert click == Click(x=2, y=2, is_positive=True)


def test_tie_gives_a_negative_click_at_the_false_positive_centre():
    gt = np.zeros((9, 15), bool)
    gt[2:5, 2:5] = True  # 3x3 missed block: max distance 2
    pred = np.zeros_like(gt)
    pred[4:7, 9:12] = True  # 3x3 false-positive block: max distance 2 as well
    click = Clicker(gt).make_next_click(pred)
    assert click == Click(x=10, y=5, is_positive=False)


def test_larger_false_negative_region_gives_positive_click():
    gt = np.zeros((12, 20), bool)
    gt[1:10, 1:10] = True  # 9x9 target, predicted only on its top-left 3x3 corner
    pred = np.zeros_like(gt)
    pred[1:4, 1:4] = True
    pred[5:8, 14:17] = True  # 3x3 false positive, max distance 2
    fn = gt & ~pred
    click = Clicker(gt).make_next_click(pred)
    assert click.is_positive
    assert (click.x, click.y) == first_argmax(brute_force_distance(fn))


def test_already_clicked_pixels_are_excluded():
    gt = np.zeros((7, 9), bool)
    gt[1:6, 2:7] = True
    clicker = Clicker(gt)
    empty = np.zeros_like(gt)
    first = clicker.make_next_click(empty)
    second = clicker.make_next_click(empty)
    dist = brute_force_distance(gt)
    dist[first.y, first.x] = 0
    assert (first.x, first.y) == (4, 3)
    assert (second.x, second.y) == first_argmax(dist) == (3, 2)
    assert second.is_positive
    assert clicker.clicks == [first, second]


def test_ignored_pixels_are_never_errors():
    gt = np.zeros((7, 13), bool)
    gt[1:6, 1:12] = True  # 5x11 target ...
    ignore = np.zeros_like(gt)
    ignore[:, :6] = True  # ... whose left part (cols 1..5) is ignored: valid part is cols 6..11
    valid_fn = gt & ~ignore
    click = Clicker(gt, ignore).make_next_click(np.zeros_like(gt))
    assert (click.x, click.y) == first_argmax(brute_force_distance(valid_fn))
    assert click.x >= 6
    # A false positive entirely inside the ignore band is not an error either.
    pred = gt.copy()
    pred[0:7, 0] = True
    clicker = Clicker(gt, ignore)
    assert clicker.make_next_click(pred) == Click(x=0, y=0, is_positive=False)  # perfect on valid pixels


def test_perfect_prediction_gives_negative_click_at_origin():
    gt = np.zeros((6, 6), bool)
    gt[2:4, 2:4] = True
    click = Clicker(gt).make_next_click(gt.copy())
    assert click == Click(x=0, y=0, is_positive=False)


def test_coords_and_labels_in_click_order_and_reset():
    gt = np.zeros((9, 15), bool)
    gt[2:5, 2:5] = True
    pred = np.zeros_like(gt)
    pred[4:7, 9:12] = True
    clicker = Clicker(gt)
    a = clicker.make_next_click(pred)  # negative (tie)
    b = clicker.make_next_click(np.zeros_like(gt))  # positive
    coords, labels = clicker.coords_and_labels()
    assert coords.tolist() == [[a.x, a.y], [b.x, b.y]]
    assert labels.tolist() == [0, 1]
    assert coords.shape == (2, 2) and labels.shape == (2,)
    clicker.reset()
    assert clicker.clicks == []
    assert clicker.coords_and_labels()[0].shape == (0, 2)
    assert clicker.make_next_click(pred) == a  # the clicked-pixel memory is cleared too


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="2-D"):
        Clicker(np.zeros((3, 3, 3), bool))
    with pytest.raises(ValueError, match="shape"):
        Clicker(np.zeros((3, 3), bool)).make_next_click(np.zeros((4, 3), bool))
    with pytest.raises(ValueError, match="ignore_mask"):
        Clicker(np.zeros((3, 3), bool), np.zeros((2, 2), bool))


def test_training_click_is_deep_inside_the_larger_error():
    gt = np.zeros((20, 30), bool)
    gt[2:18, 2:18] = True  # 16x16 missed square: max distance 8
    pred = np.zeros_like(gt)
    pred[5:8, 22:25] = True  # small false positive: max distance 2
    fn_dist = brute_force_distance(gt)
    rng = np.random.default_rng(0)
    clicks = [sample_training_click(pred, gt, rng) for _ in range(200)]
    assert all(c.is_positive for c in clicks)
    assert all(fn_dist[c.y, c.x] > fn_dist.max() / 2 for c in clicks)
    assert len({(c.x, c.y) for c in clicks}) > 10  # random, not always the centre
    again = [sample_training_click(pred, gt, np.random.default_rng(0)) for _ in range(1)]
    assert again[0] == clicks[0]  # reproducible with the same seed


def test_training_click_negative_and_none():
    gt = np.zeros((10, 20), bool)
    gt[1:4, 1:4] = True
    pred = gt.copy()
    pred[2:9, 10:18] = True  # big false positive
    click = sample_training_click(pred, gt, np.random.default_rng(1))
    assert not click.is_positive and pred[click.y, click.x] and not gt[click.y, click.x]
    assert sample_training_click(gt, gt, np.random.default_rng(1)) is None
