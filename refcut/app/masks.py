"""Mask encodings used by the app: COCO RLE (stored and sent to the page) and PNG (uploads, brush)."""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from refcut.export.coco import encode_rle

__all__ = ["encode_rle", "decode_rle", "decode_png", "decode_data_url", "encode_png", "bbox_xywh"]

MAX_MASK_PNG_BYTES = 8 * 1024 * 1024


def decode_rle(rle: dict) -> np.ndarray:
    """HxW bool mask from a COCO RLE dict (compressed str counts or uncompressed list of ints)."""
    try:
        size = [int(v) for v in rle["size"]]
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError("RLE must have 'size' [height, width] and 'counts'") from error
    if len(size) != 2 or min(size) <= 0 or size[0] * size[1] > 200_000_000:
        raise ValueError(f"RLE size {size} is invalid")
    height, width = size
    if isinstance(counts, list):
        runs = np.asarray(counts, dtype=np.int64)
        if runs.size and (runs.min() < 0 or runs.sum() != height * width):
            raise ValueError("uncompressed RLE counts must be non-negative and sum to height*width")
        values = np.zeros(runs.size, dtype=np.uint8)
        values[1::2] = 1
        flat = np.repeat(values, runs)
        return flat.reshape((width, height)).T.astype(bool)
    if not isinstance(counts, str):
        raise ValueError("RLE counts must be a string or a list of integers")
    runs = _counts_from_string(counts)
    if runs.size and (runs.min() < 0 or runs.sum() != height * width):
        raise ValueError("RLE counts do not match the RLE size")
    # Validated in Python first: pycocotools' C decoder does not bounds-check malformed input.
    return mask_utils.decode({"size": [height, width], "counts": counts.encode("ascii")}).astype(bool)


def _counts_from_string(counts: str) -> np.ndarray:
    """Run lengths of a COCO compressed RLE string (the LEB128-like scheme of maskApi.c)."""
    if not counts.isascii() or len(counts) > 50_000_000:
        raise ValueError("RLE counts string is not ASCII or too long")
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                raise ValueError("RLE counts string ends in the middle of a number")
            code = ord(counts[position]) - 48
            if not 0 <= code < 64:
                raise ValueError("RLE counts string has an invalid character")
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and (code & 0x10):
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return np.asarray(runs, dtype=np.int64)


def decode_png(data: bytes, expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """HxW bool mask from PNG bytes: on where the grey value (or the alpha, when present) is > 127.

    With ``expected_shape`` (height, width) the size is checked from the header, before decoding.
    """
    if len(data) > MAX_MASK_PNG_BYTES:
        raise ValueError(f"mask PNG is larger than {MAX_MASK_PNG_BYTES} bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if expected_shape is not None and (height, width) != tuple(expected_shape):
                raise ValueError(f"mask PNG is {width}x{height} but the image is {expected_shape[1]}x{expected_shape[0]}")
            if width * height > 200_000_000:
                raise ValueError(f"mask PNG is {width}x{height}, too large")
            image.load()
            if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                return np.asarray(image.convert("RGBA"))[:, :, 3] > 127
            return np.asarray(image.convert("L")) > 127
    except ValueError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"mask is not a readable PNG: {error}") from error


def decode_data_url(data_url: str) -> bytes:
    """Bytes of a ``data:image/png;base64,...`` URL or of plain base64."""
    payload = data_url.split(",", 1)[1] if data_url.startswith("data:") else data_url
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("mask PNG is not valid base64") from error


def encode_png(mask: np.ndarray) -> bytes:
    """8-bit 0/255 PNG of a bool mask."""
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG")
    return buffer.getvalue()


def bbox_xywh(mask: np.ndarray) -> list[int]:
    """Tight [x, y, width, height] box of a mask; zeros if empty."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
