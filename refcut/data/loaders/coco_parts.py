"""COCO-style part annotations: car parts (DSMLR), PartImageNet json, and PartImageNet part PNGs.

COCO json: every annotation is one part instance (polygons or RLE) with a part ``category_id``.
One sample per (image, object category); all instances of a part name merge into one mask.
The object category of a part category is, in order: its ``supercategory`` (PartImageNet:
"Quadruped"; the part name is the category name without that prefix, lower-cased: "head"); the
first word of a PartImageNet-style name ("Quadruped Head") when no supercategory is set; the
``default_category`` argument; "car" when every part name is a DSMLR car-part name; else "object".
``_background_`` / ``background`` categories are ignored. Categories are lower-cased.

PartImageNet part PNGs (``images/<split>/*.JPEG`` + ``annotations/<split>/*.png``): pixel values
0..39 are part ids, 40 is background. Names come from ``class_names.json`` (``{"categories":
[{"id", "name"}]}``) in the root when present, else from the official 40-name list below.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from refcut.data.dataset import PartDataset, read_json
from refcut.data.io import IMAGE_EXTENSIONS, check_mask_size, find_image, image_size, read_image, read_label_image
from refcut.data.sample import PartSample

CAR_PART_NAMES = frozenset(
    "back_bumper back_glass back_left_door back_left_light back_right_door back_right_light front_bumper "
    "front_glass front_left_door front_left_light front_right_door front_right_light hood left_mirror "
    "right_mirror tailgate trunk wheel".split()
)
PARTIMAGENET_SUPERCATEGORIES = (
    "Quadruped", "Biped", "Fish", "Bird", "Snake", "Reptile", "Car", "Bicycle", "Boat", "Aeroplane", "Bottle",
)
PARTIMAGENET_PART_NAMES = (
    "Quadruped Head", "Quadruped Body", "Quadruped Foot", "Quadruped Tail", "Biped Head", "Biped Body",
    "Biped Hand", "Biped Foot", "Biped Tail", "Fish Head", "Fish Body", "Fish Fin", "Fish Tail", "Bird Head",
    "Bird Body", "Bird Wing", "Bird Foot", "Bird Tail", "Snake Head", "Snake Body", "Reptile Head", "Reptile Body",
    "Reptile Foot", "Reptile Tail", "Car Body", "Car Tier", "Car Side Mirror", "Bicycle Body", "Bicycle Head",
    "Bicycle Seat", "Bicycle Tier", "Boat Body", "Boat Sail", "Aeroplane Head", "Aeroplane Body",
    "Aeroplane Engine", "Aeroplane Wing", "Aeroplane Tail", "Bottle Mouth", "Bottle Body",
)
PARTIMAGENET_BACKGROUND = 40
_BACKGROUND_NAMES = {"_background_", "background", "__background__"}


def split_part_category(name: str, supercategory: str | None) -> tuple[str | None, str]:
    """(object category or None, part name) of one part category, following the module's rule."""
    name = str(name).strip()
    supercategory = (supercategory or "").strip()
    if supercategory:
        part = name[len(supercategory):].strip() if name.lower().startswith(supercategory.lower() + " ") else name
        return supercategory.lower(), part.lower()
    words = name.split(" ", 1)
    if len(words) == 2 and words[0] in PARTIMAGENET_SUPERCATEGORIES:
        return words[0].lower(), words[1].strip().lower()
    return None, name.lower()


def _find_annotation_file(folder: Path) -> Path:
    preferred = folder / "annotations.json"
    if preferred.is_file():
        return preferred
    candidates = [p for f in (folder, folder / "annotations") if f.is_dir() for p in sorted(f.glob("*.json"))]
    candidates = [p for p in candidates if p.name != "class_names.json"]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise FileNotFoundError(f"no COCO annotation .json found in {folder} (looked for annotations.json, *.json)")
    raise ValueError(f"several .json files in {folder}: {[c.name for c in candidates]}; pass the one to use")


def _image_roots(folder: Path, annotation_file: Path) -> list[Path]:
    stem = annotation_file.stem
    bases = [folder, annotation_file.parent, annotation_file.parent.parent]
    roots: list[Path] = []
    for base in bases:
        for root in (base / "JPEGImages", base / "images" / stem, base / "images", base / stem, base):
            if root.is_dir() and root not in roots:
                roots.append(root)
    return roots


def _resolve_image(roots: list[Path], file_name: str) -> Path | None:
    for root in roots:
        candidate = root / file_name
        if candidate.is_file():
            return candidate
        synset_dir = root / Path(file_name).name.split("_")[0] / Path(file_name).name  # ImageNet layout
        if synset_dir.is_file():
            return synset_dir
    return None


def _decode_parts(parts: dict[str, list], height: int, width: int) -> dict[str, np.ndarray]:
    masks = {}
    for part_name, segmentations in parts.items():
        rles = []
        for seg in segmentations:
            if isinstance(seg, list):
                rles.extend(mask_utils.frPyObjects(seg, height, width))
            elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
                rles.append(mask_utils.frPyObjects(seg, height, width))
            else:
                rles.append(seg)
        merged = mask_utils.merge(rles) if len(rles) > 1 else rles[0]
        with warnings.catch_warnings():  # pycocotools' numpy-2 "copy keyword" deprecation notice
            warnings.simplefilter("ignore", DeprecationWarning)
            masks[part_name] = mask_utils.decode(merged).astype(bool)
    return masks


def _clean_segmentation(seg) -> list | dict | None:
    if isinstance(seg, list):
        polygons = [p for p in seg if isinstance(p, list) and len(p) >= 6]
        return polygons or None
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        return seg
    return None


def load_coco_parts(path: str | Path, default_category: str | None = None) -> PartDataset:
    """Load a COCO part json (file, or folder holding ``annotations.json`` / one ``*.json``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset path not found: {path}")
    annotation_file = path if path.is_file() else _find_annotation_file(path)
    folder = annotation_file.parent if path.is_file() else path
    data = read_json(annotation_file)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{annotation_file} is not a COCO json: missing '{key}'")
    problems: list[str] = []
    notes: list[str] = []

    categories: dict[int, tuple[str | None, str]] = {}
    for cat in data["categories"]:
        if str(cat.get("name", "")).strip().lower() in _BACKGROUND_NAMES:
            continue
        categories[cat["id"]] = split_part_category(cat["name"], cat.get("supercategory"))
    part_names = {part for _, part in categories.values()}
    fallback = default_category or ("car" if part_names and part_names <= CAR_PART_NAMES else "object")

    per_image: dict[int, dict[str, dict[str, list]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for ann in data["annotations"]:
        cat = categories.get(ann.get("category_id"))
        if cat is None:
            continue
        seg = _clean_segmentation(ann.get("segmentation"))
        if seg is None:
            problems.append(f"{annotation_file}: annotation {ann.get('id')} has no usable segmentation; skipped")
            continue
        category, part = cat
        per_image[ann["image_id"]][category or fallback][part].append(seg)

    roots = _image_roots(folder, annotation_file)
    samples: list[PartSample] = []
    unannotated = 0
    for image in data["images"]:
        objects = per_image.get(image["id"])
        if not objects:
            unannotated += 1
            continue
        file_name = str(image["file_name"])
        image_path = _resolve_image(roots, file_name)
        if image_path is None:
            problems.append(f"image file not found for {file_name} (looked in {', '.join(map(str, roots))}); skipped")
            continue
        try:
            size = image_size(image_path)
        except (OSError, ValueError) as exc:
            problems.append(f"{exc}; skipped")
            continue
        declared = (int(image.get("height", size[0])), int(image.get("width", size[1])))
        if declared != size:
            problems.append(
                f"{annotation_file}: image {file_name} is declared {declared[0]}x{declared[1]} but {image_path} "
                f"is {size[0]}x{size[1]}; skipped"
            )
            continue
        for category, parts in objects.items():
            parts = {k: list(v) for k, v in parts.items()}
            samples.append(
                PartSample(
                    sample_id=f"{file_name}#{category}",
                    category=category,
                    image_path=image_path,
                    part_names=tuple(sorted(parts)),
                    load_image=_image_loader(image_path, size),
                    load_part_masks=(lambda parts=parts, size=size: _decode_parts(parts, *size)),
                )
            )
    if unannotated:
        notes.append(f"{unannotated} images without part annotations were left out")
    return PartDataset(name=folder.name, kind="parts", samples=samples, problems=problems, notes=notes)


def _image_loader(image_path: Path, size: tuple[int, int]):
    def load() -> np.ndarray:
        image = read_image(image_path)
        if image.shape[:2] != tuple(size):
            raise ValueError(f"image {image_path} decodes to {image.shape[0]}x{image.shape[1]}, expected {size}")
        return image

    return load


def _partimagenet_names(root: Path) -> dict[int, tuple[str, str]]:
    names_file = root / "class_names.json"
    if names_file.is_file():
        data = read_json(names_file)
        entries = data.get("categories", data) if isinstance(data, dict) else data
        table = {int(c["id"]): str(c["name"]) for c in entries}
    else:
        table = dict(enumerate(PARTIMAGENET_PART_NAMES))
    result = {}
    for pid, name in table.items():
        category, part = split_part_category(name, None)
        result[pid] = (category or "object", part)
    return result


def load_partimagenet_png(path: str | Path) -> PartDataset:
    """Load the PartImageNet part-PNG release: one sample per (image, super-category present)."""
    root = Path(path)
    ann_root, img_root = root / "annotations", root / "images"
    if not ann_root.is_dir() or not img_root.is_dir():
        raise FileNotFoundError(f"PartImageNet PNG layout needs {ann_root} and {img_root}")
    names = _partimagenet_names(root)
    problems: list[str] = []
    samples: list[PartSample] = []
    for png in sorted(ann_root.rglob("*.png")):
        rel = png.relative_to(ann_root).with_suffix("")
        image_path = find_image(img_root / rel.parent, rel.name)
        if image_path is None:
            problems.append(f"no image for {png} in {img_root / rel.parent}; skipped")
            continue
        try:
            labels = read_label_image(png)
            size = image_size(image_path)
            check_mask_size(labels, size, png, image_path)
        except (OSError, ValueError) as exc:
            problems.append(f"{exc}; skipped")
            continue
        ids = [int(v) for v in np.unique(labels) if int(v) != PARTIMAGENET_BACKGROUND]
        unknown = [v for v in ids if v not in names]
        if unknown:
            problems.append(f"{png}: label values {unknown[:5]} are not part ids 0..39 (40 = background); skipped")
            continue
        by_category: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for pid in ids:
            category, part = names[pid]
            by_category[category][part].append(pid)
        for category, parts in by_category.items():
            parts = {k: tuple(v) for k, v in parts.items()}
            samples.append(
                PartSample(
                    sample_id=f"{rel.as_posix()}{image_path.suffix}#{category}",
                    category=category,
                    image_path=image_path,
                    part_names=tuple(sorted(parts)),
                    load_image=_image_loader(image_path, size),
                    load_part_masks=(lambda png=png, parts=parts, size=size, image_path=image_path:
                                     _label_map_parts(png, parts, size, image_path)),
                )
            )
    return PartDataset(name=root.name, kind="parts", samples=samples, problems=problems)


def _label_map_parts(png: Path, parts: dict[str, tuple[int, ...]], size, image_path) -> dict[str, np.ndarray]:
    labels = read_label_image(png)
    check_mask_size(labels, size, png, image_path)
    return {name: np.isin(labels, ids) for name, ids in parts.items()}


__all__ = ["load_coco_parts", "load_partimagenet_png", "split_part_category", "IMAGE_EXTENSIONS"]
