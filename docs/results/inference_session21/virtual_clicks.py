"""First click with the reference: virtual positive clicks outside the first mask (session 21).

After the first click (mode `both`, the shipped default + guided-grabcut, train split), candidate
tokens outside the first mask (token coverage < 0.3) form components; each kept component gets a
virtual positive click at its best token and the decoder runs again with the real and virtual
clicks. Prints the mean IoU after one click per setting against the plain first click.

- `exemplar`: candidates whose nearest positive exemplar beats the nearest negative one by
  `delta`, the positive by `tau`, and the click affinity by `caff`; every component of >= 2
  tokens gets a click.
- `ridge`: session 16's ridge probe (`fit_reference_ridge`, lambda 10) fitted on the reference,
  calibrated by the click: candidates score >= `alpha` x the clicked token's score (3 x 3 max)
  and lie in the top 5% (the click in the top 10%); components of >= `min_tokens` tokens, the
  `max_virtual` with the largest summed score.

Usage: python docs/results/inference_session21/virtual_clicks.py exemplar|ridge DATASET LIMIT OUT.json
"""
import importlib
import json
import sys

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from refcut.clicker import Clicker
from refcut.evaluation.protocol import apply_reference, iou
from refcut.evaluation.runner import plan_dataset, to_episode_data
from refcut.model.click_decoder import click_affinity, fit_reference_ridge
from refcut.predictor.predictor import RefCutPredictor
from refcut.predictor.transforms import full_box, paste_back, points_to_network

torch.set_num_threads(1)
signal, ds_path, limit, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
api = importlib.import_module("refcut.data")
plan = plan_dataset(ds_path, "train", limit, None, "refcut.data")
dataset = api.open_dataset(ds_path, split="train")
p = RefCutPredictor.from_pretrained()
model = p.model
S = p.input_size
VARIANTS = {
    "exemplar": [(d, t, c) for d in (0.06, 0.09, 0.12) for t in (0.5, 0.6) for c in (0.0, 0.4)],  # delta, tau, caff
    "ridge": [(a, m, k) for a in (0.7, 0.9) for m in (2, 4) for k in (1, 3)],  # alpha, min_tokens, max_virtual
}[signal]


def exemplar_clicks(view, points, _pts, prob, variant, _ridge):
    delta, tau, caff = variant
    unit = view.unit_features
    near = model.decoder.reference_maps(unit, p._prompt)[0, 2:4]  # nearest positive, negative exemplar
    affinity = click_affinity(unit, points, S)[0, 0]
    g = unit.shape[-1]
    covered = F.adaptive_avg_pool2d(prob, (g, g))[0, 0]
    score = (near[0] - near[1]).numpy()
    candidates = ((covered < 0.3) & (near[0] - near[1] > delta) & (near[0] > tau) & (affinity > caff)).numpy()
    return components(candidates, score, g, min_tokens=2, max_virtual=None)


def ridge_clicks(view, _points, pts, prob, variant, ridge):
    alpha, min_tokens, max_virtual = variant
    if ridge is None:
        return []
    unit = view.unit_features[0]
    g = unit.shape[-1]
    score = (torch.einsum("dhw,d->hw", unit, ridge[:-1]) + ridge[-1]).numpy()
    r0, c0 = int(pts[0, 0] * g / S), int(pts[0, 1] * g / S)
    clicked = score[max(0, r0 - 1):r0 + 2, max(0, c0 - 1):c0 + 2].max()
    covered = F.adaptive_avg_pool2d(prob, (g, g))[0, 0].numpy()
    p90, p95 = np.percentile(score, [90, 95])
    candidates = (covered < 0.3) & (score >= alpha * clicked) & (score >= p95) & (clicked >= p90) & (clicked > 0)
    return components(candidates, score, g, min_tokens, max_virtual)


def components(candidates, score, g, min_tokens, max_virtual):
    """A virtual click (y, x, 1) in view pixels at the best token of each component, largest summed score first."""
    labelled, count = ndimage.label(candidates)
    found = []
    for i in range(1, count + 1):
        region = labelled == i
        if region.sum() < min_tokens:
            continue
        r, c = np.unravel_index(np.argmax(np.where(region, score, -9)), score.shape)
        found.append((score[region].sum(), [(r + 0.5) * S / g, (c + 0.5) * S / g, 1.0]))
    if max_virtual is None:
        return [click for _, click in found]
    return [click for _, click in sorted(found, key=lambda t: -t[0])[:max_virtual]]


@torch.inference_mode()
def first_click_iou(data, clicker, variant=None, ridge=None):
    H, W = data.gt_mask.shape
    coords, labels = clicker.coords_and_labels()
    view = p._view(p._image_key, p._image, full_box(H, W))
    pts = points_to_network(coords[:, ::-1].astype(float), full_box(H, W), S)
    points = torch.tensor(np.concatenate([pts, labels[:, None]], 1), dtype=torch.float32)[None]
    prev = torch.zeros(1, 1, S, S)
    prob = torch.sigmoid(model.decode(view, prev, points, p._prompt))
    extra = []
    if variant is not None and p._prompt is not None and p._prompt.exemplars is not None:
        extra = (exemplar_clicks if signal == "exemplar" else ridge_clicks)(view, points, pts, prob, variant, ridge)
        if extra:
            points = torch.cat([points, torch.tensor(extra, dtype=torch.float32)[None]], 1)
            prob = torch.sigmoid(model.decode(view, prev, points, p._prompt))
    full = paste_back(prob[0, 0], full_box(H, W), H, W).clamp(0, 1).numpy().astype(np.float32)
    return iou(p._finish(full, coords, labels).mask, data.gt_mask, data.ignore_mask), len(extra)


records = []
for _, episode in plan.selected:
    data = to_episode_data(api.load_episode(dataset, episode, reference_mode="both"), episode)
    record = {"id": episode.episode_id, "kind": episode.kind}
    p.set_image(data.image)
    for mode in ("both", "none"):
        apply_reference(p, data, mode)
        clicker = Clicker(data.gt_mask, data.ignore_mask)
        clicker.make_next_click(np.zeros_like(data.gt_mask))
        record[mode] = first_click_iou(data, clicker)[0]
        if mode == "both":
            ridge = None
            if signal == "ridge" and data.positive_mask is not None and data.positive_mask.any():
                features = next(reversed(p._feature_cache.values()))  # the reference just set
                mask = torch.from_numpy(data.positive_mask)[None, None].float()
                ridge = fit_reference_ridge(F.normalize(features, dim=1), mask, 10.0)[0]
            record["variants"] = [first_click_iou(data, clicker, v, ridge) for v in VARIANTS]
    records.append(record)
json.dump(records, open(out, "w"))
plain = np.array([r["both"] for r in records])
print("both", round(plain.mean(), 4), "none", round(np.mean([r["none"] for r in records]), 4))
for i, variant in enumerate(VARIANTS):
    values = np.array([r["variants"][i][0] for r in records])
    clicks = np.mean([r["variants"][i][1] for r in records])
    print(variant, round(values.mean(), 4), "diff", round(values.mean() - plain.mean(), 4), "virt/ep", round(clicks, 2),
          "better", int((values > plain + 0.01).sum()), "worse", int((values < plain - 0.01).sum()))
