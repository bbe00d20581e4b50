"""Which frozen features tell the reference's parts apart in the target? (a diagnostic, session 15)

For the episodes of ``refcut eval --split SPLIT --limit N`` (reference mode ``both``), every target
token (336-px view, 24 x 24) is scored by its best cosine to the reference's tokens under the
positive mask minus its best cosine to those under the negative mask (the decoder's
nearest-exemplar maps, training-free), for DINOv2 ViT-S/14 blocks 4, 6, 8, 10 and 12 (with the
final LayerNorm), the EfficientNet-Lite0 stride-8 features pooled to the grid, CIELAB colour
(negative distance instead of cosine) and block 12 + colour (each standardised, summed). It
prints one line per episode and writes, per episode and feature, the AUC of separating the
ground-truth tokens from the others over the whole image and (``_reg``) inside the target's box
grown 2x. Usage::

    python scripts/feature_probe.py train 40 ../shared/data/clothing-co-parsing ../shared/data/car-parts --out OUT.json
"""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from refcut.evaluation.runner import plan_dataset, to_episode_data
from refcut.model.image_encoder import ViTEncoder
from refcut.weights.native import DEFAULT_MODEL_DIR, load_pretrained

SIZE, GRID = 336, 24
BLOCKS = (3, 5, 7, 9, 11)


def view(image: np.ndarray) -> torch.Tensor:
    pixels = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(pixels, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)


def features(image: np.ndarray, encoder: ViTEncoder, edge_encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``D x GRID x GRID`` maps per feature kind (unit-norm except colour)."""
    pixels = view(image)
    tokens = encoder(pixels)
    width = tokens.shape[1] // len(BLOCKS)
    out = {f"b{b + 1}": F.normalize(tokens[:, i * width:(i + 1) * width], dim=1)[0] for i, b in enumerate(BLOCKS)}
    out["edge8"] = F.normalize(F.adaptive_avg_pool2d(edge_encoder(pixels)[1], GRID), dim=1)[0]
    small = cv2.resize(np.ascontiguousarray(image[..., :3]), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    out["lab"] = torch.from_numpy(cv2.resize(lab, (GRID, GRID), interpolation=cv2.INTER_AREA)).permute(2, 0, 1) / 100.0
    return out


def grid(mask: np.ndarray) -> np.ndarray:
    return cv2.resize(np.asarray(mask, np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA)


def exemplar_score(target: torch.Tensor, reference: torch.Tensor, positive: np.ndarray, negative: np.ndarray,
                   colour: bool) -> np.ndarray | None:
    """Per target token: best match to the positive exemplars minus best match to the negative ones."""
    dim = target.shape[0]
    tokens, ref_tokens = target.reshape(dim, -1).T, reference.reshape(dim, -1).T
    best = []
    for mask in (positive, negative):
        flat = mask.reshape(-1)
        chosen = flat >= 0.5 * flat.max() if flat.max() > 0 else np.zeros_like(flat, bool)
        if not chosen.any():
            best.append(None)
            continue
        exemplars = ref_tokens[torch.from_numpy(chosen)]
        similarity = -torch.cdist(tokens, exemplars) if colour else tokens @ exemplars.T
        best.append(similarity.max(1).values)
    if best[0] is None:
        return None
    return (best[0] if best[1] is None else best[0] - best[1]).numpy()


def auc(score: np.ndarray, label: np.ndarray) -> float:
    positive, negative = score[label == 1], score[label == 0]
    if not len(positive) or not len(negative):
        return float("nan")
    ranks = rankdata(np.concatenate([positive, negative]))
    return float((ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative)))


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split")
    parser.add_argument("limit", type=int)
    parser.add_argument("datasets", nargs="+")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    model, _ = load_pretrained(DEFAULT_MODEL_DIR)
    encoder = ViTEncoder(replace(model.config.encoder, output_blocks=BLOCKS))
    encoder.load_state_dict(model.encoder.state_dict())
    encoder.eval()
    api = importlib.import_module("refcut.data")
    rows = []
    for path in args.datasets:
        plan = plan_dataset(path, args.split, args.limit, None, "refcut.data")
        dataset = api.open_dataset(path, split=args.split)
        for _, episode in plan.selected:
            data = to_episode_data(api.load_episode(dataset, episode, reference_mode="both"), episode)
            if data.reference_image is None or data.positive_mask is None:
                continue
            target = features(data.image, encoder, model.edge_encoder)
            reference = features(data.reference_image, encoder, model.edge_encoder)
            gt = grid(data.gt_mask)
            label = np.full(gt.shape, -1)
            label[gt >= 0.5], label[gt <= 0.1] = 1, 0
            ys, xs = np.nonzero(gt)
            cy, cx, hh, hw = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2, np.ptp(ys) + 1, np.ptp(xs) + 1
            region = np.zeros(gt.shape, bool)
            region[max(0, int(cy - hh)):int(cy + hh) + 1, max(0, int(cx - hw)):int(cx + hw) + 1] = True
            positive = grid(data.positive_mask)
            negative = grid(data.negative_mask) if data.negative_mask is not None else np.zeros_like(positive)
            scores = {k: exemplar_score(target[k], reference[k], positive, negative, k == "lab") for k in target}
            if scores["b12"] is not None:
                scores["b12+lab"] = scores["b12"] / (scores["b12"].std() + 1e-6) + scores["lab"] / (scores["lab"].std() + 1e-6)
            row = {"dataset": path.rstrip("/").split("/")[-1], "episode": data.episode_id, "kind": data.kind}
            for name, score in scores.items():
                if score is not None:
                    row[name] = auc(score, label.reshape(-1))
                    row[name + "_reg"] = auc(score[region.reshape(-1)], label[region].reshape(-1))
            rows.append(row)
            print(row["episode"][:40], {k: round(v, 2) for k, v in row.items() if k.endswith("_reg")}, flush=True)
    with open(args.out, "w") as handle:
        json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
