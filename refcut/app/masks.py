"""Mask encodings used by the app: COCO RLE (stored and sent to the page) and PNG (uploads, brush)."""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from refcut.export.coco import encode_rle

__all__ = ["MaskError", "encode_rle", "decode_rle", "sample_rle", "rle_runs", "decode_png", "decode_data_url",
           "encode_png", "bbox_xywh"]

MAX_MASK_PNG_BYTES = 8 * 1024 * 1024
MAX_MASK_PIXELS = 200_000_000


class MaskError(ValueError):
    """A mask in a request is malformed: bad RLE, unreadable PNG or base64 (the server answers 422)."""


def rle_runs(rle: dict) -> tuple[int, int, np.ndarray]:
    """(height, width, run lengths) of a COCO RLE dict, checked: runs are >= 0 and sum to exactly height*width.

    Both forms are accepted: compressed (``counts`` a str) and uncompressed (a list of ints).
    Raises :class:`MaskError` otherwise, so no mask is ever built from runs that do not cover it.
    """
    try:
        size = [int(v) for v in rle["size"]]
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as error:
        raise MaskError("RLE must have 'size' [height, width] and 'counts'") from error
    if len(size) != 2 or min(size) <= 0 or size[0] * size[1] > MAX_MASK_PIXELS:
        raise MaskError(f"RLE size {size} is invalid")
    height, width = size
    if isinstance(counts, str):
        values: list[int] = _counts_from_string(counts)
    elif isinstance(counts, list):
        values = counts
    else:
        raise MaskError("RLE counts must be a string or a list of integers")
    total = height * width
    runs = np.asarray(values) if values else np.zeros(0, dtype=np.int64)
    if runs.ndim != 1 or runs.dtype.kind not in "iu":
        raise MaskError("RLE counts must be a string or a list of integers")
    runs = runs.astype(np.int64)
    if runs.size and (int(runs.min()) < 0 or int(runs.max()) > total):
        raise MaskError(f"RLE counts must be between 0 and height*width = {total}")
    if int(runs.sum()) != total:
        raise MaskError(f"RLE counts sum to {int(runs.sum())} but a {width}x{height} mask has {total} pixels")
    return height, width, runs


def decode_rle(rle: dict) -> np.ndarray:
    """HxW bool mask of a COCO RLE dict (see :func:`rle_runs`); Fortran-ordered, as RLE is column-major."""
    height, width, runs = rle_runs(rle)
    values = np.zeros(runs.size, dtype=np.uint8)
    values[1::2] = 1
    column_major = np.repeat(values, runs)  # exactly height*width entries: rle_runs checked the sum
    return column_major.reshape((width, height)).T.view(np.bool_)


def sample_rle(rle: dict, width: int, height: int) -> np.ndarray:
    """The RLE's mask at (height, width) by nearest-pixel sampling, without building the full-size mask.

    Memory is proportional to the output and the number of runs, not to the RLE's size, so a
    reference or preview of a huge image costs what its small version costs.
    """
    full_h, full_w, runs = rle_runs(rle)
    if (full_h, full_w) == (height, width):
        return decode_rle(rle)
    ends = np.cumsum(runs)
    xs = np.minimum(((np.arange(width) + 0.5) * (full_w / width)).astype(np.int64), full_w - 1)
    ys = np.minimum(((np.arange(height) + 0.5) * (full_h / height)).astype(np.int64), full_h - 1)
    index = xs[None, :] * full_h + ys[:, None]  # column-major pixel index of each sample
    return np.searchsorted(ends, index, side="right") % 2 == 1


def _counts_from_string(counts: str) -> list[int]:
    """Run lengths of a COCO compressed RLE string (the LEB128-like scheme of maskApi.c)."""
    if not counts.isascii() or len(counts) > 50_000_000:
        raise MaskError("RLE counts string is not ASCII or too long")
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                raise MaskError("RLE counts string ends in the middle of a number")
            code = ord(counts[position]) - 48
            if not 0 <= code < 64:
                raise MaskError("RLE counts string has an invalid character")
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and (code & 0x10):
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def decode_png(data: bytes, expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """HxW bool mask from PNG bytes: on where the grey value (or the alpha, when present) is > 127.

    With ``expected_shape`` (height, width) the size is checked from the header, before decoding.
    """
    if len(data) > MAX_MASK_PNG_BYTES:
        raise MaskError(f"mask PNG is larger than {MAX_MASK_PNG_BYTES} bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if expected_shape is not None and (height, width) != tuple(expected_shape):
                raise MaskError(f"mask PNG is {width}x{height} but the image is {expected_shape[1]}x{expected_shape[0]}")
            if width * height > MAX_MASK_PIXELS:
                raise MaskError(f"mask PNG is {width}x{height}, too large")
            image.load()
            if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                return np.asarray(image.convert("RGBA"))[:, :, 3] > 127
            return np.asarray(image.convert("L")) > 127
    except MaskError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise MaskError(f"mask is not a readable PNG: {error}") from error


def decode_data_url(data_url: str) -> bytes:
    """Bytes of a ``data:image/png;base64,...`` URL or of plain base64."""
    payload = data_url.split(",", 1)[1] if data_url.startswith("data:") else data_url
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise MaskError("mask PNG is not valid base64") from error


def encode_png(mask: np.ndarray) -> bytes:
    """8-bit 0/255 PNG of a bool mask."""
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG")
    return buffer.getvalue()


def bbox_xywh(mask: np.ndarray) -> list[int]:
    """Tight [x, y, width, height] box of a mask; zeros if empty (no per-pixel index arrays are built)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return [0, 0, 0, 0]
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
