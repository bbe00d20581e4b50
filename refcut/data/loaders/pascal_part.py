"""PASCAL-Part: ``Annotations_Part/<id>.mat`` + ``JPEGImages/<id>.jpg``.

Each ``.mat`` holds ``anno.objects[i]`` with ``class``, ``mask`` and ``parts[j]`` (``part_name``,
``mask``). One sample per object that has at least one part (objects without parts, e.g. most
boats and tables, are left out and counted in ``dataset.notes``). Part instances named
``<part>_<n>`` (``lfleg_1``, ``wheel_2``) merge into part ``<part>``. Sample ids are
``<image file>#obj<i>`` with ``i`` zero-padded to two digits so ids sort in object order.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import scipy.io

from refcut.data.dataset import PartDataset
from refcut.data.io import check_mask_size, find_image, image_size, read_image
from refcut.data.sample import PartSample

_INSTANCE_SUFFIX = re.compile(r"_\d+$")


def part_base_name(name: str) -> str:
    """``lfleg_1`` -> ``lfleg``; names without a numeric suffix are unchanged."""
    return _INSTANCE_SUFFIX.sub("", str(name).strip())


def _as_list(value) -> list:
    """Struct arrays from ``loadmat(squeeze_me=True, struct_as_record=False)`` as a list of structs."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return [v for v in value.ravel() if hasattr(v, "_fieldnames")] if value.dtype == object else []
    return [value] if hasattr(value, "_fieldnames") else []


def _text(value) -> str:
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else ""
    return str(value)


def read_pascal_part_objects(mat_path: Path) -> list[dict]:
    """Parse one PASCAL-Part ``.mat``: a list of {class, mask, parts: [(name, mask), ...]}."""
    try:
        data = scipy.io.loadmat(mat_path, squeeze_me=True, struct_as_record=False)
    except Exception as exc:
        raise ValueError(f"cannot read PASCAL-Part file {mat_path}: {exc}") from exc
    if "anno" not in data:
        raise ValueError(f"{mat_path} has no 'anno' variable (not a PASCAL-Part annotation)")
    anno = data["anno"]
    objects = []
    for obj in _as_list(getattr(anno, "objects", None)):
        parts = [(part_base_name(_text(p.part_name)), np.asarray(p.mask).astype(bool))
                 for p in _as_list(getattr(obj, "parts", None)) if hasattr(p, "part_name")]
        objects.append({"class": _text(obj.__dict__["class"]), "mask": np.asarray(obj.mask), "parts": parts})
    return objects


def load_pascal_part(path: str | Path) -> PartDataset:
    """Load a PASCAL-Part root (``Annotations_Part/`` and ``JPEGImages/``)."""
    root = Path(path)
    ann_dir, img_dir = root / "Annotations_Part", root / "JPEGImages"
    if not ann_dir.is_dir():
        raise FileNotFoundError(f"PASCAL-Part layout needs {ann_dir}")
    problems: list[str] = []
    samples: list[PartSample] = []
    without_parts = 0
    for mat_path in sorted(ann_dir.glob("*.mat")):
        image_path = find_image(img_dir, mat_path.stem)
        if image_path is None:
            problems.append(f"no image {mat_path.stem}.jpg in {img_dir} for {mat_path}; skipped")
            continue
        try:
            size = image_size(image_path)
            objects = read_pascal_part_objects(mat_path)
            for obj in objects:
                for _, mask in obj["parts"]:
                    check_mask_size(mask, size, mat_path, image_path)
        except (OSError, ValueError) as exc:
            problems.append(f"{exc}; skipped")
            continue
        for index, obj in enumerate(objects):
            part_names = tuple(sorted({name for name, mask in obj["parts"] if mask.any()}))
            if not part_names:
                without_parts += 1
                continue
            samples.append(
                PartSample(
                    sample_id=f"{image_path.name}#obj{index:02d}",
                    category=obj["class"],
                    image_path=image_path,
                    part_names=part_names,
                    load_image=(lambda p=image_path: read_image(p)),
                    load_part_masks=(lambda m=mat_path, i=index, s=size, p=image_path: _object_parts(m, i, s, p)),
                )
            )
    notes = [f"{without_parts} objects without part annotations were left out"] if without_parts else []
    return PartDataset(name=root.name, kind="parts", samples=samples, problems=problems, notes=notes)


def _object_parts(mat_path: Path, index: int, size, image_path) -> dict[str, np.ndarray]:
    objects = read_pascal_part_objects(mat_path)
    if index >= len(objects):
        raise ValueError(f"{mat_path} no longer has object {index}")
    masks: dict[str, np.ndarray] = {}
    for name, mask in objects[index]["parts"]:
        check_mask_size(mask, size, mat_path, image_path)
        masks[name] = masks[name] | mask if name in masks else mask
    return {name: mask for name, mask in masks.items() if mask.any()}
