"""LabelMe JSON: one ``<stem>.json`` per image with polygon shapes (no base64 masks).

Files are written at ``<out>/<file_name minus extension>.json`` (subfolders kept). When an images
folder is given the image is copied next to its JSON, so ``<out>`` opens directly in labelme or
X-AnyLabeling; ``imagePath`` is the image's name relative to the JSON (the bare file name). Without
an images folder, put the JSONs next to the images (e.g. export into the images folder itself).
Every polygon of an instance carries the same ``group_id`` (the 1-based instance index), so
multi-part instances stay grouped. Holes are filled (labelme unions the polygons).
"""

from __future__ import annotations

import json
import logging
import posixpath
from pathlib import Path

import numpy as np

from refcut.export.files import atomic_write_json, copy_image
from refcut.export.geometry import polygons_to_mask
from refcut.export.records import ExportImage, ExportInstance, ExportJob

LABELME_VERSION = "5.5.0"  # labelme warns when the major version differs from its own
logger = logging.getLogger(__name__)


def write_labelme(job: ExportJob) -> Path:
    """Write one LabelMe JSON per image (and copy images next to them when given); returns ``out_dir``."""
    for image in job.images:
        shapes = []
        for index, instance in image.numbered():
            rings = job.polygons(image, index, instance)
            if not rings:
                continue
            for ring in rings:
                shapes.append(
                    {
                        "label": instance.label,
                        "points": [[float(x), float(y)] for x, y in ring],
                        "group_id": index,
                        "description": "",
                        "shape_type": "polygon",
                        "flags": {},
                    }
                )
            job.num_instances += 1
        document = {
            "version": LABELME_VERSION,
            "flags": {},
            "shapes": shapes,
            "imagePath": image.rel_path.name,
            "imageData": None,
            "imageHeight": image.height,
            "imageWidth": image.width,
        }
        if image.source is not None:
            copy_image(image.source, job.out_dir / image.file_name)
        atomic_write_json(job.out_dir / f"{image.stem}.json", document)
    return job.out_dir


def _shape_polygon(shape: dict, where: str) -> np.ndarray | None:
    points = np.asarray(shape.get("points", []), dtype=np.float64).reshape(-1, 2)
    kind = shape.get("shape_type") or "polygon"
    if kind == "polygon":
        if len(points) < 3:
            raise ValueError(f"{where}: polygon {shape.get('label')!r} has fewer than 3 points")
        return points
    if kind == "rectangle" and len(points) == 2:
        (x0, y0), (x1, y1) = points
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    logger.warning("%s: shape type %r is not supported; skipped", where, kind)
    return None


def read_labelme(directory: str | Path) -> list[ExportImage]:
    """Read every LabelMe JSON under ``directory`` (recursively) back into images and masks.

    Shapes sharing a label and a ``group_id`` form one instance; a shape without ``group_id`` is
    its own instance. Polygons and rectangles are supported (others are skipped with a log
    warning). ``file_name`` is the image path relative to ``directory``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"LabelMe folder not found: {directory}")
    result = []
    for json_path in sorted(directory.rglob("*.json")):
        try:
            document = json.loads(json_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{json_path}: invalid JSON: {error}") from None
        if not isinstance(document, dict) or "shapes" not in document or "imagePath" not in document:
            continue  # not a LabelMe file (e.g. another tool's metadata)
        width, height = int(document["imageWidth"]), int(document["imageHeight"])
        groups: dict[tuple, tuple[str, list[np.ndarray]]] = {}
        for shape_index, shape in enumerate(document["shapes"]):
            polygon = _shape_polygon(shape, str(json_path))
            if polygon is None:
                continue
            group_id = shape.get("group_id")
            key = (shape["label"], group_id) if group_id is not None else (shape["label"], f"shape{shape_index}")
            groups.setdefault(key, (shape["label"], []))[1].append(polygon)
        instances = [
            ExportInstance(label=label, mask=polygons_to_mask(polygons, height, width))
            for label, polygons in groups.values()
        ]
        rel_dir = json_path.parent.relative_to(directory).as_posix()
        file_name = posixpath.normpath(posixpath.join(rel_dir, str(document["imagePath"]).replace("\\", "/")))
        result.append(ExportImage(file_name, width, height, instances))
    return result
