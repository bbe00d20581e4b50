"""IoU after one click at other thresholds, with (`both`) and without (`none`) the reference (session 21).

The shipped default (+ guided-grabcut) on the train split; `_raw` rows threshold the network's own
probability before the boundary step.
Usage: python docs/results/inference_session21/first_click_threshold.py DATASET LIMIT OUT.json
"""
import sys, numpy as np, importlib, json
from refcut.evaluation.runner import plan_dataset, to_episode_data
from refcut.evaluation.protocol import iter_episode, iou
from refcut.predictor.predictor import RefCutPredictor
import torch; torch.set_num_threads(1)
ds_path, limit, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
api = importlib.import_module("refcut.data")
plan = plan_dataset(ds_path, "train", limit, None, "refcut.data")
dataset = api.open_dataset(ds_path, split="train")
p = RefCutPredictor.from_pretrained()
T=[0.2,0.3,0.4,0.49,0.6,0.7]
res=[]
for idx, ep in plan.selected:
    data = to_episode_data(api.load_episode(dataset, ep, reference_mode="both"), ep)
    r={'id':ep.episode_id,'kind':ep.kind}
    for mode in ("both","none"):
        step = next(iter(iter_episode(p, data, 1, reference_mode=mode)))
        raw = p._last_raw
        r[mode]=[iou(step.prob>t, data.gt_mask, data.ignore_mask) for t in T]
        r[mode+'_raw']=[iou(raw>t, data.gt_mask, data.ignore_mask) for t in T]
    res.append(r)
json.dump(res, open(out,'w'))
for mode in ("both","none","both_raw","none_raw"):
    print(mode, np.array([r[mode] for r in res]).mean(0).round(3))
