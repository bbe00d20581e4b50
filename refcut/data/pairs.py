"""Training pairs, sampled as in the paper.

Part datasets: pick a target object uniformly among all samples of all datasets; draw
k ~ U{1..N} over its N parts and k distinct parts uniformly; their union is the ground truth.
Pick the reference uniformly among the other objects of the same dataset and category, on a
different image, that have all k parts; its same parts form the positive mask, its remaining
parts the negative mask. With probability ``only_one_mask_prob`` keep only one of the two masks
(positive or negative, 50/50; the other becomes None). If no reference exists, draw again (new
object, new k), at most ``max_tries`` times, then return the last target without a reference
(counted in ``sampler.fallbacks``). With probability ``no_reference_prob`` the pair has no
reference at all. With ``drop_references`` every pair is drawn exactly as above (same targets,
same parts, same use of the ``rng``) and then loses its reference: a no-reference baseline trained
on those pairs sees the very targets the reference-guided model sees. Object-level datasets: the
target is the object mask and the reference another instance of the same category, positive
mask only. Every random choice comes from the ``rng`` passed to
:meth:`TrainingPairSampler.sample`, so a seed reproduces the pairs exactly.

``combination_weights`` replaces the paper's k ~ U{1..N} by a mixture of target kinds, the
combinations an annotator labels and the evaluation measures: ``single`` (one part), ``pair``
(two adjacent parts, the evaluation's adjacency rule; a single part when the object has none),
``whole`` (all parts) and ``random`` (the paper's rule). Empty (the default) is the paper's rule
alone, drawn exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from refcut.data.dataset import PartDataset
from refcut.data.episodes import union_of_parts


@dataclass
class TrainingPair:
    """One training example: target pixels + ground truth, and an optional reference."""

    target_image: np.ndarray
    gt_mask: np.ndarray
    reference_image: np.ndarray | None
    positive_mask: np.ndarray | None
    negative_mask: np.ndarray | None
    target_id: str
    reference_id: str | None


@dataclass(frozen=True)
class PairSpec:
    """What a draw chose, before any pixel is read (``keep``: both / positive / negative / none)."""

    dataset_index: int
    target_id: str
    target_parts: tuple[str, ...]
    reference_id: str | None
    positive_parts: tuple[str, ...]
    negative_parts: tuple[str, ...]
    keep: str


class TrainingPairSampler:
    """Draws :class:`TrainingPair` s from one or more datasets under the module's rule."""

    def __init__(
        self,
        datasets: list[PartDataset],
        seed: int = 0,
        only_one_mask_prob: float = 0.25,
        no_reference_prob: float = 0.0,
        max_tries: int = 20,
        drop_references: bool = False,
        combination_weights: Mapping[str, float] | None = None,
    ):
        if not datasets:
            raise ValueError("TrainingPairSampler needs at least one dataset")
        for name, p in (("only_one_mask_prob", only_one_mask_prob), ("no_reference_prob", no_reference_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {max_tries}")
        self.datasets = list(datasets)
        self.only_one_mask_prob = only_one_mask_prob
        self.no_reference_prob = no_reference_prob
        self.max_tries = max_tries
        self.drop_references = drop_references
        self._kinds, self._kind_probs = combination_mixture(combination_weights)
        self.rng = np.random.default_rng(seed)
        self.fallbacks = 0
        self._targets = [(d, i) for d, ds in enumerate(self.datasets) for i, s in enumerate(ds.samples) if s.part_names]
        if not self._targets:
            raise ValueError("TrainingPairSampler: the datasets hold no sample with parts")
        self._part_sets = [[frozenset(s.part_names) for s in ds.samples] for ds in self.datasets]
        self._by_category: list[dict[str | None, list[int]]] = []
        for ds in self.datasets:
            groups: dict[str | None, list[int]] = {}
            for i, s in enumerate(ds.samples):
                groups.setdefault(s.category, []).append(i)
            self._by_category.append(groups)

    def sample_spec(self, rng: np.random.Generator | None = None) -> PairSpec:
        """Draw one pair's ids and part names (no pixels read)."""
        spec = self._draw_spec(self.rng if rng is None else rng)
        if self.drop_references and spec.reference_id is not None:
            return PairSpec(spec.dataset_index, spec.target_id, spec.target_parts, None, (), (), "none")
        return spec

    def _draw_spec(self, rng: np.random.Generator) -> PairSpec:
        want_reference = not (self.no_reference_prob > 0 and rng.random() < self.no_reference_prob)
        for _ in range(self.max_tries):
            d, i = self._targets[int(rng.integers(len(self._targets)))]
            dataset = self.datasets[d]
            target = dataset.samples[i]
            chosen = self._draw_parts(dataset, target, rng)
            if not want_reference:
                return PairSpec(d, target.sample_id, chosen, None, (), (), "none")
            needed = frozenset(chosen)
            candidates = [
                j for j in self._by_category[d][target.category]
                if j != i and dataset.samples[j].image_path != target.image_path and needed <= self._part_sets[d][j]
            ]
            if not candidates:
                continue
            reference = dataset.samples[candidates[int(rng.integers(len(candidates)))]]
            if dataset.kind == "objects":
                return PairSpec(d, target.sample_id, chosen, reference.sample_id, chosen, (), "positive")
            negative = tuple(p for p in reference.part_names if p not in needed)
            keep = "both"
            if rng.random() < self.only_one_mask_prob:
                keep = "positive" if rng.random() < 0.5 else "negative"
            return PairSpec(d, target.sample_id, chosen, reference.sample_id, chosen, negative, keep)
        self.fallbacks += 1
        return PairSpec(d, target.sample_id, chosen, None, (), (), "none")

    def _draw_parts(self, dataset: PartDataset, target, rng: np.random.Generator) -> tuple[str, ...]:
        """The target's parts under the combination mixture (the paper's rule when there is none)."""
        parts = target.part_names
        kind = "random" if not self._kinds else self._kinds[int(rng.choice(len(self._kinds), p=self._kind_probs))]
        if kind == "pair":
            pairs = dataset.adjacent_pairs(target.sample_id) if len(parts) > 1 else []
            if pairs:
                return tuple(pairs[int(rng.integers(len(pairs)))])
            kind = "single"
        if kind == "single":
            return (parts[int(rng.integers(len(parts)))],)
        if kind == "whole":
            return tuple(sorted(parts))
        k = int(rng.integers(1, len(parts) + 1))
        return tuple(sorted(parts[j] for j in rng.choice(len(parts), size=k, replace=False)))

    def load(self, spec: PairSpec) -> TrainingPair:
        """Read the pixels of a :class:`PairSpec`."""
        dataset = self.datasets[spec.dataset_index]
        target = dataset.get(spec.target_id)
        image = target.load_image()
        gt = union_of_parts(target.load_part_masks(), spec.target_parts, image.shape[:2], target.sample_id)
        ref_image = positive = negative = None
        if spec.reference_id is not None:
            reference = dataset.get(spec.reference_id)
            ref_image = reference.load_image()
            masks = reference.load_part_masks()
            shape = ref_image.shape[:2]
            if spec.keep in ("both", "positive"):
                positive = union_of_parts(masks, spec.positive_parts, shape, reference.sample_id)
            if spec.keep in ("both", "negative"):
                negative = union_of_parts(masks, spec.negative_parts, shape, reference.sample_id)
        return TrainingPair(image, gt, ref_image, positive, negative, spec.target_id, spec.reference_id)

    def sample(self, rng: np.random.Generator | None = None) -> TrainingPair:
        """Draw and load one pair (uses the sampler's own seeded generator when ``rng`` is None)."""
        return self.load(self.sample_spec(rng))


COMBINATION_KINDS = ("random", "single", "pair", "whole")


def combination_mixture(weights: Mapping[str, float] | None) -> tuple[tuple[str, ...], np.ndarray | None]:
    """Kinds and probabilities of a ``combination_weights`` mapping (empty: the paper's rule alone)."""
    if not weights:
        return (), None
    unknown = sorted(set(weights) - set(COMBINATION_KINDS))
    if unknown:
        raise ValueError(f"combination_weights: unknown kind(s) {unknown}; use {list(COMBINATION_KINDS)}")
    if any(float(w) < 0 for w in weights.values()) or sum(float(w) for w in weights.values()) <= 0:
        raise ValueError(f"combination_weights must be non-negative with a positive sum, got {dict(weights)}")
    kinds = tuple(k for k in COMBINATION_KINDS if float(weights.get(k, 0)) > 0)
    probs = np.array([float(weights[k]) for k in kinds], dtype=np.float64)
    return kinds, probs / probs.sum()
