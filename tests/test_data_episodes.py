"""Adjacency rule, combination episodes, reference rule, export and episode loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from refcut.data import PartDataset, PartSample, build_episodes, episode_list_hash, load_episode, load_episodes, save_episodes
from refcut.data.adjacency import adjacent_part_pairs, masks_touch

H, W = 20, 30


def box(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def make_sample(sample_id, category, masks: dict, image_name=None, ignore=None) -> PartSample:
    image = np.full((H, W, 3), hash(sample_id) % 200, np.uint8)
    return PartSample(
        sample_id=sample_id, category=category, image_path=Path(image_name or sample_id.split("#")[0]),
        part_names=tuple(sorted(masks)), load_image=lambda: image.copy(),
        load_part_masks=lambda: {k: v.copy() for k, v in masks.items()}, load_ignore_mask=lambda: ignore,
    )


# ------------------------------------------------------------------ adjacency rule
def test_adjacency_rule_on_hand_made_masks():
    left = box(0, 10, 0, 10)           # columns 0..9
    gap2 = box(0, 10, 11, 20)          # starts at column 11: Chebyshev distance 2 from column 9
    gap3 = box(0, 10, 12, 20)          # distance 3
    overlap = box(5, 15, 5, 15)
    assert masks_touch(left, overlap, 0)  # overlapping parts are adjacent even at 0 px
    assert not masks_touch(left, gap2, 0) and not masks_touch(left, gap2, 1) and masks_touch(left, gap2, 2)
    assert not masks_touch(left, gap3, 2) and masks_touch(left, gap3, 3)
    diagonal = box(12, 15, 12, 15)      # corner (9,9) vs (12,12): Chebyshev distance 3, square kernel
    assert masks_touch(left, diagonal, 3) and not masks_touch(left, diagonal, 2)
    assert masks_touch(gap2, left, 2) == masks_touch(left, gap2, 2)  # symmetric
    assert not masks_touch(left, np.zeros((H, W), bool), 5)          # empty parts touch nothing
    pairs = adjacent_part_pairs({"c": gap3, "a": left, "b": gap2}, 2)
    assert pairs == [("a", "b"), ("b", "c")]
    with pytest.raises(ValueError):
        adjacent_part_pairs({"a": left}, -1)


def test_adjacency_matches_brute_force_on_random_masks():
    rng = np.random.default_rng(3)
    for _ in range(30):
        masks = {f"p{i}": rng.random((H, W)) > 0.985 for i in range(4)}
        px = int(rng.integers(0, 4))
        expected = []
        for a in sorted(masks):
            for b in sorted(masks):
                if a < b:
                    ya, xa = np.nonzero(masks[a])
                    yb, xb = np.nonzero(masks[b])
                    if ya.size and yb.size:
                        d = np.maximum(np.abs(ya[:, None] - yb[None]), np.abs(xa[:, None] - xb[None])).min()
                        if d <= px:
                            expected.append((a, b))
        assert adjacent_part_pairs(masks, px) == expected


# ------------------------------------------------------------------ episodes
def toy_dataset() -> PartDataset:
    """Car-like toy: hood touches door, wheel far away; samples cover the reference rule's cases."""
    hood, door, wheel, roof = box(0, 5, 0, 10), box(5, 10, 0, 10), box(15, 20, 20, 30), box(0, 3, 20, 30)
    return PartDataset("toy", "parts", [
        make_sample("a.jpg#car", "car", {"hood": hood, "door": door, "wheel": wheel}),
        make_sample("b.jpg#car", "car", {"hood": hood, "wheel": wheel, "roof": roof}),
        make_sample("c.jpg#bike", "bike", {"wheel": wheel}),
        make_sample("d.jpg#car", "car", {"door": door, "hood": hood}),
        make_sample("d.jpg#car2", "car", {"door": door, "hood": hood, "wheel": wheel}),  # same image as d.jpg#car
    ])


def by_id(episodes):
    return {e.episode_id: e for e in episodes}


def test_combination_episodes_and_reference_rule():
    episodes = build_episodes(toy_dataset(), adjacency_px=2)
    e = by_id(episodes)
    kinds = [x.kind for x in episodes if x.target_id == "a.jpg#car"]
    assert kinds == ["single", "single", "single", "pair", "whole"]
    # a: hood -> next valid after a is b (has hood); negative = b's other parts
    assert e["a.jpg#car|single:hood"].reference_id == "b.jpg#car"
    assert e["a.jpg#car|single:hood"].positive_parts == ("hood",)
    assert e["a.jpg#car|single:hood"].negative_parts == ("roof", "wheel")
    # a: door -> b lacks door, c is a bike -> d.jpg#car
    assert e["a.jpg#car|single:door"].reference_id == "d.jpg#car"
    assert e["a.jpg#car|pair:door+hood"].reference_id == "d.jpg#car"
    assert e["a.jpg#car|pair:door+hood"].negative_parts == ()
    # whole of a needs door+hood+wheel: only d.jpg#car2 has them
    assert e["a.jpg#car|whole"].reference_id == "d.jpg#car2"
    # d.jpg#car2 whole: a.jpg has all three (wrap-around); d.jpg#car is the same image and is never used
    assert e["d.jpg#car2|whole"].reference_id == "a.jpg#car"
    assert e["d.jpg#car|single:door"].reference_id == "a.jpg#car"  # skips d.jpg#car2 (same image), wraps
    # bike: the only bike -> skipped, still listed
    skipped = e["c.jpg#bike|single:wheel"]
    assert skipped.reference_id is None and "bike" in skipped.skipped_reason
    assert e["c.jpg#bike|whole"].reference_id is None
    # b: hood-roof are 11 px apart (columns 9 -> 20), roof-wheel 13 px, hood-wheel 11 px: no pair at 2 px
    assert [x.target_parts for x in episodes if x.target_id == "b.jpg#car" and x.kind == "pair"] == []
    assert e["b.jpg#car|single:roof"].reference_id is None  # no other car has a roof


def test_episode_counts_depend_on_adjacency_px():
    ds = toy_dataset()
    few = sum(x.kind == "pair" for x in build_episodes(ds, adjacency_px=2))
    many = sum(x.kind == "pair" for x in build_episodes(ds, adjacency_px=11))
    assert many > few


def test_object_episodes_positive_only():
    ds = PartDataset("obj", "objects", [
        make_sample("cat00_1.jpg#object", "cat", {"object": box(0, 5, 0, 5)}),
        make_sample("cat01_2.jpg#object", "cat", {"object": box(0, 5, 0, 5)}),
        make_sample("dog00_3.jpg#object", "dog", {"object": box(0, 5, 0, 5)}),
    ])
    episodes = build_episodes(ds)
    assert [(x.kind, x.reference_id) for x in episodes] == [
        ("object", "cat01_2.jpg#object"), ("object", "cat00_1.jpg#object"), ("object", None)]
    assert all(x.negative_parts == () for x in episodes) and episodes[0].positive_parts == ("object",)


def test_unreadable_masks_give_listed_skipped_pair():
    broken = PartSample("z.jpg#car", "car", Path("z.jpg"), ("door", "hood"), load_image=lambda: None,
                        load_part_masks=lambda: (_ for _ in ()).throw(ValueError("cannot read z.mat")))
    ds = PartDataset("toy", "parts", toy_dataset().samples + [broken])
    episodes = build_episodes(ds)
    bad = [x for x in episodes if x.target_id == "z.jpg#car" and x.kind == "pair"]
    assert len(bad) == 1 and bad[0].reference_id is None and "z.mat" in bad[0].skipped_reason
    assert any("z.mat" in p for p in ds.problems)


def test_episodes_deterministic_save_load_and_hash(tmp_path):
    first, second = build_episodes(toy_dataset()), build_episodes(toy_dataset())
    assert first == second and episode_list_hash(first) == episode_list_hash(second)
    path = tmp_path / "ep.json"
    save_episodes(path, first, {"dataset": "toy"})
    loaded, meta = load_episodes(path)
    assert loaded == first and meta == {"dataset": "toy"}
    assert episode_list_hash(first[:-1]) != episode_list_hash(first)
    payload = json.loads(path.read_text())
    payload["episodes"][0]["reference_id"] = "x"
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="hash"):
        load_episodes(path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_episodes(tmp_path / "nope.json")


def test_load_episode_modes_and_perturbations():
    ds = toy_dataset()
    episode = by_id(build_episodes(ds))["a.jpg#car|single:hood"]
    both = load_episode(ds, episode, "both")
    assert both.target_image.shape == (H, W, 3) and both.gt_mask.sum() == 50
    assert both.positive_mask.sum() == 50 and both.negative_mask.sum() == 80  # roof 30 + wheel 50
    assert load_episode(ds, episode, "positive").negative_mask is None
    only_neg = load_episode(ds, episode, "negative")
    assert only_neg.positive_mask is None and only_neg.negative_mask is not None
    none = load_episode(ds, episode, "none")
    assert none.reference_image is None and none.positive_mask is None and none.negative_mask is None
    small = load_episode(ds, episode, "both", polygon_step=3, reference_scale=0.5)
    assert small.reference_image.shape == (10, 15, 3) and small.positive_mask.shape == (10, 15)
    assert small.gt_mask.shape == (H, W)  # the target is never perturbed
    with pytest.raises(ValueError):
        load_episode(ds, episode, "positives")
    skipped = by_id(build_episodes(ds))["c.jpg#bike|single:wheel"]
    assert load_episode(ds, skipped, "both").reference_image is None
