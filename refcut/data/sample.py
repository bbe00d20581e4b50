"""The one internal representation every dataset loader produces.

A :class:`PartSample` is one object in one image: its named part masks (all
instances of a part name merged into one mask), the object category, and an id
that sorts in file-name order. Images and masks are loaded lazily through the
loader callables so no dataset is ever read whole into memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ImageLoader = Callable[[], np.ndarray]
"""Returns an HxWx3 uint8 RGB image."""
MasksLoader = Callable[[], dict[str, np.ndarray]]
"""Returns {part name: HxW bool mask}; every mask has the image's HxW."""
IgnoreLoader = Callable[[], "np.ndarray | None"]
"""Returns an HxW bool mask of pixels excluded from IoU, or None."""


@dataclass(frozen=True)
class PartSample:
    """One object of one image, with its parts (object-level datasets: one part, ``"object"``).

    ``sample_id`` is unique within its dataset and sorts in file-name order
    (e.g. ``"0001.jpg#0"``); ``part_names`` lists the parts present, sorted.
    """

    sample_id: str
    category: str | None
    image_path: Path
    part_names: tuple[str, ...]
    load_image: ImageLoader = field(repr=False, compare=False)
    load_part_masks: MasksLoader = field(repr=False, compare=False)
    load_ignore_mask: IgnoreLoader = field(default=lambda: None, repr=False, compare=False)


@dataclass(frozen=True)
class Episode:
    """One (target, reference) pair of the evaluation protocol.

    ``kind`` is ``"single"``, ``"pair"``, ``"whole"`` (part datasets) or
    ``"object"`` (object-level datasets). The ground truth is the union of
    ``target_parts`` of the target sample. The reference's positive mask is the
    union of ``positive_parts`` of the reference sample, its negative mask the
    union of ``negative_parts`` (either may be empty). ``reference_id`` is None
    and ``skipped_reason`` is set when no valid reference exists.
    """

    episode_id: str
    kind: str
    target_id: str
    target_parts: tuple[str, ...]
    reference_id: str | None
    positive_parts: tuple[str, ...]
    negative_parts: tuple[str, ...]
    skipped_reason: str | None = None
