"""Safe image loading and mask encodings used by the app."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refcut.app.images import (
    ImageLoadError,
    browser_bytes,
    check_image,
    downscale_for_model,
    list_image_files,
    load_rgb,
    load_scaled,
    oriented_size,
    resolve_inside,
)
from refcut.app.masks import (
    MaskError,
    bbox_xywh,
    decode_data_url,
    decode_png,
    decode_rle,
    encode_png,
    encode_rle,
    sample_rle,
)


def test_resolve_inside_refuses_escapes(tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    (images / "sub" / "a.jpg").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("no")
    (images / "link.jpg").symlink_to(tmp_path / "secret.txt")
    assert resolve_inside(images, "sub/a.jpg") == (images / "sub" / "a.jpg").resolve()
    for bad in ("../secret.txt", "sub/../../secret.txt", str(tmp_path / "secret.txt"), "link.jpg", "", ".", "a\x00.jpg"):
        with pytest.raises(ValueError):
            resolve_inside(images, bad)


def test_list_image_files_is_recursive_and_skips_hidden(tmp_path: Path) -> None:
    for name in ("b.JPG", "sub/a.png", ".hidden/c.jpg", "notes.txt", "sub/.d.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert list_image_files(tmp_path) == ["b.JPG", "sub/a.png"]


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    path = _save(Image.fromarray(pixels), tmp_path / "rotated.jpg", exif=exif, quality=95)
    assert oriented_size(path) == (20, 40)
    rgb = load_rgb(path)
    assert rgb.shape == (40, 20, 3)
    assert rgb[:20].mean() > 200 and rgb[20:].mean() < 50  # white half is now on top
    data, media_type = browser_bytes(path)
    assert media_type == "image/png" and Image.open(io.BytesIO(data)).size == (20, 40)


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "RGBA", "L", "P", "LA", "F"])
def test_any_mode_becomes_rgb_uint8(tmp_path: Path, mode: str) -> None:
    base = Image.fromarray((np.arange(12 * 16).reshape(12, 16) % 256).astype(np.uint8)).convert("RGB")
    if mode == "I;16":
        image = Image.fromarray((np.arange(12 * 16).reshape(12, 16) * 300).astype(np.uint16))
    elif mode == "F":
        image = Image.fromarray(np.linspace(-1, 1, 12 * 16, dtype=np.float32).reshape(12, 16))
    else:
        image = base.convert(mode)
    suffix = {"CMYK": ".jpg", "F": ".tif"}.get(mode, ".png")
    path = _save(image, tmp_path / f"img{suffix}")
    rgb = load_rgb(path)
    assert rgb.shape == (12, 16, 3) and rgb.dtype == np.uint8
    if mode in ("I;16", "F"):
        assert rgb.min() == 0 and rgb.max() == 255  # full range kept, not clipped to black/white


def test_corrupt_and_truncated_images_give_clear_errors(tmp_path: Path) -> None:
    good = _save(Image.fromarray(np.full((64, 64, 3), 128, np.uint8)), tmp_path / "good.jpg", quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    for path in (truncated, garbage):
        with pytest.raises(ImageLoadError, match=path.name):
            load_rgb(path)
        with pytest.raises(ImageLoadError):
            browser_bytes(path)
    with pytest.raises(FileNotFoundError):
        load_rgb(tmp_path / "missing.jpg")


def test_downscale_for_model() -> None:
    image = np.zeros((300, 1200, 3), np.uint8)
    small, scale = downscale_for_model(image, 600)
    assert small.shape == (150, 600, 3) and scale == 0.5
    same, scale = downscale_for_model(image, 2000)
    assert same is image and scale == 1.0


def test_rle_and_png_round_trips() -> None:
    rng = np.random.default_rng(1)
    mask = rng.random((31, 47)) > 0.6
    rle = encode_rle(mask)
    assert isinstance(rle["counts"], str)
    assert np.array_equal(decode_rle(rle), mask)
    uncompressed = {"size": [2, 3], "counts": [1, 2, 3]}  # column-major: 1 off, 2 on, 3 off
    assert decode_rle(uncompressed).tolist() == [[False, True, False], [True, False, False]]
    assert np.array_equal(decode_png(encode_png(mask)), mask)
    assert np.array_equal(decode_png(decode_data_url("data:image/png;base64," + __import__("base64").b64encode(encode_png(mask)).decode())), mask)
    assert bbox_xywh(mask[:0]) == [0, 0, 0, 0]


@pytest.mark.parametrize("rle", [
    {"size": [4, 4], "counts": ""},            # no runs at all (decoded uninitialised memory before issue 11)
    {"size": [4, 4], "counts": []},
    {"size": [4, 4], "counts": [3.5, 12.5]},   # not integers
    {"size": [4, 4], "counts": [2**70]},
    {"size": [4, 4], "counts": "zz"},          # invalid characters
    {"size": [4, 4], "counts": "0"},           # counts do not cover the mask
    {"size": [4, 4], "counts": "1`0"},         # ends mid-number / wrong total
    {"size": [4, 4], "counts": [20]},          # too long
    {"size": [4, 4], "counts": [-1, 17]},      # negative run
    {"size": [0, 4], "counts": []},
    {"size": [4], "counts": "1"},
    {"counts": "1"},
    {"size": [4, 4], "counts": 5},
])
def test_malformed_rle_is_a_mask_error(rle: dict) -> None:
    with pytest.raises(MaskError):
        decode_rle(rle)
    with pytest.raises(MaskError):
        sample_rle(rle, 2, 2)


def test_sample_rle_is_nearest_pixel_sampling_of_the_full_mask() -> None:
    rng = np.random.default_rng(3)
    mask = np.zeros((90, 120), bool)
    mask[20:70, 30:100] = True
    mask[rng.random(mask.shape) > 0.97] = True
    rle = encode_rle(mask)
    assert np.array_equal(sample_rle(rle, 120, 90), mask)
    ys = ((np.arange(30) + 0.5) * 3).astype(int)
    xs = ((np.arange(40) + 0.5) * 3).astype(int)
    assert np.array_equal(sample_rle(rle, 40, 30), mask[np.ix_(ys, xs)])


@pytest.mark.parametrize("kind", ["jpeg", "rotated-jpeg", "png", "16-bit", "cmyk"])
def test_load_scaled_matches_decoding_at_full_size_then_downscaling(tmp_path: Path, kind: str) -> None:
    """The reduced-size decode (JPEG DCT scaling, PIL reduce) gives what the full decode + downscale gave."""
    ys, xs = np.mgrid[0:600, 0:900]
    pixels = np.stack([xs * 255 // 900, ys * 255 // 600, (xs + ys) % 256], axis=2).astype(np.uint8)
    if kind == "16-bit":
        image, suffix, options = Image.fromarray((xs * 70).astype(np.uint16)), ".png", {}
    elif kind == "cmyk":
        image, suffix, options = Image.fromarray(pixels).convert("CMYK"), ".jpg", {"quality": 95}
    else:
        image, suffix, options = Image.fromarray(pixels), ".png" if kind == "png" else ".jpg", {"quality": 95}
    if kind == "rotated-jpeg":
        exif = Image.Exif()
        exif[0x0112] = 6
        options["exif"] = exif
    path = _save(image, tmp_path / f"img{suffix}", **options)
    expected, scale = downscale_for_model(load_rgb(path), 160)
    scaled = load_scaled(path, 160)
    assert scaled.rgb.shape == expected.shape and scaled.scale == scale
    full = load_rgb(path)
    assert (scaled.width, scaled.height) == oriented_size(path) == (full.shape[1], full.shape[0])
    assert np.abs(scaled.rgb.astype(int) - expected.astype(int)).mean() < 4  # same picture, resampled differently
    assert np.array_equal(load_scaled(path, 5000).rgb, full)


def test_check_image_reads_all_the_data_but_not_at_full_size(tmp_path: Path) -> None:
    good = _save(Image.fromarray(np.full((64, 80, 3), 128, np.uint8)), tmp_path / "good.jpg", quality=90)
    assert check_image(good) == (80, 64)
    data = good.read_bytes()
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(data[: len(data) - 40])  # header intact: oriented_size still reads it
    assert oriented_size(truncated) == (80, 64)
    png = _save(Image.fromarray(np.full((64, 80, 3), 128, np.uint8)), tmp_path / "good.png")
    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes(png.read_bytes()[:-20])
    for path in (truncated, cut_png):
        with pytest.raises(ImageLoadError, match="truncated"):
            check_image(path, f"sub/{path.name}")


def test_rgba_png_mask_uses_alpha() -> None:
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[1:3, 2:5] = (40, 220, 60, 255)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    assert decode_png(buffer.getvalue()).sum() == 6
    with pytest.raises(ValueError):
        decode_png(b"not a png")
