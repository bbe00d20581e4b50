"""Storage-independent records the exporters consume and the readers produce."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from refcut.export.geometry import mask_to_polygons


@dataclass
class ExportInstance:
    """One annotated instance: its label and full-image HxW mask (non-zero = foreground)."""

    label: str
    mask: np.ndarray
    score: float | None = None


@dataclass
class ExportImage:
    """One image: ``file_name`` is its POSIX path relative to the images folder (subfolders allowed)."""

    file_name: str
    width: int
    height: int
    instances: list[ExportInstance] = field(default_factory=list)


@dataclass
class ExportSummary:
    """What an export wrote: the main output path, counts, and warnings about skipped or altered instances."""

    format: str
    path: Path
    out_dir: Path
    num_images: int = 0
    num_instances: int = 0
    num_skipped: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class PreparedImage:
    """A validated image: normalised relative path, output stem, and boolean masks (empty ones removed)."""

    file_name: str
    stem: str
    width: int
    height: int
    instances: list[ExportInstance]
    numbers: list[int] = field(default_factory=list)  # 1-based position of each instance in the input
    source: Path | None = None  # the checked image file to copy (inside the images folder), None when not copying

    def numbered(self):
        """(input number, instance) pairs; numbers count skipped empty instances, as users see them."""
        return zip(self.numbers or range(1, len(self.instances) + 1), self.instances)

    @property
    def rel_path(self) -> PurePosixPath:
        return PurePosixPath(self.file_name)


@dataclass
class ExportJob:
    """Everything a format writer needs; writers append to ``warnings`` and count skipped instances."""

    images: list[PreparedImage]
    labels: list[str]
    out_dir: Path
    images_dir: Path | None
    polygon_tolerance: float = 1.0
    min_polygon_area: float = 4.0
    warnings: list[str] = field(default_factory=list)
    num_instances: int = 0
    num_skipped: int = 0

    def skip(self, message: str) -> None:
        """Record an instance that could not be written."""
        self.warnings.append(message)
        self.num_skipped += 1

    def polygons(self, image: PreparedImage, index: int, instance: ExportInstance) -> list[np.ndarray]:
        """The instance's polygon rings; records a skip (and returns []) when none survive."""
        rings = mask_to_polygons(instance.mask, self.polygon_tolerance, self.min_polygon_area)
        if not rings:
            self.skip(f"{image.file_name}: instance {index} ({instance.label!r}) is too small or thin for a polygon; skipped")
        return rings

    def class_index(self, label: str) -> int:
        """0-based index of a label in the label order."""
        return self.labels.index(label)
