"""COCO instances JSON: RLE segmentations (``coco``) or polygons (``coco-polygons``).

Layout: ``<out>/annotations.json`` and, when an images folder is given, ``<out>/images/<file_name>``.
Categories are numbered 1..K in label order, images and annotations 1..N in input order;
``bbox``/``area`` come from the mask as pycocotools decodes it; ``iscrowd`` is 0 and an
instance's ``score`` is kept as an extra ``score`` field. Polygons follow pycocotools'
pixel-edge convention and cannot hold holes (see :mod:`refcut.export.geometry`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from refcut.export.files import atomic_write_json, copy_image
from refcut.export.geometry import to_coco_polygon
from refcut.provenance import package_version
from refcut.export.records import ExportImage, ExportInstance, ExportJob

ANNOTATIONS_FILE = "annotations.json"


def encode_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE of a HxW bool mask, JSON-ready (``counts`` as str)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    bits = mask.view(np.uint8) if mask.dtype == np.bool_ else (mask != 0).view(np.uint8)
    rle = mask_utils.encode(np.asfortranarray(bits))  # no copy for a Fortran-ordered bool mask
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _rle_stats(rle: dict) -> tuple[float, list[float]]:
    return float(mask_utils.area(rle)), [float(v) for v in mask_utils.toBbox(rle)]


def write_coco(job: ExportJob, polygons: bool) -> Path:
    """Write ``annotations.json`` (RLE, or polygons when ``polygons``) and copy images if given."""
    categories = [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(job.labels)]
    images, annotations = [], []
    for image_id, image in enumerate(job.images, start=1):
        images.append(
            {"id": image_id, "file_name": image.file_name, "width": image.width, "height": image.height}
        )
        for index, instance in image.numbered():
            if polygons:
                rings = job.polygons(image, index, instance)
                if not rings:
                    continue
                segmentation = [
                    [round(float(v), 2) for v in to_coco_polygon(r, image.width, image.height).ravel()]
                    for r in rings
                ]
                area, bbox = _rle_stats(
                    mask_utils.merge(mask_utils.frPyObjects(segmentation, image.height, image.width))
                )
            else:
                segmentation = encode_rle(instance.mask)
                area, bbox = _rle_stats(segmentation)
            annotation = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": job.class_index(instance.label) + 1,
                "segmentation": segmentation,
                "area": area,
                "bbox": bbox,
                "iscrowd": 0,
            }
            if instance.score is not None:
                annotation["score"] = float(instance.score)
            annotations.append(annotation)
            job.num_instances += 1
        if image.source is not None:
            copy_image(image.source, job.out_dir / "images" / image.file_name)
    now = _dt.datetime.now(_dt.timezone.utc)
    document = {
        "info": {
            "description": "Exported by RefCut",
            "tool": "refcut",
            "version": package_version(),
            "year": now.year,
            "date_created": now.isoformat(timespec="seconds"),
            "segmentation": "polygon" if polygons else "rle",
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    path = job.out_dir / ANNOTATIONS_FILE
    atomic_write_json(path, document, durable=True, indent=None)
    return path


def read_coco(path: str | Path) -> list[ExportImage]:
    """Read a COCO instances JSON (RLE, uncompressed RLE or polygons) with pycocotools.

    Returns images in id order with their instances in annotation-id order; masks come from
    ``COCO.annToMask``. ``path`` may be the JSON file or a folder holding ``annotations.json``.
    """
    from pycocotools.coco import COCO

    path = Path(path)
    if path.is_dir():
        path = path / ANNOTATIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotations file not found: {path}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(path))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"not a valid COCO instances file: {path}: {error}") from None
    names = {cat_id: cat["name"] for cat_id, cat in coco.cats.items()}
    result = []
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        instances = []
        for ann_id in sorted(coco.getAnnIds(imgIds=[image_id])):
            ann = coco.anns[ann_id]
            mask = coco.annToMask(ann).astype(bool)
            instances.append(ExportInstance(label=names[ann["category_id"]], mask=mask, score=ann.get("score")))
        result.append(
            ExportImage(
                file_name=info["file_name"], width=int(info["width"]), height=int(info["height"]), instances=instances
            )
        )
    return result
