"""RefCut's generic "parts folder" format, for bringing your own data.

Layout::

    my-dataset/
      refcut_parts.json
      images/<any sub-path>/<name>.<jpg|png|...>
      labels/<any sub-path>/<name>.png      # 8- or 16-bit single-channel label map, same HxW as the image

``refcut_parts.json``::

    {
      "format": "refcut_parts", "version": 1,
      "kind": "parts",                       # or "objects" (one label, usually named "object")
      "labels": {"1": "hood", "2": "wheel"}, # label value -> part name; 0 is always background
      "ignore_label": 255,                   # optional: pixels excluded from IoU
      "default_category": "car",             # optional: category of samples that name none
      "samples": [
        {"image": "0001.jpg",                # path under images/ (required)
         "category": "car",                  # optional (default_category, else none)
         "label_map": "0001.png",            # optional, path under labels/ (default: image path with .png)
         "id": "0001.jpg#car",               # optional sample id (default "<image>#<category or object>")
         "parts": ["hood", "wheel"]}         # optional: part names present (else read from the label map)
      ]
    }

One entry is one object; several objects of one image are several entries with their own label
maps and ids. A label map cannot hold overlapping parts: :func:`convert_to_parts_folder` paints
parts largest first so that small parts stay visible where parts overlap.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from refcut.data.dataset import PartDataset, read_json
from refcut.data.io import check_mask_size, image_size, read_image, read_label_image
from refcut.data.sample import PartSample

SPEC_FILE = "refcut_parts.json"


def load_parts_folder(path: str | Path) -> PartDataset:
    """Load a parts folder (see the module docstring for the format)."""
    root = Path(path)
    if root.is_file() and root.name == SPEC_FILE:
        root = root.parent
    spec_path = root / SPEC_FILE
    spec = read_json(spec_path)
    kind = spec.get("kind", "parts")
    if kind not in ("parts", "objects"):
        raise ValueError(f"{spec_path}: 'kind' must be 'parts' or 'objects', got {kind!r}")
    try:
        labels = {int(k): str(v) for k, v in spec["labels"].items()}
        entries = list(spec["samples"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{spec_path}: needs 'labels' {{value: name}} and a 'samples' list ({exc})") from exc
    if 0 in labels:
        raise ValueError(f"{spec_path}: label 0 is background and cannot name a part")
    ignore_label = spec.get("ignore_label")
    ignore_label = int(ignore_label) if ignore_label is not None else None
    value_of = {name: value for value, name in labels.items()}
    default_category = spec.get("default_category")
    problems: list[str] = []
    samples: list[PartSample] = []
    for number, entry in enumerate(entries):
        try:
            image_rel = str(entry["image"])
        except (KeyError, TypeError):
            problems.append(f"{spec_path}: sample {number} has no 'image'; skipped")
            continue
        image_path = root / "images" / image_rel
        label_path = root / "labels" / str(entry.get("label_map") or Path(image_rel).with_suffix(".png"))
        category = entry.get("category", default_category)
        try:
            size = image_size(image_path)
            if "parts" in entry:
                part_names = tuple(sorted(str(p) for p in entry["parts"]))
                missing = [p for p in part_names if p not in value_of]
                if missing:
                    raise ValueError(f"{spec_path}: sample {image_rel} lists parts {missing} absent from 'labels'")
                if not label_path.is_file():
                    raise FileNotFoundError(f"label map not found: {label_path}")
            else:
                values = read_label_image(label_path)
                check_mask_size(values, size, label_path, image_path)
                present = [int(v) for v in np.unique(values) if v != 0 and v != ignore_label]
                unknown = [v for v in present if v not in labels]
                if unknown:
                    raise ValueError(f"{label_path}: label values {unknown[:5]} are not named in {spec_path}")
                part_names = tuple(sorted(labels[v] for v in present))
        except (OSError, ValueError) as exc:
            problems.append(f"{exc}; skipped")
            continue
        if not part_names:
            continue
        parts = {name: value_of[name] for name in part_names}
        samples.append(
            PartSample(
                sample_id=str(entry.get("id") or f"{image_rel}#{category or 'object'}"),
                category=category,
                image_path=image_path,
                part_names=part_names,
                load_image=(lambda p=image_path: read_image(p)),
                load_part_masks=(lambda l=label_path, parts=parts, s=size, p=image_path: _parts(l, parts, s, p)),
                load_ignore_mask=(lambda l=label_path, s=size, p=image_path: _ignore(l, ignore_label, s, p)),
            )
        )
    return PartDataset(name=root.name, kind=kind, samples=samples, problems=problems)


def _parts(label_path: Path, parts: dict[str, int], size, image_path) -> dict[str, np.ndarray]:
    values = read_label_image(label_path)
    check_mask_size(values, size, label_path, image_path)
    return {name: values == value for name, value in parts.items()}


def _ignore(label_path: Path, ignore_label: int | None, size, image_path) -> np.ndarray | None:
    if ignore_label is None:
        return None
    values = read_label_image(label_path)
    check_mask_size(values, size, label_path, image_path)
    ignore = values == ignore_label
    return ignore if ignore.any() else None


def _safe_file_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def convert_to_parts_folder(dataset: PartDataset, out_dir: str | Path) -> Path:
    """Write ``dataset`` as a parts folder in ``out_dir`` (created; must be empty or absent).

    Images are copied once per distinct image file; each sample gets its own label map
    ``labels/<sample id made file-safe>.png`` and keeps its id. Returns the spec file path.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output folder is not empty: {out}")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    names = sorted({p for s in dataset.samples for p in s.part_names})
    value_of = {name: i + 1 for i, name in enumerate(names)}
    wide = len(names) > 254
    ignore_label = 65535 if wide else 255
    image_names: dict[Path, str] = {}
    used_names: set[str] = set()
    entries = []
    any_ignore = False
    for sample in dataset.samples:
        image_name = image_names.get(sample.image_path)
        if image_name is None:
            image_name = sample.image_path.name
            if image_name in used_names:
                image_name = f"{_safe_file_name(sample.image_path.parent.name)}/{image_name}"
            suffix = 2
            while image_name in used_names:
                image_name = f"{sample.image_path.stem}_{suffix}{sample.image_path.suffix}"
                suffix += 1
            used_names.add(image_name)
            image_names[sample.image_path] = image_name
            (out / "images" / image_name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(sample.image_path, out / "images" / image_name)
        masks = sample.load_part_masks()
        shape = next(iter(masks.values())).shape
        label_map = np.zeros(shape, np.uint16 if wide else np.uint8)
        for name in sorted(masks, key=lambda n: (-int(masks[n].sum()), n)):  # largest first
            label_map[masks[name]] = value_of[name]
        ignore = sample.load_ignore_mask()
        if ignore is not None and ignore.any():
            label_map[ignore] = ignore_label
            any_ignore = True
        label_name = _safe_file_name(sample.sample_id) + ".png"
        Image.fromarray(label_map).save(out / "labels" / label_name)
        painted = {n for n in masks if np.any(label_map == value_of[n])}
        entries.append({
            "image": image_name, "label_map": label_name, "category": sample.category,
            "id": sample.sample_id, "parts": sorted(painted),
        })
    spec = {
        "format": "refcut_parts", "version": 1, "kind": dataset.kind,
        "labels": {str(v): n for n, v in value_of.items()}, "samples": entries,
    }
    if any_ignore:
        spec["ignore_label"] = ignore_label
    spec_path = out / SPEC_FILE
    spec_path.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return spec_path
