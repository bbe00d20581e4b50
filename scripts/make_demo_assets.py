"""Build the bundled demo project assets in ``refcut/assets/demo/`` from Clothing Co-Parsing.

Clothing Co-Parsing (Yang, Luo, Lin, CVPR 2014; github.com/bearpaw/clothing-co-parsing) is
Apache-2.0. This script copies a few photos, downscaled, and derives the "hair" reference mask of
the first one from its pixel-level ground-truth label map.

Usage: python scripts/make_demo_assets.py [--data ../shared/data/clothing-co-parsing]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

PHOTO_IDS = ("0001", "0002", "0003", "0005", "0006", "0007")
REFERENCE_PHOTO = "0001"
REFERENCE_LABEL = "hair"
MAX_SIDE = 600
JPEG_QUALITY = 85
REPO_ROOT = Path(__file__).resolve().parents[1]


def ccp_label_names(data_dir: Path) -> list[str]:
    """The 59 CCP label names, index 0 = background."""
    cells = scipy.io.loadmat(data_dir / "label_list.mat")["label_list"][0]
    return [str(cell[0]) if len(cell) else "" for cell in cells]


def downscaled_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, MAX_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "clothing-co-parsing")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "refcut" / "assets" / "demo")
    args = parser.parse_args()
    data_dir: Path = args.data
    if not (data_dir / "photos").is_dir():
        raise FileNotFoundError(f"Clothing Co-Parsing not found at {data_dir}")

    images_out = args.out / "images"
    images_out.mkdir(parents=True, exist_ok=True)
    for photo_id in PHOTO_IDS:
        with Image.open(data_dir / "photos" / f"{photo_id}.jpg") as photo:
            rgb = photo.convert("RGB")
            small = rgb.resize(downscaled_size(*rgb.size), Image.Resampling.LANCZOS)
            small.save(images_out / f"ccp_{photo_id}.jpg", quality=JPEG_QUALITY, optimize=True)

    names = ccp_label_names(data_dir)
    label_map = scipy.io.loadmat(data_dir / "annotations" / "pixel-level" / f"{REFERENCE_PHOTO}.mat")["groundtruth"]
    positive = label_map == names.index(REFERENCE_LABEL)
    with Image.open(images_out / f"ccp_{REFERENCE_PHOTO}.jpg") as small:
        target_size = small.size
    mask_image = Image.fromarray(positive.astype(np.uint8) * 255).resize(target_size, Image.Resampling.NEAREST)
    mask_image.save(args.out / f"reference_{REFERENCE_LABEL}.png", optimize=True)

    project = {
        "labels": [
            {"name": REFERENCE_LABEL, "reference": {"image": f"ccp_{REFERENCE_PHOTO}.jpg",
                                                      "positive_png": f"reference_{REFERENCE_LABEL}.png"}},
            {"name": "shoes"},
        ]
    }
    (args.out / "demo_project.json").write_text(json.dumps(project, indent=2) + "\n")
    shutil.copy(data_dir / "LICENSE", args.out / "LICENSE-clothing-co-parsing.txt")
    (args.out / "ATTRIBUTION.md").write_text(
        "# Demo images\n\n"
        f"Photos {', '.join(PHOTO_IDS)} and the `{REFERENCE_LABEL}` reference mask (from the pixel-level ground truth\n"
        f"of photo {REFERENCE_PHOTO}) come from the Clothing Co-Parsing dataset\n"
        "(https://github.com/bearpaw/clothing-co-parsing, commit fe34fb7), licensed under the Apache License 2.0\n"
        "(see `LICENSE-clothing-co-parsing.txt`). Changes: downscaled to at most 600 px on the long side and\n"
        "re-encoded as JPEG quality 85; the mask was resized with nearest-neighbour sampling.\n\n"
        "W. Yang, P. Luo, L. Lin. Clothing Co-Parsing by Joint Image Segmentation and Labeling. CVPR 2014.\n"
        "Produced by `scripts/make_demo_assets.py`.\n"
    )
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
