"""Safe image loading for the app: stay inside the image folder, check files cheaply, decode at the size needed.

Memory per image is bounded: sizes and formats come from the header; a registered file is checked
once (:func:`check_image`, a JPEG at 1/8 scale); the model and the previews get the image decoded
at their size (:func:`load_scaled`; JPEGs use libjpeg's DCT scaling, so a 100-megapixel photo is
never decoded at full size) and keep it in an :class:`ImageCache`. Only a file the browser cannot
show as is (EXIF-rotated, CMYK, 16-bit, TIFF, BMP) is decoded at full size, to re-encode it.
Error messages name the image as the caller passes it (its path inside the project), never the
absolute path.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from refcut.export.files import resolve_inside

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "ImageCache", "ImageLoadError", "Scaled", "browser_bytes", "check_image",
           "downscale_for_model", "fit_scale", "list_image_files", "load_rgb", "load_scaled", "oriented_size",
           "resolve_inside", "to_rgb_uint8", "upscale_prob_mask"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
MAX_PIXELS = 120_000_000
"""Refuse images larger than this (decompression-bomb guard); 120 MP covers any camera."""
BROWSER_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
"""EXIF orientation -> the transpose that shows the image upright (as ``ImageOps.exif_transpose``)."""


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


def _reason(error: BaseException, path: Path, name: str) -> str:
    """A library's error message with the file's absolute path replaced by its name in the project."""
    return str(error).replace(str(path), name)


def _open(path: Path, name: str | None = None) -> Image.Image:
    """Open ``path`` lazily (header only); refuses unreadable headers and images above MAX_PIXELS."""
    shown = name or path.name
    try:
        with warnings.catch_warnings():  # the size is checked against MAX_PIXELS below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {shown} is missing") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as error:
        raise ImageLoadError(f"cannot read image {shown}: {_reason(error, path, shown)}") from error
    if image.width * image.height > MAX_PIXELS:
        image.close()
        raise ImageLoadError(f"image {shown} is {image.width}x{image.height}, larger than {MAX_PIXELS} pixels")
    return image


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not hide the image
        return 1


def _oriented(image: Image.Image, orientation: int) -> tuple[int, int]:
    width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def oriented_size(path: Path, name: str | None = None) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header only."""
    with _open(path, name) as image:
        return _oriented(image, _orientation(image))


def check_image(path: Path, name: str | None = None) -> tuple[int, int]:
    """(width, height) after EXIF orientation, once the whole file is known to decode.

    Cheap in memory: a JPEG is decoded at 1/8 scale (libjpeg still reads every byte, so a
    truncated file is caught), a PNG has its chunks and end marker verified without
    decompressing; other formats are decoded. Raises :class:`ImageLoadError` naming ``name``.
    """
    shown = name or path.name
    size = oriented_size(path, name)
    with _open(path, name) as image:  # opened again: PNG's verify() must come right after open
        try:
            if image.format == "JPEG":
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
            elif image.format == "PNG":
                image.verify()
            else:
                image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise ImageLoadError(f"cannot decode image {shown} (corrupt or truncated?): {_reason(error, path, shown)}") from error
    return size


def fit_scale(width: int, height: int, max_side: int) -> float:
    """The factor (<= 1) that brings the long side of a width x height image to at most ``max_side``."""
    return min(1.0, max_side / max(width, height))


def _scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass(frozen=True)
class Scaled:
    """An image decoded at reduced size: ``rgb`` (h x w x 3 uint8) and the full oriented size it stands for."""

    rgb: np.ndarray
    width: int
    height: int
    scale: float  # rgb size / full size, as :func:`fit_scale` gives it

    @property
    def nbytes(self) -> int:
        return int(self.rgb.nbytes)


def _decode(path: Path, name: str | None, max_side: int | None) -> tuple[Image.Image, int, int, float]:
    """(upright RGB PIL image, full width, full height, scale): decoded at reduced size when ``max_side`` asks for it."""
    shown = name or path.name
    image = _open(path, name)  # not closed on success: load() closes the file, close() would drop the pixels
    try:
        orientation = _orientation(image)
        width, height = _oriented(image, orientation)
        scale = 1.0 if max_side is None else fit_scale(width, height, max_side)
        target = _scaled_size(width, height, scale)
        stored = target[::-1] if orientation in (5, 6, 7, 8) else target
        if scale < 1.0:
            image.draft("RGB", stored)  # JPEG: DCT scaling to the smallest size >= stored; others: no-op
        image.load()
        picture: Image.Image = image
        factor = min(picture.width // stored[0], picture.height // stored[1])
        if scale < 1.0 and factor >= 2:
            try:
                picture = picture.reduce(factor)
            except ValueError:  # a mode reduce() does not handle: the resize below does the work
                pass
        if orientation in _TRANSPOSE:
            picture = picture.transpose(_TRANSPOSE[orientation])
        picture = _to_rgb_image(picture)
    except (OSError, SyntaxError, ValueError) as error:
        image.close()
        raise ImageLoadError(f"cannot decode image {shown} (corrupt or truncated?): {_reason(error, path, shown)}") from error
    if picture.size != target:
        picture = picture.resize(target, Image.Resampling.BOX)
    return picture, width, height, scale


def load_rgb(path: Path, name: str | None = None) -> np.ndarray:
    """Decode ``path`` into an HxWx3 uint8 RGB array at full size, EXIF orientation applied."""
    picture, *_ = _decode(path, name, None)
    return np.asarray(picture)


def load_scaled(path: Path, max_side: int, name: str | None = None) -> Scaled:
    """``path`` decoded with its long side at most ``max_side`` (the size :func:`downscale_for_model` gives).

    JPEGs are decoded at the smallest DCT scale that is still large enough; other formats are
    decoded once in their own mode and reduced before any conversion, so no full-size RGB array
    (or full-size float array, for 16-bit images) is built.
    """
    picture, width, height, scale = _decode(path, name, max_side)
    rgb = np.asarray(picture)
    rgb.setflags(write=False)  # shared through ImageCache
    return Scaled(rgb=rgb, width=width, height=height, scale=scale)


class ImageCache:
    """Images decoded at reduced size (:func:`load_scaled`), least recently used first out, within a byte budget.

    Shared by the model session and the page's reference previews, so an image is decoded once per
    size it is shown at. Entries are keyed by path, modification time, file size and size asked
    for, so an edited file is decoded again. The arrays are read-only (copy one to change it).
    """

    def __init__(self, max_bytes: int = 192 * 1024 * 1024):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, Scaled] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: Path, max_side: int, name: str | None = None) -> Scaled:
        """The image at ``path`` with its long side at most ``max_side``, decoded now or earlier."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise FileNotFoundError(f"image file {name or path.name} is missing") from None
        key = (str(path), stat.st_mtime_ns, stat.st_size, int(max_side))
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        scaled = load_scaled(path, max_side, name)
        with self._lock:
            if key not in self._entries and scaled.nbytes <= self.max_bytes:
                self._entries[key] = scaled
                self._bytes += scaled.nbytes
                while self._bytes > self.max_bytes:
                    _, dropped = self._entries.popitem(last=False)
                    self._bytes -= dropped.nbytes
        return scaled


def _to_rgb_image(image: Image.Image) -> Image.Image:
    """Any PIL mode (CMYK, 16-bit, float, RGBA, palette, grayscale) as an RGB image (alpha over white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image if image.mode == "RGB" else image.convert("RGB")


def to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """Convert any PIL mode (CMYK, 16-bit, float, RGBA, palette, grayscale) to HxWx3 uint8."""
    return np.ascontiguousarray(np.asarray(_to_rgb_image(image), dtype=np.uint8))


def browser_bytes(path: Path, name: str | None = None) -> tuple[bytes | None, str]:
    """Bytes a browser can show with the same orientation and size as :func:`load_rgb`.

    Returns ``(None, media_type)`` when the original file can be sent as is (plain JPEG/PNG/WebP,
    no EXIF rotation), judged from the header alone (the file's data was checked when it was
    registered, by :func:`check_image`); otherwise the decoded image re-encoded as PNG.
    """
    with _open(path, name) as image:
        fmt = image.format or ""
        plain = fmt in BROWSER_FORMATS and image.mode in ("RGB", "L", "RGBA", "P") and _orientation(image) == 1
    if plain:
        return None, f"image/{fmt.lower()}"
    picture, *_ = _decode(path, name, None)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue(), "image/png"


def downscale_for_model(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink ``image`` so its long side is at most ``max_side``; returns (image, scale = new/old)."""
    height, width = image.shape[:2]
    scale = fit_scale(width, height, max_side)
    if scale >= 1.0:
        return image, 1.0
    return cv2.resize(image, _scaled_size(width, height, scale), interpolation=cv2.INTER_AREA), scale


def upscale_prob_mask(prob: np.ndarray, width: int, height: int, threshold: float) -> np.ndarray:
    """The full-size (height, width) bool mask ``prob > threshold`` of a smaller probability map (bilinear).

    Costs one byte per full-size pixel: the map is quantised to 256 levels before the resize (so no
    full-size float array is made) and thresholded in place. The result is Fortran-ordered, COCO
    RLE's column-major order, so encoding it copies nothing.
    """
    levels = np.clip(np.rint(np.asarray(prob, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    full_t = cv2.resize(np.ascontiguousarray(levels.T), (height, width), interpolation=cv2.INTER_LINEAR)
    if full_t.ndim != 2:
        full_t = full_t.reshape(width, height)
    mask_t = full_t.view(np.bool_)
    np.greater(full_t, int(np.floor(threshold * 255.0)), out=mask_t)
    return mask_t.T
