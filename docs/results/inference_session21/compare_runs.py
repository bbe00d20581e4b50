"""Paired NoC@85 and IoU after one click of a (possibly partial) `refcut eval` run against another run's per_episode.csv.

Usage: python docs/results/inference_session21/compare_runs.py RUN_DIR OTHER/per_episode.csv [OTHER_METHOD_PREFIX]
(RUN_DIR's episodes.jsonl is read, so a stopped run counts its finished episodes; the other run's
rows are those whose method starts with OTHER_METHOD_PREFIX, default `base`.)
"""
import json, csv, sys, numpy as np, collections
def noc(ious, t=0.85):
    for i, v in enumerate(ious):
        if v >= t: return i + 1
    return 20
run = sys.argv[1]; base_csv = sys.argv[2]
rows = [json.loads(l) for l in open(run + '/episodes.jsonl')]
base = {}
for r in csv.DictReader(open(base_csv)):
    if r['study'] != 'main' or not r['method'].startswith(sys.argv[3] if len(sys.argv) > 3 else 'base'): continue
    base[(r['dataset'], r['mode'], r['episode_id'])] = (int(r['NoC@85']), float(r['iou_1']))
d = collections.defaultdict(list)
for r in rows:
    b = base.get((r['dataset'], r['mode'], r['episode_id']))
    if b is None: continue
    d[(r['dataset'], r['mode'])].append((noc(r['ious']), b[0], r['ious'][0], b[1]))
for k, v in sorted(d.items()):
    a = np.array(v, float); diff = a[:, 0] - a[:, 1]
    print(k, len(a), 'new %.2f base %.2f diff %+.2f +- %.2f | iou1 new %.3f base %.3f' % (a[:, 0].mean(), a[:, 1].mean(), diff.mean(), diff.std(ddof=1) / np.sqrt(len(a)), a[:, 2].mean(), a[:, 3].mean()))
