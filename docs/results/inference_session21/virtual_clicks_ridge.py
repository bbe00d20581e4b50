"""First click with the reference: virtual positive clicks where the reference's ridge probe scores like the clicked token (session 21).

The ridge probe of session 16 (`fit_reference_ridge`, lambda 10) is fitted on the reference and
scored on the target's tokens; it is calibrated by the click: candidates outside the first mask
score at least `alpha` x the clicked token's score and lie in the top 5% (the click in the top
10%); components of at least `min_tokens` tokens, the `max_virtual` largest, get a virtual click.
Usage: python docs/results/inference_session21/virtual_clicks_ridge.py DATASET LIMIT OUT.json [debug]
"""
import sys, numpy as np, importlib, json
import torch, torch.nn.functional as F
from scipy import ndimage
from refcut.evaluation.runner import plan_dataset, to_episode_data
from refcut.evaluation.protocol import apply_reference, iou
from refcut.clicker import Clicker
from refcut.predictor.predictor import RefCutPredictor
from refcut.predictor.transforms import full_box, points_to_network, paste_back
from refcut.model.click_decoder import fit_reference_ridge
torch.set_num_threads(1)
ds_path, limit, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
api = importlib.import_module("refcut.data")
plan = plan_dataset(ds_path, "train", limit, None, "refcut.data")
dataset = api.open_dataset(ds_path, split="train")
p = RefCutPredictor.from_pretrained()
model = p.model
S = p.input_size
DEBUG = len(sys.argv) > 4
VARIANTS = [(a, m, k) for a in (0.7, 0.9) for m in (2, 4) for k in (1, 3)]  # score >= a * clicked score; min tokens; max virtual clicks

@torch.inference_mode()
def run(data, clicker, variant, ridge_w):
    H, W = data.gt_mask.shape
    coords, labels = clicker.coords_and_labels()
    view = p._view(p._image_key, p._image, full_box(H, W))
    pts = points_to_network(coords[:, ::-1].astype(float), full_box(H, W), S)
    points = torch.tensor(np.concatenate([pts, labels[:, None]], 1), dtype=torch.float32)[None]
    prev = torch.zeros(1, 1, S, S)
    ref = p._prompt
    prob = torch.sigmoid(model.decode(view, prev, points, ref))
    nvirt = 0
    if variant is not None and ridge_w is not None:
        alpha, min_tokens, max_virtual = variant
        unit = view.unit_features[0]
        g = unit.shape[-1]
        score = (torch.einsum("dhw,d->hw", unit, ridge_w[:-1]) + ridge_w[-1]).numpy()
        r0, c0 = int(pts[0, 0] * g / S), int(pts[0, 1] * g / S)
        clicked = score[max(0, r0 - 1):r0 + 2, max(0, c0 - 1):c0 + 2].max()
        covered = F.adaptive_avg_pool2d(prob, (g, g))[0, 0].numpy()
        if DEBUG: print("clicked", round(float(clicked),3), "score range", np.percentile(score,[50,90,99]).round(3), "uncovered>a*clicked", int(((covered<0.3)&(score>=alpha*clicked)).sum()))
        p90, p95 = np.percentile(score, [90, 95])
        cand = (covered < 0.3) & (score >= alpha * clicked) & (score >= p95) & (clicked >= p90) & (clicked > 0)
        lab, n = ndimage.label(cand)
        comps = []
        for i in range(1, n + 1):
            region = lab == i
            if region.sum() < min_tokens: continue
            s = np.where(region, score, -9)
            r, c = np.unravel_index(np.argmax(s), s.shape)
            comps.append((score[region].sum(), [(r + 0.5) * S / g, (c + 0.5) * S / g, 1.0]))
        extra = [c for _, c in sorted(comps, key=lambda t: -t[0])[:max_virtual]]
        if extra:
            nvirt = len(extra)
            points2 = torch.cat([points, torch.tensor(extra, dtype=torch.float32)[None]], 1)
            prob = torch.sigmoid(model.decode(view, prev, points2, ref))
    full = paste_back(prob[0, 0], full_box(H, W), H, W).clamp(0, 1).numpy().astype(np.float32)
    res = p._finish(full, coords, labels)
    return iou(res.mask, data.gt_mask, data.ignore_mask), nvirt

recs = []
for idx, ep in plan.selected:
    data = to_episode_data(api.load_episode(dataset, ep, reference_mode="both"), ep)
    r = {'id': ep.episode_id, 'kind': ep.kind}
    p.set_image(data.image)
    for mode in ("both", "none"):
        apply_reference(p, data, mode)
        clicker = Clicker(data.gt_mask, data.ignore_mask)
        clicker.make_next_click(np.zeros_like(data.gt_mask))
        r[mode] = run(data, clicker, None, None)[0]
        if mode == "both":
            ridge_w = None
            if data.positive_mask is not None and data.positive_mask.any():
                feats = next(reversed(p._feature_cache.values()))  # the reference just set
                unit_ref = F.normalize(feats, dim=1)
                mask = torch.from_numpy(data.positive_mask)[None, None].float()
                ridge_w = fit_reference_ridge(unit_ref, mask, 10.0)[0]
            r['v'] = [run(data, clicker, v, ridge_w) for v in VARIANTS]
    recs.append(r)
json.dump(recs, open(out, 'w'))
b = np.array([r['both'] for r in recs]); print('both', round(b.mean(), 4), 'none', round(np.mean([r['none'] for r in recs]), 4))
for i, v in enumerate(VARIANTS):
    vals = np.array([r['v'][i][0] for r in recs]); nv = np.mean([r['v'][i][1] for r in recs])
    print(v, round(vals.mean(), 4), 'diff', round(vals.mean() - b.mean(), 4), 'virt/ep', round(nv, 2), 'better', int((vals > b + 0.01).sum()), 'worse', int((vals < b - 0.01).sum()))
