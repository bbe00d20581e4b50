"""A project = a directory with the SQLite database + the folder of images it annotates."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from refcut.app.images import ImageLoadError, list_image_files, oriented_size, resolve_inside
from refcut.app.masks import decode_png, encode_rle
from refcut.app.storage import ImageRow, ProjectStorage

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

    @property
    def name(self) -> str:
        return self.project_dir.resolve().name

    def image_path(self, image: ImageRow) -> Path:
        """Absolute path of a registered image, checked to be inside the image folder."""
        path = resolve_inside(self.images_dir, image.path)
        if not path.is_file():
            raise FileNotFoundError(f"image file {image.path} is no longer in {self.images_dir}")
        return path

    def rescan(self) -> None:
        """Register new images (reading only their headers) and flag vanished ones."""
        known = self.storage.known_image_paths()
        entries = []
        for rel in list_image_files(self.images_dir):
            if rel in known and known[rel][2] is None and known[rel][0] > 0:
                entries.append((rel, *known[rel]))
                continue
            try:
                width, height = oriented_size(resolve_inside(self.images_dir, rel))
                entries.append((rel, width, height, None))
            except (ImageLoadError, ValueError, OSError) as error:
                entries.append((rel, 0, 0, str(error)))
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

    Includes the images marked done (or every readable image with ``include_all``); images that
    left the folder are skipped. Returns the exporter's :class:`~refcut.export.ExportSummary`.
    """
    from refcut.app.masks import decode_rle
    from refcut.export import ExportImage, ExportInstance, export_dataset_with_summary

    storage = project.storage
    labels = storage.list_labels()
    names = {label.id: label.name for label in labels}
    by_image: dict[int, list] = {}
    for annotation in storage.list_annotations():
        by_image.setdefault(annotation.image_id, []).append(annotation)
    records = []
    for image in storage.list_images():
        if image.error is not None or not (include_all or image.done or image.id in by_image):
            continue
        instances = [ExportInstance(label=names[a.label_id], mask=decode_rle(a.rle), score=a.score)
                     for a in by_image.get(image.id, []) if a.label_id in names]
        records.append(ExportImage(file_name=image.path, width=image.width, height=image.height, instances=instances))
    return export_dataset_with_summary(records, [label.name for label in labels], fmt, Path(out_dir),
                                       images_dir=project.images_dir if copy_images else None)
