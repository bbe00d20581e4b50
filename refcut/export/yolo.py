"""YOLO-seg in the Ultralytics layout.

``<out>/data.yaml`` (``train``/``val`` = ``images``, ``names`` by class index 0..K-1; no ``path``
key, so Ultralytics resolves folders relative to the YAML and the export can be moved),
``<out>/images/<file_name>`` (copies, when an images folder is given) and
``<out>/labels/<file_name minus extension>.txt`` with one row ``<class> x1 y1 ... xn yn``
(normalised pixel-index coordinates in [0, 1], >= 3 points) per polygon. Subfolders are kept.
Images without instances get an empty label file (a background image for Ultralytics).

YOLO-seg has no multi-part instances: an instance made of several pieces becomes several rows.
The sidecar ``<out>/refcut_yolo.json`` records image sizes and which rows form each instance, so
:func:`read_yolo_seg` can rebuild instances exactly; without it each row is one instance and the
sizes are read from the images in ``images/`` (EXIF orientation applied). Holes are filled.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import yaml

from refcut.provenance import package_version
from refcut.export.files import atomic_write_json, atomic_write_text, copy_image, find_image, image_size
from refcut.export.geometry import polygons_to_mask
from refcut.export.records import ExportImage, ExportInstance, ExportJob

DATA_YAML = "data.yaml"
SIDECAR = "refcut_yolo.json"


def _format_row(class_id: int, points: np.ndarray, width: int, height: int) -> str:
    normalised = np.clip(points / np.array([width, height], dtype=np.float64), 0.0, 1.0)
    return " ".join([str(class_id)] + [f"{v:.6f}" for v in normalised.ravel()])


def write_yolo_seg(job: ExportJob) -> Path:
    """Write labels, optional image copies, the sidecar and ``data.yaml`` (last)."""
    sidecar_images = []
    for image in job.images:
        rows: list[str] = []
        sidecar_instances = []
        for index, instance in image.numbered():
            rings = job.polygons(image, index, instance)
            if not rings:
                continue
            class_id = job.class_index(instance.label)
            first_row = len(rows)
            rows.extend(_format_row(class_id, ring, image.width, image.height) for ring in rings)
            sidecar_instances.append(
                {"label": instance.label, "rows": list(range(first_row, len(rows))), "score": instance.score}
            )
            job.num_instances += 1
        label_rel = f"labels/{image.stem}.txt"
        atomic_write_text(job.out_dir / label_rel, "".join(row + "\n" for row in rows))
        if image.source is not None:
            copy_image(image.source, job.out_dir / "images" / image.file_name)
        sidecar_images.append(
            {
                "file_name": image.file_name,
                "width": image.width,
                "height": image.height,
                "label_file": label_rel,
                "instances": sidecar_instances,
            }
        )
    atomic_write_json(
        job.out_dir / SIDECAR,
        {"tool": "refcut", "version": package_version(), "names": job.labels, "images": sidecar_images},
        indent=None,
    )
    data = {
        "train": "images",
        "val": "images",
        "nc": len(job.labels),
        "names": {i: name for i, name in enumerate(job.labels)},
    }
    path = job.out_dir / DATA_YAML
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True), durable=True)
    return path


def _parse_label_file(path: Path, num_classes: int) -> list[tuple[int, np.ndarray]]:
    """Rows of a YOLO-seg label file as (class id, (N, 2) normalised points)."""
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{line_no}"
        try:
            class_id = int(fields[0])
            values = np.array([float(v) for v in fields[1:]], dtype=np.float64)
        except ValueError:
            raise ValueError(f"{where}: not a YOLO-seg row (class id and numbers expected)") from None
        if not 0 <= class_id < num_classes:
            raise ValueError(f"{where}: class id {class_id} outside 0..{num_classes - 1}")
        if len(values) % 2 or len(values) < 6:
            raise ValueError(f"{where}: a segment needs an even number of coordinates, at least 3 points")
        if values.min() < 0 or values.max() > 1:
            raise ValueError(f"{where}: coordinates must be normalised to [0, 1]")
        rows.append((class_id, values.reshape(-1, 2)))
    return rows


def _row_mask(points: np.ndarray, width: int, height: int) -> np.ndarray:
    return polygons_to_mask([points * np.array([width, height], dtype=np.float64)], height, width)


def read_yolo_seg(directory: str | Path) -> list[ExportImage]:
    """Read a YOLO-seg export folder (``data.yaml`` + ``labels/``; or its ``data.yaml``) back into images.

    Class names come from ``data.yaml``. Image sizes and the grouping of rows into instances
    come from the RefCut sidecar when present; otherwise every row is an instance and each
    label file needs its image in ``images/`` (same relative path, any image extension).
    """
    directory = Path(directory)
    if directory.is_file():  # the data.yaml that export_dataset returned
        directory = directory.parent
    yaml_path = directory / DATA_YAML
    if not yaml_path.is_file():
        raise FileNotFoundError(f"YOLO data.yaml not found: {yaml_path}")
    data = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
    names = data.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=int)]
    if not isinstance(names, list):
        raise ValueError(f"{yaml_path}: 'names' must be a list or an index -> name mapping")
    names = [str(n) for n in names]

    sidecar_path = directory / SIDECAR
    if sidecar_path.is_file():
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
        result = []
        for entry in sidecar["images"]:
            width, height = int(entry["width"]), int(entry["height"])
            rows = _parse_label_file(directory / entry["label_file"], len(names))
            instances = []
            for group in entry["instances"]:
                if any(not 0 <= r < len(rows) for r in group["rows"]):
                    raise ValueError(f"{sidecar_path}: rows {group['rows']} missing from {entry['label_file']}")
                mask = np.zeros((height, width), dtype=bool)
                for r in group["rows"]:
                    mask |= _row_mask(rows[r][1], width, height)
                label = names[rows[group["rows"][0]][0]]
                instances.append(ExportInstance(label=label, mask=mask, score=group.get("score")))
            result.append(ExportImage(entry["file_name"], width, height, instances))
        return result

    labels_dir = directory / "labels"
    if not labels_dir.is_dir():
        raise FileNotFoundError(f"YOLO labels folder not found: {labels_dir}")
    result = []
    for label_path in sorted(labels_dir.rglob("*.txt")):
        rel_stem = label_path.relative_to(labels_dir).with_suffix("").as_posix()
        image_path = find_image(directory / "images", rel_stem)
        if image_path is None:
            raise FileNotFoundError(
                f"no image for {label_path} in {directory / 'images'} and no {SIDECAR} sidecar with image sizes"
            )
        width, height = image_size(image_path)
        instances = [
            ExportInstance(label=names[class_id], mask=_row_mask(points, width, height))
            for class_id, points in _parse_label_file(label_path, len(names))
        ]
        file_name = PurePosixPath(image_path.relative_to(directory / "images").as_posix()).as_posix()
        result.append(ExportImage(file_name, width, height, instances))
    return result
