"""File helpers for the exporters: atomic writes, image copies, image sizes, PNG I/O."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def atomic_write_bytes(path: Path, data: bytes, durable: bool = False) -> None:
    """Write ``data`` to a temporary file next to ``path`` and rename it over ``path``.

    Readers never see a half-written file; ``durable`` also fsyncs before the rename.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, durable: bool = False) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_json(path: Path, obj: Any, durable: bool = False, indent: int | None = 2) -> None:
    """JSON version of :func:`atomic_write_bytes` (UTF-8, non-ASCII kept readable)."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent) + "\n", durable=durable)


def atomic_write_png(path: Path, array: np.ndarray) -> None:
    """Write a single-channel uint8/uint16 array as a lossless PNG, atomically."""
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"could not encode PNG for {path}")
    atomic_write_bytes(path, encoded.tobytes())


def read_index_png(path: Path) -> np.ndarray:
    """Read a single-channel PNG unchanged (uint8 or uint16)."""
    if not path.is_file():
        raise FileNotFoundError(f"mask PNG not found: {path}")
    array = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError(f"could not decode PNG: {path}")
    if array.ndim != 2:
        raise ValueError(f"expected a single-channel index PNG, got shape {array.shape}: {path}")
    return array


def resolve_inside(folder: Path, relative_path: str) -> Path:
    """Resolve ``relative_path`` under ``folder`` (symlinks followed); ValueError if it ends up outside.

    Every image file the app serves and the exporters read goes through this check, so a file
    replaced by a symlink to somewhere outside the folder is never read.
    """
    if not relative_path or "\x00" in relative_path:
        raise ValueError("empty or invalid image path")
    root = Path(folder).resolve()
    candidate = (root / relative_path).resolve()
    if not candidate.is_relative_to(root) or candidate == root:
        raise ValueError(f"image path {relative_path!r} is outside the image folder")
    return candidate


def copy_image(src: Path, dst: Path) -> None:
    """Copy an image into an export (skipped when ``dst`` is ``src`` or an identical earlier copy)."""
    if dst.exists():
        if os.path.samefile(src, dst):
            return
        s, d = src.stat(), dst.stat()
        if s.st_size == d.st_size and int(s.st_mtime) == int(d.st_mtime):
            return
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copy2(src, tmp_name)
        os.replace(tmp_name, dst)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as displayed, i.e. after its EXIF orientation is applied."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except OSError as error:
        raise ValueError(f"cannot read image {path}: {error}") from None
    if orientation in (5, 6, 7, 8):  # rotated by 90 or 270 degrees
        width, height = height, width
    return int(width), int(height)


def find_image(folder: Path, rel_stem: str) -> Path | None:
    """The image file ``folder/<rel_stem>.<ext>`` for any common image extension, or None."""
    base = folder / rel_stem
    for ext in IMAGE_EXTENSIONS:
        for candidate in (base.with_name(base.name + ext), base.with_name(base.name + ext.upper())):
            if candidate.is_file():
                return candidate
    return None
