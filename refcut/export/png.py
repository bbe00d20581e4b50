"""Index PNG masks with a JSON label map.

Per image (subfolders kept, extension replaced by ``.png``):
``<out>/masks/<stem>.png`` instance ids 1..n (0 = background; uint8, or uint16 above 255
instances) and ``<out>/semantic/<stem>.png`` class ids 1..K in label order (0 = background).
``<out>/labels.json`` maps class ids to labels and, per image, instance ids to labels (and
scores). Lossless, holes included; where instances overlap the later one wins and a warning is
recorded. Images are copied to ``<out>/images/`` when an images folder is given.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from refcut.provenance import package_version
from refcut.export.files import atomic_write_json, atomic_write_png, copy_image, read_index_png
from refcut.export.records import ExportImage, ExportInstance, ExportJob

LABELS_FILE = "labels.json"


def _index_dtype(max_id: int) -> type:
    if max_id > np.iinfo(np.uint16).max:
        raise ValueError(f"an index PNG holds at most 65535 ids, got {max_id}")
    return np.uint8 if max_id <= np.iinfo(np.uint8).max else np.uint16


def write_png(job: ExportJob) -> Path:
    """Write instance and semantic index PNGs per image, then ``labels.json`` (last)."""
    semantic_dtype = _index_dtype(len(job.labels))
    images_entry = {}
    for image in job.images:
        instance_dtype = _index_dtype(len(image.instances))
        instance_map = np.zeros((image.height, image.width), dtype=instance_dtype)
        semantic_map = np.zeros((image.height, image.width), dtype=semantic_dtype)
        covered = np.zeros((image.height, image.width), dtype=bool)
        instances_entry = {}
        for instance_id, (number, instance) in enumerate(image.numbered(), start=1):
            if (covered & instance.mask).any():
                job.warnings.append(
                    f"{image.file_name}: instance {number} ({instance.label!r}) overlaps an earlier "
                    "instance; in the PNG the overlapping pixels belong to it"
                )
            instance_map[instance.mask] = instance_id
            semantic_map[instance.mask] = job.class_index(instance.label) + 1
            covered |= instance.mask
            instances_entry[str(instance_id)] = {
                "label": instance.label,
                "class_id": job.class_index(instance.label) + 1,
                "score": instance.score,
            }
            job.num_instances += 1
        mask_rel, semantic_rel = f"masks/{image.stem}.png", f"semantic/{image.stem}.png"
        atomic_write_png(job.out_dir / mask_rel, instance_map)
        atomic_write_png(job.out_dir / semantic_rel, semantic_map)
        if image.source is not None:
            copy_image(image.source, job.out_dir / "images" / image.file_name)
        images_entry[image.file_name] = {
            "mask": mask_rel,
            "semantic": semantic_rel,
            "width": image.width,
            "height": image.height,
            "instances": instances_entry,
        }
    document = {
        "tool": "refcut",
        "version": package_version(),
        "background": 0,
        "classes": {str(i + 1): name for i, name in enumerate(job.labels)},
        "images": images_entry,
    }
    path = job.out_dir / LABELS_FILE
    atomic_write_json(path, document, durable=True)
    return path


def read_png(directory: str | Path) -> list[ExportImage]:
    """Read a PNG export folder (or its ``labels.json``) back; one instance per listed id."""
    directory = Path(directory)
    if directory.is_file():  # the labels.json that export_dataset returned
        directory = directory.parent
    labels_path = directory / LABELS_FILE
    if not labels_path.is_file():
        raise FileNotFoundError(f"PNG export label map not found: {labels_path}")
    document = json.loads(labels_path.read_text(encoding="utf-8"))
    result = []
    for file_name, entry in document["images"].items():
        index = read_index_png(directory / entry["mask"])
        width, height = int(entry["width"]), int(entry["height"])
        if index.shape != (height, width):
            raise ValueError(f"{directory / entry['mask']}: size {index.shape[::-1]} != {(width, height)} in {labels_path}")
        instances = [
            ExportInstance(label=info["label"], mask=index == int(instance_id), score=info.get("score"))
            for instance_id, info in sorted(entry["instances"].items(), key=lambda kv: int(kv[0]))
        ]
        result.append(ExportImage(file_name, width, height, instances))
    return result
