"""A dataset = a sorted list of :class:`PartSample`, plus :func:`open_dataset` which picks the loader.

Split rule (deterministic, machine-independent): an image is *held out* when
``int(sha1(image file stem).hexdigest(), 16) % 5 == 0`` (about 20% of images); every object of an
image follows its image. ``"train"`` is the rest, ``"all"`` everything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from refcut.data.adjacency import adjacent_part_pairs
from refcut.data.io import is_heldout_image
from refcut.data.sample import PartSample

SPLITS = ("train", "heldout", "all")
FORMATS = ("parts_folder", "coco_parts", "partimagenet_png", "pascal_part", "ccp", "object_folder")


@dataclass
class PartDataset:
    """A list of :class:`PartSample` sorted by ``sample_id``; ``problems`` lists bad files that were skipped."""

    name: str
    kind: Literal["parts", "objects"]
    samples: list[PartSample]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    root: Path | None = None
    format: str | None = None
    _adjacency_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("parts", "objects"):
            raise ValueError(f"dataset kind must be 'parts' or 'objects', got {self.kind!r}")
        self.samples = sorted(self.samples, key=lambda s: s.sample_id)
        self._index = {s.sample_id: i for i, s in enumerate(self.samples)}
        if len(self._index) != len(self.samples):
            seen: set[str] = set()
            dupes = sorted({s.sample_id for s in self.samples if s.sample_id in seen or seen.add(s.sample_id)})
            raise ValueError(f"dataset {self.name}: duplicate sample ids {dupes[:5]}")

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):
        return iter(self.samples)

    def index_of(self, sample_id: str) -> int:
        """Position of ``sample_id`` in :attr:`samples`."""
        try:
            return self._index[sample_id]
        except KeyError:
            raise KeyError(f"no sample {sample_id!r} in dataset {self.name}") from None

    def get(self, sample_id: str) -> PartSample:
        """The sample with this id (KeyError naming it otherwise)."""
        return self.samples[self.index_of(sample_id)]

    def split(self, which: Literal["train", "heldout", "all"]) -> "PartDataset":
        """The samples of the train / held-out / all images (see the module docstring for the rule)."""
        if which not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {which!r}")
        if which == "all":
            samples = list(self.samples)
        else:
            want_heldout = which == "heldout"
            samples = [s for s in self.samples if is_heldout_image(s.image_path) == want_heldout]
        return PartDataset(
            name=self.name, kind=self.kind, samples=samples, problems=self.problems, notes=self.notes,
            root=self.root, format=self.format, _adjacency_cache=self._adjacency_cache,
        )

    def adjacent_pairs(self, sample_id: str, adjacency_px: int = 2) -> list[tuple[str, str]]:
        """Adjacent part pairs of one sample (rule in :mod:`refcut.data.adjacency`), cached in memory."""
        key = (sample_id, adjacency_px)
        if key not in self._adjacency_cache:
            sample = self.get(sample_id)
            if len(sample.part_names) < 2:
                pairs: list[tuple[str, str]] = []
            else:
                pairs = adjacent_part_pairs(sample.load_part_masks(), adjacency_px)
            self._adjacency_cache[key] = tuple(pairs)
        return list(self._adjacency_cache[key])

    def categories(self) -> dict[str | None, list[PartSample]]:
        """Samples grouped by category, in sample order."""
        groups: dict[str | None, list[PartSample]] = {}
        for sample in self.samples:
            groups.setdefault(sample.category, []).append(sample)
        return groups


def detect_format(path: str | Path) -> tuple[str, Path]:
    """Guess the format of a dataset folder (or json file); returns (format, folder or file to load).

    Looks at ``path`` itself, then at its immediate sub-folders (e.g. ``car-parts/trainingset``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset path not found: {path}")
    if path.is_file():
        if path.suffix.lower() == ".json":
            if path.name == "refcut_parts.json":
                return "parts_folder", path.parent
            return "coco_parts", path
        raise ValueError(f"cannot tell the dataset format of file {path}: pass a folder or a COCO .json file")
    found = _detect_here(path)
    if found:
        return found, path
    children = [(fmt, child) for child in sorted(path.iterdir()) if child.is_dir() and (fmt := _detect_here(child))]
    if len(children) == 1:
        return children[0][0], children[0][1]
    if len(children) > 1:
        listing = ", ".join(f"{c.name} ({f})" for f, c in children)
        raise ValueError(f"{path} holds several datasets: {listing}; pass one of them")
    raise ValueError(
        f"cannot recognise a dataset layout in {path}. Known layouts: refcut_parts.json (parts folder); "
        "annotations.json or a COCO .json (COCO parts); images/ + annotations/*.png (PartImageNet PNG); "
        "Annotations_Part/*.mat (PASCAL-Part); annotations/pixel-level/*.mat + label_list.mat (Clothing "
        "Co-Parsing); img/ + gt/ or data_GT/ + boundary_GT/ (object folder). Use --format to force one."
    )


def _detect_here(path: Path) -> str | None:
    from refcut.data.loaders.object_folder import find_object_folders

    if (path / "refcut_parts.json").is_file():
        return "parts_folder"
    if (path / "Annotations_Part").is_dir():
        return "pascal_part"
    if (path / "annotations" / "pixel-level").is_dir() and (path / "label_list.mat").is_file():
        return "ccp"
    if find_object_folders(path) is not None:
        return "object_folder"
    if (path / "images").is_dir() and (path / "annotations").is_dir() and any((path / "annotations").rglob("*.png")):
        return "partimagenet_png"
    for folder in (path, path / "annotations"):
        if folder.is_dir():
            for candidate in sorted(folder.glob("*.json")):
                if _looks_like_coco(candidate):
                    return "coco_parts"
    return None


def _looks_like_coco(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096).decode("utf-8", errors="ignore")
    except OSError:
        return False
    return head.lstrip().startswith("{") and any(key in head for key in ('"images"', '"categories"', '"annotations"'))


def open_dataset(path: str | Path, format: str | None = None, split: str = "all") -> PartDataset:
    """Open a dataset folder in any supported format (auto-detected unless ``format`` is given).

    Formats: parts_folder, coco_parts, partimagenet_png, pascal_part, ccp, object_folder.
    Bad individual files are skipped and listed in ``dataset.problems``; a bad path raises.
    """
    from refcut.data import loaders

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset path not found: {path}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if format is None:
        format, target = detect_format(path)
    else:
        if format not in FORMATS:
            raise ValueError(f"unknown dataset format {format!r}; known: {', '.join(FORMATS)}")
        target = path
        if path.is_dir() and _detect_here(path) is None:
            subs = [c for c in sorted(path.iterdir()) if c.is_dir() and _detect_here(c) == format]
            if len(subs) == 1:
                target = subs[0]
    dataset = loaders.LOADERS[format](target)
    dataset.name = path.name if path.is_dir() else path.stem
    dataset.root = target
    dataset.format = format
    return dataset.split(split)


def read_json(path: Path) -> dict:
    """Load a json file with an error naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"json file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid json in {path}: {exc}") from exc
