"""Training pair sampler: the paper's rule, seeded and measured over many draws."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from refcut.data import PartDataset, PartSample, TrainingPairSampler

H, W = 12, 16
PARTS = ("a", "b", "c", "d")


def part_masks(names) -> dict[str, np.ndarray]:
    masks = {}
    for i, name in enumerate(names):
        m = np.zeros((H, W), bool)
        m[:, i * 4:(i + 1) * 4] = True  # vertical stripes, one per part
        masks[name] = m
    return masks


def sample(sample_id, category, names, image=None) -> PartSample:
    masks = part_masks(names)
    return PartSample(sample_id, category, Path(image or sample_id.split("#")[0]), tuple(sorted(names)),
                      load_image=lambda: np.zeros((H, W, 3), np.uint8), load_part_masks=lambda: dict(masks))


def full_dataset(n=6) -> PartDataset:
    return PartDataset("full", "parts", [sample(f"{i:02d}.jpg#x", "x", PARTS) for i in range(n)])


def test_seeded_reproducibility():
    sampler = TrainingPairSampler([full_dataset()], seed=0)
    draws_1 = [sampler.sample_spec(np.random.default_rng(7)) for _ in range(1)]
    draws_2 = [sampler.sample_spec(np.random.default_rng(7)) for _ in range(1)]
    assert draws_1 == draws_2
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    seq_a = [sampler.sample_spec(rng_a) for _ in range(50)]
    seq_b = [sampler.sample_spec(rng_b) for _ in range(50)]
    assert seq_a == seq_b
    own_1 = [TrainingPairSampler([full_dataset()], seed=3).sample_spec() for _ in range(3)]
    own_2 = [TrainingPairSampler([full_dataset()], seed=3).sample_spec() for _ in range(3)]
    assert own_1 == own_2
    pair_1 = sampler.sample(np.random.default_rng(11))
    pair_2 = sampler.sample(np.random.default_rng(11))
    assert pair_1.target_id == pair_2.target_id and np.array_equal(pair_1.gt_mask, pair_2.gt_mask)


def test_k_of_n_is_uniform_and_masks_follow_the_rule():
    sampler = TrainingPairSampler([full_dataset()], only_one_mask_prob=0.0)
    rng = np.random.default_rng(0)
    specs = [sampler.sample_spec(rng) for _ in range(4000)]
    k_counts = Counter(len(s.target_parts) for s in specs)
    assert set(k_counts) == {1, 2, 3, 4}
    for k in range(1, 5):
        assert abs(k_counts[k] / 4000 - 0.25) < 0.03
    part_counts = Counter(p for s in specs for p in s.target_parts)
    assert max(part_counts.values()) / min(part_counts.values()) < 1.15  # every part equally likely
    for s in specs[:200]:
        assert s.reference_id != s.target_id and s.positive_parts == s.target_parts
        assert set(s.negative_parts) == set(PARTS) - set(s.target_parts)
    pair = sampler.load(specs[0])
    expected_gt = np.zeros((H, W), bool)
    for p in specs[0].target_parts:
        expected_gt |= part_masks(PARTS)[p]
    assert np.array_equal(pair.gt_mask, expected_gt) and np.array_equal(pair.positive_mask, expected_gt)
    assert np.array_equal(pair.negative_mask, ~expected_gt)


def test_only_one_mask_probability():
    sampler = TrainingPairSampler([full_dataset()], only_one_mask_prob=0.25)
    rng = np.random.default_rng(1)
    keeps = Counter(sampler.sample_spec(rng).keep for _ in range(6000))
    assert abs((keeps["positive"] + keeps["negative"]) / 6000 - 0.25) < 0.02
    assert abs(keeps["positive"] / 6000 - 0.125) < 0.015 and abs(keeps["negative"] / 6000 - 0.125) < 0.015
    specs = [sampler.sample_spec(rng) for _ in range(200)]
    spec = next(s for s in specs if s.keep == "positive")
    pair = sampler.load(spec)
    assert pair.positive_mask is not None and pair.negative_mask is None


def test_reference_has_all_parts_same_category_other_image():
    ds = PartDataset("mixed", "parts", [
        sample("01.jpg#x", "x", ("a", "b", "c")),
        sample("02.jpg#x", "x", ("a",)),
        sample("03.jpg#x", "x", ("a", "b")),
        sample("03.jpg#x2", "x", ("a", "b", "c"), image="03.jpg"),
        sample("04.jpg#y", "y", ("a", "b", "c")),
    ])
    sampler = TrainingPairSampler([ds], only_one_mask_prob=0.0)
    rng = np.random.default_rng(2)
    for _ in range(500):
        s = sampler.sample_spec(rng)
        target = ds.get(s.target_id)
        if s.reference_id is None:
            continue
        ref = ds.get(s.reference_id)
        assert ref.category == target.category and ref.image_path != target.image_path
        assert set(s.target_parts) <= set(ref.part_names)


def test_object_level_positive_only_and_no_reference_prob():
    objects = PartDataset("obj", "objects", [sample(f"cat{i:02d}_1.jpg#object", "cat", ("object",)) for i in range(3)])
    sampler = TrainingPairSampler([objects], only_one_mask_prob=1.0)
    rng = np.random.default_rng(4)
    for _ in range(50):
        pair = sampler.sample(rng)
        assert pair.reference_id is not None and pair.reference_id != pair.target_id
        assert pair.positive_mask is not None and pair.negative_mask is None
    never = TrainingPairSampler([full_dataset()], no_reference_prob=0.5)
    rng = np.random.default_rng(5)
    none_rate = np.mean([never.sample_spec(rng).reference_id is None for _ in range(2000)])
    assert abs(none_rate - 0.5) < 0.04


def test_fallback_without_reference_and_bad_arguments():
    lonely = PartDataset("one", "parts", [sample("01.jpg#x", "x", ("a", "b"))])
    sampler = TrainingPairSampler([lonely], max_tries=3)
    pair = sampler.sample(np.random.default_rng(0))
    assert pair.reference_id is None and pair.reference_image is None and sampler.fallbacks == 1
    with pytest.raises(ValueError):
        TrainingPairSampler([])
    with pytest.raises(ValueError):
        TrainingPairSampler([full_dataset()], only_one_mask_prob=1.5)


def test_two_datasets_references_stay_within_their_dataset():
    other = PartDataset("other", "parts", [sample(f"{i:02d}.jpg#x", "x", PARTS) for i in range(3)])
    sampler = TrainingPairSampler([full_dataset(), other])
    rng = np.random.default_rng(9)
    seen = set()
    for _ in range(300):
        s = sampler.sample_spec(rng)
        seen.add(s.dataset_index)
        ds = sampler.datasets[s.dataset_index]
        assert ds.get(s.reference_id) and ds.get(s.target_id)
    assert seen == {0, 1}


def test_drop_references_draws_the_same_targets_as_a_reference_run():
    # Samples with rare part sets make the reference run redraw; the baseline must redraw identically.
    ds = PartDataset("mixed", "parts", [sample("00.jpg#x", "x", PARTS), sample("01.jpg#x", "x", PARTS),
                                        sample("02.jpg#x", "x", ("a", "b")), sample("03.jpg#x", "x", ("e",))])
    with_reference = TrainingPairSampler([ds], no_reference_prob=0.1)
    baseline = TrainingPairSampler([ds], no_reference_prob=0.1, drop_references=True)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    specs_a = [with_reference.sample_spec(rng_a) for _ in range(300)]
    specs_b = [baseline.sample_spec(rng_b) for _ in range(300)]
    assert [(s.target_id, s.target_parts) for s in specs_a] == [(s.target_id, s.target_parts) for s in specs_b]
    assert all(s.reference_id is None and s.keep == "none" for s in specs_b)
    assert sum(s.reference_id is not None for s in specs_a) > 200
    assert rng_a.random() == rng_b.random()  # the same amount of randomness was used
    pair = baseline.sample(np.random.default_rng(8))
    assert pair.reference_image is None and pair.positive_mask is None and pair.negative_mask is None


def test_combination_mixture_draws_singles_adjacent_pairs_and_wholes():
    dataset = PartDataset("full", "parts", [sample(f"{i:02d}.jpg#x", "x", PARTS) for i in range(6)])
    weights = {"single": 0.5, "pair": 0.3, "whole": 0.2}
    sampler = TrainingPairSampler([dataset], only_one_mask_prob=0.0, combination_weights=weights)
    rng = np.random.default_rng(0)
    specs = [sampler.sample_spec(rng) for _ in range(3000)]
    kinds = Counter("single" if len(s.target_parts) == 1 else "whole" if len(s.target_parts) == 4 else
                    "pair" for s in specs)
    assert set(kinds) == {"single", "pair", "whole"}
    for kind, weight in weights.items():
        assert abs(kinds[kind] / 3000 - weight) < 0.03
    pairs = {s.target_parts for s in specs if len(s.target_parts) == 2}
    assert pairs == {("a", "b"), ("b", "c"), ("c", "d")}  # stripes: only neighbours touch
    for s in specs[:200]:
        assert s.positive_parts == s.target_parts and set(s.negative_parts) == set(PARTS) - set(s.target_parts)
    # an object without adjacent parts gets a single part where a pair was asked for
    apart_masks = {"a": np.zeros((H, W), bool), "c": np.zeros((H, W), bool)}
    apart_masks["a"][:, :3] = True
    apart_masks["c"][:, 10:] = True
    apart = PartDataset("apart", "parts", [
        PartSample(f"{i:02d}.jpg#x", "x", Path(f"{i:02d}.jpg"), ("a", "c"), load_image=lambda: np.zeros((H, W, 3), np.uint8),
                   load_part_masks=lambda: dict(apart_masks)) for i in range(4)])
    only_pairs = TrainingPairSampler([apart], combination_weights={"pair": 1.0})
    assert {only_pairs.sample_spec(rng).target_parts for _ in range(50)} == {("a",), ("c",)}
    # no mixture (None or empty) is the paper's rule, drawn exactly as before
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    plain, empty = TrainingPairSampler([full_dataset()]), TrainingPairSampler([full_dataset()], combination_weights={})
    assert [plain.sample_spec(rng_a) for _ in range(30)] == [empty.sample_spec(rng_b) for _ in range(30)]
    with pytest.raises(ValueError, match="unknown kind"):
        TrainingPairSampler([full_dataset()], combination_weights={"pairs": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        TrainingPairSampler([full_dataset()], combination_weights={"single": -1.0, "whole": 2.0})
