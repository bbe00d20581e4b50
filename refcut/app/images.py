"""Safe image loading for the app: stay inside the image folder, normalise any decodable image to RGB uint8."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
MAX_PIXELS = 120_000_000
"""Refuse images larger than this (decompression-bomb guard); 120 MP covers any camera."""
BROWSER_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
EXIF_ORIENTATION_TAG = 0x0112


class ImageLoadError(ValueError):
    """An image file exists but cannot be decoded (corrupt, truncated, unsupported, too large)."""


def list_image_files(images_dir: Path) -> list[str]:
    """Relative POSIX paths of all images under ``images_dir`` (recursive, sorted, hidden files skipped)."""
    root = images_dir.resolve()
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.append(rel.as_posix())
    return sorted(found)


def resolve_inside(images_dir: Path, relative_path: str) -> Path:
    """Resolve ``relative_path`` under ``images_dir``; raise ValueError if it escapes the folder."""
    if not relative_path or "\x00" in relative_path:
        raise ValueError("empty or invalid image path")
    root = images_dir.resolve()
    candidate = (root / relative_path).resolve()
    if not candidate.is_relative_to(root) or candidate == root:
        raise ValueError(f"image path {relative_path!r} is outside the project's image folder")
    return candidate


def _open(path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():  # the size is checked against MAX_PIXELS below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as error:
        raise ImageLoadError(f"cannot read image {path.name}: {error}") from error
    if image.width * image.height > MAX_PIXELS:
        image.close()
        raise ImageLoadError(f"image {path.name} is {image.width}x{image.height}, larger than {MAX_PIXELS} pixels")
    return image


def oriented_size(path: Path) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header only."""
    with _open(path) as image:
        width, height = image.size
        try:
            orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
        except Exception:  # noqa: BLE001 - a broken EXIF block must not hide the image
            orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """Convert any PIL mode (CMYK, 16-bit, float, RGBA, palette, grayscale) to HxWx3 uint8."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
        grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb)


def load_rgb(path: Path) -> np.ndarray:
    """Decode ``path`` into an HxWx3 uint8 RGB array with EXIF orientation applied."""
    with _open(path) as image:
        try:
            image.load()
            oriented = ImageOps.exif_transpose(image)
            return to_rgb_uint8(oriented)
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageLoadError(f"cannot decode image {path.name} (corrupt or truncated?): {error}") from error


def browser_bytes(path: Path) -> tuple[bytes | None, str]:
    """Bytes a browser can show with the same orientation and size as :func:`load_rgb`.

    Returns ``(None, media_type)`` when the original file can be sent as is (plain JPEG/PNG/WebP,
    no EXIF rotation); otherwise the decoded image re-encoded as PNG.
    """
    with _open(path) as image:
        fmt = image.format or ""
        try:
            orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
        except Exception:  # noqa: BLE001
            orientation = 1
        plain = fmt in BROWSER_FORMATS and image.mode in ("RGB", "L", "RGBA", "P") and orientation in (None, 1)
    if plain:
        try:  # still make sure it decodes, so a truncated file gives a clear error instead of a broken page
            load_rgb(path)
        except ImageLoadError:
            raise
        return None, f"image/{fmt.lower()}"
    rgb = load_rgb(path)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue(), "image/png"


def downscale_for_model(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink ``image`` so its long side is at most ``max_side``; returns (image, scale = new/old)."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask to (height, width)."""
    if mask.shape == (height, width):
        return mask.astype(bool)
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)


def resize_prob(prob: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a float probability map to (height, width)."""
    if prob.shape == (height, width):
        return prob.astype(np.float32)
    return cv2.resize(prob.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
