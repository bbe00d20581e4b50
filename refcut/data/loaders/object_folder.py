"""Object-level folders: one image holds one target mask, stored under the same file stem.

Recognised pairs of folders (images, masks): ``img/`` + ``gt/`` (COCO-MVal), ``data_GT/`` +
``boundary_GT/`` (GrabCut), ``images/`` + ``masks/``. Mask values: 0 background, 128 "unknown"
band (ignored in IoU, see ``load_ignore_mask``), values > 128 foreground; 0/1 masks are accepted too.
The category is read from the file name ``<category><NN>_<id>`` (``airplane03_000000281693`` ->
``airplane``, ``baseball bat00_...`` -> ``baseball bat``); names without that pattern (GrabCut)
have category None, and all such samples count as one (unknown) category.
Each sample has the single part ``"object"``; ids are ``<image file>#object``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from refcut.data.dataset import PartDataset
from refcut.data.io import IMAGE_EXTENSIONS, check_mask_size, image_size, read_image, read_label_image
from refcut.data.sample import PartSample

FOLDER_PAIRS = (("img", "gt"), ("data_GT", "boundary_GT"), ("images", "masks"))
IGNORE_VALUE = 128
_CATEGORY_IN_NAME = re.compile(r"^(?P<category>.*?[^\d\s])\s*\d+_\d+$")


def category_from_file_name(stem: str) -> str | None:
    """``airplane03_000000281693`` -> ``airplane``; None when the name has no category."""
    match = _CATEGORY_IN_NAME.match(stem)
    return match.group("category").strip() if match else None


def find_object_folders(root: Path) -> tuple[Path, Path] | None:
    """The (images, masks) folder pair of an object-level dataset root, or None."""
    for images, masks in FOLDER_PAIRS:
        if (root / images).is_dir() and (root / masks).is_dir():
            return root / images, root / masks
    return None


def mask_to_object(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(foreground bool mask, ignore bool mask or None) of a 0/128/255 (or 0/1) mask image."""
    if values.max(initial=0) <= 1:
        return values == 1, None
    ignore = values == IGNORE_VALUE
    return values > IGNORE_VALUE, (ignore if ignore.any() else None)


def load_object_folder(path: str | Path) -> PartDataset:
    """Load an object-level folder (COCO-MVal / GrabCut style)."""
    root = Path(path)
    folders = find_object_folders(root)
    if folders is None:
        raise FileNotFoundError(
            f"object folder layout needs one of {', '.join(f'{a}/ + {b}/' for a, b in FOLDER_PAIRS)} in {root}"
        )
    image_dir, mask_dir = folders
    masks_by_stem: dict[str, Path] = {}
    for mask_path in sorted(mask_dir.iterdir()):
        if mask_path.suffix.lower() in IMAGE_EXTENSIONS:
            masks_by_stem.setdefault(mask_path.stem, mask_path)
    problems: list[str] = []
    samples: list[PartSample] = []
    for image_path in sorted(image_dir.iterdir()):
        if image_path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        mask_path = masks_by_stem.get(image_path.stem)
        if mask_path is None:
            problems.append(f"no mask for {image_path} in {mask_dir}; skipped")
            continue
        try:
            size = image_size(image_path)
            mask_size = image_size(mask_path)
            if mask_size != size:
                raise ValueError(
                    f"mask size {mask_size[0]}x{mask_size[1]} in {mask_path} differs from image size "
                    f"{size[0]}x{size[1]} of {image_path}"
                )
        except (OSError, ValueError) as exc:
            problems.append(f"{exc}; skipped")
            continue
        samples.append(
            PartSample(
                sample_id=f"{image_path.name}#object",
                category=category_from_file_name(image_path.stem),
                image_path=image_path,
                part_names=("object",),
                load_image=(lambda p=image_path: read_image(p)),
                load_part_masks=(lambda m=mask_path, s=size, p=image_path: {"object": _read_mask(m, s, p)[0]}),
                load_ignore_mask=(lambda m=mask_path, s=size, p=image_path: _read_mask(m, s, p)[1]),
            )
        )
    return PartDataset(name=root.name, kind="objects", samples=samples, problems=problems)


def _read_mask(mask_path: Path, size, image_path) -> tuple[np.ndarray, np.ndarray | None]:
    values = read_label_image(mask_path)
    check_mask_size(values, size, mask_path, image_path)
    return mask_to_object(values)
