"""Round-trip and error tests for refcut.export (synthetic masks, no shared data)."""

from __future__ import annotations

import contextlib
import io
import json

import cv2
import numpy as np
import pytest
import yaml
from pycocotools.coco import COCO
from scipy import ndimage

from refcut.export import (
    FORMATS,
    READERS,
    ExportImage,
    ExportInstance,
    export_dataset,
    export_dataset_with_summary,
    mask_to_polygons,
    polygons_to_mask,
    read_coco,
    read_labelme,
    read_png,
    read_yolo_seg,
)
from refcut.export import formats as formats_module

LABELS = ["shirt", "pants", "hat"]
POLYGON_FORMATS = ("coco-polygons", "yolo-seg", "labelme")


def _shirt_with_hole(h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[8:44, 10:50] = True
    mask[18:30, 22:36] = False  # a hole
    return mask


def _two_part_pants(h: int, w: int) -> np.ndarray:
    canvas = np.zeros((h, w), np.uint8)
    cv2.circle(canvas, (64, 20), 9, 1, -1)
    cv2.rectangle(canvas, (56, 45), (75, 58), 1, -1)
    return canvas.astype(bool)


def _ellipse(h: int, w: int) -> np.ndarray:
    canvas = np.zeros((h, w), np.uint8)
    cv2.ellipse(canvas, (20, 22), (12, 8), 30, 0, 360, 1, -1)
    return canvas.astype(bool)


def _tiny(h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[60:62, 2:4] = True  # 2x2: a polygon through its pixel centres has area 1 < min_area
    return mask


@pytest.fixture
def dataset(tmp_path):
    """Three images (one in a subfolder, one without instances) and their image files."""
    h1, w1, h2, w2 = 64, 80, 40, 48
    images = [
        ExportImage(
            "a.png",
            w1,
            h1,
            [
                ExportInstance("shirt", _shirt_with_hole(h1, w1), score=0.9),
                ExportInstance("pants", _two_part_pants(h1, w1)),
                ExportInstance("hat", np.zeros((h1, w1), bool)),  # empty: skipped everywhere
                ExportInstance("hat", _tiny(h1, w1)),  # vanishes as a polygon
            ],
        ),
        ExportImage("sub/b.jpg", w2, h2, [ExportInstance("hat", _ellipse(h2, w2).astype(np.uint8))]),
        ExportImage("c.png", 30, 20, []),
    ]
    images_dir = tmp_path / "images_src"
    for image in images:
        path = images_dir / image.file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((image.height, image.width, 3), 128, np.uint8))
    return images, images_dir


def _nonempty(images):
    return {im.file_name: [inst for inst in im.instances if np.asarray(inst.mask).any()] for im in images}


def _fill_holes(mask):
    return ndimage.binary_fill_holes(np.asarray(mask) != 0)


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _assert_close_polygon_mask(original, recovered, tolerance=1.0):
    """IoU >= 0.9 against the hole-filled original, and every differing pixel lies near its boundary."""
    target = _fill_holes(original)
    assert recovered.shape == target.shape
    assert _iou(target, recovered) >= 0.9
    boundary = target ^ ndimage.binary_erosion(target)
    distance = ndimage.distance_transform_edt(~boundary)
    assert distance[target ^ recovered].max(initial=0) <= tolerance + 1.5


def _by_name(images):
    return {im.file_name: im for im in images}


# ---------------------------------------------------------------- geometry


def test_mask_to_polygons_parts_points_and_min_area():
    h, w = 64, 80
    polygons = mask_to_polygons(_two_part_pants(h, w))
    assert len(polygons) == 2
    assert all(p.ndim == 2 and p.shape[1] == 2 and len(p) >= 3 for p in polygons)
    assert mask_to_polygons(_tiny(h, w)) == []
    assert mask_to_polygons(np.zeros((5, 5), bool)) == []
    # Only the outer ring of a mask with a hole: re-rasterising fills the hole.
    shirt = _shirt_with_hole(h, w)
    assert len(mask_to_polygons(shirt)) == 1
    assert (polygons_to_mask(mask_to_polygons(shirt, tolerance=0), h, w) == _fill_holes(shirt)).all()


def test_polygons_to_mask_unites_overlapping_polygons():
    square = np.array([[2, 2], [12, 2], [12, 12], [2, 12]], float)
    mask = polygons_to_mask([square, square + 4], 20, 20)
    assert mask[8, 8] and mask[14, 14] and mask[3, 3]  # overlap stays filled (no even-odd holes)
    assert mask.sum() == 11 * 11 * 2 - 7 * 7


# ---------------------------------------------------------------- exact formats


def test_coco_rle_round_trip_is_exact_and_loads_in_pycocotools(dataset, tmp_path):
    images, images_dir = dataset
    summary = export_dataset_with_summary(images, LABELS, "coco", tmp_path / "out", images_dir=images_dir)
    assert summary.path == tmp_path / "out" / "annotations.json"
    assert summary.num_instances == 4 and summary.num_skipped == 1
    assert any("empty mask" in w and "a.png" in w for w in summary.warnings)

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(summary.path))
    assert [coco.cats[i]["name"] for i in sorted(coco.cats)] == LABELS
    assert sorted(coco.cats) == [1, 2, 3]
    document = json.loads(summary.path.read_text())
    assert document["info"]["tool"] == "refcut" and document["info"]["version"]
    for ann in document["annotations"]:
        mask = coco.annToMask(ann).astype(bool)
        ys, xs = np.nonzero(mask)
        assert ann["iscrowd"] == 0 and isinstance(ann["segmentation"]["counts"], str)
        assert ann["area"] == mask.sum()
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert (tmp_path / "out" / "images" / "sub" / "b.jpg").is_file()

    recovered = _by_name(read_coco(summary.path))
    assert set(recovered) == {"a.png", "sub/b.jpg", "c.png"}
    for name, instances in _nonempty(images).items():
        got = recovered[name].instances
        assert [i.label for i in got] == [i.label for i in instances]
        for original, back in zip(instances, got):
            assert back.mask.dtype == bool and (back.mask == (np.asarray(original.mask) != 0)).all()
    assert recovered["a.png"].instances[0].score == pytest.approx(0.9)
    assert recovered["c.png"].instances == []


def test_png_round_trip_is_exact(dataset, tmp_path):
    images, _ = dataset
    path = export_dataset(images, LABELS, "png", tmp_path / "out")
    assert path.name == "labels.json"
    semantic = cv2.imread(str(tmp_path / "out" / "semantic" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert semantic[10, 12] == LABELS.index("shirt") + 1 and semantic[0, 0] == 0
    assert (tmp_path / "out" / "masks" / "sub" / "b.png").is_file()
    document = json.loads(path.read_text())
    assert document["classes"] == {"1": "shirt", "2": "pants", "3": "hat"}

    recovered = _by_name(read_png(tmp_path / "out"))
    for name, instances in _nonempty(images).items():
        got = recovered[name].instances
        assert [i.label for i in got] == [i.label for i in instances]
        for original, back in zip(instances, got):
            assert (back.mask == (np.asarray(original.mask) != 0)).all()


def test_png_uses_uint16_above_255_instances(tmp_path):
    h, w = 20, 20
    instances = []
    for k in range(300):
        mask = np.zeros((h, w), bool)
        mask.flat[k] = True
        instances.append(ExportInstance("hat", mask))
    export_dataset([ExportImage("many.png", w, h, instances)], ["hat"], "png", tmp_path / "out")
    index = cv2.imread(str(tmp_path / "out" / "masks" / "many.png"), cv2.IMREAD_UNCHANGED)
    assert index.dtype == np.uint16 and index.max() == 300
    back = read_png(tmp_path / "out")[0].instances
    assert len(back) == 300 and all((b.mask == i.mask).all() for b, i in zip(back, instances))


def test_png_warns_about_overlapping_instances(tmp_path):
    a = np.zeros((10, 10), bool)
    a[2:6, 2:6] = True
    b = np.roll(a, 2, axis=1)
    summary = export_dataset_with_summary(
        [ExportImage("o.png", 10, 10, [ExportInstance("hat", a), ExportInstance("hat", b)])], ["hat"], "png", tmp_path / "o"
    )
    assert any("overlaps" in w for w in summary.warnings)


# ---------------------------------------------------------------- polygon formats


@pytest.mark.parametrize("fmt", POLYGON_FORMATS)
def test_polygon_formats_round_trip_within_tolerance(dataset, tmp_path, fmt):
    images, images_dir = dataset
    summary = export_dataset_with_summary(images, LABELS, fmt, tmp_path / "out", images_dir=images_dir)
    assert summary.num_instances == 3 and summary.num_skipped == 2
    assert any("too small" in w and "instance 4" in w for w in summary.warnings)

    recovered = _by_name(READERS[fmt](summary.path))
    assert set(recovered) == {"a.png", "sub/b.jpg", "c.png"}
    for image in images:
        back = recovered[image.file_name]
        assert (back.width, back.height) == (image.width, image.height)
    assert recovered["c.png"].instances == []
    pairs = [
        (images[0].instances[0], recovered["a.png"].instances[0]),
        (images[0].instances[1], recovered["a.png"].instances[1]),
        (images[1].instances[0], recovered["sub/b.jpg"].instances[0]),
    ]
    assert len(recovered["a.png"].instances) == 2  # the tiny instance vanished, the two-part one stayed one
    for original, back in pairs:
        assert back.label == original.label
        _assert_close_polygon_mask(original.mask, back.mask)
    hole = np.zeros_like(images[0].instances[0].mask)
    hole[18:30, 22:36] = True
    assert recovered["a.png"].instances[0].mask[hole].all()  # documented: holes are filled


@pytest.mark.parametrize("fmt", POLYGON_FORMATS)
def test_polygon_formats_are_exact_at_zero_tolerance(dataset, tmp_path, fmt):
    images, _ = dataset
    path = export_dataset(images, LABELS, fmt, tmp_path / "out", polygon_tolerance=0)
    recovered = _by_name(READERS[fmt](path))
    for original, back in zip(images[0].instances[:2], recovered["a.png"].instances):
        assert (back.mask == _fill_holes(original.mask)).all()


@pytest.mark.parametrize("fmt", POLYGON_FORMATS)
def test_masks_touching_the_image_border_stay_inside_it(tmp_path, fmt):
    full = np.ones((12, 16), bool)
    corner = np.zeros((12, 16), bool)
    corner[6:, 10:] = True
    path = export_dataset(
        [ExportImage("edge.png", 16, 12, [ExportInstance("hat", full), ExportInstance("hat", corner)])],
        ["hat"], fmt, tmp_path / "out", polygon_tolerance=0,
    )
    back = READERS[fmt](path)[0].instances
    assert (back[0].mask == full).all() and (back[1].mask == corner).all()
    if fmt == "coco-polygons":
        coords = np.concatenate([np.ravel(s) for a in json.loads(path.read_text())["annotations"] for s in a["segmentation"]])
        assert coords.min() >= 0 and coords.max() <= 16


def test_yolo_layout_rows_and_reading_without_sidecar(dataset, tmp_path):
    images, images_dir = dataset
    out = tmp_path / "out"
    path = export_dataset(images, LABELS, "yolo-seg", out, images_dir=images_dir)
    data = yaml.safe_load(path.read_text())
    assert data["names"] == {0: "shirt", 1: "pants", 2: "hat"} and data["train"] == "images" and "path" not in data
    assert (out / "images" / "sub" / "b.jpg").is_file() and (out / "labels" / "sub" / "b.txt").is_file()
    assert (out / "labels" / "c.txt").read_text() == ""
    rows = [line.split() for line in (out / "labels" / "a.txt").read_text().splitlines()]
    assert [int(r[0]) for r in rows] == [0, 1, 1]  # the two-part instance gives two rows
    for row in rows:
        coords = np.array(row[1:], float)
        assert len(coords) % 2 == 0 and len(coords) >= 6
        assert coords.min() >= 0 and coords.max() <= 1

    (out / "refcut_yolo.json").unlink()  # plain Ultralytics folder: sizes from the images, one instance per row
    recovered = _by_name(read_yolo_seg(out))
    assert (recovered["sub/b.jpg"].width, recovered["sub/b.jpg"].height) == (48, 40)
    parts = recovered["a.png"].instances
    assert [i.label for i in parts] == ["shirt", "pants", "pants"]
    _assert_close_polygon_mask(images[0].instances[1].mask, parts[1].mask | parts[2].mask)


def test_labelme_json_has_the_fields_labelme_needs(dataset, tmp_path):
    images, images_dir = dataset
    out = tmp_path / "out"
    export_dataset(images, LABELS, "labelme", out, images_dir=images_dir)
    document = json.loads((out / "a.json").read_text())
    assert {"version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"} <= set(document)
    assert document["imageData"] is None and (document["imageHeight"], document["imageWidth"]) == (64, 80)
    assert (out / document["imagePath"]).is_file()
    nested = json.loads((out / "sub" / "b.json").read_text())
    assert (out / "sub" / nested["imagePath"]).is_file()
    for shape in document["shapes"]:
        assert set(shape) == {"label", "points", "group_id", "description", "shape_type", "flags"}
        assert shape["shape_type"] == "polygon" and len(shape["points"]) >= 3
    pants = [s for s in document["shapes"] if s["label"] == "pants"]
    assert len(pants) == 2 and pants[0]["group_id"] == pants[1]["group_id"]
    assert json.loads((out / "c.json").read_text())["shapes"] == []
    assert len(read_labelme(out)) == 3


# ---------------------------------------------------------------- files and errors


def test_reexport_into_existing_folder_replaces_files(dataset, tmp_path):
    images, _ = dataset
    out = tmp_path / "out"
    export_dataset(images, LABELS, "coco", out)
    first = read_coco(out)
    export_dataset(images[1:], LABELS, "coco", out)
    assert len(first) == 3 and [im.file_name for im in read_coco(out)] == ["sub/b.jpg", "c.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_export_leaves_no_output(dataset, tmp_path, monkeypatch):
    images, _ = dataset

    def broken(job):
        (job.out_dir / "half.txt").write_text("partial")
        raise RuntimeError("disk full")

    monkeypatch.setitem(formats_module._WRITERS, "png", broken)
    with pytest.raises(RuntimeError):
        export_dataset(images, LABELS, "png", tmp_path / "out")
    assert list(tmp_path.iterdir()) == [tmp_path / "images_src"]


def test_unknown_format_is_rejected(dataset, tmp_path):
    images, _ = dataset
    with pytest.raises(ValueError, match="unknown export format 'voc'.*coco-polygons"):
        export_dataset(images, LABELS, "voc", tmp_path / "out")
    assert set(FORMATS) == set(READERS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_mask_shape_mismatch_names_the_image(tmp_path, fmt):
    bad = ExportImage("dir/wrong.png", 10, 8, [ExportInstance("hat", np.ones((10, 8), bool))])
    with pytest.raises(ValueError, match="dir/wrong.png.*shape"):
        export_dataset([bad], ["hat"], fmt, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_records_are_rejected(dataset, tmp_path):
    images, images_dir = dataset
    one = np.ones((4, 4), bool)
    with pytest.raises(ValueError, match="x.png.*unknown label 'dog'"):
        export_dataset([ExportImage("x.png", 4, 4, [ExportInstance("dog", one)])], LABELS, "coco", tmp_path / "o")
    with pytest.raises(ValueError, match="relative path"):
        export_dataset([ExportImage("../x.png", 4, 4)], LABELS, "coco", tmp_path / "o")
    with pytest.raises(ValueError, match="share the output name"):
        export_dataset([ExportImage("x.png", 4, 4), ExportImage("x.jpg", 4, 4)], LABELS, "labelme", tmp_path / "o")
    with pytest.raises(ValueError, match="labels must be unique"):
        export_dataset([], ["a", "a"], "coco", tmp_path / "o")
    with pytest.raises(ValueError, match="a.png.*80x64.*81x64"):
        export_dataset([ExportImage("a.png", 81, 64)], LABELS, "coco", tmp_path / "o", images_dir=images_dir)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        export_dataset([ExportImage("missing.png", 4, 4)], LABELS, "coco", tmp_path / "o", images_dir=images_dir)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("fmt", ["coco", "png"])
def test_export_never_reads_an_image_through_a_symlink_out_of_the_folder(dataset, tmp_path, fmt):
    """Issue 11 item 5: an image replaced by a symlink to a file outside the folder is refused, not copied."""
    images, images_dir = dataset
    outside = tmp_path / "outside.png"
    cv2.imwrite(str(outside), np.full((64, 80, 3), 7, np.uint8))  # same size as a.png, so only the path check can stop it
    (images_dir / "a.png").unlink()
    (images_dir / "a.png").symlink_to(outside)
    with pytest.raises(ValueError, match="'a.png'.*outside"):
        export_dataset(images, LABELS, fmt, tmp_path / "out", images_dir=images_dir)
    assert not (tmp_path / "out").exists()
    inside = images_dir / "sub" / "link.png"  # a symlink that stays inside the folder is fine
    inside.symlink_to(images_dir / "c.png")
    summary = export_dataset_with_summary([ExportImage("sub/link.png", 30, 20, [])], LABELS, fmt, tmp_path / "ok",
                                          images_dir=images_dir)
    assert (summary.out_dir / "images" / "sub" / "link.png").is_file()


def test_readers_report_missing_and_malformed_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_coco(tmp_path / "nothing.json")
    with pytest.raises(FileNotFoundError):
        read_yolo_seg(tmp_path)
    (tmp_path / "data.yaml").write_text("names: [hat]\n")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "x.txt").write_text("0 0.1 0.1 1.5 0.2 0.3 0.3\n")
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "x.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="x.txt:1.*normalised"):
        read_yolo_seg(tmp_path)
