"""Does the with-reference prediction break the clicks where the plain one would not? (session 21)

Runs the shipped default (+ guided-grabcut) in mode `both` on the train split and, at every click,
also decodes the same step without the reference; records which clicks each prediction violates
and both raw IoUs, then prints how much switching to the plain decode would change the IoU.
Usage: python docs/results/inference_session21/click_consistency.py DATASET LIMIT OUT.json
"""
import sys, json, numpy as np, importlib, time
from refcut.evaluation.runner import plan_dataset, to_episode_data
from refcut.evaluation.protocol import iter_episode, iou
from refcut.predictor.predictor import RefCutPredictor
import torch
torch.set_num_threads(1)
ds_path, limit, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
api = importlib.import_module("refcut.data")
plan = plan_dataset(ds_path, "train", limit, None, "refcut.data")
dataset = api.open_dataset(ds_path, split="train")
p = RefCutPredictor.from_pretrained()
orig = p._predict_encode_once
stash = {}
def wrapped(box, prev_t, points_yx, labels):
    prob = orig(box, prev_t, points_yx, labels)
    if p._prompt is not None:
        prompt = p._prompt; p._prompt = None
        try: stash['plain'] = orig(box, prev_t, points_yx, labels)
        finally: p._prompt = prompt
    stash['ref'] = prob
    return prob
p._predict_encode_once = wrapped
def viol(prob, clicks):
    v = []
    for c in clicks:
        y, x = c.y, c.x
        v.append(int((prob[y, x] > 0.49) != bool(c.is_positive)))
    return v
recs = []
for idx, ep in plan.selected:
    data = to_episode_data(api.load_episode(dataset, ep, reference_mode="both"), ep)
    rows = []
    for step in iter_episode(p, data, 20, reference_mode="both"):
        gt = data.gt_mask
        ref, plain = stash['ref'], stash.get('plain')
        rows.append(dict(iou=step.iou, vfinal=viol(step.pred.astype(float), step.clicks), vref=viol(ref, step.clicks),
                         vplain=viol(plain, step.clicks) if plain is not None else None,
                         iou_ref_raw=iou(ref > 0.49, gt, data.ignore_mask),
                         iou_plain_raw=iou(plain > 0.49, gt, data.ignore_mask) if plain is not None else None))
        stash.pop('plain', None)
    recs.append(dict(id=ep.episode_id, rows=rows))
    print(ep.episode_id, ' '.join(f"{r['iou']:.2f}" for r in rows[:10]), flush=True)
json.dump(recs, open(out, 'w'))

pre = []  # steps before the episode first reached 0.85
for r in recs:
    for k, row in enumerate(r['rows']):
        if k == 0 or row['vplain'] is None:
            continue
        if max(x['iou'] for x in r['rows'][:k]) >= 0.85:
            break
        vr, vp = sum(row['vref']), sum(row['vplain'])
        pre.append((vr, vp, row['vref'][-1], row['vplain'][-1], row['iou_plain_raw'] - row['iou_ref_raw']))
a = np.array(pre)
print('steps before 85%:', len(a))
for name, m in [('all', np.ones(len(a), bool)), ('plain violates fewer clicks', a[:, 1] < a[:, 0]),
                ('reference breaks the latest click', a[:, 2] == 1),
                ('... and the plain decode keeps it', (a[:, 2] == 1) & (a[:, 3] == 0))]:
    g = a[m, 4]
    print(f'  {name:36s} n={m.sum():4d} IoU change if switched {g.mean() if len(g) else 0:+.3f}',
          f'better by >0.05 {(g > 0.05).mean() if len(g) else 0:.2f} worse by >0.05 {(g < -0.05).mean() if len(g) else 0:.2f}')
