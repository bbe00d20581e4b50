"""Can a trained embedding of the frozen DINOv2 tokens tell a reference's parts apart in the target
better than their raw cosine? (a diagnostic, session 16; led to the decoder's ``reference_metric``)

Training pairs are drawn as ``refcut train`` draws them from the view cache (eo_v8b's config), with
the objects split into two folds by a hash of their id: the embedding (a 2-layer MLP, 384 -> 384
-> 128, L2-normalised) is trained on pairs whose target and reference are both in the training
fold, with a per-token BCE on ``scale * (best cosine to a positive exemplar - best cosine to a
negative one) + bias`` (weight 1 inside the target's box grown 2x, 0.3 elsewhere), and evaluated
as the AUC of that score inside the grown box on 400 pairs of the other fold, per dataset (the
row at step 0 is the raw cosine, the decoder's nearest-exemplar maps, and beside it the training-free
one-shot ridge probe of the decoder's ``reference_ridge``, fitted per pair on the reference's own
tokens, for a few lambdas). Needs the 336-px view cache (``refcut cache-views``, see
docs/training.md). Usage::

    python scripts/metric_probe.py --steps 0 --pairs 300                 # raw cosine and ridge only, ~2 min
    python scripts/metric_probe.py --steps 3000 > metric_probe.log      # + the trained embedding, ~20 min on 2 cores
"""

from __future__ import annotations

import argparse
import time
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from refcut.model.click_decoder import ReferenceMetric, fit_reference_ridge
from refcut.training.config import TrainConfig
from refcut.training.trainer import box_region_weight, build_cached_dataset, build_initial_model

GRID = 24
DATA = "../shared/data"


def evaluation_fold(sample_id: str) -> bool:
    return zlib.crc32(sample_id.encode()) % 5 == 0


def coverage(mask: torch.Tensor) -> torch.Tensor:
    """``1 x S x S`` -> ``1 x 1 x G x G`` area coverage of each token."""
    return F.adaptive_avg_pool2d(mask[None].float(), GRID)


def exemplars(weight: torch.Tensor) -> torch.Tensor:
    """Tokens at least half as covered as the best one (the decoder's rule)."""
    return (weight > 0) & (weight >= 0.5 * weight.max()) if weight.max() > 0 else torch.zeros_like(weight, dtype=torch.bool)


def draw(dataset, count: int, evaluation: bool, index: int) -> tuple[list[dict], int]:
    """``count`` pairs with a positive reference mask, both objects in the chosen fold, from sample ``index`` on."""
    pairs = []
    while len(pairs) < count:
        index += 1
        s = dataset[index]
        if not s["has_reference"] or s["positive_mask"].sum() == 0:
            continue
        if evaluation_fold(s["target_id"]) != evaluation or evaluation_fold(s["reference_id"]) != evaluation:
            continue
        gt = coverage(s["gt"])
        if gt.max() < 0.5:
            continue
        pairs.append({
            "target": F.normalize(s["tokens"].float().flatten(1), dim=0).T,
            "reference": F.normalize(s["reference_tokens"].float().flatten(1), dim=0).T,
            "positive_cover": coverage(s["positive_mask"]).flatten(),
            "negative_cover": coverage(s["negative_mask"]).flatten(),
            "gt": gt.flatten(), "weight": box_region_weight(gt).flatten(),
            "dataset": next(n for n in dataset.names if (n, s["target_id"]) in dataset.objects),
        })  # fmt: skip
        pairs[-1]["positive"] = exemplars(pairs[-1]["positive_cover"])
        pairs[-1]["negative"] = exemplars(pairs[-1]["negative_cover"])
    return pairs, index


def score(pair: dict, metric: ReferenceMetric | None) -> torch.Tensor:
    target, reference = pair["target"], pair["reference"]
    if metric is not None:
        target, reference = (F.normalize(metric.embed(t), dim=-1) for t in (target, reference))
    best = [(target @ reference[pair[k]].T).amax(1) if pair[k].any() else None for k in ("positive", "negative")]
    if metric is None:
        return best[0] if best[1] is None else best[0] - best[1]
    negative = metric.no_negative.expand_as(best[0]) if best[1] is None else best[1]
    return metric.scale * (best[0] - negative) + metric.bias


def auc(values: np.ndarray, labels: np.ndarray) -> float | None:
    positive, negative = values[labels], values[~labels]
    if not len(positive) or not len(negative):
        return None
    ranks = rankdata(np.concatenate([positive, negative]))
    return float((ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative)))


def ridge_score(pair: dict, lam: float) -> torch.Tensor:
    """The target tokens' score under the ridge fitted on the reference's tokens (the decoder's rule)."""
    grid = lambda tokens: tokens.T.reshape(1, -1, GRID, GRID)  # noqa: E731
    weights = fit_reference_ridge(grid(pair["reference"]), pair["positive_cover"].reshape(1, 1, GRID, GRID), lam)[0]
    return pair["target"] @ weights[:-1] + weights[-1]


@torch.no_grad()
def evaluate(pairs: list[dict], metric: ReferenceMetric | None, ridge: float | None = None) -> dict[str, float]:
    rows = []
    for pair in pairs:
        inside = (pair["weight"] == 1).numpy()
        values = ridge_score(pair, ridge) if ridge is not None else score(pair, metric)
        value = auc(values.numpy()[inside], (pair["gt"] >= 0.5).numpy()[inside])
        if value is not None:
            rows.append((pair["dataset"], value))
    return {name: round(float(np.mean([v for n, v in rows if n == name])), 4) for name in sorted({n for n, _ in rows})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--pairs", type=int, default=400, help="held-out pairs")
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = TrainConfig().with_overrides({
        "model.preset": "encode_once_vits14", "model.init": "scratch", "seed": 7, "data.views": ["full", "flip", "object", "part"],
        "data.datasets": [f"{DATA}/car-parts", f"{DATA}/clothing-co-parsing", f"{DATA}/coco-mval-half"],
        "data.combination_weights": {"single": 0.35, "pair": 0.3, "whole": 0.1, "random": 0.25},
    })  # fmt: skip
    dataset = build_cached_dataset(config, build_initial_model(config), progress=False)
    start = time.time()
    held_out, _ = draw(dataset, args.pairs, True, 10**7)
    print("step 0 (raw cosine) AUC", evaluate(held_out, None), flush=True)
    for lam in (1.0, 10.0, 100.0):
        print(f"ridge lambda {lam:g} AUC", evaluate(held_out, None, ridge=lam), flush=True)
    torch.manual_seed(0)
    metric = ReferenceMetric(384, 128)
    optimizer = torch.optim.AdamW(metric.parameters(), lr=args.lr, weight_decay=1e-4)
    index = 0
    for step in range(1, args.steps + 1):
        batch, index = draw(dataset, args.batch, False, index)
        loss = sum((F.binary_cross_entropy_with_logits(score(p, metric), p["gt"], reduction="none") * p["weight"]).sum()
                   / p["weight"].sum() for p in batch) / len(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == int(0.8 * args.steps):
            for group in optimizer.param_groups:
                group["lr"] *= 0.1
        if step % args.every == 0 or step == args.steps:
            print(f"step {step} loss {loss.item():.3f} AUC {evaluate(held_out, metric)} {time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
