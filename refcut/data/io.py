"""Small file readers shared by the loaders; every error names the file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (EXIF orientation ignored, like the annotations)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ValueError(f"cannot decode image file: {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label_image(path: str | Path) -> np.ndarray:
    """Read a label map / mask image as a 2-D integer array (palette PNGs give their indices)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        with Image.open(path) as im:
            array = np.array(im)
    except Exception as exc:  # PIL raises several types for broken files
        raise ValueError(f"cannot decode mask file: {path} ({exc})") from exc
    if array.ndim == 3:
        array = array[..., 0]
    if array.dtype == bool:
        array = array.astype(np.uint8)
    return array


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            width, height = im.size
    except Exception as exc:
        raise ValueError(f"cannot read image file: {path} ({exc})") from exc
    return height, width


def check_mask_size(mask: np.ndarray, size: tuple[int, int], mask_source: str | Path, image_path: str | Path) -> None:
    """Raise ValueError when a mask's HxW differs from its image's."""
    if tuple(mask.shape[:2]) != tuple(size):
        raise ValueError(
            f"mask size {mask.shape[0]}x{mask.shape[1]} in {mask_source} differs from image size "
            f"{size[0]}x{size[1]} of {image_path}"
        )


def is_heldout_image(image_path: str | Path) -> bool:
    """The split rule: an image is held out when sha1(file stem) mod 5 == 0 (about 20%)."""
    stem = Path(image_path).stem
    return int(hashlib.sha1(stem.encode("utf-8")).hexdigest(), 16) % 5 == 0


def find_image(folder: Path, stem: str) -> Path | None:
    """The image file ``folder/stem.<ext>`` for any known extension (any case), or None."""
    for ext in IMAGE_EXTENSIONS:
        for candidate in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None
