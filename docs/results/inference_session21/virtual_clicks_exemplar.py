"""First click with the reference: virtual positive clicks at reference-matched tokens outside the first mask (session 21).

Tokens outside the first mask whose nearest positive exemplar beats the nearest negative one by
`delta` (and the positive by `tau`, the click's own affinity by `caff`) form components; each gets
a virtual positive click at its best token and the decoder runs again. Prints the mean IoU after
one click (`both`, + guided-grabcut) per setting against the plain first click.
Usage: python docs/results/inference_session21/virtual_clicks_exemplar.py DATASET LIMIT OUT.json
"""
import sys, numpy as np, importlib, json
import torch, torch.nn.functional as F
from scipy import ndimage
from refcut.evaluation.runner import plan_dataset, to_episode_data
from refcut.evaluation.protocol import apply_reference, iou
from refcut.clicker import Clicker
from refcut.predictor.predictor import RefCutPredictor
from refcut.predictor.transforms import full_box, points_to_network, paste_back
torch.set_num_threads(1)
ds_path, limit, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
api = importlib.import_module("refcut.data")
plan = plan_dataset(ds_path, "train", limit, None, "refcut.data")
dataset = api.open_dataset(ds_path, split="train")
p = RefCutPredictor.from_pretrained()
model = p.model
S = p.input_size
VARIANTS = [(d, t, c) for d in (0.06, 0.09, 0.12) for t in (0.5, 0.6) for c in (0.0, 0.4)]

@torch.inference_mode()
def run(data, clicker, variant):
    H, W = data.gt_mask.shape
    coords, labels = clicker.coords_and_labels()
    view = p._view(p._image_key, p._image, full_box(H, W))
    pts = points_to_network(coords[:, ::-1].astype(float), full_box(H, W), S)
    points = torch.tensor(np.concatenate([pts, labels[:, None]], 1), dtype=torch.float32)[None]
    prev = torch.zeros(1, 1, S, S)
    ref = p._prompt
    logits = model.decode(view, prev, points, ref)
    prob = torch.sigmoid(logits)
    nvirt = 0
    if variant is not None and ref is not None and ref.exemplars is not None:
        delta, tau, caff = variant
        unit = view.unit_features
        near = model.decoder.reference_maps(unit, ref)[0, 2:4]  # pos, neg nearest
        from refcut.model.click_decoder import click_affinity
        ca = click_affinity(unit, points, S)[0, 0]
        g = unit.shape[-1]
        covered = F.adaptive_avg_pool2d(prob, (g, g))[0, 0]
        score = near[0] - near[1]
        cand = (covered < 0.3) & (score > delta) & (near[0] > tau) & (ca > caff)
        lab, n = ndimage.label(cand.numpy())
        extra = []
        for i in range(1, n + 1):
            region = lab == i
            if region.sum() < 2: continue
            s = np.where(region, score.numpy(), -9)
            r, c = np.unravel_index(np.argmax(s), s.shape)
            extra.append([(r + 0.5) * S / g, (c + 0.5) * S / g, 1.0])
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
        r[mode] = run(data, clicker, None)[0]
        if mode == "both":
            r['v'] = [run(data, clicker, v) for v in VARIANTS]
    recs.append(r)
json.dump(recs, open(out, 'w'))
b = np.mean([r['both'] for r in recs]); n = np.mean([r['none'] for r in recs])
print('both', round(b, 4), 'none', round(n, 4))
for i, v in enumerate(VARIANTS):
    vals = np.array([r['v'][i][0] for r in recs]); nv = np.mean([r['v'][i][1] for r in recs])
    print(v, round(vals.mean(), 4), 'diff', round(vals.mean() - b, 4), 'virt/ep', round(nv, 2), 'better', int((vals > np.array([r['both'] for r in recs]) + 0.01).sum()), 'worse', int((vals < np.array([r['both'] for r in recs]) - 0.01).sum()))
