"""How much does a reference tell about the target *without any training*?

For the same held-out episodes as ``refcut eval --split heldout --limit N``, this runs the frozen
DINOv2 ViT-S/14 import (no RefCut training) on the target and the reference, builds prototypes
by masked average pooling of the reference's positive mask, negative mask and the rest of the
reference image ("background"), and labels every target patch by its most similar prototype.
It reports the IoU with the ground truth of:

- ``proto``: patches whose nearest prototype is the positive one (no click at all);
- ``proto+click``: of those, the connected region that contains the protocol's first click
  (the interior-most pixel of the target); if the click's patch is not positive, the click's
  patch alone;
- ``best-threshold``: the positive-minus-rest similarity thresholded at the best value for each
  episode (an upper bound for a per-pixel rule on these features, not a usable method).

It is a diagnostic for the design discussion in ``docs/training.md`` ("Outcome"), not a method
of ``refcut eval``. Usage::

    python scripts/reference_probe.py ../shared/data/car-parts ... --limit 30 --size 448 --out DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from refcut.clicker import Clicker
from refcut.evaluation.protocol import iou
from refcut.evaluation.runner import plan_dataset
from refcut.data import load_episode, open_dataset
from refcut.model import ModelConfig, build_model
from refcut.model.reference import masked_average_pool
from refcut.weights.dinov2_onnx import init_from_dinov2


def _features(model, image: np.ndarray, size: int) -> torch.Tensor:
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return F.normalize(model.encode_reference(tensor)[0], dim=0)  # D x g x g


def _prototype(features: torch.Tensor, mask: np.ndarray | None) -> torch.Tensor | None:
    """Unit-length masked average of ``features`` (D x g x g) under ``mask``; None for no or empty mask."""
    if mask is None:
        return None
    pooled, has_mask = masked_average_pool(features[None], torch.from_numpy(mask.astype(np.float32))[None, None])
    return F.normalize(pooled[0], dim=0) if bool(has_mask[0]) else None


def _to_image(grid_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(grid_map.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def probe_episode(model, data, size: int) -> dict[str, float]:
    """IoUs of the three read-outs for one loaded episode (reference mode ``both``)."""
    target = _features(model, data.target_image, size)
    reference = _features(model, data.reference_image, size)
    grid = target.shape[-1]
    negative = data.negative_mask if data.negative_mask is not None else np.zeros_like(data.positive_mask)
    background = ~(data.positive_mask | negative)
    prototypes = [p for p in (_prototype(reference, data.positive_mask), _prototype(reference, negative),
                              _prototype(reference, background)) if p is not None]
    similarity = torch.einsum("dhw,kd->khw", target, torch.stack(prototypes)).numpy()
    positive_score = similarity[0] - similarity[1:].max(axis=0)  # > 0: nearest prototype is the positive one
    shape = data.gt_mask.shape
    score = _to_image(positive_score, shape)
    proto = score > 0

    clicker = Clicker(data.gt_mask, data.ignore_mask)
    click = clicker.make_next_click(np.zeros(shape, dtype=bool))
    count, components = cv2.connectedComponents(proto.astype(np.uint8), connectivity=8)
    if proto[click.y, click.x]:
        proto_click = components == components[click.y, click.x]
    else:
        patch_h, patch_w = shape[0] / grid, shape[1] / grid
        proto_click = np.zeros(shape, dtype=bool)
        row, col = int(click.y // patch_h), int(click.x // patch_w)
        proto_click[int(row * patch_h):int((row + 1) * patch_h), int(col * patch_w):int((col + 1) * patch_w)] = True

    thresholds = np.append(np.quantile(score, np.linspace(0.0, 0.995, 200)), 0.0)
    best = max(iou(score > t, data.gt_mask, data.ignore_mask) for t in thresholds)
    return {
        "proto": iou(proto, data.gt_mask, data.ignore_mask),
        "proto+click": iou(proto_click, data.gt_mask, data.ignore_mask),
        "best-threshold": best,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+")
    parser.add_argument("--split", default="heldout")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--size", type=int, default=448, help="input side in px (multiple of 14)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    model = build_model(ModelConfig.from_preset("vit_small_dinov2", image_size=args.size)).eval()
    init_from_dinov2(model)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, summary = [], {}
    start = time.perf_counter()
    for path in args.datasets:
        plan = plan_dataset(path, args.split, args.limit, None, "refcut.data")
        dataset = open_dataset(path, split=args.split)
        for index, episode in plan.selected:
            data = load_episode(dataset, episode, reference_mode="both")
            rows.append({"dataset": plan.name, "episode_index": index, "episode_id": episode.episode_id,
                         **{k: round(v, 4) for k, v in probe_episode(model, data, args.size).items()}})
        per = [r for r in rows if r["dataset"] == plan.name]
        summary[plan.name] = {k: round(statistics.mean(r[k] for r in per), 3)
                              for k in ("proto", "proto+click", "best-threshold")} | {"episodes": len(per)}
        print(plan.name, summary[plan.name], flush=True)
    (args.out / "per_episode.json").write_text(json.dumps(rows, indent=1))
    (args.out / "summary.json").write_text(json.dumps(
        {"size": args.size, "split": args.split, "limit": args.limit, "seconds": round(time.perf_counter() - start),
         "mean_iou": summary}, indent=1))


if __name__ == "__main__":
    main()
