"""Evaluation episodes: the paper's combination evaluation, as a deterministic, exportable list.

For every part-level sample (in ``sample_id`` order) the targets are, in this order:
  * ``single``: each part (sorted by name);
  * ``pair``:   each pair of *adjacent* parts (rule in :mod:`refcut.data.adjacency`, default 2 px);
  * ``whole``:  the union of all its parts (listed even when the object has a single part).
Object-level datasets give one ``object`` target per sample.

Reference rule: the reference of a target is the first sample after it in ``sample_id`` order
(wrapping around to the start) that is *valid*: same category (``None`` matches ``None``), a
different image file, and containing every part of the target combination. Its positive mask is
the union of those same parts, its negative mask the union of its remaining parts (object-level:
positive only). Without a valid reference the episode is still listed, with ``reference_id=None``
and a ``skipped_reason``; so is a sample whose masks could not be read for the adjacency test.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from refcut.data.dataset import PartDataset
from refcut.data.perturb import downscale_reference, polygonize_mask
from refcut.data.sample import Episode, PartSample

EPISODE_KINDS = ("single", "pair", "whole", "object")
EPISODE_FILE_FORMAT = "refcut_episodes"


class _ReferenceFinder:
    """Finds "the next valid sample" quickly via per-(category, part) sorted position lists."""

    def __init__(self, dataset: PartDataset):
        self.samples = dataset.samples
        self.part_sets = [frozenset(s.part_names) for s in self.samples]
        self.positions: dict[tuple[str | None, str], list[int]] = {}
        for i, sample in enumerate(self.samples):
            for part in sample.part_names:
                self.positions.setdefault((sample.category, part), []).append(i)

    def find(self, index: int, parts: tuple[str, ...]) -> int | None:
        target = self.samples[index]
        lists = [self.positions.get((target.category, p), []) for p in parts]
        shortest = min(lists, key=len)
        start = bisect.bisect_right(shortest, index)
        needed = frozenset(parts)
        for j in shortest[start:] + shortest[:start]:
            candidate = self.samples[j]
            if j != index and candidate.image_path != target.image_path and needed <= self.part_sets[j]:
                return j
        return None


def build_episodes(dataset: PartDataset, adjacency_px: int = 2) -> list[Episode]:
    """All evaluation episodes of ``dataset`` under the module's rules (deterministic order)."""
    finder = _ReferenceFinder(dataset)
    episodes: list[Episode] = []
    for index, sample in enumerate(dataset.samples):
        if dataset.kind == "objects":
            combos = [("object", tuple(sample.part_names))]
        else:
            combos = [("single", (part,)) for part in sample.part_names]
            try:
                pairs = dataset.adjacent_pairs(sample.sample_id, adjacency_px)
            except (OSError, ValueError) as exc:
                dataset.problems.append(f"{sample.sample_id}: part adjacency not computed: {exc}")
                episodes.extend(_with_target(episodes, sample, "pair", (), None, (), (), f"masks unreadable: {exc}"))
                pairs = []
            combos += [("pair", pair) for pair in pairs]
            combos.append(("whole", tuple(sample.part_names)))
        for kind, parts in combos:
            ref_index = finder.find(index, parts)
            if ref_index is None:
                shown = ", ".join(parts) if len(parts) <= 6 else f"{', '.join(parts[:6])}, ... ({len(parts)} parts)"
                reason = f"no other image of category {sample.category!r} has all of: {shown}"
                episodes.extend(_with_target(episodes, sample, kind, parts, None, (), (), reason))
                continue
            reference = dataset.samples[ref_index]
            positive = tuple(sorted(parts))
            negative = () if kind == "object" else tuple(p for p in reference.part_names if p not in parts)
            episodes.extend(_with_target(episodes, sample, kind, parts, reference.sample_id, positive, negative, None))
    return episodes


def _with_target(episodes, sample: PartSample, kind, parts, reference_id, positive, negative, reason) -> list[Episode]:
    suffix = "" if kind in ("whole", "object") else ":" + "+".join(parts)
    return [Episode(
        episode_id=f"{sample.sample_id}|{kind}{suffix}", kind=kind, target_id=sample.sample_id,
        target_parts=tuple(parts), reference_id=reference_id, positive_parts=tuple(positive),
        negative_parts=tuple(negative), skipped_reason=reason,
    )]


def summarize_episodes(episodes: list[Episode]) -> dict[str, dict[str, int]]:
    """{kind: {"total", "with_reference", "skipped"}} for every kind present, plus "all"."""
    summary: dict[str, dict[str, int]] = {}
    for episode in episodes:
        for key in (episode.kind, "all"):
            row = summary.setdefault(key, {"total": 0, "with_reference": 0, "skipped": 0})
            row["total"] += 1
            row["skipped" if episode.reference_id is None else "with_reference"] += 1
    return summary


def _episode_dicts(episodes: list[Episode]) -> list[dict]:
    return [asdict(e) for e in episodes]


def episode_list_hash(episodes: list[Episode]) -> str:
    """sha1 of the canonical json of the episodes: equal lists give equal hashes on any machine."""
    text = json.dumps(_episode_dicts(episodes), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def save_episodes(path: str | Path, episodes: list[Episode], meta: dict) -> None:
    """Write episodes + meta (+ their hash) as json."""
    payload = {
        "format": EPISODE_FILE_FORMAT, "version": 1, "meta": meta,
        "hash": episode_list_hash(episodes), "episodes": _episode_dicts(episodes),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1), encoding="utf-8")


def load_episodes(path: str | Path) -> tuple[list[Episode], dict]:
    """Read a file written by :func:`save_episodes`; raises ValueError if it is malformed or altered."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"episode file not found: {path}")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid json in episode file {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != EPISODE_FILE_FORMAT:
        raise ValueError(f"{path} is not a RefCut episode file (format != {EPISODE_FILE_FORMAT!r})")
    try:
        episodes = [
            Episode(**{**e, "target_parts": tuple(e["target_parts"]), "positive_parts": tuple(e["positive_parts"]),
                       "negative_parts": tuple(e["negative_parts"])})
            for e in payload["episodes"]
        ]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: malformed episode entry ({exc})") from exc
    if payload.get("hash") and payload["hash"] != episode_list_hash(episodes):
        raise ValueError(f"{path}: episode list does not match its stored hash (file edited?)")
    return episodes, dict(payload.get("meta", {}))


@dataclass
class EpisodeData:
    """Pixels of one episode, ready for a predictor."""

    episode: Episode
    target_image: np.ndarray
    gt_mask: np.ndarray
    ignore_mask: np.ndarray | None
    reference_image: np.ndarray | None
    positive_mask: np.ndarray | None
    negative_mask: np.ndarray | None


def union_of_parts(masks: dict[str, np.ndarray], parts: tuple[str, ...], shape, source: str) -> np.ndarray:
    """OR of the named part masks (all-False for no parts); KeyError-free: missing parts raise ValueError."""
    out = np.zeros(shape, dtype=bool)
    for part in parts:
        if part not in masks:
            raise ValueError(f"sample {source} has no part {part!r} (has {sorted(masks)})")
        out |= masks[part]
    return out


def load_episode(
    dataset: PartDataset,
    episode: Episode,
    reference_mode: Literal["none", "positive", "negative", "both"] = "both",
    polygon_step: int | None = None,
    reference_scale: float | None = None,
) -> EpisodeData:
    """Load the pixels of ``episode``. ``reference_mode`` chooses which reference masks to keep
    (``none`` drops the reference entirely). ``polygon_step`` polygonises the reference masks, then
    ``reference_scale`` downscales the reference image and masks (the two ablations)."""
    if reference_mode not in ("none", "positive", "negative", "both"):
        raise ValueError(f"reference_mode must be none/positive/negative/both, got {reference_mode!r}")
    target = dataset.get(episode.target_id)
    image = target.load_image()
    masks = target.load_part_masks()
    gt = union_of_parts(masks, episode.target_parts, image.shape[:2], target.sample_id)
    ignore = target.load_ignore_mask()
    ref_image = positive = negative = None
    if reference_mode != "none" and episode.reference_id is not None:
        reference = dataset.get(episode.reference_id)
        ref_image = reference.load_image()
        ref_masks = reference.load_part_masks()
        shape = ref_image.shape[:2]
        if reference_mode in ("positive", "both"):
            positive = union_of_parts(ref_masks, episode.positive_parts, shape, reference.sample_id)
        if reference_mode in ("negative", "both"):
            negative = union_of_parts(ref_masks, episode.negative_parts, shape, reference.sample_id)
        if polygon_step is not None:
            positive = None if positive is None else polygonize_mask(positive, polygon_step)
            negative = None if negative is None else polygonize_mask(negative, polygon_step)
        if reference_scale is not None:
            ref_image, (positive, negative) = downscale_reference(ref_image, [positive, negative], reference_scale)
    return EpisodeData(episode, image, gt, ignore, ref_image, positive, negative)
