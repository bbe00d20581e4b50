"""Dataset loaders: each turns one on-disk format into a :class:`~refcut.data.dataset.PartDataset`."""

from __future__ import annotations

from refcut.data.loaders.ccp import load_ccp
from refcut.data.loaders.coco_parts import load_coco_parts, load_partimagenet_png
from refcut.data.loaders.object_folder import load_object_folder
from refcut.data.loaders.parts_folder import convert_to_parts_folder, load_parts_folder
from refcut.data.loaders.pascal_part import load_pascal_part

LOADERS = {
    "parts_folder": load_parts_folder,
    "coco_parts": load_coco_parts,
    "partimagenet_png": load_partimagenet_png,
    "pascal_part": load_pascal_part,
    "ccp": load_ccp,
    "object_folder": load_object_folder,
}

__all__ = [
    "LOADERS", "load_parts_folder", "convert_to_parts_folder", "load_coco_parts", "load_partimagenet_png",
    "load_pascal_part", "load_ccp", "load_object_folder",
]
