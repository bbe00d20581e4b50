"""Clothing Co-Parsing: ``annotations/pixel-level/NNNN.mat`` (``groundtruth`` uint8 label map),
``label_list.mat`` (names, 0 = background ``null``) and ``photos/NNNN.jpg``.

One sample per annotated photo, category ``"person"``, id ``"NNNN#person"``; every label present
(garments, skin, hair, ...) is a part.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from refcut.data.dataset import PartDataset
from refcut.data.io import check_mask_size, find_image, image_size, read_image
from refcut.data.sample import PartSample


def read_label_list(path: Path) -> list[str]:
    """Names of the CCP labels, index = label value."""
    if not path.is_file():
        raise FileNotFoundError(f"label list not found: {path}")
    try:
        raw = scipy.io.loadmat(path)["label_list"]
    except Exception as exc:
        raise ValueError(f"cannot read label list {path}: {exc}") from exc
    names = []
    for entry in np.asarray(raw, dtype=object).ravel():
        entry = np.asarray(entry).ravel()
        names.append(str(entry[0]) if entry.size else "")
    return names


def read_ccp_label_map(path: Path) -> np.ndarray:
    """The ``groundtruth`` label map of one CCP ``.mat`` file."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        labels = scipy.io.loadmat(path)["groundtruth"]
    except KeyError:
        raise ValueError(f"{path} has no 'groundtruth' variable") from None
    except Exception as exc:
        raise ValueError(f"cannot read annotation file {path}: {exc}") from exc
    if labels.ndim != 2:
        raise ValueError(f"{path}: 'groundtruth' must be a 2-D label map, got shape {labels.shape}")
    return labels


def load_ccp(path: str | Path) -> PartDataset:
    """Load a Clothing Co-Parsing root folder."""
    root = Path(path)
    ann_dir, photo_dir = root / "annotations" / "pixel-level", root / "photos"
    if not ann_dir.is_dir():
        raise FileNotFoundError(f"Clothing Co-Parsing layout needs {ann_dir}")
    names = read_label_list(root / "label_list.mat")
    problems: list[str] = []
    samples: list[PartSample] = []
    empty: list[str] = []
    for mat_path in sorted(ann_dir.glob("*.mat")):
        image_path = find_image(photo_dir, mat_path.stem)
        if image_path is None:
            problems.append(f"no photo {mat_path.stem}.jpg in {photo_dir} for {mat_path}; skipped")
            continue
        try:
            labels = read_ccp_label_map(mat_path)
            size = image_size(image_path)
            check_mask_size(labels, size, mat_path, image_path)
        except (OSError, ValueError) as exc:
            problems.append(f"{exc}; skipped")
            continue
        values = [int(v) for v in np.flatnonzero(np.bincount(labels.ravel())) if v != 0]
        unknown = [v for v in values if v >= len(names)]
        if unknown:
            problems.append(f"{mat_path}: label values {unknown[:5]} are not in label_list.mat; skipped")
            continue
        if not values:
            empty.append(mat_path.name)
            continue
        parts = {names[v]: v for v in values}
        samples.append(
            PartSample(
                sample_id=f"{mat_path.stem}#person",
                category="person",
                image_path=image_path,
                part_names=tuple(sorted(parts)),
                load_image=(lambda p=image_path: read_image(p)),
                load_part_masks=(lambda m=mat_path, parts=parts, s=size, p=image_path: _parts(m, parts, s, p)),
            )
        )
    notes = [f"{len(empty)} label maps hold background only and were left out: {', '.join(empty[:10])}"] if empty else []
    return PartDataset(name=root.name, kind="parts", samples=samples, problems=problems, notes=notes)


def _parts(mat_path: Path, parts: dict[str, int], size, image_path) -> dict[str, np.ndarray]:
    labels = read_ccp_label_map(mat_path)
    check_mask_size(labels, size, mat_path, image_path)
    return {name: labels == value for name, value in parts.items()}
