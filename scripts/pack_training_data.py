"""Pack the training splits, downscaled, into one small archive for a lent accelerator.

The feature cache itself is ~1.3 MB per view (a few GB), too large to carry; the resized
training images are not: each dataset's ``train`` split is written as a RefCut "parts folder"
(``refcut_parts.json``, JPEG images with the longer side at most ``--max-side``, PNG part label
maps), file stems unchanged so the held-out split stays the same, then tarred. On the other
machine: untar, then ``refcut cache-views --data PACK/<name> ...`` and ``refcut train --device
cuda ...`` on those folders (encoding on a GPU takes minutes).

    python scripts/pack_training_data.py ../shared/data/car-parts ../shared/data/clothing-co-parsing \\
        ../shared/data/coco-mval-half --out runs/training_pack.tar.gz
"""

from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from refcut.data import open_dataset
from refcut.training.view_cache import label_map

LIMIT_MIB = 60


def pack_dataset(path: Path, out: Path, max_side: int, quality: int) -> int:
    """Write the train split of ``path`` as a downscaled parts folder in ``out``; returns the sample count."""
    dataset = open_dataset(path, split="train")
    names = sorted({p for s in dataset.samples for p in s.part_names})
    if len(names) > 254:
        raise ValueError(f"{path}: {len(names)} part names do not fit 8-bit label maps")
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    entries = []
    written: dict[str, Path] = {}
    for index, sample in enumerate(dataset.samples):
        image = sample.load_image()
        masks = {k: v.astype(bool) for k, v in sample.load_part_masks().items() if k in sample.part_names}
        labels = label_map(masks, tuple(names), image.shape[:2]) if masks else np.zeros(image.shape[:2], np.uint8)
        height, width = image.shape[:2]
        scale = min(1.0, max_side / max(height, width))
        if scale < 1:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
        stem = sample.image_path.stem  # kept: the held-out split is decided by the stem
        if written.setdefault(stem, sample.image_path) != sample.image_path:
            raise ValueError(f"{path}: two images share the file stem {stem!r}")
        image_name, label_name = f"{stem}.jpg", f"{stem}__{index}.png"
        if not (out / "images" / image_name).exists():
            Image.fromarray(image).save(out / "images" / image_name, quality=quality)
        Image.fromarray(labels).save(out / "labels" / label_name)
        entries.append({"image": image_name, "label_map": label_name, "id": sample.sample_id,
                        "category": sample.category, "parts": list(sample.part_names)})
    spec = {"format": "refcut_parts", "version": 1, "kind": dataset.kind,
            "labels": {str(i + 1): name for i, name in enumerate(names)}, "samples": entries}
    (out / "refcut_parts.json").write_text(json.dumps(spec))
    return len(entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="the .tar.gz to write")
    parser.add_argument("--max-side", type=int, default=448)
    parser.add_argument("--quality", type=int, default=88)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "training_pack"
        for path in args.datasets:
            count = pack_dataset(path, root / path.resolve().name, args.max_side, args.quality)
            print(f"{path}: {count} training samples")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(args.out, "w:gz") as tar:
            tar.add(root, arcname="training_pack")
    mib = args.out.stat().st_size / 2**20
    print(f"{args.out}: {mib:.1f} MiB")
    if mib > LIMIT_MIB:
        raise SystemExit(f"the pack is {mib:.1f} MiB, over {LIMIT_MIB} MiB: lower --max-side or --quality")


if __name__ == "__main__":
    main()
