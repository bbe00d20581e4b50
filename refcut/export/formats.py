"""Export entry point: validate the records, dispatch to a format writer, write atomically.

Formats (see each module for its layout):

* ``coco`` / ``coco-polygons`` -- :mod:`refcut.export.coco` (``annotations.json``)
* ``yolo-seg`` -- :mod:`refcut.export.yolo` (``data.yaml`` + ``labels/``)
* ``png`` -- :mod:`refcut.export.png` (``labels.json`` + ``masks/`` + ``semantic/``)
* ``labelme`` -- :mod:`refcut.export.labelme` (one JSON per image)

File names keep their subfolders in every format. Per-image outputs are named after the file name
without its extension, so two images differing only by extension in one folder (``a.jpg``,
``a.png``) are rejected for the per-image formats. Image files are read only through
:func:`refcut.export.files.resolve_inside`: a file that resolves outside the images folder (a
symlink out of it) is refused with a ValueError naming it. Instances with an empty mask are skipped, and
so are instances too small for a polygon in the polygon formats; each skip is reported in
:attr:`ExportSummary.warnings` (and logged).

Atomicity: into a new ``out_dir`` everything is written in a hidden sibling folder that is renamed
to ``out_dir`` at the end, so a failed export leaves nothing behind. Into an existing folder each
file is replaced atomically and the main file (JSON / YAML) is written last.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from refcut.export.coco import read_coco, write_coco
from refcut.export.files import image_size, resolve_inside
from refcut.export.labelme import read_labelme, write_labelme
from refcut.export.png import read_png, write_png
from refcut.export.records import ExportImage, ExportInstance, ExportJob, ExportSummary, PreparedImage
from refcut.export.yolo import read_yolo_seg, write_yolo_seg

logger = logging.getLogger(__name__)

FORMATS = ("coco", "coco-polygons", "yolo-seg", "png", "labelme")

_WRITERS: dict[str, Callable[[ExportJob], Path]] = {
    "coco": lambda job: write_coco(job, polygons=False),
    "coco-polygons": lambda job: write_coco(job, polygons=True),
    "yolo-seg": write_yolo_seg,
    "png": write_png,
    "labelme": write_labelme,
}
_PER_IMAGE_FORMATS = ("yolo-seg", "png", "labelme")

__all__ = [
    "FORMATS",
    "export_dataset",
    "export_dataset_with_summary",
    "read_coco",
    "read_labelme",
    "read_png",
    "read_yolo_seg",
]


def _normalise_file_name(file_name: str) -> str:
    if not isinstance(file_name, str) or not file_name.strip():
        raise ValueError(f"image file_name must be a non-empty string, got {file_name!r}")
    posix = file_name.replace("\\", "/")
    normalised = posixpath.normpath(posix)
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":") or normalised.split("/")[0] == "..":
        raise ValueError(f"image file_name must be a relative path inside the images folder: {file_name!r}")
    if normalised in (".", ""):
        raise ValueError(f"image file_name {file_name!r} names no file")
    return normalised


def _prepare(images: list[ExportImage], labels: list[str], fmt: str, images_dir: Path | None) -> tuple[list[PreparedImage], list[str]]:
    """Validate every record before anything is written; returns prepared images and warnings."""
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {labels}")
    if any(not isinstance(name, str) or not name for name in labels):
        raise ValueError(f"labels must be non-empty strings, got {labels}")
    known = set(labels)
    warnings: list[str] = []
    prepared: list[PreparedImage] = []
    seen_names: dict[str, str] = {}
    seen_stems: dict[str, str] = {}
    for image in images:
        name = _normalise_file_name(image.file_name)
        if name in seen_names:
            raise ValueError(f"image {name!r} is listed twice")
        seen_names[name] = name
        stem = posixpath.splitext(name)[0]
        if fmt in _PER_IMAGE_FORMATS and stem in seen_stems:
            raise ValueError(
                f"images {seen_stems[stem]!r} and {name!r} would share the output name {stem!r} in format {fmt!r}"
            )
        seen_stems[stem] = name
        width, height = image.width, image.height
        if not (isinstance(width, (int, np.integer)) and isinstance(height, (int, np.integer)) and width > 0 and height > 0):
            raise ValueError(f"image {name!r}: width and height must be positive integers, got {width}x{height}")
        width, height = int(width), int(height)
        source = None
        if images_dir is not None:
            source = resolve_inside(images_dir, name)  # the only path the writers read (symlinks out refused)
            if not source.is_file():
                raise FileNotFoundError(f"image {name!r} not found in the images folder")
            actual = image_size(source)
            if actual != (width, height):
                raise ValueError(
                    f"image {name!r}: file is {actual[0]}x{actual[1]} but the record says {width}x{height}"
                )
        instances, numbers = [], []
        for index, instance in enumerate(image.instances, start=1):
            if instance.label not in known:
                raise ValueError(f"image {name!r}: instance {index} has unknown label {instance.label!r} (labels: {labels})")
            mask = np.asarray(instance.mask)
            if mask.shape != (height, width):
                raise ValueError(
                    f"image {name!r}: instance {index} mask has shape {mask.shape}, expected (height, width) = {(height, width)}"
                )
            mask = mask if mask.dtype == bool else mask != 0
            if not mask.any():
                warnings.append(f"{name}: instance {index} ({instance.label!r}) has an empty mask; skipped")
                continue
            instances.append(ExportInstance(label=instance.label, mask=mask, score=instance.score))
            numbers.append(index)
        prepared.append(
            PreparedImage(file_name=name, stem=stem, width=width, height=height, instances=instances, numbers=numbers,
                          source=source)
        )
    return prepared, warnings


def export_dataset_with_summary(
    images: list[ExportImage],
    labels: list[str],
    fmt: str,
    out_dir: str | Path,
    images_dir: str | Path | None = None,
    polygon_tolerance: float = 1.0,
    min_polygon_area: float = 4.0,
) -> ExportSummary:
    """Export ``images`` in format ``fmt`` under ``out_dir``; returns what was written and any warnings.

    ``labels`` fixes the class order (COCO ids 1..K, YOLO 0..K-1, PNG 1..K). With ``images_dir``
    the images are checked (exist, size matches the record) and copied into the export.
    Raises ValueError for an unknown format or an inconsistent record (naming the image) before
    writing anything.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    images_dir = Path(images_dir) if images_dir is not None else None
    if images_dir is not None and not images_dir.is_dir():
        raise FileNotFoundError(f"images folder not found: {images_dir}")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"export destination exists and is not a folder: {out_dir}")
    prepared, warnings = _prepare(list(images), list(labels), fmt, images_dir)
    skipped = len(warnings)

    fresh = not out_dir.exists()
    if fresh:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        work_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    else:
        work_dir = out_dir
    job = ExportJob(
        images=prepared,
        labels=list(labels),
        out_dir=work_dir,
        images_dir=images_dir,
        polygon_tolerance=polygon_tolerance,
        min_polygon_area=min_polygon_area,
        warnings=warnings,
        num_skipped=skipped,
    )
    try:
        main_path = _WRITERS[fmt](job)
        if fresh:
            os.rename(work_dir, out_dir)
            main_path = out_dir / main_path.relative_to(work_dir)
    except BaseException:
        if fresh:
            shutil.rmtree(work_dir, ignore_errors=True)
        raise
    for message in job.warnings:
        logger.warning("export %s: %s", fmt, message)
    return ExportSummary(
        format=fmt,
        path=main_path,
        out_dir=out_dir,
        num_images=len(prepared),
        num_instances=job.num_instances,
        num_skipped=job.num_skipped,
        warnings=job.warnings,
    )


def export_dataset(
    images: list[ExportImage],
    labels: list[str],
    fmt: str,
    out_dir: str | Path,
    images_dir: str | Path | None = None,
    polygon_tolerance: float = 1.0,
    min_polygon_area: float = 4.0,
) -> Path:
    """Like :func:`export_dataset_with_summary` but returns only the main output path.

    Main path: ``annotations.json`` (COCO), ``data.yaml`` (YOLO-seg), ``labels.json`` (PNG),
    the output folder (LabelMe). Warnings are logged to ``refcut.export.formats``.
    """
    return export_dataset_with_summary(
        images, labels, fmt, out_dir, images_dir, polygon_tolerance, min_polygon_area
    ).path


READERS: dict[str, Callable[[Path], list[ExportImage]]] = {
    "coco": read_coco,
    "coco-polygons": read_coco,
    "yolo-seg": read_yolo_seg,
    "png": read_png,
    "labelme": read_labelme,
}
