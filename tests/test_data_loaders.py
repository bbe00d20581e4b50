"""Each loader on a tiny fixture written in the real on-disk format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from pycocotools import mask as mask_utils

from refcut.data import open_dataset
from refcut.data.dataset import detect_format
from refcut.data.io import is_heldout_image
from refcut.data.loaders import convert_to_parts_folder


def write_image(path: Path, height: int, width: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)


def rect_polygon(x0, y0, x1, y1) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


# ---------------------------------------------------------------- COCO part json (car parts / PartImageNet)
def write_car_coco(root: Path, missing_image: bool = False) -> Path:
    (root / "JPEGImages").mkdir(parents=True)
    write_image(root / "JPEGImages" / "a.jpg", 40, 60)
    write_image(root / "JPEGImages" / "b.jpg", 40, 60)
    if not missing_image:
        write_image(root / "JPEGImages" / "c.jpg", 40, 60)
    images = [{"id": i + 1, "file_name": f"{n}.jpg", "width": 60, "height": 40} for i, n in enumerate("abc")]
    images.append({"id": 9, "file_name": "unannotated.jpg", "width": 60, "height": 40})
    cats = [{"id": 1, "name": "_background_", "supercategory": ""}, {"id": 2, "name": "hood", "supercategory": ""},
            {"id": 3, "name": "wheel", "supercategory": ""}]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 2, "segmentation": [rect_polygon(10, 5, 30, 15)], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "segmentation": [rect_polygon(5, 20, 15, 30)], "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 3, "segmentation": [rect_polygon(40, 20, 50, 30)], "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 3, "segmentation": [rect_polygon(0, 0, 10, 10)], "iscrowd": 0},
        {"id": 5, "image_id": 3, "category_id": 2, "segmentation": [rect_polygon(0, 0, 10, 10)], "iscrowd": 0},
        {"id": 6, "image_id": 3, "category_id": 3, "segmentation": [[1, 2]], "iscrowd": 0},  # unusable polygon
    ]
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def test_coco_car_parts_polygons_merge_instances(tmp_path):
    write_car_coco(tmp_path / "cars")
    ds = open_dataset(tmp_path / "cars")
    assert ds.format == "coco_parts" and ds.kind == "parts"
    assert [s.sample_id for s in ds.samples] == ["a.jpg#car", "b.jpg#car", "c.jpg#car"]
    assert all(s.category == "car" for s in ds.samples)  # every part name is a DSMLR car part
    a = ds.get("a.jpg#car")
    assert a.part_names == ("hood", "wheel")
    masks = a.load_part_masks()
    assert masks["wheel"].shape == (40, 60) and masks["wheel"].dtype == bool
    assert masks["wheel"][25, 10] and masks["wheel"][25, 45] and not masks["wheel"][25, 30]  # both wheels
    assert masks["hood"][10, 20] and not masks["hood"][30, 20]
    assert a.load_image().shape == (40, 60, 3)
    assert ds.get("c.jpg#car").part_names == ("hood",)
    assert any("annotation 6" in p for p in ds.problems)
    assert any("without part annotations" in n for n in ds.notes)


def test_coco_missing_image_is_reported_and_skipped(tmp_path):
    write_car_coco(tmp_path / "cars", missing_image=True)
    ds = open_dataset(tmp_path / "cars")
    assert [s.sample_id for s in ds.samples] == ["a.jpg#car", "b.jpg#car"]
    assert any("c.jpg" in p for p in ds.problems)


def test_coco_declared_size_mismatch_is_reported(tmp_path):
    path = write_car_coco(tmp_path / "cars")
    data = json.loads(path.read_text())
    data["images"][1]["height"] = 99
    path.write_text(json.dumps(data))
    ds = open_dataset(tmp_path / "cars")
    assert "b.jpg#car" not in [s.sample_id for s in ds.samples]
    assert any("b.jpg" in p and "99x60" in p for p in ds.problems)


def test_partimagenet_json_supercategory_and_rle(tmp_path):
    root = tmp_path / "pin"
    write_image(root / "images" / "val" / "n01_1.JPEG", 30, 30)
    write_image(root / "images" / "val" / "n01_2.JPEG", 30, 30)
    rle = mask_utils.encode(np.asfortranarray(np.pad(np.ones((5, 5), np.uint8), ((20, 5), (20, 5)))))
    rle["counts"] = rle["counts"].decode("ascii")
    cats = [{"id": 0, "name": "Quadruped Head", "supercategory": "Quadruped"},
            {"id": 1, "name": "Quadruped Body", "supercategory": "Quadruped"},
            {"id": 13, "name": "Bird Head"}]  # no supercategory: taken from the name
    anns = [
        {"id": 1, "image_id": 1, "category_id": 0, "segmentation": [rect_polygon(0, 0, 10, 10)]},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": rle},
        {"id": 3, "image_id": 2, "category_id": 13, "segmentation": [rect_polygon(0, 0, 10, 10)]},
    ]
    images = [{"id": 1, "file_name": "n01_1.JPEG", "width": 30, "height": 30},
              {"id": 2, "file_name": "n01_2.JPEG", "width": 30, "height": 30}]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "val.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    ds = open_dataset(root / "annotations" / "val.json")
    assert [(s.sample_id, s.category, s.part_names) for s in ds.samples] == [
        ("n01_1.JPEG#quadruped", "quadruped", ("body", "head")), ("n01_2.JPEG#bird", "bird", ("head",))]
    assert ds.samples[0].load_part_masks()["body"].sum() == 25


def test_partimagenet_png_release(tmp_path):
    root = tmp_path / "PartImageNet"
    write_image(root / "images" / "test" / "n02_7.JPEG", 20, 24)
    labels = np.full((20, 24), 40, np.uint8)  # 40 = background
    labels[2:8, 2:8] = 0   # Quadruped Head
    labels[8:18, 2:20] = 1  # Quadruped Body
    labels[0:2, 20:24] = 2  # Quadruped Foot
    (root / "annotations" / "test").mkdir(parents=True)
    Image.fromarray(labels).save(root / "annotations" / "test" / "n02_7.png")
    assert detect_format(root)[0] == "partimagenet_png"
    ds = open_dataset(root)
    (sample,) = ds.samples
    assert sample.sample_id == "test/n02_7.JPEG#quadruped" and sample.part_names == ("body", "foot", "head")
    masks = sample.load_part_masks()
    assert masks["head"].sum() == 36 and masks["foot"].sum() == 8


# ---------------------------------------------------------------- PASCAL-Part .mat
PART_DTYPE = [("part_name", "O"), ("mask", "O")]
OBJ_DTYPE = [("class", "O"), ("classIndex", "O"), ("mask", "O"), ("parts", "O")]


def pascal_object(cls: str, shape, parts: list[tuple[str, tuple[slice, slice]]]):
    obj_mask = np.zeros(shape, np.uint8)
    part_array = np.zeros((1, len(parts)), dtype=PART_DTYPE)
    for j, (name, region) in enumerate(parts):
        m = np.zeros(shape, np.uint8)
        m[region] = 1
        obj_mask |= m
        part_array[0, j] = (name, m)
    if not parts:
        part_array = np.zeros((0, 0))  # what MATLAB stores for an object without parts
    return (cls, 1, obj_mask, part_array)


def write_pascal_part(root: Path, shape=(30, 40)) -> None:
    (root / "Annotations_Part").mkdir(parents=True)
    write_image(root / "JPEGImages" / "2008_000001.jpg", *shape)
    objects = np.zeros((1, 3), dtype=OBJ_DTYPE)
    objects[0, 0] = pascal_object("cat", shape, [("head", np.s_[0:5, 0:5]), ("lfleg_1", np.s_[10:15, 0:3]),
                                                 ("lfleg_2", np.s_[10:15, 5:8])])
    objects[0, 1] = pascal_object("boat", shape, [])
    objects[0, 2] = pascal_object("person", shape, [("hair", np.s_[20:25, 20:25])])
    anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0] = ("2008_000001.jpg", objects)
    scipy.io.savemat(root / "Annotations_Part" / "2008_000001.mat", {"anno": anno})


def test_pascal_part_objects_and_part_instances(tmp_path):
    write_pascal_part(tmp_path / "VOC")
    ds = open_dataset(tmp_path / "VOC")
    assert ds.format == "pascal_part"
    assert [(s.sample_id, s.category, s.part_names) for s in ds.samples] == [
        ("2008_000001.jpg#obj00", "cat", ("head", "lfleg")), ("2008_000001.jpg#obj02", "person", ("hair",))]
    legs = ds.get("2008_000001.jpg#obj00").load_part_masks()["lfleg"]
    assert legs.sum() == 30 and legs[12, 1] and legs[12, 6]  # both instances merged
    assert any("1 objects without part" in n for n in ds.notes)


def test_pascal_part_size_mismatch_names_file(tmp_path):
    write_pascal_part(tmp_path / "VOC")
    write_image(tmp_path / "VOC" / "JPEGImages" / "2008_000001.jpg", 31, 40)  # image no longer matches masks
    ds = open_dataset(tmp_path / "VOC")
    assert len(ds) == 0 and "2008_000001.mat" in ds.problems[0] and "differs" in ds.problems[0]


# ---------------------------------------------------------------- Clothing Co-Parsing
def write_ccp(root: Path, n: int = 3, shape=(24, 16)) -> None:
    (root / "annotations" / "pixel-level").mkdir(parents=True)
    names = np.empty((1, 4), dtype=object)
    for i, name in enumerate(["null", "hair", "skin", "shoes"]):
        names[0, i] = np.array([name])
    scipy.io.savemat(root / "label_list.mat", {"label_list": names})
    for k in range(1, n + 1):
        labels = np.zeros(shape, np.uint8)
        labels[0:5, :] = 1
        labels[5:15, 4:12] = 2
        if k != 2:
            labels[20:24, 0:4] = 3
        scipy.io.savemat(root / "annotations" / "pixel-level" / f"{k:04d}.mat", {"groundtruth": labels})
        write_image(root / "photos" / f"{k:04d}.jpg", *shape, seed=k)


def test_ccp_label_maps(tmp_path):
    write_ccp(tmp_path / "ccp")
    ds = open_dataset(tmp_path / "ccp")
    assert ds.format == "ccp"
    assert [s.sample_id for s in ds.samples] == ["0001#person", "0002#person", "0003#person"]
    assert ds.get("0002#person").part_names == ("hair", "skin")
    assert ds.get("0001#person").part_names == ("hair", "shoes", "skin")
    masks = ds.get("0001#person").load_part_masks()
    assert masks["skin"].sum() == 80 and masks["hair"].sum() == 80


def test_ccp_one_bad_file_skipped_and_reported(tmp_path):
    write_ccp(tmp_path / "ccp", n=4)
    (tmp_path / "ccp" / "annotations" / "pixel-level" / "0003.mat").write_bytes(b"not a mat file")
    scipy.io.savemat(tmp_path / "ccp" / "annotations" / "pixel-level" / "0004.mat",
                     {"groundtruth": np.ones((10, 10), np.uint8)})  # wrong size
    ds = open_dataset(tmp_path / "ccp")
    assert [s.sample_id for s in ds.samples] == ["0001#person", "0002#person"]
    assert len(ds.problems) == 2
    assert "0003.mat" in ds.problems[0]
    assert "0004.mat" in ds.problems[1] and "10x10" in ds.problems[1] and "0004.jpg" in ds.problems[1]


def test_unreadable_image_raises_naming_file(tmp_path):
    write_ccp(tmp_path / "ccp")
    ds = open_dataset(tmp_path / "ccp")
    (tmp_path / "ccp" / "photos" / "0001.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(ValueError, match="0001.jpg"):
        ds.get("0001#person").load_image()


# ---------------------------------------------------------------- object folders
def test_object_folder_category_from_file_name(tmp_path):
    root = tmp_path / "mval"
    for stem in ["airplane00_000000000001", "airplane01_000000000002", "baseball bat00_000000000003"]:
        write_image(root / "img" / f"{stem}.jpg", 12, 14)
        mask = np.zeros((12, 14), np.uint8)
        mask[2:6, 3:9] = 255
        (root / "gt").mkdir(exist_ok=True)
        Image.fromarray(mask).save(root / "gt" / f"{stem}.png")
    write_image(root / "img" / "orphan00_1.jpg", 12, 14)
    ds = open_dataset(root)
    assert ds.kind == "objects" and ds.format == "object_folder"
    assert [s.category for s in ds.samples] == ["airplane", "airplane", "baseball bat"]
    assert ds.samples[0].sample_id == "airplane00_000000000001.jpg#object"
    assert ds.samples[0].load_part_masks()["object"].sum() == 24
    assert ds.samples[0].load_ignore_mask() is None
    assert any("orphan00_1.jpg" in p for p in ds.problems)


def test_grabcut_ignore_band(tmp_path):
    root = tmp_path / "grabcut"
    write_image(root / "data_GT" / "123.jpg", 10, 10)
    mask = np.zeros((10, 10), np.uint8)
    mask[3:7, 3:7] = 128
    mask[4:6, 4:6] = 255
    (root / "boundary_GT").mkdir()
    Image.fromarray(mask).save(root / "boundary_GT" / "123.bmp")
    (sample,) = open_dataset(root).samples
    assert sample.category is None
    assert sample.load_part_masks()["object"].sum() == 4
    assert sample.load_ignore_mask().sum() == 12


def test_object_mask_size_mismatch_reported(tmp_path):
    root = tmp_path / "mval"
    write_image(root / "img" / "cat00_1.jpg", 12, 14)
    (root / "gt").mkdir()
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "gt" / "cat00_1.png")
    ds = open_dataset(root)
    assert len(ds) == 0 and "cat00_1.png" in ds.problems[0] and "5x5" in ds.problems[0]


# ---------------------------------------------------------------- parts folder
def test_parts_folder_hand_written(tmp_path):
    root = tmp_path / "mine"
    write_image(root / "images" / "x.png", 8, 8)
    labels = np.zeros((8, 8), np.uint8)
    labels[:4] = 1
    labels[4:, :4] = 2
    labels[7, 7] = 255
    (root / "labels").mkdir()
    Image.fromarray(labels).save(root / "labels" / "x.png")
    spec = {"format": "refcut_parts", "version": 1, "labels": {"1": "top", "2": "corner"}, "ignore_label": 255,
            "default_category": "thing", "samples": [{"image": "x.png"}, {"image": "missing.png"}]}
    (root / "refcut_parts.json").write_text(json.dumps(spec))
    ds = open_dataset(root)
    (sample,) = ds.samples
    assert sample.sample_id == "x.png#thing" and sample.category == "thing"
    assert sample.part_names == ("corner", "top")
    assert sample.load_part_masks()["corner"].sum() == 16 and sample.load_ignore_mask().sum() == 1
    assert any("missing.png" in p for p in ds.problems)


def test_convert_coco_to_parts_folder_round_trip(tmp_path):
    write_car_coco(tmp_path / "cars")
    source = open_dataset(tmp_path / "cars")
    spec = convert_to_parts_folder(source, tmp_path / "converted")
    copy = open_dataset(spec.parent)
    assert copy.format == "parts_folder"
    assert [s.sample_id for s in copy.samples] == [s.sample_id for s in source.samples]
    for a, b in zip(source.samples, copy.samples):
        assert a.part_names == b.part_names and a.category == b.category
        ma, mb = a.load_part_masks(), b.load_part_masks()
        for name in ma:
            assert np.array_equal(ma[name], mb[name])  # no overlaps in this fixture
        assert np.array_equal(a.load_image(), b.load_image())
    with pytest.raises(FileExistsError):
        convert_to_parts_folder(source, tmp_path / "converted")


def test_convert_object_folder_keeps_ignore(tmp_path):
    root = tmp_path / "grabcut"
    write_image(root / "data_GT" / "1.bmp", 10, 10)
    mask = np.zeros((10, 10), np.uint8)
    mask[2:8, 2:8] = 128
    mask[3:7, 3:7] = 255
    (root / "boundary_GT").mkdir()
    Image.fromarray(mask).save(root / "boundary_GT" / "1.bmp")
    spec = convert_to_parts_folder(open_dataset(root), tmp_path / "out")
    (sample,) = open_dataset(spec.parent).samples
    assert open_dataset(spec.parent).kind == "objects"
    assert sample.load_part_masks()["object"].sum() == 16 and sample.load_ignore_mask().sum() == 20


# ---------------------------------------------------------------- paths, formats, split
def test_bad_paths_and_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot recognise"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown dataset format"):
        open_dataset(tmp_path / "empty", format="voc")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        open_dataset(bad, format="coco_parts")
    with pytest.raises(ValueError, match="split"):
        open_dataset(tmp_path / "empty", split="val")


def test_subfolder_detection(tmp_path):
    write_car_coco(tmp_path / "car-parts" / "trainingset")
    assert detect_format(tmp_path / "car-parts") == ("coco_parts", tmp_path / "car-parts" / "trainingset")
    write_car_coco(tmp_path / "car-parts" / "testset")
    with pytest.raises(ValueError, match="several datasets"):
        open_dataset(tmp_path / "car-parts")


def test_split_is_deterministic_and_keeps_images_together(tmp_path):
    write_pascal_part(tmp_path / "VOC")
    ds = open_dataset(tmp_path / "VOC")
    held = is_heldout_image(Path("2008_000001.jpg"))
    assert len(ds.split("heldout")) == (2 if held else 0) and len(ds.split("train")) == (0 if held else 2)
    stems = [f"img{i}" for i in range(2000)]
    rate = np.mean([is_heldout_image(Path(f"{s}.jpg")) for s in stems])
    assert 0.17 < rate < 0.23
    # the rule itself: sha1 of the stem, mod 5
    import hashlib
    assert is_heldout_image("a/b/img7.png") == (int(hashlib.sha1(b"img7").hexdigest(), 16) % 5 == 0)
