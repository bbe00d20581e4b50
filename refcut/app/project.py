"""A project = a directory with the SQLite database + the folder of images it annotates."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from refcut.app.images import ImageCache, ImageLoadError, Scaled, check_image, list_image_files, resolve_inside
from refcut.app.masks import decode_png, encode_rle
from refcut.app.storage import ImageRow, ProjectStorage

logger = logging.getLogger(__name__)

DEMO_ASSETS = Path(__file__).resolve().parents[1] / "assets" / "demo"


def default_demo_dir() -> Path:
    """User-writable place for the demo project (``$XDG_CACHE_HOME/refcut/demo-project``)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "refcut" / "demo-project"


@dataclass
class Project:
    """Storage plus the image folder; every image read goes through :meth:`image_path`."""

    project_dir: Path
    images_dir: Path
    storage: ProjectStorage
    cache: ImageCache = field(default_factory=ImageCache, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.project_dir.resolve().name

    def image_path(self, image: ImageRow) -> Path:
        """Absolute path of a registered image, checked to be inside the image folder."""
        path = resolve_inside(self.images_dir, image.path)
        if not path.is_file():
            raise FileNotFoundError(f"image file {image.path} is no longer in the image folder")
        return path

    def load_scaled(self, image: ImageRow, max_side: int) -> Scaled:
        """A registered image decoded with its long side at most ``max_side`` (cached; see :class:`ImageCache`)."""
        if image.error:
            raise ImageLoadError(image.error)
        return self.cache.get(self.image_path(image), max_side, image.path)

    def hide_paths(self, text: str) -> str:
        """``text`` with this project's absolute folders replaced by paths relative to the project.

        A file in the image folder is named by its path there (as the page lists images), one in
        the project folder by its path in the project; the folders themselves by what they are.
        """
        folders = {str(self.images_dir.resolve()): "the image folder", str(self.project_dir.resolve()): "the project folder"}
        for folder in sorted(folders, key=len, reverse=True):  # the image folder may lie inside the project folder
            if folder != os.sep:
                text = text.replace(folder + os.sep, "")
                text = re.sub(re.escape(folder) + r"(?![\w-]|\.\w)", folders[folder], text)
        return text

    def rescan(self) -> None:
        """Register new images and flag vanished ones; a new image's data is checked to decode (cheaply)."""
        known = self.storage.known_image_paths()
        entries = []
        for rel in list_image_files(self.images_dir):
            if rel in known and known[rel][2] is None and known[rel][0] > 0:
                entries.append((rel, *known[rel]))
                continue
            try:
                width, height = check_image(resolve_inside(self.images_dir, rel), rel)
                entries.append((rel, width, height, None))
            except (ImageLoadError, ValueError, OSError) as error:
                entries.append((rel, 0, 0, self.hide_paths(str(error))))
        self.storage.sync_images(entries)


def open_project(project_dir: Path, images_dir: Path | None = None) -> Project:
    """Create or open the project in ``project_dir``; ``images_dir`` is required the first time."""
    project_dir = Path(project_dir).expanduser()
    storage = ProjectStorage(project_dir)
    stored = storage.get_meta("images_dir")
    if images_dir is None:
        if stored is None:
            raise ValueError(f"{project_dir} is a new project: pass --images DIR with the images to annotate")
        images_dir = Path(stored)
    images_dir = Path(images_dir).expanduser().resolve()
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder {images_dir} does not exist")
    if stored != str(images_dir):
        storage.set_meta("images_dir", str(images_dir))
    project = Project(project_dir=project_dir, images_dir=images_dir, storage=storage)
    project.rescan()
    return project


def open_demo_project(project_dir: Path | None = None) -> Project:
    """Create (first time) or open the bundled Clothing Co-Parsing demo project in a user-writable folder."""
    project_dir = Path(project_dir or default_demo_dir()).expanduser()
    images_dir = project_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for source in sorted((DEMO_ASSETS / "images").glob("*.jpg")):
        target = images_dir / source.name
        if not target.exists():
            shutil.copyfile(source, target)
    for extra in ("ATTRIBUTION.md", "LICENSE-clothing-co-parsing.txt"):
        if not (project_dir / extra).exists():
            shutil.copyfile(DEMO_ASSETS / extra, project_dir / extra)
    project = open_project(project_dir, images_dir)
    if project.storage.get_meta("demo_initialised") is None:
        spec = json.loads((DEMO_ASSETS / "demo_project.json").read_text())
        paths = {image.path: image for image in project.storage.list_images()}
        existing = {label.name for label in project.storage.list_labels()}
        for entry in spec["labels"]:
            if entry["name"] in existing:
                continue
            label = project.storage.create_label(entry["name"])
            reference = entry.get("reference")
            if reference and reference["image"] in paths:
                positive = decode_png((DEMO_ASSETS / reference["positive_png"]).read_bytes())
                project.storage.set_reference(label.id, paths[reference["image"]].id, encode_rle(positive), None, "demo")
        project.storage.set_meta("demo_initialised", "1")
    return project


def export_project(project: Project, fmt: str, out_dir: Path, copy_images: bool = True, include_all: bool = False):
    """Write the project's live instances in ``fmt`` (see :data:`refcut.export.FORMATS`) under ``out_dir``.

    Includes the images marked done (or every readable image with ``include_all``). No live
    instance is left out silently: one on an image that left the folder, cannot be read or (when
    copying images) resolves outside the image folder, or one whose label was deleted, is named
    in the summary's warnings and counted as skipped. Returns the exporter's
    :class:`~refcut.export.ExportSummary`.
    """
    from refcut.app.masks import decode_rle
    from refcut.export import ExportImage, ExportInstance, export_dataset_with_summary

    storage = project.storage
    labels = storage.list_labels(include_deleted=True)
    live = {label.id: label.name for label in labels if not label.deleted}
    names = {label.id: label.name for label in labels}
    by_image: dict[int, list] = {}
    for annotation in storage.list_annotations(include_deleted_labels=True):
        by_image.setdefault(annotation.image_id, []).append(annotation)
    records, dropped, num_dropped = [], [], 0
    for image in storage.list_images(include_missing=True):
        annotations = by_image.get(image.id, [])
        reason = None
        if image.missing:
            reason = "the image file is no longer in the image folder"
        elif image.error is not None:
            reason = f"the image cannot be read ({image.error})"
        elif copy_images:
            try:
                project.image_path(image)
            except (ValueError, FileNotFoundError) as error:
                reason = project.hide_paths(str(error))
        if reason is not None:
            if annotations:
                ids = ", ".join(str(a.id) for a in annotations)
                dropped.append(f"{image.path}: {len(annotations)} instance(s) not exported (ids {ids}): {reason}")
                num_dropped += len(annotations)
            continue
        if not (include_all or image.done or annotations):
            continue
        instances = []
        for annotation in annotations:
            if annotation.label_id not in live:
                dropped.append(f"{image.path}: instance {annotation.id} not exported: its label "
                               f"{names.get(annotation.label_id, annotation.label_id)!r} was deleted")
                num_dropped += 1
                continue
            instances.append(ExportInstance(label=live[annotation.label_id], mask=decode_rle(annotation.rle),
                                            score=annotation.score))
        records.append(ExportImage(file_name=image.path, width=image.width, height=image.height, instances=instances))
    summary = export_dataset_with_summary(records, list(live.values()), fmt, Path(out_dir),
                                          images_dir=project.images_dir if copy_images else None)
    for message in dropped:
        logger.warning("export %s: %s", fmt, message)
    summary.warnings[:0] = dropped
    summary.num_skipped += num_dropped
    return summary
