"""Paired NoC@85 / NoC@90 / IoU after one click of the methods in episodes.jsonl files (the first method is the base).

    python docs/results/reference_yield/compare_runs.py A.jsonl B.jsonl
"""
import json, sys, numpy as np
from collections import defaultdict
rows=[json.loads(l) for path in sys.argv[1:] for l in open(path)]
def noc(ious,t=0.85):
    for i,v in enumerate(ious):
        if v>=t: return i+1
    return 20
by=defaultdict(dict)
for r in rows:
    by[(r['dataset'],r['mode'])].setdefault(r['method'].split('=')[0],{})[r['episode_id']]=r['ious']
for (ds,mode),meths in sorted(by.items()):
    names=list(meths)
    common=set.intersection(*[set(m) for m in meths.values()])
    ids=sorted(common)
    print(ds,mode,len(ids))
    base=names[0]
    for n in names:
        nocs=np.array([noc(meths[n][e]) for e in ids]); i1=np.array([meths[n][e][0] for e in ids])
        line=f"  {n:10s} NoC85 {nocs.mean():.2f} NoC90 {np.mean([noc(meths[n][e],.9) for e in ids]):.2f} IoU1 {i1.mean():.3f}"
        if n!=base:
            d=nocs-np.array([noc(meths[base][e]) for e in ids]); di=i1-np.array([meths[base][e][0] for e in ids])
            line+=f"  dNoC {d.mean():+.2f}±{d.std(ddof=1)/np.sqrt(len(d)):.2f} ({(d<0).sum()}/{(d>0).sum()}) dIoU1 {di.mean():+.3f}±{di.std(ddof=1)/np.sqrt(len(d)):.3f}"
        print(line)
